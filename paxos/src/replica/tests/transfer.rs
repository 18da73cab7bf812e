//! Snapshots travel in chunks within the message limit, and only a whole,
//! intact snapshot is installed.

use super::*;

const MESSAGE_LIMIT: usize = 2048;

fn small_messages(node: NodeId) -> Config {
    let mut cfg = config(node);
    cfg.max_message_bytes = MESSAGE_LIMIT;
    cfg.max_batch_bytes = 1024;
    cfg
}

/// Bytes that differ from chunk to chunk, so a misplaced chunk shows.
fn table_bytes(len: usize) -> Bytes {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

/// N1 holds a snapshot at slot 6 of `len` bytes, slots 7 and 8 after it,
/// and has compacted everything before.
fn n1_with_snapshot(len: usize) -> (Replica, Snapshot) {
    let mut entries = BTreeMap::new();
    for s in 7..=8 {
        let value = batch(&s.to_string());
        entries.insert(
            s,
            LogEntry {
                ballot: b(1, N1),
                value,
            },
        );
    }
    let snapshot = Snapshot {
        slot: 6,
        data: table_bytes(len),
    };
    let state = JournalState {
        promised: b(1, N1),
        committed: 8,
        truncated: 6,
        snapshot: Some(snapshot.clone()),
        entries,
    };
    let r = Replica::new(small_messages(N1), state, T0).unwrap();
    (r, snapshot)
}

/// An empty N2 with small messages, told by leader N1 that 8 slots are
/// chosen; returns it with its catch-up request.
fn lagging_n2() -> (Replica, Vec<Envelope>) {
    let mut r = Replica::new(small_messages(N2), JournalState::default(), T0).unwrap();
    for peer in [N1, N3] {
        let reply = Message::ProbeReply {
            promised: Ballot::ZERO,
            last_slot: 0,
        };
        let _ = r.handle(T0, env(peer, N2, reply)).unwrap();
    }
    let commit = Message::Commit {
        ballot: b(1, N1),
        committed: 8,
    };
    let ready = r.handle(ms(1), env(N1, N2, commit)).unwrap();
    (r, ready.messages)
}

fn chunk(snapshot: &Snapshot, offset: usize, len: usize, checksum: u32) -> Message {
    Message::SnapshotChunk {
        slot: snapshot.slot,
        total_len: snapshot.data.len() as u64,
        checksum,
        offset: offset as u64,
        data: snapshot.data.slice(offset..offset + len),
    }
}

#[test]
fn a_snapshot_several_times_the_message_limit_reaches_a_lagging_follower_in_chunks() {
    let (mut n1, snapshot) = n1_with_snapshot(5 * MESSAGE_LIMIT + 100);
    let (mut n2, mut in_flight) = lagging_n2();
    let mut installed = None;
    let mut chunks = 0;
    let mut now = ms(2);
    while let Some(envelope) = in_flight.pop() {
        if envelope.to == N3 {
            continue;
        }
        let encoded = postcard::to_stdvec(&envelope).unwrap().len();
        assert!(
            encoded <= MESSAGE_LIMIT,
            "a {} of {encoded} bytes",
            envelope.message.kind()
        );
        chunks += usize::from(matches!(envelope.message, Message::SnapshotChunk { .. }));
        let to = if envelope.to == N1 { &mut n1 } else { &mut n2 };
        let ready = to.handle(now, envelope).unwrap();
        assert_eq!(ready.refused, None);
        installed = installed.or(ready.install);
        in_flight.extend(ready.messages);
        now += ms(1);
    }
    assert_eq!(installed, Some(snapshot));
    assert!(chunks >= 6, "{chunks} chunks");
    assert_eq!(n2.committed(), 8, "and the slots after it followed");
}

#[test]
fn chunks_that_do_not_continue_the_assembly_are_refused_and_the_transfer_goes_on() {
    let (_, snapshot) = n1_with_snapshot(300);
    let crc = crc32fast::hash(&snapshot.data);
    let (mut n2, _) = lagging_n2();
    let first = n2.handle(ms(2), env(N1, N2, chunk(&snapshot, 0, 100, crc)));
    assert_eq!(
        only_message(&first.unwrap()),
        &Message::SnapshotRequest {
            slot: 6,
            offset: 100
        }
    );
    for (offset, len) in [(0, 100), (200, 100), (50, 100), (100, 250)] {
        let ready = n2
            .handle(
                ms(3),
                env(N1, N2, chunk_or_past_end(&snapshot, offset, len, crc)),
            )
            .unwrap();
        assert_eq!(
            ready.refused,
            Some(Refusal::SnapshotChunkOutOfOrder {
                offset: offset as u64,
                expected: 100
            }),
            "offset {offset}, {len} bytes"
        );
        assert!(ready.install.is_none());
    }
    for offset in [100, 200] {
        let ready = n2
            .handle(ms(4), env(N1, N2, chunk(&snapshot, offset, 100, crc)))
            .unwrap();
        assert_eq!(ready.refused, None);
        if offset == 200 {
            assert_eq!(ready.install, Some(snapshot.clone()));
        }
    }
}

/// A chunk that may claim bytes past the snapshot's announced end.
fn chunk_or_past_end(snapshot: &Snapshot, offset: usize, len: usize, crc: u32) -> Message {
    let mut message = chunk(snapshot, offset, 0, crc);
    if let Message::SnapshotChunk { data, .. } = &mut message {
        *data = table_bytes(len);
    }
    message
}

#[test]
fn an_assembled_snapshot_that_fails_its_checksum_is_never_installed() {
    let (_, snapshot) = n1_with_snapshot(300);
    let wrong = crc32fast::hash(&snapshot.data) ^ 1;
    let (mut n2, _) = lagging_n2();
    let _ = n2
        .handle(ms(2), env(N1, N2, chunk(&snapshot, 0, 200, wrong)))
        .unwrap();
    let ready = n2
        .handle(ms(3), env(N1, N2, chunk(&snapshot, 200, 100, wrong)))
        .unwrap();
    assert_eq!(ready.refused, Some(Refusal::SnapshotChecksum { slot: 6 }));
    assert!(ready.install.is_none() && ready.write.snapshot.is_none());
    assert_eq!(n2.committed(), 0);
}

#[test]
fn a_snapshot_announced_larger_than_the_limit_is_refused_at_its_first_chunk() {
    let (mut n2, _) = lagging_n2();
    let max = n2.config().max_snapshot_bytes;
    let message = Message::SnapshotChunk {
        slot: 6,
        total_len: max + 1,
        checksum: 0,
        offset: 0,
        data: table_bytes(100),
    };
    let ready = n2.handle(ms(2), env(N1, N2, message)).unwrap();
    assert_eq!(
        ready.refused,
        Some(Refusal::SnapshotTooLarge {
            total_len: max + 1,
            max
        })
    );
    assert!(ready.messages.is_empty(), "nothing is asked for it");
}

#[test]
fn a_sender_whose_snapshot_moved_on_answers_with_the_first_chunk_of_the_new_one() {
    let (mut n1, snapshot) = n1_with_snapshot(300);
    let ready = n1
        .handle(
            ms(2),
            env(
                N2,
                N1,
                Message::SnapshotRequest {
                    slot: 5,
                    offset: 100,
                },
            ),
        )
        .unwrap();
    let crc = crc32fast::hash(&snapshot.data);
    assert_eq!(only_message(&ready), &chunk(&snapshot, 0, 300, crc));
}
