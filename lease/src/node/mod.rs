//! A lease node: the node core ([`NodeCore`]: the Paxos replica, the lease
//! table and every decision) driven by one tokio task that performs its
//! effects.

mod core;
mod journal_file;
mod task;

pub use self::core::{Effect, MemberInfo, NodeCore, Role};
use crate::client::{Answer, LeaseClient};
use crate::command::{ClientId, Outcome, Request};
use crate::error::NodeError;
use crate::journal_worker::JournalWorker;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::network::{Inbox, Network};
use crate::time::DriftBound;
use crate::watch::{WatchId, WatchRequest, WatchSink};
pub use journal_file::JournalFile;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use trexlock_journal::JournalIdentity;
use trexlock_paxos::{Ballot, Config, Journal, NodeId};

/// Settings of one node. [`NodeConfig::new`] gives defaults suited to a LAN
/// or loopback cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// This node.
    pub node: NodeId,
    /// Every member, this node included (3 or 5 is typical).
    pub members: Vec<NodeId>,
    /// Leader heartbeat interval.
    pub heartbeat_interval: Duration,
    /// Election timeout (randomised up to twice this).
    pub election_timeout: Duration,
    /// The bound on clock rate error that lease safety relies on.
    pub drift: DriftBound,
    /// How often the node ticks the core and checks for due work.
    pub tick_interval: Duration,
    /// A request not answered within this is sent to the leader again
    /// (a retry is answered exactly once, from the table).
    pub retry_interval: Duration,
    /// Snapshot the lease table (and compact the journal) every this many
    /// slots. Each member does so at its own phase of the period (set by
    /// its node id), so that members do not all pause to encode the table
    /// at the same slot.
    pub snapshot_every: u64,
    /// Most client commands in one Paxos slot.
    pub max_batch: usize,
    /// Most slots in flight at the leader.
    pub window: usize,
    /// Most bytes of commands in one slot.
    pub max_batch_bytes: usize,
    /// Most bytes of one consensus message (an Accept or a catch-up
    /// answer); keep it well under the transport's peer frame limit.
    pub max_message_bytes: usize,
    /// Most leases (held or awaited) this node lets clients create: an
    /// acquire of a new name is refused with `TooManyLeases` before it is
    /// proposed once the table holds this many. At most
    /// [`crate::table::MAX_LEASES`], the table's own ceiling, which every
    /// node applies alike.
    pub max_leases: usize,
    /// Most watchers this node serves at once (see [`crate::watch`]).
    pub max_watchers: usize,
    /// How many recent events the node keeps so that a watch can resume
    /// from a position; a resume from further back is refused as
    /// compacted.
    pub watch_history: usize,
    /// Which thread makes this node's journal writes durable.
    pub journal_sync: JournalSync,
    /// A deliberately broken runtime, for proving the simulator's checks
    /// (feature `sabotage` only).
    #[cfg(feature = "sabotage")]
    pub sabotage: Option<crate::Sabotage>,
}

/// Which thread performs a node's journal syncs. Either way a vote
/// counts, and leaves, only once its sync has returned; this decides only
/// how many thread hand-offs stand between the two.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JournalSync {
    /// The journal's own thread: the runtime never waits on the disk, and
    /// each sync costs two hand-offs (to the journal thread and back) on
    /// the path of every request. Right for a node that shares its runtime
    /// with the application.
    #[default]
    JournalThread,
    /// The node's own task, blocking the runtime's thread for the sync
    /// (tens of microseconds on an SSD, milliseconds on a slow disk): no
    /// hand-off, so a vote counts or leaves sooner. For a runtime that
    /// serves the node alone, as the `trexlock` command's does. A leader
    /// syncs at the end of its round, after one yield to the runtime, in
    /// which a current-thread runtime lets the peer links write the
    /// round's Accepts before the leader blocks, so that its followers'
    /// disks work while its own does. A write holding a snapshot still
    /// goes to the journal thread, so that a node keeps answering while a
    /// large table is written.
    InPlace,
}

impl NodeConfig {
    /// Defaults: 50 ms heartbeats, 300 ms election timeout, 1000 ppm drift
    /// bound, 5 ms ticks, 500 ms retries, a snapshot every 10 000 slots,
    /// slots of at most 256 commands and 1 MiB, consensus messages of at
    /// most 4 MiB, at most [`crate::table::MAX_LEASES`] leases, 1024
    /// watchers and 16 384 events kept for resuming watches, and journal
    /// syncs on the journal's own thread.
    pub fn new(node: NodeId, members: Vec<NodeId>) -> Self {
        NodeConfig {
            node,
            members,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            drift: DriftBound::DEFAULT,
            tick_interval: Duration::from_millis(5),
            retry_interval: Duration::from_millis(500),
            snapshot_every: 10_000,
            max_batch: 256,
            window: 64,
            max_batch_bytes: trexlock_paxos::DEFAULT_MAX_BATCH_BYTES,
            max_message_bytes: trexlock_paxos::DEFAULT_MAX_MESSAGE_BYTES,
            max_leases: crate::table::MAX_LEASES,
            max_watchers: crate::watch::DEFAULT_MAX_WATCHERS,
            watch_history: crate::watch::DEFAULT_WATCH_HISTORY,
            journal_sync: JournalSync::JournalThread,
            #[cfg(feature = "sabotage")]
            sabotage: None,
        }
    }

    /// The replica's configuration for these settings, its election
    /// randomness seeded with `seed` (a running node draws one at random;
    /// the simulator fixes it per seed).
    pub fn paxos_config(&self, seed: u64) -> Config {
        let mut cfg = Config::new(self.node, self.members.clone());
        cfg.heartbeat_interval = self.heartbeat_interval;
        cfg.election_timeout = self.election_timeout;
        cfg.max_batch = self.max_batch;
        cfg.window = self.window;
        cfg.max_batch_bytes = self.max_batch_bytes;
        cfg.max_message_bytes = self.max_message_bytes;
        cfg.seed = seed;
        cfg
    }

    fn validate(&self) -> Result<(), NodeError> {
        self.paxos_config(0)
            .validate()
            .map_err(|e| NodeError::Config(e.to_string()))?;
        if self.tick_interval.is_zero() || self.retry_interval.is_zero() {
            return Err(NodeError::Config(
                "tick and retry intervals must be non-zero".into(),
            ));
        }
        if self.max_leases > crate::table::MAX_LEASES {
            return Err(NodeError::Config(format!(
                "max_leases ({}) is above the table's ceiling of {}",
                self.max_leases,
                crate::table::MAX_LEASES
            )));
        }
        if self.snapshot_every == 0 {
            return Err(NodeError::Config(
                "snapshot_every must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// Where the answers to one request go.
pub(crate) enum Reply {
    /// A caller in this process, waiting for its final answer.
    Channel(AnswerSender),
    /// A remote client: each answer is queued straight onto its
    /// connection, with no task in between. Returns false once the client
    /// is gone.
    Remote(Box<dyn Fn(Outcome) -> bool + Send + Sync>),
}

impl Reply {
    /// Delivers one answer without waiting; false if the receiver is gone.
    pub(crate) fn send(&mut self, outcome: Outcome) -> bool {
        match self {
            Reply::Channel(tx) => tx.send(outcome),
            Reply::Remote(deliver) => deliver(outcome),
        }
    }
}

/// The sending end of one call's answers: any number of
/// [`Outcome::Queued`] (noted, not sent), then one final answer. A
/// one-shot channel, because a call has exactly one final answer: it costs
/// one small allocation where a queue costs a block of slots.
pub(crate) struct AnswerSender {
    tx: Option<oneshot::Sender<Answer>>,
    queued: bool,
}

impl AnswerSender {
    /// A sender, and the receiver its final answer arrives on.
    pub(crate) fn new() -> (AnswerSender, oneshot::Receiver<Answer>) {
        let (tx, rx) = oneshot::channel();
        (
            AnswerSender {
                tx: Some(tx),
                queued: false,
            },
            rx,
        )
    }

    fn send(&mut self, outcome: Outcome) -> bool {
        if outcome == Outcome::Queued {
            self.queued = true;
            return self.tx.as_ref().is_some_and(|tx| !tx.is_closed());
        }
        let queued = self.queued;
        self.tx
            .take()
            .is_some_and(|tx| tx.send(Answer { outcome, queued }).is_ok())
    }
}

/// What the node task is asked to do.
pub(crate) enum Call {
    Request {
        request: Request,
        reply: Reply,
    },
    Forget {
        client: ClientId,
        request: u64,
    },
    Members(crate::client::members::MemberCall),
    Shutdown {
        done: oneshot::Sender<()>,
    },
    Watch {
        id: WatchId,
        request: WatchRequest,
        sink: WatchSink,
    },
    Unwatch {
        id: WatchId,
    },
}

/// The node's public state, as last published by its task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeStatus {
    /// The leader this node has heard from within an election timeout
    /// (itself when it leads); `None` while electing or cut off.
    pub leader: Option<NodeId>,
    /// Whether this node leads (and has started its lease epoch).
    pub is_leader: bool,
    /// Highest slot applied to the lease table.
    pub applied: u64,
    /// Highest slot a leader has announced chosen (this node's own commit
    /// index when it leads): `leader_committed - applied` is how far this
    /// node is behind.
    pub leader_committed: u64,
    /// The highest ballot this node has promised.
    pub promised: Ballot,
    /// This node does not vote: the membership in effect lists it as a
    /// learner (or does not list it yet), or it relearns after starting
    /// from an empty journal (see `relearning`).
    pub learner: bool,
    /// This node started from an empty journal and does not vote until it
    /// has caught up (see the crate docs on disk loss).
    pub relearning: bool,
    /// The newest chosen membership no longer lists this node: its client
    /// calls and remote clients are refused
    /// [`Refusal::Removed`](crate::Refusal::Removed), and it stops once a
    /// leader of the new membership releases it.
    pub removed: bool,
    /// Set once the node has stopped, with the reason.
    pub stopped: Option<String>,
}

/// How many slots behind its leader a node may be and still be ready:
/// slots chosen while an answer is on its way are not a lag worth taking a
/// node out of a load balancer for.
pub const READY_LAG_SLOTS: u64 = 64;

impl NodeStatus {
    /// True when the node can serve: it runs, knows a leader, votes (is
    /// no learner) and has applied all but the last [`READY_LAG_SLOTS`]
    /// slots the leader announced. What `/ready` answers.
    pub fn is_ready(&self) -> bool {
        self.stopped.is_none()
            && !self.removed
            && self.leader.is_some()
            && !self.learner
            && self.applied + READY_LAG_SLOTS >= self.leader_committed
    }

    /// The node's role in words: `leader`, `follower`, `learner` (it does
    /// not vote: a learner of the membership, or relearning after a disk
    /// loss), `electing` (a voter that knows no leader), `removed` or
    /// `stopped`.
    ///
    /// ```
    /// use trexlock_lease::NodeStatus;
    ///
    /// let learner = NodeStatus { learner: true, ..NodeStatus::default() };
    /// assert_eq!(learner.role(), "learner");
    /// let removed = NodeStatus { removed: true, learner: true, ..NodeStatus::default() };
    /// assert_eq!(removed.role(), "removed");
    /// ```
    pub fn role(&self) -> &'static str {
        if self.stopped.is_some() {
            "stopped"
        } else if self.removed {
            "removed"
        } else if self.is_leader {
            "leader"
        } else if self.learner {
            "learner"
        } else if self.leader.is_some() {
            "follower"
        } else {
            "electing"
        }
    }
}

/// A cheap, cloneable handle to a running node, used by clients.
#[derive(Clone)]
pub struct NodeHandle {
    pub(crate) id: NodeId,
    pub(crate) calls: mpsc::Sender<Call>,
    pub(crate) status: watch::Receiver<NodeStatus>,
    pub(crate) drift: DriftBound,
    pub(crate) metrics: Arc<Metrics>,
    /// The journal file, for its size in the metrics.
    pub(crate) journal: Option<std::path::PathBuf>,
}

impl NodeHandle {
    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.status.borrow().clone()
    }

    /// Why a call found the node gone: removed from the membership
    /// ([`Refusal::Removed`](crate::Refusal::Removed)), or stopped.
    pub(crate) fn gone(&self) -> crate::LeaseError {
        if self.status.borrow().removed {
            crate::LeaseError::Refused(crate::Refusal::Removed)
        } else {
            crate::LeaseError::Stopped
        }
    }

    /// A client session on this node. Leases are reentrant by `owner`.
    pub fn client(&self, owner: impl Into<String>) -> LeaseClient {
        LeaseClient::new(self.clone(), owner.into())
    }

    /// Counters since the node started.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot(self.status.borrow().is_leader)
    }

    /// Waits until some leader is known (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let mut status = self.status.clone();
        let found = tokio::time::timeout(timeout, status.wait_for(|s| s.leader.is_some())).await;
        match found {
            Ok(Ok(s)) => s.leader,
            _ => None,
        }
    }
}

/// A running node. Dropping it stops the node abruptly (as a crash
/// would, minus the process); [`Node::shutdown`] stops it cleanly.
pub struct Node {
    handle: NodeHandle,
    task: tokio::task::JoinHandle<Result<(), NodeError>>,
}

impl Node {
    /// Starts a node: loads its journal, then runs the core, the table and
    /// the journal on the current tokio runtime.
    ///
    /// # Errors
    /// An invalid configuration, or a journal that cannot be loaded or
    /// contradicts itself.
    pub async fn start(
        config: NodeConfig,
        journal: Box<dyn Journal>,
        network: Arc<dyn Network>,
        inbox: Inbox,
    ) -> Result<Node, NodeError> {
        config.validate()?;
        let thread = format!("trexlock-journal-{}", config.node);
        let (worker, state) =
            tokio::task::spawn_blocking(move || JournalWorker::start(journal, thread))
                .await
                .map_err(NodeError::Task)??;
        let origin = tokio::time::Instant::now();
        let (id, drift, tick) = (config.node, config.drift, config.tick_interval);
        let journal_sync = config.journal_sync;
        let paxos = config.paxos_config(fastrand::u64(..));
        let core = NodeCore::new(config, paxos, state, Duration::ZERO)?;
        let (calls_tx, calls_rx) = mpsc::channel(4096);
        let (status_tx, status_rx) = watch::channel(NodeStatus::default());
        let handle = NodeHandle {
            id,
            calls: calls_tx,
            status: status_rx,
            drift,
            metrics: core.shared_metrics(),
            journal: None,
        };
        let io = task::Io {
            worker,
            network,
            inbox,
            calls: calls_rx,
            status: status_tx,
            journal_sync,
        };
        let task = tokio::spawn(task::NodeTask::new(core, io, origin, tick).run());
        Ok(Node { handle, task })
    }

    /// Starts a node on the default durable journal: a redb file at
    /// `path`, created if missing, tagged with `cluster_id` and the node id
    /// (a journal of another cluster or node is refused).
    ///
    /// # Errors
    /// As [`Node::start`], plus any journal open error (corrupt file,
    /// wrong owner, newer format, rolled back).
    pub async fn start_with_redb(
        config: NodeConfig,
        cluster_id: &str,
        path: impl AsRef<std::path::Path>,
        network: Arc<dyn Network>,
        inbox: Inbox,
    ) -> Result<Node, NodeError> {
        let journal = JournalFile::Redb(path.as_ref().to_owned());
        Node::start_with_journal(config, cluster_id, journal, network, inbox).await
    }

    /// Starts a node on the durable journal `journal` (opened, or created
    /// if missing, and tagged with `cluster_id` and the node id).
    ///
    /// # Errors
    /// As [`Node::start_with_redb`].
    pub async fn start_with_journal(
        config: NodeConfig,
        cluster_id: &str,
        journal: JournalFile,
        network: Arc<dyn Network>,
        inbox: Inbox,
    ) -> Result<Node, NodeError> {
        let identity = JournalIdentity::new(cluster_id, config.node);
        let path = journal.path().to_owned();
        let journal = tokio::task::spawn_blocking(move || journal.open(identity))
            .await
            .map_err(NodeError::Task)??;
        let mut node = Node::start(config, journal, network, inbox).await?;
        node.handle.journal = Some(path);
        Ok(node)
    }

    /// A handle for clients and status.
    pub fn handle(&self) -> NodeHandle {
        self.handle.clone()
    }

    /// The node's id.
    pub fn id(&self) -> NodeId {
        self.handle.id
    }

    /// A client session on this node (see [`NodeHandle::client`]).
    pub fn client(&self, owner: impl Into<String>) -> LeaseClient {
        self.handle.client(owner)
    }

    /// Counters since the node started.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.handle.metrics()
    }

    /// Waits until some leader is known (or `timeout` passes).
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        self.handle.wait_for_leader(timeout).await
    }

    /// The node's latest status.
    pub fn status(&self) -> NodeStatus {
        self.handle.status()
    }

    /// Stops the node cleanly: in-flight journal syncs finish, the journal
    /// is closed, pending calls fail with `Stopped`. The rest of the
    /// cluster goes on (a new leader is elected if this one led).
    ///
    /// # Errors
    /// The error that had already stopped the node, if any.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let (done, wait) = oneshot::channel();
        if self
            .handle
            .calls
            .send(Call::Shutdown { done })
            .await
            .is_ok()
        {
            let _ = wait.await;
        }
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(NodeError::Task(e)),
        }
    }

    /// Stops the node without any cleanup, like a crash: no message is
    /// sent and no request answered any more; whatever the journal synced
    /// is all that survives. Returns once the journal is closed, so the
    /// node can be restarted on it.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}
