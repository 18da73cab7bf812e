//! Lease sessions for applications: one TTL and one background keep-alive
//! for any number of leases (etcd's `Session`, Hazelcast's CP session).
//!
//! Leases acquired through a [`LeaseSession`] are bound to it: the cluster
//! keeps them exactly as long as the session, so one keep per interval
//! renews them all, and when the session ends (its keep-alive could not
//! reach the cluster in time, or it was closed) they all end together and
//! their waiters are served. The session's [`LeaseSession::lost`] signal
//! fires once its keep-alive learns it is over; a [`crate::FencedMutex`]
//! made with [`crate::FencedMutex::in_session`] is poisoned by it.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_lease::{InProcessNetwork, Node, NodeConfig};
//! use trexlock_paxos::{MemJournal, NodeId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let network = InProcessNetwork::new();
//! # let inbox = network.register(NodeId(1));
//! # let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
//! # let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
//! let client = node.client("indexer-3");
//! let session = client.open_session(Duration::from_secs(10)).await?;
//! let mut shards = Vec::new();
//! for shard in 0..64 {
//!     // One keep per interval renews all 64 of them.
//!     shards.push(session.acquire(&format!("shard-{shard}"), Duration::ZERO).await?);
//! }
//! assert!(shards.iter().all(|s| s.is_valid_with_safety_gap(Duration::from_secs(1))));
//! session.close().await?; // every shard is released at once
//! assert!(client.holder("shard-7").await?.is_none());
//! # Ok(()) }
//! ```

use super::{ACQUIRE_MARGIN, Answer, LeaseClient, LeaseHandle, TryAcquire, millis, unexpected};
use crate::command::{LeaseToken, Op, Outcome, SessionId, Stamp};
use crate::error::LeaseError;
use crate::keepalive::KeepAlive;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An open lease session, kept alive in the background (every third of
/// its TTL) while this value lives. Dropping it stops the keep-alive: the
/// session, and every lease bound to it, then runs out after its TTL.
/// [`LeaseSession::close`] ends it at once instead.
pub struct LeaseSession {
    client: LeaseClient,
    id: SessionId,
    ttl: Duration,
    keep_alive: KeepAlive,
}

impl std::fmt::Debug for LeaseSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSession")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("lost", &self.is_lost())
            .finish_non_exhaustive()
    }
}

impl LeaseClient {
    /// Opens a lease session of `ttl` and keeps it alive in the
    /// background. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`LeaseError::Invalid`] for a TTL of zero or over a day;
    /// [`LeaseError::Refused`] when the cluster has
    /// [`crate::table::MAX_LEASE_SESSIONS`] sessions open; otherwise as
    /// [`LeaseClient::try_acquire`].
    pub async fn open_session(&self, ttl: Duration) -> Result<LeaseSession, LeaseError> {
        let op = Op::OpenSession {
            owner: self.inner.owner.clone(),
            token: self.token()?,
            ttl_ms: millis("ttl", ttl)?,
        };
        let id = match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::SessionOpened { session } => session,
            other => return Err(unexpected(other)),
        };
        let keeper = self.clone();
        let watched = self.clone();
        let keep_alive = KeepAlive::repeat(
            ttl / 3,
            format!("lease session {id}"),
            move || watched.session_deadline(id),
            move || {
                let client = keeper.clone();
                async move {
                    let token = client.token()?;
                    client.keep_session(id, token).await
                }
            },
        );
        Ok(LeaseSession {
            client: self.clone(),
            id,
            ttl,
            keep_alive,
        })
    }

    /// Keeps session `session` once (extending it and every lease bound
    /// to it to its TTL from now), for a process that did not open it
    /// (e.g. an operator's script) or keeps it by hand.
    ///
    /// # Errors
    /// [`LeaseError::SessionLost`] when the session is over, or `token`
    /// and this client's owner are not the session's; otherwise as
    /// [`LeaseClient::try_acquire`].
    pub async fn keep_session(
        &self,
        session: SessionId,
        token: LeaseToken,
    ) -> Result<(), LeaseError> {
        let owner = self.inner.owner.clone();
        let op = Op::KeepSession {
            session,
            owner,
            token,
        };
        self.session_call(op, session, Outcome::SessionKept).await
    }

    /// Ends session `session` now: every lease bound to it is released.
    ///
    /// # Errors
    /// As [`LeaseClient::keep_session`].
    pub async fn close_session(
        &self,
        session: SessionId,
        token: LeaseToken,
    ) -> Result<(), LeaseError> {
        let owner = self.inner.owner.clone();
        let op = Op::CloseSession {
            session,
            owner,
            token,
        };
        self.session_call(op, session, Outcome::SessionClosed).await
    }

    /// Runs `op` on session `session`: `Ok` when the table answers
    /// `done`, [`LeaseError::SessionLost`] when the session is not open.
    async fn session_call(
        &self,
        op: Op,
        session: SessionId,
        done: Outcome,
    ) -> Result<(), LeaseError> {
        match self.call(op, self.inner.call_timeout).await?.outcome {
            outcome if outcome == done => Ok(()),
            Outcome::NoSession => Err(LeaseError::SessionLost { session }),
            other => Err(unexpected(other)),
        }
    }

    /// Takes `name` bound to session `session` (whose secret is `token`),
    /// waiting in line up to `wait`; returns the stamp. For a process
    /// that did not open the session (e.g. the command line): it cannot
    /// know the session's deadline, so it gets no handle. Within the
    /// session's own process use [`LeaseSession::acquire`].
    ///
    /// # Errors
    /// As [`LeaseSession::acquire`].
    pub async fn acquire_in_session(
        &self,
        name: &str,
        session: SessionId,
        token: LeaseToken,
        wait: Duration,
    ) -> Result<Stamp, LeaseError> {
        self.bound_acquire(name, session, token, wait).await
    }

    /// The session's deadline as an instant (the client's origin when
    /// the session is unknown to this client: long past).
    fn session_deadline(&self, id: SessionId) -> Instant {
        let deadline = self.core().session(id).map(|s| s.deadline);
        self.inner.origin + deadline.unwrap_or(Duration::ZERO)
    }

    async fn bound_acquire(
        &self,
        name: &str,
        session: SessionId,
        token: LeaseToken,
        wait: Duration,
    ) -> Result<Stamp, LeaseError> {
        let op = Op::AcquireInSession {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            token,
            session,
            wait_ms: millis("wait", wait)?,
        };
        let timeout = if wait.is_zero() {
            self.inner.call_timeout
        } else {
            wait + ACQUIRE_MARGIN / 2
        };
        match self.call(op, timeout).await {
            Ok(Answer {
                outcome: Outcome::Granted { stamp, .. },
                ..
            }) => Ok(stamp),
            Ok(Answer {
                outcome: Outcome::Held(holder),
                ..
            }) => Err(LeaseError::Held {
                name: name.to_owned(),
                holder,
            }),
            Ok(Answer {
                outcome: Outcome::NoSession,
                ..
            }) => Err(LeaseError::SessionLost { session }),
            Ok(Answer {
                outcome: Outcome::TimedOut,
                ..
            }) => Err(self.wait_ran_out(name).await),
            Err(LeaseError::Timeout) if !wait.is_zero() => Err(self.wait_ran_out(name).await),
            Ok(other) => Err(unexpected(other.outcome)),
            Err(e) => Err(e),
        }
    }
}

impl LeaseSession {
    /// The session's id, as the cluster numbered it.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The session's TTL.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The client the session was opened with.
    pub fn client(&self) -> &LeaseClient {
        &self.client
    }

    /// The session's secret: needed to keep or close it, or acquire in
    /// it, from another process. Keep it as secret as a password.
    ///
    /// # Errors
    /// [`LeaseError::Random`] if the client could not draw one (then it
    /// could not have opened the session either).
    pub fn token(&self) -> Result<LeaseToken, LeaseError> {
        self.client.token()
    }

    /// Takes `name` bound to this session, if nobody else holds it.
    ///
    /// # Errors
    /// [`LeaseError::SessionLost`] when the session is over;
    /// [`LeaseError::Refused`] with [`crate::Refusal::TooManyLeasesInSession`]
    /// when it holds [`crate::table::MAX_LEASES_PER_SESSION`] leases;
    /// otherwise as [`LeaseClient::try_acquire`].
    pub async fn try_acquire(&self, name: &str) -> Result<TryAcquire, LeaseError> {
        match self.acquire(name, Duration::ZERO).await {
            Ok(handle) => Ok(TryAcquire::Acquired(handle)),
            Err(LeaseError::Held { holder, .. }) => Ok(TryAcquire::Held(holder)),
            Err(e) => Err(e),
        }
    }

    /// Takes `name` bound to this session, waiting in line up to `wait`
    /// (zero: not at all). The handle's expiry is the session's.
    ///
    /// # Errors
    /// As [`LeaseSession::try_acquire`]; [`LeaseError::Held`] naming the
    /// holder when the lease is held and the wait ran out (or was zero).
    pub async fn acquire(&self, name: &str, wait: Duration) -> Result<LeaseHandle, LeaseError> {
        let token = self.token()?;
        let stamp = self
            .client
            .bound_acquire(name, self.id, token, wait)
            .await?;
        Ok(self
            .client
            .handle(name, stamp, self.ttl)
            .in_session(self.id))
    }

    /// Keeps the session now, without waiting for the background
    /// keep-alive.
    ///
    /// # Errors
    /// As [`LeaseClient::keep_session`].
    pub async fn keep(&self) -> Result<(), LeaseError> {
        self.client.keep_session(self.id, self.token()?).await
    }

    /// When the session (and every lease bound to it) ends at the latest,
    /// on this process's monotonic clock, drift allowed for, pauses not;
    /// once it is known over, the moment that was learnt.
    pub fn expire_time_unsafe(&self) -> Instant {
        self.client.session_deadline(self.id)
    }

    /// True while now is before the session's end minus `gap`.
    pub fn is_valid_with_safety_gap(&self, gap: Duration) -> bool {
        let end = self.expire_time_unsafe();
        end.checked_sub(gap).is_some_and(|end| Instant::now() < end)
    }

    /// True once the keep-alive learnt the session is over.
    pub fn is_lost(&self) -> bool {
        self.keep_alive.is_lost()
    }

    /// Resolves when the session is lost, with the reason: every lease
    /// bound to it is gone, and the application must stop acting as their
    /// holder at once.
    pub async fn lost(&self) -> LeaseError {
        let mut lost = self.keep_alive.lost_signal();
        match lost.wait_for(Option::is_some).await {
            Ok(e) => e.clone().unwrap_or(LeaseError::Stopped),
            Err(_) => LeaseError::Stopped,
        }
    }

    /// The keep-alive's loss signal (for a mutex poisoned with the session).
    pub(crate) fn lost_signal(&self) -> watch::Receiver<Option<LeaseError>> {
        self.keep_alive.lost_signal()
    }

    /// Stops keeping the session and ends it: every lease bound to it is
    /// released at once.
    ///
    /// # Errors
    /// [`LeaseError::SessionLost`] if it was over already; otherwise as
    /// [`LeaseClient::try_acquire`] (the session then runs out by itself).
    pub async fn close(self) -> Result<(), LeaseError> {
        drop(self.keep_alive);
        let token = self.client.token()?;
        self.client.close_session(self.id, token).await
    }
}
