//! Membership change and elections under the model checker: each
//! sabotage of the one-change-at-a-time rule, of the quorum that governs a
//! slot after a change, and of fresh ballots yields a counterexample from
//! its scenario, and the same scenario without it keeps every property.

mod common;

use common::caught_only_under;
use trexlock_model::{Bounds, Property, Sabotage, Scenario};
use trexlock_paxos::Sabotage as Core;

/// Three nodes, the scenario's prefix, `commands` operations (the
/// prefix's own), no fault and no time after it, and paths of at most
/// `max_depth` steps.
fn after(scenario: Scenario, commands: usize, max_depth: usize) -> Bounds {
    Bounds {
        commands,
        crashes: 0,
        resends: 0,
        time_steps: 0,
        fault_steps: 0,
        max_depth: Some(max_depth),
        scenario: Some(scenario),
        ..Bounds::default()
    }
}

#[test]
fn concurrent_changes_choose_a_second_membership_before_the_first_is_in_effect() {
    caught_only_under(
        Sabotage::Core(Core::ConcurrentChanges),
        after(Scenario::TwoChangesAtOnce, 0, 8),
        Property::OneMembershipChangeAtATime,
    );
}

#[test]
fn reuse_own_ballot_elects_a_restarted_leader_again_in_its_old_ballot() {
    caught_only_under(
        Sabotage::Core(Core::ReuseOwnBallot),
        after(Scenario::LeaderRestarts, 0, 8),
        Property::OneLeaderPerBallot,
    );
}

#[test]
fn old_config_quorum_applies_a_slot_that_no_majority_of_its_voters_holds() {
    caught_only_under(
        Sabotage::Core(Core::OldConfigQuorum),
        after(Scenario::LeaderRemovesAVoter, 1, 8),
        Property::ApplyChosenInOrder,
    );
}
