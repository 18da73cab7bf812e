//! Catch-up, snapshots, restarts and input that must be refused.

use super::*;

// ---------------------------------------------------------------- Catch-up

#[test]
fn catchup_sends_chosen_values_or_a_snapshot_chunk_for_compacted_slots() {
    let mut entries = BTreeMap::new();
    for s in 6..=8 {
        entries.insert(
            s,
            LogEntry {
                ballot: b(1, N1),
                value: batch(&s.to_string()),
            },
        );
    }
    let snapshot = Snapshot {
        slot: 6,
        data: Bytes::from_static(b"state"),
    };
    let state = JournalState {
        promised: b(1, N1),
        committed: 8,
        truncated: 5,
        snapshot: Some(snapshot.clone()),
        entries,
    };
    let mut r = replica_with(N1, state);
    let _ = r.tick(ms(1)).unwrap();
    let ready = r
        .handle(ms(2), env(N2, N1, Message::CatchupRequest { from: 3 }))
        .unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::SnapshotChunk {
            slot: 6,
            total_len: 5,
            checksum: crc32fast::hash(b"state"),
            offset: 0,
            data: snapshot.data,
        }
    );
    let ready = r
        .handle(ms(3), env(N2, N1, Message::CatchupRequest { from: 7 }))
        .unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::CatchupResponse {
            entries: vec![(7, batch("7")), (8, batch("8"))]
        }
    );
}

/// A follower told by leader N1 that slots up to `committed` are chosen,
/// and so asking N1 for catch-up from slot 1.
fn follower_asking_n1(committed: Slot) -> Replica {
    let mut r = fresh(N2);
    let commit = Message::Commit {
        ballot: b(1, N1),
        committed,
    };
    let ready = r.handle(ms(1), env(N1, N2, commit)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.to == N1 && e.message == Message::CatchupRequest { from: 1 })
    );
    r
}

#[test]
fn a_follower_installs_a_snapshot_then_applies_what_follows() {
    let mut r = follower_asking_n1(7);
    let snapshot = Snapshot {
        slot: 4,
        data: Bytes::from_static(b"s"),
    };
    let chunk = Message::SnapshotChunk {
        slot: 4,
        total_len: 1,
        checksum: crc32fast::hash(b"s"),
        offset: 0,
        data: snapshot.data.clone(),
    };
    let ready = r.handle(ms(2), env(N1, N2, chunk)).unwrap();
    assert_eq!(ready.install, Some(snapshot.clone()));
    assert_eq!(ready.write.snapshot, Some(snapshot));
    assert_eq!(ready.write.truncate, Some(4));
    assert_eq!(
        only_message(&ready),
        &Message::CatchupRequest { from: 5 },
        "then it asks for what follows the snapshot"
    );
    let response = Message::CatchupResponse {
        entries: vec![(5, batch("5"))],
    };
    let ready = r.handle(ms(3), env(N1, N2, response)).unwrap();
    assert_eq!(ready.chosen, vec![(5, batch("5"))]);
    assert_eq!(ready.write.committed, Some(5));
}

#[test]
fn catch_up_responses_are_taken_only_as_answers_to_the_request_outstanding() {
    let response = |entries| Message::CatchupResponse { entries };
    let chunk = |slot| Message::SnapshotChunk {
        slot,
        total_len: 1,
        checksum: crc32fast::hash(b"s"),
        offset: 0,
        data: Bytes::from_static(b"s"),
    };
    let cases = [
        (
            N3,
            response(vec![(1, batch("1"))]),
            Refusal::UnaskedCatchup { from: N3 },
        ),
        (
            N1,
            response(vec![(2, batch("2"))]),
            Refusal::UnaskedCatchup { from: N1 },
        ),
        (
            N1,
            chunk(72),
            Refusal::SnapshotAhead {
                slot: 72,
                known: 71,
            },
        ),
        (
            N1,
            response(vec![(1, batch("1")), (3, batch("3"))]),
            Refusal::SlotsOutOfOrder {
                kind: "catchup_response",
                slot: 3,
            },
        ),
    ];
    for (from, message, refusal) in cases {
        let mut r = follower_asking_n1(7);
        let ready = r.handle(ms(2), env(from, N2, message)).unwrap();
        assert_eq!(ready.refused, Some(refusal));
        assert!(ready.write.is_empty() && ready.chosen.is_empty() && ready.install.is_none());
        assert_eq!(r.committed(), 0);
    }
    let mut r = follower_asking_n1(7);
    let answer = response(vec![(1, batch("1"))]);
    let ready = r.handle(ms(2), env(N1, N2, answer.clone())).unwrap();
    assert_eq!(ready.chosen, vec![(1, batch("1"))]);
    let again = r.handle(ms(3), env(N1, N2, answer)).unwrap();
    assert_eq!(
        again.refused,
        Some(Refusal::UnaskedCatchup { from: N1 }),
        "a duplicate answers nothing outstanding"
    );
}

// ------------------------------------------------------ Snapshot, restart

#[test]
fn a_snapshot_truncates_all_but_the_kept_tail() {
    let (mut r, _) = elect_n1(vec![], 0);
    let ballot = b(1, N1);
    for i in 1..=3u64 {
        let _ = r.propose(ms(10_002), vec![cmd(&i.to_string())]).unwrap();
        let _ = r
            .handle(
                ms(10_003),
                env(
                    N2,
                    N1,
                    Message::Accepted {
                        ballot,
                        slots: vec![i],
                        committed: 0,
                    },
                ),
            )
            .unwrap();
    }
    let mut cfg = r.config().clone();
    cfg.keep_after_snapshot = 1;
    r.cfg = cfg;
    let ready = r
        .snapshot_taken(Snapshot {
            slot: 3,
            data: Bytes::new(),
        })
        .unwrap();
    assert_eq!(ready.write.truncate, Some(2));
    assert!(r.entry(2).is_none() && r.entry(3).is_some());
    let err = r
        .snapshot_taken(Snapshot {
            slot: 9,
            data: Bytes::new(),
        })
        .unwrap_err();
    assert_eq!(
        err,
        PaxosError::SnapshotBeyondCommitted {
            slot: 9,
            committed: 3
        }
    );
}

#[test]
fn a_restarted_replica_delivers_its_snapshot_then_the_chosen_slots_after_it() {
    let mut entries = BTreeMap::new();
    entries.insert(
        3,
        LogEntry {
            ballot: b(1, N1),
            value: batch("3"),
        },
    );
    entries.insert(
        4,
        LogEntry {
            ballot: b(1, N1),
            value: batch("4"),
        },
    );
    let snapshot = Snapshot {
        slot: 3,
        data: Bytes::from_static(b"s"),
    };
    let state = JournalState {
        promised: b(1, N1),
        committed: 4,
        truncated: 2,
        snapshot: Some(snapshot.clone()),
        entries,
    };
    let mut r = replica_with(N1, state);
    let ready = r.tick(ms(1)).unwrap();
    assert_eq!(ready.install, Some(snapshot));
    assert_eq!(ready.chosen, vec![(4, batch("4"))]);
}

#[test]
fn an_inconsistent_journal_is_refused() {
    let mut entries = BTreeMap::new();
    entries.insert(
        1,
        LogEntry {
            ballot: b(2, N2),
            value: Value::Noop,
        },
    );
    let state = JournalState {
        promised: b(1, N2),
        entries,
        ..Default::default()
    };
    let err = Replica::new(config(N1), state, T0).unwrap_err();
    assert!(matches!(err, PaxosError::InconsistentJournal(_)));
    let gap = JournalState {
        committed: 2,
        ..Default::default()
    };
    assert!(matches!(
        Replica::new(config(N1), gap, T0).unwrap_err(),
        PaxosError::InconsistentJournal(_)
    ));
}

#[test]
fn messages_from_strangers_or_for_others_are_ignored() {
    let mut r = fresh(N1);
    let prepare = Message::Prepare {
        ballot: b(1, N2),
        from: 1,
    };
    let stranger = r.handle(T0, env(NodeId(9), N1, prepare.clone())).unwrap();
    let misrouted = r.handle(T0, env(N2, N3, prepare.clone())).unwrap();
    let itself = r.handle(T0, env(N1, N1, prepare)).unwrap();
    for (ready, refusal) in [
        (stranger, Refusal::SenderNotAMember(NodeId(9))),
        (misrouted, Refusal::NotForThisNode(N3)),
        (itself, Refusal::FromItself),
    ] {
        assert_eq!(
            ready,
            Ready {
                refused: Some(refusal),
                ..Ready::default()
            }
        );
    }
    assert_eq!(r.refused_messages(), 3);
}

#[test]
fn invalid_configs_are_refused() {
    let mut cfg = config(N1);
    cfg.members = vec![];
    assert!(matches!(
        Replica::new(cfg, JournalState::default(), T0),
        Err(PaxosError::Config(ConfigError::NoMembers))
    ));
    let mut cfg = config(N1);
    cfg.election_timeout = cfg.heartbeat_interval;
    assert!(matches!(
        Replica::new(cfg, JournalState::default(), T0),
        Err(PaxosError::Config(ConfigError::Timing))
    ));
}

// ------------------------------------------------- With the leader gone

/// Whether `ready` asks `peer` for catch-up.
fn asks_catchup(ready: &Ready, peer: NodeId) -> bool {
    ready
        .messages
        .iter()
        .any(|e| e.to == peer && matches!(e.message, Message::CatchupRequest { .. }))
}

/// A node that joins: its configuration lists the voters, not itself, so
/// it never campaigns (it seeks the cluster instead).
fn joiner_behind_n1(committed: Slot) -> Replica {
    let mut n4 = Replica::new(config(NodeId(4)), JournalState::default(), T0).unwrap();
    let commit = Message::Commit {
        ballot: b(1, N1),
        committed,
    };
    let ready = n4.handle(ms(1), env(N1, NodeId(4), commit)).unwrap();
    assert!(asks_catchup(&ready, N1));
    n4
}

/// 3-node `--reconfig` seed 9214: a promoted voter that had not learned
/// its promotion asked its wiped former leader for slots every retry,
/// which left no room for the peer its probe found ahead.
#[test]
fn a_node_behind_a_silent_leader_catches_up_from_a_peer_that_is_ahead() {
    let n4 = NodeId(4);
    let mut r = joiner_behind_n1(50);
    // Its election timeout passes: it probes (it may not campaign), and
    // its next election timeout starts.
    let _ = r.tick(ms(1_000)).unwrap();
    let ready = r.tick(ms(1_100)).unwrap();
    assert!(!asks_catchup(&ready, N1), "{:?}", ready.messages);
    let reply = Message::ProbeReply {
        promised: b(3, N2),
        last_slot: 50,
    };
    let ready = r.handle(ms(1_101), env(N2, n4, reply)).unwrap();
    assert!(asks_catchup(&ready, N2), "{:?}", ready.messages);
}

/// A node whose promise would count for nothing (here: one that has yet
/// to learn that it votes) still learns from a candidate that knows more
/// slots chosen: with the leader gone, candidates are who shows up.
#[test]
fn a_node_that_may_not_promise_catches_up_from_a_candidate_ahead_of_it() {
    let n4 = NodeId(4);
    let mut r = Replica::new(config(n4), JournalState::default(), T0).unwrap();
    let prepare = Message::Prepare {
        ballot: b(5, N2),
        from: 843,
    };
    let ready = r.handle(ms(1), env(N2, n4, prepare)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .all(|e| !matches!(e.message, Message::Promise { .. })),
        "{:?}",
        ready.messages
    );
    assert!(asks_catchup(&ready, N2), "{:?}", ready.messages);
    assert_eq!(r.leader_committed(), 842);
}
