//! A held lease, as its holder sees it.

use super::{LeaseClient, millis, unexpected};
use crate::command::{HolderInfo, LeaseToken, Op, Outcome, SessionId, Stamp};
use crate::error::LeaseError;
use bytes::Bytes;
use std::time::{Duration, Instant};

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
///
/// Every handle of one grant in a session reads the same state: a renewal,
/// a reentrant acquire or a release through any of them is seen by all,
/// and a reentrant acquire with a shorter TTL never makes the lease end
/// sooner.
///
/// A lease acquired in a [`super::LeaseSession`] ends when its session
/// does: its expiry is the session's, and renewing it keeps the session.
#[derive(Debug)]
pub struct LeaseHandle {
    client: LeaseClient,
    name: String,
    stamp: Stamp,
    ttl: Duration,
    session: Option<SessionId>,
}

impl LeaseHandle {
    pub(super) fn new(client: LeaseClient, name: String, stamp: Stamp, ttl: Duration) -> Self {
        LeaseHandle {
            client,
            name,
            stamp,
            ttl,
            session: None,
        }
    }

    /// A handle of a lease bound to `session`.
    pub(super) fn in_session(mut self, session: SessionId) -> Self {
        self.session = Some(session);
        self
    }

    /// The lease session the lease is bound to, if any.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

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
    ///
    /// # Errors
    /// [`LeaseError::Random`] if the session could not draw one (then it
    /// could not have acquired the lease either).
    pub fn token(&self) -> Result<LeaseToken, LeaseError> {
        self.client.token()
    }

    /// The TTL asked for.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The fenced value stored with the lease: as granted, or as last
    /// written by this session.
    pub fn value(&self) -> Option<Bytes> {
        let core = self.client.core();
        core.lease(&self.name)
            .filter(|l| l.stamp == self.stamp)
            .and_then(|l| l.value.clone())
    }

    /// When the lease ends at the latest, on this process's monotonic
    /// clock, already allowing for clock drift. Not allowing for pauses.
    /// Once the lease is known to be over, the moment that was learnt.
    pub fn expire_time_unsafe(&self) -> Instant {
        let deadline = self.client.core().deadline(&self.name, self.stamp);
        // A grant the session no longer tracks ended long ago: the
        // session's start is a moment safely in the past.
        self.client.inner.origin + deadline.unwrap_or(Duration::ZERO)
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
    /// For a lease bound to a session, keeps the session (and so every
    /// lease of it).
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] if it is no longer ours
    /// ([`LeaseError::SessionLost`] if its session is over); timeouts as
    /// for any call (the lease may still be valid: retry).
    pub async fn renew(&self) -> Result<(), LeaseError> {
        if let Some(session) = self.session {
            return self
                .client
                .keep_session(session, self.client.token()?)
                .await;
        }
        let op = Op::Renew {
            name: self.name.clone(),
            owner: self.client.owner().to_owned(),
            stamp: self.stamp,
            token: self.client.token()?,
            ttl_ms: millis("ttl", self.ttl)?,
        };
        match self.call(op).await? {
            Outcome::Renewed => Ok(()),
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
            token: self.client.token()?,
        };
        match self.call(op).await? {
            Outcome::Released => Ok(()),
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
            token: self.client.token()?,
            value,
        };
        match self.call(op).await? {
            Outcome::Written => Ok(()),
            Outcome::NotHolder { .. } => Err(LeaseError::StaleStamp {
                name: self.name.clone(),
                stamp: self.stamp,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Sets this grant's lock-delay: if the lease EXPIRES (instead of
    /// being released), the cluster grants the name to nobody for `delay`
    /// afterwards, so that a resource that cannot check stamps sees this
    /// holder's last requests drain first (Chubby's lock-delay). At most
    /// [`crate::table::MAX_LOCK_DELAY_MS`]; zero removes it.
    ///
    /// # Errors
    /// [`LeaseError::LeaseLost`] if the lease is no longer ours;
    /// [`LeaseError::Invalid`] for a delay over the limit.
    pub async fn set_lock_delay(&self, delay: Duration) -> Result<(), LeaseError> {
        let op = Op::SetLockDelay {
            name: self.name.clone(),
            owner: self.client.owner().to_owned(),
            stamp: self.stamp,
            token: self.client.token()?,
            lock_delay_ms: millis("lock delay", delay)?,
        };
        match self.call(op).await? {
            Outcome::LockDelaySet => Ok(()),
            Outcome::NotHolder { current } => Err(self.lost(current)),
            other => Err(unexpected(other)),
        }
    }

    async fn call(&self, op: Op) -> Result<Outcome, LeaseError> {
        let timeout = self.client.inner.call_timeout;
        Ok(self.client.call(op, timeout).await?.outcome)
    }

    fn lost(&self, holder: Option<HolderInfo>) -> LeaseError {
        LeaseError::LeaseLost {
            name: self.name.clone(),
            stamp: self.stamp,
            holder,
        }
    }
}
