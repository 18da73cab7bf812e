//! The acceptor: Prepare, Accept and Commit.

use super::*;

// ---------------------------------------------------------------- Prepare

proptest! {
    #[test]
    fn prepare_is_promised_iff_its_ballot_is_not_below_the_promise(
        promised in 0u64..5, asked in 0u64..5,
    ) {
        let state = JournalState { promised: b(promised, N3), ..Default::default() };
        let mut r = replica_with(N1, state);
        let ready = r.handle(T0, env(N2, N1, Message::Prepare { ballot: b(asked, N2), from: 1 })).unwrap();
        let asked = b(asked, N2);
        match only_message(&ready) {
            Message::Promise { ballot, .. } => {
                prop_assert!(asked >= b(promised, N3));
                prop_assert_eq!(*ballot, asked);
                prop_assert_eq!(ready.write.promised, Some(asked), "promise persisted in the same step");
                prop_assert_eq!(r.promised(), asked);
            }
            Message::Nack { ballot, promised: p } => {
                prop_assert!(asked < b(promised, N3));
                prop_assert_eq!(*ballot, asked);
                prop_assert_eq!(*p, b(promised, N3));
                prop_assert!(ready.write.is_empty(), "a refusal changes nothing durable");
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }

    #[test]
    fn promise_reports_every_vote_from_the_requested_slot(
        slots in proptest::collection::btree_set(1u64..40, 0..10), from in 1u64..40,
    ) {
        let entries: BTreeMap<Slot, LogEntry> = slots
            .iter()
            .map(|s| (*s, LogEntry { ballot: b(1, N3), value: batch(&s.to_string()) }))
            .collect();
        let state = JournalState { promised: b(1, N3), entries: entries.clone(), ..Default::default() };
        let mut r = replica_with(N1, state);
        let ready = r.handle(T0, env(N2, N1, Message::Prepare { ballot: b(2, N2), from })).unwrap();
        let Message::Promise { entries: got, .. } = only_message(&ready) else {
            panic!("expected a promise");
        };
        let want: Vec<(Slot, LogEntry)> = entries.range(from..).map(|(s, e)| (*s, e.clone())).collect();
        prop_assert_eq!(got, &want);
    }
}

#[test]
fn a_follower_that_hears_a_live_leader_ignores_prepares_from_others() {
    let mut r = fresh(N1);
    let commit = Message::Commit {
        ballot: b(1, N2),
        committed: 0,
    };
    let _ = r.handle(ms(1), env(N2, N1, commit)).unwrap();
    let ready = r
        .handle(
            ms(2),
            env(
                N3,
                N1,
                Message::Prepare {
                    ballot: b(2, N3),
                    from: 1,
                },
            ),
        )
        .unwrap();
    assert!(ready.messages.is_empty() && ready.write.is_empty());
    let later = ms(2) + r.config().election_timeout;
    let ready = r
        .handle(
            later,
            env(
                N3,
                N1,
                Message::Prepare {
                    ballot: b(2, N3),
                    from: 1,
                },
            ),
        )
        .unwrap();
    assert!(matches!(only_message(&ready), Message::Promise { .. }));
}

#[test]
fn a_duplicate_prepare_gets_the_same_promise_without_a_new_write() {
    let mut r = fresh(N1);
    let prepare = env(
        N2,
        N1,
        Message::Prepare {
            ballot: b(1, N2),
            from: 1,
        },
    );
    let first = r.handle(T0, prepare.clone()).unwrap();
    let second = r.handle(T0, prepare).unwrap();
    assert_eq!(first.messages, second.messages);
    assert!(second.write.is_empty());
}

// ----------------------------------------------------------------- Accept

proptest! {
    #[test]
    fn accept_is_voted_for_iff_its_ballot_is_not_below_the_promise(
        promised in 0u64..5, asked in 0u64..5, slot in 1u64..10,
    ) {
        let state = JournalState { promised: b(promised, N3), ..Default::default() };
        let mut r = replica_with(N1, state);
        let asked = b(asked, N2);
        let accept = Message::Accept { ballot: asked, committed: 0, entries: vec![(slot, batch("x"))] };
        let ready = r.handle(T0, env(N2, N1, accept)).unwrap();
        match only_message(&ready) {
            Message::Accepted { ballot, slots, .. } => {
                prop_assert!(asked >= b(promised, N3));
                prop_assert_eq!(*ballot, asked);
                prop_assert_eq!(slots, &vec![slot]);
                let vote = (slot, LogEntry { ballot: asked, value: batch("x") });
                prop_assert_eq!(&ready.write.entries, &vec![vote], "vote persisted in the same step");
                prop_assert!(r.promised() >= asked);
            }
            Message::Nack { promised: p, .. } => {
                prop_assert!(asked < b(promised, N3));
                prop_assert_eq!(*p, b(promised, N3));
                prop_assert!(ready.write.is_empty());
            }
            other => prop_assert!(false, "unexpected {:?}", other),
        }
    }
}

#[test]
fn an_accept_overwrites_an_unchosen_vote_from_a_lower_ballot() {
    let mut r = voter(b(1, N3), &[(1, "old")]);
    let _ = accept(&mut r, T0, b(2, N2), 0, &[(1, "new")]);
    assert_eq!(r.entry(1).unwrap().value, batch("new"));
}

#[test]
fn a_stale_proposal_for_a_slot_known_chosen_gets_no_vote() {
    // Slot 1 was learned by catch-up (no ballot known), so a deposed leader
    // of a low ballot may still propose something else there.
    let state = JournalState {
        promised: b(1, N3),
        committed: 1,
        entries: votes(Ballot::ZERO, &[(1, "chosen")]),
        ..Default::default()
    };
    let mut r = replica_with(N1, state);
    let ready = accept(&mut r, T0, b(2, N2), 0, &[(1, "other"), (2, "new")]);
    assert_eq!(
        only_message(&ready),
        &Message::Accepted {
            ballot: b(2, N2),
            slots: vec![2],
            committed: 1,
        }
    );
    assert_eq!(r.entry(1).unwrap().value, batch("chosen"));
    assert!(!r.is_stopped());
}

// ----------------------------------------------------------------- Commit

/// Whether the follower answered with a CommitAck.
fn acked(ready: &Ready) -> bool {
    ready
        .messages
        .iter()
        .any(|e| matches!(e.message, Message::CommitAck { .. }))
}

#[test]
fn a_follower_answers_every_heartbeat_but_commit_notices_of_one_leader_at_most_once_per_half_interval()
 {
    let mut r = voter(b(2, N2), &[(1, "1"), (2, "2"), (3, "3"), (4, "4")]);
    let interval = r.config().heartbeat_interval;
    let commit = |r: &mut Replica, at: Duration, ballot: Ballot, committed: Slot| {
        let from = ballot.node;
        let commit = Message::Commit { ballot, committed };
        r.handle(at, env(from, N1, commit)).unwrap()
    };
    let old = b(2, N2);
    assert!(acked(&commit(&mut r, T0, old, 1)), "the first notice");
    let soon = T0 + interval / 8;
    assert!(
        !acked(&commit(&mut r, soon, old, 2)),
        "a notice right after"
    );
    assert_eq!(r.committed(), 2, "it still learns what the notice says");
    assert!(acked(&commit(&mut r, soon, old, 2)), "a heartbeat, always");
    assert!(!acked(&commit(&mut r, soon + interval / 4, old, 3)));
    let later = soon + interval / 2;
    assert!(
        acked(&commit(&mut r, later, old, 4)),
        "a notice half an interval after the last answer"
    );
    let new = b(3, N3);
    let _ = accept(&mut r, later, new, 4, &[(5, "5")]);
    assert!(
        acked(&commit(&mut r, later, new, 5)),
        "a new leader's first notice"
    );
    assert_eq!(r.committed(), 5);
}

#[test]
fn a_vote_carries_the_commit_index_the_accept_taught() {
    let mut r = voter(b(2, N2), &[(1, "a")]);
    let ready = accept(&mut r, T0, b(2, N2), 1, &[(2, "b")]);
    assert_eq!(
        only_message(&ready),
        &Message::Accepted {
            ballot: b(2, N2),
            slots: vec![2],
            committed: 1,
        }
    );
}

#[test]
fn commit_chooses_only_votes_cast_in_the_leaders_ballot() {
    let mut entries = BTreeMap::new();
    entries.insert(
        1,
        LogEntry {
            ballot: b(2, N2),
            value: batch("a"),
        },
    );
    entries.insert(
        2,
        LogEntry {
            ballot: b(1, N3),
            value: batch("stale"),
        },
    );
    entries.insert(
        3,
        LogEntry {
            ballot: b(2, N2),
            value: batch("c"),
        },
    );
    let state = JournalState {
        promised: b(2, N2),
        entries,
        ..Default::default()
    };
    let mut r = replica_with(N1, state);
    let ready = r
        .handle(
            T0,
            env(
                N2,
                N1,
                Message::Commit {
                    ballot: b(2, N2),
                    committed: 3,
                },
            ),
        )
        .unwrap();
    assert_eq!(r.committed(), 1, "slot 2's vote is from another ballot");
    assert_eq!(ready.chosen, vec![(1, batch("a"))]);
    assert_eq!(ready.write.committed, Some(1));
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.message == Message::CatchupRequest { from: 2 })
    );
    assert!(ready.messages.iter().any(|e| e.message
        == Message::CommitAck {
            ballot: b(2, N2),
            committed: 1
        }));
}

#[test]
fn a_commit_from_a_deposed_leader_is_refused_with_the_higher_ballot() {
    let state = JournalState {
        promised: b(5, N3),
        ..Default::default()
    };
    let mut r = replica_with(N1, state);
    let ready = r
        .handle(
            T0,
            env(
                N2,
                N1,
                Message::Commit {
                    ballot: b(2, N2),
                    committed: 3,
                },
            ),
        )
        .unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::Nack {
            ballot: b(2, N2),
            promised: b(5, N3)
        }
    );
}
