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
fn a_damaged_acknowledged_last_record_is_refused_as_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    let end = used(&bytes);
    // Nothing follows the last record, so its damage looks like a write
    // cut short; the mark knows it was acknowledged.
    bytes[end - 3] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(
        matches!(error, JournalError::RolledBack { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&path.display().to_string()));
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the refused file was changed"
    );
}

#[test]
fn damage_with_records_after_it_is_corrupt_with_or_without_the_mark() {
    for keep_mark in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = written_journal(dir.path());
        let mut bytes = fs::read(&path).unwrap();
        let end = used(&bytes);
        bytes[end / 2] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        if !keep_mark {
            fs::remove_file(mark_of(&path)).unwrap();
        }
        let error = open_and_load(&path).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
        assert!(error.to_string().contains("follow"), "{error}");
        assert_eq!(
            fs::read(&path).unwrap(),
            bytes,
            "the refused file was changed"
        );
    }
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

/// Where `after` first differs from `before`: the start of the record
/// appended between them, since the file's unused rest is zeros.
fn first_difference(before: &[u8], after: &[u8]) -> usize {
    before
        .iter()
        .zip(after)
        .position(|(a, b)| a != b)
        .expect("the files differ")
}

/// Persists `writes` one by one and returns the file and the mark as they
/// were after each (index 0: before the first).
fn persist_each(path: &Path, writes: &[JournalWrite]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut journal = LogJournal::open(path, me()).unwrap();
    let snapshot = || (fs::read(path).unwrap(), fs::read(mark_of(path)).unwrap());
    let mut seen = vec![snapshot()];
    for write in writes {
        journal.persist(write).unwrap();
        seen.push(snapshot());
    }
    drop(journal);
    seen
}

#[test]
fn a_large_torn_record_whose_first_page_was_lost_is_dropped_not_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    let mut writes: Vec<JournalWrite> = (1..=5).map(promise).collect();
    // One record of about 20 KiB: five pages, written in any order.
    writes.push(JournalWrite {
        entries: vec![(1, entry(1, 20 * 1024))],
        ..JournalWrite::default()
    });
    let seen = persist_each(&path, &writes);
    let (before, mark_before) = &seen[5];
    let (after, _) = &seen[6];
    let start = first_difference(before, after);
    // The power cut lost the page holding the record's length (and the
    // start of its payload); later pages of the record reached the disk.
    // The record was never acknowledged: the mark is as it was before it.
    let mut torn = after.clone();
    let page_end = (start + 1).next_multiple_of(4096);
    torn[start..page_end].fill(0);
    fs::write(&path, &torn).unwrap();
    fs::write(mark_of(&path), mark_before).unwrap();
    let state = open_and_load(&path).expect("a write cut short is recovered");
    assert_eq!(state.promised, ballot(5));
    assert!(state.entries.is_empty());
    assert!(
        fs::read(&path).unwrap()[start..].iter().all(|&b| b == 0),
        "the rest of the torn record was not zeroed"
    );
    let mut journal = LogJournal::open(&path, me()).unwrap();
    journal.persist(&promise(6)).unwrap();
    drop(journal);
    assert_eq!(open_and_load(&path).unwrap().promised, ballot(6));
}

#[test]
fn a_flipped_bit_in_a_record_length_with_records_after_it_is_corrupt_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    let writes: Vec<JournalWrite> = (1..=10u64).map(|i| votes(i * 10 - 9..=i * 10)).collect();
    let seen = persist_each(&path, &writes);
    let start = first_difference(&seen[5].0, &seen[6].0);
    // The mark lags at commit 5, as a power cut can leave it.
    let mut damaged = seen[10].0.clone();
    // Bit 5 of the length's second byte: 8 KiB more, past all the
    // records after it.
    damaged[start + 1] ^= 0x20;
    fs::write(&path, &damaged).unwrap();
    fs::write(mark_of(&path), &seen[5].1).unwrap();
    let error = match open_and_load(&path) {
        Ok(state) => panic!(
            "opened, committed up to slot {}: the records after the damage were dropped",
            state.committed
        ),
        Err(error) => error,
    };
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("follow"), "{error}");
    assert_eq!(
        fs::read(&path).unwrap(),
        damaged,
        "acknowledged records were erased"
    );
}

#[test]
fn a_version_1_journal_is_refused_by_its_version_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.log");
    // A version 1 file: the magic, then its header framed as version 1
    // framed records, `[length][CRC-32 of the payload][payload]`. The
    // payload is postcard: variant 0 (the header), version 1, the cluster
    // id, the node id, and no state following.
    let mut payload = vec![0, 1, 9];
    payload.extend_from_slice(b"cluster-a");
    payload.extend_from_slice(&[1, 0]);
    let mut bytes = b"TRXLOG\r\n".to_vec();
    bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    bytes.extend_from_slice(&payload);
    bytes.resize(4096, 0);
    fs::write(&path, &bytes).unwrap();
    let error = open_and_load(&path).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::UnsupportedVersion {
                found: 1,
                supported: 2,
                ..
            }
        ),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(message.contains(&path.display().to_string()), "{message}");
    assert!(message.contains('1') && message.contains('2'), "{message}");
    assert_eq!(
        fs::read(&path).unwrap(),
        bytes,
        "the refused file was changed"
    );
}

/// Compaction builds its new file under another name, syncs it, and only
/// then renames it into place (and syncs the directory): a compaction cut
/// short at any point before the rename leaves the old journal whole.
#[test]
fn a_compaction_cut_short_leaves_the_journal_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let compacting = dir.path().join("journal.log.compacting");
    let bytes = fs::read(&path).unwrap();
    fs::write(&compacting, &bytes[..used(&bytes) / 2]).unwrap();
    assert_eq!(open_and_load(&path).unwrap(), state);
    assert!(!compacting.exists(), "the partial file is left");
}
