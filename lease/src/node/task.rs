//! The node's event loop. It owns the replica and the table. Messages wait
//! for the journal sync that covers their step (group commit, one sync in
//! flight) before they leave. Chosen values do not wait (in a cluster of
//! more than one node): a value is chosen only once a quorum holds it
//! durably, so applying it, and answering the client, needs nothing from
//! this node's disk. The commit index that usually rides along in the same
//! write is a hint ([`trexlock_paxos::JournalState::committed`]): losing it
//! costs a catch-up, never an acknowledged command. Waiting for it would
//! put one more sync on every request's path. For the same reason a write
//! that holds nothing but a new commit index gets no sync of its own: it
//! rides along with the next write that holds votes, a promise or a
//! snapshot, or is flushed by itself once the node has been quiet for
//! [`HINT_FLUSH_AFTER`] (and at shutdown). Otherwise every slot would cost
//! every node two syncs, the second one delaying the next slot's votes.
//!
//! The leader's Accepts and Commits leave without waiting for its own sync,
//! so its disk and its followers' disks work at the same time (as in
//! Raft, where the leader appends to its log in parallel with replication).
//! An Accept (phase 2a) carries a proposal, not the leader's vote; what must
//! not happen is the core counting the leader's own, not yet durable, vote
//! towards a quorum. The core counts it as soon as it proposes, so the node
//! holds back every `Accepted` for a slot until the leader's vote for that
//! slot is synced: a slot is then chosen only with the leader's vote and a
//! follower's vote both on disk, exactly as before. A step that raised the
//! promise sends nothing early.

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
    Envelope, JournalWrite, Leadership, Message, NodeId, ProposeError, Ready, Replica, Slot,
    Snapshot, Value,
};

/// How long a commit index may wait for a write to ride along with before
/// it is synced by itself.
const HINT_FLUSH_AFTER: Duration = Duration::from_millis(200);

/// True when `write` holds nothing but the commit index, a hint that no
/// message and no answer depends on.
fn only_commit_index(write: &JournalWrite) -> bool {
    write.promised.is_none()
        && write.entries.is_empty()
        && write.snapshot.is_none()
        && write.truncate.is_none()
}

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

    /// Queues a step's effects behind the journal write they depend on.
    fn perform(&mut self, ready: Ready) -> Result<(), NodeError> {
        let promising = ready.write.promised.is_some();
        if !ready.write.is_empty() {
            if !only_commit_index(&ready.write) {
                if !self.next_durable {
                    self.assigned += 1;
                    self.next_durable = true;
                }
            } else if self.next_write.is_empty() {
                self.hint_since = Some(Instant::now());
            }
            if self.replicated && self.replica.is_leader() {
                for (slot, _) in &ready.write.entries {
                    self.vote_writes.insert(*slot, self.assigned);
                }
            }
            self.next_write.merge(ready.write);
        }
        let mut messages = ready.messages;
        if self.replicated && !promising && self.replica.is_leader() {
            // Proposals and commit notices need no vote of ours on disk
            // (see the module comment): send them now.
            let (early, later): (Vec<_>, Vec<_>) = messages.into_iter().partition(|env| {
                matches!(env.message, Message::Accept { .. } | Message::Commit { .. })
            });
            self.outbox.extend(early);
            messages = later;
        }
        let (install, chosen, now_install, now_chosen) = if self.replicated {
            (None, Vec::new(), ready.install, ready.chosen)
        } else {
            (ready.install, ready.chosen, None, Vec::new())
        };
        let nothing_else = messages.is_empty()
            && install.is_none()
            && chosen.is_empty()
            && ready.leadership.is_none();
        if !nothing_else {
            self.held.push_back(Held {
                after_write: self.assigned,
                messages,
                install,
                chosen,
                leadership: ready.leadership,
            });
        }
        self.submit_write();
        self.release()?;
        // Chosen values come out of the core in slot order, and in a
        // replicated cluster none is ever held, so applying them here keeps
        // that order.
        self.install_and_apply(now_install, now_chosen)
    }

    fn submit_write(&mut self) {
        if self.in_flight || !self.next_durable {
            return;
        }
        self.in_flight = true;
        self.next_durable = false;
        self.hint_since = None;
        let write = std::mem::take(&mut self.next_write);
        self.worker.submit(self.assigned, write);
    }

    /// Syncs a commit index that has waited alone for long enough (or at
    /// once with `force`), so a quiet node's journal catches up with it.
    fn flush_hint(&mut self, force: bool) {
        if self.in_flight || self.next_durable || self.next_write.is_empty() {
            return;
        }
        if !force
            && self
                .hint_since
                .is_some_and(|t| t.elapsed() < HINT_FLUSH_AFTER)
        {
            return;
        }
        self.assigned += 1;
        self.next_durable = true;
        self.submit_write();
    }

    fn on_synced(&mut self, id: u64) -> Result<(), NodeError> {
        Metrics::add(&self.metrics.journal_syncs, 1);
        self.synced = id;
        self.in_flight = false;
        self.vote_writes.retain(|_, write| *write > id);
        self.submit_write();
        self.release()?;
        if self.deferred.iter().any(|(write, ..)| *write <= id) {
            let (now, later) = std::mem::take(&mut self.deferred)
                .into_iter()
                .partition(|(write, ..)| *write <= id);
            self.deferred = later;
            for (_, from, message) in now {
                self.handle_paxos(from, message)?;
            }
        }
        Ok(())
    }

    /// Performs every held effect whose write is durable, in order.
    fn release(&mut self) -> Result<(), NodeError> {
        while self
            .held
            .front()
            .is_some_and(|h| h.after_write <= self.synced)
        {
            let held = self.held.pop_front().expect("checked");
            for env in held.messages {
                self.network
                    .send(self.cfg.node, env.to, PeerMessage::Paxos(env.message));
            }
            if let Some(change) = held.leadership {
                self.on_leadership(change);
            }
            self.install_and_apply(held.install, held.chosen)?;
        }
        Ok(())
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
