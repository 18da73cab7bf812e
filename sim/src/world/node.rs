//! A simulated node: the shipped [`NodeCore`] with a simulated journal
//! whose writes complete after a varying latency, one at a time. A crash
//! loses the write in flight and everything the core had not yet handed
//! over (the commit-index hint included), and can fall between a write
//! becoming durable and the core hearing of it.

use super::{Event, MS, World, duration};
use crate::clock::Clock;
use crate::machine::History;
use std::collections::BTreeMap;
use trexlock_lease::command::{Body, ClientId, Command};
use trexlock_lease::table::Event as LeaseEvent;
use trexlock_lease::{Effect, NodeConfig, NodeCore, NodeError, Stamp};
use trexlock_paxos::{Journal, JournalWrite, MemJournal, NodeId, Value};

/// Snapshot (and compact) this often, so installs happen in every run.
const SNAPSHOT_EVERY: u64 = 20;
/// Snapshot chunks far smaller than the simulated tables' snapshots, so
/// that every install assembles many chunks through loss, duplication
/// and reordering.
const SNAPSHOT_CHUNK_BYTES: usize = 64;

pub(super) struct SimNode {
    pub(super) id: NodeId,
    pub(super) core: Option<NodeCore>,
    /// What survives a crash.
    journal: MemJournal,
    /// The write the journal is working on (lost if the node crashes
    /// before it completes).
    writing: Option<(u64, JournalWrite)>,
    pub(super) history: History,
    /// Probe sessions whose request is in `history` (kept beside it so the
    /// liveness check need not decode the history at every step).
    pub(super) probes_seen: std::collections::BTreeSet<ClientId>,
    /// Last stamp granted per lease, as applied here (stamps must grow).
    granted: BTreeMap<String, Stamp>,
    pub(super) clock: Clock,
    pub(super) paused_until: u64,
    /// Stopping cleanly: it takes no more input and stops once its
    /// journal has nothing in flight, as the shell's drain does.
    pub(super) stopping: bool,
    incarnation: u64,
    /// Started at least once (nodes that join later are not, at first).
    pub(super) born: bool,
    /// It stopped because it was removed from the membership.
    pub(super) removed: bool,
    /// The member list of its configuration file.
    pub(super) bootstrap: Vec<NodeId>,
}

impl SimNode {
    pub(super) fn new(
        id: u16,
        genesis: &[NodeId],
        rng: &mut fastrand::Rng,
        max_drift_ppm: i64,
    ) -> SimNode {
        let born = genesis.contains(&NodeId(id));
        SimNode {
            id: NodeId(id),
            core: None,
            journal: MemJournal::new(),
            writing: None,
            history: History::default(),
            probes_seen: std::collections::BTreeSet::new(),
            granted: BTreeMap::new(),
            clock: Clock {
                offset: rng.u64(0..1_000 * MS),
                ppm: rng.i64(-max_drift_ppm..=max_drift_ppm),
            },
            paused_until: 0,
            stopping: false,
            incarnation: 0,
            born,
            removed: false,
            bootstrap: genesis.to_vec(),
        }
    }
}

/// True when `value` carries a request of session `client`.
pub(super) fn carries(value: &Value, client: ClientId) -> bool {
    value.commands().iter().any(|bytes| {
        Command::decode(bytes)
            .is_ok_and(|c| matches!(c.body, Body::Request(r) if r.client == client))
    })
}

impl World {
    fn node_config(&self, i: usize) -> NodeConfig {
        let members = self.nodes[i].bootstrap.clone();
        let mut cfg = NodeConfig::new(self.nodes[i].id, members);
        cfg.snapshot_every = SNAPSHOT_EVERY;
        cfg.max_batch = 8;
        cfg.window = 16;
        cfg.retry_interval = duration(200 * MS);
        // Messages of about two full slots, so that Accepts, catch-up
        // responses and promises are split as large ones are in production.
        cfg.max_batch_bytes = 1024;
        cfg.max_message_bytes = 2 * 1024
            + 2 * trexlock_paxos::ENTRY_OVERHEAD_BYTES
            + trexlock_paxos::MESSAGE_OVERHEAD_BYTES;
        cfg.sabotage = self.opts.sabotage.and_then(|s| s.runtime());
        cfg
    }

    pub(super) fn start_node(&mut self, i: usize) {
        let cfg = self.node_config(i);
        let mut paxos =
            cfg.paxos_config(self.seed ^ ((i as u64) << 48) ^ (self.nodes[i].incarnation << 32));
        paxos.keep_after_snapshot = 8;
        paxos.catchup_batch = 32;
        paxos.snapshot_chunk_bytes = SNAPSHOT_CHUNK_BYTES;
        paxos.sabotage = self.opts.sabotage.and_then(|s| s.core());
        let now = self.local(i);
        let node = &mut self.nodes[i];
        let state = match node.journal.load() {
            Ok(s) => s,
            Err(e) => {
                let id = node.id;
                self.checker
                    .violations
                    .push(format!("{id}: journal load: {e}"));
                return;
            }
        };
        node.history = History::default();
        node.probes_seen.clear();
        node.granted.clear();
        node.writing = None;
        node.stopping = false;
        match NodeCore::new(cfg, paxos, state, now) {
            Ok(core) => {
                let (id, promised) = (node.id, core.replica().promised());
                node.core = Some(core);
                self.checker.saw_promise(id, promised);
            }
            Err(e) => {
                let id = node.id;
                self.checker
                    .violations
                    .push(format!("{id}: restart refused: {e}"));
            }
        }
    }

    /// Asks node `i` to stop as the shell's shutdown does: send what is
    /// queued, sync what waits, then stop.
    pub(super) fn stop_cleanly(&mut self, i: usize) {
        if self.nodes[i].core.is_none() || self.nodes[i].stopping {
            return;
        }
        self.outcome.clean_stops += 1;
        self.nodes[i].stopping = true;
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        let now = self.local(i);
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        core.drain(now);
        let effects = core.take_effects();
        let drained = core.is_drained();
        for effect in effects {
            self.perform(i, effect);
        }
        if drained {
            self.nodes[i].core = None;
            self.nodes[i].incarnation += 1;
            let down = self.rng.u64(20 * MS..800 * MS);
            self.schedule(down, Event::Restart(i));
        }
    }

    /// Stops node `i` at once; sometimes its disk is lost too.
    pub(super) fn crash(&mut self, i: usize) {
        self.nodes[i].stopping = false;
        if self.nodes[i].core.take().is_none() {
            return;
        }
        self.outcome.crashes += 1;
        self.nodes[i].incarnation += 1;
        if self.nodes[i].writing.take().is_some() {
            self.outcome.lost_writes += 1;
        }
        // Sometimes the disk is lost too (one node at a time: losing a
        // majority's disks loses chosen values by definition). It restarts
        // empty, as a learner. Only a node whose configuration file lists
        // it (a bootstrap member) may come back this way: one that joined
        // later follows the procedure instead (remove, wipe, add back).
        let bootstrap_member = self.nodes[i].bootstrap.contains(&self.nodes[i].id);
        if self.opts.disk_loss
            && bootstrap_member
            && self.rng.f64() < 0.25
            && self.no_node_is_relearning()
        {
            self.outcome.disk_losses += 1;
            self.nodes[i].journal = MemJournal::new();
            let id = self.nodes[i].id;
            self.checker.forget_promises(id);
        }
        let down = self.rng.u64(20 * MS..800 * MS);
        self.schedule(down, Event::Restart(i));
    }

    /// True when every node's journal is intact or it has finished
    /// learning after a disk loss.
    fn no_node_is_relearning(&self) -> bool {
        self.nodes.iter().filter(|n| n.born && !n.removed).all(|n| {
            let emptied = n.journal.state() == &trexlock_paxos::JournalState::default();
            match &n.core {
                Some(core) => !core.replica().is_learner(),
                None => !emptied,
            }
        })
    }

    pub(super) fn local(&self, i: usize) -> std::time::Duration {
        duration(self.nodes[i].clock.local(self.now))
    }

    /// Feeds one input to node `i`'s core, ends the round, and performs
    /// what the core asks for.
    pub(super) fn step(
        &mut self,
        i: usize,
        input: impl FnOnce(&mut NodeCore, std::time::Duration) -> Result<(), NodeError>,
    ) {
        let now = self.local(i);
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let was_leading = core.status().is_leader;
        let result = input(core, now).and_then(|()| core.end_round(now));
        if core.status().is_leader && !was_leading {
            self.outcome.elections += 1;
        }
        let effects = core.take_effects();
        let id = self.nodes[i].id;
        if let Err(e) = result {
            if matches!(e, NodeError::Removed { .. }) {
                // As the shell does, a step that stopped the node still
                // delivers what it decided.
                self.outcome.removals += 1;
                self.nodes[i].removed = true;
                self.nodes[i].core = None;
                for effect in effects {
                    self.perform(i, effect);
                }
            } else {
                self.checker.violations.push(format!("{id} stopped: {e}"));
                self.nodes[i].core = None;
            }
            return;
        }
        for effect in effects {
            self.perform(i, effect);
        }
        if self.nodes[i].stopping {
            self.drain(i);
        }
    }

    fn perform(&mut self, i: usize, effect: Effect) {
        let id = self.nodes[i].id;
        match effect {
            Effect::Persist {
                id: write,
                write: w,
            } => {
                if self.nodes[i].writing.is_some() {
                    self.checker.violations.push(format!(
                        "{id}: a second journal write while one is in flight"
                    ));
                }
                self.nodes[i].writing = Some((write, w));
                let latency = if self.rng.f64() < 0.05 {
                    self.rng.u64(5 * MS..30 * MS)
                } else {
                    self.rng.u64(MS / 20..2 * MS)
                };
                let incarnation = self.nodes[i].incarnation;
                self.schedule(
                    latency,
                    Event::SyncDone {
                        node: i,
                        incarnation,
                    },
                );
            }
            Effect::Send { to, message } => {
                if let trexlock_lease::PeerMessage::Paxos(m) = &message {
                    self.checker.on_send(id, m);
                }
                let j = usize::from(to.0) - 1;
                self.send(i, j, message);
            }
            Effect::Answer {
                client,
                request,
                outcome,
            } => {
                if let Some(c) = self.clients.iter().position(|c| c.core.id() == client) {
                    let delay = self.delay();
                    self.schedule(
                        delay,
                        Event::Answer {
                            client: c,
                            request,
                            outcome,
                        },
                    );
                }
            }
            Effect::Applied {
                slot,
                value,
                results,
            } => {
                let last = self.nodes[i].history.last_slot();
                if slot != last + 1 {
                    self.checker
                        .violations
                        .push(format!("{id} applied slot {slot} right after slot {last}"));
                    return;
                }
                self.checker.on_apply(id, slot, &value, &results);
                self.check_sessions_ended(i, &results);
                self.outcome.chosen = self.outcome.chosen.max(slot);
                for probe in &self.probes {
                    if carries(&value, *probe) {
                        self.probe_slots.entry(*probe).or_insert(slot);
                        self.nodes[i].probes_seen.insert(*probe);
                    }
                }
                for event in results.iter().flat_map(|r| &r.events) {
                    self.granted(i, event);
                }
                self.nodes[i].history.apply(value);
            }
            Effect::Abandoned { .. } => {}
            Effect::Installed { slot } => {
                if let Some(core) = &self.nodes[i].core {
                    let bytes = core.table().to_snapshot().len() as u64;
                    self.outcome.snapshot_installs += 1;
                    self.outcome.largest_install_bytes =
                        self.outcome.largest_install_bytes.max(bytes);
                }
                self.nodes[i].history.install(slot);
                self.nodes[i].probes_seen.clear();
                self.nodes[i].granted.clear();
            }
        }
    }

    /// Stamps grow per lease, on every node.
    fn granted(&mut self, i: usize, event: &LeaseEvent) {
        if let LeaseEvent::Expired { name, stamp } = event {
            self.leases.on_expired(name, *stamp);
        }
        let LeaseEvent::Granted { name, stamp, .. } = event else {
            return;
        };
        let id = self.nodes[i].id;
        let last = self.nodes[i].granted.insert(name.clone(), *stamp);
        if let Some(last) = last.filter(|l| l >= stamp) {
            self.checker.violations.push(format!(
                "{id}: lease {name} granted with stamp {stamp} after {last}"
            ));
        }
        if i == 0 {
            self.outcome.lease_grants += 1;
        }
    }

    /// The journal of node `i` finished its write: durable from now on,
    /// whatever happens to the node.
    pub(super) fn sync_done(&mut self, i: usize, incarnation: u64) {
        if self.nodes[i].incarnation != incarnation {
            return;
        }
        let Some((write_id, write)) = self.nodes[i].writing.take() else {
            return;
        };
        let id = self.nodes[i].id;
        if let Err(e) = self.nodes[i].journal.persist(&write) {
            self.checker.violations.push(format!("{id}: journal: {e}"));
            return;
        }
        self.checker.on_durable(id, &write);
        let notify = self.rng.u64(0..MS / 5);
        self.schedule(
            notify,
            Event::SyncNotify {
                node: i,
                incarnation,
                id: write_id,
            },
        );
    }

    pub(super) fn sync_notify(&mut self, i: usize, incarnation: u64, write: u64) {
        if self.nodes[i].incarnation != incarnation || self.nodes[i].core.is_none() {
            return;
        }
        let event = Event::SyncNotify {
            node: i,
            incarnation,
            id: write,
        };
        if self.defer_if_paused(i, event).is_none() {
            return;
        }
        self.step(i, |core, now| core.synced(now, write));
    }
}
