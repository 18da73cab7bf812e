//! Hostile input: forged, corrupt and absurd peer messages. Whatever a peer
//! sends, a replica neither panics nor stops, and a cluster fed such
//! messages still elects a leader and chooses values once honest traffic
//! resumes.

use super::*;
use crate::types::MAX_SLOT;
use std::collections::VecDeque;

const TOP: u64 = u64::MAX;

// ------------------------------------------------------------- Directed

#[test]
fn ballots_are_created_with_checked_arithmetic_and_never_with_an_unexceedable_counter() {
    assert_eq!(b(5, N2).next_for(N1), Some(b(6, N1)));
    assert_eq!(
        b(Ballot::MAX_COUNTER - 1, N2).next_for(N1),
        Some(b(Ballot::MAX_COUNTER, N1))
    );
    assert_eq!(b(Ballot::MAX_COUNTER, N2).next_for(N1), None);
    assert_eq!(b(TOP, N2).next_for(N1), None);
    assert!(b(Ballot::MAX_COUNTER, N2).is_usable() && !b(TOP, N2).is_usable());
}

#[test]
fn an_accept_in_a_ballot_that_cannot_be_exceeded_is_refused_and_the_node_can_still_be_elected() {
    let mut r = fresh(N1);
    let ready = accept(&mut r, ms(1), b(TOP, N2), 0, &[(1, "forged")]);
    assert_eq!(
        ready.refused,
        Some(Refusal::UnusableBallot {
            kind: "accept",
            ballot: b(TOP, N2)
        })
    );
    assert!(ready.write.is_empty() && ready.messages.is_empty());
    assert_eq!(r.promised(), b(0, N1), "the promise did not move");
    assert_eq!(r.entry(1), None, "no vote was cast");
    let ready = r.tick(ms(10_000)).unwrap();
    assert_eq!(
        ready.write.promised,
        Some(b(1, N1)),
        "it campaigns as usual"
    );
    assert!(
        ready
            .messages
            .iter()
            .all(|e| matches!(e.message, Message::Prepare { ballot, .. } if ballot == b(1, N1)))
    );
}

#[test]
fn a_ballot_far_ahead_of_every_ballot_seen_is_refused_and_the_counter_stays_usable() {
    use super::super::admission::MAX_BALLOT_LEAD;
    let mut r = fresh(N1);
    for counter in [Ballot::MAX_COUNTER, MAX_BALLOT_LEAD + 1] {
        let prepare = Message::Prepare {
            ballot: b(counter, N2),
            from: 1,
        };
        let ready = r.handle(ms(1), env(N2, N1, prepare)).unwrap();
        assert!(
            matches!(ready.refused, Some(Refusal::BallotTooFarAhead { limit, .. }) if limit == MAX_BALLOT_LEAD),
            "{:?}",
            ready.refused
        );
        assert_eq!(r.promised(), b(0, N1), "the promise did not move");
    }
    let prepare = Message::Prepare {
        ballot: b(MAX_BALLOT_LEAD, N2),
        from: 1,
    };
    let ready = r.handle(ms(2), env(N2, N1, prepare)).unwrap();
    assert_eq!(ready.refused, None);
    assert_eq!(r.promised(), b(MAX_BALLOT_LEAD, N2));
    // The limit moves with what honest peers show, one lead at a time.
    let next = Message::Prepare {
        ballot: b(2 * MAX_BALLOT_LEAD, N3),
        from: 1,
    };
    let _ = r.handle(ms(3), env(N3, N1, next)).unwrap();
    assert_eq!(r.promised(), b(2 * MAX_BALLOT_LEAD, N3));
    let ready = r.tick(ms(10_000)).unwrap();
    assert_eq!(
        ready.write.promised,
        Some(b(2 * MAX_BALLOT_LEAD + 1, N1)),
        "it campaigns one past the highest ballot, as usual"
    );
}

#[test]
fn a_replica_that_missed_many_elections_follows_the_cluster_again_after_at_most_half_that_time() {
    use super::super::admission::MAX_BALLOT_LEAD;
    let state = JournalState {
        promised: b(5, N2),
        ..Default::default()
    };
    let cfg = config(N1);
    // Elections every timeout on each of the other members, for 60 s.
    let away = Duration::from_secs(60);
    let missed = 2 * (away.as_millis() / cfg.election_timeout.as_millis()) as u64;
    assert!(missed > MAX_BALLOT_LEAD);
    let mut r = Replica::new(cfg, state, T0).unwrap();
    let commit = || Message::Commit {
        ballot: b(5 + missed, N2),
        committed: 0,
    };
    let ready = r.handle(ms(1), env(N2, N1, commit())).unwrap();
    assert!(matches!(
        ready.refused,
        Some(Refusal::BallotTooFarAhead { .. })
    ));
    assert_eq!(r.leader(), None);
    let ready = r.handle(away / 2, env(N2, N1, commit())).unwrap();
    assert_eq!(ready.refused, None);
    assert_eq!(
        r.leader(),
        Some(N2),
        "it follows the cluster's leader again"
    );
}

#[test]
fn accepts_are_admitted_by_the_same_rules_as_prepares() {
    let cases = [
        (
            N2,
            b(2, N3),
            1,
            Refusal::NotFromBallotOwner {
                kind: "accept",
                ballot: b(2, N3),
                from: N2,
            },
        ),
        (
            N2,
            b(2, N1),
            1,
            Refusal::NotFromBallotOwner {
                kind: "accept",
                ballot: b(2, N1),
                from: N2,
            },
        ),
        (
            N2,
            b(2, NodeId(9)),
            1,
            Refusal::NotFromBallotOwner {
                kind: "accept",
                ballot: b(2, NodeId(9)),
                from: N2,
            },
        ),
        (
            N2,
            b(2, N2),
            0,
            Refusal::SlotOutOfRange {
                kind: "accept",
                slot: 0,
            },
        ),
        (
            N2,
            b(2, N2),
            TOP,
            Refusal::SlotOutOfRange {
                kind: "accept",
                slot: TOP,
            },
        ),
        (
            N2,
            b(2, N2),
            MAX_SLOT,
            Refusal::AcceptTooFarAhead {
                slot: MAX_SLOT,
                horizon: super::super::admission::MAX_RECOVERY_SLOTS + 64,
            },
        ),
    ];
    for (from, ballot, slot, refusal) in cases {
        let mut r = fresh(N1);
        let accept = Message::Accept {
            ballot,
            committed: 0,
            entries: vec![(slot, batch("x"))],
        };
        let ready = r.handle(ms(1), env(from, N1, accept)).unwrap();
        assert_eq!(ready.refused, Some(refusal));
        assert!(ready.write.is_empty() && ready.messages.is_empty());
        assert_eq!(r.promised(), b(0, N1));
        let prepare = Message::Prepare { ballot, from: slot };
        let ready = r.handle(ms(2), env(from, N1, prepare)).unwrap();
        if !matches!(refusal, Refusal::AcceptTooFarAhead { .. }) {
            assert!(ready.refused.is_some(), "a prepare is refused alike");
        }
    }
}

#[test]
fn a_promise_reporting_votes_far_past_anything_chosen_is_refused() {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let far = 1 << 40;
    let promise = Message::Promise {
        ballot,
        committed: 0,
        truncated: 0,
        first: 1,
        through: MAX_SLOT,
        entries: vec![(
            far,
            LogEntry {
                ballot: b(0, N2),
                value: batch("x"),
            },
        )],
    };
    let ready = r.handle(ms(10_001), env(N2, N1, promise)).unwrap();
    assert!(matches!(
        ready.refused,
        Some(Refusal::RecoveryTooLong { last, .. }) if last == far
    ));
    assert!(!r.is_leader(), "leading would mean proposing 2^40 slots");
}

#[test]
fn a_forged_probe_reply_cannot_keep_a_learner_from_voting() {
    let mut r = replica_with(N1, JournalState::default());
    let forged = Message::ProbeReply {
        promised: Ballot::ZERO,
        last_slot: 1 << 40,
    };
    let honest = Message::ProbeReply {
        promised: Ballot::ZERO,
        last_slot: 0,
    };
    let _ = r.handle(T0, env(N2, N1, forged)).unwrap();
    let _ = r.handle(T0, env(N3, N1, honest.clone())).unwrap();
    assert!(r.is_learner(), "it would have to learn 2^40 slots first");
    let ready = r.tick(ms(1_000)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.to == N2 && e.message == Message::Probe),
        "members that answered are probed again"
    );
    let _ = r.handle(ms(1_001), env(N2, N1, honest)).unwrap();
    assert!(!r.is_learner(), "the later reply replaced the forged one");
}

// ------------------------------------------------------------- Property

fn node() -> impl Strategy<Value = NodeId> {
    prop_oneof![
        Just(N1),
        Just(N2),
        Just(N3),
        Just(NodeId(0)),
        Just(NodeId(9))
    ]
}

fn ballot() -> impl Strategy<Value = Ballot> {
    let counter = prop_oneof![
        3 => 0u64..6,
        1 => Just(TOP),
        1 => Just(Ballot::MAX_COUNTER),
        1 => Just(1 << 40),
    ];
    (counter, node()).prop_map(|(counter, node)| Ballot { counter, node })
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![
        4 => 0u64..12,
        1 => Just(MAX_SLOT),
        1 => Just(MAX_SLOT + 1),
        1 => Just(TOP),
        1 => Just(1 << 40),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![Just(Value::Noop), "[a-c]{0,3}".prop_map(|s| batch(&s)),]
}

fn entries() -> impl Strategy<Value = Vec<(Slot, Value)>> {
    proptest::collection::vec((slot(), value()), 0..4)
}

fn message() -> impl Strategy<Value = Message> {
    let votes = proptest::collection::vec(
        (slot(), ballot(), value()).prop_map(|(s, ballot, value)| (s, LogEntry { ballot, value })),
        0..4,
    );
    let chunk = (slot(), 0..64u64, any::<u32>(), 0..64u64).prop_map(
        |(slot, total_len, checksum, offset)| Message::SnapshotChunk {
            slot,
            total_len,
            checksum,
            offset,
            data: Bytes::from_static(b"forged"),
        },
    );
    prop_oneof![
        (ballot(), slot()).prop_map(|(ballot, from)| Message::Prepare { ballot, from }),
        (ballot(), slot(), slot(), votes, slot(), slot()).prop_map(
            |(ballot, committed, truncated, entries, first, through)| Message::Promise {
                ballot,
                committed,
                truncated,
                entries,
                first,
                through,
            }
        ),
        (ballot(), slot(), entries()).prop_map(|(ballot, committed, entries)| Message::Accept {
            ballot,
            committed,
            entries
        }),
        (ballot(), proptest::collection::vec(slot(), 0..4), slot()).prop_map(
            |(ballot, slots, committed)| Message::Accepted {
                ballot,
                slots,
                committed
            }
        ),
        (ballot(), slot()).prop_map(|(ballot, committed)| Message::Commit { ballot, committed }),
        (ballot(), slot()).prop_map(|(ballot, committed)| Message::CommitAck { ballot, committed }),
        (ballot(), slot()).prop_map(|(ballot, committed)| Message::Release { ballot, committed }),
        (ballot(), ballot()).prop_map(|(ballot, promised)| Message::Nack { ballot, promised }),
        slot().prop_map(|from| Message::CatchupRequest { from }),
        entries().prop_map(|entries| Message::CatchupResponse { entries }),
        (slot(), any::<u64>()).prop_map(|(slot, offset)| Message::SnapshotRequest { slot, offset }),
        chunk,
        Just(Message::Probe),
        (ballot(), slot()).prop_map(|(promised, last_slot)| Message::ProbeReply {
            promised,
            last_slot
        }),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    /// A forged message delivered to replica `to` (an index).
    Forged {
        to: usize,
        from: NodeId,
        addressed: NodeId,
        message: Message,
    },
    /// Time passes and replica `at` ticks.
    Tick { at: usize, advance_ms: u64 },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (0usize..3, node(), prop_oneof![4 => Just(None), 1 => node().prop_map(Some)], message())
            .prop_map(|(to, from, addressed, message)| Step::Forged {
                to,
                from,
                addressed: addressed.unwrap_or([N1, N2, N3][to]),
                message,
            }),
        1 => (0usize..3, 0u64..400).prop_map(|(at, advance_ms)| Step::Tick { at, advance_ms }),
    ]
}

/// Runs honest traffic among `replicas` (every message delivered, in order)
/// until a leader has a proposed command chosen, or `limit` passes.
fn honest_run(replicas: &mut [Replica], mut now: Duration, limit: Duration) -> bool {
    let end = now + limit;
    let mut queue: VecDeque<Envelope> = VecDeque::new();
    let mut proposed = false;
    while now < end {
        now += ms(5);
        for r in replicas.iter_mut() {
            let ready = r.tick(now).expect("a tick never stops a replica");
            queue.extend(ready.messages);
        }
        while let Some(envelope) = queue.pop_front() {
            // Answers to forged senders outside the cluster go nowhere.
            let to = usize::from(envelope.to.0).wrapping_sub(1);
            let Some(replica) = replicas.get_mut(to) else {
                continue;
            };
            let ready = replica
                .handle(now, envelope)
                .expect("honest traffic never stops a replica");
            if ready
                .chosen
                .iter()
                .any(|(_, v)| v.commands().contains(&cmd("honest")))
                && replicas[to].is_leader()
            {
                return true;
            }
            queue.extend(ready.messages);
        }
        if !proposed && let Some(leader) = replicas.iter_mut().find(|r| r.is_leader()) {
            let ready = leader
                .propose(now, vec![cmd("honest")])
                .expect("leader takes it");
            proposed = true;
            queue.extend(ready.messages);
        }
        if proposed && !replicas.iter().any(Replica::is_leader) {
            proposed = false;
        }
    }
    false
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_peer_message_can_panic_or_wedge_a_replica(
        steps in proptest::collection::vec(step(), 1..60),
    ) {
        let mut replicas = [fresh(N1), fresh(N2), fresh(N3)];
        let mut now = T0;
        for step in steps {
            match step {
                Step::Forged { to, from, addressed, message } => {
                    let envelope = Envelope { from, to: addressed, message };
                    let result = replicas[to].handle(now, envelope);
                    prop_assert!(result.is_ok(), "a peer message stopped the replica: {:?}", result);
                }
                Step::Tick { at, advance_ms } => {
                    now += ms(advance_ms);
                    let result = replicas[at].tick(now);
                    prop_assert!(result.is_ok(), "a tick stopped the replica: {:?}", result);
                }
            }
        }
        prop_assert!(
            honest_run(&mut replicas, now, Duration::from_secs(30)),
            "no value was chosen with honest traffic: {:?}",
            replicas
        );
    }
}
