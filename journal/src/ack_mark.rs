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
//! The mark is written without a sync. It never runs ahead of the durable
//! journal (it is written after the commit's sync), so a power cut can make
//! it lag and miss a rollback, but never report one that did not happen.

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
    /// whose newest commit is numbered `sequence`, and brings the mark to
    /// it. `fresh` says that the journal did not exist before this open.
    ///
    /// Fails with [`JournalError::RolledBack`] if the mark records a newer
    /// commit, unless the journal is fresh: deleting only the journal (not
    /// its mark) asks for an empty one, whose replica starts as a learner,
    /// which is safe. A journal that existed but reads as empty is refused
    /// like any other rollback. A mark that is not a valid record is
    /// [`JournalError::Corrupt`]; an empty one records nothing (its creation
    /// was interrupted).
    pub(crate) fn open_checked(
        journal: &Path,
        sequence: u64,
        fresh: bool,
    ) -> Result<Self, JournalError> {
        let (mut mark, acknowledged) = Self::open(journal)?;
        if let Some(acknowledged) = acknowledged
            && acknowledged > sequence
            && !fresh
        {
            return Err(JournalError::RolledBack {
                path: journal.to_path_buf(),
                acknowledged,
                found: sequence,
            });
        }
        mark.record(sequence)?;
        Ok(mark)
    }

    fn open(journal: &Path) -> Result<(Self, Option<u64>), JournalError> {
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
        file.read_to_end(&mut bytes).map_err(storage)?;
        let recorded = match bytes.len() {
            0 => None,
            RECORD_LEN => {
                let word = |at: usize| {
                    let mut w = [0u8; 8];
                    w.copy_from_slice(&bytes[at..at + 8]);
                    u64::from_le_bytes(w)
                };
                let (sequence, check) = (word(0), word(8));
                if sequence ^ CHECK != check {
                    return Err(damaged(&path, "its check word does not match"));
                }
                Some(sequence)
            }
            n => {
                return Err(damaged(
                    &path,
                    &format!("{n} bytes where a record has {RECORD_LEN}"),
                ));
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

fn damaged(path: &Path, what: &str) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        reason: format!(
            "the acknowledgement mark is damaged ({what}); it records which commits the node \
             has acknowledged, so the journal beside it cannot be trusted either"
        ),
    }
}
