//! The durable state a replica needs, and the [`Journal`] that keeps it.

use crate::types::{Ballot, LogEntry, Slot, Snapshot};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Everything a replica must find again after a restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalState {
    /// The highest ballot promised. Never decreases.
    pub promised: Ballot,
    /// Every slot up to here is known chosen. A hint: losing it costs a
    /// catch-up, never safety.
    pub committed: Slot,
    /// The latest snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// Entries at or below this slot were deleted by compaction; all of them
    /// are covered by `snapshot`.
    pub truncated: Slot,
    /// Votes: for each slot above `truncated`, the last value accepted.
    pub entries: BTreeMap<Slot, LogEntry>,
}

impl JournalState {
    /// Applies a write in the documented order: promise, entries, commit
    /// index, snapshot, then truncation. Entries at or below the truncation
    /// point are ignored (they are covered by the snapshot), and an older
    /// snapshot never replaces a newer one; together these make
    /// [`JournalWrite::merge`] exact.
    pub fn apply(&mut self, write: &JournalWrite) {
        if let Some(ballot) = write.promised {
            self.promised = ballot;
        }
        for (slot, entry) in &write.entries {
            if *slot > self.truncated {
                self.entries.insert(*slot, entry.clone());
            }
        }
        if let Some(committed) = write.committed {
            self.committed = committed;
        }
        if let Some(snapshot) = &write.snapshot
            && self
                .snapshot
                .as_ref()
                .is_none_or(|s| s.slot <= snapshot.slot)
        {
            self.snapshot = Some(snapshot.clone());
        }
        if let Some(upto) = write.truncate {
            self.truncated = self.truncated.max(upto);
            self.entries = match upto.checked_add(1) {
                Some(first_kept) => self.entries.split_off(&first_kept),
                None => BTreeMap::new(),
            };
        }
    }
}

/// The durable effects of one or more replica steps, to be made durable
/// atomically by [`Journal::persist`].
///
/// Fields are applied in this order: `promised`, `entries`, `committed`,
/// `snapshot`, `truncate` (see [`JournalState::apply`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JournalWrite {
    /// A new promise.
    pub promised: Option<Ballot>,
    /// New or overwritten votes, in the order they were cast.
    pub entries: Vec<(Slot, LogEntry)>,
    /// A new commit index.
    pub committed: Option<Slot>,
    /// A snapshot to keep (taken locally or installed from a peer).
    pub snapshot: Option<Snapshot>,
    /// Delete every entry at or below this slot.
    pub truncate: Option<Slot>,
}

impl JournalWrite {
    /// True when there is nothing to persist.
    pub fn is_empty(&self) -> bool {
        self.promised.is_none()
            && self.entries.is_empty()
            && self.committed.is_none()
            && self.snapshot.is_none()
            && self.truncate.is_none()
    }

    /// Folds a later write into this one so that one sync covers both
    /// (group commit). Applying the merged write equals applying `self`
    /// then `later`.
    pub fn merge(&mut self, later: JournalWrite) {
        if later.promised.is_some() {
            self.promised = later.promised;
        }
        self.entries.extend(later.entries);
        if later.committed.is_some() {
            self.committed = later.committed;
        }
        if later.snapshot.is_some() {
            self.snapshot = later.snapshot;
        }
        self.truncate = match (self.truncate, later.truncate) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

/// Why a journal could not load or persist. Every variant names what is
/// wrong; none of them is ever answered by resetting the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The storage device or database failed.
    #[error("journal {path}: storage failed: {source}")]
    Storage {
        /// The journal's location.
        path: PathBuf,
        /// The underlying failure.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The file is damaged: truncated, corrupt or not a journal at all.
    #[error("journal {path}: corrupt: {reason}")]
    Corrupt {
        /// The journal's location.
        path: PathBuf,
        /// What was found wrong.
        reason: String,
    },
    /// The journal is older than what the node has acknowledged: its newest
    /// commits are missing (a storage engine rolled back a damaged commit,
    /// or the file was replaced by an older copy). The node may have
    /// forgotten promises and votes it gave, so it must not run on it.
    #[error(
        "journal {path}: rolled back: commit {acknowledged} was acknowledged, but the journal \
         ends at commit {found}; wipe the node's data directory and let it rejoin"
    )]
    RolledBack {
        /// The journal's location.
        path: PathBuf,
        /// The newest commit the node acknowledged.
        acknowledged: u64,
        /// The newest commit the journal holds.
        found: u64,
    },
    /// The journal was created for another cluster or another node.
    #[error("journal {path}: belongs to {found}, but this node is {expected}")]
    WrongOwner {
        /// The journal's location.
        path: PathBuf,
        /// Owner recorded in the journal.
        found: String,
        /// Owner this node expected.
        expected: String,
    },
    /// The journal was written by a newer, incompatible version.
    #[error(
        "journal {path}: format version {found} is not supported (this build reads {supported})"
    )]
    UnsupportedVersion {
        /// The journal's location.
        path: PathBuf,
        /// Version recorded in the journal.
        found: u32,
        /// Version this build reads and writes.
        supported: u32,
    },
    /// The journal was closed or a previous error stopped it.
    #[error("journal {path}: closed")]
    Closed {
        /// The journal's location.
        path: PathBuf,
    },
}

/// Durable storage for one replica's [`JournalState`].
///
/// **Durability contract: when [`Journal::persist`] returns `Ok`, the write
/// is durable (synced to stable storage) and atomic: after any crash,
/// [`Journal::load`] returns the state with either all or none of it. The
/// runtime sends no message produced by a step until that step's write has
/// been persisted: a promise or a vote is on disk before anyone can learn of
/// it.** An error means the node must stop; it never retries blindly and
/// never guesses.
///
/// Implementations: `MemJournal` (here, for tests), and in the
/// `trexlock-journal` crate `RedbJournal` (the default), `LogJournal` (an
/// append-only file of checksummed records) and `JournalTables` (tables
/// inside an application's own redb database).
pub trait Journal: Send {
    /// Reads back everything made durable so far.
    fn load(&mut self) -> Result<JournalState, JournalError>;

    /// Makes `write` durable, atomically, before returning.
    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError>;
}

/// A journal in memory. **Not durable**: a process restart loses it, so a
/// node using it must never rejoin its cluster with the same id after a
/// restart. For tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct MemJournal {
    state: JournalState,
}

impl MemJournal {
    /// An empty journal.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state as persisted so far.
    pub fn state(&self) -> &JournalState {
        &self.state
    }
}

impl Journal for MemJournal {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        Ok(self.state.clone())
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        self.state.apply(write);
        Ok(())
    }
}
