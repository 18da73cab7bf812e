//! The model checker over the shipped cores: the default bounds keep every
//! property, and every sabotage switch of the simulator yields a
//! counterexample (the proof that each check can fail).

mod common;

use common::{assert_none, checked, counterexample};
use trexlock_model::{Bounds, LeaseModel, Property, Sabotage, Scenario, explain};

#[test]
fn default_bounds_keep_every_property() {
    let bounds = Bounds::default();
    let report = checked(bounds);
    assert_none(bounds, &report);
    assert!(
        report.states > 1_000,
        "the default bounds explore a real state space"
    );
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

/// The bounds a scenario's search runs under: no crash, resend or loss
/// beyond the scenario's own, and no step of time (the cut heals as the
/// search begins; what crossed it while it lasted stays lost, what was in
/// flight before it arrives late).
fn after(scenario: Scenario, max_depth: usize) -> Bounds {
    Bounds {
        scenario: Some(scenario),
        commands: 1,
        crashes: 0,
        resends: 0,
        time_steps: 0,
        fault_steps: 0,
        max_depth: Some(max_depth),
        ..Bounds::default()
    }
}

/// The lease outlives an election only if it lasts longer than one: the
/// clients ask for ten steps, and both clients act.
fn lease_held(max_depth: usize) -> Bounds {
    Bounds {
        commands: 2,
        ttl_ms: 1_000,
        ..after(Scenario::LeaderCutOffWhileALeaseIsHeld, max_depth)
    }
}

/// Two requests, and slots of 80 bytes: one acquire fills a message, so a
/// promise of two votes comes in two parts.
fn follower_behind(max_depth: usize) -> Bounds {
    Bounds {
        commands: 2,
        slot_bytes: Some(80),
        ..after(Scenario::LeaderCutOffWithAFollowerBehind, max_depth)
    }
}

/// Three operations: client 0 acquires and releases, client 1 acquires.
fn list_from_behind(max_depth: usize) -> Bounds {
    Bounds {
        commands: 3,
        ..after(Scenario::ListFromAFollowerBehind, max_depth)
    }
}

#[test]
fn scenario_prefixes_keep_every_property_without_a_sabotage() {
    for bounds in [
        after(Scenario::LeaderCutOffMidProposal, 10),
        after(Scenario::VoterLosesItsDisk, 10),
        lease_held(10),
        follower_behind(10),
        list_from_behind(10),
    ] {
        assert_none(bounds, &checked(bounds));
    }
}

#[test]
fn accept_lower_ballot_lets_a_deposed_leaders_proposal_be_chosen_beside_the_new_one() {
    let bounds = after(Scenario::LeaderCutOffMidProposal, 12);
    let (property, _) = counterexample(core(trexlock_paxos::Sabotage::AcceptLowerBallot), bounds);
    assert_eq!(property, Property::OneValuePerSlot);
}

#[test]
fn forget_votes_in_promise_lets_a_new_leader_choose_over_a_chosen_value() {
    let bounds = after(Scenario::LeaderCutOffMidProposal, 12);
    let (property, _) =
        counterexample(core(trexlock_paxos::Sabotage::ForgetVotesInPromise), bounds);
    assert_eq!(property, Property::OneValuePerSlot);
}

#[test]
fn commit_ignores_ballot_applies_a_vote_that_was_never_chosen() {
    let bounds = after(Scenario::LeaderCutOffMidProposal, 12);
    let (property, _) = counterexample(core(trexlock_paxos::Sabotage::CommitIgnoresBallot), bounds);
    assert_eq!(property, Property::ApplyChosenInOrder);
}

#[test]
fn vote_after_disk_loss_lets_a_wiped_voter_help_choose_a_second_value() {
    let bounds = after(Scenario::VoterLosesItsDisk, 12);
    let (property, _) = counterexample(core(trexlock_paxos::Sabotage::VoteAfterDiskLoss), bounds);
    assert_eq!(property, Property::OneValuePerSlot);
}

#[test]
fn no_takeover_extension_lets_two_clients_believe_they_hold_the_lease() {
    let (property, _) = counterexample(
        runtime(trexlock_lease::Sabotage::NoTakeoverExtension),
        lease_held(14),
    );
    assert_eq!(property, Property::OneHolderAtATime);
}

#[test]
fn count_partial_promise_lets_a_candidate_lead_without_the_vote_in_a_missing_part() {
    let (property, _) = counterexample(
        core(trexlock_paxos::Sabotage::CountPartialPromise),
        follower_behind(12),
    );
    assert_eq!(property, Property::OneValuePerSlot);
}

#[test]
fn list_from_local_table_shows_a_holder_older_than_an_acknowledged_grant() {
    let bounds = Bounds {
        sabotage: Some(runtime(trexlock_lease::Sabotage::ListFromLocalTable)),
        ..list_from_behind(6)
    };
    let report = checked(bounds);
    let found = report
        .counterexamples
        .iter()
        .find(|(p, _)| *p == Property::ListsAreLinearizable)
        .unwrap_or_else(|| panic!("no stale list within {bounds:?}"));
    println!(
        "shortest counterexample: {} steps ({} after the prefix)\n{}",
        found.1.len(),
        found.1.len().saturating_sub(report.prefix_steps),
        explain(&LeaseModel::new(bounds), &found.1)
    );
}

#[test]
fn unchecked_snapshot_chunks_install_a_duplicated_chunk_and_stop_the_follower() {
    // A follower behind a compacted log catches up by snapshot chunks; the
    // network may duplicate one message, so a chunk can arrive twice.
    let bounds = Bounds {
        commands: 2,
        duplicates: 1,
        time_steps: 0,
        fault_steps: 1,
        ..after(Scenario::FollowerBehindASnapshot, 8)
    };
    common::caught_only_under(
        core(trexlock_paxos::Sabotage::UncheckedSnapshotChunks),
        bounds,
        Property::NoNodeStops,
    );
}
