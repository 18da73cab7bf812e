//! Under a steady load of lease operations with regular snapshots and
//! truncation, the journal file stops growing: freed pages are reused.
//!
//! `TREXLOCK_COMPACTION_OPS=N` sets the number of operations (default
//! 1,000,000).

use bytes::Bytes;
use trexlock_journal::{Journal, JournalIdentity, JournalWrite, RedbJournal};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Slot, Snapshot, Value};

/// One slot per lease operation, the worst case for the number of slots.
const OPS_PER_SYNC: u64 = 100;
/// The state machine snapshots every this many slots...
const SNAPSHOT_EVERY: Slot = 10_000;
/// ...and keeps this many slots behind it for lagging peers.
const KEEP_BEHIND: Slot = 1_000;
/// A lease table of 1,000 leases of 64 bytes.
const SNAPSHOT_BYTES: usize = 64_000;
/// Generous for the live data (at most 11,000 entries, the snapshot and
/// metadata), yet far below the ~180 MB a million uncompacted entries take
/// (17.8 MB measured for 100,000).
const BOUND: u64 = 16 << 20;

/// A lease-like command: name, holder, request id, TTL and timestamp.
fn lease_command(op: u64) -> Bytes {
    Bytes::from(format!(
        "acquire lease-{:04} holder-{:02} req-{op:016x} ttl=10000ms at={}",
        op % 1000,
        op % 7,
        op * 3
    ))
}

#[test]
fn a_million_lease_operations_keep_the_journal_file_bounded() {
    let ops: u64 =
        std::env::var("TREXLOCK_COMPACTION_OPS").map_or(1_000_000, |v| v.parse().expect("a count"));
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node1.journal");
    let mut journal =
        RedbJournal::open(&path, JournalIdentity::new("bound", NodeId(1))).expect("open");
    let ballot = Ballot {
        counter: 1,
        node: NodeId(1),
    };
    journal
        .persist(&JournalWrite {
            promised: Some(ballot),
            ..JournalWrite::default()
        })
        .expect("promise");

    let mut sizes = Vec::new();
    let mut slot: Slot = 0;
    while slot < ops {
        let first = slot + 1;
        slot = (slot + OPS_PER_SYNC).min(ops);
        let compact = slot.is_multiple_of(SNAPSHOT_EVERY);
        let mut write = JournalWrite {
            entries: (first..=slot)
                .map(|s| {
                    let value = Value::Batch(vec![lease_command(s)]);
                    (s, LogEntry { ballot, value })
                })
                .collect(),
            committed: Some(slot),
            ..JournalWrite::default()
        };
        if compact {
            write.snapshot = Some(Snapshot {
                slot: slot - KEEP_BEHIND,
                data: Bytes::from(vec![(slot / SNAPSHOT_EVERY) as u8; SNAPSHOT_BYTES]),
            });
            write.truncate = Some(slot - KEEP_BEHIND);
        }
        journal.persist(&write).expect("persist");
        if compact {
            sizes.push(std::fs::metadata(&path).expect("size").len());
        }
    }
    let state = journal.load().expect("load");
    assert!(state.entries.len() as u64 <= SNAPSHOT_EVERY + KEEP_BEHIND);
    let last = std::fs::metadata(&path).expect("size").len();
    let peak = sizes.iter().copied().max().unwrap_or(0);
    let first_half_peak = sizes[..sizes.len() / 2].iter().copied().max().unwrap_or(0);
    eprintln!(
        "{ops} operations in {} syncs: file size after each compaction from {} bytes, \
         peak {peak} (first half {first_half_peak}), at the end {last}; {} entries live",
        ops.div_ceil(OPS_PER_SYNC),
        sizes.iter().min().unwrap_or(&0),
        state.entries.len()
    );
    assert!(peak <= BOUND, "the journal grew to {peak} bytes");
    assert!(
        peak <= first_half_peak,
        "the journal still grew in the second half: {sizes:?}"
    );
}
