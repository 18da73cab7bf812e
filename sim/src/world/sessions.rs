//! Lease sessions in the workload: some clients bind their leases to a
//! session they open, keep it instead of renewing each lease, and let it
//! run out or close it. Their deadlines are the shipped core's (a bound
//! lease's is its session's), so the real-time check of
//! [`crate::leases::LeaseChecker`] proves nobody is granted a lease of a
//! session before its holder stops believing; and every node's table is
//! checked, whenever a session ends there, to hold no lease bound to it.

use super::{MS, World};
use crate::leases::{LONG_TTL_US, NAMES, TTL_US};
use trexlock_lease::SessionId;
use trexlock_lease::command::Op;
use trexlock_lease::table::{Applied, Event as LeaseEvent};

impl World {
    /// A session client with nothing in flight and no lease: acquires in
    /// its session while the session is live for a while yet, else opens
    /// a new one.
    pub(super) fn session_client_wake(&mut self, c: usize, local_us: u64) {
        let client = &self.clients[c];
        let owner = client.core.owner().to_owned();
        let token = client.token;
        let live = client.session.filter(|s| {
            let gap_us = self.opts.safety_gap.as_micros() as u64;
            client
                .core
                .session(*s)
                .is_some_and(|st| !st.ended && st.deadline.as_micros() as u64 > local_us + gap_us)
        });
        let op = match live {
            Some(session) => Op::AcquireInSession {
                name: NAMES[self.rng.usize(0..NAMES.len())].to_owned(),
                owner,
                token,
                session,
                wait_ms: if self.rng.f64() < 0.3 { 0 } else { 500 },
            },
            None => {
                // Sometimes after a pause, so that a session's acquires
                // come well after its last keep.
                if self.rng.f64() < 0.5 {
                    self.clients[c].busy_until = self.now + self.rng.u64(0..100 * MS);
                }
                let ttl_us = if self.rng.f64() < 0.3 {
                    LONG_TTL_US
                } else {
                    TTL_US
                };
                Op::OpenSession {
                    owner,
                    token,
                    ttl_ms: ttl_us / 1_000,
                }
            }
        };
        self.start_request(c, op);
    }

    /// What a holder bound to `session` sends instead of a renewal (a
    /// keep) or a release (sometimes a close, ending all its leases).
    pub(super) fn session_op(&mut self, c: usize, session: SessionId, close: bool) -> Op {
        let owner = self.clients[c].core.owner().to_owned();
        let token = self.clients[c].token;
        if close {
            Op::CloseSession {
                session,
                owner,
                token,
            }
        } else {
            Op::KeepSession {
                session,
                owner,
                token,
            }
        }
    }

    /// On node `i`'s table, a session that ended holds no lease any more.
    pub(super) fn check_sessions_ended(&mut self, i: usize, results: &[Applied]) {
        let Some(core) = &self.nodes[i].core else {
            return;
        };
        let id = self.nodes[i].id;
        for event in results.iter().flat_map(|r| &r.events) {
            let LeaseEvent::SessionEnded { session, .. } = event else {
                continue;
            };
            self.outcome.sessions_ended += 1;
            let left = core.table().leases_bound_to(*session);
            if !left.is_empty() {
                self.checker.violations.push(format!(
                    "{id}: lease session {session} ended while still holding {left:?}"
                ));
            }
        }
    }
}
