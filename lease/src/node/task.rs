//! The tokio shell around [`NodeCore`]: it feeds the core client calls,
//! peer messages, ticks and journal completions, and performs the effects
//! the core returns. It decides nothing itself.

use super::core::{Effect, NodeCore};
use super::{Call, JournalSync, NodeStatus, Reply};
use crate::client::members::{self, MemberCall, MemberError};
use crate::command::{ClientId, Outcome};
use crate::error::NodeError;
use crate::journal_worker::JournalWorker;
use crate::metrics::Metrics;
use crate::network::{Inbox, Network};
use crate::watch::{Delivered, WatchDelivery, WatchId, WatchSink};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use trexlock_paxos::{JournalWrite, NodeId};

/// Most inputs of one kind taken in one round, so that a flood of one
/// kind cannot starve the others.
const ROUND_INPUTS: usize = 256;

/// The channels and services a node task works with.
pub(super) struct Io {
    pub(super) worker: JournalWorker,
    pub(super) network: Arc<dyn Network>,
    pub(super) inbox: Inbox,
    pub(super) calls: mpsc::Receiver<Call>,
    pub(super) status: watch::Sender<NodeStatus>,
    pub(super) journal_sync: JournalSync,
}

pub(super) struct NodeTask {
    node: NodeId,
    core: NodeCore,
    /// Where the shell records what only it can measure (journal syncs).
    metrics: Arc<Metrics>,
    io: Io,
    /// Where the answers to the requests pending in the core go.
    replies: HashMap<(ClientId, u64), Reply>,
    /// Where each watcher's deliveries go, and whether it was cut off for
    /// lagging (then only its end is still delivered).
    watchers: HashMap<WatchId, (WatchSink, bool)>,
    origin: Instant,
    tick_interval: Duration,
    shutdown: Option<oneshot::Sender<()>>,
    /// A leader's write to make durable in place once its Accepts have
    /// left (see [`JournalSync::InPlace`]).
    held_write: Option<(u64, JournalWrite)>,
}

impl NodeTask {
    pub(super) fn new(core: NodeCore, io: Io, origin: Instant, tick_interval: Duration) -> Self {
        NodeTask {
            node: core.replica().id(),
            metrics: core.shared_metrics(),
            core,
            io,
            replies: HashMap::new(),
            watchers: HashMap::new(),
            origin,
            tick_interval,
            shutdown: None,
            held_write: None,
        }
    }

    pub(super) async fn run(mut self) -> Result<(), NodeError> {
        let result = self.event_loop().await;
        let reason = match &result {
            Ok(()) => "shut down".to_owned(),
            Err(e) => {
                tracing::error!(node = %self.node, error = %e, "node stopped");
                e.to_string()
            }
        };
        self.replies.clear();
        self.watchers.clear();
        self.io.calls.close();
        let removed = matches!(result, Err(NodeError::Removed { .. }));
        self.io.status.send_modify(|s| {
            s.stopped = Some(reason);
            s.is_leader = false;
            s.removed |= removed;
        });
        let mut worker = self.io.worker;
        let _ = tokio::task::spawn_blocking(move || worker.close()).await;
        if let Some(done) = self.shutdown.take() {
            let _ = done.send(());
        }
        result
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    async fn event_loop(&mut self) -> Result<(), NodeError> {
        let mut ticker = tokio::time::interval(self.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                done = self.io.worker.done.recv() => match done {
                    Some((id, Ok(()), took)) => {
                        let synced = self.synced(id, took);
                        self.perform(synced)?;
                    }
                    Some((_, Err(e), _)) => return Err(e.into()),
                    None => return Err(NodeError::JournalThreadEnded),
                },
                call = self.io.calls.recv() => match call {
                    Some(call) => self.on_call(call)?,
                    None => return Ok(()),
                },
                msg = self.io.inbox.recv() => {
                    if let Some((from, msg)) = msg {
                        let handled = self.core.peer(self.now(), from, msg);
                        self.perform(handled)?;
                    }
                },
                _ = ticker.tick() => {
                    let ticked = self.core.tick(self.now());
                    self.perform(ticked)?;
                    let replica = self.core.replica();
                    self.io
                        .network
                        .follow(replica.membership_in_effect(), replica.membership());
                }
            }
            // Take whatever else is already waiting, so it shares this
            // round's proposal and journal sync.
            for _ in 0..ROUND_INPUTS {
                match self.io.calls.try_recv() {
                    Ok(call) => self.on_call(call)?,
                    Err(_) => break,
                }
            }
            for _ in 0..ROUND_INPUTS {
                match self.io.inbox.try_recv() {
                    Ok((from, msg)) => {
                        let handled = self.core.peer(self.now(), from, msg);
                        self.perform(handled)?;
                    }
                    Err(_) => break,
                }
            }
            if self.shutdown.is_some() {
                return self.drain().await;
            }
            // A leader's write synced in place ends the round again, so
            // that what its sync released (proposals, commit notices) goes
            // out now, as after a sync on the journal thread.
            loop {
                let ended = self.core.end_round(self.now());
                self.perform(ended)?;
                if !self.sync_held_write().await? {
                    break;
                }
            }
            let status = self.core.status();
            self.io.status.send_if_modified(|s| {
                let changed = *s != status;
                if changed {
                    *s = status;
                }
                changed
            });
        }
    }

    fn on_call(&mut self, call: Call) -> Result<(), NodeError> {
        match call {
            Call::Request { request, reply } => {
                self.replies
                    .insert((request.client, request.request), reply);
                self.core.request(self.now(), request);
                // A request refused at admission is answered at once.
                self.perform(Ok(()))
            }
            Call::Forget { client, request } => {
                self.replies.remove(&(client, request));
                self.core.forget(client, request);
                Ok(())
            }
            Call::Members(call) => self.on_member_call(call),
            Call::Shutdown { done } => {
                self.shutdown = Some(done);
                Ok(())
            }
            Call::Watch { id, request, sink } => {
                self.watchers.insert(id, (sink, false));
                self.core.watch(id, request);
                self.perform(Ok(()))
            }
            Call::Unwatch { id } => {
                self.watchers.remove(&id);
                self.core.unwatch(id);
                Ok(())
            }
        }
    }

    fn on_member_call(&mut self, call: MemberCall) -> Result<(), NodeError> {
        let now = self.now();
        match call {
            MemberCall::List { reply } => {
                let _ = reply.send(Ok(members::list(&self.core, now)));
                Ok(())
            }
            MemberCall::Change { change, reply } => {
                let proposed = members::propose(&mut self.core, now, change);
                let _ = reply.send(proposed.map_err(MemberError::Refused));
                self.perform(Ok(()))
            }
        }
    }

    /// Performs the core's effects, in order, as soon as an input produced
    /// them (a journal write waits for no other input, except a leader's
    /// synced in place, which waits for the end of the round), then passes
    /// on the input's result: even a step that stopped the node delivers
    /// what it had already decided.
    fn perform(&mut self, mut result: Result<(), NodeError>) -> Result<(), NodeError> {
        // Delivering to a watcher, or a journal write made durable in
        // place, can give the core an input, whose effects are performed
        // in turn. The first failure is the one passed on.
        loop {
            let effects = self.core.take_effects();
            if effects.is_empty() {
                return result;
            }
            result = result.and(self.perform_all(effects));
        }
    }

    fn perform_all(&mut self, effects: Vec<Effect>) -> Result<(), NodeError> {
        let mut result = Ok(());
        for effect in effects {
            match effect {
                Effect::Persist { id, write } => result = result.and(self.persist(id, write)),
                Effect::Send { to, message } => self.io.network.send(self.node, to, message),
                Effect::Answer {
                    client,
                    request,
                    outcome,
                } => self.deliver(client, request, outcome),
                Effect::Abandoned { client, request } => {
                    self.replies.remove(&(client, request));
                }
                Effect::Applied { .. } | Effect::Installed { .. } => {}
                Effect::Watch { id, delivery } => self.deliver_watch(id, delivery),
            }
        }
        result
    }

    /// Hands a journal write to the journal thread or, with
    /// [`JournalSync::InPlace`], makes it durable here and tells the core
    /// at once; a leader's is held for [`NodeTask::sync_held_write`], so
    /// that the Accepts queued with it leave first. The core has at most
    /// one write outstanding, so either way the writes reach the journal
    /// in order. A write that holds a snapshot always goes to the thread:
    /// a large table takes hundreds of milliseconds to write, and a node
    /// that stops answering for that long, beside another doing the same,
    /// makes the leader step down.
    fn persist(&mut self, id: u64, write: JournalWrite) -> Result<(), NodeError> {
        if self.io.journal_sync == JournalSync::JournalThread || write.snapshot.is_some() {
            self.io.worker.submit(id, write);
            return Ok(());
        }
        if self.core.replica().is_leader() {
            debug_assert!(self.held_write.is_none(), "two journal writes outstanding");
            self.held_write = Some((id, write));
            return Ok(());
        }
        self.sync_here(id, &write)
    }

    /// Makes a leader's held write durable, if there is one (then true),
    /// after one yield to the runtime in which the peer links write the
    /// Accepts this round queued (a current-thread runtime runs the tasks
    /// already woken before it polls a yielded task again), and performs
    /// what the sync lets the core do, which may hold the next write.
    async fn sync_held_write(&mut self) -> Result<bool, NodeError> {
        let Some((id, write)) = self.held_write.take() else {
            return Ok(false);
        };
        tokio::task::yield_now().await;
        let synced = self.sync_here(id, &write);
        self.perform(synced)?;
        Ok(true)
    }

    fn sync_here(&mut self, id: u64, write: &JournalWrite) -> Result<(), NodeError> {
        let (result, took) = self
            .io
            .worker
            .persist_here(write)
            .ok_or(NodeError::JournalThreadEnded)?;
        result?;
        self.synced(id, took)
    }

    /// Journal write `id` is durable, `took` after it was started: the
    /// core is told (its effects are the caller's to perform).
    fn synced(&mut self, id: u64, took: Duration) -> Result<(), NodeError> {
        self.metrics.journal_sync.observe(took);
        let now = self.now();
        self.core.synced(now, id)
    }

    /// Hands a watcher what the core decided it is owed; tells the core
    /// when the watcher lags or is gone (the core decides what follows).
    fn deliver_watch(&mut self, id: WatchId, delivery: WatchDelivery) {
        let Some((sink, cut)) = self.watchers.get_mut(&id) else {
            return;
        };
        let first = match &delivery {
            WatchDelivery::Events(events) => events.first().map(|e| e.position),
            _ => None,
        };
        let last = matches!(delivery, WatchDelivery::Ended(_));
        if *cut && !last {
            return;
        }
        match sink.send(delivery) {
            Delivered::Yes if last => {
                self.watchers.remove(&id);
            }
            Delivered::Yes => {}
            Delivered::Full if !last => match first {
                Some(first) => {
                    *cut = true;
                    self.core.watch_lagged(id, first);
                }
                None => {
                    self.watchers.remove(&id);
                    self.core.unwatch(id);
                }
            },
            Delivered::Full | Delivered::Gone => {
                self.watchers.remove(&id);
                self.core.unwatch(id);
            }
        }
    }

    fn deliver(&mut self, client: ClientId, request: u64, outcome: Outcome) {
        let key = (client, request);
        let final_answer = outcome != Outcome::Queued;
        let Some(reply) = self.replies.get_mut(&key) else {
            return;
        };
        if !reply.send(outcome) {
            // The caller is gone (a remote client disconnected): stop
            // waiting on its behalf.
            self.replies.remove(&key);
            self.core.forget(client, request);
        } else if final_answer {
            self.replies.remove(&key);
        }
    }

    /// Lets the journal finish what it has, so acknowledged state is on
    /// disk, then stops.
    async fn drain(&mut self) -> Result<(), NodeError> {
        loop {
            self.core.drain(self.now());
            self.perform(Ok(()))?;
            if self.sync_held_write().await? {
                // What the sync released is sent by the next drain step.
                continue;
            }
            if self.core.is_drained() {
                return Ok(());
            }
            match self.io.worker.done.recv().await {
                Some((id, Ok(()), took)) => {
                    let synced = self.synced(id, took);
                    self.perform(synced)?;
                }
                Some((_, Err(e), _)) => return Err(e.into()),
                None => return Ok(()),
            }
        }
    }
}
