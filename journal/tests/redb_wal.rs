//! The redb journal's write-ahead log: what it holds is part of the
//! journal, a record cut short is dropped only when it was never
//! acknowledged, and a log that is damaged, foreign or out of step with
//! the file beside it is refused rather than trusted.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalState, JournalWrite, RedbJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Value};

fn me() -> JournalIdentity {
    JournalIdentity::new("c", NodeId(1))
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn wal_of(path: &Path) -> PathBuf {
    sibling(path, ".wal")
}

fn entry_write(slot: u64) -> JournalWrite {
    JournalWrite {
        promised: Some(Ballot {
            counter: slot,
            node: NodeId(2),
        }),
        entries: vec![(
            slot,
            LogEntry {
                ballot: Ballot {
                    counter: 1,
                    node: NodeId(2),
                },
                value: Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 100])]),
            },
        )],
        committed: Some(slot),
        ..JournalWrite::default()
    }
}

/// A journal with `writes` one-entry syncs, dropped without a close (as a
/// SIGKILL leaves it), and the state it holds.
fn dropped_journal(dir: &Path, writes: u64) -> (PathBuf, JournalState) {
    let path = dir.join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    for slot in 1..=writes {
        journal.persist(&entry_write(slot)).unwrap();
    }
    let state = journal.load().unwrap();
    drop(journal);
    (path, state)
}

/// The acknowledgement mark recording commit `sequence`.
fn set_mark(path: &Path, sequence: u64) {
    let mut record = sequence.to_le_bytes().to_vec();
    record.extend_from_slice(&(sequence ^ 0x7472_6578_6c6f_636b).to_le_bytes());
    fs::write(sibling(path, ".acked"), record).unwrap();
}

/// Where the records of the log end: the first of the trailing zeros of a
/// log written once.
fn records_end(wal: &[u8]) -> usize {
    wal.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[test]
fn writes_only_in_the_log_are_part_of_the_journal_and_folded_in_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = dropped_journal(dir.path(), 20);
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    assert_eq!(journal.load().unwrap(), state);
    journal.close().unwrap();
    // Folded into the file: the file alone now holds the journal.
    fs::remove_file(wal_of(&path)).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    assert_eq!(journal.load().unwrap(), state);
}

#[test]
fn a_full_log_is_folded_into_the_file_and_started_over() {
    let dir = tempfile::tempdir().unwrap();
    // About 150 bytes a record: several times what one log holds.
    let (path, state) = dropped_journal(dir.path(), 30_000);
    assert_eq!(state.entries.len(), 30_000);
    let wal_len = fs::metadata(wal_of(&path)).unwrap().len();
    assert!(wal_len <= 1024 * 1024, "the log grew to {wal_len} bytes");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    assert_eq!(journal.load().unwrap(), state);
}

#[test]
fn an_unacknowledged_record_cut_short_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = dropped_journal(dir.path(), 5);
    let wal = fs::read(wal_of(&path)).unwrap();
    let end = records_end(&wal);
    let file = OpenOptions::new().write(true).open(wal_of(&path)).unwrap();
    // The last record's second half never reached the disk.
    file.write_all_at(&[0; 40], (end - 40) as u64).unwrap();
    set_mark(&path, 4);
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    let loaded = journal.load().unwrap();
    let mut expected = JournalState::default();
    for slot in 1..=4 {
        expected.apply(&entry_write(slot));
    }
    assert_eq!(loaded, expected);
    assert_ne!(loaded, state);
    // The next commit reuses the number of the one dropped, and counts.
    journal.persist(&entry_write(9)).unwrap();
    drop(journal);
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    expected.apply(&entry_write(9));
    assert_eq!(journal.load().unwrap(), expected);
}

#[test]
fn an_acknowledged_record_lost_from_the_log_is_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = dropped_journal(dir.path(), 5);
    let wal = fs::read(wal_of(&path)).unwrap();
    let end = records_end(&wal);
    let file = OpenOptions::new().write(true).open(wal_of(&path)).unwrap();
    file.write_all_at(&[0; 40], (end - 40) as u64).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 5,
                found: 4,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_flipped_byte_in_the_log_is_refused_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = dropped_journal(dir.path(), 8);
    let original = fs::read(wal_of(&path)).unwrap();
    let end = records_end(&original);
    let saved = fs::read(&path).unwrap();
    let mark = fs::read(sibling(&path, ".acked")).unwrap();
    let (mut refused, mut harmless) = (0, 0);
    // Every byte of the header and the records, and some of the rest.
    for at in (0..end).chain((end..original.len()).step_by(4099)) {
        let mut damaged = original.clone();
        damaged[at] ^= 0x10;
        fs::write(&path, &saved).unwrap();
        fs::write(wal_of(&path), &damaged).unwrap();
        fs::write(sibling(&path, ".acked"), &mark).unwrap();
        match RedbJournal::open(&path, me()).and_then(|mut j| j.load()) {
            Ok(loaded) => {
                assert_eq!(loaded, state, "a flip at byte {at} changed the journal");
                harmless += 1;
            }
            Err(JournalError::Corrupt { .. } | JournalError::RolledBack { .. }) => refused += 1,
            Err(error) => panic!("a flip at byte {at}: {error:?}"),
        }
    }
    assert!(
        refused >= end,
        "only {refused} of {end} flips in the records were refused"
    );
    assert!(harmless > 0, "no flip past the records was harmless");
}

#[test]
fn a_damaged_log_header_is_corrupt_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = dropped_journal(dir.path(), 3);
    let file = OpenOptions::new().write(true).open(wal_of(&path)).unwrap();
    file.write_all_at(b"XX", 10).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("journal.redb.wal"), "{error}");
    assert!(error.to_string().contains("write-ahead log"), "{error}");
}

#[test]
fn another_nodes_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = dropped_journal(dir.path(), 3);
    let other = dir.path().join("other.redb");
    let mut journal = RedbJournal::open(&other, JournalIdentity::new("c", NodeId(2))).unwrap();
    journal.persist(&entry_write(1)).unwrap();
    drop(journal);
    fs::copy(wal_of(&other), wal_of(&path)).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(error, JournalError::WrongOwner { .. }),
        "{error:?}"
    );
}

#[test]
fn a_log_newer_than_the_file_beside_it_is_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    journal.persist(&entry_write(1)).unwrap();
    journal.close().unwrap();
    let old_file = fs::read(&path).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    for slot in 2..=4 {
        journal.persist(&entry_write(slot)).unwrap();
    }
    journal.close().unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    journal.persist(&entry_write(5)).unwrap();
    drop(journal);
    // The file restored from a copy older than the log's start.
    fs::write(&path, &old_file).unwrap();
    set_mark(&path, 0);
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 4,
                found: 1,
                ..
            }
        ),
        "{error:?}"
    );
}
