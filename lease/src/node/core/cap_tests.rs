//! The node's configured lease cap is applied before proposing.

use super::*;
use crate::command::{LeaseToken, Op, Refusal};

fn acquire(i: u64) -> Request {
    Request {
        client: ClientId(1),
        request: i,
        acked_below: i,
        op: Op::Acquire {
            name: format!("lease-{i}"),
            owner: "owner".into(),
            token: LeaseToken(7),
            ttl_ms: 60_000,
            wait_ms: 0,
        },
    }
}

/// Runs a single-node core until it has nothing left to do; returns the
/// answers it gave and whether it proposed anything.
fn settle(core: &mut NodeCore, now: Duration) -> (Vec<Outcome>, bool) {
    let mut answers = Vec::new();
    let mut proposed = false;
    loop {
        core.end_round(now).unwrap();
        let effects = core.take_effects();
        if effects.is_empty() {
            return (answers, proposed);
        }
        for effect in effects {
            match effect {
                Effect::Persist { id, write } => {
                    proposed |= !write.entries.is_empty();
                    core.synced(now, id).unwrap();
                }
                Effect::Answer { outcome, .. } => answers.push(outcome),
                _ => {}
            }
        }
    }
}

#[test]
fn a_new_lease_beyond_the_configured_cap_is_refused_before_it_is_proposed() {
    let mut config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
    config.max_leases = 2;
    let paxos = config.paxos_config(1);
    let mut core = NodeCore::new(config, paxos, JournalState::default(), Duration::ZERO).unwrap();
    let now = Duration::from_secs(1);
    core.tick(now).unwrap();
    settle(&mut core, now);
    assert!(core.status().is_leader);
    for i in 1..=2 {
        core.request(now, acquire(i));
        let (answers, _) = settle(&mut core, now);
        assert!(
            matches!(answers[..], [Outcome::Granted { .. }]),
            "{answers:?}"
        );
    }
    core.request(now, acquire(3));
    let (answers, proposed) = settle(&mut core, now);
    assert_eq!(answers, vec![Outcome::Refused(Refusal::TooManyLeases)]);
    assert!(!proposed, "a refused request never reaches the log");
    let mut renewal = acquire(2);
    renewal.request = 4;
    renewal.acked_below = 4;
    core.request(now, renewal);
    let (answers, _) = settle(&mut core, now);
    assert!(
        matches!(answers[..], [Outcome::Granted { .. }]),
        "a lease already held is no new lease: {answers:?}"
    );
}

#[test]
fn a_lease_cap_above_the_tables_ceiling_is_refused() {
    let mut config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
    config.max_leases = crate::table::MAX_LEASES + 1;
    let paxos = config.paxos_config(1);
    let err = NodeCore::new(config, paxos, JournalState::default(), Duration::ZERO);
    assert!(matches!(err, Err(NodeError::Config(_))));
}
