//! Crash safety for real: a child process persists to a journal (redb, or
//! the append-only log) in a loop and reports each acknowledged sync; the
//! test kills it with SIGKILL at random moments, reopens the journal, and
//! checks that the file opens cleanly and holds every acknowledged write.
//!
//! `TREXLOCK_CRASH_KILLS=N` sets the number of kills (default 20);
//! `TREXLOCK_CRASH_SEED=S` fixes the random choices of the parent.

use bytes::Bytes;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalState, JournalWrite, LogJournal, RedbJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Slot, Snapshot, Value};

/// Set in the child's environment to the journal path it must write.
const CHILD_ENV: &str = "TREXLOCK_CRASH_CHILD_JOURNAL";
/// Set in the child's environment to the engine: `redb` or `log`.
const ENGINE_ENV: &str = "TREXLOCK_CRASH_CHILD_ENGINE";
const CHILD_TEST: &str = "child_writer_for_the_sigkill_test";
/// SIGKILL's number on every Unix.
const SIGKILL: i32 = 9;
/// Entries kept behind each compaction, so that truncation frees pages
/// while the child runs.
const KEEP_AFTER_COMPACTION: Slot = 200;

fn identity() -> JournalIdentity {
    JournalIdentity::new("crash", NodeId(1))
}

fn open(engine: &str, path: &Path) -> Result<Box<dyn Journal>, JournalError> {
    Ok(match engine {
        "redb" => Box::new(RedbJournal::open(path, identity())?),
        "log" => Box::new(LogJournal::open(path, identity())?),
        other => panic!("no engine {other}"),
    })
}

/// The value the child writes for `slot`: a pure function of the slot, so
/// the parent can check every byte. Sizes vary to vary the page layout.
fn value_for(slot: Slot) -> Value {
    let len = (slot * 7919 % 600) as usize;
    Value::Batch(vec![Bytes::from(vec![(slot % 251) as u8; len])])
}

/// Not a check on its own: the body of the child process that the SIGKILL
/// test spawns (this test binary, re-executed). Without the environment
/// variable it returns at once.
#[test]
fn child_writer_for_the_sigkill_test() {
    let Some(path) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let engine = std::env::var(ENGINE_ENV).expect("child: engine");
    let mut journal = open(&engine, Path::new(&path)).expect("child: open");
    let state = journal.load().expect("child: load");
    let mut next = state
        .entries
        .keys()
        .next_back()
        .copied()
        .unwrap_or(0)
        .max(state.truncated)
        + 1;
    // Each incarnation campaigns anew, as a restarted node would.
    let ballot = Ballot {
        counter: state.promised.counter + 1,
        node: NodeId(1),
    };
    let mut rng = fastrand::Rng::with_seed(next);
    let mut out = std::io::stdout().lock();
    writeln!(out, "opened").expect("child: stdout");
    out.flush().expect("child: flush");
    let mut writes: u64 = 0;
    loop {
        let first = next;
        next += rng.u64(1..=16);
        let mut write = JournalWrite {
            promised: (writes == 0).then_some(ballot),
            entries: (first..next)
                .map(|slot| {
                    let value = value_for(slot);
                    (slot, LogEntry { ballot, value })
                })
                .collect(),
            committed: Some(next - 1),
            ..JournalWrite::default()
        };
        if writes % 40 == 39 {
            let upto = (next - 1).saturating_sub(KEEP_AFTER_COMPACTION);
            write.snapshot = Some(Snapshot {
                slot: upto,
                data: Bytes::from(upto.to_le_bytes().repeat(500)),
            });
            write.truncate = Some(upto);
        }
        journal.persist(&write).expect("child: persist");
        writeln!(out, "ack {} {}", ballot.counter, next - 1).expect("child: stdout");
        out.flush().expect("child: flush");
        writes += 1;
    }
}

/// What the killed child had acknowledged.
#[derive(Clone, Copy, Debug, Default)]
struct Acked {
    promise: u64,
    slot: Slot,
}

/// Reads the child's acknowledgements up to its death; a line cut short by
/// the kill is not an acknowledgement.
fn acknowledged(stdout: impl BufRead, before: Acked) -> (Acked, u64) {
    let mut acked = before;
    let mut count = 0;
    for line in stdout.split(b'\n') {
        let line = String::from_utf8(line.expect("read child stdout")).expect("utf-8");
        let mut words = line.split(' ');
        if words.next() != Some("ack") {
            continue;
        }
        let mut number = || words.next().and_then(|w| w.parse().ok());
        if let (Some(promise), Some(slot)) = (number(), number()) {
            acked = Acked { promise, slot };
            count += 1;
        }
    }
    (acked, count)
}

/// Every acknowledged write is in `state`, and `state` is internally
/// sound: entries run contiguously from the truncation point, each holding
/// exactly the value written, in a ballot no higher than the promise.
fn check(state: &JournalState, acked: Acked, round: u64) {
    let at = format!("after kill {round} (acked {acked:?})");
    assert!(
        state.promised.counter >= acked.promise,
        "{at}: promise {} lost",
        state.promised
    );
    assert!(
        state.committed >= acked.slot,
        "{at}: committed {} lost",
        state.committed
    );
    let last = state
        .entries
        .keys()
        .next_back()
        .copied()
        .unwrap_or(state.truncated);
    assert!(last >= acked.slot, "{at}: entries end at {last}");
    if state.truncated > 0 {
        let snapshot = state
            .snapshot
            .as_ref()
            .expect("truncated without a snapshot");
        assert_eq!(
            snapshot.slot, state.truncated,
            "{at}: snapshot does not match truncation"
        );
    }
    let expected: Vec<Slot> = (state.truncated + 1..=last).collect();
    let found: Vec<Slot> = state.entries.keys().copied().collect();
    assert!(found == expected, "{at}: entries are not contiguous");
    for (slot, entry) in &state.entries {
        assert_eq!(
            entry.value,
            value_for(*slot),
            "{at}: slot {slot} holds the wrong value"
        );
        assert!(
            entry.ballot <= state.promised,
            "{at}: slot {slot} above the promise"
        );
    }
}

fn reopen_and_check(engine: &str, path: &Path, acked: Acked, round: u64) -> JournalState {
    let mut journal = open(engine, path)
        .unwrap_or_else(|e| panic!("after kill {round} the journal does not open: {e}"));
    let state = journal
        .load()
        .unwrap_or_else(|e| panic!("after kill {round} the journal does not load: {e}"));
    check(&state, acked, round);
    state
}

#[test]
fn every_acknowledged_write_survives_sigkill_redb() {
    survives_sigkill("redb");
}

#[test]
fn every_acknowledged_write_survives_sigkill_log() {
    survives_sigkill("log");
}

fn survives_sigkill(engine: &str) {
    let kills: u64 =
        std::env::var("TREXLOCK_CRASH_KILLS").map_or(20, |v| v.parse().expect("a count"));
    let seed: u64 = std::env::var("TREXLOCK_CRASH_SEED")
        .map_or_else(|_| fastrand::u64(..), |v| v.parse().expect("a seed"));
    eprintln!("sigkill test ({engine}): {kills} kills, TREXLOCK_CRASH_SEED={seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("crash.journal");
    let exe = std::env::current_exe().expect("test binary");

    let mut acked = Acked::default();
    let (mut total_acks, mut rounds_with_acks, mut mid_stream) = (0, 0, 0);
    for round in 1..=kills {
        let mut child = Command::new(&exe)
            .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, &path)
            .env(ENGINE_ENV, engine)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        // Mostly mid-stream (once the child says it has opened the
        // journal), sometimes while it is still opening (and repairing) it.
        let delay = if rng.u8(..4) == 0 {
            rng.u64(0..30_000)
        } else {
            let mut opened = String::new();
            stdout.read_line(&mut opened).expect("read child stdout");
            mid_stream += 1;
            rng.u64(0..300_000)
        };
        let before = acked;
        let reader = std::thread::spawn(move || acknowledged(stdout, before));
        std::thread::sleep(Duration::from_micros(delay));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        let (now, count) = reader.join().expect("reader");
        if status.signal() != Some(SIGKILL) {
            let mut err = String::new();
            child
                .stderr
                .take()
                .expect("piped")
                .read_to_string(&mut err)
                .ok();
            panic!("kill {round}: child ended on its own ({status}): {err}");
        }
        acked = now;
        total_acks += count;
        rounds_with_acks += u64::from(count > 0);
        reopen_and_check(engine, &path, acked, round);
    }
    let size = std::fs::metadata(&path).map_or(0, |m| m.len());
    eprintln!(
        "{engine}: survived {kills} kills; {total_acks} acknowledged syncs ({rounds_with_acks} rounds \
         with some), last acked slot {}, file {size} bytes",
        acked.slot
    );
    assert!(
        rounds_with_acks * 2 >= mid_stream,
        "too few kills landed mid-stream to mean anything"
    );
}

/// A journal is created under another name and renamed into place, so a
/// crash while creating it leaves no half-written journal that every later
/// open would refuse as damaged (the SIGKILL test found this in redb).
#[test]
fn a_creation_cut_short_leaves_nothing_to_refuse() {
    for (engine, name) in [("redb", "journal.redb"), ("log", "journal.log")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join(name);
        let creating = dir.path().join(format!("{name}.creating"));
        std::fs::write(&creating, b"the first bytes of a new jour").expect("write");
        let mut journal = open(engine, &path)
            .unwrap_or_else(|e| panic!("{engine}: after a cut-short creation: {e}"));
        assert_eq!(journal.load().expect("load"), JournalState::default());
        assert!(!creating.exists(), "{engine}: the partial file is left");
    }
}
