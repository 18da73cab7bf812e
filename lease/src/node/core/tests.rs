//! The node core specified by what it emits.

use super::*;
use crate::command::Op;
use trexlock_paxos::{Ballot, Message};

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A member of a three-node cluster whose journal holds a promise (so it
/// votes at once instead of first learning as a rejoining node).
fn member(node: NodeId, promised: Ballot) -> NodeCore {
    let config = NodeConfig::new(node, vec![N1, N2, N3]);
    let paxos = config.paxos_config(1);
    let state = JournalState {
        promised,
        ..JournalState::default()
    };
    NodeCore::new(config, paxos, state, ms(0)).unwrap()
}

fn ballot(counter: u64, node: NodeId) -> Ballot {
    Ballot { counter, node }
}

fn read(client: u64, name: &str) -> Request {
    Request {
        client: ClientId(client),
        request: 1,
        acked_below: 1,
        op: Op::Read { name: name.into() },
    }
}

fn persisted(effects: &[Effect]) -> Vec<u64> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist { id, .. } => Some(*id),
            _ => None,
        })
        .collect()
}

fn sent(effects: &[Effect], kind: &str) -> Vec<NodeId> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                to,
                message: PeerMessage::Paxos(m),
            } if m.kind() == kind => Some(*to),
            _ => None,
        })
        .collect()
}

/// The highest slot the effects' Accepts propose.
fn last_accept_slot(effects: &[Effect]) -> Option<Slot> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send {
                message: PeerMessage::Paxos(Message::Accept { entries, .. }),
                ..
            } => entries.last().map(|(s, _)| *s),
            _ => None,
        })
        .max()
}

/// n2 tells the leader it voted for every slot up to `slot` in the
/// leader's ballot.
fn n2_votes_up_to(core: &mut NodeCore, now: Duration, slot: Slot) {
    let accepted = Message::Accepted {
        ballot: core.replica().promised(),
        slots: (1..=slot).collect(),
        committed: 0,
    };
    core.peer(now, N2, PeerMessage::Paxos(accepted)).unwrap();
}

/// Elects n1 with n2's promise; returns n1 with its effects drained and
/// every write synced.
fn leader() -> NodeCore {
    let mut core = member(N1, ballot(1, N2));
    core.tick(ms(10_000)).unwrap();
    core.end_round(ms(10_000)).unwrap();
    let effects = core.take_effects();
    let id = persisted(&effects)[0];
    core.synced(ms(10_001), id).unwrap();
    let effects = core.take_effects();
    let prepare = effects
        .iter()
        .find_map(|e| match e {
            Effect::Send {
                message: PeerMessage::Paxos(m @ Message::Prepare { .. }),
                ..
            } => Some(m.clone()),
            _ => None,
        })
        .expect("a prepare after the promise is durable");
    let Message::Prepare { ballot, .. } = prepare else {
        unreachable!()
    };
    let promise = Message::Promise {
        ballot,
        committed: 0,
        truncated: 0,
        first: 1,
        through: trexlock_paxos::MAX_SLOT,
        entries: Vec::new(),
    };
    core.peer(ms(10_002), N2, PeerMessage::Paxos(promise))
        .unwrap();
    sync_all(&mut core, ms(10_003));
    assert!(core.status().is_leader);
    core
}

/// Ends the round and syncs every write the core asks for.
fn sync_all(core: &mut NodeCore, now: Duration) -> Vec<Effect> {
    let mut all = Vec::new();
    core.end_round(now).unwrap();
    loop {
        let effects = core.take_effects();
        let ids = persisted(&effects);
        all.extend(effects);
        let Some(id) = ids.last() else {
            return all;
        };
        core.synced(now, *id).unwrap();
        core.end_round(now).unwrap();
    }
}

#[test]
fn a_followers_accepted_leaves_only_after_its_vote_is_synced() {
    let mut core = member(N2, ballot(1, N1));
    let accept = Message::Accept {
        ballot: ballot(1, N1),
        committed: 0,
        entries: vec![(1, Value::Noop)],
    };
    core.peer(ms(1), N1, PeerMessage::Paxos(accept)).unwrap();
    core.end_round(ms(1)).unwrap();
    let effects = core.take_effects();
    assert_eq!(persisted(&effects), vec![1], "the vote is written first");
    assert!(
        sent(&effects, "accepted").is_empty(),
        "and not announced yet"
    );
    core.synced(ms(2), 1).unwrap();
    assert_eq!(sent(&core.take_effects(), "accepted"), vec![N1]);
}

#[test]
fn the_leaders_accepts_leave_before_its_own_sync() {
    let mut core = leader();
    core.request(ms(20_000), read(9, "x"));
    core.end_round(ms(20_000)).unwrap();
    let effects = core.take_effects();
    assert_eq!(persisted(&effects).len(), 1);
    let mut accepts = sent(&effects, "accept");
    accepts.sort();
    assert_eq!(accepts, vec![N2, N3]);
}

#[test]
fn a_followers_vote_counts_only_once_the_leaders_own_vote_is_durable() {
    let mut core = leader();
    core.request(ms(20_000), read(9, "x"));
    core.end_round(ms(20_000)).unwrap();
    let effects = core.take_effects();
    let write = persisted(&effects)[0];
    let slot = last_accept_slot(&effects).expect("an accept");
    n2_votes_up_to(&mut core, ms(20_001), slot);
    core.end_round(ms(20_001)).unwrap();
    let early = core.take_effects();
    assert!(
        !early.iter().any(|e| matches!(e, Effect::Applied { .. })),
        "chosen with a vote that is not on disk"
    );
    core.synced(ms(20_002), write).unwrap();
    let later = core.take_effects();
    assert!(
        later
            .iter()
            .any(|e| matches!(e, Effect::Applied { slot: s, .. } if *s == slot))
    );
    assert!(later.iter().any(|e| matches!(
        e,
        Effect::Answer {
            client: ClientId(9),
            outcome: Outcome::Holder { .. },
            ..
        }
    )));
}

#[test]
fn a_request_outside_the_limits_is_answered_at_once_and_never_proposed() {
    let mut core = leader();
    core.request(ms(20_000), read(9, ""));
    core.end_round(ms(20_000)).unwrap();
    let effects = core.take_effects();
    assert!(persisted(&effects).is_empty());
    assert!(matches!(
        effects.as_slice(),
        [Effect::Answer {
            outcome: Outcome::Refused(_),
            ..
        }]
    ));
    assert_eq!(core.pending_len(), 0);
}

#[test]
fn a_forwarded_request_outside_the_limits_is_dropped() {
    let mut core = leader();
    let huge = "n".repeat(crate::table::MAX_NAME_BYTES + 1);
    core.peer(ms(20_000), N2, PeerMessage::Forward(vec![read(9, &huge)]))
        .unwrap();
    core.end_round(ms(20_000)).unwrap();
    assert!(persisted(&core.take_effects()).is_empty());
}

#[test]
fn a_follower_forwards_requests_to_the_leader_and_retries_them() {
    let mut core = member(N2, ballot(1, N1));
    let commit = Message::Commit {
        ballot: ballot(1, N1),
        committed: 0,
    };
    core.peer(ms(1), N1, PeerMessage::Paxos(commit)).unwrap();
    core.end_round(ms(1)).unwrap();
    core.take_effects();
    core.request(ms(2), read(9, "x"));
    core.end_round(ms(2)).unwrap();
    let forwarded = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Send {
                        to: N1,
                        message: PeerMessage::Forward(_)
                    }
                )
            })
            .count()
    };
    assert_eq!(forwarded(&core.take_effects()), 1);
    core.tick(ms(3)).unwrap();
    assert_eq!(
        forwarded(&core.take_effects()),
        0,
        "not before the retry interval"
    );
    // The leader is still heard from, so the follower does not campaign.
    let commit = Message::Commit {
        ballot: ballot(1, N1),
        committed: 0,
    };
    core.peer(ms(400), N1, PeerMessage::Paxos(commit)).unwrap();
    core.take_effects();
    core.tick(ms(2) + core.cfg.retry_interval).unwrap();
    assert_eq!(forwarded(&core.take_effects()), 1);
    assert_eq!(core.pending_len(), 1);
}

#[test]
fn a_drain_syncs_the_commit_index_that_waited_alone() {
    let mut core = leader();
    core.request(ms(20_000), read(9, "x"));
    let effects = sync_all(&mut core, ms(20_000));
    let slot = last_accept_slot(&effects).expect("an accept");
    n2_votes_up_to(&mut core, ms(20_001), slot);
    core.end_round(ms(20_001)).unwrap();
    assert!(
        persisted(&core.take_effects()).is_empty(),
        "a lone hint waits"
    );
    core.drain(ms(20_002));
    let effects = core.take_effects();
    assert_eq!(persisted(&effects).len(), 1);
    assert!(!core.is_drained());
    core.synced(ms(20_003), persisted(&effects)[0]).unwrap();
    assert!(core.is_drained());
}

/// Runs rounds until every proposal is chosen with n2's vote.
fn choose_all(core: &mut NodeCore, now: Duration) -> Vec<Effect> {
    let mut all = sync_all(core, now);
    let last = last_accept_slot(&all).unwrap_or(0);
    n2_votes_up_to(core, now, last);
    all.extend(sync_all(core, now));
    all
}

fn acquire(client: u64, request: u64, owner: &str) -> Request {
    Request {
        client: ClientId(client),
        request,
        acked_below: 1,
        op: Op::Acquire {
            name: "x".into(),
            owner: owner.into(),
            token: crate::command::LeaseToken(u128::from(client)),
            ttl_ms: 3_600_000,
            wait_ms: 1_000,
        },
    }
}

#[test]
fn a_request_nobody_will_collect_is_forgotten() {
    let mut core = leader();
    core.request(ms(20_000), acquire(8, 1, "holder"));
    choose_all(&mut core, ms(20_000));
    // The owner waits for "x"; its second acquire is answered only with
    // Queued and would otherwise stay pending for ever.
    core.request(ms(20_001), acquire(9, 1, "me"));
    core.request(ms(20_001), acquire(9, 2, "me"));
    let effects = choose_all(&mut core, ms(20_001));
    let queued = effects
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Answer {
                    outcome: Outcome::Queued,
                    ..
                }
            )
        })
        .count();
    assert_eq!(queued, 2);
    assert_eq!(core.pending_len(), 2);
    core.tick(ms(20_001) + ms(999) + requests::PENDING_GRACE)
        .unwrap();
    assert_eq!(
        core.pending_len(),
        2,
        "not before the wait and the grace ran out"
    );
    core.tick(ms(20_001) + ms(1_000) + requests::PENDING_GRACE)
        .unwrap();
    assert_eq!(core.pending_len(), 0);
    let abandoned = core
        .take_effects()
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Abandoned {
                    client: ClientId(9),
                    ..
                }
            )
        })
        .count();
    assert_eq!(abandoned, 2);
}

#[test]
fn an_idle_leader_proposes_a_tick_when_a_session_is_due_to_be_forgotten() {
    let mut core = leader();
    core.request(ms(20_000), acquire(8, 1, "holder"));
    choose_all(&mut core, ms(20_000));
    assert_eq!(core.table().sessions_len(), 1);
    let expiry = Duration::from_micros(core.table().next_session_expiry_us().unwrap());
    // Nothing happens but heartbeats, answered by n2, until well past the
    // session's expiry (table time runs from the takeover, before 20 s).
    let ballot = core.replica().promised();
    let mut now = ms(20_000);
    while now < expiry + ms(40_000) {
        now += ms(100);
        core.tick(now).unwrap();
        let committed = core.replica().committed();
        let ack = Message::CommitAck { ballot, committed };
        core.peer(now, N2, PeerMessage::Paxos(ack)).unwrap();
        choose_all(&mut core, now);
    }
    assert!(core.status().is_leader);
    assert_eq!(
        core.table().sessions_len(),
        0,
        "the session outlived its idle time"
    );
}
