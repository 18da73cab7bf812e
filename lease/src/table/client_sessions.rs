//! Client sessions: how the table answers every request at most once
//! (the module docs of [`super`] say how), and forgets sessions gone idle.

use super::{
    Applied, LeaseTable, MAX_OUTCOMES_PER_SESSION, MAX_REMEMBERED_OUTCOMES, MAX_SESSIONS,
    SESSION_IDLE_US, validate,
};
use crate::command::{ClientId, Op, Outcome, Refusal, Request};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What the table remembers of one client session.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Session {
    /// The highest `acked_below` seen: every request below it was answered.
    pub(super) acked_below: u64,
    /// Table time at which the session is forgotten.
    pub(super) expires_at: u64,
    /// Outcomes of requests at or above `acked_below`, without values.
    pub(super) outcomes: BTreeMap<u64, Outcome>,
}

impl LeaseTable {
    /// Forgets sessions whose time is up: O(log n) per session forgotten,
    /// so it runs on every command.
    pub(super) fn forget_idle_sessions(&mut self) {
        while let Some(&(at, client)) = self.session_expiries.first() {
            if at > self.now {
                break;
            }
            self.session_expiries.pop_first();
            if let Some(forgotten) = self.sessions.remove(&client) {
                self.outcomes = self.outcomes.saturating_sub(forgotten.outcomes.len());
            }
        }
    }

    /// The session's entry, created if new, kept at least until `until`.
    pub(super) fn touch_session(&mut self, client: ClientId, until: u64) -> &mut Session {
        let session = self.sessions.entry(client).or_default();
        if until > session.expires_at {
            self.session_expiries.remove(&(session.expires_at, client));
            session.expires_at = until;
            self.session_expiries.insert((until, client));
        }
        session
    }

    /// Answers one request: refused, answered from its session, or
    /// executed (and remembered).
    pub(super) fn answer(&mut self, req: &Request, out: &mut Applied) -> Outcome {
        // Defence in depth: the node admits requests before proposing
        // them, but the log is the table's only input it can trust to be
        // the same everywhere, so it checks again.
        if let Err(refusal) = validate(&req.op) {
            return Outcome::Refused(refusal);
        }
        let is_read = matches!(req.op, Op::Read { .. } | Op::List { .. });
        let known = self.sessions.contains_key(&req.client);
        if is_read && !known {
            // A read changes nothing, so it needs no session: one-off
            // readers do not fill the table.
            return self.execute(req, out);
        }
        if !known && self.sessions.len() >= MAX_SESSIONS {
            return Outcome::Refused(Refusal::TooManySessions);
        }
        let until = self.now.saturating_add(SESSION_IDLE_US);
        let session = self.touch_session(req.client, until);
        let mut forgotten = 0;
        if req.acked_below > session.acked_below {
            session.acked_below = req.acked_below;
            // Usually one or two entries go: popping them spares building
            // a new map for the rest (`split_off`) on every request.
            while let Some(entry) = session.outcomes.first_entry() {
                if *entry.key() >= req.acked_below {
                    break;
                }
                entry.remove();
                forgotten += 1;
            }
        }
        let answered = req.request < session.acked_below;
        let done = session.outcomes.get(&req.request).cloned();
        let session_full = session.outcomes.len() >= MAX_OUTCOMES_PER_SESSION;
        self.outcomes = self.outcomes.saturating_sub(forgotten);
        if answered {
            return Outcome::AlreadyAnswered;
        }
        if let Some(done) = done {
            return self.replay(done, &req.op);
        }
        if is_read {
            return self.execute(req, out);
        }
        if session_full {
            return Outcome::Refused(Refusal::TooManyPendingRequests);
        }
        if self.outcomes >= MAX_REMEMBERED_OUTCOMES {
            return Outcome::Refused(Refusal::TooManyPendingRequestsInAll);
        }
        let outcome = self.execute(req, out);
        self.remember(req.client, req.request, &outcome);
        outcome
    }

    /// Records the answer to a request of a session still remembered and
    /// not yet acknowledged, without the lease's value (see
    /// [`LeaseTable::replay`]).
    pub(super) fn remember(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        let Some(s) = self.sessions.get_mut(&client) else {
            return;
        };
        if request < s.acked_below {
            return;
        }
        let kept = match outcome {
            Outcome::Granted { stamp, .. } => Outcome::Granted {
                stamp: *stamp,
                value: None,
            },
            other => other.clone(),
        };
        if s.outcomes.insert(request, kept).is_none() {
            self.outcomes += 1;
        }
    }

    /// A remembered outcome, as sent again: a grant still current carries
    /// the lease's value now.
    pub(super) fn replay(&self, outcome: Outcome, op: &Op) -> Outcome {
        match outcome {
            Outcome::Granted { stamp, .. } => Outcome::Granted {
                stamp,
                value: self
                    .leases
                    .get(op.name())
                    .filter(|l| l.holder.as_ref().is_some_and(|h| h.stamp == stamp))
                    .and_then(|l| l.value.as_deref().cloned()),
            },
            other => other,
        }
    }
}
