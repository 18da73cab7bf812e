//! The client's safety logic as a pure state machine: request ids, what
//! the table may forget, and the holder's deadlines.
//!
//! [`ClientCore`] reads no clock: every input takes the caller's monotonic
//! time as a [`Duration`] since an origin of its choosing. The async
//! [`crate::LeaseClient`] and the simulator's clients both keep one.
//!
//! A holder's deadline for a lease is the moment it SENT the request that
//! granted (or renewed) it plus `ttl · (1 − ρ) / (1 + ρ)` ([`DriftBound`]):
//! the cluster counts the same TTL from a later commit, so with clock rates
//! within `ρ` nobody else is granted the lease before the holder's
//! deadline (see [`crate::time`]). All handles of one lease in a session
//! read the same entry here, so they always agree, and a deadline only
//! moves later until the lease ends.
//!
//! A lease bound to a lease session has no deadline of its own: it is the
//! session's, counted from the send of the newest keep (or open) the
//! cluster acknowledged, and it moves with every acknowledged keep (see
//! [`ClientCore::session`]). The table ends the lease no sooner than the
//! session, and the session no sooner than that keep's commit plus its
//! TTL, so the holder's deadline is never later than the table's.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_lease::client::ClientCore;
//! use trexlock_lease::{ClientId, DriftBound, LeaseToken, Op, Outcome, Stamp};
//!
//! let mut core = ClientCore::new(ClientId(7), "worker".into(), DriftBound::DEFAULT);
//! let sent = Duration::from_secs(1);
//! let token = LeaseToken(0x5eed);
//! let op = Op::Acquire { name: "job".into(), owner: "worker".into(), token, ttl_ms: 10_000, wait_ms: 0 };
//! let request = core.start(op, sent);
//! // The reply comes half a second later; the deadline counts from the send.
//! let granted = Outcome::Granted { stamp: Stamp(3), value: None };
//! core.answered(request.request, &granted, sent + Duration::from_millis(500));
//! let lease = core.lease("job").unwrap();
//! assert_eq!(lease.stamp, Stamp(3));
//! assert!(lease.deadline < sent + Duration::from_secs(10));
//! assert!(lease.deadline > sent + Duration::from_millis(9_900));
//! ```

use crate::command::{ClientId, Op, Outcome, Request, SessionId, Stamp};
use crate::time::DriftBound;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::time::Duration;

mod lease_sessions;

pub use lease_sessions::SessionState;

/// Ended leases kept so that old handles can still say when theirs ended;
/// beyond this many the oldest are dropped.
const ENDED_KEPT: usize = 1024;

/// A lease as this session knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseState {
    /// The fencing token of the grant.
    pub stamp: Stamp,
    /// The TTL asked for.
    pub ttl: Duration,
    /// Until when this session may believe it holds the lease (on the
    /// session's clock, drift already allowed for; pauses are not).
    pub deadline: Duration,
    /// The fenced value, as granted or as last written by this session.
    pub value: Option<Bytes>,
    /// Set once the lease is known to be over (released, lost, expired by
    /// the cluster's word); `deadline` is then no later than that moment.
    pub ended: bool,
    /// The lease session it is bound to, whose deadline is its deadline.
    pub session: Option<SessionId>,
}

/// A request of this session that has not had its final answer.
#[derive(Clone, Debug)]
struct InFlight {
    op: Op,
    sent: Duration,
}

/// The safety-relevant bookkeeping of one client session. See the module
/// documentation.
#[derive(Clone, Debug)]
pub struct ClientCore {
    id: ClientId,
    owner: String,
    drift: DriftBound,
    next_request: u64,
    in_flight: BTreeMap<u64, InFlight>,
    leases: BTreeMap<String, LeaseState>,
    sessions: BTreeMap<SessionId, SessionState>,
    #[cfg(feature = "sabotage")]
    cfg: Settings,
}

/// Settings of a [`ClientCore`] beyond its identity.
#[cfg(feature = "sabotage")]
#[derive(Clone, Copy, Debug, Default)]
struct Settings {
    sabotage: Option<crate::Sabotage>,
}

impl ClientCore {
    /// A session `id` acting as `owner`, with the cluster's drift bound.
    pub fn new(id: ClientId, owner: String, drift: DriftBound) -> ClientCore {
        ClientCore {
            id,
            owner,
            drift,
            next_request: 1,
            in_flight: BTreeMap::new(),
            leases: BTreeMap::new(),
            sessions: BTreeMap::new(),
            #[cfg(feature = "sabotage")]
            cfg: Settings::default(),
        }
    }

    /// The same session running a deliberately broken rule.
    #[cfg(feature = "sabotage")]
    pub fn with_sabotage(mut self, sabotage: Option<crate::Sabotage>) -> ClientCore {
        self.cfg.sabotage = sabotage;
        self
    }

    /// The session's id.
    pub fn id(&self) -> ClientId {
        self.id
    }

    /// Who this session acts as.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Builds the request for `op`, sent at `now`. Its id is new; every
    /// request of the session below the oldest unanswered one has been
    /// answered, so the table may forget those (`acked_below`).
    pub fn start(&mut self, op: Op, now: Duration) -> Request {
        let id = self.next_request;
        self.next_request += 1;
        self.in_flight.insert(id, InFlight { op, sent: now });
        self.request(id).expect("just inserted")
    }

    /// The request `id` as it must be (re)sent, if it is still unanswered:
    /// a retry carries the same id, so the table answers it without
    /// executing it again.
    pub fn request(&self, id: u64) -> Option<Request> {
        let sent = self.in_flight.get(&id)?;
        Some(Request {
            client: self.id,
            request: id,
            acked_below: self.acked_below(),
            op: sent.op.clone(),
        })
    }

    fn acked_below(&self) -> u64 {
        self.in_flight
            .keys()
            .next()
            .copied()
            .unwrap_or(self.next_request)
    }

    /// The caller stopped waiting for `id` (timed out or dropped). Its
    /// effect, if it had one, stays unknown; the lease book is unchanged.
    pub fn abandon(&mut self, id: u64) {
        self.in_flight.remove(&id);
    }

    /// The answer to request `id` arrived at `now`. A final answer ends
    /// the request and updates the lease book; [`Outcome::Queued`] and
    /// answers to unknown or already answered requests change nothing.
    /// Returns the request's send time for a final answer it was waiting
    /// for.
    pub fn answered(&mut self, id: u64, outcome: &Outcome, now: Duration) -> Option<Duration> {
        if *outcome == Outcome::Queued {
            return None;
        }
        let InFlight { op, sent } = self.in_flight.remove(&id)?;
        let counted_from = if sabotaged!(self, DeadlineFromReply) {
            now
        } else {
            sent
        };
        match (op, outcome) {
            (
                Op::Acquire { name, ttl_ms, .. } | Op::AcquireShare { name, ttl_ms, .. },
                Outcome::Granted { stamp, value },
            ) => {
                let ttl = Duration::from_millis(ttl_ms);
                let deadline = counted_from + self.belief(ttl);
                self.granted(name, *stamp, ttl, deadline, value.clone(), None);
            }
            (
                Op::Renew {
                    name,
                    stamp,
                    ttl_ms,
                    ..
                },
                Outcome::Renewed,
            ) => {
                let deadline = counted_from + self.belief(Duration::from_millis(ttl_ms));
                if let Some(lease) = self.live_mut(&name, stamp) {
                    lease.deadline = lease.deadline.max(deadline);
                }
            }
            (
                Op::Write {
                    name, stamp, value, ..
                },
                Outcome::Written,
            ) => {
                if let Some(lease) = self.live_mut(&name, stamp) {
                    lease.value = Some(value);
                }
            }
            (Op::Release { name, stamp, .. }, Outcome::Released) => self.end(&name, stamp, now),
            (
                Op::Renew { name, stamp, .. }
                | Op::Release { name, stamp, .. }
                | Op::Write { name, stamp, .. }
                | Op::SetLockDelay { name, stamp, .. },
                Outcome::NotHolder { .. },
            ) => self.end(&name, stamp, now),
            (
                op @ (Op::OpenSession { .. }
                | Op::KeepSession { .. }
                | Op::CloseSession { .. }
                | Op::AcquireInSession { .. }),
                outcome,
            ) => self.session_answered(op, outcome, counted_from, now),
            _ => {}
        }
        Some(sent)
    }

    /// What the session knows of the lease `name` (the newest grant).
    pub fn lease(&self, name: &str) -> Option<&LeaseState> {
        self.leases.get(name)
    }

    /// The deadline of grant `stamp` of `name`: its own while it is the
    /// session's newest grant of that name, else none (a newer grant
    /// replaced it, or the book dropped it long after it ended).
    pub fn deadline(&self, name: &str, stamp: Stamp) -> Option<Duration> {
        self.leases
            .get(name)
            .filter(|l| l.stamp == stamp)
            .map(|l| l.deadline)
    }

    /// Marks grant `stamp` of `name` as over at `now` (the session learnt
    /// it lost it, or gave it up).
    pub fn end(&mut self, name: &str, stamp: Stamp, now: Duration) {
        if let Some(lease) = self.leases.get_mut(name).filter(|l| l.stamp == stamp) {
            lease.deadline = lease.deadline.min(now);
            lease.ended = true;
        }
    }

    pub(super) fn granted(
        &mut self,
        name: String,
        stamp: Stamp,
        ttl: Duration,
        deadline: Duration,
        value: Option<Bytes>,
        session: Option<SessionId>,
    ) {
        match self.leases.get_mut(&name) {
            // A reentrant grant of the lease we hold: the cluster keeps
            // the later expiry, so may we.
            Some(lease) if lease.stamp == stamp && !lease.ended => {
                lease.deadline = lease.deadline.max(deadline);
                lease.ttl = ttl;
                lease.value = value;
            }
            // An older grant, or this one answered again after it ended
            // (a new grant always has a fresh stamp): stale.
            Some(lease) if lease.stamp >= stamp => {}
            _ => {
                self.prune_ended();
                self.leases.insert(
                    name,
                    LeaseState {
                        stamp,
                        ttl,
                        deadline,
                        value,
                        ended: false,
                        session,
                    },
                );
            }
        }
    }

    fn live_mut(&mut self, name: &str, stamp: Stamp) -> Option<&mut LeaseState> {
        self.leases
            .get_mut(name)
            .filter(|l| l.stamp == stamp && !l.ended)
    }

    fn prune_ended(&mut self) {
        if self.leases.len() < ENDED_KEPT {
            return;
        }
        self.leases.retain(|_, l| !l.ended);
    }

    pub(super) fn belief(&self, ttl: Duration) -> Duration {
        let ttl_us = u64::try_from(ttl.as_micros()).unwrap_or(u64::MAX);
        Duration::from_micros(self.drift.holder_belief_us(ttl_us))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::LeaseToken;

    const MS: Duration = Duration::from_millis(1);

    fn core() -> ClientCore {
        ClientCore::new(ClientId(1), "me".into(), DriftBound::DEFAULT)
    }

    fn acquire(core: &mut ClientCore, ttl_ms: u64, at: Duration) -> u64 {
        let op = Op::Acquire {
            name: "a".into(),
            owner: "me".into(),
            token: LeaseToken(7),
            ttl_ms,
            wait_ms: 0,
        };
        core.start(op, at).request
    }

    fn granted(stamp: u64) -> Outcome {
        Outcome::Granted {
            stamp: Stamp(stamp),
            value: None,
        }
    }

    #[test]
    fn the_deadline_counts_from_the_send_not_the_reply() {
        let mut c = core();
        let id = acquire(&mut c, 1_000, 100 * MS);
        c.answered(id, &granted(1), 900 * MS);
        let deadline = c.deadline("a", Stamp(1)).unwrap();
        assert!(deadline <= 100 * MS + 1_000 * MS);
        assert!(deadline >= 100 * MS + 997 * MS);
    }

    #[test]
    fn a_shorter_reentrant_grant_never_moves_the_deadline_earlier() {
        let mut c = core();
        let first = acquire(&mut c, 10_000, MS);
        c.answered(first, &granted(1), 2 * MS);
        let long = c.deadline("a", Stamp(1)).unwrap();
        let again = acquire(&mut c, 100, 3 * MS);
        c.answered(again, &granted(1), 4 * MS);
        assert_eq!(c.deadline("a", Stamp(1)), Some(long));
    }

    #[test]
    fn a_release_ends_the_lease_for_every_reader_of_the_book() {
        let mut c = core();
        let id = acquire(&mut c, 10_000, MS);
        c.answered(id, &granted(1), 2 * MS);
        let release = Op::Release {
            name: "a".into(),
            owner: "me".into(),
            stamp: Stamp(1),
            token: LeaseToken(7),
        };
        let id = c.start(release, 5 * MS).request;
        c.answered(id, &Outcome::Released, 6 * MS);
        let lease = c.lease("a").unwrap();
        assert!(lease.ended);
        assert_eq!(lease.deadline, 6 * MS);
    }

    #[test]
    fn a_grant_answered_after_its_release_does_not_revive_the_lease() {
        let mut c = core();
        let first = acquire(&mut c, 10_000, MS);
        c.answered(first, &granted(1), 2 * MS);
        // A reentrant acquire and a release race; the release's answer
        // is handled first.
        let again = acquire(&mut c, 10_000, 3 * MS);
        let release = Op::Release {
            name: "a".into(),
            owner: "me".into(),
            stamp: Stamp(1),
            token: LeaseToken(7),
        };
        let release = c.start(release, 3 * MS).request;
        c.answered(release, &Outcome::Released, 4 * MS);
        c.answered(again, &granted(1), 5 * MS);
        let lease = c.lease("a").unwrap();
        assert!(lease.ended);
        assert_eq!(lease.deadline, 4 * MS);
    }

    #[test]
    fn acked_below_never_passes_an_unanswered_request() {
        let mut c = core();
        let one = acquire(&mut c, 1_000, MS);
        let two = acquire(&mut c, 1_000, MS);
        assert_eq!(c.request(two).unwrap().acked_below, one);
        c.answered(two, &granted(1), 2 * MS);
        assert_eq!(c.request(one).unwrap().acked_below, one);
        c.answered(one, &granted(1), 2 * MS);
        let three = acquire(&mut c, 1_000, 3 * MS);
        assert_eq!(c.request(three).unwrap().acked_below, three);
    }

    #[test]
    fn a_queued_answer_keeps_the_request_open() {
        let mut c = core();
        let id = acquire(&mut c, 1_000, MS);
        assert_eq!(c.answered(id, &Outcome::Queued, 2 * MS), None);
        assert!(c.request(id).is_some(), "still open");
        assert_eq!(c.answered(id, &granted(4), 3 * MS), Some(MS));
        assert_eq!(c.answered(id, &granted(4), 3 * MS), None);
    }
}
