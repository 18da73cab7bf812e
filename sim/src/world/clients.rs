//! Lease clients: each wakes every few milliseconds, acts while its core
//! says it holds a lease, renews, releases, acquires again what it holds
//! (a second handle, sometimes with a shorter TTL), competes and waits.
//! Now and then it sends an unanswered request again to another node, as
//! a remote client does when its connection fails: late duplicates.

use super::{Event, MS, World};
use crate::leases::{ACTION_US, Holding, LOCK_DELAY_US, LONG_TTL_US, NAMES, TTL_US, Waiting};
use crate::shares::{PERMITS, READ_WRITE, SEMAPHORE};
use std::time::Duration;
use trexlock_lease::command::{Mode, Op, Outcome};

/// A request unanswered for this long (client clock) is sent again, with
/// the same id, to another node.
const RESEND_US: u64 = 150_000;

impl World {
    fn client_local(&self, c: usize) -> Duration {
        Duration::from_nanos(self.clients[c].clock.local(self.now))
    }

    pub(super) fn client_wake(&mut self, c: usize) {
        let next = self.rng.u64(MS..4 * MS);
        self.schedule(next, Event::ClientWake(c));
        if self.clients[c].busy_until > self.now {
            return;
        }
        let local_us = self.client_local(c).as_micros() as u64;
        self.resend_if_stuck(c, local_us);
        // Long pauses happen anywhere; a careful holder checks its lease
        // again after any of them, so they must never break safety.
        if self.faults_on && self.rng.f64() < 0.002 {
            self.clients[c].busy_until = self.now + self.rng.u64(0..2 * TTL_US * 1_000);
            return;
        }
        if self.clients[c].holding.is_some() {
            self.act_or_let_go(c, local_us);
        } else if self.clients[c].waiting.is_none() && self.rng.f64() < 0.1 {
            self.start_list(c);
        } else if self.clients[c].waiting.is_none()
            && self.clients[c].uses_sessions
            && self.rng.bool()
        {
            // Half the time: the other half it competes for semaphores and
            // read-write leases like any client.
            self.session_client_wake(c, local_us);
        } else if self.clients[c].waiting.is_none() {
            self.start_acquire(c);
        }
    }

    /// Asks for a lease, a permit of the semaphore, or a read or write
    /// share of the read-write lease.
    fn start_acquire(&mut self, c: usize) {
        let wait_ms = if self.rng.f64() < 0.2 { 0 } else { 1_000 };
        let owner = self.clients[c].core.owner().to_owned();
        let ttl_us = if self.rng.f64() < 0.3 {
            LONG_TTL_US
        } else {
            TTL_US
        };
        let (token, ttl_ms) = (self.clients[c].token, ttl_us / 1_000);
        // The read-write lease twice as often as each other name: a
        // reader arriving while a writer waits behind readers is rare.
        let pick = self.rng.usize(0..NAMES.len() + 3);
        let (name, mode) = match pick.checked_sub(NAMES.len()) {
            None => (NAMES[pick], None),
            Some(0) => (SEMAPHORE, Some(Mode::Permit { permits: PERMITS })),
            Some(_) if self.rng.f64() < 0.3 => (READ_WRITE, Some(Mode::Write)),
            Some(_) => (READ_WRITE, Some(Mode::Read)),
        };
        let name = name.to_owned();
        let Some(mode) = mode else {
            let op = Op::Acquire {
                name,
                owner,
                token,
                ttl_ms,
                wait_ms,
            };
            self.start_request(c, op);
            return;
        };
        let op = Op::AcquireShare {
            name,
            owner,
            token,
            ttl_ms,
            wait_ms,
            mode,
        };
        let id = self.start_request(c, op);
        let session = self.clients[c].core.id();
        self.shares.on_sent(session, id, mode, self.now);
    }

    fn resend_if_stuck(&mut self, c: usize, local_us: u64) {
        let Some(w) = self.clients[c].waiting.as_mut() else {
            return;
        };
        if w.queued || local_us < w.last_sent_local + RESEND_US {
            return;
        }
        w.last_sent_local = local_us;
        let id = w.id;
        if let Some(request) = self.clients[c].core.request(id) {
            self.outcome.resends += 1;
            let node = self.rng.usize(0..self.nodes.len());
            self.send_request(node, request);
        }
    }

    /// While the lease is valid with the safety gap, act on the resource
    /// (sometimes paused right after the check); renew, release or acquire
    /// it again now and then; once it is not valid any more, stop.
    fn act_or_let_go(&mut self, c: usize, local_us: u64) {
        let gap_us = self.opts.safety_gap.as_micros() as u64;
        let client = &self.clients[c];
        let holding = client.holding.as_ref().expect("holding");
        let deadline = client
            .core
            .deadline(&holding.name, holding.stamp)
            .map_or(0, |d| d.as_micros() as u64);
        let ttl_us = client
            .core
            .lease(&holding.name)
            .map_or(TTL_US, |l| l.ttl.as_micros() as u64);
        let bound = client.core.lease(&holding.name).and_then(|l| l.session);
        if local_us + gap_us >= deadline {
            self.clients[c].holding = None;
            return;
        }
        let (name, stamp, clock) = (holding.name.clone(), holding.stamp, client.clock);
        let mode = holding.mode;
        let owner = client.core.owner().to_owned();
        let token = client.token;
        let idle = client.waiting.is_none();
        let left = deadline - local_us;
        let (renew, release) = (holding.renewals_left > 0, holding.release_when_done);
        if idle && !renew && release && left < ttl_us / 2 {
            // Done with the resource: stop acting first, then release.
            self.clients[c].holding = None;
            let op = match bound {
                Some(session) if self.rng.bool() => self.session_op(c, session, true),
                _ => Op::Release {
                    name,
                    owner,
                    stamp,
                    token,
                },
            };
            self.start_request(c, op);
            return;
        }
        let pause = if self.rng.f64() < 0.05 {
            self.rng
                .u64(0..=self.opts.max_check_pause.as_nanos() as u64)
        } else {
            0
        };
        let end = clock.real_at((local_us + ACTION_US) * 1_000).max(self.now) + pause;
        let id = self.clients[c].core.id();
        let found = match mode {
            Some(mode) => self.shares.on_action(&name, stamp, id, mode, self.now, end),
            None => self.leases.on_action(&name, stamp, id, self.now, end),
        };
        self.checker.violations.extend(found);
        self.clients[c].busy_until = end;
        if !idle {
            return;
        }
        if let Some(session) = bound.filter(|_| self.rng.f64() < 0.02) {
            // A second handle of a lease bound to a session: the same
            // grant, still the session's.
            let op = Op::AcquireInSession {
                name,
                owner,
                token,
                session,
                wait_ms: 0,
            };
            self.start_request(c, op);
        } else if self.clients[c]
            .holding
            .as_ref()
            .is_some_and(|h| h.wants_lock_delay)
        {
            if let Some(h) = self.clients[c].holding.as_mut() {
                h.wants_lock_delay = false;
            }
            let op = Op::SetLockDelay {
                name,
                owner,
                stamp,
                token,
                lock_delay_ms: LOCK_DELAY_US / 1_000,
            };
            self.start_request(c, op);
        } else if self.rng.f64() < 0.02 {
            // A second handle of the same lease, asking for less time: the
            // cluster must keep the longer promise the first one counts on.
            let (ttl_ms, wait_ms) = (ttl_us / 3_000, 0);
            let op = match mode {
                Some(mode) => Op::AcquireShare {
                    name,
                    owner,
                    token,
                    ttl_ms,
                    wait_ms,
                    mode,
                },
                None => Op::Acquire {
                    name,
                    owner,
                    token,
                    ttl_ms,
                    wait_ms,
                },
            };
            self.start_request(c, op);
        } else if renew && left < ttl_us / 2 {
            if let Some(h) = self.clients[c].holding.as_mut() {
                h.renewals_left -= 1;
            }
            let op = match bound {
                Some(session) => self.session_op(c, session, false),
                None => Op::Renew {
                    name,
                    owner,
                    stamp,
                    token,
                    ttl_ms: ttl_us / 1_000,
                },
            };
            self.start_request(c, op);
        }
    }

    /// Lists every held lease, one page of up to two (the names clients
    /// compete for), so a continuation is exercised too.
    fn start_list(&mut self, c: usize) {
        let op = Op::List {
            prefix: String::new(),
            after: None,
            limit: 1 + self.rng.u32(0..2),
        };
        let id = self.start_request(c, op);
        self.lists.on_sent(self.clients[c].core.id(), id);
    }

    pub(super) fn start_request(&mut self, c: usize, op: Op) -> u64 {
        let now = self.client_local(c);
        let request = self.clients[c].core.start(op, now);
        self.clients[c].waiting = Some(Waiting {
            id: request.request,
            last_sent_local: now.as_micros() as u64,
            queued: false,
        });
        let id = request.request;
        let home = self.clients[c].home;
        self.send_request(home, request);
        id
    }

    fn send_request(&mut self, node: usize, request: trexlock_lease::Request) {
        if self.rng.f64() < self.loss {
            return;
        }
        let delay = self.delay();
        self.schedule(delay, Event::Request { node, request });
    }

    pub(super) fn client_answer(&mut self, c: usize, request: u64, outcome: Outcome) {
        let session = self.clients[c].core.id();
        let waiting = self.clients[c]
            .waiting
            .as_ref()
            .is_some_and(|w| w.id == request);
        self.checker
            .on_client_answer(session, request, &outcome, waiting);
        let now = self.client_local(c);
        let client = &mut self.clients[c];
        let Some(w) = client.waiting.as_mut().filter(|w| w.id == request) else {
            return;
        };
        if outcome == Outcome::Queued {
            w.queued = true;
            self.shares.on_queued(session, request, self.now);
            return;
        }
        client.waiting = None;
        let op = client.core.request(request).map(|r| r.op);
        client.core.answered(request, &outcome, now);
        match (outcome, op) {
            (Outcome::LockDelaySet, Some(Op::SetLockDelay { name, stamp, .. })) => {
                self.leases
                    .on_lock_delay(&name, stamp, LOCK_DELAY_US * 1_000);
            }
            (Outcome::Listed { leases, .. }, _) => {
                let found = self.lists.on_listed(session, request, &leases);
                self.checker.violations.extend(found);
            }
            (Outcome::Granted { stamp, .. }, Some(Op::AcquireShare { name, mode, .. })) => {
                let found = self.shares.on_granted(session, request, stamp);
                self.checker.violations.extend(found);
                if client.holding.as_ref().is_some_and(|h| h.stamp == stamp) {
                    return;
                }
                let renewals_left = self.rng.u8(0..3);
                let release_when_done = self.rng.f64() < 0.3;
                self.clients[c].holding = Some(Holding {
                    name,
                    stamp,
                    renewals_left,
                    release_when_done,
                    wants_lock_delay: false,
                    mode: Some(mode),
                });
            }
            (
                Outcome::Granted { stamp, .. },
                Some(op @ (Op::Acquire { .. } | Op::AcquireInSession { .. })),
            ) => {
                let name = op.name().to_owned();
                self.lists.on_granted(&name, stamp);
                if client.holding.as_ref().is_some_and(|h| h.stamp == stamp) {
                    return;
                }
                let renewals_left = self.rng.u8(0..3);
                let release_when_done = self.rng.f64() < 0.3;
                // A lock-delay applies when a grant expires by itself; a
                // lease bound to a session ends with the session instead.
                let in_session = matches!(op, Op::AcquireInSession { .. });
                let wants_lock_delay = !in_session && self.rng.f64() < 0.3;
                self.clients[c].holding = Some(Holding {
                    name,
                    stamp,
                    renewals_left,
                    release_when_done,
                    wants_lock_delay,
                    mode: None,
                });
            }
            (Outcome::NotHolder { .. } | Outcome::Released, _) => client.holding = None,
            (Outcome::SessionOpened { session }, _) => client.session = Some(session),
            (Outcome::NoSession | Outcome::SessionClosed, _) => {
                client.holding = None;
                client.session = None;
            }
            _ => {}
        }
    }
}
