//! Lease clients: each wakes every few milliseconds, acts while it
//! believes it holds a lease, renews, releases, competes and waits.

use super::{Event, MS, World};
use crate::leases::{ACTION_US, Holding, NAMES, Outstanding, TTL_US};
use trexlock_lease::DriftBound;
use trexlock_lease::command::{Op, Outcome};

/// A request unanswered for this long (client clock) is sent again, with
/// the same id: the table answers a retry without executing it twice.
const RETRY_US: u64 = 200_000;

impl World {
    pub(super) fn client_wake(&mut self, c: usize) {
        let next = self.rng.u64(MS..4 * MS);
        self.schedule(next, Event::ClientWake(c));
        if self.clients[c].busy_until > self.now {
            return;
        }
        let local_us = self.clients[c].clock.local(self.now) / 1_000;
        if let Some(o) = &mut self.clients[c].outstanding
            && !o.queued
            && local_us >= o.last_sent_local + RETRY_US
        {
            o.last_sent_local = local_us;
            let request = o.request.clone();
            self.send_request(c, request);
        }
        // Long pauses happen anywhere; a careful holder checks its lease
        // again after any of them, so they must never break safety.
        if self.faults_on && self.rng.f64() < 0.002 {
            self.clients[c].busy_until = self.now + self.rng.u64(0..2 * TTL_US * 1_000);
            return;
        }
        if self.clients[c].holding.is_some() {
            self.act_or_let_go(c, local_us);
        } else if self.clients[c].outstanding.is_none() {
            let name = NAMES[self.rng.usize(0..NAMES.len())].to_owned();
            let wait_ms = if self.rng.f64() < 0.2 { 0 } else { 1_000 };
            let (owner, token) = (self.clients[c].owner.clone(), self.clients[c].token);
            let op = Op::Acquire {
                name,
                owner,
                token,
                ttl_ms: TTL_US / 1_000,
                wait_ms,
            };
            self.start_request(c, op, local_us);
        }
    }

    /// While the lease is valid with the safety gap, act on the resource
    /// (sometimes paused right after the check); renew or release now and
    /// then; once it is not valid any more, stop.
    fn act_or_let_go(&mut self, c: usize, local_us: u64) {
        let gap_us = self.opts.safety_gap.as_micros() as u64;
        let client = &self.clients[c];
        let holding = client.holding.as_ref().expect("holding");
        if local_us + gap_us >= holding.belief_end_local {
            self.clients[c].holding = None;
            return;
        }
        let (name, stamp, id, clock) =
            (holding.name.clone(), holding.stamp, client.id, client.clock);
        let (owner, token) = (client.owner.clone(), client.token);
        let idle = client.outstanding.is_none();
        let left = holding.belief_end_local - local_us;
        let (renew, release) = (holding.renewals_left > 0, holding.release_when_done);
        if idle && !renew && release && left < TTL_US / 2 {
            // Done with the resource: stop acting first, then release.
            self.clients[c].holding = None;
            self.start_request(
                c,
                Op::Release {
                    name,
                    owner,
                    stamp,
                    token,
                },
                local_us,
            );
            return;
        }
        let pause = if self.rng.f64() < 0.05 {
            self.rng
                .u64(0..=self.opts.max_check_pause.as_nanos() as u64)
        } else {
            0
        };
        let end = clock.real_at((local_us + ACTION_US) * 1_000).max(self.now) + pause;
        let found = self.leases.on_action(&name, stamp, id, self.now, end);
        self.checker.violations.extend(found);
        self.clients[c].busy_until = end;
        if idle && renew && left < TTL_US / 2 {
            if let Some(h) = self.clients[c].holding.as_mut() {
                h.renewals_left -= 1;
            }
            let op = Op::Renew {
                name,
                owner,
                stamp,
                token,
                ttl_ms: TTL_US / 1_000,
            };
            self.start_request(c, op, local_us);
        }
    }

    fn start_request(&mut self, c: usize, op: Op, local_us: u64) {
        let request = self.clients[c].request(op);
        self.clients[c].outstanding = Some(Outstanding {
            request: request.clone(),
            sent_local: local_us,
            last_sent_local: local_us,
            queued: false,
        });
        self.send_request(c, request);
    }

    fn send_request(&mut self, c: usize, request: trexlock_lease::Request) {
        if self.rng.f64() < self.loss {
            return;
        }
        let home = self.clients[c].home;
        let delay = self.delay();
        self.schedule(
            delay,
            Event::ClientRequest {
                node: home,
                request,
                hops: 2,
            },
        );
    }

    pub(super) fn client_response(&mut self, c: usize, request: u64, outcome: Outcome) {
        let client = &mut self.clients[c];
        let Some(o) = client
            .outstanding
            .as_mut()
            .filter(|o| o.request.request == request)
        else {
            return;
        };
        if outcome == Outcome::Queued {
            o.queued = true;
            return;
        }
        let o = client.outstanding.take().expect("checked");
        let belief = DriftBound::DEFAULT.holder_belief_us(TTL_US);
        match (outcome, o.request.op) {
            (Outcome::Granted { stamp, .. }, Op::Acquire { name, .. }) => {
                let renewals_left = self.rng.u8(0..3);
                let release_when_done = self.rng.f64() < 0.3;
                let client = &mut self.clients[c];
                client.holding = Some(Holding {
                    name,
                    stamp,
                    belief_end_local: o.sent_local + belief,
                    renewals_left,
                    release_when_done,
                });
            }
            (Outcome::Renewed, Op::Renew { stamp, .. }) => {
                if let Some(h) = client.holding.as_mut().filter(|h| h.stamp == stamp) {
                    h.belief_end_local = h.belief_end_local.max(o.sent_local + belief);
                }
            }
            (Outcome::NotHolder { .. }, _) => client.holding = None,
            _ => {}
        }
    }
}
