//! Specifications of the lease table.

use super::*;
use crate::command::{LeaseToken, Op, Outcome, Refusal, Request, SessionId};
use bytes::Bytes;
use proptest::prelude::*;

pub(super) const E1: Ballot = Ballot {
    counter: 1,
    node: trexlock_paxos::NodeId(1),
};
const E2: Ballot = Ballot {
    counter: 2,
    node: trexlock_paxos::NodeId(2),
};

/// A log of requests, each acknowledging every request before it (as a
/// client with one call at a time does).
pub(super) struct Log {
    pub(super) table: LeaseTable,
    pub(super) request: u64,
}

impl Log {
    pub(super) fn new() -> Log {
        Log {
            table: LeaseTable::new(),
            request: 0,
        }
    }

    pub(super) fn run(&mut self, epoch: Ballot, at_ms: u64, client: u64, op: Op) -> Applied {
        self.request += 1;
        let request = Request {
            client: ClientId(client),
            request: self.request,
            acked_below: self.request,
            op,
        };
        self.send(epoch, at_ms, request)
    }

    fn send(&mut self, epoch: Ballot, at_ms: u64, request: Request) -> Applied {
        self.table.apply(&Command {
            epoch,
            elapsed_us: at_ms * 1000,
            body: Body::Request(request),
        })
    }

    pub(super) fn tick(&mut self, epoch: Ballot, at_ms: u64) -> Applied {
        self.table.apply(&Command {
            epoch,
            elapsed_us: at_ms * 1000,
            body: Body::Tick,
        })
    }
}

/// Each owner's secret in these tests.
pub(super) fn token(owner: &str) -> LeaseToken {
    LeaseToken(owner.bytes().fold(0x5eed, |t: u128, b| {
        t.wrapping_mul(31).wrapping_add(u128::from(b))
    }))
}

fn acquire(owner: &str, ttl_ms: u64, wait_ms: u64) -> Op {
    Op::Acquire {
        name: "l".into(),
        owner: owner.into(),
        token: token(owner),
        ttl_ms,
        wait_ms,
    }
}

fn renew(owner: &str, stamp: Stamp, ttl_ms: u64) -> Op {
    Op::Renew {
        name: "l".into(),
        owner: owner.into(),
        stamp,
        token: token(owner),
        ttl_ms,
    }
}

fn release(owner: &str, stamp: Stamp) -> Op {
    Op::Release {
        name: "l".into(),
        owner: owner.into(),
        stamp,
        token: token(owner),
    }
}

fn write(owner: &str, stamp: Stamp, value: &'static [u8]) -> Op {
    Op::Write {
        name: "l".into(),
        owner: owner.into(),
        stamp,
        token: token(owner),
        value: Bytes::from_static(value),
    }
}

fn with_token(op: Op, new: LeaseToken) -> Op {
    match op {
        Op::Acquire {
            name,
            owner,
            ttl_ms,
            wait_ms,
            ..
        } => Op::Acquire {
            name,
            owner,
            token: new,
            ttl_ms,
            wait_ms,
        },
        Op::Renew {
            name,
            owner,
            stamp,
            ttl_ms,
            ..
        } => Op::Renew {
            name,
            owner,
            stamp,
            token: new,
            ttl_ms,
        },
        Op::Release {
            name, owner, stamp, ..
        } => Op::Release {
            name,
            owner,
            stamp,
            token: new,
        },
        Op::Write {
            name,
            owner,
            stamp,
            value,
            ..
        } => Op::Write {
            name,
            owner,
            stamp,
            token: new,
            value,
        },
        Op::Cancel { name, owner, .. } => Op::Cancel {
            name,
            owner,
            token: new,
        },
        other => other,
    }
}

pub(super) fn outcome(applied: &Applied) -> &Outcome {
    &applied.responses.last().expect("a response").outcome
}

pub(super) fn stamp_of(applied: &Applied) -> Stamp {
    match outcome(applied) {
        Outcome::Granted { stamp, .. } => *stamp,
        other => panic!("not granted: {other:?}"),
    }
}

/// The table's indexes say exactly what its leases and sessions say, and
/// every bound holds.
pub(super) fn assert_consistent(t: &LeaseTable) {
    let own = |l: &Lease| l.holder.clone().filter(|h| h.session.is_none());
    let expiries: BTreeSet<_> = t
        .leases
        .iter()
        .filter_map(|(n, l)| own(l).map(|h| (h.expires_at, n.clone())))
        .collect();
    assert_eq!(t.expiries, expiries, "expiries index");
    let awaited: BTreeSet<_> = t
        .leases
        .iter()
        .filter(|(_, l)| !l.waiters.is_empty())
        .filter_map(|(n, l)| own(l).map(|h| (h.expires_at, n.clone())))
        .collect();
    assert_eq!(t.awaited, awaited, "awaited index");
    let mut bound: BTreeMap<SessionId, BTreeSet<Shared>> = BTreeMap::new();
    for (n, l) in &t.leases {
        if let Some(id) = l.holder.as_ref().and_then(|h| h.session) {
            assert!(
                t.lease_sessions.open.contains_key(&id),
                "{n} bound to a closed session"
            );
            bound.entry(id).or_default().insert(n.clone());
        }
    }
    for (id, s) in &t.lease_sessions.open {
        assert_eq!(
            s.held,
            bound.remove(id).unwrap_or_default(),
            "session {id} index"
        );
        assert!(s.held.len() <= MAX_LEASES_PER_SESSION);
        assert!(t.lease_sessions.expiries.contains(&(s.expires_at, *id)));
    }
    assert_eq!(t.lease_sessions.expiries.len(), t.lease_sessions.open.len());
    assert!(t.lease_sessions.open.len() <= MAX_LEASE_SESSIONS);
    let values: u64 = t
        .leases
        .values()
        .map(|l| l.value.as_ref().map_or(0, |v| v.len() as u64))
        .sum();
    assert_eq!(t.value_bytes, values, "value bytes");
    let waiters: usize = t.leases.values().map(|l| l.waiters.len()).sum();
    assert_eq!(t.waiters, waiters, "waiter count");
    assert!(t.waiters <= MAX_WAITERS);
    let outcomes: usize = t.sessions.values().map(|s| s.outcomes.len()).sum();
    assert_eq!(t.outcomes, outcomes, "outcome count");
    assert!(t.outcomes <= MAX_REMEMBERED_OUTCOMES);
    let sessions: BTreeSet<_> = t.sessions.iter().map(|(c, s)| (s.expires_at, *c)).collect();
    assert_eq!(t.session_expiries, sessions, "session expiries index");
    assert!(
        t.leases.values().all(|l| !l.is_idle()),
        "no idle lease kept"
    );
    assert!(t.leases.len() <= MAX_LEASES);
    assert!(t.sessions.len() <= MAX_SESSIONS);
    for s in t.sessions.values() {
        assert!(s.outcomes.len() <= MAX_OUTCOMES_PER_SESSION);
        assert!(s.outcomes.keys().all(|r| *r >= s.acked_below));
        assert!(s.outcomes.values().all(|o| !matches!(
            o,
            Outcome::Granted { value: Some(_), .. } | Outcome::Holder { .. }
        )));
    }
    for l in t.leases.values() {
        assert!(l.waiters.len() <= MAX_WAITERS_PER_LEASE);
    }
}

#[test]
fn a_lease_expires_only_when_a_command_stamped_after_its_end_is_applied() {
    let mut log = Log::new();
    let first = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    assert!(matches!(
        outcome(&log.run(E1, 99, 2, acquire("b", 100, 0))),
        Outcome::Held(_)
    ));
    let second = stamp_of(&log.run(E1, 100, 2, acquire("b", 100, 0)));
    assert!(second > first);
}

#[test]
fn no_time_passes_across_a_change_of_leader() {
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 100, 0));
    log.tick(E1, 90);
    // The lease had 10 ms left when the new leader took over; 5 ms into
    // the new epoch it still has 5, whatever happened in between.
    let applied = log.run(E2, 5, 2, acquire("b", 100, 0));
    assert!(matches!(outcome(&applied), Outcome::Held(h) if h.remaining_ms == 5));
    let applied = log.run(E2, 10, 2, acquire("b", 100, 0));
    assert!(matches!(outcome(&applied), Outcome::Granted { .. }));
}

#[test]
fn a_stale_epoch_cannot_move_time() {
    let mut log = Log::new();
    log.run(E2, 0, 1, acquire("a", 100, 0));
    log.tick(E1, 10_000);
    assert_eq!(log.table.now_us(), 0);
}

#[test]
fn waiters_are_granted_in_arrival_order_with_growing_stamps() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    assert_eq!(
        outcome(&log.run(E1, 1, 2, acquire("b", 100, 1000))),
        &Outcome::Queued
    );
    assert_eq!(
        outcome(&log.run(E1, 2, 3, acquire("c", 100, 1000))),
        &Outcome::Queued
    );
    let released = log.run(E1, 3, 1, release("a", a));
    let granted_b = &released.responses[0];
    assert_eq!(granted_b.client, ClientId(2));
    let Outcome::Granted { stamp: b, .. } = granted_b.outcome else {
        panic!()
    };
    assert!(b > a);
    // b never releases: at its expiry the next command hands c the lease.
    let ticked = log.tick(E1, 103);
    assert_eq!(ticked.responses[0].client, ClientId(3));
    assert!(matches!(ticked.events[0], Event::Expired { .. }));
}

#[test]
fn a_waiter_whose_wait_ran_out_is_skipped_at_grant_time() {
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 100, 0));
    log.run(E1, 1, 2, acquire("b", 100, 10));
    log.run(E1, 2, 3, acquire("c", 100, 1000));
    let ticked = log.tick(E1, 100);
    let outcomes: Vec<_> = ticked
        .responses
        .iter()
        .map(|r| (r.client, r.outcome.clone()))
        .collect();
    assert_eq!(outcomes[0], (ClientId(2), Outcome::TimedOut));
    assert_eq!(outcomes[1].0, ClientId(3));
    assert!(matches!(outcomes[1].1, Outcome::Granted { .. }));
    assert_eq!(log.table.next_deadline_us(), None, "nobody waits any more");
}

#[test]
fn next_deadline_is_the_expiry_of_a_lease_someone_waits_for() {
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 100, 0));
    assert_eq!(log.table.next_deadline_us(), None);
    log.run(E1, 1, 2, acquire("b", 100, 1000));
    assert_eq!(log.table.next_deadline_us(), Some(100_000));
    log.run(E1, 2, 1, renew("a", Stamp(1), 200));
    assert_eq!(
        log.table.next_deadline_us(),
        Some(202_000),
        "follows renewals"
    );
    log.run(
        E1,
        3,
        2,
        Op::Cancel {
            name: "l".into(),
            owner: "b".into(),
            token: token("b"),
        },
    );
    assert_eq!(log.table.next_deadline_us(), None, "nobody waits any more");
    assert_consistent(&log.table);
}

#[test]
fn finding_the_next_deadline_does_not_scan_leases_nobody_waits_for() {
    let mut log = Log::new();
    for i in 0..MAX_LEASES - 1 {
        let op = Op::Acquire {
            name: format!("free-{i:05}"),
            owner: "a".into(),
            token: token("a"),
            ttl_ms: 1_000,
            wait_ms: 0,
        };
        log.run(E1, 0, 1, op);
    }
    log.run(E1, 1, 1, acquire("a", 2_000, 0));
    log.run(E1, 2, 2, acquire("b", 100, 5_000));
    // A scan of the 9 999 leases nobody waits for, per call, takes
    // seconds here; an index lookup takes microseconds.
    let started = std::time::Instant::now();
    for _ in 0..10_000 {
        assert_eq!(log.table.next_deadline_us(), Some(2_001_000));
    }
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn a_retried_request_gets_the_first_answer_without_running_again() {
    let mut table = LeaseTable::new();
    let command = Command {
        epoch: E1,
        elapsed_us: 0,
        body: Body::Request(Request {
            client: ClientId(7),
            request: 1,
            acked_below: 1,
            op: acquire("a", 100, 0),
        }),
    };
    let first = table.apply(&command);
    let again = table.apply(&command);
    assert_eq!(first.responses, again.responses);
    assert!(again.events.is_empty(), "nothing executed twice");
}

#[test]
fn a_late_copy_of_an_acknowledged_request_is_never_executed_again() {
    let mut log = Log::new();
    let first = Request {
        client: ClientId(7),
        request: 1,
        acked_below: 1,
        op: acquire("a", 100, 0),
    };
    let stamp = stamp_of(&log.send(E1, 0, first.clone()));
    let released = Request {
        client: ClientId(7),
        request: 2,
        acked_below: 2,
        op: release("a", stamp),
    };
    assert_eq!(outcome(&log.send(E1, 1, released)), &Outcome::Released);
    // Request 1 again (a retry held up by a partition): answered, not run.
    let late = log.send(E1, 2, first.clone());
    assert_eq!(outcome(&late), &Outcome::AlreadyAnswered);
    assert!(late.events.is_empty(), "not executed again");
    assert_eq!(log.table.holder("l"), None);
    // A copy that claims a lower mark does not lower it.
    let lower = Request {
        acked_below: 0,
        ..first
    };
    assert_eq!(outcome(&log.send(E1, 3, lower)), &Outcome::AlreadyAnswered);
    assert_eq!(log.table.holder("l"), None);
}

#[test]
fn a_reentrant_acquire_never_shortens_the_lease() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 1_000, 0)));
    let again = log.run(E1, 10, 1, acquire("a", 100, 0));
    assert_eq!(stamp_of(&again), a, "reentrant: same stamp");
    // The first grant promised until 1000 ms; the second call's shorter
    // TTL (until 110 ms) must not take that back.
    let b = log.run(E1, 200, 2, acquire("b", 100, 0));
    assert!(matches!(outcome(&b), Outcome::Held(h) if h.stamp == a && h.remaining_ms == 800));
}

#[test]
fn a_renewal_never_shortens_the_lease() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 1_000, 0)));
    assert_eq!(
        outcome(&log.run(E1, 10, 1, renew("a", a, 100))),
        &Outcome::Renewed
    );
    let b = log.run(E1, 200, 2, acquire("b", 100, 0));
    assert!(matches!(outcome(&b), Outcome::Held(h) if h.remaining_ms == 800));
    // A longer renewal does extend it.
    log.run(E1, 300, 1, renew("a", a, 2_000));
    assert_eq!(log.table.holder("l").map(|h| h.remaining_ms), Some(2_000));
}

#[test]
fn renew_release_and_write_need_the_current_stamp() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    let stale = Stamp(a.0 + 100);
    for op in [
        renew("a", stale, 100),
        release("a", stale),
        write("a", stale, b""),
        renew("b", a, 100),
    ] {
        assert!(matches!(
            outcome(&log.run(E1, 1, 1, op)),
            Outcome::NotHolder { current: Some(_) }
        ));
    }
    assert_eq!(
        outcome(&log.run(E1, 2, 1, write("a", a, b"v"))),
        &Outcome::Written
    );
}

#[test]
fn renew_release_write_and_cancel_need_the_holders_token() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    // Owner and stamp are public (any read shows them); the token is not.
    let guess = LeaseToken(!token("a").0);
    for op in [renew("a", a, 1_000), release("a", a), write("a", a, b"x")] {
        let applied = log.run(E1, 1, 9, with_token(op, guess));
        assert!(matches!(
            outcome(&applied),
            Outcome::NotHolder { current: Some(h) } if h.stamp == a
        ));
    }
    assert_eq!(log.table.holder("l").map(|h| h.remaining_ms), Some(99));
    let stolen = log.run(E1, 2, 9, with_token(acquire("a", 100, 0), guess));
    assert!(
        matches!(outcome(&stolen), Outcome::Held(_)),
        "the same owner name with another token is another claimant"
    );
    log.run(E1, 3, 2, acquire("b", 100, 1_000));
    let cancel = Op::Cancel {
        name: "l".into(),
        owner: "b".into(),
        token: guess,
    };
    log.run(E1, 4, 9, cancel);
    assert_eq!(log.table.next_deadline_us(), Some(100_000), "b still waits");
    assert_eq!(
        outcome(&log.run(E1, 5, 1, release("a", a))),
        &Outcome::Released
    );
}

#[test]
fn an_operator_can_force_release_any_lease() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    log.run(E1, 1, 2, acquire("b", 100, 1_000));
    let forced = log.run(E1, 2, 9, Op::ForceRelease { name: "l".into() });
    assert_eq!(outcome(&forced), &Outcome::Released);
    assert!(matches!(
        forced.responses[0].outcome,
        Outcome::Granted { stamp, .. } if stamp > a
    ));
    assert!(matches!(
        outcome(&log.run(E1, 3, 1, renew("a", a, 100))),
        Outcome::NotHolder { .. }
    ));
    let nobody = log.run(E1, 4, 9, Op::ForceRelease { name: "m".into() });
    assert_eq!(outcome(&nobody), &Outcome::NotHolder { current: None });
    assert_consistent(&log.table);
}

#[test]
fn a_value_goes_to_the_next_holder_in_line_and_dies_with_the_lease() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    log.run(E1, 1, 1, write("a", a, b"v"));
    log.run(E1, 2, 2, acquire("b", 100, 1_000));
    let handed = log.run(E1, 3, 1, release("a", a));
    let Outcome::Granted {
        stamp: b,
        value: Some(v),
    } = &handed.responses[0].outcome
    else {
        panic!("b is granted with the value: {handed:?}")
    };
    assert_eq!(v, "v");
    let b = *b;
    // Nobody waits behind b: releasing drops the lease and its value.
    log.run(E1, 4, 2, release("b", b));
    assert!(log.table.is_empty());
    assert_eq!(log.table.value_bytes, 0);
    let c = log.run(E1, 5, 3, acquire("c", 100, 0));
    assert!(matches!(outcome(&c), Outcome::Granted { value: None, .. }));
    assert_consistent(&log.table);
}

#[test]
fn remembered_grants_keep_no_copy_of_the_value() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    log.run(E1, 1, 1, write("a", a, b"v"));
    let waiting = Request {
        client: ClientId(2),
        request: 1,
        acked_below: 1,
        op: acquire("b", 100, 1_000),
    };
    log.send(E1, 2, waiting.clone());
    log.run(E1, 3, 1, release("a", a));
    assert_eq!(
        log.table.sessions[&ClientId(2)].outcomes[&1],
        Outcome::Granted {
            stamp: Stamp(a.0 + 1),
            value: None
        }
    );
    // A retry is answered with the value the lease holds now.
    let retry = log.send(E1, 4, waiting);
    assert!(matches!(outcome(&retry), Outcome::Granted { value: Some(v), .. } if v == "v"));
    assert!(retry.events.is_empty());
}

#[test]
fn reads_leave_no_session_behind() {
    let mut log = Log::new();
    for client in 0..100 {
        log.run(E1, 0, client, Op::Read { name: "l".into() });
    }
    assert_eq!(log.table.sessions_len(), 0);
}

#[test]
fn sessions_are_forgotten_by_table_time_on_any_command() {
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 100, 0));
    assert_eq!(log.table.sessions_len(), 1);
    assert_eq!(log.table.next_session_expiry_us(), Some(SESSION_IDLE_US));
    log.run(E1, SESSION_IDLE_US / 1000, 2, Op::Read { name: "l".into() });
    assert_eq!(log.table.sessions_len(), 0);
    assert_eq!(log.table.next_session_expiry_us(), None);
}

#[test]
fn a_session_that_waits_in_line_outlives_the_idle_time() {
    let idle_ms = SESSION_IDLE_US / 1000;
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 2 * idle_ms, 0));
    let waiting = Request {
        client: ClientId(2),
        request: 1,
        acked_below: 1,
        op: acquire("b", 100, 3 * idle_ms),
    };
    log.send(E1, 1, waiting.clone());
    log.tick(E1, idle_ms + 10);
    assert!(log.table.sessions.contains_key(&ClientId(2)));
    let granted = log.tick(E1, 2 * idle_ms);
    let stamp = stamp_of(&granted);
    // Its retry is answered from the table, not queued again.
    assert!(matches!(
        outcome(&log.send(E1, 2 * idle_ms + 1, waiting)),
        Outcome::Granted { stamp: s, .. } if *s == stamp
    ));
}

#[test]
fn the_table_refuses_leases_beyond_its_cap() {
    let mut log = Log::new();
    let take = |i: usize| Op::Acquire {
        name: format!("n{i}"),
        owner: "a".into(),
        token: token("a"),
        ttl_ms: 100,
        wait_ms: 0,
    };
    for i in 0..MAX_LEASES {
        assert!(matches!(
            outcome(&log.run(E1, 0, 1, take(i))),
            Outcome::Granted { .. }
        ));
    }
    assert_eq!(
        outcome(&log.run(E1, 0, 1, take(MAX_LEASES))),
        &Outcome::Refused(Refusal::TooManyLeases)
    );
    log.tick(E1, 100);
    assert!(log.table.is_empty(), "expired leases make room");
    assert!(matches!(
        outcome(&log.run(E1, 100, 1, take(0))),
        Outcome::Granted { .. }
    ));
}

#[test]
fn the_table_refuses_sessions_beyond_its_cap() {
    let mut log = Log::new();
    let cancel = || Op::Cancel {
        name: "l".into(),
        owner: "a".into(),
        token: token("a"),
    };
    for client in 0..MAX_SESSIONS as u64 {
        log.run(E1, 0, client, cancel());
    }
    assert_eq!(
        outcome(&log.run(E1, 1, u64::MAX, cancel())),
        &Outcome::Refused(Refusal::TooManySessions)
    );
    assert_eq!(log.table.sessions_len(), MAX_SESSIONS);
    let later = log.run(E1, SESSION_IDLE_US / 1000, u64::MAX, cancel());
    assert_eq!(
        outcome(&later),
        &Outcome::Cancelled,
        "idle sessions make room"
    );
    assert_eq!(log.table.sessions_len(), 1);
}

#[test]
fn a_session_may_leave_at_most_its_cap_of_requests_unacknowledged() {
    let mut log = Log::new();
    let cancel = |request: u64, acked_below: u64| Request {
        client: ClientId(1),
        request,
        acked_below,
        op: Op::Cancel {
            name: "l".into(),
            owner: "a".into(),
            token: token("a"),
        },
    };
    let cap = MAX_OUTCOMES_PER_SESSION as u64;
    for request in 1..=cap {
        assert_eq!(
            outcome(&log.send(E1, 0, cancel(request, 1))),
            &Outcome::Cancelled
        );
    }
    assert_eq!(
        outcome(&log.send(E1, 0, cancel(cap + 1, 1))),
        &Outcome::Refused(Refusal::TooManyPendingRequests)
    );
    // Acknowledging frees the room.
    let acked = log.send(E1, 0, cancel(cap + 1, cap + 1));
    assert_eq!(outcome(&acked), &Outcome::Cancelled);
    assert_consistent(&log.table);
}

#[test]
fn a_lease_refuses_waiters_beyond_its_cap_until_their_waits_run_out() {
    let mut log = Log::new();
    log.run(E1, 0, 1, acquire("a", 10_000, 0));
    let wait = |owner: String, wait_ms| Op::Acquire {
        name: "l".into(),
        token: token(&owner),
        owner,
        ttl_ms: 100,
        wait_ms,
    };
    for i in 0..MAX_WAITERS_PER_LEASE as u64 {
        let queued = log.run(E1, 1, 10 + i, wait(format!("w{i}"), 10));
        assert_eq!(outcome(&queued), &Outcome::Queued);
    }
    assert_eq!(
        outcome(&log.run(E1, 2, 1_000, wait("late".into(), 10))),
        &Outcome::Refused(Refusal::TooManyWaiters)
    );
    // Their waits ran out (the lease is still held): they leave the line,
    // answered, and make room.
    let joined = log.run(E1, 20, 1_001, wait("later".into(), 10));
    assert_eq!(outcome(&joined), &Outcome::Queued);
    assert_eq!(joined.responses.len(), MAX_WAITERS_PER_LEASE + 1);
    assert!(
        joined.responses[..MAX_WAITERS_PER_LEASE]
            .iter()
            .all(|r| r.outcome == Outcome::TimedOut)
    );
    assert_consistent(&log.table);
}

#[test]
fn the_table_refuses_waiters_beyond_its_cap_for_all_lines() {
    let mut log = Log::new();
    let op = |name: usize, owner: usize, wait_ms| Op::Acquire {
        name: format!("n{name}"),
        owner: format!("w{owner}"),
        token: token(&format!("w{owner}")),
        ttl_ms: 10_000,
        wait_ms,
    };
    let lines = MAX_WAITERS.div_ceil(MAX_WAITERS_PER_LEASE);
    for name in 0..lines {
        stamp_of(&log.run(E1, 0, 1, op(name, 999, 0)));
    }
    // One session queues everywhere, acknowledging as it goes, so only
    // the cap on all lines can stop it.
    let mut queued = 0;
    'fill: for name in 0..lines {
        for owner in 0..MAX_WAITERS_PER_LEASE {
            match outcome(&log.run(E1, 1, 2, op(name, owner, 5_000))) {
                Outcome::Queued => queued += 1,
                Outcome::Refused(Refusal::TooManyWaitersInAll) => break 'fill,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(queued, MAX_WAITERS);
    assert_consistent(&log.table);
}

#[test]
fn the_table_refuses_unacknowledged_requests_beyond_its_cap_for_all_sessions() {
    let mut log = Log::new();
    let cancel = |client: u64, request: u64| Request {
        client: ClientId(client),
        request,
        acked_below: 1,
        op: Op::Cancel {
            name: "l".into(),
            owner: "a".into(),
            token: token("a"),
        },
    };
    let per_session = MAX_OUTCOMES_PER_SESSION as u64;
    let sessions = (MAX_REMEMBERED_OUTCOMES as u64).div_ceil(per_session);
    let mut remembered = 0;
    'fill: for client in 0..sessions {
        for request in 1..=per_session {
            match outcome(&log.send(E1, 0, cancel(client, request))) {
                Outcome::Cancelled => remembered += 1,
                Outcome::Refused(Refusal::TooManyPendingRequestsInAll) => break 'fill,
                other => panic!("{other:?}"),
            }
        }
    }
    assert_eq!(remembered, MAX_REMEMBERED_OUTCOMES);
    assert_consistent(&log.table);
    // Forgotten sessions give their room back.
    log.tick(E1, SESSION_IDLE_US / 1000);
    assert_eq!(log.table.outcomes, 0);
}

#[test]
fn the_table_refuses_values_beyond_its_total_cap() {
    let mut log = Log::new();
    let value = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    let fits = MAX_TOTAL_VALUE_BYTES / MAX_VALUE_BYTES;
    let write_to = |log: &mut Log, i: usize| {
        let name = format!("n{i}");
        let op = Op::Acquire {
            name: name.clone(),
            owner: "a".into(),
            token: token("a"),
            ttl_ms: 100,
            wait_ms: 0,
        };
        let stamp = stamp_of(&log.run(E1, 0, 1, op));
        let op = Op::Write {
            name,
            owner: "a".into(),
            stamp,
            token: token("a"),
            value: value.clone(),
        };
        outcome(&log.run(E1, 0, 1, op)).clone()
    };
    for i in 0..fits {
        assert_eq!(write_to(&mut log, i), Outcome::Written);
    }
    assert_eq!(
        write_to(&mut log, fits),
        Outcome::Refused(Refusal::ValueSpaceFull)
    );
    log.tick(E1, 100);
    assert_eq!(log.table.value_bytes, 0, "expired leases take their values");
}

#[test]
fn released_values_and_one_off_readers_leave_nothing_in_the_snapshot() {
    // The reviewer's case: 300 names written with the largest values, then
    // released, and 10 000 sessions that read once (675 MB before).
    let mut log = Log::new();
    let value = Bytes::from(vec![7u8; MAX_VALUE_BYTES]);
    for i in 0..300 {
        let name = format!("n{i}");
        let op = Op::Acquire {
            name: name.clone(),
            owner: "a".into(),
            token: token("a"),
            ttl_ms: 100,
            wait_ms: 0,
        };
        let stamp = stamp_of(&log.run(E1, 0, 1, op));
        let op = Op::Write {
            name: name.clone(),
            owner: "a".into(),
            stamp,
            token: token("a"),
            value: value.clone(),
        };
        log.run(E1, 0, 1, op);
        let op = Op::Release {
            name,
            owner: "a".into(),
            stamp,
            token: token("a"),
        };
        log.run(E1, 0, 1, op);
    }
    for client in 2..10_002 {
        log.run(E1, 0, client, Op::Read { name: "n0".into() });
    }
    assert!(log.table.to_snapshot().len() < 1024);
}

#[test]
fn invalid_requests_are_answered_not_executed() {
    let mut log = Log::new();
    for (op, why) in [
        (acquire("a", 0, 0), Refusal::TtlOutOfRange),
        (acquire("", 10, 0), Refusal::EmptyOwner),
        (acquire("a", MAX_TTL_MS + 1, 0), Refusal::TtlOutOfRange),
        (acquire("a", 10, MAX_WAIT_MS + 1), Refusal::WaitTooLong),
    ] {
        assert_eq!(outcome(&log.run(E1, 0, 1, op)), &Outcome::Refused(why));
    }
    assert!(log.table.is_empty());
    assert_eq!(log.table.sessions_len(), 0);
}

#[test]
fn admission_refuses_what_the_table_would_refuse_and_bounds_the_request_size() {
    let request = |op| Request {
        client: ClientId(u64::MAX),
        request: u64::MAX,
        acked_below: u64::MAX,
        op,
    };
    let long = "n".repeat(MAX_NAME_BYTES + 1);
    let cases = [
        (
            Op::Read {
                name: String::new(),
            },
            Refusal::EmptyName,
        ),
        (Op::Read { name: long.clone() }, Refusal::NameTooLong),
        (Op::ForceRelease { name: long }, Refusal::NameTooLong),
        (
            with_token(acquire(&"o".repeat(MAX_OWNER_BYTES + 1), 1, 0), token("o")),
            Refusal::OwnerTooLong,
        ),
        (
            Op::Write {
                name: "l".into(),
                owner: "a".into(),
                stamp: Stamp(1),
                token: token("a"),
                value: Bytes::from(vec![0; MAX_VALUE_BYTES + 1]),
            },
            Refusal::ValueTooLarge,
        ),
    ];
    for (op, why) in cases {
        assert_eq!(admit(&request(op)), Err(why));
    }
    let largest = request(Op::Write {
        name: "n".repeat(MAX_NAME_BYTES),
        owner: "o".repeat(MAX_OWNER_BYTES),
        stamp: Stamp(u64::MAX),
        token: LeaseToken(u128::MAX),
        value: Bytes::from(vec![0xff; MAX_VALUE_BYTES]),
    });
    assert_eq!(admit(&largest), Ok(()));
    assert!(postcard::to_stdvec(&largest).unwrap().len() <= MAX_REQUEST_BYTES);
}

/// One step of a random log: a new request, or a copy of an earlier one
/// (a retry, possibly late).
#[derive(Clone, Debug)]
enum Step {
    New {
        client: u64,
        dt_ms: u64,
        op: Op,
        ack_all: bool,
    },
    Again(usize),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let owner = prop::sample::select(vec!["a", "b", "c"]);
    let name = prop::sample::select(vec!["x", "y"]);
    let honest = any::<bool>();
    (owner, name, 0u8..7, 1u64..50, 0u64..50, honest).prop_map(
        |(owner, name, kind, ttl, wait, honest)| {
            let token = if honest { token(owner) } else { LeaseToken(0) };
            let (name, owner) = (name.to_owned(), owner.to_owned());
            match kind {
                0 => Op::Acquire {
                    name,
                    owner,
                    token,
                    ttl_ms: ttl,
                    wait_ms: wait,
                },
                1 => Op::Renew {
                    name,
                    owner,
                    stamp: Stamp(wait),
                    token,
                    ttl_ms: ttl,
                },
                2 => Op::Release {
                    name,
                    owner,
                    stamp: Stamp(wait),
                    token,
                },
                3 => Op::Cancel { name, owner, token },
                4 => Op::Write {
                    name,
                    owner,
                    stamp: Stamp(wait),
                    token,
                    value: Bytes::from(vec![1; ttl as usize]),
                },
                5 => Op::ForceRelease { name },
                _ => Op::Read { name },
            }
        },
    )
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let dt = prop_oneof![9 => 1u64..20, 1 => Just(SESSION_IDLE_US / 1000)];
    prop_oneof![
        4 => (0u64..4, dt, op_strategy(), any::<bool>()).prop_map(|(client, dt_ms, op, ack_all)| {
            Step::New { client, dt_ms, op, ack_all }
        }),
        1 => (0usize..80).prop_map(Step::Again),
    ]
}

proptest! {
    #[test]
    fn replaying_a_log_rebuilds_the_same_table_and_snapshots_round_trip(
        steps in proptest::collection::vec(step_strategy(), 1..80)
    ) {
        let mut a = Log::new();
        let mut b = Log::new();
        let mut at = 0;
        let mut sent: Vec<Request> = Vec::new();
        let mut stamps: BTreeMap<String, Stamp> = BTreeMap::new();
        for step in steps {
            let request = match step {
                Step::New { client, dt_ms, op, ack_all } => {
                    at += dt_ms;
                    a.request += 1;
                    Request {
                        client: ClientId(client),
                        request: a.request,
                        acked_below: if ack_all { a.request } else { 0 },
                        op,
                    }
                }
                Step::Again(i) if !sent.is_empty() => sent[i % sent.len()].clone(),
                Step::Again(_) => continue,
            };
            sent.push(request.clone());
            let ra = a.send(E1, at, request.clone());
            let rb = b.send(E1, at, request);
            prop_assert_eq!(&ra, &rb);
            assert_consistent(&a.table);
            for e in &ra.events {
                if let Event::Granted { name, stamp, .. } = e {
                    let last = stamps.insert(name.clone(), *stamp);
                    prop_assert!(last.is_none_or(|l| l < *stamp), "stamps only grow");
                }
            }
        }
        prop_assert_eq!(&a.table, &b.table);
        let restored = LeaseTable::from_snapshot(&a.table.to_snapshot()).unwrap();
        prop_assert_eq!(restored, a.table);
    }
}
