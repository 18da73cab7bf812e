//! Journal sync throughput: one `persist` of 1, 16 and 256 lease-sized
//! entries to a [`RedbJournal`] and to a [`LogJournal`], next to the floor
//! on the same disk in the same run: a raw `write` + `sync_data` of the
//! same number of bytes.
//!
//! Time per iteration is one sync (syncs/s = 1 / time); the element
//! throughput criterion prints is entries/s.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalWrite, LogJournal, RedbJournal,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Slot, Value};

const BATCHES: [usize; 3] = [1, 16, 256];
/// A lease command: name, holder, request id, ttl, timestamp.
const COMMAND_BYTES: usize = 64;
/// What one entry costs on disk before the B-tree's own overhead: the
/// command, its ballot and the slot key.
const ENTRY_BYTES: usize = COMMAND_BYTES + 16;
/// Compact as a node would, so the file is in steady state, not growing.
const COMPACT_EVERY: Slot = 1 << 16;

fn lease_entry() -> LogEntry {
    LogEntry {
        ballot: Ballot {
            counter: 1,
            node: NodeId(1),
        },
        value: Value::Batch(vec![Bytes::from(vec![b'l'; COMMAND_BYTES])]),
    }
}

fn identity() -> JournalIdentity {
    JournalIdentity::new("bench", NodeId(1))
}

fn journal_sync(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut group = c.benchmark_group("journal_sync");
    for batch in BATCHES {
        group.throughput(Throughput::Elements(batch as u64));

        type Open = fn(&std::path::Path) -> Result<Box<dyn Journal>, JournalError>;
        let engines: [(&str, Open); 2] = [
            ("redb", |p| Ok(Box::new(RedbJournal::open(p, identity())?))),
            ("log", |p| Ok(Box::new(LogJournal::open(p, identity())?))),
        ];
        for (engine, open) in engines {
            let path = dir.path().join(format!("{engine}-{batch}.journal"));
            let mut journal = open(&path).expect("open");
            let entry = lease_entry();
            let mut next: Slot = 1;
            group.bench_function(BenchmarkId::new(engine, batch), |b| {
                b.iter(|| {
                    let first = next;
                    next += batch as Slot;
                    let compact = first / COMPACT_EVERY != (next - 1) / COMPACT_EVERY;
                    let write = JournalWrite {
                        entries: (first..next).map(|s| (s, entry.clone())).collect(),
                        committed: Some(next - 1),
                        truncate: compact.then(|| first.saturating_sub(1024)),
                        ..JournalWrite::default()
                    };
                    journal.persist(&write).expect("persist");
                });
            });
        }

        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.path().join(format!("raw-{batch}.bin")))
            .expect("raw file");
        // Preallocated and rewritten in place, so that the floor is one data
        // write and one sync, with no file-size metadata to flush.
        let region = (ENTRY_BYTES * 256 * 64) as u64;
        file.set_len(region).expect("preallocate");
        file.sync_all().expect("sync");
        let payload = vec![b'r'; ENTRY_BYTES * batch];
        let mut offset = 0u64;
        group.bench_function(BenchmarkId::new("raw_fsync", batch), |b| {
            b.iter(|| {
                file.write_all_at(&payload, offset).expect("write");
                file.sync_data().expect("sync");
                offset = (offset + payload.len() as u64) % (region - payload.len() as u64);
            });
        });
    }
    group.finish();
}

criterion_group!(benches, journal_sync);
criterion_main!(benches);
