//! Errors that stop a replica.

use crate::config::ConfigError;
use crate::types::{Ballot, Slot};

/// Why a replica refused to go on. After any of these the replica is
/// stopped and every later call returns [`PaxosError::Stopped`]:
/// continuing could break safety.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaxosError {
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(#[from] ConfigError),
    /// The journal's recovered state contradicts itself.
    #[error("recovered journal state is inconsistent: {0}")]
    InconsistentJournal(String),
    /// A snapshot was offered for a slot that is not yet chosen here.
    #[error("cannot snapshot slot {slot}: only {committed} is chosen")]
    SnapshotBeyondCommitted {
        /// The offered snapshot slot.
        slot: Slot,
        /// This replica's commit index.
        committed: Slot,
    },
    /// The promise would go backwards.
    #[error("promise would go back from {from} to {to}")]
    PromiseRegression {
        /// The current promise.
        from: Ballot,
        /// The lower ballot.
        to: Ballot,
    },
    /// The replica stopped earlier and takes no more input.
    #[error("replica stopped")]
    Stopped,
}

/// Why a proposal was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This replica is not the leader; `leader` is its best guess.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The node this replica last heard leading, if any.
        leader: Option<crate::types::NodeId>,
    },
    /// A command is larger than one slot may hold
    /// ([`crate::Config::max_batch_bytes`]); no command of the call was
    /// taken.
    #[error(
        "command {index} of the proposal takes {bytes} bytes, more than the {limit} one slot holds"
    )]
    CommandTooLarge {
        /// Its position among the proposed commands.
        index: usize,
        /// Its length plus [`crate::COMMAND_OVERHEAD_BYTES`].
        bytes: usize,
        /// [`crate::Config::max_batch_bytes`].
        limit: usize,
    },
    /// The replica is stopped.
    #[error("replica stopped")]
    Stopped,
}
