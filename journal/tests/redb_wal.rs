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

/// Where each record of a log written once starts: after the 32-byte
/// header, each record is a 12-byte frame, its length first, then its
/// payload.
fn record_starts(wal: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 32;
    while at + 12 <= wal.len() {
        let len = u32::from_le_bytes(wal[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        starts.push(at);
        at += 12 + len;
    }
    starts
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
    fs::remove_file(sibling(&path, ".wal2")).unwrap();
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
    let (path, state) = dropped_journal(dir.path(), 4);
    let original = fs::read(wal_of(&path)).unwrap();
    let end = records_end(&original);
    let saved = fs::read(&path).unwrap();
    let mark = fs::read(sibling(&path, ".acked")).unwrap();
    let (mut refused, mut harmless) = (0, 0);
    // Every byte of the header, every fifth of the records, and some of
    // the rest.
    let flips: Vec<usize> = (0..32)
        .chain((32..end).step_by(5))
        .chain((end..original.len()).step_by(4099))
        .collect();
    let in_records = flips.iter().filter(|&&at| at < end).count();
    for at in flips {
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
        refused >= in_records,
        "only {refused} of {in_records} flips in the records were refused"
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

#[test]
fn damage_with_records_after_it_in_the_log_is_corrupt_with_or_without_the_mark() {
    for mark in ["lagging", "absent"] {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = dropped_journal(dir.path(), 8);
        let mut wal = fs::read(wal_of(&path)).unwrap();
        let starts = record_starts(&wal);
        assert_eq!(starts.len(), 8);
        // In the payload of commit 4: acknowledged, with four after it.
        wal[starts[3] + 20] ^= 0x40;
        fs::write(wal_of(&path), &wal).unwrap();
        match mark {
            "lagging" => set_mark(&path, 2),
            _ => fs::remove_file(sibling(&path, ".acked")).unwrap(),
        }
        let error = RedbJournal::open(&path, me()).unwrap_err();
        assert!(
            matches!(error, JournalError::Corrupt { .. }),
            "{mark}: {error:?}"
        );
        assert!(error.to_string().contains("follow"), "{mark}: {error}");
        assert_eq!(
            fs::read(wal_of(&path)).unwrap(),
            wal,
            "{mark}: the refused log was changed"
        );
    }
}

#[test]
fn a_flipped_bit_in_a_log_record_length_with_records_after_it_is_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = dropped_journal(dir.path(), 10);
    let mut wal = fs::read(wal_of(&path)).unwrap();
    let starts = record_starts(&wal);
    // Bit 5 of the length's second byte of commit 6: 8 KiB more, past all
    // the records after it. The mark lags at commit 5, as a power cut can
    // leave it.
    wal[starts[5] + 1] ^= 0x20;
    fs::write(wal_of(&path), &wal).unwrap();
    set_mark(&path, 5);
    let error = match RedbJournal::open(&path, me()).and_then(|mut j| j.load()) {
        Ok(state) => panic!(
            "opened, committed up to slot {}: the records after the damage were dropped",
            state.committed
        ),
        Err(error) => error,
    };
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("follow"), "{error}");
    assert_eq!(
        fs::read(wal_of(&path)).unwrap(),
        wal,
        "acknowledged records were erased"
    );
}

#[test]
fn a_log_started_over_holds_no_old_records_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = dropped_journal(dir.path(), 10);
    // The open folds the ten into the file and starts the log over.
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    journal.persist(&entry_write(11)).unwrap();
    drop(journal);
    let wal = fs::read(wal_of(&path)).unwrap();
    let starts = record_starts(&wal);
    assert_eq!(starts.len(), 1, "old records are left behind the new one");
    // So damage to the one record is a write cut short, not damage
    // followed by records: refused only by the mark.
    let mut damaged = wal.clone();
    damaged[starts[0] + 20] ^= 0x40;
    fs::write(wal_of(&path), &damaged).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 11,
                found: 10,
                ..
            }
        ),
        "{error:?}"
    );
}

/// A one-entry write of about 8 KiB: some 120 fill a log.
fn large_write(slot: u64) -> JournalWrite {
    let mut write = entry_write(slot);
    write.entries[0].1.value = Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 8192])]);
    write
}

/// The journal file and both logs as they are on disk.
fn files_of(path: &Path) -> [Vec<u8>; 3] {
    [
        fs::read(path).unwrap(),
        fs::read(wal_of(path)).unwrap(),
        fs::read(sibling(path, ".wal2")).unwrap(),
    ]
}

/// Writes until the `switches`-th time a full log hands over to the other
/// one, and a few more; returns the journal's files as they were just
/// before that last hand-over (no fold running), the state the journal
/// holds in the end, and its path, the journal dropped.
fn journal_across_hand_overs(dir: &Path, switches: usize) -> ([Vec<u8>; 3], JournalState, PathBuf) {
    let path = dir.join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    let mut written_to = 0;
    let mut seen = 0;
    let mut slot = 0;
    let before = loop {
        // Waits for a fold in progress, so the copy is not torn by one.
        journal.load().unwrap();
        let before = files_of(&path);
        slot += 1;
        assert!(slot < 2_000, "no hand-over after {slot} writes");
        journal.persist(&large_write(slot)).unwrap();
        let after = files_of(&path);
        let log = (1..=2)
            .find(|&log| records_end(&after[log]) > records_end(&before[log]))
            .unwrap();
        if log != written_to {
            if written_to != 0 {
                seen += 1;
            }
            written_to = log;
        }
        if seen == switches {
            break before;
        }
    };
    for _ in 0..5 {
        slot += 1;
        journal.persist(&large_write(slot)).unwrap();
    }
    let state = journal.load().unwrap();
    assert_eq!(state.entries.len() as u64, slot);
    drop(journal);
    (before, state, path)
}

/// Once after one hand-over (the first log full) and once after two (the
/// second log full, so the older log is the second): builds the journal,
/// lets `crash` turn its files into what a crash leaves, given the files
/// from just before the last hand-over, the journal's path, and the full
/// log's index in those files and its path; then the journal must open
/// holding every write.
fn every_write_survives(crash: impl Fn(&[Vec<u8>; 3], &Path, usize, &Path)) {
    for switches in [1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let (before, state, path) = journal_across_hand_overs(dir.path(), switches);
        let (log, suffix) = if switches == 1 {
            (1, ".wal")
        } else {
            (2, ".wal2")
        };
        crash(&before, &path, log, &sibling(&path, suffix));
        let mut journal = RedbJournal::open(&path, me()).unwrap();
        assert_eq!(
            journal.load().unwrap(),
            state,
            "after {switches} hand-overs"
        );
    }
}

#[test]
fn a_crash_before_a_full_log_is_folded_into_the_file_loses_no_write() {
    // The file without the full log's writes, and that log still whole.
    every_write_survives(|before, path, log, full| {
        fs::write(path, &before[0]).unwrap();
        fs::write(full, &before[log]).unwrap();
    });
}

#[test]
fn a_crash_after_a_fold_before_its_log_starts_over_loses_no_write() {
    // The file holds the fold; the full log was not yet emptied.
    every_write_survives(|before, _, log, full| {
        fs::write(full, &before[log]).unwrap();
    });
}

#[test]
fn a_crash_while_a_folded_log_is_emptied_loses_no_write() {
    // The emptied log's new header (a new salt) was synced, its old
    // records not yet zeroed.
    every_write_survives(|before, _, log, full| {
        let mut half = before[log].clone();
        half[..32].copy_from_slice(&fs::read(full).unwrap()[..32]);
        assert_ne!(half[..32], before[log][..32], "the header is the new one");
        fs::write(full, &half).unwrap();
    });
}

#[test]
fn a_file_that_lost_a_fold_whose_log_started_over_is_a_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (before, _, path) = journal_across_hand_overs(dir.path(), 1);
    // The file from before the fold, its log already emptied: the writes
    // of that log are nowhere.
    fs::write(&path, &before[0]).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(error, JournalError::RolledBack { .. }),
        "{error:?}"
    );
}

/// `wal` with its header's format version set to `version` (and its
/// check recomputed).
fn with_log_version(mut wal: Vec<u8>, version: u32) -> Vec<u8> {
    wal[8..12].copy_from_slice(&version.to_le_bytes());
    let check = crc32fast::hash(&wal[..28]);
    wal[28..32].copy_from_slice(&check.to_le_bytes());
    wal
}

#[test]
fn a_single_log_of_the_first_format_is_read_and_a_log_of_a_newer_format_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = dropped_journal(dir.path(), 20);
    let wal = fs::read(wal_of(&path)).unwrap();
    // As the first format left a journal: one log, version 1.
    fs::write(wal_of(&path), with_log_version(wal.clone(), 1)).unwrap();
    fs::remove_file(sibling(&path, ".wal2")).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    assert_eq!(journal.load().unwrap(), state);
    drop(journal);
    let newer = dir.path().join("newer");
    fs::create_dir(&newer).unwrap();
    let (path, _) = dropped_journal(&newer, 20);
    let wal = fs::read(wal_of(&path)).unwrap();
    fs::write(wal_of(&path), with_log_version(wal, 3)).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(error, JournalError::UnsupportedVersion { found: 3, .. }),
        "{error:?}"
    );
}
