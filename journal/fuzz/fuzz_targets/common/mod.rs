//! What the targets check of a journal opened on arbitrary bytes: opening
//! never panics; a refused log journal is left exactly as it was (never
//! reset); a journal that opens loads, takes a write, and reopens with that
//! write on top of what it loaded (so whatever recovery repaired is a
//! journal again).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use trexlock_journal::{Journal, JournalError, JournalIdentity, JournalWrite};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Snapshot, Value};

pub type OpenResult = Result<Box<dyn Journal>, JournalError>;
pub type Open = fn(&Path, JournalIdentity) -> OpenResult;

pub fn identity() -> JournalIdentity {
    JournalIdentity::new("fuzz", NodeId(1))
}

/// A directory of this process's own in memory (a journal syncs on open).
pub fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            Path::new("/dev/shm").join(format!("trexlock-journal-fuzz-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("fuzz directory");
        dir
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    name.into()
}

pub fn mark_of(path: &Path) -> PathBuf {
    sibling(path, ".acked")
}

/// Removes the journal at `path` and everything that goes with it.
pub fn clear(path: &Path) {
    for file in [
        path.to_path_buf(),
        mark_of(path),
        sibling(path, ".creating"),
        sibling(path, ".compacting"),
        sibling(path, ".wal"),
        sibling(path, ".wal.creating"),
        sibling(path, ".wal2"),
        sibling(path, ".wal2.creating"),
    ] {
        let _ = fs::remove_file(file);
    }
}

/// A journal written by the engine itself: a promise, entries, a snapshot
/// and a truncation, as `(file, mark)`.
pub fn written(open: Open, name: &str) -> (Vec<u8>, Vec<u8>) {
    let path = dir().join(name);
    clear(&path);
    let mut journal = open(&path, identity()).expect("create");
    let ballot = Ballot {
        counter: 3,
        node: NodeId(2),
    };
    for chunk in 0..8u64 {
        journal
            .persist(&JournalWrite {
                promised: Some(ballot),
                entries: (1..=4)
                    .map(|i| {
                        let slot = chunk * 4 + i;
                        let value = Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 40])]);
                        (slot, LogEntry { ballot, value })
                    })
                    .collect(),
                committed: Some(chunk * 4),
                snapshot: (chunk % 3 == 2).then(|| Snapshot {
                    slot: chunk * 4,
                    data: bytes::Bytes::from(vec![7; 30]),
                }),
                truncate: (chunk % 3 == 2).then(|| chunk * 4 - 2),
            })
            .expect("persist");
    }
    drop(journal);
    let files = (
        fs::read(&path).expect("read"),
        fs::read(mark_of(&path)).expect("mark"),
    );
    clear(&path);
    files
}

/// `file` with `edits` applied: each three bytes an offset (u16, LE, taken
/// modulo the length) and a byte XORed in; a last lone byte, if non-zero,
/// cuts the file short by that many 64-byte steps.
pub fn edited(file: &[u8], edits: &[u8]) -> Vec<u8> {
    let mut file = file.to_vec();
    let (triples, rest) = edits.as_chunks::<3>();
    for [lo, hi, xor] in triples {
        if !file.is_empty() {
            let at = usize::from(u16::from_le_bytes([*lo, *hi])) % file.len();
            file[at] ^= xor;
        }
    }
    if let [cut, ..] = rest {
        file.truncate(file.len().saturating_sub(usize::from(*cut) * 64));
    }
    file
}

/// Opens the journal `name` holding `file` (and `mark`, if any) and checks
/// the properties above; `untouched_if_refused` is false for redb, which
/// writes to a file as it opens it, before any check of ours can run.
pub fn check(open: Open, name: &str, file: &[u8], mark: Option<&[u8]>, untouched_if_refused: bool) {
    let path = dir().join(name);
    clear(&path);
    fs::write(&path, file).expect("write journal");
    if let Some(mark) = mark {
        fs::write(mark_of(&path), mark).expect("write mark");
    }
    let opened = open(&path, identity()).and_then(|mut journal| {
        let state = journal.load()?;
        Ok((journal, state))
    });
    match opened {
        Err(_) if untouched_if_refused => {
            let now = fs::read(&path).expect("read journal");
            assert!(now == file, "a refused journal was changed");
        }
        Err(_) => {}
        Ok((mut journal, mut state)) => {
            // A promise and a snapshot newer than any held: a journal that
            // opened must take both (the snapshot write reads what the
            // journal records of the snapshot it holds).
            let newer = state.snapshot.as_ref().map_or(1, |s| s.slot.saturating_add(1));
            let write = JournalWrite {
                promised: Some(Ballot {
                    counter: u64::MAX,
                    node: NodeId(9),
                }),
                snapshot: Some(Snapshot {
                    slot: newer,
                    data: vec![1, 2, 3].into(),
                }),
                ..JournalWrite::default()
            };
            journal
                .persist(&write)
                .expect("a journal that opened takes a write");
            drop(journal);
            state.apply(&write);
            let mut journal = open(&path, identity()).expect("a repaired journal reopens");
            assert_eq!(
                journal.load().expect("load"),
                state,
                "reopening changed the state"
            );
        }
    }
    clear(&path);
}

/// The mark to write: none, or up to 17 bytes of `data`, chosen by
/// `selector`; returns it and the rest of `data`.
pub fn mark(selector: u8, data: &[u8]) -> (Option<&[u8]>, &[u8]) {
    if selector < 128 {
        return (None, data);
    }
    let len = usize::from(selector % 18).min(data.len());
    let (mark, rest) = data.split_at(len);
    (Some(mark), rest)
}
