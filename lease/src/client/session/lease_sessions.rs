//! The client core's book of lease sessions: each one's deadline, and the
//! deadlines of the leases bound to it.

use super::{ClientCore, ENDED_KEPT};
use crate::command::{Op, Outcome, SessionId};
use std::time::Duration;

/// A lease session as this client knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionState {
    /// The session's TTL.
    pub ttl: Duration,
    /// Until when the session (and every lease bound to it) may be
    /// believed held, on this client's clock: the send of the newest
    /// open or keep the cluster acknowledged plus the TTL shrunk by the
    /// drift bound.
    pub deadline: Duration,
    /// Set once the session is known to be over (closed, or the cluster
    /// answered that it is not open); `deadline` is then no later than
    /// that moment.
    pub ended: bool,
}

impl ClientCore {
    /// What this client knows of lease session `id`.
    pub fn session(&self, id: SessionId) -> Option<&SessionState> {
        self.sessions.get(&id)
    }

    /// Marks session `id`, and every lease bound to it, as over at `now`.
    pub fn end_session(&mut self, id: SessionId, now: Duration) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.deadline = s.deadline.min(now);
            s.ended = true;
        }
        for lease in self.leases.values_mut() {
            if lease.session == Some(id) {
                lease.deadline = lease.deadline.min(now);
                lease.ended = true;
            }
        }
    }

    /// The final answer to a request about a lease session, sent at
    /// `sent` (the moment deadlines count from), arrived at `now`.
    pub(super) fn session_answered(
        &mut self,
        op: Op,
        outcome: &Outcome,
        sent: Duration,
        now: Duration,
    ) {
        match (op, outcome) {
            (Op::OpenSession { ttl_ms, .. }, Outcome::SessionOpened { session }) => {
                let ttl = Duration::from_millis(ttl_ms);
                if self.sessions.len() >= ENDED_KEPT {
                    self.sessions.retain(|_, s| !s.ended);
                }
                let deadline = sent + self.belief(ttl);
                self.sessions.insert(
                    *session,
                    SessionState {
                        ttl,
                        deadline,
                        ended: false,
                    },
                );
            }
            (Op::KeepSession { session, .. }, Outcome::SessionKept) => self.kept(session, sent),
            (Op::AcquireInSession { name, session, .. }, Outcome::Granted { stamp, value }) => {
                let Some(s) = self.sessions.get(&session).filter(|s| !s.ended) else {
                    // A session this client did not open (or saw end):
                    // it cannot know the session's deadline, so it
                    // believes nothing.
                    self.granted(
                        name,
                        *stamp,
                        Duration::ZERO,
                        sent.min(now),
                        value.clone(),
                        Some(session),
                    );
                    return;
                };
                let ttl = s.ttl;
                let deadline = if sabotaged!(self, SessionLeaseFromAcquire) {
                    sent + self.belief(ttl)
                } else {
                    s.deadline
                };
                self.granted(name, *stamp, ttl, deadline, value.clone(), Some(session));
            }
            (Op::CloseSession { session, .. }, Outcome::SessionClosed)
            | (
                Op::KeepSession { session, .. }
                | Op::CloseSession { session, .. }
                | Op::AcquireInSession { session, .. },
                Outcome::NoSession,
            ) => self.end_session(session, now),
            _ => {}
        }
    }

    /// A keep of `id` sent at `sent` was acknowledged: the session and
    /// its live leases may be believed until `sent` plus its TTL (less
    /// drift), never earlier than before.
    fn kept(&mut self, id: SessionId, sent: Duration) {
        let Some(s) = self.sessions.get(&id).filter(|s| !s.ended) else {
            return;
        };
        let deadline = sent + self.belief(s.ttl);
        if let Some(s) = self.sessions.get_mut(&id) {
            s.deadline = s.deadline.max(deadline);
        }
        for lease in self.leases.values_mut() {
            if lease.session == Some(id) && !lease.ended {
                lease.deadline = lease.deadline.max(deadline);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ClientId, LeaseToken, Stamp};
    use crate::time::DriftBound;

    const MS: Duration = Duration::from_millis(1);
    const S: SessionId = SessionId(4);

    fn core() -> ClientCore {
        ClientCore::new(ClientId(1), "me".into(), DriftBound::DEFAULT)
    }

    fn answer(core: &mut ClientCore, op: Op, sent: Duration, outcome: Outcome, at: Duration) {
        let id = core.start(op, sent).request;
        core.answered(id, &outcome, at);
    }

    fn open(core: &mut ClientCore, ttl_ms: u64, sent: Duration, at: Duration) {
        let op = Op::OpenSession {
            owner: "me".into(),
            token: LeaseToken(7),
            ttl_ms,
        };
        answer(core, op, sent, Outcome::SessionOpened { session: S }, at);
    }

    fn keep() -> Op {
        Op::KeepSession {
            session: S,
            owner: "me".into(),
            token: LeaseToken(7),
        }
    }

    fn acquire(core: &mut ClientCore, name: &str, stamp: u64, sent: Duration) {
        let op = Op::AcquireInSession {
            name: name.into(),
            owner: "me".into(),
            token: LeaseToken(7),
            session: S,
            wait_ms: 0,
        };
        let granted = Outcome::Granted {
            stamp: Stamp(stamp),
            value: None,
        };
        answer(core, op, sent, granted, sent + MS);
    }

    #[test]
    fn a_bound_lease_ends_when_its_session_would_not_a_ttl_after_its_acquire() {
        let mut c = core();
        open(&mut c, 1_000, Duration::ZERO, 10 * MS);
        acquire(&mut c, "a", 1, 600 * MS);
        let session = c.session(S).unwrap().deadline;
        assert!(session <= 1_000 * MS && session >= 990 * MS, "{session:?}");
        assert_eq!(c.deadline("a", Stamp(1)), Some(session));
    }

    #[test]
    fn an_acknowledged_keep_moves_every_bound_lease_from_its_send() {
        let mut c = core();
        open(&mut c, 1_000, Duration::ZERO, 10 * MS);
        acquire(&mut c, "a", 1, 100 * MS);
        acquire(&mut c, "b", 2, 200 * MS);
        answer(&mut c, keep(), 500 * MS, Outcome::SessionKept, 900 * MS);
        let kept = c.session(S).unwrap().deadline;
        assert!(kept <= 1_500 * MS && kept >= 1_490 * MS, "{kept:?}");
        assert_eq!(c.deadline("a", Stamp(1)), Some(kept));
        assert_eq!(c.deadline("b", Stamp(2)), Some(kept));
    }

    #[test]
    fn a_keep_answered_late_never_moves_the_deadline_earlier() {
        let mut c = core();
        open(&mut c, 1_000, Duration::ZERO, 10 * MS);
        acquire(&mut c, "a", 1, 100 * MS);
        let early = c.start(keep(), 200 * MS).request;
        answer(&mut c, keep(), 600 * MS, Outcome::SessionKept, 610 * MS);
        let later = c.deadline("a", Stamp(1)).unwrap();
        c.answered(early, &Outcome::SessionKept, 700 * MS);
        assert_eq!(c.deadline("a", Stamp(1)), Some(later));
        assert_eq!(c.session(S).unwrap().deadline, later);
    }

    #[test]
    fn a_session_the_cluster_calls_over_ends_every_lease_bound_to_it() {
        let mut c = core();
        open(&mut c, 1_000, Duration::ZERO, 10 * MS);
        acquire(&mut c, "a", 1, 100 * MS);
        acquire(&mut c, "b", 2, 100 * MS);
        answer(&mut c, keep(), 300 * MS, Outcome::NoSession, 320 * MS);
        for (name, stamp) in [("a", 1), ("b", 2)] {
            let lease = c.lease(name).unwrap();
            assert!(lease.ended);
            assert_eq!(c.deadline(name, Stamp(stamp)), Some(320 * MS));
        }
        assert!(c.session(S).unwrap().ended);
        // A keep acknowledged after that revives nothing.
        answer(&mut c, keep(), 330 * MS, Outcome::SessionKept, 340 * MS);
        assert_eq!(c.deadline("a", Stamp(1)), Some(320 * MS));
    }
}
