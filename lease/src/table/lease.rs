//! One lease as the table keeps it (its holder, its line, its value),
//! and the one door every change of a lease goes through, which keeps the
//! table's indexes in step with the leases.

use super::LeaseTable;
use super::line::Line;
use super::owners::Shared;
use crate::command::{ClientId, LeaseToken, SessionId, Stamp};
use bytes::Bytes;

/// The current holder of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Holder {
    pub(super) owner: Shared,
    pub(super) token: LeaseToken,
    pub(super) stamp: Stamp,
    /// For a holder bound to a session, `u64::MAX`: its end is the
    /// session's.
    pub(super) expires_at: u64,
    pub(super) session: Option<SessionId>,
}

/// Someone waiting in line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Waiter {
    pub(super) owner: Shared,
    pub(super) token: LeaseToken,
    pub(super) client: ClientId,
    pub(super) request: u64,
    pub(super) ttl_us: u64,
    pub(super) give_up_at: u64,
    pub(super) session: Option<SessionId>,
}

/// A lease held or awaited: its holder, its line and its fenced value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Lease {
    pub(super) holder: Option<Holder>,
    pub(super) waiters: Line,
    /// Boxed: most leases have none, and a box is a quarter of `Bytes`.
    pub(super) value: Option<Box<Bytes>>,
}

impl Lease {
    /// Nobody holds it and nobody waits: it (and its value) is dropped.
    pub(super) fn is_idle(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    /// What the table's indexes record about this lease.
    pub(super) fn marks(&self) -> Marks {
        // A bound holder's expiry is its session's, indexed there once.
        let own_expiry = self.holder.as_ref().filter(|h| h.session.is_none());
        Marks {
            expires_at: own_expiry.map(|h| h.expires_at),
            awaited: own_expiry.is_some() && !self.waiters.is_empty(),
            value_bytes: self.value.as_ref().map_or(0, |v| v.len() as u64),
            waiters: self.waiters.len(),
            session: self.holder.as_ref().and_then(|h| h.session),
        }
    }
}

/// The parts of a lease the table indexes: kept in step by
/// [`LeaseTable::update`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Marks {
    pub(super) expires_at: Option<u64>,
    pub(super) awaited: bool,
    pub(super) value_bytes: u64,
    pub(super) waiters: usize,
    pub(super) session: Option<SessionId>,
}

impl LeaseTable {
    /// Changes the lease `name` (created if absent) through `change`, then
    /// brings every index in step with it and drops it if nobody holds or
    /// waits for it any more (its value with it). Every change of a lease
    /// goes through here, so the indexes cannot drift from the leases.
    pub(super) fn update<R>(&mut self, name: &str, change: impl FnOnce(&mut Lease) -> R) -> R {
        // The name is allocated once, when the lease is created; every
        // index shares that allocation.
        let key = self
            .leases
            .get_key_value(name)
            .map_or_else(|| Shared::from(name), |(key, _)| key.clone());
        let lease = self.leases.entry(key.clone()).or_default();
        let before = lease.marks();
        let result = change(lease);
        let after = if lease.is_idle() {
            self.leases.remove(name);
            Marks::default()
        } else {
            lease.marks()
        };
        if (before.expires_at, before.awaited) != (after.expires_at, after.awaited) {
            if let Some(at) = before.expires_at {
                let entry = (at, key.clone());
                self.expiries.remove(&entry);
                self.awaited.remove(&entry);
            }
            if let Some(at) = after.expires_at {
                self.expiries.insert((at, key.clone()));
                if after.awaited {
                    self.awaited.insert((at, key.clone()));
                }
            }
        }
        if before.session != after.session {
            self.lease_sessions
                .moved(&key, before.session, after.session);
        }
        self.value_bytes = self
            .value_bytes
            .saturating_sub(before.value_bytes)
            .saturating_add(after.value_bytes);
        self.waiters = self
            .waiters
            .saturating_sub(before.waiters)
            .saturating_add(after.waiters);
        result
    }
}
