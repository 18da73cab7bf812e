//! # trexlock-journal
//!
//! Durable storage for a trexlock replica's promises, votes and snapshot:
//! implementations of [`Journal`], the contract defined (with its
//! durability rule) in `trexlock-paxos`.
//!
//! - [`RedbJournal`]: the default. One redb file per node and two
//!   write-ahead logs beside it; every [`Journal::persist`] is one record
//!   appended to the active log and synced (group commit: one sync covers
//!   a whole batch of steps), and once that log is full the other takes
//!   over while the full one's writes are folded into the redb file, on a
//!   thread of its own, in one transaction committed with immediate
//!   durability.
//!   A journal that comes back older than what the node acknowledged (redb
//!   falling back past a damaged commit, an old copy restored, a log
//!   record lost) is refused.
//! - [`LogJournal`]: an append-only file of checksummed records, one
//!   record and one `fdatasync` per sync, compacted by rewriting the whole
//!   state into a new file. The same guarantees, without redb.
//! - [`JournalTables`]: the same tables inside an application's own redb
//!   database, so that an applied command and the application's own writes
//!   commit in one transaction (see `examples/app_owned_journal.rs`).
//!   Guarding that database against rollback is the application's part.
//! - [`MemJournal`]: in memory, **not durable**: a node using it must never
//!   rejoin its cluster under the same id after a restart.
//! - `testing` (feature `testing`): the conformance suite any [`Journal`]
//!   implementation can run with one call.
//!
//! ```
//! use trexlock_journal::{Journal, JournalIdentity, JournalWrite, RedbJournal};
//! use trexlock_paxos::{Ballot, NodeId};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("node1.journal");
//! let identity = JournalIdentity::new("orders", NodeId(1));
//! let mut journal = RedbJournal::open(&path, identity.clone()).unwrap();
//! let promise = Ballot { counter: 7, node: NodeId(2) };
//! let write = JournalWrite { promised: Some(promise), ..JournalWrite::default() };
//! journal.persist(&write).unwrap();
//! drop(journal);
//!
//! let mut journal = RedbJournal::open(&path, identity).unwrap();
//! assert_eq!(journal.load().unwrap().promised, promise);
//! ```
#![deny(missing_docs)]

mod ack_mark;
mod direct_append;
mod framing;
mod log_journal;
mod record;
mod redb_journal;
mod redb_wal;
mod tables;
#[cfg(feature = "testing")]
pub mod testing;

pub use log_journal::{COMPACT_AT, LOG_FORMAT_VERSION, LogJournal};
pub use record::FORMAT_VERSION;
pub use redb_journal::RedbJournal;
pub use tables::{JournalIdentity, JournalTables};
pub use trexlock_paxos::{Journal, JournalError, JournalState, JournalWrite, MemJournal};

/// Makes the directory entry of `path` durable: syncing a file does not,
/// so a power cut could otherwise lose a journal just created, votes and
/// all.
pub(crate) fn sync_directory_of(path: &std::path::Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => std::path::Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

/// `path` with `suffix` appended to its file name: a file that belongs
/// with it.
pub(crate) fn sibling(path: &std::path::Path, suffix: &str) -> std::path::PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

pub(crate) fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
