//! The default journal: one redb database file per node.

use crate::ack_mark::{AckMark, refuse_rollback};
use crate::record::{next_sequence, storage};
use crate::redb_wal::{CAPACITY, Found, LOG_SUFFIXES, Replayed, Wal};
use crate::tables::{JournalIdentity, JournalTables};
use redb::{Database, Durability, ReadableDatabase, TableHandle, WriteTransaction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use trexlock_paxos::{Journal, JournalError, JournalState, JournalWrite};

/// Table names inside a journal file. The prefix keeps them apart from
/// anything else a tool might add to the file later.
const TABLE_PREFIX: &str = "trexlock.";

/// redb's page cache. The file is read in full only when the journal
/// opens (the replica keeps in memory what it serves), and a write
/// touches a few pages of shallow trees, so a large cache buys nothing;
/// redb's default (1 GiB) kept every page the integrity check read and
/// every snapshot page written resident for the life of the process.
const CACHE_BYTES: usize = 16 * 1024 * 1024;

/// No write larger than this goes through the write-ahead log: it is
/// committed to the redb file directly, as is every write that carries a
/// snapshot.
const LARGEST_LOGGED: usize = (CAPACITY / 4) as usize;

/// A [`Journal`] in a redb database file of its own, with two write-ahead
/// logs beside it: syncs go through the active log, and a full log is
/// checkpointed into redb on a thread of its own while the other one
/// takes over.
///
/// Guarantees: every [`Journal::persist`] is synced to disk and atomic
/// before it returns, however many steps' writes it covers: it is either
/// one checksummed record appended to the active log and synced (one
/// direct `O_DSYNC` write where the file system takes it, else a write and
/// `fdatasync`), or (a write that carries a snapshot, or a large one) one
/// redb write transaction committed with [`Durability::Immediate`] that
/// folds in everything the logs hold, after which the active log starts
/// over. When the active log is full, the other one takes over (its header
/// rewritten and synced), and the full one's writes are folded into the
/// file by one such transaction on a background thread, after which that
/// log starts over; if the next log fills before that fold ends, the sync
/// that finds it full waits for it.
///
/// Why this keeps durability: a write is acknowledged only once the
/// record holding it, or the redb commit holding it, is synced; a log
/// starts over only after the redb commit that holds everything in it is
/// synced, and each log's header names the commit its records follow, so
/// the logs and the file together always hold every acknowledged write;
/// [`RedbJournal::open`] folds what the logs hold into the file before
/// anything else. A log record that fails its checks is taken for a write
/// cut short only when nothing was written after it; otherwise the
/// journal is refused as corrupt (see `redb_wal`), and a log that belongs
/// to another node, or starts after the newest commit before it, is
/// refused too. A failed fold fails the journal at its next call.
///
/// Why: a redb commit with immediate durability writes its changed B-tree
/// pages, its allocator records and its header (about seven scattered
/// 4 KiB pages) and spends most of its time in redb's own work per commit;
/// an append of the same write took about a third of the CPU of such a
/// commit (in one run on a loaded two-core machine: 56–66 µs per one-entry
/// sync against 150–196 µs) and the same time as the log journal's. A file
/// is only ever opened as the journal of the node it was created for, in
/// the format version it records; a damaged file is reported as
/// [`JournalError::Corrupt`], never reset, and a file older than what the
/// node has acknowledged is [`JournalError::RolledBack`], never trusted.
/// After any error the journal answers every call with
/// [`JournalError::Closed`]: the node must stop.
///
/// Beside the file live its write-ahead logs (the same path with `.wal`
/// and `.wal2` appended), which hold the newest writes until they are
/// folded into the file, and its acknowledgement mark (`.acked`
/// appended): a 16-byte record of the newest acknowledged commit, written
/// without a sync after each commit. The mark is how a rollback is told
/// from a normal recovery (see [`RedbJournal::open`]). All three belong
/// with the journal, and are moved, copied or deleted with it; after
/// [`RedbJournal::close`] the logs are empty and the file alone holds the
/// journal. Dropping the journal waits for a fold in progress.
#[derive(Debug)]
pub struct RedbJournal {
    db: Arc<Database>,
    tables: JournalTables,
    mark: AckMark,
    /// The log the next record goes to.
    active: Wal,
    /// The other log: empty and ready to take over, or being folded.
    spare: Spare,
    /// The writes in the active log, not yet in the file, merged.
    pending: JournalWrite,
    /// The newest commit, in a log or the file.
    sequence: u64,
    failed: bool,
    /// Every fold from now on fails as a failing disk would make it: the
    /// crate's own tests set it, since redb cannot be made to fail a
    /// commit from outside.
    #[cfg(test)]
    fail_folds: bool,
}

/// The log that is not active.
#[derive(Debug)]
enum Spare {
    /// Empty, its writes (if it had any) in the file.
    Ready(Wal),
    /// Its writes being folded into the file; the thread hands it back
    /// empty.
    Folding(Fold),
    /// Lost with a failed fold: the journal has failed.
    Gone,
}

/// A fold in progress. Dropping it waits for the thread, so that a
/// dropped journal leaves its file closed and every fold it began
/// committed or failed.
#[derive(Debug)]
struct Fold {
    thread: Option<JoinHandle<Result<Wal, JournalError>>>,
    /// The journal's file, named by the error of a fold that panicked.
    path: PathBuf,
}

impl Fold {
    fn wait(mut self) -> Result<Wal, JournalError> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(done)) => done,
            _ => Err(storage(
                &self.path,
                std::io::Error::other(
                    "the thread folding a write-ahead log into the file panicked",
                ),
            )),
        }
    }

    fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Fold {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl RedbJournal {
    /// Opens the journal at `path` for `identity`, creating it (and the
    /// file) if the file is absent or empty.
    ///
    /// Every open verifies the checksum of every page, so the cost grows
    /// with the file; compaction keeps the file small. The writes left in
    /// the write-ahead log are folded into the file. Fails with
    /// [`JournalError::WrongOwner`] if the journal belongs to another
    /// cluster or node, [`JournalError::UnsupportedVersion`] if it records
    /// another format version (version 1, which kept no write-ahead log,
    /// included), [`JournalError::Corrupt`] if the file or its write-ahead
    /// log is damaged or is not a trexlock journal (or its acknowledgement
    /// mark is not a mark: a zeroed or torn one records nothing), and
    /// [`JournalError::RolledBack`] if the file and its log lack a commit
    /// that was acknowledged.
    ///
    /// The last happens when redb, recovering after an unclean shutdown,
    /// finds the newest commit damaged and falls back to the one before: it
    /// cannot know whether that commit was acknowledged, the mark can. A
    /// file restored from an older copy is refused the same way. A new
    /// file (absent or empty before this open) is accepted whatever the
    /// mark says: deleting only the journal file asks for an empty journal,
    /// whose replica starts as a learner, which is safe.
    pub fn open(path: impl AsRef<Path>, identity: JournalIdentity) -> Result<Self, JournalError> {
        let path = path.as_ref();
        let tables = JournalTables::new(TABLE_PREFIX, path);
        // Read before redb opens the file (which writes to it): a mark no
        // crash leaves refuses the journal untouched.
        let (mut mark, acknowledged) = AckMark::open(path)?;
        // Only a file that is not there, or empty, is new: any other
        // failure to look must not start an empty journal over a full one.
        let fresh = match std::fs::metadata(path) {
            Ok(metadata) => metadata.len() == 0,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
            Err(e) => return Err(tables.redb_error(e)),
        };
        // A new journal is built beside its final name and renamed into
        // place once initialised: a crash while creating it must not leave
        // a half-written file that every later open refuses as damaged.
        let creating = crate::sibling(path, ".creating");
        let db = Self::open_database(path, fresh, &creating, &tables)?;
        let txn = Self::begin(&db, &tables)?;
        Self::refuse_foreign(&txn, &tables)?;
        tables.create_or_check(&txn, &identity)?;
        let committed = tables.sequence(&txn)?;
        let replayed = if fresh {
            Replayed {
                pending: JournalWrite::default(),
                sequence: committed,
                found: [Found::default(); LOG_SUFFIXES.len()],
            }
        } else {
            Wal::replay(path, &identity, committed)?
        };
        // Checked before anything is committed, so that a journal refused
        // is left as redb's own open left it.
        if !fresh {
            refuse_rollback(path, acknowledged, replayed.sequence)?;
        }
        tables.write(&txn, &replayed.pending)?;
        tables.set_sequence(&txn, replayed.sequence)?;
        // The commit syncs the file: what was read may so far have been
        // only in the page cache, and the mark must not vouch for it
        // before it is durable.
        txn.commit().map_err(|e| tables.redb_error(e))?;
        if fresh {
            std::fs::rename(&creating, path).map_err(|e| tables.redb_error(e))?;
        }
        crate::sync_directory_of(path).map_err(|e| tables.redb_error(e))?;
        let [first, second] = replayed.found;
        let active = Wal::start(path, 0, &identity, replayed.sequence, first)?;
        let spare = Wal::start(path, 1, &identity, replayed.sequence, second)?;
        mark.record(replayed.sequence)?;
        Ok(Self {
            db: Arc::new(db),
            tables,
            mark,
            active,
            spare: Spare::Ready(spare),
            pending: JournalWrite::default(),
            sequence: replayed.sequence,
            failed: false,
            #[cfg(test)]
            fail_folds: false,
        })
    }

    /// Opens the redb database at `path`, or for a `fresh` journal
    /// creates it at `creating` (renamed to `path` once initialised),
    /// first removing what a deleted journal left beside it.
    fn open_database(
        path: &Path,
        fresh: bool,
        creating: &Path,
        tables: &JournalTables,
    ) -> Result<Database, JournalError> {
        if fresh {
            crate::remove_if_present(creating).map_err(|e| tables.redb_error(e))?;
            // A log beside no journal belongs to one deleted with it.
            for log in 0..LOG_SUFFIXES.len() {
                crate::remove_if_present(&Wal::path_for(path, log))
                    .map_err(|e| tables.redb_error(e))?;
            }
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(creating)
        } else {
            // Without the integrity check redb trusts a cleanly closed file
            // and may panic on one damaged since; with it, damage is an
            // error.
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .open(path)
        }
        .map_err(|e| tables.redb_error(e))
    }

    /// Refuses a database that holds tables but not a journal's: an empty
    /// database is one whose creation was interrupted before its first
    /// commit, safe to initialise; anything else without our metadata is
    /// somebody else's data.
    fn refuse_foreign(txn: &WriteTransaction, tables: &JournalTables) -> Result<(), JournalError> {
        let mut names = txn
            .list_tables()
            .map_err(|e| tables.redb_error(e))?
            .peekable();
        let holds_tables = names.peek().is_some();
        let holds_journal = names.any(|t| t.name() == tables.meta_table_name());
        if holds_tables && !holds_journal {
            return Err(JournalError::Corrupt {
                path: tables.path().to_path_buf(),
                reason: format!(
                    "a redb database, but not a trexlock journal (no table {})",
                    tables.meta_table_name()
                ),
            });
        }
        Ok(())
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        self.tables.path()
    }

    /// Folds the write-ahead logs into the file and closes it, reporting
    /// any failure that dropping would ignore. Dropping the journal instead
    /// leaves the active log for the next open to fold in.
    pub fn close(mut self) -> Result<(), JournalError> {
        if !self.failed {
            self.spare_ready()?;
            if !self.pending.is_empty() {
                self.checkpoint(None)?;
            }
        }
        // Dropping the spare waits for a fold still in progress (after a
        // failure); then nothing else holds the database.
        self.spare = Spare::Gone;
        match Arc::into_inner(self.db) {
            Some(db) => db.close().map_err(|e| self.tables.redb_error(e)),
            None => Ok(()),
        }
    }

    fn begin(db: &Database, tables: &JournalTables) -> Result<WriteTransaction, JournalError> {
        let mut txn = db.begin_write().map_err(|e| tables.redb_error(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| tables.redb_error(e))?;
        Ok(txn)
    }

    /// Commits to the file, in one transaction, the writes in the logs
    /// and then `write` (as the next commit), and starts the active log
    /// over.
    fn checkpoint(&mut self, write: Option<&JournalWrite>) -> Result<(), JournalError> {
        self.spare_ready()?;
        let sequence = match write {
            Some(_) => next_sequence(self.path(), self.sequence)?,
            None => self.sequence,
        };
        fold(&self.db, &self.tables, &self.pending, write, sequence)?;
        self.pending = JournalWrite::default();
        self.sequence = sequence;
        self.active.restart(sequence)
    }

    /// Takes the spare log, waiting for its fold if one is in progress:
    /// the spare log is then empty and the file holds everything but the
    /// active log's writes. Until it is put back the journal has no spare.
    fn take_spare(&mut self) -> Result<Wal, JournalError> {
        match std::mem::replace(&mut self.spare, Spare::Gone) {
            Spare::Ready(wal) => Ok(wal),
            Spare::Folding(fold) => fold.wait(),
            Spare::Gone => Err(JournalError::Closed {
                path: self.tables.path().to_path_buf(),
            }),
        }
    }

    /// Waits for the spare log's fold, if one is in progress.
    fn spare_ready(&mut self) -> Result<(), JournalError> {
        let spare = self.take_spare()?;
        self.spare = Spare::Ready(spare);
        Ok(())
    }

    /// Fails now if a fold that has ended failed, so that the failure is
    /// reported by the next call rather than when the log is next full.
    fn reap_fold(&mut self) -> Result<(), JournalError> {
        match &self.spare {
            Spare::Folding(fold) if fold.is_finished() => self.spare_ready(),
            _ => Ok(()),
        }
    }

    /// The spare log takes over from the full active one, whose writes are
    /// folded into the file on a thread of their own.
    fn switch_logs(&mut self) -> Result<(), JournalError> {
        let sequence = self.sequence;
        let mut next = self.take_spare()?;
        next.rebase(sequence)?;
        let mut full = std::mem::replace(&mut self.active, next);
        let writes = std::mem::take(&mut self.pending);
        let (db, tables) = (Arc::clone(&self.db), self.tables.clone());
        #[cfg(test)]
        let fail = self.fail_folds;
        let thread = std::thread::Builder::new()
            .name("trexlock-checkpoint".to_owned())
            .spawn(move || {
                yield_cpu_to_the_node();
                #[cfg(test)]
                if fail {
                    let injected = std::io::Error::other("injected fold failure");
                    return Err(storage(tables.path(), injected));
                }
                fold(&db, &tables, &writes, None, sequence)?;
                full.restart(sequence)?;
                Ok(full)
            })
            .map_err(|e| storage(self.tables.path(), e))?;
        self.spare = Spare::Folding(Fold {
            thread: Some(thread),
            path: self.tables.path().to_path_buf(),
        });
        Ok(())
    }

    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if self.failed {
            return Err(JournalError::Closed {
                path: self.path().to_path_buf(),
            });
        }
        let result = op(self);
        self.failed = result.is_err();
        result
    }
}

/// Lowers the calling checkpoint thread's priority (nice +10), so that on
/// a loaded machine a checkpoint takes the CPU the node's event loop
/// leaves instead of preempting it; it has until the next log fills (a few
/// hundred milliseconds under load) and a sync that finds that log full
/// waits for it, which frees the CPU it needs. In twelve alternating pairs
/// of 3-second runs at 64 clients on a 2-vCPU machine: 33 552 against
/// 35 328 ops/s (means), 9 of 12 pairs faster.
fn yield_cpu_to_the_node() {
    // SAFETY: nice() changes nothing but a scheduling priority; on Linux
    // the nice value belongs to the calling thread alone. A failure leaves
    // the priority as it was, which is correct, only slower.
    #[cfg(target_os = "linux")]
    unsafe {
        libc::nice(10);
    }
}

/// Commits `logged` and then `write` to the file in one transaction, as
/// commit `sequence`.
fn fold(
    db: &Database,
    tables: &JournalTables,
    logged: &JournalWrite,
    write: Option<&JournalWrite>,
    sequence: u64,
) -> Result<(), JournalError> {
    let txn = RedbJournal::begin(db, tables)?;
    tables.write(&txn, logged)?;
    if let Some(write) = write {
        tables.write(&txn, write)?;
    }
    tables.set_sequence(&txn, sequence)?;
    txn.commit().map_err(|e| tables.redb_error(e))
}

impl Journal for RedbJournal {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.guarded(|this| {
            this.spare_ready()?;
            let txn = this
                .db
                .begin_read()
                .map_err(|e| this.tables.redb_error(e))?;
            let mut state = this.tables.load(&txn)?;
            state.apply(&this.pending);
            Ok(state)
        })
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        self.guarded(|this| {
            this.reap_fold()?;
            let sequence = next_sequence(this.path(), this.sequence)?;
            let record = match write.snapshot {
                None => Some(this.active.record(sequence, write)?),
                Some(_) => None,
            };
            match record {
                Some(record) if record.len() <= LARGEST_LOGGED => {
                    let record = if this.active.fits(record.len()) {
                        record
                    } else {
                        this.switch_logs()?;
                        this.active.record(sequence, write)?
                    };
                    this.active.append(&record)?;
                    this.pending.merge(write.clone());
                    this.sequence = sequence;
                }
                _ => this.checkpoint(Some(write))?,
            }
            this.mark.record(this.sequence)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trexlock_paxos::{Ballot, LogEntry, NodeId, Value};

    fn write(slot: u64) -> JournalWrite {
        let ballot = Ballot {
            counter: 1,
            node: NodeId(1),
        };
        let value = Value::Batch(vec![vec![slot as u8; 1_000].into()]);
        JournalWrite {
            promised: Some(ballot),
            entries: vec![(slot, LogEntry { ballot, value })],
            committed: Some(slot),
            ..JournalWrite::default()
        }
    }

    /// The journal at `path`, its logs written and synced through the page
    /// cache as where the file system refuses direct writes.
    fn buffered(path: &Path) -> Result<RedbJournal, JournalError> {
        let mut journal = RedbJournal::open(path, JournalIdentity::new("c", NodeId(1)))?;
        journal.active.without_direct();
        if let Spare::Ready(spare) = &mut journal.spare {
            spare.without_direct();
        }
        Ok(journal)
    }

    #[test]
    fn logs_written_without_direct_io_conform() {
        crate::testing::conformance(|| {
            let dir = tempfile::tempdir().unwrap();
            move || buffered(&dir.path().join("journal.redb"))
        });
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn both_logs_append_directly_where_the_file_system_allows() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir.path().join("probe");
        std::fs::write(&probe, [0; 4096]).unwrap();
        let allowed = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&probe)
                .is_ok()
        };
        let path = dir.path().join("journal.redb");
        let journal = RedbJournal::open(&path, JournalIdentity::new("c", NodeId(1))).unwrap();
        assert_eq!(journal.active.is_direct(), allowed);
        let Spare::Ready(spare) = &journal.spare else {
            panic!("a journal just opened has its spare log ready");
        };
        assert_eq!(spare.is_direct(), allowed);
    }

    #[test]
    fn a_failed_fold_fails_the_journal_closed_and_loses_no_acknowledged_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let identity = JournalIdentity::new("c", NodeId(1));
        let mut journal = RedbJournal::open(&path, identity.clone()).unwrap();
        journal.fail_folds = true;
        let mut acknowledged = 0;
        let failure = loop {
            let slot = acknowledged + 1;
            assert!(slot < 10 * CAPACITY / 1_000, "no fold failed");
            match journal.persist(&write(slot)) {
                Ok(()) => acknowledged = slot,
                Err(e) => break e,
            }
        };
        assert!(
            failure.to_string().contains("injected fold failure"),
            "{failure}"
        );
        let after = journal.persist(&write(acknowledged + 1));
        assert!(
            matches!(after, Err(JournalError::Closed { .. })),
            "{after:?}"
        );
        assert!(matches!(journal.load(), Err(JournalError::Closed { .. })));
        drop(journal);

        let state = RedbJournal::open(&path, identity).unwrap().load().unwrap();
        let slots: Vec<u64> = state.entries.keys().copied().collect();
        assert_eq!(slots, (1..=acknowledged).collect::<Vec<_>>());
    }
}
