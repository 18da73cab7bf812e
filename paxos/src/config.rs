//! Static settings of a replica.

use crate::types::{ENTRY_OVERHEAD_BYTES, MESSAGE_OVERHEAD_BYTES, NodeId};
use std::time::Duration;

/// A replica's settings. Build one with [`Config::new`] and adjust fields;
/// [`crate::Replica::new`] validates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// This node.
    pub node: NodeId,
    /// The bootstrap voters: the membership until the log (or a snapshot)
    /// says otherwise; read once, when the journal holds no membership. A
    /// node not among them joins as a learner: it has never voted under
    /// its id, so it needs no other member's answer to start (see
    /// `Replica::is_learner`), and it votes once a chosen membership makes
    /// it a voter.
    pub members: Vec<NodeId>,
    /// How often a leader sends a commit heartbeat when idle.
    pub heartbeat_interval: Duration,
    /// A follower that hears no leader for this long (plus a random extra of
    /// up to the same again) starts an election. A leader that hears from
    /// no quorum for this long steps down.
    pub election_timeout: Duration,
    /// Most client commands in one slot.
    pub max_batch: usize,
    /// Most bytes of commands in one slot, each command counted as its
    /// length plus [`crate::COMMAND_OVERHEAD_BYTES`]. A command larger than
    /// this on its own is refused by [`crate::Replica::propose`].
    pub max_batch_bytes: usize,
    /// Most estimated bytes in one outgoing Accept or catch-up response
    /// (see [`crate::Value::entry_bytes`]); larger ones are split, and so
    /// are promises (see [`crate::Message::Promise`]). Keep it
    /// well under the transport's frame limit: the estimate is an upper
    /// bound of the encoding.
    pub max_message_bytes: usize,
    /// Most snapshot bytes in one [`crate::Message::SnapshotChunk`]. A
    /// chunk never holds more than `max_message_bytes -
    /// MESSAGE_OVERHEAD_BYTES` whatever this says, so a snapshot of any
    /// size travels in messages within [`Config::max_message_bytes`].
    pub snapshot_chunk_bytes: usize,
    /// The largest snapshot this replica assembles from a peer's chunks:
    /// the memory a peer can make it hold for one transfer. A snapshot
    /// announced larger is refused.
    pub max_snapshot_bytes: u64,
    /// Most slots a leader has in flight (proposed, not yet chosen).
    pub window: usize,
    /// Most chosen values in one catch-up response.
    pub catchup_batch: usize,
    /// After a snapshot at slot S, entries above `S - keep_after_snapshot`
    /// are kept so that slightly lagging peers catch up without a snapshot.
    pub keep_after_snapshot: u64,
    /// Seeds the election-timeout randomness (reproducible runs).
    pub seed: u64,
    /// Deliberately broken behaviour, for proving the simulator's checks.
    #[cfg(feature = "sabotage")]
    pub sabotage: Option<Sabotage>,
}

/// Known-wrong variants of the algorithm (feature `sabotage` only).
#[cfg(feature = "sabotage")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sabotage {
    /// Acceptors promise without writing the promise to the journal.
    PromiseNotPersisted,
    /// Acceptors accept values from ballots lower than their promise.
    AcceptLowerBallot,
    /// Leaders count a value chosen with a minority of votes.
    MinorityQuorum,
    /// Promises omit the acceptor's votes.
    ForgetVotesInPromise,
    /// Candidates count a promise that comes in parts as soon as one part
    /// arrived, without the votes of the parts still missing.
    CountPartialPromise,
    /// Followers treat every vote up to the leader's commit index as chosen,
    /// without checking that it was cast in the leader's ballot.
    CommitIgnoresBallot,
    /// A replica that lost its journal votes again at once instead of
    /// learning first.
    VoteAfterDiskLoss,
    /// A leader keeps counting the quorum of the membership before a
    /// change for slots the new membership governs.
    OldConfigQuorum,
    /// A leader proposes a second membership change before the first is
    /// in effect.
    ConcurrentChanges,
    /// Snapshot chunks are appended in whatever order they arrive and the
    /// assembled snapshot is installed without checking its checksum.
    UncheckedSnapshotChunks,
    /// A replica whose promise is its own ballot (it campaigned, then
    /// stepped down or restarted) campaigns again in that ballot instead
    /// of a higher one: a ballot can elect a leader twice.
    ReuseOwnBallot,
}

/// The default [`Config::max_batch_bytes`]: 1 MiB.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 1024 * 1024;

/// The default [`Config::max_message_bytes`]: 4 MiB, a quarter of the
/// transport's default 16 MiB frame limit.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// The default [`Config::max_snapshot_bytes`]: 4 GiB.
pub const DEFAULT_MAX_SNAPSHOT_BYTES: u64 = 4 * 1024 * 1024 * 1024;

impl Config {
    /// Defaults suited to a LAN or loopback cluster: 50 ms heartbeats and a
    /// 300 ms election timeout.
    pub fn new(node: NodeId, members: Vec<NodeId>) -> Self {
        Config {
            node,
            members,
            heartbeat_interval: Duration::from_millis(50),
            election_timeout: Duration::from_millis(300),
            max_batch: 256,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            snapshot_chunk_bytes: DEFAULT_MAX_MESSAGE_BYTES - MESSAGE_OVERHEAD_BYTES,
            max_snapshot_bytes: DEFAULT_MAX_SNAPSHOT_BYTES,
            window: 64,
            catchup_batch: 512,
            keep_after_snapshot: 1024,
            seed: u64::from(node.0),
            #[cfg(feature = "sabotage")]
            sabotage: None,
        }
    }

    /// How many members form a majority.
    pub fn quorum(&self) -> usize {
        self.members.len() / 2 + 1
    }

    /// Most snapshot bytes one chunk carries: [`Config::snapshot_chunk_bytes`]
    /// within what one message may hold.
    pub fn chunk_bytes(&self) -> usize {
        self.snapshot_chunk_bytes
            .min(
                self.max_message_bytes
                    .saturating_sub(MESSAGE_OVERHEAD_BYTES),
            )
            .max(1)
    }

    /// Checks the settings. A full slot must fit in one message: so that
    /// every Accept and catch-up response the replica builds from its own
    /// proposals stays within [`Config::max_message_bytes`], it needs
    /// `max_batch_bytes + ENTRY_OVERHEAD_BYTES + MESSAGE_OVERHEAD_BYTES <=
    /// max_message_bytes`.
    ///
    /// Promises are split into parts within the limit like an Accept, and
    /// snapshots travel in chunks of at most `snapshot_chunk_bytes`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut members = self.members.clone();
        members.sort();
        members.dedup();
        if members.len() != self.members.len() {
            return Err(ConfigError::DuplicateMember);
        }
        if members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        if self.heartbeat_interval.is_zero() || self.election_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Timing);
        }
        if self.max_batch == 0
            || self.window == 0
            || self.catchup_batch == 0
            || self.snapshot_chunk_bytes == 0
        {
            return Err(ConfigError::ZeroLimit);
        }
        let slot_fits = self
            .max_batch_bytes
            .checked_add(ENTRY_OVERHEAD_BYTES + MESSAGE_OVERHEAD_BYTES)
            .is_some_and(|n| n <= self.max_message_bytes);
        if self.max_batch_bytes == 0 || !slot_fits {
            return Err(ConfigError::ByteLimits {
                max_batch_bytes: self.max_batch_bytes,
                max_message_bytes: self.max_message_bytes,
                overhead: ENTRY_OVERHEAD_BYTES + MESSAGE_OVERHEAD_BYTES,
            });
        }
        Ok(())
    }
}

/// Why a [`Config`] was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A node id appears twice among the members.
    #[error("a node id appears twice among the members")]
    DuplicateMember,
    /// The bootstrap member list is empty.
    #[error("the bootstrap member list is empty")]
    NoMembers,
    /// Heartbeats must be non-zero and shorter than the election timeout.
    #[error("heartbeat interval must be non-zero and shorter than the election timeout")]
    Timing,
    /// A batch, window, catch-up or chunk limit is zero.
    #[error("max_batch, window, catchup_batch and snapshot_chunk_bytes must be at least 1")]
    ZeroLimit,
    /// A full slot would not fit in one message.
    #[error(
        "max_batch_bytes ({max_batch_bytes}) must be non-zero and, plus {overhead} bytes of \
         overhead, at most max_message_bytes ({max_message_bytes})"
    )]
    ByteLimits {
        /// The configured per-slot limit.
        max_batch_bytes: usize,
        /// The configured per-message limit.
        max_message_bytes: usize,
        /// Bytes of one entry's and one message's overhead.
        overhead: usize,
    },
}
