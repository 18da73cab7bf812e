//! The acknowledgement mark: a small file beside a journal recording the
//! sequence number of the newest commit the journal has acknowledged, so
//! that a journal which comes back older than that is refused instead of
//! trusted.
//!
//! Why it exists: a journal recovers from a damaged newest commit by
//! dropping it (redb, with one-phase commits, falls back to the previous
//! commit; the log journal stops at its last readable record). That is
//! right after a power cut in the middle of a commit nobody was told about,
//! and wrong after damage to a commit that was acknowledged: the node would
//! forget a promise or vote it gave. Nothing inside the file can tell the two apart, since
//! the evidence is the lost commit itself; this mark, written only after a
//! commit has returned, can.
//!
//! The mark is written without a sync, and only after the commit it names
//! is durable (after each commit's sync; on open, after the journal has
//! been synced, since what an open reads may so far be only in the page
//! cache). So a power cut can make it lag and miss a rollback, but it
//! never reports one that did not happen.
//!
//! What its bytes mean, since a power cut can leave an unsynced file
//! empty, zero-filled or (rarely) torn while the journal beside it is fine:
//! - absent, empty, or 16 bytes that fail the check word (zeros, a torn
//!   write): it records nothing, exactly as if it lagged all the way; the
//!   journal is opened on its own checks and the mark rewritten;
//! - 16 bytes that pass the check word: the newest acknowledged commit;
//! - any other length: no crash leaves that (the record is always written
//!   whole at offset 0), so something else wrote the file: refused as
//!   corrupt rather than guessed at.

use crate::record::storage;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use trexlock_paxos::JournalError;

/// The record: the sequence number, then the same number XORed with this
/// constant, so that a damaged mark is recognised rather than believed.
const CHECK: u64 = 0x7472_6578_6c6f_636b;
const RECORD_LEN: usize = 16;

/// The open mark file of one journal.
#[derive(Debug)]
pub(crate) struct AckMark {
    file: File,
    path: PathBuf,
}

impl AckMark {
    /// The mark of the journal at `journal`: the same path with `.acked`
    /// appended, so that it travels with the journal file.
    pub(crate) fn path_for(journal: &Path) -> PathBuf {
        crate::sibling(journal, ".acked")
    }

    /// Opens (creating if absent) the mark of the journal at `journal`,
    /// and returns it with the newest acknowledged commit it records, if
    /// it records one (see the module's documentation for what its bytes
    /// mean). Fails with [`JournalError::Corrupt`] only on a length no
    /// crash can leave.
    pub(crate) fn open(journal: &Path) -> Result<(Self, Option<u64>), JournalError> {
        let path = Self::path_for(journal);
        let storage = |e| storage(&path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(storage)?;
        let mut bytes = Vec::new();
        // Never more than a record and one byte: enough to tell a record
        // from something else, whatever the file holds.
        (&mut file)
            .take(RECORD_LEN as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(storage)?;
        let recorded = match bytes.len() {
            0 => None,
            RECORD_LEN => {
                let word = |at: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&bytes[at..at + 8]);
                    u64::from_le_bytes(w)
                };
                let (sequence, check) = (word(0), word(8));
                (sequence ^ CHECK == check).then_some(sequence)
            }
            _ => {
                return Err(JournalError::Corrupt {
                    reason: format!(
                        "the acknowledgement mark {} is not a {RECORD_LEN}-byte record, which \
                         no crash leaves; it records which commits the node has acknowledged, \
                         so the journal beside it cannot be trusted either",
                        path.display()
                    ),
                    path: journal.to_path_buf(),
                });
            }
        };
        Ok((Self { file, path }, recorded))
    }

    /// Records that the commit numbered `sequence` has been acknowledged.
    pub(crate) fn record(&mut self, sequence: u64) -> Result<(), JournalError> {
        let mut record = [0u8; RECORD_LEN];
        record[..8].copy_from_slice(&sequence.to_le_bytes());
        record[8..].copy_from_slice(&(sequence ^ CHECK).to_le_bytes());
        self.file
            .write_all_at(&record, 0)
            .map_err(|e| storage(&self.path, e))
    }
}

/// Refuses the journal at `journal`, whose newest commit is `found`, if
/// its mark records a newer `acknowledged` one: the journal lost commits
/// the node acknowledged. Not to be asked of a journal that did not exist
/// before this open: deleting only the journal (not its mark) asks for an
/// empty one, whose replica starts as a learner, which is safe. A journal
/// that existed but reads as empty is refused like any other rollback.
pub(crate) fn refuse_rollback(
    journal: &Path,
    acknowledged: Option<u64>,
    found: u64,
) -> Result<(), JournalError> {
    match acknowledged {
        Some(acknowledged) if acknowledged > found => Err(JournalError::RolledBack {
            path: journal.to_path_buf(),
            acknowledged,
            found,
        }),
        _ => Ok(()),
    }
}
