//! A journal that comes back older than what its node acknowledged is
//! refused: the node may have forgotten a promise or vote it gave. Found by
//! the nemesis harness: redb, recovering after an unclean shutdown, fell
//! back to the previous commit when the newest one was damaged.

use std::fs;
use std::path::{Path, PathBuf};
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalWrite, LogJournal, RedbJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Snapshot, Value};

const PAGE: usize = 4096;

fn me() -> JournalIdentity {
    JournalIdentity::new("c", NodeId(1))
}

/// `path` with `suffix` appended to its file name: a file that belongs
/// with the journal there.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn mark_of(journal: &Path) -> PathBuf {
    sibling(journal, ".acked")
}

/// A copy of every file of the journal at `path` but its mark (the redb
/// journal's write-ahead logs too): what restoring a backup puts back.
fn backup(path: &Path) -> Vec<(PathBuf, Option<Vec<u8>>)> {
    [
        path.to_path_buf(),
        sibling(path, ".wal"),
        sibling(path, ".wal2"),
    ]
    .into_iter()
    .map(|file| {
        let bytes = fs::read(&file).ok();
        (file, bytes)
    })
    .collect()
}

fn restore(backup: &[(PathBuf, Option<Vec<u8>>)]) {
    for (file, bytes) in backup {
        match bytes {
            Some(bytes) => fs::write(file, bytes).unwrap(),
            None => {
                let _ = fs::remove_file(file);
            }
        }
    }
}

fn promise(counter: u64) -> Ballot {
    Ballot {
        counter,
        node: NodeId(2),
    }
}

fn persist_promise(journal: &mut impl Journal, ballot: Ballot) {
    journal
        .persist(&JournalWrite {
            promised: Some(ballot),
            ..JournalWrite::default()
        })
        .unwrap();
}

/// Copies a journal and its mark, as an operator moving a data directory
/// would; the copy is not locked by the original's open handle.
fn copy_journal(from: &Path, to: &Path, contents: &[u8]) {
    let _ = fs::remove_file(to);
    fs::write(to, contents).unwrap();
    fs::copy(mark_of(from), mark_of(to)).unwrap();
}

#[test]
fn a_journal_with_a_damaged_newest_commit_is_refused_not_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 1..=30);
    // A write with a snapshot is committed to the redb file itself (with
    // the 30 before it, from the write-ahead log), so that the file's
    // newest commit is the one holding the promise.
    journal
        .persist(&JournalWrite {
            promised: Some(promise(7)),
            snapshot: Some(Snapshot {
                slot: 10,
                data: bytes::Bytes::from_static(b"state at 10"),
            }),
            ..JournalWrite::default()
        })
        .unwrap();
    // As if SIGKILLed: no clean shutdown is recorded.
    std::mem::forget(journal);
    let original = fs::read(&path).unwrap();
    let copy = dir.path().join("damaged.redb");
    let (mut refused_as_rollback, mut forgot) = (0, Vec::new());
    for page in 0..original.len() / PAGE {
        let mut damaged = original.clone();
        for b in &mut damaged[page * PAGE..(page + 1) * PAGE] {
            *b ^= 0x5a;
        }
        copy_journal(&path, &copy, &damaged);
        match RedbJournal::open(&copy, me()).and_then(|mut j| j.load()) {
            Ok(state) if state.promised != promise(7) => forgot.push((page, state.promised)),
            Ok(_) => {}
            Err(JournalError::RolledBack {
                acknowledged,
                found,
                ..
            }) => {
                assert!(acknowledged > found);
                refused_as_rollback += 1;
            }
            Err(_) => {}
        }
    }
    assert!(
        forgot.is_empty(),
        "opened without complaint but with the last promise forgotten, after damage to these \
         pages (page, promise found): {forgot:?}"
    );
    assert!(
        refused_as_rollback > 0,
        "no damaged page made redb fall back, so this test no longer exercises the rollback"
    );
}

#[test]
fn a_journal_replaced_by_an_older_copy_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 1..=5);
    journal.close().unwrap();
    let backup = fs::read(&path).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_promise(&mut journal, promise(9));
    journal.close().unwrap();
    fs::write(&path, &backup).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 6,
                found: 5,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("journal.redb"), "{error}");
}

#[test]
fn the_refusal_is_sticky_across_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 1..=3);
    journal.close().unwrap();
    let backup = fs::read(&path).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 4..=4);
    journal.close().unwrap();
    fs::write(&path, &backup).unwrap();
    for _ in 0..3 {
        let error = RedbJournal::open(&path, me()).unwrap_err();
        assert!(
            matches!(error, JournalError::RolledBack { .. }),
            "{error:?}"
        );
    }
}

#[test]
fn deleting_only_the_journal_file_starts_an_empty_journal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 1..=5);
    journal.close().unwrap();
    fs::remove_file(&path).unwrap();
    let mut journal = RedbJournal::open(&path, me()).expect("an empty journal is safe to start");
    assert_eq!(
        journal.load().unwrap(),
        trexlock_journal::JournalState::default()
    );
    // Its mark follows the new journal, so its own commits are protected.
    persist_promise(&mut journal, promise(3));
    journal.close().unwrap();
    assert!(RedbJournal::open(&path, me()).is_ok());
}

#[test]
fn a_journal_that_existed_but_lost_every_commit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    RedbJournal::open(&path, me()).unwrap().close().unwrap();
    let created = fs::read(&path).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_promise(&mut journal, promise(4));
    journal.close().unwrap();
    fs::write(&path, &created).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(
            error,
            JournalError::RolledBack {
                acknowledged: 1,
                found: 0,
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_mark_of_a_length_no_crash_leaves_is_corrupt_named_and_leaves_the_journal_untouched() {
    for damage in [&b"short"[..], &[0x11u8; 17][..]] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.redb");
        let mut journal = RedbJournal::open(&path, me()).unwrap();
        persist_entries(&mut journal, 1..=2);
        journal.close().unwrap();
        let before = fs::read(&path).unwrap();
        fs::write(mark_of(&path), damage).unwrap();
        let error = RedbJournal::open(&path, me()).unwrap_err();
        assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
        assert!(error.to_string().contains("journal.redb.acked"), "{error}");
        assert_eq!(fs::read(mark_of(&path)).unwrap(), damage);
        assert!(
            fs::read(&path).unwrap() == before,
            "the journal was changed"
        );
    }
}

/// The mark is written without a sync, so a power cut can leave it
/// zero-filled or torn while the journal is whole: that mark records
/// nothing (as if it lagged all the way), and is rewritten on open.
#[test]
fn a_zeroed_or_torn_mark_records_nothing_and_is_rewritten() {
    let zeroed = [0u8; 16];
    // The first half of commit 3's record over the second half of
    // commit 2's.
    let mut torn = [0u8; 16];
    torn[..8].copy_from_slice(&3u64.to_le_bytes());
    torn[8..].copy_from_slice(&(2 ^ 0x7472_6578_6c6f_636b_u64).to_le_bytes());
    for (engine, name) in [("redb", "journal.redb"), ("log", "journal.log")] {
        for mark in [zeroed, torn] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(name);
            let open = |path: &Path| -> Result<Box<dyn Journal>, JournalError> {
                Ok(match engine {
                    "redb" => Box::new(RedbJournal::open(path, me())?),
                    _ => Box::new(LogJournal::open(path, me())?),
                })
            };
            let mut journal = open(&path).unwrap();
            persist_entries(&mut *journal, 1..=2);
            drop(journal);
            let backup = backup(&path);
            let mut journal = open(&path).unwrap();
            persist_entries(&mut *journal, 3..=3);
            drop(journal);
            fs::write(mark_of(&path), mark).unwrap();
            let mut journal = open(&path)
                .unwrap_or_else(|e| panic!("{engine}: a whole journal was refused: {e}"));
            assert_eq!(journal.load().unwrap().committed, 3, "{engine}");
            drop(journal);
            // Rewritten on open: it guards again.
            restore(&backup);
            let error = open(&path).err().expect("a rolled-back journal opened");
            assert!(
                matches!(
                    error,
                    JournalError::RolledBack {
                        acknowledged: 3,
                        found: 2,
                        ..
                    }
                ),
                "{engine}: {error:?}"
            );
        }
    }
}

#[test]
fn a_missing_mark_is_recreated_and_then_guards() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.redb");
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 1..=2);
    journal.close().unwrap();
    let backup = fs::read(&path).unwrap();
    fs::remove_file(mark_of(&path)).unwrap();
    let mut journal = RedbJournal::open(&path, me()).unwrap();
    persist_entries(&mut journal, 3..=3);
    journal.close().unwrap();
    fs::write(&path, &backup).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    assert!(
        matches!(error, JournalError::RolledBack { .. }),
        "{error:?}"
    );
}

/// One-entry commits, as a busy replica makes them.
fn persist_entries(journal: &mut (impl Journal + ?Sized), slots: std::ops::RangeInclusive<u64>) {
    for slot in slots {
        let entry = LogEntry {
            ballot: promise(1),
            value: Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 100])]),
        };
        journal
            .persist(&JournalWrite {
                entries: vec![(slot, entry)],
                committed: Some(slot),
                ..JournalWrite::default()
            })
            .unwrap();
    }
}
