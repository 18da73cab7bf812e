//! The node core: every decision a lease node makes, as a pure state
//! machine.
//!
//! [`NodeCore`] owns the Paxos [`Replica`], the [`LeaseTable`], the
//! requests that arrived at this node, the leader's clock and lease duties,
//! routing and retries, and the durability pipeline. It reads no clock,
//! opens no file or socket and spawns nothing: time is an argument of
//! every input, and everything the node must do comes out as an
//! [`Effect`], in the order it must be performed. The tokio shell
//! (`NodeTask`) and the simulator drive this same code.
//!
//! Inputs: [`NodeCore::request`], [`NodeCore::forget`], [`NodeCore::peer`],
//! [`NodeCore::tick`], [`NodeCore::synced`], the watch inputs
//! ([`NodeCore::watch`], [`NodeCore::unwatch`], [`NodeCore::watch_lagged`]), and [`NodeCore::end_round`]
//! after each batch of inputs (it proposes what the round queued and sends
//! the leader's early messages). [`NodeCore::drain`] prepares a clean stop.
//!
//! The driver's contract:
//! - perform [`Effect::Persist`] writes one at a time, in id order, each
//!   durable ([`trexlock_paxos::Journal::persist`]) before reporting
//!   [`NodeCore::synced`] with its id; the core never emits a second write
//!   before the first is reported;
//! - send [`Effect::Send`] messages best-effort (loss is tolerated);
//! - deliver [`Effect::Answer`]s to whoever asked; an answer other than
//!   [`Outcome::Queued`] is final and the core forgets the request;
//! - a journal failure stops the node: drop the core.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_lease::node::{Effect, NodeConfig, NodeCore};
//! use trexlock_paxos::{JournalState, NodeId};
//!
//! let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
//! let paxos = config.paxos_config(7);
//! let mut core = NodeCore::new(config, paxos, JournalState::default(), Duration::ZERO).unwrap();
//! // A single member elects itself after an election timeout: the new
//! // promise must be made durable before anything depends on it.
//! core.tick(Duration::from_secs(1)).unwrap();
//! core.end_round(Duration::from_secs(1)).unwrap();
//! let effects = core.take_effects();
//! assert!(matches!(effects[0], Effect::Persist { id: 1, .. }));
//! ```

mod apply;
mod members;
mod pipeline;
mod requests;
mod watches;

use super::{NodeConfig, NodeStatus};
use crate::command::{ClientId, Outcome, Request};
use crate::error::NodeError;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::network::PeerMessage;
use crate::table::{Applied, LeaseTable};
use crate::time::LeaderClock;
use crate::watch::{WatchDelivery, WatchHub, WatchId};
use bytes::Bytes;
use pipeline::Pipeline;
use requests::Pending;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use trexlock_paxos::{
    Config, JournalState, JournalWrite, Membership, NodeId, Replica, Slot, Value,
};

pub use members::{MemberInfo, Role};

/// Something the driver of a [`NodeCore`] must do, in the order given.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Make `write` durable, then report [`NodeCore::synced`] with `id`.
    /// At most one write is outstanding at a time.
    Persist {
        /// Increasing from 1.
        id: u64,
        /// What to persist, atomically.
        write: JournalWrite,
    },
    /// Send `message` to node `to`, best-effort.
    Send {
        /// The peer.
        to: NodeId,
        /// The message.
        message: PeerMessage,
    },
    /// The answer to a request that arrived at this node.
    Answer {
        /// The session that asked.
        client: ClientId,
        /// Its request.
        request: u64,
        /// The answer; anything but [`Outcome::Queued`] is final.
        outcome: Outcome,
    },
    /// The core stopped waiting for this request's answer (it waited far
    /// longer than any caller would): drop whatever would have delivered
    /// it.
    Abandoned {
        /// The session that asked.
        client: ClientId,
        /// Its request.
        request: u64,
    },
    /// A chosen slot was applied to the table (for observers: the shell
    /// ignores it, the simulator checks it against the votes it saw).
    Applied {
        /// The slot.
        slot: Slot,
        /// Its chosen value.
        value: Value,
        /// What each of its commands did to the table, in order.
        results: Vec<Applied>,
    },
    /// A snapshot from a peer replaced the table, covering every slot up
    /// to `slot`.
    Installed {
        /// The snapshot's slot.
        slot: Slot,
    },
    /// Deliver this to watcher `id` (see [`crate::watch`]). If its buffer
    /// is full, report [`NodeCore::watch_lagged`]; if it is gone,
    /// [`NodeCore::unwatch`].
    Watch {
        /// The watcher.
        id: WatchId,
        /// What it is owed.
        delivery: WatchDelivery,
    },
}

/// Every decision of one lease node, with no I/O and no clock. See the
/// module documentation for the driver's contract.
///
/// A clone is an independent core in the same state (a model checker
/// branches from it) that shares the original's metrics counters; `Debug`
/// shows every field that decisions depend on, and not the counters.
#[derive(Clone)]
pub struct NodeCore {
    cfg: NodeConfig,
    replica: Replica,
    table: LeaseTable,
    applied: Slot,
    metrics: Arc<Metrics>,
    leader_clock: Option<LeaderClock>,
    known_leader: Option<NodeId>,
    /// Ordered, so that the same inputs give the same effects in the same
    /// order (retries and re-routing walk it). Boxed: a B-tree shifts its
    /// values on every insert and remove, and a request is far larger
    /// than a pointer.
    pending: BTreeMap<(ClientId, u64), Box<Pending>>,
    to_propose: Vec<Bytes>,
    /// Table time for which a tick was last proposed.
    tick_proposed_for: Option<u64>,
    pipeline: Pipeline,
    /// The time of the input being handled.
    now: Duration,
    /// A clean stop has begun (see [`NodeCore::drain`]).
    draining: bool,
    /// The membership last logged as followed.
    followed: Option<Membership>,
    /// Recent events and the watchers they go to.
    watches: WatchHub,
    effects: Vec<Effect>,
}

impl std::fmt::Debug for NodeCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeCore")
            .field("cfg", &self.cfg)
            .field("replica", &self.replica)
            .field("table", &self.table)
            .field("applied", &self.applied)
            .field("leader_clock", &self.leader_clock)
            .field("known_leader", &self.known_leader)
            .field("pending", &self.pending)
            .field("to_propose", &self.to_propose)
            .field("tick_proposed_for", &self.tick_proposed_for)
            .field("pipeline", &self.pipeline)
            .field("now", &self.now)
            .field("draining", &self.draining)
            .field("watches", &self.watches)
            .field("effects", &self.effects)
            .finish_non_exhaustive()
    }
}

impl NodeCore {
    /// A core starting from what its journal recovered, at local time
    /// `now`. `paxos` is the replica's configuration (see
    /// [`NodeConfig::paxos_config`]); its members and node must be
    /// `config`'s.
    ///
    /// # Errors
    /// [`NodeError::Config`] for invalid or mismatched settings;
    /// [`NodeError::Paxos`] when the journal state contradicts itself.
    pub fn new(
        config: NodeConfig,
        paxos: Config,
        state: JournalState,
        now: Duration,
    ) -> Result<NodeCore, NodeError> {
        config.validate()?;
        if paxos.node != config.node || paxos.members != config.members {
            return Err(NodeError::Config(
                "the replica's node and members differ from the node's".into(),
            ));
        }
        let replica = Replica::new(paxos, state, now)?;
        let replicated = config.members.len() > 1;
        #[cfg(feature = "sabotage")]
        let table = LeaseTable::new().with_sabotage(config.sabotage);
        #[cfg(not(feature = "sabotage"))]
        let table = LeaseTable::new();
        let watches = WatchHub::new(config.watch_history, config.max_watchers);
        Ok(NodeCore {
            cfg: config,
            replica,
            table,
            applied: 0,
            metrics: Arc::new(Metrics::default()),
            leader_clock: None,
            known_leader: None,
            pending: BTreeMap::new(),
            to_propose: Vec::new(),
            tick_proposed_for: None,
            pipeline: Pipeline::new(replicated),
            now,
            draining: false,
            followed: None,
            watches,
            effects: Vec::new(),
        })
    }

    /// The effects produced since the last call, in the order they must
    /// be performed.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// A client request arrived at this node. It is admitted first (a
    /// request outside the limits is answered [`Outcome::Refused`] and
    /// never proposed), then proposed here if this node leads, or sent to
    /// the leader, and retried until answered.
    pub fn request(&mut self, now: Duration, request: Request) {
        self.now = now;
        self.admit(request);
    }

    /// The caller of a request is gone: stop waiting on its behalf.
    pub fn forget(&mut self, client: ClientId, request: u64) {
        self.pending.remove(&(client, request));
    }

    /// A message from peer `from`.
    ///
    /// # Errors
    /// The replica stopped (see [`trexlock_paxos::PaxosError`]) or a
    /// chosen command cannot be decoded.
    pub fn peer(
        &mut self,
        now: Duration,
        from: NodeId,
        message: PeerMessage,
    ) -> Result<(), NodeError> {
        self.now = now;
        match message {
            PeerMessage::Paxos(message) => self.on_paxos(from, message),
            PeerMessage::Forward(requests) => {
                self.on_forward(from, requests);
                Ok(())
            }
        }
    }

    /// Time passed: elections, heartbeats, catch-up, lease expiry, retries.
    ///
    /// # Errors
    /// As [`NodeCore::peer`].
    pub fn tick(&mut self, now: Duration) -> Result<(), NodeError> {
        self.now = now;
        let ready = self.replica.tick(now)?;
        self.perform(ready)?;
        if self.replica.is_leader() {
            self.metrics.set_peer_lag(self.replica.peer_lag());
        }
        self.flush_hint(false);
        self.tick_if_a_lease_is_due();
        self.expire_pending();
        self.retry_due();
        Ok(())
    }

    /// Write `id` is durable: effects waiting for it are released.
    ///
    /// # Errors
    /// As [`NodeCore::peer`].
    pub fn synced(&mut self, now: Duration, id: u64) -> Result<(), NodeError> {
        self.now = now;
        Metrics::add(&self.metrics.journal_syncs, 1);
        self.on_synced(id)
    }

    /// Ends a round of inputs: proposes what the round queued (one slot
    /// batch, one journal sync for all of it), sends the leader's early
    /// messages, and re-routes requests when the leader changed.
    ///
    /// # Errors
    /// As [`NodeCore::peer`].
    pub fn end_round(&mut self, now: Duration) -> Result<(), NodeError> {
        self.now = now;
        if self.draining {
            self.flush_outbox();
            return Ok(());
        }
        self.propose_queued()?;
        self.flush_outbox();
        self.follow_leader_change();
        self.follow_membership()
    }

    /// Prepares a clean stop: sends the messages already decided and syncs
    /// what waits for the journal; nothing new is proposed any more (a
    /// request not yet proposed stays unanswered). Keep feeding
    /// [`NodeCore::synced`] until [`NodeCore::is_drained`]; from the first
    /// call on, [`NodeCore::end_round`] does nothing.
    pub fn drain(&mut self, now: Duration) {
        self.now = now;
        self.draining = true;
        self.to_propose.clear();
        self.flush_outbox();
        self.flush_hint(true);
    }

    /// True when no journal write is outstanding.
    pub fn is_drained(&self) -> bool {
        !self.pipeline.in_flight()
    }

    /// The node's public state.
    pub fn status(&self) -> NodeStatus {
        NodeStatus {
            leader: self.replica.live_leader(self.now),
            is_leader: self.leader_clock.is_some(),
            applied: self.applied,
            leader_committed: self.replica.leader_committed(),
            promised: self.replica.promised(),
            learner: self.replica.is_learner()
                || !self
                    .replica
                    .membership_in_effect()
                    .voters
                    .contains(&self.cfg.node),
            relearning: self.replica.is_learner(),
            removed: self.replica.has_left(),
            stopped: None,
        }
    }

    /// The lease table as of the last applied slot.
    pub fn table(&self) -> &LeaseTable {
        &self.table
    }

    /// The replica (read-only: its promise, role and log).
    pub fn replica(&self) -> &Replica {
        &self.replica
    }

    /// Requests that arrived here and await their final answer.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Counters since the core started.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot(self.leader_clock.is_some())
    }

    pub(crate) fn shared_metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.now.as_micros()).unwrap_or(u64::MAX)
    }

    fn send(&mut self, to: NodeId, message: PeerMessage) {
        self.effects.push(Effect::Send { to, message });
    }
}

#[cfg(test)]
mod cap_tests;
#[cfg(test)]
mod catchup_tests;
#[cfg(test)]
mod members_tests;
#[cfg(test)]
mod tests;
