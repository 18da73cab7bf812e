//! One state of the checked system and the steps between states. Every
//! decision is made by the shipped cores: each node is a
//! [`NodeCore`] (the Paxos replica, the lease table, routing, retries and
//! the durability pipeline), each client a [`ClientCore`]. This module
//! delivers their inputs and performs their effects, as the simulator's
//! world does, with the checker choosing the order instead of a seed.

use crate::clients::Plan;
use crate::describe::{describe_packet, describe_peer, describe_value, describe_write};
use crate::ghost::Ghost;
use crate::{Bounds, Property};
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::Duration;
use trexlock_lease::client::ClientCore;
use trexlock_lease::command::{ClientId, Mode, Outcome, Request, SessionId};
use trexlock_lease::{
    DriftBound, Effect, LeaseToken, NodeConfig, NodeCore, NodeError, PeerMessage,
};
use trexlock_paxos::{Journal, JournalWrite, MemJournal, NodeId};

/// Real time one step of the clock stands for.
pub(crate) const STEP_US: u64 = 100_000;
/// Rate error of every clock: the configured bound, fast or slow.
pub(crate) const DRIFT_PPM: i64 = 1_000;
/// The lease every client competes for.
pub(crate) const NAME: &str = "x";

/// One node: its core while it runs, its journal always.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) id: NodeId,
    pub(crate) core: Option<NodeCore>,
    /// What survives a crash.
    pub(crate) journal: MemJournal,
    /// The write the journal is working on: lost if the node crashes first.
    pub(crate) writing: Option<(u64, JournalWrite)>,
    /// The real step at which it last ticked.
    pub(crate) ticked: u32,
    pub(crate) incarnation: u64,
    /// It left the membership and stopped for good.
    pub(crate) removed: bool,
    /// Hash of everything above but `ticked`, refreshed after each step
    /// that touched the node (see [`State::refresh`]).
    fingerprint: u64,
}

/// One lease client: the shipped client core and what it is doing.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    pub(crate) core: ClientCore,
    pub(crate) token: LeaseToken,
    pub(crate) home: usize,
    /// Operations it will still start.
    pub(crate) commands_left: usize,
    /// The request it waits on, and whether the table queued it.
    pub(crate) waiting: Option<(u64, bool)>,
    /// What it does, in order (empty: the default lease workload).
    pub(crate) script: Vec<Plan>,
    /// Operations it has started.
    pub(crate) started: usize,
    /// The share it asked for last, if any.
    pub(crate) share: Option<Mode>,
    /// Its lease session, once opened.
    pub(crate) session: Option<SessionId>,
}

/// A message in flight.
#[derive(Clone, Debug)]
pub(crate) enum Packet {
    Peer {
        from: usize,
        to: usize,
        message: PeerMessage,
    },
    Request {
        node: usize,
        request: Request,
    },
    Answer {
        node: usize,
        client: usize,
        request: u64,
        outcome: Outcome,
    },
}

/// The whole system at one instant of real time.
#[derive(Clone)]
pub struct State {
    /// Real time, in steps.
    pub(crate) now: u32,
    pub(crate) nodes: Vec<Node>,
    pub(crate) clients: Vec<Client>,
    /// The network: a multiset, kept sorted by a hash of each packet's
    /// full `Debug` text so that the order of sending does not make two
    /// states differ.
    pub(crate) network: Vec<(u64, Packet)>,
    pub(crate) crashes_left: usize,
    pub(crate) disk_losses_left: usize,
    pub(crate) drops_left: usize,
    pub(crate) duplicates_left: usize,
    pub(crate) resends_left: usize,
    pub(crate) ghost: Ghost,
    /// What the last step did (filled only when tracing; never hashed).
    pub(crate) notes: Vec<String>,
    pub(crate) tracing: bool,
    /// The stage of the fixed prefix running (the startup first), until
    /// the search takes over.
    pub(crate) prefix: Option<usize>,
    /// The running stage has performed an event.
    pub(crate) stage_begun: bool,
    /// The node cut off from its peers, and the instant the cut heals.
    pub(crate) cut: Option<usize>,
    pub(crate) cut_until: u32,
    /// The TTL clients ask for.
    pub(crate) ttl_ms: u64,
}

impl State {
    /// Everything that tells two states apart (not the trace notes).
    fn view(&self) -> String {
        let mut view = String::with_capacity(16 * 1024);
        let _ = write!(
            view,
            "{:?} {} {:?} {} {} {} {} {} {} {}",
            self.prefix,
            self.stage_begun,
            self.cut,
            self.cut_until,
            self.now,
            self.crashes_left,
            self.disk_losses_left,
            self.drops_left,
            self.duplicates_left,
            self.resends_left
        );
        for node in &self.nodes {
            let _ = write!(view, " {}:{}", node.fingerprint, node.ticked);
        }
        for client in &self.clients {
            let _ = write!(view, "{client:?}");
        }
        for (key, _) in &self.network {
            let _ = write!(view, " {key:x}");
        }
        let _ = write!(view, "{:?}", self.ghost);
        view
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // SipHash from the (always optimised) standard library: the
        // checker's own hasher is slow over long texts in a debug build.
        let mut sip = std::hash::DefaultHasher::new();
        self.view().hash(&mut sip);
        state.write_u64(sip.finish());
    }
}

impl PartialEq for State {
    fn eq(&self, other: &State) -> bool {
        self.view() == other.view()
    }
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "t={}", self.now)?;
        for node in &self.nodes {
            match &node.core {
                Some(core) => {
                    let status = core.status();
                    write!(
                        f,
                        " {}[{}applied {}]",
                        node.id,
                        if status.is_leader { "leader, " } else { "" },
                        status.applied
                    )?;
                }
                None => write!(f, " {}[down]", node.id)?,
            }
        }
        write!(f, " packets={}", self.network.len())
    }
}

/// The clock of node or client `entity`: its own offset, and a rate at
/// one end of the drift bound or the other.
pub(crate) fn local(entity: usize, client: bool, now: u32) -> Duration {
    let offset_us = if client {
        3_000_000 * entity as u64
    } else {
        7_000_000 * (entity as u64 + 1)
    };
    let ppm = if entity.is_multiple_of(2) != client {
        DRIFT_PPM
    } else {
        -DRIFT_PPM
    };
    let real = i128::from(now) * i128::from(STEP_US);
    let us = i128::from(offset_us) + real + real * i128::from(ppm) / 1_000_000;
    Duration::from_micros(u64::try_from(us.max(0)).unwrap_or(u64::MAX))
}

impl State {
    pub(crate) fn new(bounds: &Bounds) -> State {
        let nodes = (0..bounds.nodes)
            .map(|i| Node {
                id: NodeId(i as u16 + 1),
                core: None,
                journal: MemJournal::new(),
                writing: None,
                ticked: 0,
                incarnation: 0,
                removed: false,
                fingerprint: 0,
            })
            .collect();
        let scripts = bounds.scenario.map(|s| s.scripts()).unwrap_or_default();
        let clients = (0..bounds.clients)
            .map(|c| {
                let core = ClientCore::new(
                    ClientId(100 + c as u64),
                    format!("client-{c}"),
                    DriftBound::DEFAULT,
                )
                .with_sabotage(bounds.sabotage.and_then(|s| s.runtime()));
                let script = scripts.get(c).cloned().unwrap_or_default();
                let commands_left = if scripts.is_empty() {
                    (bounds.commands + bounds.clients - 1 - c) / bounds.clients
                } else {
                    script.len()
                };
                Client {
                    core,
                    token: LeaseToken(0x5eed + c as u128),
                    home: c % bounds.nodes,
                    commands_left,
                    waiting: None,
                    script,
                    started: 0,
                    share: None,
                    session: None,
                }
            })
            .collect();
        let mut state = State {
            now: 0,
            nodes,
            clients,
            network: Vec::new(),
            crashes_left: bounds.crashes,
            disk_losses_left: bounds.disk_losses,
            drops_left: bounds.drops,
            duplicates_left: bounds.duplicates,
            resends_left: bounds.resends,
            ghost: Ghost::new(
                (1..=bounds.nodes as u16).map(NodeId),
                bounds.scenario.is_some_and(|s| s.sets_lock_delays()),
            ),
            notes: Vec::new(),
            tracing: false,
            prefix: Some(0),
            stage_begun: false,
            cut: None,
            cut_until: u32::MAX,
            ttl_ms: bounds.ttl_ms,
        };
        for i in 0..bounds.nodes {
            state.start_node(bounds, i);
            state.refresh(i);
        }
        state
    }

    /// Recomputes the fingerprint of node `i`, which the last step touched.
    pub(crate) fn refresh(&mut self, i: usize) {
        let node = &self.nodes[i];
        let mut sip = std::hash::DefaultHasher::new();
        let text = format!(
            "{:?}{:?}{:?}{}{}",
            node.core, node.journal, node.writing, node.incarnation, node.removed
        );
        text.hash(&mut sip);
        self.nodes[i].fingerprint = sip.finish();
    }

    pub(crate) fn note(&mut self, text: impl FnOnce() -> String) {
        if self.tracing {
            self.notes.push(text());
        }
    }

    pub(crate) fn violated(&self) -> bool {
        self.ghost.violated()
    }

    pub(crate) fn node_config(bounds: &Bounds, id: NodeId) -> NodeConfig {
        let members = (1..=bounds.nodes as u16).map(NodeId).collect();
        let mut cfg = NodeConfig::new(id, members);
        cfg.heartbeat_interval = Duration::from_millis(200);
        cfg.election_timeout = Duration::from_millis(300);
        cfg.tick_interval = Duration::from_millis(100);
        cfg.retry_interval = Duration::from_millis(400);
        cfg.sabotage = bounds.sabotage.and_then(|s| s.runtime());
        if let Some(bytes) = bounds.slot_bytes {
            cfg.max_batch_bytes = bytes;
            cfg.max_message_bytes = bytes
                + trexlock_paxos::ENTRY_OVERHEAD_BYTES
                + trexlock_paxos::MESSAGE_OVERHEAD_BYTES;
        }
        cfg
    }

    pub(crate) fn start_node(&mut self, bounds: &Bounds, i: usize) {
        let node = &mut self.nodes[i];
        let mut cfg = Self::node_config(bounds, node.id);
        let mut paxos = cfg.paxos_config(u64::from(node.id.0) << 8 | node.incarnation);
        if let Some(window) = bounds.scenario.and_then(|s| s.window()) {
            paxos.window = window;
        }
        if let Some((every, chunk_bytes)) = bounds.scenario.and_then(|s| s.compaction()) {
            cfg.snapshot_every = every;
            paxos.keep_after_snapshot = 0;
            paxos.snapshot_chunk_bytes = chunk_bytes;
        }
        paxos.sabotage = bounds.sabotage.and_then(|s| s.core());
        let now = local(i, false, self.now);
        let state = match node.journal.load() {
            Ok(state) => state,
            Err(e) => {
                let what = format!("{}: journal load: {e}", node.id);
                self.ghost.violate(Property::NoNodeStops, what);
                return;
            }
        };
        node.writing = None;
        node.ticked = self.now;
        match NodeCore::new(cfg, paxos, state, now) {
            Ok(core) => {
                let (id, promised) = (node.id, core.replica().promised());
                node.core = Some(core);
                self.ghost.started(id, promised);
            }
            Err(e) => {
                let what = format!("{} refused to restart: {e}", node.id);
                self.ghost.violate(Property::NoNodeStops, what);
            }
        }
    }

    /// Feeds one input to node `i`'s core, ends the round, and performs
    /// what the core asks for, in order.
    pub(crate) fn step(
        &mut self,
        i: usize,
        input: impl FnOnce(&mut NodeCore, Duration) -> Result<(), NodeError>,
    ) {
        let now = local(i, false, self.now);
        let Some(core) = self.nodes[i].core.as_mut() else {
            return;
        };
        let was_leading = core.replica().is_leader();
        let result = input(core, now).and_then(|()| core.end_round(now));
        let effects = core.take_effects();
        if core.replica().is_leader() && !was_leading {
            let ballot = core.replica().promised();
            let id = self.nodes[i].id;
            self.ghost.on_elected(id, ballot);
        }
        if let Err(NodeError::Removed { .. }) = result {
            // As the shell does: the node delivers what it decided, then
            // stops serving.
            self.nodes[i].core = None;
            self.nodes[i].removed = true;
            for effect in effects {
                self.perform(i, effect);
            }
            return;
        }
        if let Err(e) = result {
            let what = format!("{} stopped: {e}", self.nodes[i].id);
            self.ghost.violate(Property::NoNodeStops, what);
            self.nodes[i].core = None;
            return;
        }
        for effect in effects {
            self.perform(i, effect);
        }
    }

    fn perform(&mut self, i: usize, effect: Effect) {
        let id = self.nodes[i].id;
        match effect {
            Effect::Persist {
                id: write_id,
                write,
            } => {
                self.note(|| {
                    format!(
                        "  {id} persists write {write_id}: {}",
                        describe_write(&write)
                    )
                });
                if self.nodes[i].writing.is_some() {
                    let what = format!("{id}: a second journal write while one is in flight");
                    self.ghost.violate(Property::NoNodeStops, what);
                }
                self.nodes[i].writing = Some((write_id, write));
            }
            Effect::Send { to, message } => {
                if let PeerMessage::Paxos(m) = &message {
                    self.ghost.on_send(id, m);
                }
                self.note(|| format!("  {id} sends {} to {to}", describe_peer(&message)));
                let to = usize::from(to.0) - 1;
                if to >= self.nodes.len() {
                    // A member the model does not run (a learner added
                    // by a scenario): it never answers.
                    return;
                }
                self.send(Packet::Peer {
                    from: i,
                    to,
                    message,
                });
            }
            Effect::Answer {
                client,
                request,
                outcome,
            } => {
                self.note(|| {
                    format!(
                        "  {id} answers session {} request {request}: {outcome:?}",
                        client.0
                    )
                });
                if let Some(c) = self.clients.iter().position(|c| c.core.id() == client) {
                    self.send(Packet::Answer {
                        node: i,
                        client: c,
                        request,
                        outcome,
                    });
                }
            }
            Effect::Applied {
                slot,
                value,
                results,
            } => {
                self.note(|| format!("  {id} applies slot {slot}: {}", describe_value(&value)));
                self.ghost.on_apply(id, slot, &value, &results);
            }
            Effect::Watch {
                id: watch,
                delivery,
            } => {
                self.note(|| format!("  {id} delivers to watch {}: {delivery:?}", watch.0));
                self.ghost.on_watch(watch, delivery);
            }
            Effect::Installed { slot } => {
                self.note(|| format!("  {id} installs a snapshot up to slot {slot}"));
                self.ghost.on_install(id, slot);
            }
            Effect::Abandoned { .. } => {}
        }
    }

    /// Whether `packet` goes between the node cut off and another while
    /// the cut lasts.
    pub(crate) fn crosses_cut(&self, packet: &Packet) -> bool {
        let Some(cut) = self.cut.filter(|_| self.now < self.cut_until) else {
            return false;
        };
        matches!(packet, Packet::Peer { from, to, .. } if *from == cut || *to == cut)
    }

    pub(crate) fn send(&mut self, packet: Packet) {
        if self.crosses_cut(&packet) {
            self.note(|| format!("  (lost across the cut: {})", describe_packet(&packet)));
            return;
        }
        let mut sip = std::hash::DefaultHasher::new();
        format!("{packet:?}").hash(&mut sip);
        let key = sip.finish();
        let at = self.network.partition_point(|(k, _)| *k <= key);
        self.network.insert(at, (key, packet));
    }

    /// Delivers packet `index` and takes it off the network.
    pub(crate) fn deliver(&mut self, index: usize) {
        let (_, packet) = self.network.remove(index);
        match packet {
            Packet::Peer { from, to, message } => {
                let from = self.nodes[from].id;
                self.step(to, |core, now| core.peer(now, from, message));
            }
            Packet::Request { node, request } => self.step(node, |core, now| {
                core.request(now, request);
                Ok(())
            }),
            Packet::Answer {
                client,
                request,
                outcome,
                ..
            } => self.client_answer(client, request, outcome),
        }
    }

    /// The journal of node `i` finished its write: durable from now on.
    pub(crate) fn sync(&mut self, i: usize) {
        let Some((write_id, write)) = self.nodes[i].writing.take() else {
            return;
        };
        self.make_durable(i, &write);
        self.step(i, |core, now| core.synced(now, write_id));
    }

    fn make_durable(&mut self, i: usize, write: &JournalWrite) {
        let id = self.nodes[i].id;
        if let Err(e) = self.nodes[i].journal.persist(write) {
            self.ghost
                .violate(Property::NoNodeStops, format!("{id}: journal: {e}"));
            return;
        }
        self.ghost.on_durable(id, write);
    }

    /// Node `i` stops at once. Its write in flight is lost unless
    /// `write_survives` (the disk finished it, the node never heard);
    /// with `disk_lost` the whole journal is gone.
    pub(crate) fn crash(&mut self, i: usize, write_survives: bool, disk_lost: bool) {
        self.nodes[i].core = None;
        self.nodes[i].incarnation += 1;
        self.crashes_left -= 1;
        if let Some((_, write)) = self.nodes[i].writing.take()
            && write_survives
        {
            self.make_durable(i, &write);
        }
        if disk_lost {
            self.disk_losses_left -= 1;
            self.nodes[i].journal = MemJournal::new();
            self.ghost.disk_lost(self.nodes[i].id);
        }
    }
}
