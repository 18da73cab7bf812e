//! The node's event loop. It owns the replica and the table, turns client
//! calls and peer messages into steps of the core, and applies what is
//! chosen. How a step's effects wait for the journal is in [`pipeline`].

mod pipeline;

use super::{Call, NodeConfig, NodeStatus, Reply};
use crate::command::{Body, ClientId, Command, Outcome, Request};
use crate::error::NodeError;
use crate::journal_worker::JournalWorker;
use crate::metrics::Metrics;
use crate::network::{Inbox, Network, PeerMessage};
use crate::table::{Event, LeaseTable};
use crate::time::LeaderClock;
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use trexlock_paxos::{
    Envelope, JournalWrite, Leadership, Message, NodeId, ProposeError, Replica, Slot, Snapshot,
    Value,
};

/// Effects of one step, held until the journal write they follow is synced
/// (`install` and `chosen` only on a single-node cluster, where this node's
/// write IS the quorum).
struct Held {
    after_write: u64,
    messages: Vec<Envelope>,
    install: Option<Snapshot>,
    chosen: Vec<(Slot, Value)>,
    leadership: Option<Leadership>,
}

/// A request that originated at this node and awaits its answer.
struct Pending {
    request: Request,
    reply: Reply,
    arrived: Instant,
    routed_at: Option<Instant>,
    queued: bool,
}

pub(super) struct NodeTask {
    cfg: NodeConfig,
    replica: Replica,
    table: LeaseTable,
    applied: Slot,
    worker: JournalWorker,
    network: Arc<dyn Network>,
    inbox: Inbox,
    calls: mpsc::Receiver<Call>,
    status: watch::Sender<NodeStatus>,
    metrics: Arc<Metrics>,
    origin: Instant,
    leader_clock: Option<LeaderClock>,
    known_leader: Option<NodeId>,
    pending: HashMap<(ClientId, u64), Pending>,
    to_propose: Vec<Bytes>,
    /// Table time for which a tick was last proposed.
    tick_proposed_for: Option<u64>,
    next_write: JournalWrite,
    /// `next_write` holds more than a commit index, so it must be synced
    /// as soon as the journal is free (and it has id `assigned`).
    next_durable: bool,
    /// Since when `next_write` has held only a commit index.
    hint_since: Option<Instant>,
    /// Id of the newest write that needs a sync (in flight or in
    /// `next_write`); held effects wait for it.
    assigned: u64,
    synced: u64,
    in_flight: bool,
    held: VecDeque<Held>,
    /// At the leader: for each slot whose own vote is not yet synced, the
    /// write that holds it.
    vote_writes: BTreeMap<Slot, u64>,
    /// `Accepted`s held back until the leader's own votes for their slots
    /// are synced: (write to wait for, sender, message).
    deferred: Vec<(u64, NodeId, Message)>,
    /// The leader's Accepts and Commits of this round of the event loop,
    /// sent together at its end (see [`NodeTask::flush_outbox`]).
    outbox: Vec<Envelope>,
    /// More than one member: chosen values are durable elsewhere too, so
    /// they are applied without waiting for this node's writes.
    replicated: bool,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl NodeTask {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        cfg: NodeConfig,
        replica: Replica,
        worker: JournalWorker,
        network: Arc<dyn Network>,
        inbox: Inbox,
        calls: mpsc::Receiver<Call>,
        status: watch::Sender<NodeStatus>,
        metrics: Arc<Metrics>,
        origin: Instant,
    ) -> NodeTask {
        let replicated = cfg.members.len() > 1;
        NodeTask {
            cfg,
            replica,
            table: LeaseTable::new(),
            applied: 0,
            worker,
            network,
            inbox,
            calls,
            status,
            metrics,
            origin,
            leader_clock: None,
            known_leader: None,
            pending: HashMap::new(),
            to_propose: Vec::new(),
            tick_proposed_for: None,
            next_write: JournalWrite::default(),
            next_durable: false,
            hint_since: None,
            assigned: 0,
            synced: 0,
            in_flight: false,
            held: VecDeque::new(),
            vote_writes: BTreeMap::new(),
            deferred: Vec::new(),
            outbox: Vec::new(),
            replicated,
            shutdown: None,
        }
    }

    pub(super) async fn run(mut self) -> Result<(), NodeError> {
        let result = self.event_loop().await;
        let reason = match &result {
            Ok(()) => "shut down".to_owned(),
            Err(e) => {
                tracing::error!(node = %self.cfg.node, error = %e, "node stopped");
                e.to_string()
            }
        };
        self.pending.clear();
        self.calls.close();
        self.status.send_modify(|s| {
            s.stopped = Some(reason);
            s.is_leader = false;
        });
        let mut worker = self.worker;
        let _ = tokio::task::spawn_blocking(move || worker.close()).await;
        if let Some(done) = self.shutdown.take() {
            let _ = done.send(());
        }
        result
    }

    async fn event_loop(&mut self) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.cfg.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                done = self.worker.done.recv() => match done {
                    Some((id, Ok(()))) => self.on_synced(id)?,
                    Some((_, Err(e))) => return Err(e.into()),
                    None => return Err(NodeError::Config("journal thread ended".into())),
                },
                call = self.calls.recv() => match call {
                    Some(call) => self.on_call(call),
                    None => return Ok(()),
                },
                msg = self.inbox.recv() => {
                    if let Some((from, msg)) = msg {
                        self.on_peer(from, msg)?;
                    }
                },
                _ = ticker.tick() => self.on_tick()?,
            }
            // Take whatever else is already waiting, so it shares this
            // round's proposal and journal sync.
            for _ in 0..256 {
                match self.calls.try_recv() {
                    Ok(call) => self.on_call(call),
                    Err(_) => break,
                }
            }
            for _ in 0..256 {
                match self.inbox.try_recv() {
                    Ok((from, msg)) => self.on_peer(from, msg)?,
                    Err(_) => break,
                }
            }
            if self.shutdown.is_some() {
                return self.drain().await;
            }
            self.propose_queued()?;
            self.flush_outbox();
            self.publish_status();
        }
    }

    /// Sends the round's early messages. A Commit only announces the
    /// commit index (and that the leader lives); a later Accept or Commit
    /// to the same peer in the same round carries a commit index at least
    /// as high, so the earlier Commit is left out. Under load this saves a
    /// Commit and its CommitAck per slot and per follower.
    fn flush_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.outbox);
        let mut announced: Vec<NodeId> = Vec::new();
        let mut keep = vec![true; outbox.len()];
        for (i, env) in outbox.iter().enumerate().rev() {
            let commit = matches!(env.message, Message::Commit { .. });
            if commit && announced.contains(&env.to) {
                keep[i] = false;
            } else if !announced.contains(&env.to) {
                announced.push(env.to);
            }
        }
        for (env, keep) in outbox.into_iter().zip(keep) {
            if keep {
                self.network
                    .send(self.cfg.node, env.to, PeerMessage::Paxos(env.message));
            }
        }
    }

    /// Lets the journal finish what it has, so acknowledged state is on
    /// disk, then stops.
    async fn drain(&mut self) -> Result<(), NodeError> {
        self.flush_outbox();
        loop {
            self.flush_hint(true);
            if !self.in_flight {
                break;
            }
            match self.worker.done.recv().await {
                Some((id, Ok(()))) => self.on_synced(id)?,
                Some((_, Err(e))) => return Err(e.into()),
                None => break,
            }
        }
        Ok(())
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.now().as_micros()).unwrap_or(u64::MAX)
    }

    fn on_call(&mut self, call: Call) {
        match call {
            Call::Request { request, reply } => {
                let key = (request.client, request.request);
                self.pending.insert(
                    key,
                    Pending {
                        request,
                        reply,
                        arrived: Instant::now(),
                        routed_at: None,
                        queued: false,
                    },
                );
                self.route(key);
            }
            Call::Forget { client, request } => {
                self.pending.remove(&(client, request));
            }
            Call::Shutdown { done } => self.shutdown = Some(done),
        }
    }

    /// Sends a pending request toward the leader (or proposes it here).
    fn route(&mut self, key: (ClientId, u64)) {
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        let request = p.request.clone();
        if self.leader_clock.is_some() {
            p.routed_at = Some(Instant::now());
            self.stamp_and_queue(Body::Request(request));
        } else if let Some(leader) = self.replica.leader().filter(|l| *l != self.cfg.node) {
            p.routed_at = Some(Instant::now());
            self.network
                .send(self.cfg.node, leader, PeerMessage::Forward(vec![request]));
        }
    }

    fn stamp_and_queue(&mut self, body: Body) {
        let Some(clock) = self.leader_clock else {
            return;
        };
        let (epoch, elapsed_us) = clock.stamp(self.now_us());
        let command = Command {
            epoch,
            elapsed_us,
            body,
        };
        self.to_propose.push(command.encode());
    }

    fn propose_queued(&mut self) -> Result<(), NodeError> {
        if self.to_propose.is_empty() {
            return Ok(());
        }
        let commands = std::mem::take(&mut self.to_propose);
        match self.replica.propose(self.now(), commands) {
            Ok(ready) => self.perform(ready),
            // Lost leadership meanwhile: origins retry with the new leader.
            Err(ProposeError::NotLeader { .. }) => Ok(()),
            // Requests are validated against the slot limit before they are
            // queued; like a lost leadership, origins retry.
            Err(ProposeError::CommandTooLarge { .. }) => Ok(()),
            Err(ProposeError::Stopped) => Err(trexlock_paxos::PaxosError::Stopped.into()),
        }
    }

    fn on_peer(&mut self, from: NodeId, msg: PeerMessage) -> Result<(), NodeError> {
        match msg {
            PeerMessage::Paxos(message) => {
                if let Message::Accepted { slots, .. } = &message
                    && let Some(wait) = slots
                        .iter()
                        .filter_map(|slot| self.vote_writes.get(slot))
                        .max()
                        .copied()
                        .filter(|id| *id > self.synced)
                {
                    self.deferred.push((wait, from, message));
                    return Ok(());
                }
                self.handle_paxos(from, message)
            }
            PeerMessage::Forward(requests) => {
                if self.leader_clock.is_some() {
                    for request in requests {
                        self.stamp_and_queue(Body::Request(request));
                    }
                } else if let Some(leader) = self
                    .replica
                    .leader()
                    .filter(|l| *l != self.cfg.node && *l != from)
                {
                    self.network
                        .send(self.cfg.node, leader, PeerMessage::Forward(requests));
                }
                Ok(())
            }
        }
    }

    fn handle_paxos(&mut self, from: NodeId, message: Message) -> Result<(), NodeError> {
        let envelope = Envelope {
            from,
            to: self.cfg.node,
            message,
        };
        let ready = self.replica.handle(self.now(), envelope)?;
        self.perform(ready)
    }

    fn on_tick(&mut self) -> Result<(), NodeError> {
        let ready = self.replica.tick(self.now())?;
        self.perform(ready)?;
        self.flush_hint(false);
        self.tick_if_a_lease_is_due();
        let retry = self.cfg.retry_interval;
        let due: Vec<(ClientId, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.queued && p.routed_at.is_none_or(|t| t.elapsed() >= retry))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.route(key);
        }
        Ok(())
    }

    /// The leader proposes a bare tick when a lease someone waits for runs
    /// out by its clock: expiry is decided by a command in the log.
    fn tick_if_a_lease_is_due(&mut self) {
        let Some(clock) = self.leader_clock else {
            return;
        };
        let Some(deadline) = self.table.next_deadline_us() else {
            return;
        };
        if self.tick_proposed_for.is_some_and(|t| t >= deadline) {
            return;
        }
        if clock
            .local_time_for(&self.table, deadline)
            .is_some_and(|local| local <= self.now_us())
        {
            self.tick_proposed_for = Some(deadline);
            self.stamp_and_queue(Body::Tick);
        }
    }

    /// Loads a snapshot the core handed over, then applies chosen values.
    fn install_and_apply(
        &mut self,
        install: Option<Snapshot>,
        chosen: Vec<(Slot, Value)>,
    ) -> Result<(), NodeError> {
        if let Some(snapshot) = install {
            self.table =
                LeaseTable::from_snapshot(&snapshot.data).map_err(|e| NodeError::Undecodable {
                    slot: snapshot.slot,
                    what: "snapshot",
                    reason: e.to_string(),
                })?;
            self.applied = snapshot.slot;
        }
        for (slot, value) in chosen {
            self.apply(slot, &value)?;
        }
        Ok(())
    }

    fn on_leadership(&mut self, change: Leadership) {
        Metrics::add(&self.metrics.leader_changes, 1);
        match change {
            Leadership::Elected { ballot } => {
                tracing::info!(node = %self.cfg.node, %ballot, "elected leader");
                self.leader_clock = Some(LeaderClock::new(ballot, self.now_us()));
                self.tick_proposed_for = None;
                // Opens the epoch in the table: from here, table time is
                // this leader's elapsed time, and no lease loses time.
                self.stamp_and_queue(Body::Tick);
                let keys: Vec<_> = self.pending.keys().copied().collect();
                for key in keys {
                    self.route(key);
                }
            }
            Leadership::Lost => {
                tracing::info!(node = %self.cfg.node, "lost leadership");
                self.leader_clock = None;
            }
        }
    }

    fn apply(&mut self, slot: Slot, value: &Value) -> Result<(), NodeError> {
        for bytes in value.commands() {
            let command = Command::decode(bytes).map_err(|e| NodeError::Undecodable {
                slot,
                what: "command",
                reason: e.to_string(),
            })?;
            let applied = self.table.apply(&command);
            Metrics::add(&self.metrics.commands_applied, 1);
            for event in &applied.events {
                self.count(event);
            }
            for response in applied.responses {
                let key = (response.client, response.request);
                let Some(p) = self.pending.get_mut(&key) else {
                    continue;
                };
                if !p.reply.send(response.outcome.clone()) {
                    // The caller is gone (a remote client disconnected):
                    // stop waiting on its behalf.
                    self.pending.remove(&key);
                    continue;
                }
                if response.outcome == Outcome::Queued {
                    p.queued = true;
                    Metrics::add(&self.metrics.waits, 1);
                } else {
                    let latency = p.arrived.elapsed().as_micros();
                    Metrics::add(&self.metrics.commit_latency_count, 1);
                    Metrics::add(
                        &self.metrics.commit_latency_us_total,
                        u64::try_from(latency).unwrap_or(u64::MAX),
                    );
                    self.pending.remove(&key);
                }
            }
        }
        self.applied = slot;
        Metrics::add(&self.metrics.slots_applied, 1);
        if slot.is_multiple_of(self.cfg.snapshot_every) {
            let snapshot = Snapshot {
                slot,
                data: self.table.to_snapshot(),
            };
            let ready = self.replica.snapshot_taken(snapshot)?;
            self.perform(ready)?;
        }
        Ok(())
    }

    fn count(&self, event: &Event) {
        let m = &self.metrics;
        match event {
            Event::Granted { .. } => Metrics::add(&m.acquisitions, 1),
            Event::Expired { name, stamp } => {
                tracing::debug!(node = %self.cfg.node, lease = %name, %stamp, "lease expired");
                Metrics::add(&m.expiries, 1);
            }
            Event::Renewed { .. } => Metrics::add(&m.renewals, 1),
            Event::Released { .. } => Metrics::add(&m.releases, 1),
        }
    }

    fn publish_status(&mut self) {
        let leader = self.replica.leader();
        if leader != self.known_leader {
            self.known_leader = leader;
            // A new leader: send it what we are still waiting on.
            let keys: Vec<_> = self
                .pending
                .iter()
                .filter(|(_, p)| !p.queued)
                .map(|(k, _)| *k)
                .collect();
            for key in keys {
                self.route(key);
            }
        }
        let status = NodeStatus {
            leader,
            is_leader: self.leader_clock.is_some(),
            applied: self.applied,
            stopped: None,
        };
        self.status.send_if_modified(|s| {
            if *s != status {
                *s = status;
                true
            } else {
                false
            }
        });
    }
}
