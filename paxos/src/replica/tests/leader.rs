//! The leader: election, proposals, quorums, step-down and retransmission.

use super::*;

// ---------------------------------------------------------------- Leader

#[test]
fn an_election_persists_the_new_promise_and_prepares_every_peer() {
    let mut r = replica_with(
        N1,
        JournalState {
            promised: b(4, N3),
            ..Default::default()
        },
    );
    let ready = r.tick(ms(10_000)).unwrap();
    let ballot = b(5, N1);
    assert_eq!(ready.write.promised, Some(ballot));
    let to: Vec<NodeId> = ready.messages.iter().map(|e| e.to).collect();
    assert_eq!(to, vec![N2, N3]);
    assert!(
        ready
            .messages
            .iter()
            .all(|e| e.message == Message::Prepare { ballot, from: 1 })
    );
}

#[test]
fn a_new_leader_reproposes_the_highest_ballot_vote_and_fills_gaps_with_noops() {
    let (r, ready) = elect_n1(
        vec![
            (
                2,
                LogEntry {
                    ballot: b(1, N2),
                    value: batch("x"),
                },
            ),
            (
                4,
                LogEntry {
                    ballot: b(1, N3),
                    value: batch("y"),
                },
            ),
        ],
        0,
    );
    assert_eq!(
        ready.leadership,
        Some(Leadership::Elected { ballot: b(1, N1) })
    );
    assert_eq!(
        first_accept(&ready),
        &vec![
            (1, Value::Noop),
            (2, batch("x")),
            (3, Value::Noop),
            (4, batch("y"))
        ]
    );
    assert_eq!(r.committed(), 0, "nothing is chosen before a quorum votes");
}

#[test]
fn a_new_leader_prefers_a_value_known_chosen_over_a_higher_ballot_vote() {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!()
    };
    let chosen = Message::Promise {
        ballot,
        committed: 1,
        truncated: 0,
        first: 1,
        through: MAX_SLOT,
        entries: vec![(
            1,
            LogEntry {
                ballot: Ballot::ZERO,
                value: batch("chosen"),
            },
        )],
    };
    let ready = r.handle(ms(10_001), env(N2, N1, chosen)).unwrap();
    assert_eq!(first_accept(&ready), &vec![(1, batch("chosen"))]);
}

#[test]
fn a_proposal_is_chosen_exactly_when_a_quorum_has_voted() {
    let (mut r, _) = elect_n1(vec![], 0);
    let ready = r.propose(ms(10_002), vec![cmd("a"), cmd("b")]).unwrap();
    assert_eq!(
        ready.write.entries.len(),
        1,
        "one slot, one batch, own vote persisted"
    );
    assert!(ready.chosen.is_empty());
    let ballot = b(1, N1);
    let ready = r
        .handle(
            ms(10_003),
            env(
                N2,
                N1,
                Message::Accepted {
                    ballot,
                    slots: vec![1],
                    committed: 0,
                },
            ),
        )
        .unwrap();
    assert_eq!(
        ready.chosen,
        vec![(1, Value::Batch(vec![cmd("a"), cmd("b")]))]
    );
    assert_eq!(r.committed(), 1);
    let again = r
        .handle(
            ms(10_004),
            env(
                N3,
                N1,
                Message::Accepted {
                    ballot,
                    slots: vec![1],
                    committed: 0,
                },
            ),
        )
        .unwrap();
    assert!(again.chosen.is_empty(), "a slot is delivered once");
}

#[test]
fn votes_from_another_ballot_do_not_count() {
    let (mut r, _) = elect_n1(vec![], 0);
    let _ = r.propose(ms(10_002), vec![cmd("a")]).unwrap();
    let ready = r
        .handle(
            ms(10_003),
            env(
                N2,
                N1,
                Message::Accepted {
                    ballot: b(9, N2),
                    slots: vec![1],
                    committed: 0,
                },
            ),
        )
        .unwrap();
    assert!(ready.chosen.is_empty());
}

#[test]
fn the_window_bounds_slots_in_flight_and_batches_the_rest() {
    let (mut r, _) = elect_n1(vec![], 0);
    let window = r.config().window;
    let mut slots = 0;
    for i in 0..(window * 2) {
        let ready = r.propose(ms(10_002), vec![cmd(&i.to_string())]).unwrap();
        slots += ready.write.entries.len();
    }
    assert_eq!(slots, window, "proposals beyond the window wait");
    let ballot = b(1, N1);
    let ready = r
        .handle(
            ms(10_003),
            env(
                N2,
                N1,
                Message::Accepted {
                    ballot,
                    slots: (1..=2).collect(),
                    committed: 0,
                },
            ),
        )
        .unwrap();
    assert_eq!(ready.chosen.len(), 2);
    assert_eq!(
        ready.write.entries.len(),
        1,
        "the waiting commands share one new slot"
    );
    assert_eq!(ready.write.entries[0].1.value.commands().len(), window);
}

#[test]
fn a_nack_with_a_higher_ballot_deposes_the_leader_and_returns_queued_commands() {
    let (mut r, _) = elect_n1(vec![], 0);
    let window = r.config().window;
    for i in 0..=window {
        let _ = r.propose(ms(10_002), vec![cmd(&i.to_string())]).unwrap();
    }
    let nack = Message::Nack {
        ballot: b(1, N1),
        promised: b(3, N2),
    };
    let ready = r.handle(ms(10_003), env(N2, N1, nack)).unwrap();
    assert!(!r.is_leader());
    assert_eq!(ready.leadership, Some(Leadership::Lost));
    assert_eq!(ready.unproposed, vec![cmd(&window.to_string())]);
    assert_eq!(
        r.propose(ms(10_004), vec![cmd("z")]).unwrap_err(),
        ProposeError::NotLeader { leader: None }
    );
}

#[test]
fn a_leader_that_hears_no_quorum_for_an_election_timeout_steps_down() {
    let (mut r, _) = elect_n1(vec![], 0);
    let timeout = r.config().election_timeout;
    let mut now = ms(10_001);
    while now < ms(10_001) + timeout * 2 && r.is_leader() {
        now += ms(10);
        let _ = r.tick(now).unwrap();
    }
    assert!(!r.is_leader());
    assert!(now <= ms(10_001) + timeout + ms(20));
}

#[test]
fn a_leader_retransmits_unvoted_proposals_only_to_silent_peers() {
    let (mut r, _) = elect_n1(vec![], 0);
    let _ = r.propose(ms(10_002), vec![cmd("a")]).unwrap();
    let ballot = b(1, N1);
    let _ = r
        .handle(
            ms(10_003),
            env(
                N2,
                N1,
                Message::Accepted {
                    ballot,
                    slots: vec![1],
                    committed: 0,
                },
            ),
        )
        .unwrap();
    let _ = r.propose(ms(10_004), vec![cmd("b")]).unwrap();
    let ready = r.tick(ms(10_200)).unwrap();
    let resent: Vec<_> = ready
        .messages
        .iter()
        .filter(|e| matches!(e.message, Message::Accept { .. }))
        .collect();
    assert_eq!(resent.len(), 2, "slot 2 to both peers");
    assert!(resent.iter().all(|e| matches!(&e.message,
        Message::Accept { entries, .. } if entries.iter().all(|(s, _)| *s == 2))));
}

/// N2's promise for `ballot` in two parts: slot 1, then slot 2 on.
fn split_promise(ballot: Ballot) -> (Message, Message) {
    let part = |first, through, slot, value: &str| Message::Promise {
        ballot,
        committed: 0,
        truncated: 0,
        entries: vec![(
            slot,
            LogEntry {
                ballot: b(0, N2),
                value: batch(value),
            },
        )],
        first,
        through,
    };
    (part(1, 1, 1, "one"), part(2, MAX_SLOT, 2, "two"))
}

#[test]
fn a_split_promise_counts_once_its_parts_have_reported_on_every_slot_in_whatever_order_they_came() {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let (head, tail) = split_promise(ballot);
    let _ = r.handle(ms(10_001), env(N2, N1, tail)).unwrap();
    assert!(!r.is_leader(), "the tail alone says nothing of slot 1");
    let ready = r.handle(ms(10_002), env(N2, N1, head)).unwrap();
    assert!(r.is_leader(), "the head completes the tail that came first");
    assert_eq!(
        first_accept(&ready),
        &vec![(1, batch("one")), (2, batch("two"))],
        "both parts' votes are proposed again"
    );
}

#[test]
fn a_split_promise_still_missing_a_part_is_asked_again() {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let (head, tail) = split_promise(ballot);
    let _ = r.handle(ms(10_001), env(N2, N1, head)).unwrap();
    assert!(!r.is_leader(), "the head alone says nothing of slot 2 on");
    let ready = r.tick(ms(10_200)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.to == N2 && matches!(e.message, Message::Prepare { .. })),
        "N2's promise is not whole: it is asked again"
    );
    let ready = r.handle(ms(10_201), env(N2, N1, tail)).unwrap();
    assert!(r.is_leader());
    assert_eq!(
        first_accept(&ready),
        &vec![(1, batch("one")), (2, batch("two"))],
        "both parts' votes are proposed again"
    );
}
