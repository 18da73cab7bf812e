//! The append-only journal: one file of checksummed records, one record and
//! one `fdatasync` per commit.
//!
//! Why it exists beside redb: a journal without redb, whose whole state is
//! one file of records; a sync appends one record of a few hundred bytes,
//! as the redb journal's write-ahead log does, and compaction rewrites the
//! state into a new file where the redb journal folds its log into redb.
//!
//! Layout: the magic bytes, then records, each `[length u32 LE][CRC-32 of
//! the payload u32 LE][frame check u32 LE][payload]`, the payload a
//! postcard-encoded [`Record`]. The frame check is the CRC-32 of the
//! file's salt and the first eight bytes, so that a damaged length is
//! recognised rather than trusted. The salt is a random number chosen when
//! the file is written whole and kept in its header (whose own frame check
//! uses salt 0): a client's value that happens to, or is made to, contain
//! the bytes of a record cannot pass for one. The first record names the
//! format version, the owner and the salt; the second may hold the whole
//! state (written by compaction); every other one is one [`JournalWrite`],
//! numbered. The file is extended in large steps and the unused rest is
//! zeros, so that a sync rarely has to flush the file's size.
//!
//! Recovery reads records up to the first that is incomplete or fails a
//! check. That is the normal trace of a write cut short by a crash, and it
//! is also what damage looks like. A write cut short is the last thing
//! ever written to the file (one write is in flight at a time), so:
//! - if a whole record follows the unreadable one anywhere, that is damage,
//!   refused as corrupt, whatever the mark says;
//! - if the unreadable record's frame check passes, its length is true, and
//!   bytes beyond the end it gives are damage too;
//! - otherwise it may be a write cut short (pages reach the disk in any
//!   order, so any part of it may be missing). If the acknowledgement mark
//!   says it was acknowledged, the journal is refused as rolled back; if
//!   not, its bytes are zeroed, so that they can never be misread once new
//!   records follow.
//!
//! Nothing that might hold a record after the unreadable one is ever
//! zeroed: such a record would have been found.
//!
//! Compaction: once [`COMPACT_AT`] bytes of records have been appended
//! since the file was last written whole, it is rewritten as the header
//! plus the whole state in a new file, which is synced and renamed over
//! the old one. Each compaction writes the state once per [`COMPACT_AT`]
//! bytes of new records, however large the state is.

use crate::ack_mark::{AckMark, refuse_rollback};
use crate::framing::{MAX_RECORD, frame, next_record, torn_or_damaged, written_len};
use crate::record::{
    WriteOwned, WriteRef, check_owner, check_version, corrupt, decode, next_sequence, storage,
};
use crate::tables::JournalIdentity;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use trexlock_paxos::{
    Ballot, Journal, JournalError, JournalState, JournalWrite, LogEntry, NodeId, Slot, Snapshot,
};

/// The first bytes of every log journal.
const MAGIC: &[u8; 8] = b"TRXLOG\r\n";
/// The record format this build reads and writes.
/// Version 1 checksummed only the payload; its files are refused by
/// version.
pub const LOG_FORMAT_VERSION: u32 = 2;
/// The file grows in steps of this many bytes. A fuzzing build (which
/// creates thousands of journals a second) uses one page.
const GROW_BY: u64 = if cfg!(fuzzing) { 4096 } else { 4 * 1024 * 1024 };
/// Appended to the journal's name while a compaction builds its new file.
const COMPACTING: &str = ".compacting";
/// Appending this many bytes of records triggers a compaction.
pub const COMPACT_AT: u64 = 8 * 1024 * 1024;
#[derive(Serialize, Deserialize)]
enum Record<W, S> {
    Header {
        version: u32,
        cluster_id: String,
        node_id: NodeId,
        /// A whole-state record follows (the file was compacted): it was
        /// synced with the header, so it can only be missing by damage.
        state_follows: bool,
        /// Goes into the frame check of every later record.
        salt: u32,
    },
    Write {
        sequence: u64,
        write: W,
    },
    State {
        sequence: u64,
        state: S,
    },
}

/// A [`JournalState`] as recorded, borrowed for encoding.
#[derive(Serialize)]
struct StateRef<'a> {
    promised: &'a Ballot,
    committed: &'a Slot,
    snapshot: &'a Option<Snapshot>,
    truncated: &'a Slot,
    entries: Vec<(&'a Slot, &'a LogEntry)>,
}

/// A [`JournalState`] as recorded, decoded.
#[derive(Deserialize)]
struct StateOwned {
    promised: Ballot,
    committed: Slot,
    snapshot: Option<Snapshot>,
    truncated: Slot,
    entries: Vec<(Slot, LogEntry)>,
}

type Encoded<'a> = Record<WriteRef<'a>, StateRef<'a>>;
type Decoded = Record<WriteOwned, StateOwned>;

/// A [`Journal`] in an append-only file of its own.
///
/// Guarantees: every [`Journal::persist`] appends one checksummed record
/// and syncs it (`fdatasync`) before it returns, however many steps' writes
/// it covers, so it is durable and atomic. A file is only ever opened as
/// the journal of the node it was created for, in the format version it
/// records, by one process at a time; a damaged file is reported as
/// [`JournalError::Corrupt`], never reset, and a file older than what the
/// node has acknowledged is [`JournalError::RolledBack`], never trusted.
/// After any error the journal answers every call with
/// [`JournalError::Closed`]: the node must stop.
///
/// Like [`crate::RedbJournal`] it keeps an acknowledgement mark beside the
/// file (the same path with `.acked` appended), which belongs with it. It
/// holds the journal's state in memory (the replica does too), and the file
/// stays below about [`COMPACT_AT`] bytes plus twice the state's size.
///
/// ```
/// use trexlock_journal::{Journal, JournalIdentity, JournalWrite, LogJournal};
/// use trexlock_paxos::{Ballot, NodeId};
///
/// let dir = tempfile::tempdir().unwrap();
/// let path = dir.path().join("journal.log");
/// let identity = JournalIdentity::new("orders", NodeId(1));
/// let mut journal = LogJournal::open(&path, identity.clone()).unwrap();
/// let promise = Ballot { counter: 7, node: NodeId(2) };
/// journal.persist(&JournalWrite { promised: Some(promise), ..JournalWrite::default() }).unwrap();
/// drop(journal);
///
/// let mut journal = LogJournal::open(&path, identity).unwrap();
/// assert_eq!(journal.load().unwrap().promised, promise);
/// ```
#[derive(Debug)]
pub struct LogJournal {
    file: File,
    path: PathBuf,
    identity: JournalIdentity,
    mark: AckMark,
    state: JournalState,
    sequence: u64,
    /// The frame checks' salt, from the header.
    salt: u32,
    /// Where the next record goes.
    end: u64,
    /// Where the records end that were written whole (header and state).
    base: u64,
    /// The file's length: records, then zeros.
    len: u64,
    failed: bool,
}

impl LogJournal {
    /// Opens the journal at `path` for `identity`, creating it if the file
    /// is absent or empty.
    ///
    /// Reads the whole file. Fails with [`JournalError::WrongOwner`] if the
    /// journal belongs to another cluster or node,
    /// [`JournalError::UnsupportedVersion`] if it records another format
    /// version (a version 1 file included), [`JournalError::Corrupt`] if the
    /// file is damaged (an unreadable record with a whole one after it, see
    /// the module's documentation) or is not a log journal, or its mark is
    /// not a mark, [`JournalError::RolledBack`] if it lacks a record that
    /// was acknowledged, and [`JournalError::Storage`]
    /// if another process has it open. A new file (absent or empty before
    /// this open) is accepted whatever its mark says: deleting only the
    /// journal asks for an empty one, whose replica starts as a learner.
    pub fn open(path: impl AsRef<Path>, identity: JournalIdentity) -> Result<Self, JournalError> {
        let path = path.as_ref();
        let io = |e: std::io::Error| storage(path, e);
        let existing = match OpenOptions::new().read(true).write(true).open(path) {
            Ok(file) if file.metadata().map_err(io)?.len() > 0 => Some(file),
            Ok(_) => None,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        let Some(mut file) = existing else {
            // A new journal, whatever its mark says: deleting only the
            // journal asks for an empty one.
            let (mut mark, _) = AckMark::open(path)?;
            let salt = fastrand::u32(..);
            let (file, end, len) =
                replace_with_new_file(path, ".creating", &header(path, &identity, false, salt)?)?;
            mark.record(0)?;
            return Ok(Self {
                file,
                path: path.to_path_buf(),
                identity,
                mark,
                state: JournalState::default(),
                sequence: 0,
                salt,
                end,
                base: end,
                len,
                failed: false,
            });
        };
        lock(&file, path)?;
        // A compaction that never finished left this; the journal itself is
        // whole without it.
        crate::remove_if_present(&crate::sibling(path, COMPACTING)).map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let len = bytes.len() as u64;
        let read = read_records(path, &bytes, &identity)?;
        // Damage first: a damaged record is corrupt whether or not the
        // mark also finds commits missing.
        if let Some(damage) = read.damage {
            return Err(corrupt(path, damage));
        }
        let (mut mark, acknowledged) = AckMark::open(path)?;
        refuse_rollback(path, acknowledged, read.sequence)?;
        let end = read.end as u64;
        if read.written > read.end {
            // A write cut short, never acknowledged (the mark vouches for
            // it): zero it, so that no later record can be read as its
            // continuation.
            file.write_all_at(&vec![0; read.written - read.end], end)
                .map_err(io)?;
        }
        // What was read may so far be only in the page cache (the last
        // process may have died before its sync returned): make it durable
        // before the mark vouches for it.
        file.sync_data().map_err(io)?;
        mark.record(read.sequence)?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            identity,
            mark,
            state: read.state,
            sequence: read.sequence,
            salt: read.salt,
            end,
            base: read.base as u64,
            len,
            failed: false,
        })
    }

    /// The file this journal lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the file as the header and the whole state.
    fn compact(&mut self) -> Result<(), JournalError> {
        let salt = fastrand::u32(..);
        let mut records = header(&self.path, &self.identity, true, salt)?;
        records.extend(frame(
            &self.path,
            salt,
            &Encoded::State {
                sequence: self.sequence,
                state: StateRef {
                    promised: &self.state.promised,
                    committed: &self.state.committed,
                    snapshot: &self.state.snapshot,
                    truncated: &self.state.truncated,
                    entries: self.state.entries.iter().collect(),
                },
            },
        )?);
        let (file, end, len) = replace_with_new_file(&self.path, COMPACTING, &records)?;
        self.file = file;
        self.salt = salt;
        (self.end, self.base, self.len) = (end, end, len);
        Ok(())
    }

    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Self) -> Result<T, JournalError>,
    ) -> Result<T, JournalError> {
        if self.failed {
            return Err(JournalError::Closed {
                path: self.path.clone(),
            });
        }
        let result = op(self);
        self.failed = result.is_err();
        result
    }
}

impl Journal for LogJournal {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.guarded(|this| Ok(this.state.clone()))
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        self.guarded(|this| {
            let sequence = next_sequence(&this.path, this.sequence)?;
            let record = frame(
                &this.path,
                this.salt,
                &Encoded::Write {
                    sequence,
                    write: WriteRef {
                        promised: &write.promised,
                        entries: &write.entries,
                        committed: &write.committed,
                        snapshot: &write.snapshot,
                        truncate: &write.truncate,
                    },
                },
            )?;
            let io = |e| storage(&this.path, e);
            let end = this.end + record.len() as u64;
            if end > this.len {
                let len = end.next_multiple_of(GROW_BY);
                this.file.set_len(len).map_err(io)?;
                this.len = len;
            }
            this.file
                .write_all_at(&record, this.end)
                .and_then(|()| this.file.sync_data())
                .map_err(io)?;
            this.end = end;
            this.sequence = sequence;
            this.state.apply(write);
            this.mark.record(sequence)?;
            if this.end > this.base + COMPACT_AT {
                this.compact()?;
            }
            Ok(())
        })
    }
}

/// Locks `file` for this process, or says who holds it.
fn lock(file: &File, path: &Path) -> Result<(), JournalError> {
    match file.try_lock() {
        Ok(()) => Ok(()),
        Err(TryLockError::WouldBlock) => Err(storage(
            path,
            std::io::Error::other("the journal is open in another process"),
        )),
        Err(TryLockError::Error(e)) => Err(storage(path, e)),
    }
}

/// Builds a new journal file holding `records` beside `path` (its name
/// with `suffix` appended), syncs it and renames it over `path`, so that
/// `path` always holds a whole journal, the old one or the new. Returns
/// the new file, locked, where its next record goes, and its length.
fn replace_with_new_file(
    path: &Path,
    suffix: &str,
    records: &[u8],
) -> Result<(File, u64, u64), JournalError> {
    let io = |e| storage(path, e);
    let temporary = crate::sibling(path, suffix);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&temporary)
        .map_err(io)?;
    lock(&file, path)?;
    file.set_len(0).map_err(io)?;
    let (end, len) = write_fresh_file(&file, records).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)?;
    crate::sync_directory_of(path).map_err(io)?;
    Ok((file, end, len))
}

/// The header record of a file whose later records are framed with `salt`.
/// Its own frame check uses salt 0: it is read before the salt is known.
fn header(
    path: &Path,
    identity: &JournalIdentity,
    state_follows: bool,
    salt: u32,
) -> Result<Vec<u8>, JournalError> {
    frame(
        path,
        0,
        &Encoded::Header {
            version: LOG_FORMAT_VERSION,
            cluster_id: identity.cluster_id.clone(),
            node_id: identity.node_id,
            state_follows,
            salt,
        },
    )
}

/// Writes the magic and `records` at the start of `file`, preallocates,
/// and syncs; returns where the next record goes and the file's length.
fn write_fresh_file(file: &File, records: &[u8]) -> std::io::Result<(u64, u64)> {
    let mut start = MAGIC.to_vec();
    start.extend_from_slice(records);
    let end = start.len() as u64;
    let len = end.next_multiple_of(GROW_BY);
    file.set_len(len)?;
    file.write_all_at(&start, 0)?;
    file.sync_all()?;
    Ok((end, len))
}

/// What the records of a file add up to.
struct Replayed {
    /// Where the header and any whole-state record end.
    base: usize,
    state: JournalState,
    sequence: u64,
    salt: u32,
    /// Where the readable records end.
    end: usize,
    /// Where the non-zero bytes end: beyond `end` only if a record is cut
    /// short or damaged.
    written: usize,
    /// Why the bytes after `end` cannot be a write cut short, if they
    /// cannot.
    damage: Option<String>,
}

/// The start of every header record of every version: the enum variant
/// (0, the header) and the format version, both postcard varints. Read
/// before the rest, which another version may lay out differently.
#[derive(Deserialize)]
struct VersionPrefix {
    variant: u32,
    version: u32,
}

/// Replays a log journal's bytes: its header (refused if it is not this
/// node's journal of a supported version), then its records in order.
fn read_records(
    path: &Path,
    bytes: &[u8],
    identity: &JournalIdentity,
) -> Result<Replayed, JournalError> {
    let LogHeader {
        state_follows,
        salt,
        end: mut at,
    } = read_header(path, bytes, identity)?;
    let mut read = Replayed {
        base: at,
        state: JournalState::default(),
        sequence: 0,
        salt,
        end: at,
        written: written_len(bytes),
        damage: None,
    };
    let mut index = 1;
    while let Some((payload, next)) = next_record(bytes, at, salt) {
        let record: Decoded = decode(path, payload, &format!("the record at byte {at}"))?;
        match (index, record) {
            (1, Record::State { sequence, state }) if state_follows => {
                read.base = next;
                read.sequence = sequence;
                read.state = JournalState {
                    promised: state.promised,
                    committed: state.committed,
                    snapshot: state.snapshot,
                    truncated: state.truncated,
                    entries: state.entries.into_iter().collect(),
                };
            }
            (i, Record::Write { sequence, write })
                if Some(sequence) == read.sequence.checked_add(1) && (i > 1 || !state_follows) =>
            {
                read.sequence = sequence;
                read.state.apply(&JournalWrite {
                    promised: write.promised,
                    entries: write.entries,
                    committed: write.committed,
                    snapshot: write.snapshot,
                    truncate: write.truncate,
                });
            }
            (_, _) => {
                return Err(corrupt(
                    path,
                    format!("the record at byte {at} is out of order"),
                ));
            }
        }
        index += 1;
        at = next;
        read.end = at;
    }
    if state_follows && index == 1 {
        return Err(corrupt(
            path,
            format!("the compacted state at byte {at} is unreadable"),
        ));
    }
    if read.written > at {
        read.damage = torn_or_damaged(bytes, at, read.written, salt);
    }
    Ok(read)
}

/// Reads and checks the header record at the start of `bytes`.
fn read_header(
    path: &Path,
    bytes: &[u8],
    identity: &JournalIdentity,
) -> Result<LogHeader, JournalError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt(
            path,
            "not a trexlock log journal (no magic bytes at the start)".to_owned(),
        ));
    }
    let at = MAGIC.len();
    let unreadable_header = || corrupt(path, "the header record is unreadable".to_owned());
    let (payload, next) = next_record(bytes, at, 0)
        .or_else(|| version_1_record(bytes, at))
        .ok_or_else(unreadable_header)?;
    match postcard::take_from_bytes::<VersionPrefix>(payload) {
        Ok((
            VersionPrefix {
                variant: 0,
                version,
            },
            _,
        )) => {
            check_version(path, version, LOG_FORMAT_VERSION)?;
        }
        _ => return Err(corrupt(path, "the first record is not a header".to_owned())),
    }
    let Decoded::Header {
        cluster_id,
        node_id,
        state_follows,
        salt,
        ..
    } = decode(path, payload, "the header record")?
    else {
        return Err(corrupt(path, "the first record is not a header".to_owned()));
    };
    check_owner(path, &JournalIdentity::new(cluster_id, node_id), identity)?;
    Ok(LogHeader {
        state_follows,
        salt,
        end: next,
    })
}

/// What a log's header says about the records after it.
struct LogHeader {
    /// The first record after it is the compacted state.
    state_follows: bool,
    /// The salt every later record's check word is seeded with.
    salt: u32,
    /// Where the header record ends.
    end: usize,
}

/// The record at `at` as format version 1 framed it (`[length][CRC-32 of
/// the payload][payload]`): read only to refuse such a file by its version.
fn version_1_record(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let header = bytes.get(at..at.checked_add(8)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let start = at + 8;
    let payload = bytes.get(start..start + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, start + len))
}
