//! Which durable journal a node keeps, and where.

use crate::error::NodeError;
use std::path::{Path, PathBuf};
use trexlock_journal::{Journal, JournalError, JournalIdentity, LogJournal, RedbJournal};

/// Which durable journal a node keeps, and where. Both sync every
/// write before it counts and refuse damaged, foreign or rolled-back files;
/// they differ in cost per sync.
///
/// A journal is not opened where the other engine's journal lives: the
/// same path with the other engine's extension (`redb`, `log`: for
/// `data_dir/journal.log`, `data_dir/journal.redb`) must not exist, or
/// switching engines in the configuration would silently start an empty
/// journal beside the node's real one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalFile {
    /// A redb database with two write-ahead logs beside it
    /// ([`trexlock_journal::RedbJournal`]): the default.
    Redb(PathBuf),
    /// An append-only log ([`trexlock_journal::LogJournal`]): one appended
    /// record per sync, like redb's write-ahead log, and no redb.
    Log(PathBuf),
}

impl JournalFile {
    /// The journal file's location.
    pub fn path(&self) -> &Path {
        match self {
            JournalFile::Redb(path) | JournalFile::Log(path) => path,
        }
    }

    /// Where the other engine would keep this node's journal.
    fn other_engine_path(&self) -> PathBuf {
        match self {
            JournalFile::Redb(path) => path.with_extension("log"),
            JournalFile::Log(path) => path.with_extension("redb"),
        }
    }

    /// Opens (creating if missing) the journal, unless the other engine's
    /// journal is in its place: then [`NodeError::OtherEngineJournal`].
    pub(crate) fn open(self, identity: JournalIdentity) -> Result<Box<dyn Journal>, NodeError> {
        let other = self.other_engine_path();
        match std::fs::symlink_metadata(&other) {
            Ok(_) => {
                return Err(NodeError::OtherEngineJournal {
                    configured: self.path().to_path_buf(),
                    found: other,
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(NodeError::Journal(JournalError::Storage {
                    path: other,
                    source: Box::new(e),
                }));
            }
        }
        Ok(match self {
            JournalFile::Redb(path) => Box::new(RedbJournal::open(path, identity)?),
            JournalFile::Log(path) => Box::new(LogJournal::open(path, identity)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trexlock_journal::JournalWrite;
    use trexlock_paxos::{Ballot, NodeId};

    fn identity() -> JournalIdentity {
        JournalIdentity::new("c", NodeId(1))
    }

    /// A journal of `engine` holding a promise, closed.
    fn written(engine: &JournalFile) {
        let mut journal = engine.clone().open(identity()).unwrap();
        journal
            .persist(&JournalWrite {
                promised: Some(Ballot {
                    counter: 4,
                    node: NodeId(2),
                }),
                ..JournalWrite::default()
            })
            .unwrap();
    }

    #[test]
    fn switching_engines_on_a_data_directory_is_refused_naming_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let redb = JournalFile::Redb(dir.path().join("journal.redb"));
        let log = JournalFile::Log(dir.path().join("journal.log"));
        for (existing, switched) in [(&redb, &log), (&log, &redb)] {
            for file in std::fs::read_dir(dir.path()).unwrap() {
                std::fs::remove_file(file.unwrap().path()).unwrap();
            }
            written(existing);
            let error = match switched.clone().open(identity()) {
                Ok(_) => panic!("{switched:?} opened beside {existing:?}"),
                Err(error) => error,
            };
            assert!(
                matches!(&error, NodeError::OtherEngineJournal { configured, found }
                    if configured == switched.path() && found == existing.path()),
                "{error:?}"
            );
            let message = error.to_string();
            for path in [existing.path(), switched.path()] {
                assert!(message.contains(&path.display().to_string()), "{message}");
            }
            assert!(!switched.path().exists(), "an empty journal was started");
            // The configured engine, switched back, still opens its journal.
            let mut journal = existing.clone().open(identity()).unwrap();
            assert_eq!(journal.load().unwrap().promised.counter, 4);
        }
    }
}
