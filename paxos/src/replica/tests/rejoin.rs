//! A replica with an empty journal: a learner until it is safe to vote.

use super::*;

// ---------------------------------------------------------- Empty journal

#[test]
fn an_empty_replica_neither_promises_nor_votes_nor_campaigns_while_learning() {
    let mut r = replica_with(N1, JournalState::default());
    let prepare = r
        .handle(
            T0,
            env(
                N2,
                N1,
                Message::Prepare {
                    ballot: b(1, N2),
                    from: 1,
                },
            ),
        )
        .unwrap();
    assert!(prepare.messages.is_empty() && prepare.write.is_empty());
    let answer = accept(&mut r, T0, b(1, N2), 0, &[(1, "x")]);
    assert!(answer.messages.is_empty() && answer.write.is_empty());
    let ready = r.tick(ms(10_000)).unwrap();
    assert!(
        ready.messages.iter().all(|e| e.message == Message::Probe),
        "{:?}",
        ready.messages
    );
    assert_eq!(ready.messages.len(), 2, "probes every other member");
}

#[test]
fn a_replica_with_a_lost_disk_votes_only_after_a_newer_leader_and_catching_up() {
    let mut r = replica_with(N1, JournalState::default());
    let _ = r
        .handle(
            T0,
            env(
                N2,
                N1,
                Message::ProbeReply {
                    promised: b(3, N2),
                    last_slot: 2,
                },
            ),
        )
        .unwrap();
    let _ = r
        .handle(
            T0,
            env(
                N3,
                N1,
                Message::ProbeReply {
                    promised: b(3, N2),
                    last_slot: 1,
                },
            ),
        )
        .unwrap();
    assert!(
        r.is_learner(),
        "members have promised and voted: not a new cluster"
    );
    // A leader older than a reported promise may be deposed: not enough.
    let _ = r
        .handle(
            ms(1),
            env(
                N3,
                N1,
                Message::Commit {
                    ballot: b(2, N3),
                    committed: 2,
                },
            ),
        )
        .unwrap();
    assert!(r.is_learner());
    // A leader at least as new as every promise, and catching up through
    // slot 2, is.
    let ready = r
        .handle(
            ms(200),
            env(
                N3,
                N1,
                Message::Commit {
                    ballot: b(4, N3),
                    committed: 2,
                },
            ),
        )
        .unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.message == Message::CatchupRequest { from: 1 })
    );
    assert!(r.is_learner(), "not caught up yet");
    let response = Message::CatchupResponse {
        entries: vec![(1, batch("a")), (2, batch("b"))],
    };
    let ready = r.handle(ms(3), env(N3, N1, response)).unwrap();
    assert!(!r.is_learner());
    assert_eq!(r.promised(), b(4, N3));
    assert_eq!(
        ready.write.promised,
        Some(b(4, N3)),
        "the promise is persisted"
    );
    let ready = r
        .handle(
            ms(4),
            env(
                N3,
                N1,
                Message::Prepare {
                    ballot: b(5, N3),
                    from: 3,
                },
            ),
        )
        .unwrap();
    assert!(matches!(only_message(&ready), Message::Promise { .. }));
}

#[test]
fn every_replica_answers_a_probe_with_its_promise_and_highest_slot() {
    let mut entries = BTreeMap::new();
    entries.insert(
        7,
        LogEntry {
            ballot: b(2, N2),
            value: Value::Noop,
        },
    );
    let mut r = replica_with(
        N1,
        JournalState {
            promised: b(2, N2),
            entries,
            ..Default::default()
        },
    );
    let ready = r.handle(T0, env(N3, N1, Message::Probe)).unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::ProbeReply {
            promised: b(2, N2),
            last_slot: 7
        }
    );
}

/// Seeds 652, 1294, 1398 and 2062 (5 nodes, `--reconfig`): a node of a new
/// cluster that missed the first round of answers stayed a learner, as
/// each newer reply named the busy leader's newest proposal, which its
/// commit index never reached. Any reply after the loss is sound, so the
/// lowest last slot of a member counts.
#[test]
fn a_learner_is_not_held_back_by_slots_proposed_after_a_members_first_reply() {
    let mut r = replica_with(N3, JournalState::default());
    let reply = |last_slot| Message::ProbeReply {
        promised: b(2, N1),
        last_slot,
    };
    let _ = r.handle(ms(1), env(N1, N3, reply(10))).unwrap();
    let _ = r.handle(ms(1), env(N2, N3, reply(10))).unwrap();
    let commit = Message::Commit {
        ballot: b(2, N1),
        committed: 10,
    };
    let _ = r.handle(ms(2), env(N1, N3, commit)).unwrap();
    let _ = r.handle(ms(3), env(N1, N3, reply(20))).unwrap();
    assert!(r.is_learner());
    let entries = (1..=10).map(|s| (s, Value::Noop)).collect();
    let response = Message::CatchupResponse { entries };
    let ready = r.handle(ms(4), env(N1, N3, response)).unwrap();
    assert_eq!(r.committed(), 10);
    assert!(!r.is_learner(), "caught up through every reply's slots");
    assert_eq!(ready.write.promised, Some(b(2, N1)));
}
