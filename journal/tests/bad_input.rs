//! A damaged, foreign or misdirected journal file is refused with a typed
//! error that names the file; opening it never panics and never resets it.
//!
//! `TREXLOCK_FLIPS=N` sets how many single-bit corruptions are tried
//! (default 600).

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use trexlock_journal::{
    FORMAT_VERSION, Journal, JournalError, JournalIdentity, JournalState, JournalWrite, RedbJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Snapshot, Value};

fn me() -> JournalIdentity {
    JournalIdentity::new("cluster-a", NodeId(1))
}

/// A closed journal holding a promise, a snapshot and 2,000 entries, so
/// that the file spans many pages.
fn written_journal(dir: &Path) -> (PathBuf, JournalState) {
    let path = dir.join("node1.journal");
    let mut journal = RedbJournal::open(&path, me()).expect("create");
    let ballot = Ballot {
        counter: 3,
        node: NodeId(2),
    };
    for chunk in 0..20u64 {
        let write = JournalWrite {
            promised: Some(ballot),
            entries: (1..=100)
                .map(|i| {
                    let slot = chunk * 100 + i;
                    let value = Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 100])]);
                    (slot, LogEntry { ballot, value })
                })
                .collect(),
            committed: Some(chunk * 100),
            snapshot: Some(Snapshot {
                slot: chunk * 100,
                data: bytes::Bytes::from(vec![7; 5_000]),
            }),
            ..JournalWrite::default()
        };
        journal.persist(&write).expect("persist");
    }
    let state = journal.load().expect("load");
    journal.close().expect("close");
    (path, state)
}

/// Opens and loads without letting a panic escape, so a panic fails the
/// test with a clear message instead of aborting it.
fn open_and_load(path: &Path, identity: JournalIdentity) -> Result<JournalState, JournalError> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut journal = RedbJournal::open(path, identity)?;
        journal.load()
    }))
    .unwrap_or_else(|_| panic!("opening {} panicked", path.display()))
}

fn assert_names_file(error: &JournalError, path: &Path) {
    let message = error.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name {}: {message}",
        path.display()
    );
}

#[test]
fn a_foreign_file_is_corrupt_not_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.txt");
    let text = b"these are my notes, not a journal\n".repeat(200);
    fs::write(&path, &text).unwrap();
    let error = open_and_load(&path, me()).unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert_names_file(&error, &path);
    assert_eq!(fs::read(&path).unwrap(), text, "the file was modified");
}

#[test]
fn a_truncated_file_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    let len = fs::metadata(&path).unwrap().len();
    for keep in [len / 2, len / 4, 600, 100] {
        let cut = dir.path().join(format!("cut-{keep}.journal"));
        fs::copy(&path, &cut).unwrap();
        OpenOptions::new()
            .write(true)
            .open(&cut)
            .unwrap()
            .set_len(keep)
            .unwrap();
        let error = open_and_load(&cut, me()).unwrap_err();
        eprintln!("{keep}: {error}");
        assert!(
            matches!(error, JournalError::Corrupt { .. }),
            "{keep} of {len}: {error:?}"
        );
        assert_names_file(&error, &cut);
    }
}

#[test]
fn a_flipped_byte_anywhere_is_detected_or_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let original = fs::read(&path).unwrap();
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let flips: u64 = std::env::var("TREXLOCK_FLIPS").map_or(600, |v| v.parse().expect("a count"));
    let positions: Vec<u64> = (0..flips)
        .map(|i| {
            if i < 200 {
                i * 7 % 4096
            } else {
                rng.u64(..original.len() as u64)
            }
        })
        .collect();
    let (mut detected, mut harmless) = (0, 0);
    for (i, at) in positions.into_iter().enumerate() {
        let damaged = dir.path().join(format!("flip-{i}.journal"));
        fs::write(&damaged, &original).unwrap();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&damaged)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, at).unwrap();
        file.write_all_at(&[byte[0] ^ (1 << (i % 8))], at).unwrap();
        drop(file);
        match open_and_load(&damaged, me()) {
            Ok(loaded) => {
                assert_eq!(loaded, state, "flip at {at} silently changed the journal");
                harmless += 1;
            }
            Err(error) => {
                assert!(
                    matches!(error, JournalError::Corrupt { .. }),
                    "flip at {at}: {error:?}"
                );
                assert_names_file(&error, &damaged);
                detected += 1;
            }
        }
        fs::remove_file(&damaged).unwrap();
    }
    eprintln!("{detected} flips detected, {harmless} harmless");
}

/// Rewrites one metadata record of a closed journal, as a newer build or a
/// damaged disk might have left it.
fn set_meta(path: &Path, key: &str, value: &[u8]) {
    let db = redb::Database::create(path).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let def: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("trexlock.meta");
        txn.open_table(def).unwrap().insert(key, value).unwrap();
    }
    txn.commit().unwrap();
}

#[test]
fn a_newer_format_version_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    set_meta(
        &path,
        "format_version",
        &postcard::to_allocvec(&(FORMAT_VERSION + 1)).unwrap(),
    );
    let error = open_and_load(&path, me()).unwrap_err();
    let JournalError::UnsupportedVersion {
        found, supported, ..
    } = error
    else {
        panic!("{error:?}");
    };
    assert_eq!((found, supported), (FORMAT_VERSION + 1, FORMAT_VERSION));
    assert_names_file(&error, &path);
}

#[test]
fn another_nodes_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let error = open_and_load(&path, JournalIdentity::new("cluster-a", NodeId(2))).unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(error, JournalError::WrongOwner { .. }),
        "{error:?}"
    );
    assert_names_file(&error, &path);
    assert!(error.to_string().contains("n1") && error.to_string().contains("n2"));
    assert_eq!(
        open_and_load(&path, me()).unwrap(),
        state,
        "refusal changed the journal"
    );
}

#[test]
fn another_clusters_journal_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, state) = written_journal(dir.path());
    let error = open_and_load(&path, JournalIdentity::new("cluster-b", NodeId(1))).unwrap_err();
    eprintln!("{error}");
    assert!(
        matches!(error, JournalError::WrongOwner { .. }),
        "{error:?}"
    );
    assert_names_file(&error, &path);
    assert!(error.to_string().contains("cluster-a") && error.to_string().contains("cluster-b"));
    assert_eq!(
        open_and_load(&path, me()).unwrap(),
        state,
        "refusal changed the journal"
    );
}

#[test]
fn a_redb_database_that_is_not_a_journal_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        let def: redb::TableDefinition<u64, u64> = redb::TableDefinition::new("orders");
        txn.open_table(def).unwrap().insert(1, 2).unwrap();
        txn.commit().unwrap();
    }
    let error = open_and_load(&path, me()).unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert_names_file(&error, &path);
}

#[test]
fn an_undecodable_record_is_corrupt_and_stops_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<u64, &[u8]> =
                redb::TableDefinition::new("trexlock.entries");
            txn.open_table(def)
                .unwrap()
                .insert(1500, [0xFF; 3].as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut journal = RedbJournal::open(&path, me()).expect("the file itself is sound");
    let error = journal.load().unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("slot 1500"), "{error}");
    assert_names_file(&error, &path);
    let after = journal.persist(&JournalWrite::default()).unwrap_err();
    assert!(matches!(after, JournalError::Closed { .. }), "{after:?}");
}

#[test]
fn a_missing_metadata_record_is_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = written_journal(dir.path());
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&str, &[u8]> =
                redb::TableDefinition::new("trexlock.meta");
            txn.open_table(def).unwrap().remove("promised").unwrap();
        }
        txn.commit().unwrap();
    }
    let error = open_and_load(&path, me()).unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, JournalError::Corrupt { .. }), "{error:?}");
    assert!(error.to_string().contains("promised"), "{error}");
}

#[test]
fn a_journal_open_elsewhere_is_a_storage_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node1.journal");
    let _first = RedbJournal::open(&path, me()).unwrap();
    let error = RedbJournal::open(&path, me()).unwrap_err();
    eprintln!("{error}");
    assert!(matches!(error, JournalError::Storage { .. }), "{error:?}");
    assert_names_file(&error, &path);
}
