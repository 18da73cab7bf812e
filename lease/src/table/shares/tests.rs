//! Specifications of semaphores and read-write leases.

use super::*;
use crate::command::{Body, ClientId, Request};
use crate::table::admit;
use crate::table::test_log::{Log, client, token};

const SEM: Mode = Mode::Permit { permits: 2 };

fn granted(outcome: &Outcome) -> Stamp {
    match outcome {
        Outcome::Granted { stamp, .. } => *stamp,
        other => panic!("not granted: {other:?}"),
    }
}

impl Log {
    fn take(&mut self, at_ms: u64, name: &str, owner: &str, mode: Mode, wait_ms: u64) -> Outcome {
        let op = Op::AcquireShare {
            name: name.into(),
            owner: owner.into(),
            token: token(owner),
            ttl_ms: 1_000,
            wait_ms,
            mode,
        };
        self.run(at_ms, owner, op).pop().expect("an answer").1
    }

    fn release(
        &mut self,
        at_ms: u64,
        name: &str,
        owner: &str,
        stamp: Stamp,
    ) -> Vec<(u64, Outcome)> {
        let op = Op::Release {
            name: name.into(),
            owner: owner.into(),
            stamp,
            token: token(owner),
        };
        self.run(at_ms, owner, op)
    }
}

#[test]
fn a_semaphore_grants_at_most_its_permits_each_with_its_own_growing_stamp() {
    let mut log = Log::default();
    let a = granted(&log.take(0, "pool", "alice", SEM, 0));
    let b = granted(&log.take(1, "pool", "bob", SEM, 0));
    assert!(b > a);
    assert_eq!(
        log.take(2, "pool", "carol", SEM, 0),
        Outcome::Busy {
            holders: 2,
            waiters: 0
        }
    );
    assert_eq!(log.table.share_holders_len(), 2);
}

#[test]
fn a_released_permit_goes_to_the_first_waiter_and_the_rest_keep_their_order() {
    let mut log = Log::default();
    let a = granted(&log.take(0, "pool", "alice", SEM, 0));
    granted(&log.take(1, "pool", "bob", SEM, 0));
    assert_eq!(log.take(2, "pool", "carol", SEM, 5_000), Outcome::Queued);
    assert_eq!(log.take(3, "pool", "dave", SEM, 5_000), Outcome::Queued);
    let answers = log.release(4, "pool", "alice", a);
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(answers[0].0, client("carol"));
    assert!(granted(&answers[0].1) > a);
    assert_eq!(answers[1].1, Outcome::Released);
    // Dave still waits: two permits are taken.
    assert_eq!(log.table.share_holders_len(), 2);
}

#[test]
fn an_expired_permit_serves_the_next_waiter_at_the_tick_the_leader_is_told_to_propose() {
    let mut log = Log::default();
    granted(&log.take(0, "pool", "alice", SEM, 0));
    granted(&log.take(500, "pool", "bob", SEM, 0));
    assert_eq!(log.take(600, "pool", "carol", SEM, 5_000), Outcome::Queued);
    assert_eq!(log.table.next_deadline_us(), Some(1_000_000));
    assert!(log.apply(999, Body::Tick).is_empty());
    let served = log.apply(1_000, Body::Tick);
    assert_eq!(served.len(), 1);
    assert_eq!(served[0].0, client("carol"));
    granted(&served[0].1);
}

#[test]
fn renew_and_release_act_on_the_callers_permit_only() {
    let mut log = Log::default();
    let a = granted(&log.take(0, "pool", "alice", SEM, 0));
    let b = granted(&log.take(0, "pool", "bob", SEM, 0));
    let renew = |owner: &str, stamp| Op::Renew {
        name: "pool".into(),
        owner: owner.into(),
        stamp,
        token: token(owner),
        ttl_ms: 5_000,
    };
    assert_eq!(
        log.run(500, "alice", renew("alice", a))[0].1,
        Outcome::Renewed
    );
    assert!(matches!(
        log.run(500, "alice", renew("alice", b))[0].1,
        Outcome::NotHolder { .. }
    ));
    // Bob's permit expired at 1 s; Alice's lasts to 5.5 s.
    log.apply(1_000, Body::Tick);
    assert_eq!(log.table.share_holders_len(), 1);
    assert!(matches!(
        log.release(1_100, "pool", "bob", b)[0].1,
        Outcome::NotHolder { .. }
    ));
    assert_eq!(
        log.release(1_200, "pool", "alice", a)[0].1,
        Outcome::Released
    );
    assert!(log.table.is_empty());
}

#[test]
fn acquiring_again_with_the_same_token_renews_the_same_permit() {
    let mut log = Log::default();
    let a = granted(&log.take(0, "pool", "alice", SEM, 0));
    assert_eq!(granted(&log.take(10, "pool", "alice", SEM, 0)), a);
    assert_eq!(log.table.share_holders_len(), 1);
}

#[test]
fn readers_share_the_name_and_a_writer_holds_it_alone() {
    let mut log = Log::default();
    granted(&log.take(0, "doc", "r1", Mode::Read, 0));
    granted(&log.take(1, "doc", "r2", Mode::Read, 0));
    assert!(matches!(
        log.take(2, "doc", "w", Mode::Write, 0),
        Outcome::Busy { holders: 2, .. }
    ));
    let mut log = Log::default();
    granted(&log.take(0, "doc", "w", Mode::Write, 0));
    assert!(matches!(
        log.take(1, "doc", "r1", Mode::Read, 0),
        Outcome::Busy { holders: 1, .. }
    ));
    assert!(matches!(
        log.take(1, "doc", "w2", Mode::Write, 0),
        Outcome::Busy { holders: 1, .. }
    ));
}

#[test]
fn a_waiting_writer_holds_back_the_readers_that_come_after_it() {
    let mut log = Log::default();
    let r1 = granted(&log.take(0, "doc", "r1", Mode::Read, 0));
    assert_eq!(log.take(1, "doc", "w", Mode::Write, 5_000), Outcome::Queued);
    assert!(matches!(
        log.take(2, "doc", "r2", Mode::Read, 0),
        Outcome::Busy {
            holders: 1,
            waiters: 1
        }
    ));
    assert_eq!(log.take(3, "doc", "r3", Mode::Read, 5_000), Outcome::Queued);
    let answers = log.release(4, "doc", "r1", r1);
    assert_eq!(answers[0].0, client("w"), "the writer first: {answers:?}");
    let w = granted(&answers[0].1);
    let answers = log.release(5, "doc", "w", w);
    assert_eq!(answers[0].0, client("r3"));
    assert!(granted(&answers[0].1) > w);
}

#[test]
fn readers_queued_together_behind_a_writer_are_granted_together() {
    let mut log = Log::default();
    let w = granted(&log.take(0, "doc", "w", Mode::Write, 0));
    assert_eq!(log.take(1, "doc", "r1", Mode::Read, 5_000), Outcome::Queued);
    assert_eq!(log.take(2, "doc", "r2", Mode::Read, 5_000), Outcome::Queued);
    assert_eq!(
        log.take(3, "doc", "w2", Mode::Write, 5_000),
        Outcome::Queued
    );
    let answers = log.release(4, "doc", "w", w);
    let granted_to: Vec<u64> = answers
        .iter()
        .filter(|(_, o)| matches!(o, Outcome::Granted { .. }))
        .map(|(c, _)| *c)
        .collect();
    assert_eq!(granted_to, vec![client("r1"), client("r2")]);
}

#[test]
fn a_writer_that_gave_up_lets_the_readers_behind_it_in_when_its_wait_ends() {
    let mut log = Log::default();
    granted(&log.take(0, "doc", "r1", Mode::Read, 0));
    assert_eq!(log.take(1, "doc", "w", Mode::Write, 100), Outcome::Queued);
    assert_eq!(log.take(2, "doc", "r2", Mode::Read, 5_000), Outcome::Queued);
    assert_eq!(log.table.next_deadline_us(), Some(101_001));
    let answers = log.apply(102, Body::Tick);
    assert_eq!(answers[0], (client("w"), Outcome::TimedOut));
    assert_eq!(answers[1].0, client("r2"));
    granted(&answers[1].1);
}

#[test]
fn a_reader_whose_wait_ran_out_behind_a_waiting_writer_is_answered_and_the_writer_keeps_its_place()
{
    let mut log = Log::default();
    granted(&log.take(0, "doc", "r1", Mode::Read, 0));
    assert_eq!(log.take(1, "doc", "w", Mode::Write, 5_000), Outcome::Queued);
    assert_eq!(log.take(2, "doc", "r2", Mode::Read, 10), Outcome::Queued);
    assert_eq!(log.table.next_deadline_us(), Some(12_001));
    let answers = log.apply(20, Body::Tick);
    assert_eq!(answers, vec![(client("r2"), Outcome::TimedOut)]);
    assert_eq!(log.table.next_deadline_us(), Some(1_000_000));
    let served = log.apply(1_000, Body::Tick);
    assert_eq!(served[0].0, client("w"));
    granted(&served[0].1);
}

#[test]
fn a_holder_asking_for_the_other_mode_is_refused_so_no_writer_is_slipped_past() {
    let mut log = Log::default();
    granted(&log.take(0, "doc", "alice", Mode::Read, 0));
    assert_eq!(
        log.take(1, "doc", "bob", Mode::Write, 5_000),
        Outcome::Queued
    );
    assert_eq!(
        log.take(2, "doc", "alice", Mode::Write, 0),
        Outcome::Refused(Refusal::OtherModeHeld)
    );
}

#[test]
fn a_name_is_one_kind_at_a_time() {
    let mut log = Log::default();
    granted(&log.take(0, "pool", "alice", SEM, 0));
    assert_eq!(
        log.take(1, "pool", "bob", Mode::Permit { permits: 3 }, 0),
        Outcome::Refused(Refusal::KindMismatch)
    );
    assert_eq!(
        log.take(1, "pool", "bob", Mode::Read, 0),
        Outcome::Refused(Refusal::KindMismatch)
    );
    let lease = Op::Acquire {
        name: "pool".into(),
        owner: "bob".into(),
        token: token("bob"),
        ttl_ms: 1_000,
        wait_ms: 0,
    };
    assert_eq!(
        log.run(2, "bob", lease)[0].1,
        Outcome::Refused(Refusal::KindMismatch)
    );
    let lease = Op::Acquire {
        name: "job".into(),
        owner: "bob".into(),
        token: token("bob"),
        ttl_ms: 1_000,
        wait_ms: 0,
    };
    granted(&log.run(3, "bob", lease)[0].1);
    assert_eq!(
        log.take(4, "job", "carol", SEM, 0),
        Outcome::Refused(Refusal::KindMismatch)
    );
}

#[test]
fn permits_out_of_range_are_refused_before_they_are_proposed() {
    for permits in [0, MAX_PERMITS + 1] {
        let request = Request {
            client: ClientId(1),
            request: 1,
            acked_below: 0,
            op: Op::AcquireShare {
                name: "pool".into(),
                owner: "alice".into(),
                token: token("alice"),
                ttl_ms: 1_000,
                wait_ms: 0,
                mode: Mode::Permit { permits },
            },
        };
        assert_eq!(admit(&request), Err(Refusal::PermitsOutOfRange));
    }
}

#[test]
fn a_read_write_lease_has_at_most_max_permits_readers() {
    let mut log = Log::default();
    for i in 0..MAX_PERMITS {
        granted(&log.take(0, "doc", &format!("reader-{i:03}"), Mode::Read, 0));
    }
    assert!(matches!(
        log.take(1, "doc", "one-more", Mode::Read, 0),
        Outcome::Busy { .. }
    ));
}

#[test]
fn the_table_refuses_shares_beyond_its_cap_for_all_names() {
    let mut log = Log::default();
    let names = MAX_SHARE_HOLDERS.div_ceil(MAX_PERMITS as usize);
    let full = Mode::Permit {
        permits: MAX_PERMITS,
    };
    let mut refused = 0;
    for n in 0..names + 1 {
        for p in 0..MAX_PERMITS {
            let owner = format!("o{p}");
            match log.take(0, &format!("pool-{n}"), &owner, full, 0) {
                Outcome::Granted { .. } => {}
                Outcome::Refused(Refusal::TooManyShareHolders) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(log.table.share_holders_len(), MAX_SHARE_HOLDERS);
    assert!(refused > 0);
}

#[test]
fn share_lines_survive_a_snapshot_with_their_order_and_deadlines() {
    let mut log = Log::default();
    let r1 = granted(&log.take(0, "doc", "r1", Mode::Read, 0));
    log.take(1, "doc", "w", Mode::Write, 5_000);
    log.take(2, "doc", "r2", Mode::Read, 5_000);
    granted(&log.take(3, "pool", "alice", SEM, 0));
    let installed = LeaseTable::from_snapshot(&log.table.to_snapshot()).expect("loads");
    assert_eq!(installed, log.table);
    log.table = installed;
    assert_eq!(log.table.next_deadline_us(), Some(1_000_000));
    let answers = log.release(4, "doc", "r1", r1);
    assert_eq!(answers[0].0, client("w"));
}
