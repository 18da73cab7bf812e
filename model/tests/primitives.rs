//! The primitives beside the lease under the model checker: each sabotage
//! of a semaphore, a read-write lease, a lock-delay, a lease session or a
//! watch yields a counterexample from its scenario, and the same scenario
//! without it keeps every property. One node: these rules are the table's,
//! the client core's and the node's, not the consensus core's, and the
//! smaller cluster keeps each search to a few hundred states.

mod common;

use common::caught_only_under;
use trexlock_lease::Sabotage as Runtime;
use trexlock_model::{Bounds, Property, Sabotage, Scenario};

/// One node, the scenario's clients and prefix, no fault, `time_steps`
/// steps of timely time and paths of at most `max_depth` steps after the
/// prefix.
fn alone(scenario: Scenario, clients: usize, time_steps: u32, max_depth: usize) -> Bounds {
    Bounds {
        nodes: 1,
        clients,
        crashes: 0,
        resends: 0,
        time_steps,
        fault_steps: 0,
        max_depth: Some(max_depth),
        scenario: Some(scenario),
        ..Bounds::default()
    }
}

#[test]
fn semaphore_off_by_one_lets_two_holders_share_one_permit() {
    caught_only_under(
        Sabotage::Runtime(Runtime::SemaphoreOffByOne),
        alone(Scenario::SemaphoreOfOnePermit, 2, 0, 6),
        Property::SharesWithinTheirLimits,
    );
}

#[test]
fn reader_slips_past_writer_grants_a_reader_that_came_after_a_queued_writer() {
    caught_only_under(
        Sabotage::Runtime(Runtime::ReaderSlipsPastWriter),
        alone(Scenario::ReaderBehindAQueuedWriter, 3, 0, 14),
        Property::NoReaderOvertakesAQueuedWriter,
    );
}

#[test]
fn lock_delay_dropped_grants_the_name_again_at_its_expiry() {
    // Eight steps of time: without the sabotage the waiter is granted the
    // lease after the delay (from step 11 on) and holds it, within bounds.
    caught_only_under(
        Sabotage::Runtime(Runtime::LockDelayDropped),
        alone(Scenario::LockDelayOnAnExpiringLease, 2, 8, 24),
        Property::LockDelayHonoured,
    );
}

#[test]
fn session_lease_from_acquire_lets_the_holder_believe_past_its_sessions_end() {
    caught_only_under(
        Sabotage::Runtime(Runtime::SessionLeaseFromAcquire),
        alone(Scenario::LeaseBoundToAnUnkeptSession, 2, 4, 12),
        Property::OneHolderAtATime,
    );
}

#[test]
fn watch_skips_event_delivers_an_event_out_of_the_logs_order() {
    caught_only_under(
        Sabotage::Runtime(Runtime::WatchSkipsEvent),
        alone(Scenario::WatcherOfTheLeader, 2, 0, 10),
        Property::WatchersGetTheLog,
    );
}
