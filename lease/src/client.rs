//! The lease API: sessions, handles, renewal and release.

use crate::command::{ClientId, HolderInfo, LeaseToken, Op, Outcome, Refusal, Request, Stamp};
use crate::error::LeaseError;
use crate::node::{Call, NodeHandle, Reply};
use crate::table::validate;
use bytes::Bytes;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use std::time::Instant;
use tokio::sync::mpsc;

/// How long a call waits for its answer by default, beyond any wait in
/// line it asked for.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A client session on a node. Cheap to clone; clones share the session.
///
/// Every request carries the session id and a request id, so a request
/// that is retried after a lost reply is answered from the table instead of
/// executed twice. Leases are reentrant within a session: acquiring a lease
/// the session already holds renews it and returns the same stamp. The
/// session proves it holds a lease with a secret [`LeaseToken`], drawn
/// from the operating system's random generator at its first acquire;
/// another session with the same owner name is another claimant.
#[derive(Clone)]
pub struct LeaseClient {
    inner: Arc<ClientInner>,
}

struct ClientInner {
    node: NodeHandle,
    id: ClientId,
    owner: String,
    /// The session's secret, shared with its clones of another timeout.
    token: Arc<OnceLock<LeaseToken>>,
    next_request: AtomicU64,
    in_flight: Mutex<BTreeSet<u64>>,
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

/// A lease we hold. `Send + Sync`: share it (e.g. in an `Arc`) and renew
/// or release it from any task.
///
/// Its expiry is a local monotonic [`Instant`] computed from the moment the
/// request was SENT plus the TTL shrunk by the configured clock drift
/// bound, so the cluster never grants the lease to anyone else before
/// [`LeaseHandle::expire_time_unsafe`]. "Unsafe" because a pause between
/// checking and acting is not covered: check with
/// [`LeaseHandle::is_valid_with_safety_gap`] and a gap longer than your
/// longest pause plus the work done before the next check.
#[derive(Debug)]
pub struct LeaseHandle {
    client: LeaseClient,
    name: String,
    stamp: Stamp,
    token: LeaseToken,
    ttl: Duration,
    value: Mutex<Option<Bytes>>,
    expires: Mutex<Instant>,
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
        LeaseClient {
            inner: Arc::new(ClientInner {
                node,
                id: ClientId(fastrand::u64(..)),
                owner,
                token: Arc::new(OnceLock::new()),
                next_request: AtomicU64::new(1),
                in_flight: Mutex::new(BTreeSet::new()),
                call_timeout: DEFAULT_CALL_TIMEOUT,
            }),
        }
    }

    /// The same session with another per-call timeout.
    pub fn with_call_timeout(self, timeout: Duration) -> LeaseClient {
        let inner = &self.inner;
        LeaseClient {
            inner: Arc::new(ClientInner {
                node: inner.node.clone(),
                id: ClientId(fastrand::u64(..)),
                owner: inner.owner.clone(),
                token: inner.token.clone(),
                next_request: AtomicU64::new(1),
                in_flight: Mutex::new(BTreeSet::new()),
                call_timeout: timeout,
            }),
        }
    }

    /// Who this session acquires leases as.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// The session's secret, drawn on first use.
    fn token(&self) -> Result<LeaseToken, LeaseError> {
        if let Some(token) = self.inner.token.get() {
            return Ok(*token);
        }
        let mut bytes = [0u8; 16];
        getrandom::getrandom(&mut bytes).map_err(|e| LeaseError::Random(e.to_string()))?;
        let fresh = LeaseToken(u128::from_le_bytes(bytes));
        Ok(*self.inner.token.get_or_init(|| fresh))
    }

    /// Takes `name` for `ttl` if nobody else holds it; otherwise says who
    /// does. Does not wait in line.
    ///
    /// # Errors
    /// [`LeaseError::Invalid`] for an empty or overlong name or a TTL of
    /// zero or over a day; [`LeaseError::Timeout`] / [`LeaseError::NoLeader`]
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
            Outcome::Granted { stamp, value } => Ok(TryAcquire::Acquired(self.handle(
                name,
                stamp,
                ttl,
                value,
                answer.sent,
            )?)),
            Outcome::Held(holder) => Ok(TryAcquire::Held(holder)),
            other => Err(unexpected(other)),
        }
    }

    /// Takes `name` for `ttl`, waiting in line (first come, first served)
    /// for up to `wait`. A waiter that gives up is removed from the line.
    ///
    /// # Errors
    /// As [`LeaseClient::try_acquire`], and [`LeaseError::Timeout`] when the
    /// wait ran out.
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
        match self.call(op, wait + self.inner.call_timeout).await {
            Ok(Answer {
                outcome: Outcome::Granted { stamp, value },
                sent,
                queued,
            }) => {
                let handle = self.handle(name, stamp, ttl, value, sent)?;
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
            }) => Err(LeaseError::Timeout),
            Ok(Answer {
                outcome: Outcome::Held(holder),
                ..
            }) => Err(LeaseError::Held {
                name: name.to_owned(),
                holder,
            }),
            Ok(other) => Err(unexpected(other.outcome)),
            Err(LeaseError::Timeout) => {
                self.give_up_waiting(name).await;
                Err(LeaseError::Timeout)
            }
            Err(e) => Err(e),
        }
    }

    /// Leaves the line for `name`; if the lease was granted to us in the
    /// meantime, gives it back.
    async fn give_up_waiting(&self, name: &str) {
        let Ok(token) = self.token() else {
            return;
        };
        let cancel = Op::Cancel {
            name: name.to_owned(),
            owner: self.inner.owner.clone(),
            token,
        };
        if self.call(cancel, self.inner.call_timeout).await.is_err() {
            return;
        }
        if let Ok((Some(holder), _)) = self.read(name).await
            && holder.owner == self.inner.owner
        {
            let release = Op::Release {
                name: name.to_owned(),
                owner: holder.owner,
                stamp: holder.stamp,
                token,
            };
            let _ = self.call(release, self.inner.call_timeout).await;
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

    fn handle(
        &self,
        name: &str,
        stamp: Stamp,
        ttl: Duration,
        value: Option<Bytes>,
        sent: Instant,
    ) -> Result<LeaseHandle, LeaseError> {
        Ok(LeaseHandle {
            client: self.clone(),
            name: name.to_owned(),
            stamp,
            token: self.token()?,
            ttl,
            value: Mutex::new(value),
            expires: Mutex::new(self.belief_end(sent, ttl)),
        })
    }

    fn belief_end(&self, sent: Instant, ttl: Duration) -> Instant {
        let ttl_us = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX);
        sent + Duration::from_micros(self.inner.node.drift.holder_belief_us(ttl_us))
    }

    /// Sends one request and waits for its final answer. Dropping the
    /// returned future abandons the request cleanly.
    pub(crate) async fn call(&self, op: Op, timeout: Duration) -> Result<Answer, LeaseError> {
        validate(&op).map_err(refused)?;
        let inner = &self.inner;
        // The id is drawn under the lock: a call that drew a lower id is
        // already in flight, so no request acknowledges a call that has
        // not been sent yet (the table would answer that call
        // AlreadyAnswered without running it).
        let (id, acked_below) = {
            let mut in_flight = inner.in_flight.lock().expect("client lock");
            let id = inner.next_request.fetch_add(1, Ordering::Relaxed);
            in_flight.insert(id);
            (id, *in_flight.first().expect("just inserted"))
        };
        let mut guard = InFlight {
            inner,
            id,
            answered: false,
        };
        let request = Request {
            client: inner.id,
            request: id,
            acked_below,
            op,
        };
        let (reply, mut answers) = mpsc::channel(4);
        let sent = Instant::now();
        inner
            .node
            .calls
            .send(Call::Request {
                request,
                reply: Reply::Channel(reply),
            })
            .await
            .map_err(|_| LeaseError::Stopped)?;
        let mut queued = false;
        let wait = async {
            while let Some(outcome) = answers.recv().await {
                if outcome == Outcome::Queued {
                    queued = true;
                } else {
                    return Ok(outcome);
                }
            }
            Err(LeaseError::Stopped)
        };
        let outcome = match tokio::time::timeout(timeout, wait).await {
            Ok(result) => result?,
            Err(_) if inner.node.status().leader.is_none() => return Err(LeaseError::NoLeader),
            Err(_) => return Err(LeaseError::Timeout),
        };
        // Answered: the node has already forgotten the request, so the
        // guard need not tell it to (one message fewer per call).
        guard.answered = true;
        drop(guard);
        match outcome {
            Outcome::Refused(refusal) => Err(refused(refusal)),
            outcome => Ok(Answer {
                outcome,
                sent,
                queued,
            }),
        }
    }
}

/// Keeps a request id in the session's in-flight set while its call runs,
/// and tells the node to stop waiting for it if the call is abandoned.
struct InFlight<'a> {
    inner: &'a ClientInner,
    id: u64,
    /// The final answer arrived: the node (or the remote link) dropped the
    /// request when it sent it, so there is nothing to forget.
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            let _ = self.inner.node.calls.try_send(Call::Forget {
                client: self.inner.id,
                request: self.id,
            });
        }
        self.inner
            .in_flight
            .lock()
            .expect("client lock")
            .remove(&self.id);
    }
}

/// A final answer and when its request was sent.
pub(crate) struct Answer {
    pub(crate) outcome: Outcome,
    pub(crate) sent: Instant,
    pub(crate) queued: bool,
}

/// A malformed request is the caller's mistake; a full table is not.
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

impl LeaseHandle {
    /// The lease's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The fencing token: hand it to every resource this lease protects.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// The secret that proves this session holds the lease: needed to
    /// release it without the handle ([`LeaseClient::release_stamp`]).
    /// Keep it as secret as a password.
    pub fn token(&self) -> LeaseToken {
        self.token
    }

    /// The TTL asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fenced value stored with the lease: as granted, or as last
    /// written through this handle.
    pub fn value(&self) -> Option<Bytes> {
        self.value.lock().expect("handle lock").clone()
    }

    /// When the lease ends at the latest, on this process's monotonic
    /// clock, already allowing for clock drift. Not allowing for pauses.
    pub fn expire_time_unsafe(&self) -> Instant {
        *self.expires.lock().expect("handle lock")
    }

    /// [`LeaseHandle::expire_time_unsafe`] minus `gap` (or now, if the
    /// gap reaches back before the clock's origin).
    pub fn expire_time_with_safety_gap(&self, gap: Duration) -> Instant {
        let end = self.expire_time_unsafe();
        end.checked_sub(gap).unwrap_or_else(Instant::now)
    }

    /// True while now is before the expiry minus `gap`.
    pub fn is_valid_with_safety_gap(&self, gap: Duration) -> bool {
        Instant::now() < self.expire_time_with_safety_gap(gap)
    }

    /// Extends the lease by its TTL, counted from now; the stamp stays.
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] if it is no longer ours; timeouts as for
    /// any call (the lease may still be valid: retry).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        let op = Op::Renew {
            name: self.name.clone(),
            owner: self.client.owner().to_owned(),
            stamp: self.stamp,
            token: self.token,
            ttl_ms: millis("ttl", self.ttl)?,
        };
        let answer = self.client.call(op, self.client.inner.call_timeout).await?;
        match answer.outcome {
            Outcome::Renewed => {
                *self.expires.lock().expect("handle lock") =
                    self.client.belief_end(answer.sent, self.ttl);
                Ok(())
            }
            Outcome::NotHolder { current } => Err(self.lost(current)),
            other => Err(unexpected(other)),
        }
    }

    /// Gives the lease up; the next in line gets it.
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] if it was no longer ours anyway.
    pub async fn release(&self) -> Result<(), LeaseError> {
        let op = Op::Release {
            name: self.name.clone(),
            owner: self.client.owner().to_owned(),
            stamp: self.stamp,
            token: self.token,
        };
        match self
            .client
            .call(op, self.client.inner.call_timeout)
            .await?
            .outcome
        {
            Outcome::Released => {
                *self.expires.lock().expect("handle lock") = Instant::now();
                Ok(())
            }
            Outcome::NotHolder { current } => Err(self.lost(current)),
            other => Err(unexpected(other)),
        }
    }

    /// Stores a small value with the lease, fenced by our stamp: refused if
    /// the lease is no longer ours. The next holder reads it.
    ///
    /// # Errors
    /// [`LeaseError::StaleStamp`] when the stamp is no longer the holder's.
    pub async fn write_value(&self, value: Bytes) -> Result<(), LeaseError> {
        let op = Op::Write {
            name: self.name.clone(),
            owner: self.client.owner().to_owned(),
            stamp: self.stamp,
            token: self.token,
            value,
        };
        match self
            .client
            .call(op, self.client.inner.call_timeout)
            .await?
            .outcome
        {
            Outcome::Written => Ok(()),
            Outcome::NotHolder { .. } => Err(LeaseError::StaleStamp {
                name: self.name.clone(),
                stamp: self.stamp,
            }),
            other => Err(unexpected(other)),
        }
    }

    fn lost(&self, holder: Option<HolderInfo>) -> LeaseError {
        *self.expires.lock().expect("handle lock") = Instant::now();
        LeaseError::LeaseLost {
            name: self.name.clone(),
            stamp: self.stamp,
            holder,
        }
    }
}
