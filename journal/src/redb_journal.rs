//! The default journal: one redb database file per node.

use crate::ack_mark::{AckMark, refuse_rollback};
use crate::record::next_sequence;
use crate::redb_wal::{CAPACITY, Replayed, Wal};
use crate::tables::{JournalIdentity, JournalTables};
use redb::{Database, Durability, ReadableDatabase, TableHandle, WriteTransaction};
use std::path::Path;
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

/// A [`Journal`] in a redb database file of its own, with a write-ahead
/// log beside it: syncs go through the log, and the log is checkpointed
/// into redb.
///
/// Guarantees: every [`Journal::persist`] is synced to disk and atomic
/// before it returns, however many steps' writes it covers: it is either
/// one checksummed record appended to the write-ahead log and synced
/// (`fdatasync`), or (a write that carries a snapshot, a large one, and
/// whenever the log is full) one redb write transaction committed with
/// [`Durability::Immediate`] that folds in everything the log holds, after
/// which the log starts over.
///
/// Why this keeps durability: a write is acknowledged only once the
/// record holding it, or the redb commit holding it, is synced; the log
/// starts over only after the redb commit that holds everything in it is
/// synced, and its new header names that commit, so the log and the file
/// together always hold every acknowledged write; [`RedbJournal::open`]
/// folds what the log holds into the file before anything else. A log
/// record that fails its checks is taken for a write cut short only when
/// nothing was written after it; otherwise the journal is refused as
/// corrupt (see `redb_wal`), and a log that belongs to another node, or
/// starts after the file's newest commit, is refused too.
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
/// Beside the file live its write-ahead log (the same path with `.wal`
/// appended), which holds the newest writes until they are folded into
/// the file, and its acknowledgement mark (`.acked` appended): a 16-byte
/// record of the newest acknowledged commit, written without a sync after
/// each commit. The mark is how a rollback is told from a normal recovery
/// (see [`RedbJournal::open`]). Both belong with the journal, and are
/// moved, copied or deleted with it; after [`RedbJournal::close`] the log
/// is empty and the file alone holds the journal.
#[derive(Debug)]
pub struct RedbJournal {
    db: Database,
    tables: JournalTables,
    mark: AckMark,
    wal: Wal,
    /// The writes in the log, not yet in the file, merged.
    pending: JournalWrite,
    /// The newest commit, in the log or the file.
    sequence: u64,
    failed: bool,
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
        let db = if fresh {
            crate::remove_if_present(&creating).map_err(|e| tables.redb_error(e))?;
            // A log beside no journal belongs to one deleted with it.
            crate::remove_if_present(&Wal::path_for(path)).map_err(|e| tables.redb_error(e))?;
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create(&creating)
        } else {
            // Without the integrity check redb trusts a cleanly closed file
            // and may panic on one damaged since; with it, damage is an
            // error.
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .set_check_integrity_on_open(true)
                .open(path)
        }
        .map_err(|e| tables.redb_error(e))?;
        let txn = Self::begin(&db, &tables)?;
        let (holds_tables, holds_journal) = {
            let mut names = txn
                .list_tables()
                .map_err(|e| tables.redb_error(e))?
                .peekable();
            let holds_tables = names.peek().is_some();
            (
                holds_tables,
                names.any(|t| t.name() == tables.meta_table_name()),
            )
        };
        // An empty database is one whose creation was interrupted before
        // its first commit: safe to initialise. Anything else without our
        // metadata is somebody else's data.
        if holds_tables && !holds_journal {
            return Err(JournalError::Corrupt {
                path: path.to_path_buf(),
                reason: format!(
                    "a redb database, but not a trexlock journal (no table {})",
                    tables.meta_table_name()
                ),
            });
        }
        tables.create_or_check(&txn, &identity)?;
        let committed = tables.sequence(&txn)?;
        let replayed = if fresh {
            Replayed {
                pending: JournalWrite::default(),
                sequence: committed,
                written: 0,
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
        let wal = Wal::start(path, &identity, replayed.sequence, replayed.written)?;
        mark.record(replayed.sequence)?;
        Ok(Self {
            db,
            tables,
            mark,
            wal,
            pending: JournalWrite::default(),
            sequence: replayed.sequence,
            failed: false,
        })
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        self.tables.path()
    }

    /// Folds the write-ahead log into the file and closes it, reporting any
    /// failure that dropping would ignore. Dropping the journal instead
    /// leaves the log for the next open to fold in.
    pub fn close(mut self) -> Result<(), JournalError> {
        if !self.failed && !self.pending.is_empty() {
            self.checkpoint(None)?;
        }
        self.db.close().map_err(|e| self.tables.redb_error(e))
    }

    fn begin(db: &Database, tables: &JournalTables) -> Result<WriteTransaction, JournalError> {
        let mut txn = db.begin_write().map_err(|e| tables.redb_error(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| tables.redb_error(e))?;
        Ok(txn)
    }

    /// Commits to the file, in one transaction, the writes in the log and
    /// then `write` (as the next commit), and starts the log over.
    fn checkpoint(&mut self, write: Option<&JournalWrite>) -> Result<(), JournalError> {
        let sequence = match write {
            Some(_) => next_sequence(self.path(), self.sequence)?,
            None => self.sequence,
        };
        let txn = Self::begin(&self.db, &self.tables)?;
        self.tables.write(&txn, &self.pending)?;
        if let Some(write) = write {
            self.tables.write(&txn, write)?;
        }
        self.tables.set_sequence(&txn, sequence)?;
        txn.commit().map_err(|e| self.tables.redb_error(e))?;
        self.pending = JournalWrite::default();
        self.sequence = sequence;
        self.wal.restart(sequence)
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

impl Journal for RedbJournal {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.guarded(|this| {
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
            let sequence = next_sequence(this.path(), this.sequence)?;
            let record = match write.snapshot {
                None => Some(this.wal.record(sequence, write)?),
                Some(_) => None,
            };
            match record {
                Some(record) if record.len() <= LARGEST_LOGGED => {
                    let record = if this.wal.fits(record.len()) {
                        record
                    } else {
                        this.checkpoint(None)?;
                        this.wal.record(sequence, write)?
                    };
                    this.wal.append(&record)?;
                    this.pending.merge(write.clone());
                    this.sequence = sequence;
                }
                _ => this.checkpoint(Some(write))?,
            }
            this.mark.record(this.sequence)
        })
    }
}
