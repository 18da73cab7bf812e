//! Which durable journal a node keeps, and where.

use std::path::{Path, PathBuf};
use trexlock_journal::{Journal, JournalError, JournalIdentity, LogJournal, RedbJournal};

/// Which durable journal a node keeps, and where. Both sync every
/// write before it counts and refuse damaged, foreign or rolled-back files;
/// they differ in cost per sync.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalFile {
    /// A redb database ([`trexlock_journal::RedbJournal`]): the default.
    Redb(PathBuf),
    /// An append-only log ([`trexlock_journal::LogJournal`]):
    /// one appended record per sync where redb rewrites several B-tree
    /// pages, so a sync costs about a third on the same disk.
    Log(PathBuf),
}

impl JournalFile {
    /// The journal file's location.
    pub fn path(&self) -> &Path {
        match self {
            JournalFile::Redb(path) | JournalFile::Log(path) => path,
        }
    }

    pub(crate) fn open(self, identity: JournalIdentity) -> Result<Box<dyn Journal>, JournalError> {
        Ok(match self {
            JournalFile::Redb(path) => Box::new(RedbJournal::open(path, identity)?),
            JournalFile::Log(path) => Box::new(LogJournal::open(path, identity)?),
        })
    }
}
