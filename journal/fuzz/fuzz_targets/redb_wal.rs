//! Opens a redb journal one of whose write-ahead logs was damaged or cut
//! short: a log the engine wrote (the first input byte picks which: the
//! first, emptied after a checkpoint, or the second, holding the newest
//! writes), with bytes flipped and its end cut off (see `common::edited`),
//! beside the other log, the redb file and the up-to-date mark the engine
//! left. Beyond "never panics": a journal that opens holds exactly
//! what was acknowledged (a lost or altered record is refused, never
//! dropped or misread), takes a write, and reopens with it.
#![no_main]

#[allow(dead_code)]
mod common;

use common::{clear, dir, edited, identity, mark_of};
use libfuzzer_sys::fuzz_target;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use trexlock_journal::{Journal, JournalState, JournalWrite, RedbJournal};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Value};

const NAME: &str = "journal.redb";

fn wal_of(path: &Path, log: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push([".wal", ".wal2"][log]);
    name.into()
}

/// A journal the engine wrote and dropped with its newest writes only in
/// its second log (the first one filled and was folded into the file): the
/// redb file, the logs, the mark, and the state they hold.
struct Written {
    file: Vec<u8>,
    logs: [Vec<u8>; 2],
    mark: Vec<u8>,
    state: JournalState,
}

fn written() -> Written {
    let path = dir().join(NAME);
    clear(&path);
    let mut journal = RedbJournal::open(&path, identity()).expect("create");
    let ballot = Ballot {
        counter: 3,
        node: NodeId(2),
    };
    // A fuzzing build's logs hold 16 KiB: about ten of these fill one.
    for slot in 1..=12u64 {
        let value = Value::Batch(vec![bytes::Bytes::from(vec![slot as u8; 1500])]);
        journal
            .persist(&JournalWrite {
                promised: (slot % 5 == 1).then_some(ballot),
                entries: vec![(slot, LogEntry { ballot, value })],
                committed: Some(slot - 1),
                truncate: (slot == 9).then_some(4),
                ..JournalWrite::default()
            })
            .expect("persist");
    }
    let state = journal.load().expect("load");
    drop(journal);
    let second = fs::read(wal_of(&path, 1)).expect("read log");
    assert!(
        second[32..].iter().any(|&b| b != 0),
        "the first log filled: the second holds the newest writes"
    );
    let written = Written {
        file: fs::read(&path).expect("read journal"),
        logs: [0, 1].map(|log| fs::read(wal_of(&path, log)).expect("read log")),
        mark: fs::read(mark_of(&path)).expect("read mark"),
        state,
    };
    clear(&path);
    written
}

fuzz_target!(|data: &[u8]| {
    static WRITTEN: OnceLock<Written> = OnceLock::new();
    let written = WRITTEN.get_or_init(written);
    let path = dir().join(NAME);
    clear(&path);
    let Some((pick, edits)) = data.split_first() else {
        return;
    };
    let damaged = usize::from(pick & 1);
    fs::write(&path, &written.file).expect("write journal");
    for (log, bytes) in written.logs.iter().enumerate() {
        let bytes = if log == damaged {
            edited(bytes, edits)
        } else {
            bytes.clone()
        };
        fs::write(wal_of(&path, log), bytes).expect("write log");
    }
    fs::write(mark_of(&path), &written.mark).expect("write mark");
    if let Ok(mut journal) = RedbJournal::open(&path, identity()) {
        let mut state = journal.load().expect("load");
        assert_eq!(
            state, written.state,
            "opened with an acknowledged write lost or altered"
        );
        let write = JournalWrite {
            promised: Some(Ballot {
                counter: u64::MAX,
                node: NodeId(9),
            }),
            ..JournalWrite::default()
        };
        journal
            .persist(&write)
            .expect("a journal that opened takes a write");
        drop(journal);
        state.apply(&write);
        let mut journal = RedbJournal::open(&path, identity()).expect("reopens");
        assert_eq!(journal.load().expect("load"), state, "reopening changed the state");
    }
    clear(&path);
});
