//! The lease clients of the model: what each starts (the default lease
//! workload, or a scenario's script of primitives), the answers they get,
//! and who believes it holds what at the present instant. Every decision
//! is the shipped [`trexlock_lease::client::ClientCore`]'s; this module
//! only builds the requests a program would send and reads the core's
//! book.

use crate::world::{Client, NAME, Packet, State, local};
use std::time::Duration;
use trexlock_lease::Stamp;
use trexlock_lease::command::{Mode, Op, Outcome};

/// How long an acquire waits in line: longer than any run, so that a
/// waiter is granted the lease rather than timed out.
const WAIT_MS: u64 = 60_000;
/// A holder stops believing this long before its deadline.
const GAP_US: u64 = 1_000;
/// The semaphore scripted clients share.
pub(crate) const SEMAPHORE: &str = "pool";
/// The read-write lease scripted clients share (the name the simulator's
/// share checker reports it by).
pub(crate) const READ_WRITE: &str = "doc";

/// One operation of a scripted client, in the order its script lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Plan {
    /// Acquire the lease, waiting in line if it is held.
    Acquire,
    /// The same, for a TTL of this many milliseconds instead of the
    /// clients' own.
    AcquireFor(u64),
    /// Renew the lease it holds.
    Renew,
    /// Release what it holds: its share, else the lease.
    Release,
    /// Set a lock-delay of this many milliseconds on the lease it holds.
    SetLockDelay(u64),
    /// Take a share, waiting in line: a permit of the semaphore, or a side
    /// of the read-write lease.
    Share(Mode),
    /// Open a lease session of the clients' TTL.
    OpenSession,
    /// Acquire the lease bound to its session, waiting in line.
    AcquireInSession,
}

/// A client that believes, at the present instant, that it holds a lease
/// or a share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Holder {
    pub(crate) client: usize,
    pub(crate) name: &'static str,
    pub(crate) stamp: Stamp,
    /// The share held; `None` for the lease.
    pub(crate) mode: Option<Mode>,
}

fn share_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Permit { .. } => SEMAPHORE,
        Mode::Read | Mode::Write => READ_WRITE,
    }
}

impl Client {
    fn held_stamp(&self, name: &str) -> Stamp {
        self.core.lease(name).map(|l| l.stamp).unwrap_or_default()
    }

    /// The default workload: acquire the lease, or, while it holds it,
    /// renew and then release it.
    fn default_op(&self, ttl_ms: u64) -> Op {
        let owner = self.core.owner().to_owned();
        let token = self.token;
        let held = self.core.lease(NAME).filter(|l| !l.ended).map(|l| l.stamp);
        match held {
            Some(stamp) if self.commands_left % 2 == 1 => Op::Renew {
                name: NAME.into(),
                owner,
                stamp,
                token,
                ttl_ms,
            },
            Some(stamp) => Op::Release {
                name: NAME.into(),
                owner,
                stamp,
                token,
            },
            None => Op::Acquire {
                name: NAME.into(),
                owner,
                token,
                ttl_ms,
                wait_ms: WAIT_MS,
            },
        }
    }

    /// The request for `plan`, as a program would build it from what the
    /// client core knows (a stamp it does not know is 0: the table then
    /// answers that it is not the holder).
    fn scripted_op(&mut self, plan: Plan, ttl_ms: u64) -> Op {
        let owner = self.core.owner().to_owned();
        let token = self.token;
        let name = NAME.to_owned();
        match plan {
            Plan::Acquire | Plan::AcquireFor(_) => Op::Acquire {
                name,
                owner,
                token,
                ttl_ms: if let Plan::AcquireFor(own) = plan {
                    own
                } else {
                    ttl_ms
                },
                wait_ms: WAIT_MS,
            },
            Plan::Renew => Op::Renew {
                stamp: self.held_stamp(&name),
                name,
                owner,
                token,
                ttl_ms,
            },
            Plan::Release => {
                let name = self.share.map_or(NAME, share_name).to_owned();
                Op::Release {
                    stamp: self.held_stamp(&name),
                    name,
                    owner,
                    token,
                }
            }
            Plan::SetLockDelay(lock_delay_ms) => Op::SetLockDelay {
                stamp: self.held_stamp(&name),
                name,
                owner,
                token,
                lock_delay_ms,
            },
            Plan::Share(mode) => self.share_op(mode, ttl_ms),
            Plan::OpenSession => Op::OpenSession {
                owner,
                token,
                ttl_ms,
            },
            Plan::AcquireInSession => Op::AcquireInSession {
                name,
                owner,
                token,
                session: self.session.unwrap_or_default(),
                wait_ms: WAIT_MS,
            },
        }
    }
}

impl Client {
    /// A request for a share of `mode`, waiting in line.
    fn share_op(&mut self, mode: Mode, ttl_ms: u64) -> Op {
        self.share = Some(mode);
        Op::AcquireShare {
            name: share_name(mode).to_owned(),
            owner: self.core.owner().to_owned(),
            token: self.token,
            ttl_ms,
            wait_ms: WAIT_MS,
            mode,
        }
    }
}

impl State {
    /// Client `c` starts its next operation: the next of its script, or
    /// (without one) acquire the lease, or, while it holds it, renew and
    /// then release it.
    pub(crate) fn client_start(&mut self, c: usize) {
        let now = local(c, true, self.now);
        let ttl_ms = self.ttl_ms;
        let client = &mut self.clients[c];
        client.commands_left -= 1;
        let op = match client.script.get(client.started).copied() {
            Some(plan) => client.scripted_op(plan, ttl_ms),
            None => client.default_op(ttl_ms),
        };
        client.started += 1;
        let request = client.core.start(op, now);
        client.waiting = Some((request.request, false));
        let node = client.home;
        if let Op::AcquireShare { mode, .. } = request.op {
            let session = client.core.id();
            self.ghost
                .share_sent(session, request.request, mode, self.real_ns());
        }
        self.send(Packet::Request { node, request });
    }

    /// Client `c` asks node `node` (its home from now on) which leases are
    /// held.
    pub(crate) fn client_list(&mut self, c: usize, node: usize) {
        let now = local(c, true, self.now);
        let client = &mut self.clients[c];
        client.home = node;
        let op = Op::List {
            prefix: String::new(),
            after: None,
            limit: 10,
        };
        let request = client.core.start(op, now);
        client.waiting = Some((request.request, false));
        let session = client.core.id();
        self.ghost.list_sent(session, request.request);
        self.send(Packet::Request { node, request });
    }

    /// Client `c` sends its unanswered request again, to the next node, as
    /// a client whose connection failed does: same id, a late duplicate.
    pub(crate) fn client_resend(&mut self, c: usize) {
        let client = &mut self.clients[c];
        let Some(request) = client.waiting.and_then(|(id, _)| client.core.request(id)) else {
            return;
        };
        client.home = (client.home + 1) % self.nodes.len();
        let node = client.home;
        self.send(Packet::Request { node, request });
    }

    pub(crate) fn client_answer(&mut self, c: usize, request: u64, outcome: Outcome) {
        let now = local(c, true, self.now);
        let session = self.clients[c].core.id();
        let waiting = self.clients[c].waiting.is_some_and(|(id, _)| id == request);
        self.ghost
            .on_acknowledged(session, request, &outcome, waiting);
        if !waiting {
            return;
        }
        let real_ns = self.real_ns();
        let client = &mut self.clients[c];
        if outcome == Outcome::Queued {
            client.waiting = Some((request, true));
            self.ghost.share_queued(session, request, real_ns);
            return;
        }
        client.waiting = None;
        let op = client.core.request(request).map(|r| r.op);
        client.core.answered(request, &outcome, now);
        match (op, &outcome) {
            (Some(Op::AcquireShare { .. }), Outcome::Granted { stamp, .. }) => {
                self.ghost.share_granted(session, request, *stamp);
            }
            (
                Some(Op::SetLockDelay {
                    stamp,
                    lock_delay_ms,
                    ..
                }),
                Outcome::LockDelaySet,
            ) => {
                self.ghost.lock_delay_set(stamp, lock_delay_ms);
            }
            (_, Outcome::SessionOpened { session }) => client.session = Some(*session),
            _ => {}
        }
    }

    /// Real time, in nanoseconds (for the simulator's real-time checks).
    pub(crate) fn real_ns(&self) -> u64 {
        u64::from(self.now) * crate::world::STEP_US * 1_000
    }

    /// Who believes it holds what at this instant: the leases and shares
    /// whose deadline, on the client's own clock, is still ahead (less the
    /// gap), and that the client has not sent a release of.
    pub(crate) fn holders(&self) -> Vec<Holder> {
        let mut holders = Vec::new();
        for (c, client) in self.clients.iter().enumerate() {
            // A holder that has sent its release has stopped acting
            // under the lease, though its core learns the lease ended
            // only from the answer.
            let releasing = client
                .waiting
                .and_then(|(id, _)| client.core.request(id))
                .is_some_and(|r| matches!(r.op, Op::Release { .. }));
            if releasing {
                continue;
            }
            let now = local(c, true, self.now);
            let names = [(NAME, None)]
                .into_iter()
                .chain(client.share.map(|m| (share_name(m), Some(m))));
            for (name, mode) in names {
                if let Some(l) = client
                    .core
                    .lease(name)
                    .filter(|l| !l.ended && now + Duration::from_micros(GAP_US) < l.deadline)
                {
                    holders.push(Holder {
                        client: c,
                        name,
                        stamp: l.stamp,
                        mode,
                    });
                }
            }
        }
        holders
    }

    /// Who believes it holds the lease at this instant.
    pub(crate) fn believers(&self) -> Vec<usize> {
        self.holders()
            .into_iter()
            .filter(|h| h.name == NAME)
            .map(|h| h.client)
            .collect()
    }

    /// After every step: the holders act at this instant, as the
    /// simulator's real-time checkers judge them (shares against their
    /// limits; the lease against the lock-delays, when the scenario sets
    /// any).
    pub(crate) fn observe(&mut self) {
        let holders = self.holders();
        if holders.is_empty() {
            return;
        }
        let at = self.real_ns();
        let ids: Vec<_> = self.clients.iter().map(|c| c.core.id()).collect();
        let shares: Vec<_> = holders
            .iter()
            .filter_map(|h| h.mode.map(|m| (h.name, h.stamp, ids[h.client], m)))
            .collect();
        if !shares.is_empty() {
            self.ghost.shares_act(&shares, at);
        }
        for h in holders.iter().filter(|h| h.mode.is_none()) {
            self.ghost
                .lease_acts(h.name, h.stamp, ids[h.client], self.now, at);
        }
    }
}
