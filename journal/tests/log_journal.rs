//! The append-only log journal: what recovery accepts (a torn record that
//! was never acknowledged), what it refuses (damage, rollback, foreign or
//! misdirected files), and compaction.
//!
//! `TREXLOCK_FLIPS=N` sets how many single-bit corruptions are tried
//! (default 400).

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use trexlock_journal::{
    COMPACT_AT, Journal, JournalError, JournalIdentity, JournalState, JournalWrite, LogJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Slot, Snapshot, Value};

fn me() -> JournalIdentity {
    JournalIdentity::new("cluster-a", NodeId(1))
}

fn mark_of(journal: &Path) -> PathBuf {
    let mut name = journal.as_os_str().to_owned();
    name.push(".acked");
    PathBuf::from(name)
}

fn ballot(counter: u64) -> Ballot {
    Ballot {
        counter,
        node: NodeId(2),
    }
}

fn entry(slot: Slot, len: usize) -> LogEntry {
    LogEntry {
        ballot: ballot(3),
        value: Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; len])]),
    }
}

fn votes(slots: std::ops::RangeInclusive<Slot>) -> JournalWrite {
    JournalWrite {
        entries: slots.clone().map(|s| (s, entry(s, 80))).collect(),
        committed: Some(*slots.end()),
        ..JournalWrite::default()
    }
}

fn promise(counter: u64) -> JournalWrite {
    JournalWrite {
        promised: Some(ballot(counter)),
        ..JournalWrite::default()
    }
}

/// A closed journal with a promise, votes, snapshots and truncations.
fn written_journal(dir: &Path) -> (PathBuf, JournalState) {
    let path = dir.join("journal.log");
    let mut journal = LogJournal::open(&path, me()).unwrap();
    journal.persist(&promise(3)).unwrap();
    for chunk in 0..20u64 {
        let mut write = votes(chunk * 10 + 1..=chunk * 10 + 10);
        if chunk % 5 == 4 {
            write.snapshot = Some(Snapshot {
                slot: chunk * 10,
                data: bytes::Bytes::from(vec![7; 300]),
            });
            write.truncate = Some(chunk * 10 - 20);
        }
        journal.persist(&write).unwrap();
    }
    let state = journal.load().unwrap();
    drop(journal);
    (path, state)
}

fn open_and_load(path: &Path) -> Result<JournalState, JournalError> {
    catch_unwind(AssertUnwindSafe(|| LogJournal::open(path, me())?.load()))
        .unwrap_or_else(|_| panic!("opening {} panicked", path.display()))
}

/// The length of the records: the file beyond them is zeros.
fn used(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

#[test]
fn a_torn_unacknowledged_record_is_dropped_and_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let bytes = fs::read(&path).unwrap();
    let end = used(&bytes) as u64;
    // Half a record: a length, no checksum match, some payload.
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.write_all_at(&[200, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9], end)
        .unwrap();
    drop(file);
    assert_eq!(open_and_load(&path).unwrap(), state);
    let mut journal = LogJournal::open(&path, me()).unwrap();
    journal.persist(&promise(9)).unwrap();
    drop(journal);
    let reopened = open_and_load(&path).unwrap();
    assert_eq!(reopened.promised, ballot(9));
    assert_eq!(reopened.entries, state.entries);
}

#[test]
fn a_damaged_acknowledged_record_is_refused_as_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    let bytes = fs::read(&path).unwrap();
    let end = used(&bytes);
    // One byte in the middle of the file, then one in the last record.
    for at in [end / 2, end - 3] {
        let copy = dir.path().join(format!("damaged-{at}.log"));
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x40;
        fs::write(&copy, &damaged).unwrap();
        fs::copy(mark_of(&path), mark_of(&copy)).unwrap();
        let error = open_and_load(&copy).unwrap_err();
        assert!(
            matches!(error, JournalError::RolledBack { .. }),
            "damage at {at} of {end}: {error:?}"
        );
        assert!(error.to_string().contains(&copy.display().to_string()));
    }
}

#[test]
fn damage_with_records_after_it_is_corrupt_even_without_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let end = used(&bytes);
    bytes[end / 2] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(mark_of(&path)).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("follow"), "{error}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the refused file was changed"
    );
}

#[test]
fn a_compacted_journal_whose_state_is_damaged_is_corrupt_even_without_the_mark() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    let mut journal = LogJournal::open(&path, me()).unwrap();
    // Up to the write that compacts, so the state record is the last one
    // and its damage cannot be told from a write cut short by its extent.
    let inode = || fs::metadata(&path).unwrap().ino();
    let first = inode();
    for slot in 1.. {
        journal
            .persist(&JournalWrite {
                entries: vec![(slot, entry(slot, 10_000))],
                ..JournalWrite::default()
            })
            .unwrap();
        // Compaction renames a new file into place.
        if inode() != first {
            break;
        }
    }
    drop(journal);
    let mut bytes = fs::read(&path).unwrap();
    let end = used(&bytes);
    // The state record is most of what the compacted file holds.
    bytes[end / 2] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    fs::remove_file(mark_of(&path)).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
}

#[test]
fn a_journal_replaced_by_an_older_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    let backup = fs::read(&path).unwrap();
    let mut journal = LogJournal::open(&path, me()).unwrap();
    journal.persist(&promise(8)).unwrap();
    drop(journal);
    fs::write(&path, &backup).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 22,
                found: 21,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn compaction_keeps_the_file_bounded_and_the_state_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    let mut journal = LogJournal::open(&path, me()).unwrap();
    journal.persist(&promise(5)).unwrap();
    // 10 kB per write: three compactions' worth, keeping 20 to 70 slots
    // (at most 0.7 MB of state).
    let mut peak = 0;
    let writes = 3 * COMPACT_AT / 10_000;
    for slot in 1..=writes {
        let mut write = JournalWrite {
            entries: vec![(slot, entry(slot, 10_000))],
            committed: Some(slot),
            ..JournalWrite::default()
        };
        if slot % 50 == 0 {
            write.snapshot = Some(Snapshot {
                slot,
                data: bytes::Bytes::from(slot.to_le_bytes().to_vec()),
            });
            write.truncate = Some(slot - 20);
        }
        journal.persist(&write).unwrap();
        peak = peak.max(fs::metadata(&path).unwrap().len());
    }
    let state = journal.load().unwrap();
    drop(journal);
    // Without compaction the file would pass 3 * COMPACT_AT; with it, it
    // holds at most COMPACT_AT of records after the state.
    assert!(peak < 2 * COMPACT_AT, "the file reached {peak} bytes");
    assert_eq!(state.entries.len(), (writes % 50 + 20) as usize);
    assert_eq!(open_and_load(&path).unwrap(), state);
    assert!(!dir.path().join("journal.log.compacting").exists());
}

#[test]
fn a_foreign_file_is_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = b"these are my notes, not a journal\n".repeat(50);
    fs::write(&path, &text).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("notes.txt"), "{error}");
    assert_eq!(fs::read(&path).unwrap(), text);
}

#[test]
fn another_nodes_or_clusters_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    for other in [
        JournalIdentity::new("cluster-a", NodeId(2)),
        JournalIdentity::new("cluster-b", NodeId(1)),
    ] {
        let error = LogJournal::open(&path, other).unwrap_err();
        assert!(
            matches!(error, JournalError::WrongOwner { .. }),
            "{error:?}"
        );
    }
    assert_eq!(open_and_load(&path).unwrap(), state);
}

#[test]
fn a_journal_open_elsewhere_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    let _first = LogJournal::open(&path, me()).unwrap();
    let error = LogJournal::open(&path, me()).unwrap_err();
    assert!(matches!(error, JournalError::Storage { .. }), "{error:?}");
    assert!(error.to_string().contains("journal.log"), "{error}");
}

#[test]
fn a_flipped_bit_anywhere_is_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let original = fs::read(&path).unwrap();
    let end = used(&original);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let flips: usize = std::env::var("TREXLOCK_FLIPS").map_or(400, |v| v.parse().expect("a count"));
    let (mut detected, mut harmless) = (0, 0);
    for i in 0..flips {
        let at = if i < 64 { i } else { rng.usize(..end) };
        let damaged = dir.path().join("flip.log");
        let mut bytes = original.clone();
        bytes[at] ^= 1 << (i % 8);
        fs::write(&damaged, &bytes).unwrap();
        fs::copy(mark_of(&path), mark_of(&damaged)).unwrap();
        match open_and_load(&damaged) {
            Ok(loaded) => {
                assert_eq!(loaded, state, "flip at {at} silently changed the journal");
                harmless += 1;
            }
            Err(error) => {
                assert!(
                    matches!(
                        error,
                        JournalError::Corrupt { .. } | JournalError::RolledBack { .. }
                    ),
                    "flip at {at}: {error:?}"
                );
                detected += 1;
            }
        }
    }
    eprintln!("{detected} flips detected, {harmless} harmless");
}
