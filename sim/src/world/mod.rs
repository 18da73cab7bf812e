//! One simulated run: nodes, network, clocks, faults and a workload, all
//! driven by a single seeded generator so a seed replays exactly.

mod clients;
mod node;

use crate::SimOptions;
use crate::checker::Checker;
use crate::clock::Clock;
use crate::leases::{LeaseChecker, SimClient};
use crate::machine::History;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use trexlock_lease::LeaseTable;
use trexlock_lease::command::{Body, ClientId, Command, Op, Outcome as LeaseOutcome, Request};
use trexlock_lease::time::LeaderClock;
use trexlock_paxos::{Config, Envelope, MemJournal, NodeId, ProposeError, Replica};

const MS: u64 = 1_000_000;
const TICK: u64 = 10 * MS;

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
    /// Partitions injected.
    pub partitions: u64,
    /// Pauses injected.
    pub pauses: u64,
    /// Times a node became leader.
    pub elections: u64,
    /// Actions lease holders took on their fenced resources.
    pub lease_actions: u64,
    /// Leases granted (counted at the first node to apply each grant).
    pub lease_grants: u64,
    /// Crashes that also wiped the node's journal.
    pub disk_losses: u64,
}

#[derive(Debug)]
enum Event {
    Deliver(Envelope),
    ClientWake(usize),
    ClientRequest {
        node: usize,
        request: Request,
        hops: u32,
    },
    ClientResponse {
        client: usize,
        request: u64,
        outcome: LeaseOutcome,
    },
    Tick(usize),
    Client,
    Forward(usize, Bytes),
    Fault,
    Restart(usize),
    Heal,
    Probe,
}

struct Node {
    id: NodeId,
    journal: MemJournal,
    replica: Option<Replica>,
    history: History,
    table: LeaseTable,
    /// Set while this node leads and has started its lease epoch.
    leader_clock: Option<LeaderClock>,
    /// Table time for which a tick was last proposed.
    tick_for: Option<u64>,
    /// Last stamp granted per lease, as applied here (stamps must grow).
    granted: BTreeMap<String, trexlock_lease::Stamp>,
    clock: Clock,
    paused_until: u64,
    incarnation: u64,
}

/// The simulated world for one seed.
pub struct World {
    seed: u64,
    opts: SimOptions,
    rng: fastrand::Rng,
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Event>,
    nodes: Vec<Node>,
    blocked: BTreeSet<(usize, usize)>,
    loss: f64,
    duplicate: f64,
    faults_on: bool,
    /// Range of the time between faults (this seed's fault intensity).
    fault_gap: (u64, u64),
    next_command: u64,
    /// Commands sent after the faults stopped; one of them must reach
    /// every node.
    probes: Vec<Bytes>,
    checker: Checker,
    clients: Vec<SimClient>,
    leases: LeaseChecker,
    outcome: Outcome,
}

impl World {
    /// Builds the world for `seed`.
    pub fn new(seed: u64, opts: SimOptions) -> World {
        let mut rng = fastrand::Rng::with_seed(seed);
        let members: Vec<NodeId> = (1..=opts.nodes as u16).map(NodeId).collect();
        let nodes = members
            .iter()
            .map(|id| Node {
                id: *id,
                journal: MemJournal::new(),
                replica: None,
                history: History::default(),
                clock: Clock {
                    offset: rng.u64(0..1_000 * MS),
                    ppm: rng.i64(-opts.max_drift_ppm..=opts.max_drift_ppm),
                },
                table: LeaseTable::new(),
                leader_clock: None,
                tick_for: None,
                granted: BTreeMap::new(),
                paused_until: 0,
                incarnation: 0,
            })
            .collect();
        let clients = (0..opts.clients)
            .map(|c| SimClient {
                id: ClientId(1_000 + c as u64),
                owner: format!("client-{c}"),
                home: rng.usize(0..opts.nodes),
                clock: Clock {
                    offset: rng.u64(0..1_000 * MS),
                    ppm: rng.i64(-opts.max_drift_ppm..=opts.max_drift_ppm),
                },
                busy_until: 0,
                next_request: 0,
                outstanding: None,
                holding: None,
            })
            .collect();
        let quorum = opts.nodes / 2 + 1;
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
            next_command: 0,
            probes: Vec::new(),
            checker: Checker::new(quorum),
            clients,
            leases: LeaseChecker::default(),
            outcome: Outcome::default(),
        }
    }

    /// Runs the seed to completion: a fault phase, then a healed phase in
    /// which the cluster must choose a new command on every node within
    /// the liveness bound.
    pub fn run(mut self) -> Outcome {
        for i in 0..self.nodes.len() {
            self.start_node(i);
            let jitter = self.rng.u64(0..TICK);
            self.schedule(jitter, Event::Tick(i));
        }
        self.schedule(MS, Event::Client);
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
            // After the faults, leases keep being used for a calm second.
            if self.now >= fault_end + 1_000 * MS && self.probe_done() {
                self.check_final();
                return self.finish();
            }
        }
        if self.checker.violations.is_empty() {
            let nodes: Vec<String> = self
                .nodes
                .iter()
                .map(|n| match &n.replica {
                    Some(r) => format!("{r:?} learner={} leader={:?}", r.is_learner(), r.leader()),
                    None => format!("{} down", n.id),
                })
                .collect();
            self.checker.violations.push(format!(
                "liveness: no command chosen on every node within {:?} after faults stopped; {}",
                self.opts.liveness_bound,
                nodes.join("; ")
            ));
        }
        self.finish()
    }

    fn finish(mut self) -> Outcome {
        self.outcome.violations = std::mem::take(&mut self.checker.violations);
        self.outcome.acknowledged = self.checker.acknowledged().count() as u64;
        self.outcome.lease_actions = self.leases.actions;
        self.outcome
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.schedule_at(self.now + delay, event);
    }

    fn schedule_at(&mut self, at: u64, event: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), event);
    }

    fn local(&self, i: usize) -> Duration {
        Duration::from_nanos(self.nodes[i].clock.local(self.now))
    }

    fn local_us(&self, i: usize) -> u64 {
        self.nodes[i].clock.local(self.now) / 1_000
    }

    fn index(&self, id: NodeId) -> usize {
        usize::from(id.0) - 1
    }

    fn config(&self, i: usize) -> Config {
        let members = self.nodes.iter().map(|n| n.id).collect();
        let mut cfg = Config::new(self.nodes[i].id, members);
        cfg.seed = self.seed ^ ((i as u64) << 48) ^ (self.nodes[i].incarnation << 32);
        cfg.keep_after_snapshot = 8;
        cfg.window = 16;
        cfg.max_batch = 8;
        cfg.catchup_batch = 32;
        cfg.sabotage = self.opts.sabotage;
        cfg
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Deliver(env) => self.deliver(env),
            Event::ClientWake(c) => self.client_wake(c),
            Event::ClientRequest {
                node,
                request,
                hops,
            } => self.node_request(node, request, hops),
            Event::ClientResponse {
                client,
                request,
                outcome,
            } => self.client_response(client, request, outcome),
            Event::Tick(i) => {
                let next = TICK + self.rng.u64(0..MS);
                self.schedule(next, Event::Tick(i));
                if self.runnable(i) {
                    let now = self.local(i);
                    let result = self.replica(i).map(|r| r.tick(now));
                    self.after_step(i, result);
                    self.tick_if_a_lease_is_due(i);
                }
            }
            Event::Client => {
                if self.faults_on {
                    let next = self.rng.u64(2 * MS..10 * MS);
                    self.schedule(next, Event::Client);
                }
                self.next_command += 1;
                let cmd = raw_command(self.next_command);
                let i = self.rng.usize(0..self.nodes.len());
                self.client_propose(i, cmd, 3);
            }
            Event::Forward(i, cmd) => self.client_propose(i, cmd, 0),
            Event::Fault => self.inject_fault(),
            Event::Restart(i) => {
                if self.nodes[i].replica.is_none() {
                    self.start_node(i);
                }
            }
            Event::Heal => self.heal(),
            Event::Probe => {
                let cmd = raw_command(u64::MAX - self.probes.len() as u64);
                self.probes.push(cmd.clone());
                let i = self.rng.usize(0..self.nodes.len());
                self.client_propose(i, cmd, 3);
                self.schedule(50 * MS, Event::Probe);
            }
        }
    }

    fn runnable(&self, i: usize) -> bool {
        self.nodes[i].replica.is_some() && self.nodes[i].paused_until <= self.now
    }

    fn replica(&mut self, i: usize) -> Option<&mut Replica> {
        self.nodes[i].replica.as_mut()
    }

    /// A client submits `cmd` at node `i`, following leader hints.
    fn client_propose(&mut self, i: usize, cmd: Bytes, hops: u32) {
        if !self.runnable(i) {
            return;
        }
        let now = self.local(i);
        let Some(replica) = self.replica(i) else {
            return;
        };
        match replica.propose(now, vec![cmd.clone()]) {
            Ok(ready) => self.after_step(i, Some(Ok(ready))),
            Err(ProposeError::NotLeader { leader: Some(l) }) if hops > 0 => {
                let j = self.index(l);
                self.schedule(MS / 2, Event::Forward(j, cmd));
            }
            Err(ProposeError::NotLeader { .. }) => {}
            Err(ProposeError::CommandTooLarge { .. } | ProposeError::Stopped) => {}
        }
    }

    fn deliver(&mut self, env: Envelope) {
        let i = self.index(env.to);
        if self.nodes[i].replica.is_none() {
            return;
        }
        if self.nodes[i].paused_until > self.now {
            let at = self.nodes[i].paused_until + self.rng.u64(0..MS);
            self.schedule_at(at, Event::Deliver(env));
            return;
        }
        let now = self.local(i);
        let result = self.replica(i).map(|r| r.handle(now, env));
        self.after_step(i, result);
    }

    fn send(&mut self, env: Envelope) {
        let (from, to) = (self.index(env.from), self.index(env.to));
        if self.blocked.contains(&(from, to)) || self.rng.f64() < self.loss {
            return;
        }
        if self.rng.f64() < self.duplicate {
            let delay = self.delay();
            self.schedule(delay, Event::Deliver(env.clone()));
        }
        let delay = self.delay();
        self.schedule(delay, Event::Deliver(env));
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

    /// True when every node's journal is intact or it has finished
    /// learning after a disk loss.
    fn no_node_is_relearning(&self) -> bool {
        self.nodes.iter().all(|n| {
            let emptied = n.journal.state() == &trexlock_paxos::JournalState::default();
            match &n.replica {
                Some(r) => !r.is_learner(),
                None => !emptied,
            }
        })
    }

    fn leader_index(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.replica.as_ref().is_some_and(Replica::is_leader))
    }

    fn inject_fault(&mut self) {
        if !self.faults_on {
            return;
        }
        let next = self.rng.u64(self.fault_gap.0..self.fault_gap.1);
        self.schedule(next, Event::Fault);
        let n = self.nodes.len();
        match self.rng.u32(0..6) {
            0 | 1 => {
                let i = self.pick_target();
                if self.nodes[i].replica.take().is_some() {
                    self.outcome.crashes += 1;
                    self.nodes[i].incarnation += 1;
                    // Sometimes the disk is lost too (one node at a time:
                    // losing a majority's disks loses chosen values by
                    // definition). It restarts empty, as a learner.
                    if self.opts.disk_loss && self.rng.f64() < 0.25 && self.no_node_is_relearning()
                    {
                        self.outcome.disk_losses += 1;
                        self.nodes[i].journal = MemJournal::new();
                        self.checker.forget_promises(self.nodes[i].id);
                    }
                    let down = self.rng.u64(20 * MS..800 * MS);
                    self.schedule(down, Event::Restart(i));
                }
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
            if self.nodes[i].replica.is_none() {
                self.start_node(i);
            }
        }
        self.schedule(0, Event::Probe);
    }

    fn probe_done(&self) -> bool {
        self.probes.iter().any(|probe| {
            self.nodes
                .iter()
                .all(|n| n.history.iter().any(|(_, v)| v.commands().contains(probe)))
        })
    }

    /// Once every node applied the probe, every acknowledged command must
    /// be in every node's history at the slot where it was applied.
    fn check_final(&mut self) {
        let mut missing = Vec::new();
        for (cmd, slot) in self.checker.acknowledged() {
            for node in &self.nodes {
                let held = node
                    .history
                    .get(slot)
                    .is_some_and(|v| v.commands().contains(cmd));
                if !held && node.history.last_slot() >= slot {
                    missing.push(format!("{} lost acknowledged slot {slot}", node.id));
                }
            }
        }
        self.checker.violations.extend(missing);
    }
}

/// A plain read request with a unique session: a command the lease table
/// accepts that carries no time, for the background and probe workloads.
fn raw_command(n: u64) -> Bytes {
    let command = Command {
        epoch: trexlock_paxos::Ballot::ZERO,
        elapsed_us: 0,
        body: Body::Request(Request {
            client: ClientId(n),
            request: 1,
            acked_below: 1,
            op: Op::Read {
                name: "background".into(),
            },
        }),
    };
    command.encode()
}
