//! The model checker over the shipped cores: the default bounds keep every
//! property, and every sabotage switch of the simulator yields a
//! counterexample (the proof that each check can fail).

use trexlock_model::{Bounds, LeaseModel, Property, Report, Sabotage, check, explain};

fn checked(bounds: Bounds) -> Report {
    let report = check(&bounds, Some(2));
    println!(
        "{:?}: {} states ({} generated), depth {} (startup {}), {:.1?}",
        bounds.sabotage,
        report.states,
        report.generated,
        report.max_depth,
        report.startup_steps,
        report.elapsed
    );
    report
}

#[test]
fn default_bounds_keep_every_property() {
    let bounds = Bounds::default();
    let report = checked(bounds);
    if let Some((property, actions)) = report.counterexamples.first() {
        let model = LeaseModel::new(bounds);
        panic!(
            "\"{}\" broken:\n{}",
            property.name(),
            explain(&model, actions)
        );
    }
    assert!(
        report.states > 1_000,
        "the default bounds explore a real state space"
    );
}

/// Runs `sabotage` and returns the shortest path that breaks a safety
/// property (liveness is not what a sabotage breaks).
fn counterexample(sabotage: Sabotage, bounds: Bounds) -> (Property, usize) {
    let bounds = Bounds {
        sabotage: Some(sabotage),
        ..bounds
    };
    let report = checked(bounds);
    let found = report
        .counterexamples
        .iter()
        .find(|(p, _)| *p != Property::EveryCommandAnswered)
        .unwrap_or_else(|| panic!("{sabotage:?} broke no safety property within {bounds:?}"));
    println!("{}", explain(&LeaseModel::new(bounds), &found.1));
    (found.0, found.1.len())
}

fn core(s: trexlock_paxos::Sabotage) -> Sabotage {
    Sabotage::Core(s)
}

fn runtime(s: trexlock_lease::Sabotage) -> Sabotage {
    Sabotage::Runtime(s)
}

#[test]
fn minority_quorum_applies_a_value_no_quorum_holds() {
    let (property, _) = counterexample(
        core(trexlock_paxos::Sabotage::MinorityQuorum),
        Bounds::default(),
    );
    assert_eq!(property, Property::ApplyChosenInOrder);
}

#[test]
fn promise_not_persisted_announces_a_promise_that_is_not_durable() {
    let (property, _) = counterexample(
        core(trexlock_paxos::Sabotage::PromiseNotPersisted),
        Bounds::default(),
    );
    assert_eq!(property, Property::DurableBeforeAnnounced);
}

#[test]
fn early_accepted_announces_a_vote_that_is_not_durable() {
    let (property, _) = counterexample(
        runtime(trexlock_lease::Sabotage::EarlyAccepted),
        Bounds::default(),
    );
    assert_eq!(property, Property::DurableBeforeAnnounced);
}

#[test]
fn leader_unsynced_vote_applies_a_value_no_quorum_holds() {
    let (property, _) = counterexample(
        runtime(trexlock_lease::Sabotage::LeaderUnsyncedVote),
        Bounds::default(),
    );
    assert_eq!(property, Property::ApplyChosenInOrder);
}

#[test]
fn deadline_from_reply_lets_two_clients_believe_they_hold_the_lease() {
    // One node: a grant's reply that arrives late is all it takes, and the
    // smaller cluster keeps the search short.
    let bounds = Bounds {
        nodes: 1,
        crashes: 0,
        resends: 0,
        time_steps: 4,
        fault_steps: 4,
        max_depth: Some(11),
        ..Bounds::default()
    };
    let (property, _) =
        counterexample(runtime(trexlock_lease::Sabotage::DeadlineFromReply), bounds);
    assert_eq!(property, Property::OneHolderAtATime);
}
