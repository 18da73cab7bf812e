//! Specifications of lock-delay.

use super::*;
use crate::command::{Body, ClientId, Request};
use crate::table::admit;
use crate::table::test_log::{Log, client, token};

impl Log {
    fn acquire(&mut self, at_ms: u64, owner: &str, ttl_ms: u64, wait_ms: u64) -> Outcome {
        let op = Op::Acquire {
            name: "l".into(),
            owner: owner.into(),
            token: token(owner),
            ttl_ms,
            wait_ms,
        };
        self.run(at_ms, owner, op).pop().expect("an answer").1
    }

    fn set_delay(&mut self, at_ms: u64, owner: &str, stamp: Stamp, lock_delay_ms: u64) -> Outcome {
        let op = Op::SetLockDelay {
            name: "l".into(),
            owner: owner.into(),
            stamp,
            token: token(owner),
            lock_delay_ms,
        };
        self.run(at_ms, owner, op).pop().expect("an answer").1
    }

    fn release_lease(&mut self, at_ms: u64, owner: &str, stamp: Stamp) -> Outcome {
        let op = Op::Release {
            name: "l".into(),
            owner: owner.into(),
            stamp,
            token: token(owner),
        };
        self.run(at_ms, owner, op).pop().expect("an answer").1
    }
}

fn granted(outcome: Outcome) -> Stamp {
    match outcome {
        Outcome::Granted { stamp, .. } => stamp,
        other => panic!("not granted: {other:?}"),
    }
}

#[test]
fn an_expired_lease_with_a_lock_delay_is_granted_to_nobody_until_the_delay_has_passed() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    assert_eq!(
        log.set_delay(10, "alice", stamp, 500),
        Outcome::LockDelaySet
    );
    assert_eq!(
        log.acquire(1_200, "bob", 1_000, 0),
        Outcome::Blocked { remaining_ms: 300 }
    );
    assert_eq!(
        log.acquire(1_499, "bob", 1_000, 0),
        Outcome::Blocked { remaining_ms: 1 }
    );
    assert!(granted(log.acquire(1_500, "bob", 1_000, 0)) > stamp);
}

#[test]
fn a_released_lease_is_not_blocked_by_its_lock_delay() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    log.set_delay(10, "alice", stamp, 500);
    assert_eq!(log.release_lease(20, "alice", stamp), Outcome::Released);
    granted(log.acquire(30, "bob", 1_000, 0));
}

#[test]
fn a_waiter_is_served_when_the_lock_delay_ends_and_the_leader_knows_when_to_tick() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    log.set_delay(10, "alice", stamp, 500);
    assert_eq!(log.acquire(20, "bob", 1_000, 10_000), Outcome::Queued);
    let at_expiry = log.apply(1_000, Body::Tick);
    assert!(
        at_expiry.is_empty(),
        "nobody granted at expiry: {at_expiry:?}"
    );
    assert_eq!(log.table.next_deadline_us(), Some(1_500_000));
    assert!(log.apply(1_499, Body::Tick).is_empty());
    let served = log.apply(1_500, Body::Tick);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].0, client("bob"));
    assert!(granted(served[0].1.clone()) > stamp);
}

#[test]
fn a_lock_delay_belongs_to_one_grant() {
    let mut log = Log::default();
    let first = granted(log.acquire(0, "alice", 1_000, 0));
    log.set_delay(10, "alice", first, 500);
    log.release_lease(20, "alice", first);
    granted(log.acquire(30, "bob", 100, 0));
    granted(log.acquire(200, "carol", 100, 0));
}

#[test]
fn only_the_holder_sets_a_lock_delay_and_never_over_the_limit() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    assert!(matches!(
        log.set_delay(10, "bob", stamp, 500),
        Outcome::NotHolder { .. }
    ));
    granted(log.acquire(1_000, "carol", 1_000, 0));
    let request = Request {
        client: ClientId(1),
        request: 1,
        acked_below: 0,
        op: Op::SetLockDelay {
            name: "l".into(),
            owner: "alice".into(),
            stamp,
            token: token("alice"),
            lock_delay_ms: MAX_LOCK_DELAY_MS + 1,
        },
    };
    assert_eq!(admit(&request), Err(Refusal::LockDelayTooLong));
}

#[test]
fn blocked_names_count_toward_the_lease_cap() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    log.set_delay(10, "alice", stamp, 60_000);
    log.apply(1_000, Body::Tick);
    assert_eq!(log.table.len(), 0);
    assert_eq!(log.table.blocked_len(), 1);
}

#[test]
fn a_node_installing_a_snapshot_keeps_the_lock_delays_set_and_the_blocks_running() {
    let mut log = Log::default();
    let stamp = granted(log.acquire(0, "alice", 1_000, 0));
    log.set_delay(10, "alice", stamp, 500);
    let installed = LeaseTable::from_snapshot(&log.table.to_snapshot()).expect("loads");
    assert_eq!(installed, log.table, "the delay set on a held grant");
    log.apply(1_000, Body::Tick);
    log.table = LeaseTable::from_snapshot(&log.table.to_snapshot()).expect("loads");
    assert_eq!(
        log.acquire(1_200, "bob", 1_000, 0),
        Outcome::Blocked { remaining_ms: 300 }
    );
    assert_eq!(log.acquire(1_250, "bob", 1_000, 10_000), Outcome::Queued);
    log.table = LeaseTable::from_snapshot(&log.table.to_snapshot()).expect("loads");
    assert_eq!(log.table.next_deadline_us(), Some(1_500_000));
    let served = log.apply(1_500, Body::Tick);
    assert_eq!(served.len(), 1);
    assert!(granted(served[0].1.clone()) > stamp);
}
