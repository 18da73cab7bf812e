//! Per-message specifications of the replica, in the spirit of Trex2's
//! per-message property tests: for every handler, what it must persist,
//! what it must send, and what it must never do.

use super::*;
use crate::journal::JournalState;
use proptest::prelude::*;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const T0: Duration = Duration::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(node: NodeId) -> Config {
    Config::new(node, vec![N1, N2, N3])
}

fn replica_with(node: NodeId, state: JournalState) -> Replica {
    // Non-empty journals start as voters; empty ones go through `fresh`.
    Replica::new(config(node), state, T0).expect("valid state")
}

/// A replica of a brand-new cluster: empty, and told by both peers that
/// they are empty too, so it may vote.
fn fresh(node: NodeId) -> Replica {
    let mut r = replica_with(node, JournalState::default());
    assert!(r.is_learner());
    for peer in [N1, N2, N3].into_iter().filter(|p| *p != node) {
        let reply = Message::ProbeReply {
            promised: Ballot::ZERO,
            last_slot: 0,
        };
        let _ = r.handle(T0, env(peer, node, reply)).unwrap();
    }
    assert!(!r.is_learner());
    r
}

fn b(counter: u64, node: NodeId) -> Ballot {
    Ballot { counter, node }
}

fn cmd(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn batch(s: &str) -> Value {
    Value::Batch(vec![cmd(s)])
}

fn env(from: NodeId, to: NodeId, message: Message) -> Envelope {
    Envelope { from, to, message }
}

fn first_accept(ready: &Ready) -> &Vec<(Slot, Value)> {
    ready
        .messages
        .iter()
        .find_map(|e| match &e.message {
            Message::Accept { entries, .. } => Some(entries),
            _ => None,
        })
        .expect("an accept was sent")
}

fn only_message(ready: &Ready) -> &Message {
    assert_eq!(ready.messages.len(), 1, "{:?}", ready.messages);
    &ready.messages[0].message
}

/// Drives N1 to leadership with promises from N2 carrying `entries`.
fn elect_n1(entries_from_n2: Vec<(Slot, LogEntry)>, n2_committed: Slot) -> (Replica, Ready) {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let promise = Message::Promise {
        ballot,
        committed: n2_committed,
        truncated: 0,
        entries: entries_from_n2,
    };
    let ready = r.handle(ms(10_001), env(N2, N1, promise)).unwrap();
    assert!(r.is_leader());
    (r, ready)
}

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
            Message::Accepted { ballot, slots } => {
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
    let mut entries = BTreeMap::new();
    entries.insert(
        1,
        LogEntry {
            ballot: b(1, N3),
            value: batch("old"),
        },
    );
    let state = JournalState {
        promised: b(1, N3),
        entries,
        ..Default::default()
    };
    let mut r = replica_with(N1, state);
    let accept = Message::Accept {
        ballot: b(2, N2),
        committed: 0,
        entries: vec![(1, batch("new"))],
    };
    let _ = r.handle(T0, env(N2, N1, accept)).unwrap();
    assert_eq!(r.entry(1).unwrap().value, batch("new"));
}

#[test]
fn a_stale_proposal_for_a_slot_known_chosen_gets_no_vote() {
    // Slot 1 was learned by catch-up (no ballot known), so a deposed leader
    // of a low ballot may still propose something else there.
    let mut entries = BTreeMap::new();
    entries.insert(
        1,
        LogEntry {
            ballot: Ballot::ZERO,
            value: batch("chosen"),
        },
    );
    let state = JournalState {
        promised: b(1, N3),
        committed: 1,
        entries,
        ..Default::default()
    };
    let mut r = replica_with(N1, state);
    let accept = Message::Accept {
        ballot: b(2, N2),
        committed: 0,
        entries: vec![(1, batch("other")), (2, batch("new"))],
    };
    let ready = r.handle(T0, env(N2, N1, accept)).unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::Accepted {
            ballot: b(2, N2),
            slots: vec![2]
        }
    );
    assert_eq!(r.entry(1).unwrap().value, batch("chosen"));
    assert!(!r.is_stopped());
}

// ----------------------------------------------------------------- Commit

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

// ---------------------------------------------------------------- Catch-up

#[test]
fn catchup_sends_chosen_values_and_a_snapshot_for_compacted_slots() {
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
        &Message::CatchupResponse {
            snapshot: Some(snapshot),
            entries: vec![(7, batch("7")), (8, batch("8"))],
        }
    );
    let ready = r
        .handle(ms(3), env(N2, N1, Message::CatchupRequest { from: 8 }))
        .unwrap();
    assert_eq!(
        only_message(&ready),
        &Message::CatchupResponse {
            snapshot: None,
            entries: vec![(8, batch("8"))]
        }
    );
}

#[test]
fn a_follower_installs_a_snapshot_then_applies_what_follows() {
    let mut r = fresh(N2);
    let snapshot = Snapshot {
        slot: 4,
        data: Bytes::from_static(b"s"),
    };
    let response = Message::CatchupResponse {
        snapshot: Some(snapshot.clone()),
        entries: vec![(5, batch("5")), (7, batch("gap"))],
    };
    let ready = r.handle(ms(1), env(N1, N2, response)).unwrap();
    assert_eq!(ready.install, Some(snapshot.clone()));
    assert_eq!(ready.chosen, vec![(5, batch("5"))], "stops at the gap");
    assert_eq!(ready.write.snapshot, Some(snapshot));
    assert_eq!(ready.write.truncate, Some(4));
    assert_eq!(ready.write.committed, Some(5));
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
    let misrouted = r.handle(T0, env(N2, N3, prepare)).unwrap();
    assert!(stranger.is_empty() && misrouted.is_empty());
}

#[test]
fn invalid_configs_are_refused() {
    let mut cfg = config(N1);
    cfg.members = vec![N2, N3];
    assert!(matches!(
        Replica::new(cfg, JournalState::default(), T0),
        Err(PaxosError::Config(ConfigError::NotAMember(N1)))
    ));
    let mut cfg = config(N1);
    cfg.election_timeout = cfg.heartbeat_interval;
    assert!(matches!(
        Replica::new(cfg, JournalState::default(), T0),
        Err(PaxosError::Config(ConfigError::Timing))
    ));
}

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
    let accept = Message::Accept {
        ballot: b(1, N2),
        committed: 0,
        entries: vec![(1, batch("x"))],
    };
    let accept = r.handle(T0, env(N2, N1, accept)).unwrap();
    assert!(accept.messages.is_empty() && accept.write.is_empty());
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
        snapshot: None,
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
