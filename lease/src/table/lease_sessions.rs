//! Lease sessions: one TTL and one keep-alive for many leases (etcd's
//! lease with many keys, Hazelcast's CP session).
//!
//! A session is opened with a TTL ([`Op::OpenSession`]); a lease acquired
//! in it ([`Op::AcquireInSession`]) has no expiry of its own: it lasts as
//! long as the session. One [`Op::KeepSession`] extends the session, and
//! so every lease bound to it, whatever their number: renewal costs one
//! command per session, not per lease. When the session ends (it expires,
//! or [`Op::CloseSession`]) every lease bound to it ends in the same
//! command, and each one's next waiter is served.
//!
//! # Why not the request-dedup sessions
//!
//! The table's other sessions (keyed by [`crate::ClientId`], see the
//! [module docs](super)) exist so that a retried request is not executed
//! twice: the client picks their id at random, any request creates one, it
//! is forgotten after [`super::SESSION_IDLE_US`] of silence, and forgetting
//! it ends nothing. A lease session is the opposite on every count: it is
//! opened explicitly with a TTL its user chooses, proven by a secret,
//! numbered by the table, and its end ends leases. One application may
//! also use several request-dedup sessions (a client with another call
//! timeout, a remote client's reconnections) for one lease session. Tying
//! the two together would make dedup bookkeeping end leases, so they are
//! kept apart.
//!
//! # Cost and bounds
//!
//! A bound holder is not in the table's expiry index; the session's expiry
//! is, once, in [`LeaseSessions`]. Expiry work is therefore O(expiring
//! sessions plus their leases) per command, never O(leases). At most
//! [`MAX_LEASE_SESSIONS`] sessions are open and each holds at most
//! [`MAX_LEASES_PER_SESSION`] leases; going over either is refused with a
//! typed [`Refusal`]. Waiters bound to a session are not counted against
//! it; a waiter whose session ended by the time the lease comes free is
//! answered [`Outcome::NoSession`] and skipped.

use super::owners::Shared;
use super::{Applied, Event, LeaseTable, MAX_LEASES};
use crate::command::{LeaseToken, Op, Outcome, Refusal, SessionId};
use std::collections::{BTreeMap, BTreeSet};

/// Most lease sessions open at once (every node applies the same limit).
pub const MAX_LEASE_SESSIONS: usize = 100_000;
/// Most leases one session holds at once.
pub const MAX_LEASES_PER_SESSION: usize = 4_096;

/// One open lease session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct LeaseSession {
    pub(super) owner: Shared,
    pub(super) token: LeaseToken,
    pub(super) ttl_us: u64,
    /// Table time at which it ends unless kept.
    pub(super) expires_at: u64,
    /// The leases it holds (an index, rebuilt from the holders on load).
    pub(super) held: BTreeSet<Shared>,
}

/// Every open lease session and its indexes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LeaseSessions {
    /// The id given to the last session opened: ids are never reused.
    pub(super) last_id: u64,
    pub(super) open: BTreeMap<SessionId, LeaseSession>,
    /// Every open session's `expires_at`.
    pub(super) expiries: BTreeSet<(u64, SessionId)>,
    /// Leases held by some session.
    pub(super) bound: usize,
}

impl LeaseSessions {
    /// Inserts an open session and its expiry.
    pub(super) fn insert(&mut self, id: SessionId, session: LeaseSession) {
        self.expiries.insert((session.expires_at, id));
        self.open.insert(id, session);
    }

    /// The lease `name` stopped (`before`) or started (`after`) being
    /// held by a session: keeps each session's `held` and the count.
    pub(super) fn moved(
        &mut self,
        name: &Shared,
        before: Option<SessionId>,
        after: Option<SessionId>,
    ) {
        if let Some(id) = before {
            self.bound = self.bound.saturating_sub(1);
            if let Some(s) = self.open.get_mut(&id) {
                s.held.remove(name);
            }
        }
        if let Some(id) = after {
            self.bound += 1;
            if let Some(s) = self.open.get_mut(&id) {
                s.held.insert(name.clone());
            }
        }
    }

    /// The session `id` if `owner` and `token` are its own.
    fn proven(&self, id: SessionId, owner: &str, token: LeaseToken) -> Option<&LeaseSession> {
        self.open
            .get(&id)
            .filter(|s| &*s.owner == owner && s.token == token)
    }

    /// Why session `id` may not take one more lease now, if it may not.
    pub(super) fn refusal(&self, id: SessionId) -> Option<Outcome> {
        match self.open.get(&id) {
            None => Some(Outcome::NoSession),
            Some(s) if s.held.len() >= MAX_LEASES_PER_SESSION => {
                Some(Outcome::Refused(Refusal::TooManyLeasesInSession))
            }
            Some(_) => None,
        }
    }
}

/// Checks the fields of an operation on a session itself (open, keep,
/// close); `None` for every other operation.
pub(super) fn validate(op: &Op) -> Option<Result<(), Refusal>> {
    match op {
        Op::OpenSession { owner, ttl_ms, .. } => {
            Some(super::admission::check_owner(owner).and_then(|()| {
                if (1..=super::MAX_TTL_MS).contains(ttl_ms) {
                    Ok(())
                } else {
                    Err(Refusal::TtlOutOfRange)
                }
            }))
        }
        Op::KeepSession { owner, .. } | Op::CloseSession { owner, .. } => {
            Some(super::admission::check_owner(owner))
        }
        _ => None,
    }
}

impl LeaseTable {
    /// How many lease sessions are open.
    pub fn lease_sessions_len(&self) -> usize {
        self.lease_sessions.open.len()
    }

    /// Table time at which session `id` ends unless kept; `None` if it is
    /// not open.
    pub fn lease_session_expiry_us(&self, id: SessionId) -> Option<u64> {
        self.lease_sessions.open.get(&id).map(|s| s.expires_at)
    }

    /// The leases whose holder is bound to session `id`, found by looking
    /// at every lease (not through the session's own index): for checks
    /// and tools, O(leases).
    pub fn leases_bound_to(&self, id: SessionId) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(_, l)| l.holder.as_ref().is_some_and(|h| h.session == Some(id)))
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// The earliest table time at which a lease session ends.
    pub(super) fn next_lease_session_expiry_us(&self) -> Option<u64> {
        self.lease_sessions.expiries.first().map(|(at, _)| *at)
    }

    /// When session `id` ends (for a bound holder's remaining time).
    pub(super) fn session_expires_at(&self, id: SessionId) -> u64 {
        self.lease_sessions
            .open
            .get(&id)
            .map_or(self.now, |s| s.expires_at)
    }

    /// Ends every session whose time is up, with its leases: O(log n) per
    /// session ended plus its leases, so it runs on every command.
    pub(super) fn end_expired_sessions(&mut self, out: &mut Applied) {
        while let Some(&(at, id)) = self.lease_sessions.expiries.first() {
            if at > self.now {
                break;
            }
            self.end_session(id, true, out);
        }
    }

    /// Extends session `id` to its TTL from now, if `owner` and `token`
    /// prove it: one command for all of its leases.
    pub(super) fn keep_session(
        &mut self,
        id: SessionId,
        owner: &str,
        token: LeaseToken,
    ) -> Outcome {
        let Some(s) = self.lease_sessions.proven(id, owner, token) else {
            return Outcome::NoSession;
        };
        let (was, until) = (s.expires_at, self.now.saturating_add(s.ttl_us));
        if until > was {
            let sessions = &mut self.lease_sessions;
            sessions.expiries.remove(&(was, id));
            sessions.expiries.insert((until, id));
            if let Some(s) = sessions.open.get_mut(&id) {
                s.expires_at = until;
            }
        }
        Outcome::SessionKept
    }

    /// Ends session `id` now, if `owner` and `token` prove it.
    pub(super) fn close_session(
        &mut self,
        id: SessionId,
        owner: &str,
        token: LeaseToken,
        out: &mut Applied,
    ) -> Outcome {
        if self.lease_sessions.proven(id, owner, token).is_none() {
            return Outcome::NoSession;
        }
        self.end_session(id, false, out);
        Outcome::SessionClosed
    }

    /// The TTL of session `id`, if `owner` and `token` prove it.
    pub(super) fn session_ttl_us(
        &self,
        id: SessionId,
        owner: &str,
        token: LeaseToken,
    ) -> Option<u64> {
        self.lease_sessions
            .proven(id, owner, token)
            .map(|s| s.ttl_us)
    }

    /// Opens a session of `ttl_us` for `owner`, numbered after the last.
    pub(super) fn open_session(&mut self, owner: &str, token: LeaseToken, ttl_us: u64) -> Outcome {
        if self.lease_sessions.open.len() >= MAX_LEASE_SESSIONS {
            return Outcome::Refused(Refusal::TooManyLeaseSessions);
        }
        self.lease_sessions.last_id += 1;
        let id = SessionId(self.lease_sessions.last_id);
        let session = LeaseSession {
            owner: self.owners.intern(owner),
            token,
            ttl_us,
            expires_at: self.now.saturating_add(ttl_us),
            held: BTreeSet::new(),
        };
        self.lease_sessions.insert(id, session);
        Outcome::SessionOpened { session: id }
    }

    /// Whether session `id` may take one more lease (the table-wide lease
    /// limit included), and if not, the answer.
    pub(super) fn session_refusal(&self, id: SessionId, new_lease: bool) -> Option<Outcome> {
        if new_lease && self.len() + self.blocked_len() >= MAX_LEASES {
            return Some(Outcome::Refused(Refusal::TooManyLeases));
        }
        self.lease_sessions.refusal(id)
    }

    /// Ends session `id`: every lease it holds ends in this command (as
    /// expired, or released when closed) and goes to its next waiter.
    fn end_session(&mut self, id: SessionId, expired: bool, out: &mut Applied) {
        let Some(session) = self.lease_sessions.open.remove(&id) else {
            return;
        };
        self.lease_sessions
            .expiries
            .remove(&(session.expires_at, id));
        for name in session.held {
            let ended = self.update(&name, |l| l.holder.take_if(|h| h.session == Some(id)));
            if let Some(holder) = ended {
                out.events.push(if expired {
                    Event::Expired {
                        name: name.to_string(),
                        stamp: holder.stamp,
                    }
                } else {
                    Event::Released {
                        name: name.to_string(),
                        stamp: holder.stamp,
                    }
                });
            }
            self.grant_next(&name, out);
        }
        out.events.push(Event::SessionEnded {
            session: id,
            expired,
        });
    }
}

#[cfg(test)]
mod tests;
