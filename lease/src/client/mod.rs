//! The lease API: sessions, handles, renewal and release.
//!
//! [`LeaseClient`] performs calls; what they mean for the holder (request
//! ids, what the table may forget, deadlines) is decided by the pure
//! [`ClientCore`] it keeps, the same one the simulator's clients use.

mod handle;
mod lease_session;
mod list;
pub(crate) mod members;
mod session;
mod shares;
mod watch;

pub use handle::LeaseHandle;
pub use lease_session::LeaseSession;
pub use list::ListPage;
pub use members::{MemberError, MemberList, MemberRefusal};
pub use session::{ClientCore, LeaseState, SessionState};

use crate::command::{ClientId, HolderInfo, LeaseToken, Op, Outcome, Refusal, Stamp};
use crate::error::LeaseError;
use crate::node::{AnswerSender, Call, NodeHandle, Reply};
use crate::table::validate;
use bytes::Bytes;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use std::time::Instant;

/// How long a call waits for its answer by default. [`LeaseClient::acquire`]
/// is bounded by its wait instead (see [`ACQUIRE_MARGIN`]).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// How much longer than its `wait` an [`LeaseClient::acquire`] may take:
/// half for a grant made at the end of the wait to arrive, half to leave
/// the line and learn who holds the lease.
pub const ACQUIRE_MARGIN: Duration = Duration::from_millis(500);

/// A client session on a node. Cheap to clone; clones share the session.
///
/// Every request carries the session id and a request id, so a request
/// that is retried after a lost reply is answered from the table instead of
/// executed twice. Leases are reentrant by owner: acquiring a lease the
/// owner already holds renews it and returns the same stamp.
#[derive(Clone)]
pub struct LeaseClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    node: NodeHandle,
    core: Mutex<ClientCore>,
    owner: String,
    /// The session's secret (see [`LeaseToken`]), shared with its clones
    /// of another timeout; `None` if the system's random source failed.
    token: Option<LeaseToken>,
    /// The origin of the core's clock.
    origin: Instant,
    call_timeout: Duration,
}

/// The result of [`LeaseClient::try_acquire`].
#[derive(Debug)]
pub enum TryAcquire {
    /// The lease is ours.
    Acquired(LeaseHandle),
    /// Someone else holds it.
    Held(HolderInfo),
}

impl std::fmt::Debug for LeaseClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseClient")
            .field("node", &self.inner.node.id())
            .field("owner", &self.inner.owner)
            .finish_non_exhaustive()
    }
}

fn millis(what: &str, d: Duration) -> Result<u64, LeaseError> {
    u64::try_from(d.as_millis()).map_err(|_| LeaseError::Invalid(format!("{what} is too long")))
}

impl LeaseClient {
    pub(crate) fn new(node: NodeHandle, owner: String) -> LeaseClient {
        LeaseClient::session(node, owner, fresh_token(), DEFAULT_CALL_TIMEOUT)
    }

    fn session(
        node: NodeHandle,
        owner: String,
        token: Option<LeaseToken>,
        call_timeout: Duration,
    ) -> LeaseClient {
        let core = ClientCore::new(ClientId(fastrand::u64(..)), owner.clone(), node.drift);
        LeaseClient {
            inner: Arc::new(ClientInner {
                node,
                core: Mutex::new(core),
                owner,
                token,
                origin: Instant::now(),
                call_timeout,
            }),
        }
    }

    /// The same owner and secret on the same node, with another per-call
    /// timeout (a session of its own for request ids).
    pub fn with_call_timeout(self, timeout: Duration) -> LeaseClient {
        let inner = &self.inner;
        LeaseClient::session(
            inner.node.clone(),
            inner.owner.clone(),
            inner.token,
            timeout,
        )
    }

    /// The session's secret.
    fn token(&self) -> Result<LeaseToken, LeaseError> {
        self.inner.token.ok_or_else(|| {
            LeaseError::Random("the system's random source failed when the session began".into())
        })
    }

    /// Who this session acquires leases as.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Takes `name` for `ttl` if nobody else holds it; otherwise says who
    /// does. Does not wait in line.
    ///
    /// # Errors
    /// [`LeaseError::Invalid`] for an empty or overlong name or a TTL of
    /// zero or over a day; [`LeaseError::LockDelay`] while a lock-delay
    /// blocks the name; [`LeaseError::Timeout`] / [`LeaseError::NoLeader`]
    /// when the cluster did not answer in time; [`LeaseError::Stopped`].
    pub async fn try_acquire(&self, name: &str, ttl: Duration) -> Result<TryAcquire, LeaseError> {
        let op = Op::Acquire {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            token: self.token()?,
            ttl_ms: millis("ttl", ttl)?,
            wait_ms: 0,
        };
        let answer = self.call(op, self.inner.call_timeout).await?;
        match answer.outcome {
            Outcome::Granted { stamp, .. } => {
                Ok(TryAcquire::Acquired(self.handle(name, stamp, ttl)))
            }
            Outcome::Held(holder) => Ok(TryAcquire::Held(holder)),
            Outcome::Blocked { remaining_ms } => Err(LeaseError::LockDelay {
                name: name.to_owned(),
                remaining_ms,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Takes `name` for `ttl`, waiting in line (first come, first served)
    /// for up to `wait`. Returns within `wait` plus [`ACQUIRE_MARGIN`]: a
    /// waiter whose wait ran out leaves the line (a grant that raced with
    /// its leaving is given back) and is told who holds the lease.
    ///
    /// # Errors
    /// As [`LeaseClient::try_acquire`]; [`LeaseError::Held`] naming the
    /// holder when the wait ran out; [`LeaseError::Timeout`] when it ran
    /// out and the cluster did not say who holds the lease in time (or
    /// nobody held it by then: try again).
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseHandle, LeaseError> {
        let op = Op::Acquire {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            token: self.token()?,
            ttl_ms: millis("ttl", ttl)?,
            wait_ms: millis("wait", wait)?.max(1),
        };
        match self.call(op, wait + ACQUIRE_MARGIN / 2).await {
            Ok(Answer {
                outcome: Outcome::Granted { stamp, .. },
                queued,
            }) => {
                let handle = self.handle(name, stamp, ttl);
                if queued && handle.expire_time_unsafe() < Instant::now() + ttl / 2 {
                    // Granted from the line after a long wait: the handle
                    // counts from when we sent, so most of the lease is
                    // already spent on paper; count again from a renewal.
                    handle.renew().await?;
                }
                Ok(handle)
            }
            Ok(Answer {
                outcome: Outcome::TimedOut,
                ..
            })
            | Err(LeaseError::Timeout) => Err(self.wait_ran_out(name).await),
            Ok(Answer {
                outcome: Outcome::Held(holder),
                ..
            }) => Err(LeaseError::Held {
                name: name.to_owned(),
                holder,
            }),
            Ok(other) => Err(unexpected(other.outcome)),
            Err(e) => Err(e),
        }
    }

    /// What an acquire whose wait ran out returns: it leaves the line
    /// (within half of [`ACQUIRE_MARGIN`]) and names the holder.
    async fn wait_ran_out(&self, name: &str) -> LeaseError {
        match tokio::time::timeout(ACQUIRE_MARGIN / 2, self.give_up_waiting(name)).await {
            Ok(Some(holder)) => LeaseError::Held {
                name: name.to_owned(),
                holder,
            },
            Ok(None) | Err(_) => LeaseError::Timeout,
        }
    }

    /// Leaves the line for `name`; if the lease was granted to us in the
    /// meantime, gives it back. Returns who else holds it then, if anyone.
    async fn give_up_waiting(&self, name: &str) -> Option<HolderInfo> {
        let token = self.token().ok()?;
        let cancel = Op::Cancel {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            token,
        };
        self.call(cancel, self.inner.call_timeout).await.ok()?;
        let (holder, _) = self.read(name).await.ok()?;
        let holder = holder?;
        if holder.owner != self.inner.owner {
            return Some(holder);
        }
        let release = Op::Release {
            name: name.to_owned(),
            owner: holder.owner.clone(),
            stamp: holder.stamp,
            token,
        };
        match self.call(release, self.inner.call_timeout).await {
            // It was ours: now nobody holds it.
            Ok(Answer {
                outcome: Outcome::Released,
                ..
            }) => None,
            // Another session of the same owner holds it.
            _ => Some(holder),
        }
    }

    /// Releases `name` held by this session's owner with `stamp` and
    /// `token` (see [`LeaseHandle::token`]), for a process that no longer
    /// has the handle (e.g. an operator's script).
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] when that owner, stamp and token do not
    /// hold it.
    pub async fn release_stamp(
        &self,
        name: &str,
        stamp: Stamp,
        token: LeaseToken,
    ) -> Result<(), LeaseError> {
        let op = Op::Release {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            stamp,
            token,
        };
        match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::Released => Ok(()),
            Outcome::NotHolder { current } => Err(LeaseError::LeaseLost {
                name: name.to_owned(),
                stamp,
                holder: current,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Renews `name` held by this session's owner with `stamp` and
    /// `token` for `ttl` from now (never ending it sooner), for a process
    /// that no longer has the handle (e.g. an operator's script).
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] when that owner, stamp and token do not
    /// hold it; [`LeaseError::Invalid`] for a TTL of zero or over a day.
    pub async fn renew_stamp(
        &self,
        name: &str,
        stamp: Stamp,
        token: LeaseToken,
        ttl: Duration,
    ) -> Result<(), LeaseError> {
        let op = Op::Renew {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            stamp,
            token,
            ttl_ms: millis("ttl", ttl)?,
        };
        match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::Renewed => Ok(()),
            Outcome::NotHolder { current } => Err(LeaseError::LeaseLost {
                name: name.to_owned(),
                stamp,
                holder: current,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Takes `name` away from whoever holds it, as an operator would a
    /// stuck lease: the next waiter in line gets it. Returns whether
    /// someone held it. Allowed to a client in a node's own process and,
    /// over the network, only to a connection whose certificate names an
    /// administrator (see [`crate::remote::authorize`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use trexlock_lease::{InProcessNetwork, Node, NodeConfig, TryAcquire};
    /// use trexlock_paxos::{MemJournal, NodeId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let network = InProcessNetwork::new();
    /// let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
    /// let inbox = network.register(NodeId(1));
    /// let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
    /// let stuck = node.client("crashed-worker");
    /// let TryAcquire::Acquired(_) = stuck.try_acquire("invoices", Duration::from_secs(60)).await? else {
    ///     panic!("free");
    /// };
    /// let operator = node.client("ops");
    /// assert!(operator.force_release("invoices").await?);
    /// assert!(operator.holder("invoices").await?.is_none());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LeaseError::Refused`] with [`Refusal::NotPermitted`] when the
    /// connection may not force a release; otherwise as
    /// [`LeaseClient::try_acquire`].
    pub async fn force_release(&self, name: &str) -> Result<bool, LeaseError> {
        let op = Op::ForceRelease {
            name: name.to_owned(),
        };
        match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::Released => Ok(true),
            Outcome::NotHolder { .. } => Ok(false),
            other => Err(unexpected(other)),
        }
    }

    /// Who holds `name` now (a linearizable read through the log).
    ///
    /// # Errors
    /// As [`LeaseClient::try_acquire`].
    pub async fn holder(&self, name: &str) -> Result<Option<HolderInfo>, LeaseError> {
        Ok(self.read(name).await?.0)
    }

    /// Who holds `name` and the fenced value stored with it.
    ///
    /// # Errors
    /// As [`LeaseClient::try_acquire`].
    pub async fn read(
        &self,
        name: &str,
    ) -> Result<(Option<HolderInfo>, Option<Bytes>), LeaseError> {
        let op = Op::Read {
            name: name.to_owned(),
        };
        match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::Holder { holder, value } => Ok((holder, value)),
            other => Err(unexpected(other)),
        }
    }

    fn handle(&self, name: &str, stamp: Stamp, ttl: Duration) -> LeaseHandle {
        LeaseHandle::new(self.clone(), name.to_owned(), stamp, ttl)
    }

    /// The session's clock: time since it started.
    fn elapsed(&self) -> Duration {
        self.inner.origin.elapsed()
    }

    fn core(&self) -> MutexGuard<'_, ClientCore> {
        // The core's state stays consistent across a panic elsewhere: every
        // update is a single call.
        self.inner
            .core
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Sends one request and waits for its final answer. Dropping the
    /// returned future abandons the request cleanly.
    pub(crate) async fn call(&self, op: Op, timeout: Duration) -> Result<Answer, LeaseError> {
        validate(&op).map_err(refused)?;
        if self.inner.node.status().removed {
            return Err(refused(Refusal::Removed));
        }
        let request = self.core().start(op, self.elapsed());
        let mut guard = InFlight {
            client: self,
            id: request.request,
            answered: false,
        };
        let (reply, answer) = AnswerSender::new();
        self.inner
            .node
            .calls
            .send(Call::Request {
                request,
                reply: Reply::Channel(reply),
            })
            .await
            .map_err(|_| self.inner.node.gone())?;
        let Answer { outcome, queued } = match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => return Err(self.inner.node.gone()),
            Err(_) if self.inner.node.status().leader.is_none() => {
                return Err(LeaseError::NoLeader);
            }
            Err(_) => return Err(LeaseError::Timeout),
        };
        self.core().answered(guard.id, &outcome, self.elapsed());
        // Answered: the node has already forgotten the request, so the
        // guard need not tell it to (one message fewer per call).
        guard.answered = true;
        drop(guard);
        match outcome {
            Outcome::Refused(refusal) => Err(refused(refusal)),
            outcome => Ok(Answer { outcome, queued }),
        }
    }
}

/// Keeps a request open in the session while its call runs, and tells
/// the node to stop waiting for it if the call is abandoned.
struct InFlight<'a> {
    client: &'a LeaseClient,
    id: u64,
    /// The final answer arrived: the node (or the remote link) dropped the
    /// request when it sent it, and the core closed it.
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let client = self.client;
        let _ = client.inner.node.calls.try_send(Call::Forget {
            client: client.core().id(),
            request: self.id,
        });
        client.core().abandon(self.id);
    }
}

/// A final answer, and whether the request waited in line first.
pub(crate) struct Answer {
    pub(crate) outcome: Outcome,
    pub(crate) queued: bool,
}

/// Draws a session secret from the operating system's random source.
fn fresh_token() -> Option<LeaseToken> {
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).ok()?;
    Some(LeaseToken(u128::from_le_bytes(bytes)))
}

fn refused(refusal: Refusal) -> LeaseError {
    if refusal.is_invalid() {
        LeaseError::Invalid(refusal.to_string())
    } else {
        LeaseError::Refused(refusal)
    }
}

fn unexpected(outcome: Outcome) -> LeaseError {
    LeaseError::Invalid(format!(
        "unexpected answer from the lease table: {outcome:?}"
    ))
}
