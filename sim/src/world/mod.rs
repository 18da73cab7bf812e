//! One simulated run: nodes, network, journals, clocks, faults and a
//! workload, all driven by a single seeded generator so a seed replays
//! exactly. Every decision is made by the shipped cores: each node is a
//! [`trexlock_lease::NodeCore`], each lease client a
//! [`trexlock_lease::client::ClientCore`]; this module only delivers their
//! inputs and performs their effects, with faults in between.

mod clients;
mod node;
mod reconfig;
mod sessions;

use crate::SimOptions;
use crate::checker::Checker;
use crate::leases::{LeaseChecker, SimClient};
use crate::lists::ListChecker;
use crate::shares::ShareChecker;
use node::SimNode;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trexlock_lease::PeerMessage;
use trexlock_lease::command::{ClientId, Op, Outcome as LeaseOutcome, Request};
use trexlock_paxos::{Membership, NodeId, Slot};

const MS: u64 = 1_000_000;
const TICK: u64 = 10 * MS;
/// Sessions of the background and probe workloads start here.
const BACKGROUND_SESSIONS: u64 = 1 << 40;

/// What happened during one seed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Safety or liveness violations, first one first.
    pub violations: Vec<String>,
    /// Slots chosen.
    pub chosen: u64,
    /// Commands applied somewhere.
    pub acknowledged: u64,
    /// Crashes injected.
    pub crashes: u64,
    /// Clean stops (the node drained its journal first).
    pub clean_stops: u64,
    /// Crashes that lost a journal write in flight.
    pub lost_writes: u64,
    /// Partitions injected.
    pub partitions: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Times a node became leader.
    pub elections: u64,
    /// Actions lease holders took on their fenced resources.
    pub lease_actions: u64,
    /// Actions holders of semaphore permits and read-write shares took.
    pub share_actions: u64,
    /// Leases granted (counted at the first node to apply each grant).
    pub lease_grants: u64,
    /// Crashes that also wiped the node's journal.
    pub disk_losses: u64,
    /// Requests clients sent again to another node.
    pub resends: u64,
    /// Membership changes the leader took (`--reconfig`).
    pub changes: u64,
    /// Nodes that stopped because they were removed.
    pub removals: u64,
    /// Snapshots a node installed from a peer's chunks.
    pub snapshot_installs: u64,
    /// The largest of those snapshots, in bytes.
    pub largest_install_bytes: u64,
    /// Lists answered to clients (each checked against the grants
    /// acknowledged before it was sent).
    pub lists: u64,
    /// Lease sessions that ended (expired or closed), counted on every
    /// node that applied the end, each checked to leave no lease behind.
    pub sessions_ended: u64,
}

#[derive(Debug)]
enum Event {
    Deliver {
        from: usize,
        to: usize,
        message: PeerMessage,
    },
    ClientWake(usize),
    /// A call arriving at a node.
    Request {
        node: usize,
        request: Request,
    },
    Answer {
        client: usize,
        request: u64,
        outcome: LeaseOutcome,
    },
    Tick(usize),
    Background,
    /// A node's journal finished a write: it is durable now.
    SyncDone {
        node: usize,
        incarnation: u64,
    },
    /// The node's task learns that the write is durable.
    SyncNotify {
        node: usize,
        incarnation: u64,
        id: u64,
    },
    Fault,
    Restart(usize),
    Heal,
    Probe,
    Reconfig,
}

/// The simulated world for one seed.
pub struct World {
    seed: u64,
    opts: SimOptions,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<SimNode>,
    blocked: BTreeSet<(usize, usize)>,
    loss: f64,
    duplicate: f64,
    faults_on: bool,
    /// Range of the time between faults (this seed's fault intensity).
    fault_gap: (u64, u64),
    next_background: u64,
    /// Sessions of requests sent after the faults stopped; one of them
    /// must reach every node.
    probes: Vec<ClientId>,
    /// Where each probe was applied first.
    probe_slots: BTreeMap<ClientId, Slot>,
    checker: Checker,
    clients: Vec<SimClient>,
    leases: LeaseChecker,
    lists: ListChecker,
    shares: ShareChecker,
    outcome: Outcome,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, opts: SimOptions) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let extra = if opts.reconfig {
            reconfig::EXTRA_NODES
        } else {
            0
        };
        let genesis: Vec<NodeId> = (1..=opts.nodes as u16).map(NodeId).collect();
        let nodes = (1..=(opts.nodes + extra) as u16)
            .map(|id| SimNode::new(id, &genesis, &mut rng, opts.max_drift_ppm))
            .collect();
        let clients = (0..opts.clients)
            .map(|c| SimClient::new(c, &mut rng, &opts))
            .collect();
        let loss = rng.f64() * 0.1;
        let fault_gap = [
            (100 * MS, 400 * MS),
            (300 * MS, 1_000 * MS),
            (1_000 * MS, 2_000 * MS),
        ][rng.usize(0..3)];
        let duplicate = rng.f64() * 0.05;
        World {
            seed,
            opts,
            rng,
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            nodes,
            blocked: BTreeSet::new(),
            loss,
            duplicate,
            faults_on: true,
            fault_gap,
            next_background: 0,
            probes: Vec::new(),
            probe_slots: BTreeMap::new(),
            checker: Checker::new(Membership::of_voters(genesis)),
            clients,
            leases: LeaseChecker::new(opts.max_drift_ppm),
            lists: ListChecker::default(),
            shares: ShareChecker::default(),
            outcome: Outcome::default(),
        }
    }

    /// Runs the seed to completion: a fault phase, then a healed phase in
    /// which the cluster must apply a new request on every node within the
    /// liveness bound.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            if self.nodes[i].born {
                self.start_node(i);
            }
            let jitter = self.rng.u64(0..TICK);
            self.schedule(jitter, Event::Tick(i));
        }
        if self.opts.reconfig {
            let first = self.rng.u64(100 * MS..400 * MS);
            self.schedule(first, Event::Reconfig);
        }
        self.schedule(MS, Event::Background);
        for c in 0..self.clients.len() {
            let start = self.rng.u64(0..10 * MS);
            self.schedule(start, Event::ClientWake(c));
        }
        let first_fault = self.rng.u64(50 * MS..300 * MS);
        self.schedule(first_fault, Event::Fault);
        let fault_end = self.opts.fault_time.as_nanos() as u64;
        self.schedule_at(fault_end, Event::Heal);
        let deadline = fault_end + self.opts.liveness_bound.as_nanos() as u64;
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > deadline || !self.checker.violations.is_empty() {
                break;
            }
            self.now = at;
            self.dispatch(event);
            if !self.faults_on && !self.probes.is_empty() && self.probe_done() {
                self.check_final();
                break;
            }
        }
        if self.checker.violations.is_empty() && !self.probe_done() {
            self.checker.violations.push(format!(
                "liveness: no new request reached every node within {:?} after faults stopped (seed {})",
                self.opts.liveness_bound, self.seed
            ));
        }
        self.outcome.violations = std::mem::take(&mut self.checker.violations);
        self.outcome.acknowledged = self.checker.acknowledged().count() as u64;
        self.outcome.lease_actions = self.leases.actions;
        self.outcome.share_actions = self.shares.actions;
        self.outcome.lists = self.lists.answered;
        self.outcome
    }

    fn schedule(&mut self, after: u64, event: Event) {
        self.schedule_at(self.now + after, event);
    }

    fn schedule_at(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver { from, to, message } => self.deliver(from, to, message),
            Event::ClientWake(c) => self.client_wake(c),
            Event::Request { node, request } => self.node_request(node, request),
            Event::Answer {
                client,
                request,
                outcome,
            } => self.client_answer(client, request, outcome),
            Event::Tick(i) => {
                let next = TICK + self.rng.u64(0..MS);
                self.schedule(next, Event::Tick(i));
                if self.runnable(i) {
                    self.step(i, |core, now| core.tick(now));
                }
            }
            Event::Background => {
                if self.faults_on {
                    let next = self.rng.u64(2 * MS..10 * MS);
                    self.schedule(next, Event::Background);
                }
                self.next_background += 1;
                let session = ClientId(BACKGROUND_SESSIONS + self.next_background);
                let node = self.rng.usize(0..self.nodes.len());
                self.node_request(node, read_request(session));
            }
            Event::SyncDone { node, incarnation } => self.sync_done(node, incarnation),
            Event::SyncNotify {
                node,
                incarnation,
                id,
            } => self.sync_notify(node, incarnation, id),
            Event::Fault => self.inject_fault(),
            Event::Restart(i) => {
                if self.nodes[i].core.is_none() && !self.nodes[i].removed {
                    self.start_node(i);
                }
            }
            Event::Heal => self.heal(),
            Event::Reconfig => self.reconfigure(),
            Event::Probe => {
                let session = ClientId(u64::MAX - self.probes.len() as u64);
                self.probes.push(session);
                let node = self.rng.usize(0..self.nodes.len());
                self.node_request(node, read_request(session));
                self.schedule(50 * MS, Event::Probe);
            }
        }
    }

    fn runnable(&self, i: usize) -> bool {
        self.nodes[i].core.is_some()
            && !self.nodes[i].stopping
            && self.nodes[i].paused_until <= self.now
    }

    /// Holds an event for a paused node until it resumes.
    fn defer_if_paused(&mut self, i: usize, event: Event) -> Option<Event> {
        if self.nodes[i].paused_until > self.now {
            let at = self.nodes[i].paused_until + self.rng.u64(0..MS);
            self.schedule_at(at, event);
            return None;
        }
        Some(event)
    }

    fn deliver(&mut self, from: usize, to: usize, message: PeerMessage) {
        if self.nodes[to].core.is_none() || self.nodes[to].stopping {
            return;
        }
        let Some(Event::Deliver { message, .. }) =
            self.defer_if_paused(to, Event::Deliver { from, to, message })
        else {
            return;
        };
        let from_id = self.nodes[from].id;
        self.step(to, |core, now| core.peer(now, from_id, message));
    }

    fn node_request(&mut self, node: usize, request: Request) {
        if self.nodes[node].core.is_none() || self.nodes[node].stopping {
            return;
        }
        let Some(Event::Request { request, .. }) =
            self.defer_if_paused(node, Event::Request { node, request })
        else {
            return;
        };
        self.step(node, |core, now| {
            core.request(now, request);
            Ok(())
        });
    }

    fn send(&mut self, from: usize, to: usize, message: PeerMessage) {
        if self.blocked.contains(&(from, to)) || self.rng.f64() < self.loss {
            return;
        }
        if self.rng.f64() < self.duplicate {
            let delay = self.delay();
            let copy = message.clone();
            self.schedule(
                delay,
                Event::Deliver {
                    from,
                    to,
                    message: copy,
                },
            );
        }
        let delay = self.delay();
        self.schedule(delay, Event::Deliver { from, to, message });
    }

    /// Mostly sub-millisecond to a few milliseconds; sometimes very late,
    /// which reorders messages.
    fn delay(&mut self) -> u64 {
        if self.faults_on && self.rng.f64() < 0.03 {
            self.rng.u64(10 * MS..200 * MS)
        } else {
            self.rng.u64(MS / 10..3 * MS)
        }
    }

    fn leader_index(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.core.as_ref().is_some_and(|c| c.replica().is_leader()))
    }

    fn inject_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let next = self.rng.u64(self.fault_gap.0..self.fault_gap.1);
        self.schedule(next, Event::Fault);
        let n = self.nodes.len();
        match self.rng.u32(0..6) {
            0 => {
                let i = self.pick_target();
                self.crash(i);
            }
            1 if self.rng.bool() => {
                let i = self.pick_target();
                self.crash(i);
            }
            1 => {
                let i = self.pick_target();
                self.stop_cleanly(i);
            }
            2 => {
                // Split the nodes into two sides; links across are cut.
                self.outcome.partitions += 1;
                let side: Vec<bool> = (0..n).map(|_| self.rng.bool()).collect();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            self.blocked.insert((a, b));
                        }
                    }
                }
            }
            3 => {
                // One-way cut: the target hears nothing, or is heard by no one.
                self.outcome.partitions += 1;
                let i = self.pick_target();
                let inbound = self.rng.bool();
                for j in (0..n).filter(|j| *j != i) {
                    self.blocked.insert(if inbound { (j, i) } else { (i, j) });
                }
            }
            4 => {
                self.outcome.pauses += 1;
                let i = self.pick_target();
                self.nodes[i].paused_until = self.now + self.rng.u64(100 * MS..1_500 * MS);
            }
            _ => self.blocked.clear(),
        }
    }

    /// The leader half of the time (the interesting victim), else anyone.
    fn pick_target(&mut self) -> usize {
        match self.leader_index() {
            Some(l) if self.rng.bool() => l,
            _ => self.rng.usize(0..self.nodes.len()),
        }
    }

    fn heal(&mut self) {
        self.faults_on = false;
        self.blocked.clear();
        self.loss = 0.0;
        self.duplicate = 0.0;
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until = self.nodes[i].paused_until.min(self.now);
            if self.nodes[i].core.is_none() && self.nodes[i].born && !self.nodes[i].removed {
                self.start_node(i);
            }
        }
        self.schedule(0, Event::Probe);
    }

    /// Some probe was applied by every node (or reached it inside a
    /// snapshot it installed).
    fn probe_done(&self) -> bool {
        let membership = self.current_membership();
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.is_live_member(*i, membership.as_ref()))
            .collect();
        self.probes.iter().any(|probe| {
            live.iter().map(|i| &self.nodes[*i]).all(|n| {
                let seen = n.probes_seen.contains(probe);
                seen || self
                    .probe_slots
                    .get(probe)
                    .is_some_and(|s| *s <= n.history.base())
            })
        })
    }

    /// Once every node applied the probe, every acknowledged command must
    /// be in every node's history at the slot where it was applied (where
    /// the node saw that slot applied rather than installed).
    fn check_final(&mut self) {
        let mut missing = Vec::new();
        let membership = self.current_membership();
        let live: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.is_live_member(*i, membership.as_ref()))
            .collect();
        for (cmd, slot) in self.checker.acknowledged() {
            for node in live.iter().map(|i| &self.nodes[*i]) {
                let held = node
                    .history
                    .get(slot)
                    .is_some_and(|v| v.commands().contains(cmd));
                if !held && slot > node.history.base() && node.history.last_slot() >= slot {
                    missing.push(format!("{} lost acknowledged slot {slot}", node.id));
                }
            }
        }
        self.checker.violations.extend(missing);
    }
}

/// A read from a session of its own: a request that carries no lease
/// state, for the background and probe workloads.
fn read_request(client: ClientId) -> Request {
    Request {
        client,
        request: 1,
        acked_below: 1,
        op: Op::Read {
            name: "background".into(),
        },
    }
}

fn duration(ns: u64) -> Duration {
    Duration::from_nanos(ns)
}
