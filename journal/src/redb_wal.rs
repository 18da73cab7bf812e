//! The redb journal's write-ahead logs: two files beside the journal (its
//! path with `.wal` and `.wal2` appended) that make each sync one appended
//! record instead of one redb commit.
//!
//! Why: a redb commit with immediate durability rewrites the pages on the
//! path to every changed key, its system tables (allocated and freed pages)
//! and its header, then syncs; on this project's disk and load it costs
//! about twice a small appended record and its sync, and most of the extra
//! time is redb's own CPU, which no table layout removes. So every sync
//! appends the write to the active log. Once the active log is full the
//! other one (empty) takes over, and the full one's writes are folded into
//! the redb file in one transaction (a checkpoint) on a thread of its own,
//! after which that log is emptied and waits for its next turn. Why two:
//! a checkpoint of a full log takes 10-30 ms of redb work, about three
//! times a second under load, and with one log every sync waited for it.
//!
//! Layout of each log: a header of [`HEADER_LEN`] bytes, then records
//! framed as the log journal frames them (`crate::framing`), each payload
//! a postcard-encoded `(sequence, write)`. The header holds the magic
//! bytes, the format version, the salt of the records' frame checks, the
//! owner's check (CRC-32 of the journal's identity) and the base: the
//! commit sequence the log's records start after. The log is written whole
//! (zeros) when created, and when it is emptied its header takes a new salt
//! and is synced before the old records are zeroed, so that past its
//! records the log is zeros, as the log journal's file is. A log takes over
//! only empty, with its base rewritten to the newest commit.
//!
//! Reading: each log is read on its own, then the two are replayed in the
//! order of their bases: every log must start at or before the newest
//! commit read so far (the redb file's, then the first log's), or commits
//! are missing and the journal is refused as rolled back. Within a log the
//! log journal's rule holds: an unreadable record counts as a write cut
//! short by a crash (never acknowledged: if the mark says it was, the
//! journal is refused as rolled back) only if no whole record follows it
//! anywhere in the log and, if its length is intact, nothing was written
//! past the end that length gives; anything else is damage, refused as
//! corrupt with the log left as it is. So a damaged record that was
//! acknowledged is never dropped silently, even when the mark lags behind
//! after a power cut. The header is one small write at the start of the
//! file, which no crash tears: a header that fails its check is damage too.

use crate::direct_append::DirectAppender;
use crate::framing::{frame, next_record, torn_or_damaged, written_len};
use crate::record::{WriteOwned, WriteRef, corrupt, decode, storage};
use crate::tables::JournalIdentity;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use trexlock_paxos::{JournalError, JournalWrite};

const MAGIC: &[u8; 8] = b"TRXWAL\r\n";
/// The logs' format. Version 2 (two logs) reads version 1's single log,
/// which has the same layout; a version 1 build refuses a version 2 log,
/// since it would not read the second log and could miss writes in it.
const WAL_VERSION: u32 = 2;
/// The oldest format this build reads.
const OLDEST_WAL_VERSION: u32 = 1;
/// Magic, version, salt, owner, base, and the header's own check.
pub(crate) const HEADER_LEN: usize = 8 + 4 + 4 + 4 + 8 + 4;
/// The log's size, written whole when it is created so that an appended
/// record never has to extend the file (and its sync never has to flush
/// the file's size or allocate blocks). A fuzzing build, which creates
/// thousands of journals, keeps it small.
pub(crate) const CAPACITY: u64 = if cfg!(fuzzing) {
    16 * 1024
} else {
    1024 * 1024
};

// A direct append writes whole blocks, the last one ending at most at the
// log's end.
const _: () = assert!(CAPACITY.is_multiple_of(crate::direct_append::BLOCK as u64));

/// How many logs a journal keeps, and the suffix each one's file name
/// takes after the journal's.
pub(crate) const LOG_SUFFIXES: [&str; 2] = [".wal", ".wal2"];

/// One open log of a redb journal.
#[derive(Debug)]
pub(crate) struct Wal {
    file: File,
    path: PathBuf,
    owner: u32,
    salt: u32,
    /// Where the next record goes.
    end: u64,
    /// The log's handle for direct appends, where the file system takes
    /// them (see [`crate::direct_append`]); otherwise records are written
    /// through `file` and synced.
    direct: Option<DirectAppender>,
}

/// What a journal's logs hold beyond the redb file's newest commit.
pub(crate) struct Replayed {
    /// The writes after that commit, in order, merged.
    pub(crate) pending: JournalWrite,
    /// The sequence of the newest of them, or the redb file's own if none.
    pub(crate) sequence: u64,
    /// What each log was found to hold, for starting it over.
    pub(crate) found: [Found; LOG_SUFFIXES.len()],
}

/// What starting a log over needs to know of the log as read.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Found {
    /// Where its non-zero bytes end: what starting it over zeroes.
    pub(crate) written: usize,
    /// The salt in its header (0 if it had none), which starting it over
    /// must not reuse.
    pub(crate) salt: u32,
}

/// The records of one log as read.
struct LogRead {
    base: u64,
    /// In order: `base + 1`, `base + 2`, ...
    records: Vec<(u64, WriteOwned)>,
}

impl Wal {
    /// Log number `log` of the journal at `journal`.
    pub(crate) fn path_for(journal: &Path, log: usize) -> PathBuf {
        crate::sibling(journal, LOG_SUFFIXES[log])
    }

    /// Reads the logs of the journal at `journal`, whose redb file's newest
    /// commit is `committed`: the writes they hold after that commit. An
    /// absent or empty log holds none. Fails with
    /// [`JournalError::RolledBack`] if a log starts after the newest
    /// commit before it (the redb file lost a checkpoint, or a log was
    /// lost), [`JournalError::WrongOwner`] if a log belongs to another
    /// node, [`JournalError::Corrupt`] if one is damaged.
    pub(crate) fn replay(
        journal: &Path,
        identity: &JournalIdentity,
        committed: u64,
    ) -> Result<Replayed, JournalError> {
        let mut replayed = Replayed {
            pending: JournalWrite::default(),
            sequence: committed,
            found: [Found::default(); LOG_SUFFIXES.len()],
        };
        let mut logs = Vec::new();
        for (log, found) in replayed.found.iter_mut().enumerate() {
            if let Some(read) = Self::read(journal, log, identity, found)? {
                logs.push(read);
            }
        }
        logs.sort_by_key(|log| log.base);
        for log in logs {
            if log.base > replayed.sequence {
                return Err(JournalError::RolledBack {
                    path: journal.to_path_buf(),
                    acknowledged: log.base,
                    found: replayed.sequence,
                });
            }
            for (sequence, write) in log.records {
                if sequence > replayed.sequence {
                    replayed.pending.merge(JournalWrite {
                        promised: write.promised,
                        entries: write.entries,
                        committed: write.committed,
                        snapshot: write.snapshot,
                        truncate: write.truncate,
                    });
                    replayed.sequence = sequence;
                }
            }
        }
        Ok(replayed)
    }

    /// Reads log number `log` of the journal at `journal`, if it exists
    /// and is not empty, and records in `found` where its non-zero bytes
    /// end and its salt.
    fn read(
        journal: &Path,
        log: usize,
        identity: &JournalIdentity,
        found: &mut Found,
    ) -> Result<Option<LogRead>, JournalError> {
        let path = Self::path_for(journal, log);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(storage(&path, e)),
        };
        found.written = written_len(&bytes);
        if bytes.is_empty() {
            return Ok(None);
        }
        let header = Header::read(&path, &bytes)?;
        found.salt = header.salt;
        if header.owner != owner_check(identity) {
            return Err(JournalError::WrongOwner {
                path,
                found: "another node (the owner check of its write-ahead log differs)".to_owned(),
                expected: identity.to_string(),
            });
        }
        let mut read = LogRead {
            base: header.base,
            records: Vec::new(),
        };
        let mut at = HEADER_LEN;
        while let Some((payload, next)) = next_record(&bytes, at, header.salt) {
            let (sequence, write): (u64, WriteOwned) =
                decode(&path, payload, &format!("the record at byte {at}"))?;
            let expected = header.base.checked_add(1 + read.records.len() as u64);
            if Some(sequence) != expected {
                return Err(corrupt(
                    &path,
                    format!(
                        "the record at byte {at} is commit {sequence}, not the one after {}",
                        sequence_before(header.base, read.records.len())
                    ),
                ));
            }
            read.records.push((sequence, write));
            at = next;
        }
        if found.written > at
            && let Some(damage) = torn_or_damaged(&bytes, at, found.written, header.salt)
        {
            return Err(corrupt(&path, damage));
        }
        Ok(Some(read))
    }

    /// Starts log number `log` of the journal at `journal` anew, empty
    /// after commit `base` of the redb file (which must be durable and hold
    /// everything the log held), creating the file if it is absent;
    /// `found` is what [`Wal::replay`] found in it.
    pub(crate) fn start(
        journal: &Path,
        log: usize,
        identity: &JournalIdentity,
        base: u64,
        found: Found,
    ) -> Result<Self, JournalError> {
        let path = Self::path_for(journal, log);
        let io = |e| storage(&path, e);
        let existing = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) if file.metadata().map_err(io)?.len() >= CAPACITY => Some(file),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let owner = owner_check(identity);
        let (file, salt) = match existing {
            Some(file) => (file, found.salt),
            None => {
                // Built whole, header included, beside its name, so that
                // the log is always either absent or a full-size empty
                // log: a crash before the first header written in place
                // must not leave a log without one.
                let creating = crate::sibling(&path, ".creating");
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&creating)
                    .map_err(io)?;
                let header = Header {
                    salt: fastrand::u32(..),
                    owner,
                    base,
                };
                let mut bytes = vec![0; CAPACITY as usize];
                bytes[..HEADER_LEN].copy_from_slice(&header.encode());
                file.write_all_at(&bytes, 0)
                    .and_then(|()| file.sync_all())
                    .map_err(io)?;
                std::fs::rename(&creating, &path).map_err(io)?;
                crate::sync_directory_of(&path).map_err(io)?;
                (file, header.salt)
            }
        };
        let direct = DirectAppender::open(&path);
        let mut wal = Self {
            file,
            path,
            owner,
            salt,
            end: (found.written as u64).clamp(HEADER_LEN as u64, CAPACITY),
            direct,
        };
        wal.restart(base)?;
        Ok(wal)
    }

    /// Empties the log: from now on it holds the writes after commit
    /// `base` of the redb file, which must be durable and hold everything
    /// the log held.
    ///
    /// The new header (a new salt) is synced before the old records are
    /// zeroed: whatever part of the zeroing a crash loses, what is left
    /// can no longer pass for records. The zeros are synced too, so that
    /// the log can take over (see [`Wal::rebase`]) with one small sync.
    pub(crate) fn restart(&mut self, base: u64) -> Result<(), JournalError> {
        let mut salt = fastrand::u32(..);
        if salt == self.salt {
            salt = salt.wrapping_add(1);
        }
        let header = Header {
            salt,
            owner: self.owner,
            base,
        };
        let used = (self.end as usize).saturating_sub(HEADER_LEN);
        self.forget_direct();
        self.file
            .write_all_at(&header.encode(), 0)
            .and_then(|()| self.file.sync_data())
            .and_then(|()| self.file.write_all_at(&vec![0; used], HEADER_LEN as u64))
            .and_then(|()| self.file.sync_data())
            .map_err(|e| storage(&self.path, e))?;
        self.salt = salt;
        self.end = HEADER_LEN as u64;
        Ok(())
    }

    /// Makes this log, empty, the one that holds the writes after commit
    /// `base` (the newest commit in the other log), so that it can take
    /// over: its header names the new base (same salt: no record under it
    /// is left) and is synced.
    pub(crate) fn rebase(&mut self, base: u64) -> Result<(), JournalError> {
        debug_assert_eq!(self.end, HEADER_LEN as u64, "only an empty log takes over");
        let header = Header {
            salt: self.salt,
            owner: self.owner,
            base,
        };
        self.forget_direct();
        self.file
            .write_all_at(&header.encode(), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| storage(&self.path, e))
    }

    /// Whether records go to the disk directly (for tests).
    #[cfg(all(test, target_os = "linux"))]
    pub(crate) fn is_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// From now on records are written and synced through `file` (for
    /// tests of that path on a file system that takes direct writes).
    #[cfg(test)]
    pub(crate) fn without_direct(&mut self) {
        self.direct = None;
    }

    /// The log is about to be written through `file`: a block kept for
    /// direct appends would be stale.
    fn forget_direct(&mut self) {
        if let Some(direct) = &mut self.direct {
            direct.forget();
        }
    }

    /// The record of `write` as commit `sequence`, framed for the log's
    /// current round (a record framed before the log starts over must be
    /// framed again).
    pub(crate) fn record(
        &self,
        sequence: u64,
        write: &JournalWrite,
    ) -> Result<Vec<u8>, JournalError> {
        let record = WriteRef {
            promised: &write.promised,
            entries: &write.entries,
            committed: &write.committed,
            snapshot: &write.snapshot,
            truncate: &write.truncate,
        };
        frame(&self.path, self.salt, &(sequence, record))
    }

    /// Whether a record of `len` bytes fits behind the records already in
    /// the log.
    pub(crate) fn fits(&self, len: usize) -> bool {
        self.end + len as u64 <= CAPACITY
    }

    /// Appends `record` (from [`Wal::record`], framed for this round) and
    /// syncs it: when this returns, the write it holds is durable. It is
    /// written directly where the file system allows (one write, synced
    /// in the same call), else written and synced with `fdatasync`.
    pub(crate) fn append(&mut self, record: &[u8]) -> Result<(), JournalError> {
        if !self.fits(record.len()) {
            return Err(storage(
                &self.path,
                std::io::Error::other(format!(
                    "a record of {} bytes does not fit in the write-ahead log",
                    record.len()
                )),
            ));
        }
        if let Some(direct) = &mut self.direct {
            match direct.append(&self.file, self.end, record) {
                Ok(()) => {
                    self.end += record.len() as u64;
                    return Ok(());
                }
                // Direct writes refused: buffered ones from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.direct = None,
                Err(e) => return Err(storage(&self.path, e)),
            }
        }
        self.file
            .write_all_at(record, self.end)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| storage(&self.path, e))?;
        self.end += record.len() as u64;
        Ok(())
    }
}

/// The log's first bytes.
struct Header {
    salt: u32,
    owner: u32,
    base: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[..8].copy_from_slice(MAGIC);
        bytes[8..12].copy_from_slice(&WAL_VERSION.to_le_bytes());
        bytes[12..16].copy_from_slice(&self.salt.to_le_bytes());
        bytes[16..20].copy_from_slice(&self.owner.to_le_bytes());
        bytes[20..28].copy_from_slice(&self.base.to_le_bytes());
        let check = crc32fast::hash(&bytes[..28]);
        bytes[28..].copy_from_slice(&check.to_le_bytes());
        bytes
    }

    fn read(path: &Path, bytes: &[u8]) -> Result<Self, JournalError> {
        let damaged = |what: &str| {
            corrupt(
                path,
                format!(
                    "the write-ahead log's header {what}; the journal's newest writes are there"
                ),
            )
        };
        let Some(header) = bytes.get(..HEADER_LEN) else {
            return Err(damaged("is cut short"));
        };
        if &header[..8] != MAGIC {
            return Err(damaged("has no magic bytes"));
        }
        let word = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        if crc32fast::hash(&header[..28]) != word(28) {
            return Err(damaged("fails its check"));
        }
        if !(OLDEST_WAL_VERSION..=WAL_VERSION).contains(&word(8)) {
            return Err(JournalError::UnsupportedVersion {
                path: path.to_path_buf(),
                found: word(8),
                supported: WAL_VERSION,
            });
        }
        let mut base = [0u8; 8];
        base.copy_from_slice(&header[20..28]);
        Ok(Self {
            salt: word(12),
            owner: word(16),
            base: u64::from_le_bytes(base),
        })
    }
}

/// The commit before the record that follows `records` records of a log
/// starting after `base`, for the error that names it.
fn sequence_before(base: u64, records: usize) -> String {
    match base.checked_add(records as u64) {
        Some(before) => before.to_string(),
        None => format!("{base} plus {records}, past the largest commit number"),
    }
}

/// Tells a log of this node's journal from another's.
fn owner_check(identity: &JournalIdentity) -> u32 {
    crc32fast::hash(identity.to_string().as_bytes())
}
