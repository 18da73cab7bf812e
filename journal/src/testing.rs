//! The conformance suite: one call checks that a [`Journal`]
//! implementation keeps the contract, using [`JournalState::apply`] as the
//! reference model.
//!
//! Like openraft's `StoreBuilder`, the suite is handed a factory rather than
//! a journal: every property starts from fresh, empty storage, and can
//! close its handle and open the same storage again.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use trexlock_journal::testing::conformance;
//! use trexlock_journal::{Journal, JournalError, JournalState, JournalWrite, MemJournal};
//!
//! // MemJournal forgets everything when dropped; sharing it between
//! // handles stands in for the disk, so that reopening can be checked.
//! struct Handle(Arc<Mutex<MemJournal>>);
//! impl Journal for Handle {
//!     fn load(&mut self) -> Result<JournalState, JournalError> {
//!         self.0.lock().unwrap().load()
//!     }
//!     fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
//!         self.0.lock().unwrap().persist(write)
//!     }
//! }
//!
//! conformance(|| {
//!     let disk = Arc::new(Mutex::new(MemJournal::new()));
//!     move || Ok(Handle(disk.clone()))
//! });
//! ```

use bytes::Bytes;
use trexlock_paxos::{
    Ballot, Journal, JournalError, JournalState, JournalWrite, LogEntry, NodeId, Slot, Snapshot,
    Value,
};

/// Opens a new handle onto one store's storage.
type Opener<'a, J> = &'a mut dyn FnMut() -> Result<J, JournalError>;

/// What a property found wrong.
type Outcome = Result<(), String>;

/// Checks every conformance property and panics listing those that fail.
///
/// `new_store` is called once per property and must return an opener for
/// fresh, empty storage. Each call of that opener must return a new handle
/// onto the same storage; the suite drops the previous handle first, so an
/// implementation that locks its storage can be tested.
///
/// The properties: a fresh journal is empty; a write is read back by the
/// same handle; entries load in slot order and the later of two votes for
/// a slot wins; an unchosen slot can be overwritten; the stored promise is
/// the latest one; everything survives close and reopen; a snapshot plus
/// truncation deletes exactly the covered entries (compaction); an older
/// snapshot never replaces a newer one; a merged
/// write (group commit) equals its parts; an empty write changes nothing;
/// and long random write sequences, with reopens, match the reference
/// model.
pub fn conformance<J, O>(mut new_store: impl FnMut() -> O)
where
    J: Journal,
    O: FnMut() -> Result<J, JournalError>,
{
    type Property<J> = fn(&mut Harness<'_, J>) -> Outcome;
    let properties: [(&str, Property<J>); 11] = [
        (
            "a_fresh_journal_loads_the_empty_state",
            a_fresh_journal_loads_the_empty_state,
        ),
        (
            "a_write_is_read_back_by_the_same_handle",
            a_write_is_read_back_by_the_same_handle,
        ),
        (
            "entries_load_in_slot_order_and_the_later_vote_wins",
            entries_load_in_slot_order_and_the_later_vote_wins,
        ),
        (
            "an_unchosen_slot_can_be_overwritten",
            an_unchosen_slot_can_be_overwritten,
        ),
        (
            "the_stored_promise_is_the_latest_one",
            the_stored_promise_is_the_latest_one,
        ),
        (
            "everything_survives_close_and_reopen",
            everything_survives_close_and_reopen,
        ),
        (
            "snapshot_and_truncation_delete_exactly_the_covered_entries",
            snapshot_and_truncation_delete_exactly_the_covered_entries,
        ),
        (
            "an_older_snapshot_never_replaces_a_newer_one",
            an_older_snapshot_never_replaces_a_newer_one,
        ),
        (
            "a_merged_write_equals_its_parts_in_order",
            a_merged_write_equals_its_parts_in_order,
        ),
        (
            "an_empty_write_changes_nothing",
            an_empty_write_changes_nothing,
        ),
        (
            "random_write_sequences_match_the_reference_model",
            random_write_sequences_match_the_reference_model,
        ),
    ];
    let mut failures = Vec::new();
    for (name, property) in properties {
        let mut open = new_store();
        let mut harness = Harness {
            open: &mut open,
            journal: None,
            model: JournalState::default(),
        };
        if let Err(why) = property(&mut harness) {
            failures.push(format!("{name}: {why}"));
        }
    }
    assert!(
        failures.is_empty(),
        "journal conformance failed:\n  {}",
        failures.join("\n  ")
    );
}

/// A journal under test next to the reference model of what it must hold.
struct Harness<'a, J> {
    open: Opener<'a, J>,
    journal: Option<J>,
    model: JournalState,
}

impl<J: Journal> Harness<'_, J> {
    fn journal(&mut self) -> Result<&mut J, String> {
        if self.journal.is_none() {
            self.journal = Some((self.open)().map_err(|e| format!("open failed: {e}"))?);
        }
        Ok(self.journal.as_mut().expect("opened just above"))
    }

    fn persist(&mut self, write: &JournalWrite) -> Outcome {
        self.journal()?
            .persist(write)
            .map_err(|e| format!("persist failed: {e}"))?;
        self.model.apply(write);
        Ok(())
    }

    /// Closes the handle; the next operation opens a new one.
    fn reopen(&mut self) {
        self.journal = None;
    }

    fn load(&mut self) -> Result<JournalState, String> {
        self.journal()?
            .load()
            .map_err(|e| format!("load failed: {e}"))
    }

    fn expect_model(&mut self, when: &str) -> Outcome {
        let found = self.load()?;
        match difference(&self.model, &found) {
            None => Ok(()),
            Some(diff) => Err(format!("{when}: {diff}")),
        }
    }
}

/// The first field in which `found` differs from `expected`, described
/// briefly (states can hold thousands of entries).
fn difference(expected: &JournalState, found: &JournalState) -> Option<String> {
    if expected.promised != found.promised {
        return Some(format!(
            "promised {} but expected {}",
            found.promised, expected.promised
        ));
    }
    if expected.committed != found.committed {
        return Some(format!(
            "committed {} but expected {}",
            found.committed, expected.committed
        ));
    }
    if expected.truncated != found.truncated {
        return Some(format!(
            "truncated {} but expected {}",
            found.truncated, expected.truncated
        ));
    }
    if expected.snapshot != found.snapshot {
        let slot = |s: &Option<Snapshot>| s.as_ref().map(|s| s.slot);
        return Some(format!(
            "snapshot differs (found slot {:?}, expected slot {:?})",
            slot(&found.snapshot),
            slot(&expected.snapshot)
        ));
    }
    let slots = |s: &JournalState| s.entries.keys().copied().collect::<Vec<_>>();
    if slots(expected) != slots(found) {
        return Some(format!(
            "entries hold slots {:?} but expected {:?}",
            abbreviate(&slots(found)),
            abbreviate(&slots(expected))
        ));
    }
    expected
        .entries
        .iter()
        .find(|(slot, entry)| found.entries.get(slot) != Some(entry))
        .map(|(slot, entry)| {
            format!(
                "slot {slot} holds {:?} but expected {entry:?}",
                found.entries[slot]
            )
        })
}

fn abbreviate(slots: &[Slot]) -> String {
    if slots.len() <= 8 {
        format!("{slots:?}")
    } else {
        format!(
            "{:?}..{:?} ({} slots)",
            &slots[..4],
            &slots[slots.len() - 4..],
            slots.len()
        )
    }
}

fn ballot(counter: u64, node: u16) -> Ballot {
    Ballot {
        counter,
        node: NodeId(node),
    }
}

fn vote(counter: u64, text: &str) -> LogEntry {
    LogEntry {
        ballot: ballot(counter, 1),
        value: Value::Batch(vec![Bytes::copy_from_slice(text.as_bytes())]),
    }
}

fn entries(items: &[(Slot, LogEntry)]) -> JournalWrite {
    JournalWrite {
        entries: items.to_vec(),
        ..JournalWrite::default()
    }
}

fn snapshot(slot: Slot, data: &str) -> Snapshot {
    Snapshot {
        slot,
        data: Bytes::copy_from_slice(data.as_bytes()),
    }
}

fn a_fresh_journal_loads_the_empty_state<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.expect_model("fresh journal")?;
    h.reopen();
    h.expect_model("fresh journal reopened")
}

fn a_write_is_read_back_by_the_same_handle<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.persist(&JournalWrite {
        promised: Some(ballot(3, 2)),
        entries: vec![
            (1, vote(3, "a")),
            (
                2,
                LogEntry {
                    ballot: ballot(3, 2),
                    value: Value::Noop,
                },
            ),
            (
                3,
                LogEntry {
                    ballot: ballot(3, 2),
                    value: Value::Batch(vec![]),
                },
            ),
            (
                4,
                LogEntry {
                    ballot: ballot(3, 2),
                    value: Value::Batch(vec![Bytes::new(), Bytes::from(vec![0xAB; 70_000])]),
                },
            ),
        ],
        committed: Some(2),
        snapshot: None,
        truncate: None,
    })?;
    h.expect_model("first load after persist")?;
    h.expect_model("second load after persist")
}

fn entries_load_in_slot_order_and_the_later_vote_wins<J: Journal>(
    h: &mut Harness<'_, J>,
) -> Outcome {
    h.persist(&entries(&[
        (9, vote(1, "nine")),
        (2, vote(1, "two")),
        (300, vote(1, "three hundred")),
        (2, vote(2, "two again")),
        (1, vote(1, "one")),
    ]))?;
    h.persist(&entries(&[
        (5, vote(2, "five")),
        (u64::MAX, vote(2, "last")),
    ]))?;
    let found = h.load()?;
    let order: Vec<Slot> = found.entries.keys().copied().collect();
    if order != [1, 2, 5, 9, 300, u64::MAX] {
        return Err(format!("slots load as {order:?}"));
    }
    h.expect_model("after writes out of slot order")
}

fn an_unchosen_slot_can_be_overwritten<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.persist(&entries(&[(4, vote(1, "old")), (5, vote(1, "kept"))]))?;
    h.persist(&JournalWrite {
        promised: Some(ballot(2, 3)),
        entries: vec![(
            4,
            LogEntry {
                ballot: ballot(2, 3),
                value: Value::Noop,
            },
        )],
        ..JournalWrite::default()
    })?;
    h.expect_model("after overwrite")?;
    h.reopen();
    h.expect_model("after overwrite and reopen")
}

fn the_stored_promise_is_the_latest_one<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    for (counter, node) in [(1, 1), (1, 3), (2, 1), (40, 2), (u64::MAX, 1)] {
        h.persist(&JournalWrite {
            promised: Some(ballot(counter, node)),
            ..JournalWrite::default()
        })?;
        h.expect_model("after a higher promise")?;
    }
    // Writes that carry no promise must leave it alone.
    h.persist(&entries(&[(1, vote(1, "x"))]))?;
    h.persist(&JournalWrite {
        committed: Some(1),
        snapshot: Some(snapshot(1, "s")),
        truncate: Some(1),
        ..JournalWrite::default()
    })?;
    h.expect_model("after writes without a promise")?;
    h.reopen();
    h.expect_model("after reopen")
}

fn everything_survives_close_and_reopen<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.persist(&JournalWrite {
        promised: Some(ballot(5, 1)),
        entries: (1..=50).map(|s| (s, vote(5, &s.to_string()))).collect(),
        committed: Some(40),
        snapshot: Some(snapshot(10, "state at 10")),
        truncate: Some(10),
    })?;
    h.reopen();
    h.expect_model("after first reopen")?;
    h.persist(&entries(&[(51, vote(6, "fifty-one"))]))?;
    h.reopen();
    h.reopen();
    h.expect_model("after a second reopen")
}

fn snapshot_and_truncation_delete_exactly_the_covered_entries<J: Journal>(
    h: &mut Harness<'_, J>,
) -> Outcome {
    h.persist(&entries(
        &(1..=20)
            .map(|s| (s, vote(1, &format!("v{s}"))))
            .collect::<Vec<_>>(),
    ))?;
    h.persist(&JournalWrite {
        committed: Some(20),
        snapshot: Some(snapshot(10, "state at 10")),
        truncate: Some(10),
        ..JournalWrite::default()
    })?;
    h.expect_model("after compaction to 10")?;
    // A lower truncation point never lowers the mark.
    h.persist(&JournalWrite {
        truncate: Some(5),
        ..JournalWrite::default()
    })?;
    h.expect_model("after a lower truncation")?;
    // Installing a newer snapshot from a peer replaces the old one and may
    // truncate past every entry held.
    h.persist(&JournalWrite {
        snapshot: Some(snapshot(100, "state at 100")),
        truncate: Some(100),
        ..JournalWrite::default()
    })?;
    h.expect_model("after truncating past the last entry")?;
    h.persist(&entries(&[(101, vote(2, "after the snapshot"))]))?;
    h.reopen();
    h.expect_model("after compaction and reopen")
}

fn an_older_snapshot_never_replaces_a_newer_one<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.persist(&JournalWrite {
        snapshot: Some(snapshot(20, "state at 20")),
        ..JournalWrite::default()
    })?;
    // A snapshot installed late from a peer, older than the one held.
    h.persist(&JournalWrite {
        snapshot: Some(snapshot(15, "state at 15")),
        ..JournalWrite::default()
    })?;
    h.expect_model("after an older snapshot")?;
    h.reopen();
    h.expect_model("after an older snapshot and reopen")?;
    h.persist(&JournalWrite {
        snapshot: Some(snapshot(30, "state at 30")),
        ..JournalWrite::default()
    })?;
    h.reopen();
    h.expect_model("after a newer snapshot and reopen")
}

fn a_merged_write_equals_its_parts_in_order<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    let parts = [
        JournalWrite {
            promised: Some(ballot(2, 1)),
            entries: vec![(1, vote(2, "a")), (2, vote(2, "b")), (3, vote(2, "c"))],
            ..JournalWrite::default()
        },
        JournalWrite {
            entries: vec![(2, vote(3, "b'")), (4, vote(3, "d"))],
            committed: Some(2),
            snapshot: Some(snapshot(2, "state at 2")),
            truncate: Some(2),
            ..JournalWrite::default()
        },
        JournalWrite {
            promised: Some(ballot(4, 2)),
            entries: vec![(5, vote(4, "e"))],
            committed: Some(4),
            truncate: Some(1),
            ..JournalWrite::default()
        },
    ];
    let mut merged = JournalWrite::default();
    let mut reference = JournalState::default();
    for part in parts {
        reference.apply(&part);
        merged.merge(part);
    }
    h.persist(&merged)?;
    match difference(&reference, &h.load()?) {
        Some(diff) => Err(format!("merged write: {diff}")),
        None => {
            h.reopen();
            h.expect_model("merged write after reopen")
        }
    }
}

fn an_empty_write_changes_nothing<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    h.persist(&JournalWrite::default())?;
    h.expect_model("empty write on an empty journal")?;
    h.persist(&JournalWrite {
        promised: Some(ballot(1, 1)),
        entries: vec![(1, vote(1, "a"))],
        committed: Some(1),
        ..JournalWrite::default()
    })?;
    h.persist(&JournalWrite::default())?;
    h.expect_model("empty write after a write")
}

fn random_write_sequences_match_the_reference_model<J: Journal>(h: &mut Harness<'_, J>) -> Outcome {
    // A fixed seed keeps a failure reproducible; the generator is inline so
    // that the suite adds no dependency to the crate under test.
    let mut rng = SplitMix64(0x7e3a_10c4_2b9d_5f61);
    let mut counter = 1;
    let mut next_slot: Slot = 1;
    for step in 0..300 {
        let mut write = JournalWrite::default();
        if rng.below(4) == 0 {
            counter += rng.below(3);
            write.promised = Some(ballot(counter, 1 + rng.below(5) as u16));
        }
        for _ in 0..rng.below(6) {
            // Mostly new slots, sometimes a revote on a recent one.
            let slot = if rng.below(5) == 0 && next_slot > 1 {
                next_slot - 1 - rng.below(next_slot.min(8) - 1)
            } else {
                next_slot += 1;
                next_slot - 1
            };
            let size = rng.below(200) as usize;
            let commands = (0..rng.below(4))
                .map(|_| Bytes::from(vec![rng.below(256) as u8; size]))
                .collect();
            write.entries.push((
                slot,
                LogEntry {
                    ballot: ballot(counter, 1),
                    value: if rng.below(10) == 0 {
                        Value::Noop
                    } else {
                        Value::Batch(commands)
                    },
                },
            ));
        }
        if rng.below(3) == 0 {
            write.committed = Some(rng.below(next_slot));
        }
        if rng.below(15) == 0 && next_slot > 1 {
            let upto = rng.below(next_slot);
            write.snapshot = Some(snapshot(upto, &format!("state at {upto}")));
            write.truncate = Some(upto);
        }
        h.persist(&write)?;
        if rng.below(25) == 0 {
            h.reopen();
        }
        if step % 10 == 0 {
            h.expect_model(&format!("random step {step}"))?;
        }
    }
    h.reopen();
    h.expect_model("end of random sequence after reopen")
}

/// Steele, Lea and Flood's SplitMix64: tiny, fast and good enough to vary
/// test inputs.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % bound.max(1)
    }
}
