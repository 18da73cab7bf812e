//! Specifications of lease sessions in the table.

use super::super::tests::{E1, Log, assert_consistent, outcome, stamp_of, token};
use super::*;
use crate::table::{Applied, Event, LeaseTable, admit};
use crate::{ClientId, Request, Stamp};

const ME: u64 = 1;
const OTHER: u64 = 2;

fn open(log: &mut Log, at_ms: u64, owner: &str, ttl_ms: u64) -> SessionId {
    let op = Op::OpenSession {
        owner: owner.into(),
        token: token(owner),
        ttl_ms,
    };
    match outcome(&log.run(E1, at_ms, ME, op)) {
        Outcome::SessionOpened { session } => *session,
        other => panic!("not opened: {other:?}"),
    }
}

fn keep(session: SessionId, owner: &str) -> Op {
    Op::KeepSession {
        session,
        owner: owner.into(),
        token: token(owner),
    }
}

fn close(session: SessionId, owner: &str) -> Op {
    Op::CloseSession {
        session,
        owner: owner.into(),
        token: token(owner),
    }
}

fn in_session(name: &str, session: SessionId, owner: &str, wait_ms: u64) -> Op {
    Op::AcquireInSession {
        name: name.into(),
        owner: owner.into(),
        token: token(owner),
        session,
        wait_ms,
    }
}

fn plain(name: &str, owner: &str, ttl_ms: u64, wait_ms: u64) -> Op {
    Op::Acquire {
        name: name.into(),
        owner: owner.into(),
        token: token(owner),
        ttl_ms,
        wait_ms,
    }
}

const NAMES: [&str; 3] = ["a", "b", "c"];

/// A session of 1 s opened at 0 holding a, b and c.
fn session_with_three(log: &mut Log) -> (SessionId, Vec<Stamp>) {
    let s = open(log, 0, "me", 1_000);
    let stamps = NAMES
        .iter()
        .map(|n| stamp_of(&log.run(E1, 10, ME, in_session(n, s, "me", 0))))
        .collect();
    (s, stamps)
}

fn held(t: &LeaseTable) -> Vec<&str> {
    NAMES
        .into_iter()
        .filter(|n| t.holder(n).is_some())
        .collect()
}

#[test]
fn one_keep_extends_every_lease_of_the_session() {
    let mut log = Log::new();
    let (s, _) = session_with_three(&mut log);
    assert_eq!(
        outcome(&log.run(E1, 900, ME, keep(s, "me"))),
        &Outcome::SessionKept
    );
    log.tick(E1, 1_800);
    assert_eq!(held(&log.table), NAMES);
    assert_eq!(log.table.holder("a").unwrap().remaining_ms, 100);
    assert_consistent(&log.table);
    log.tick(E1, 1_900);
    assert!(held(&log.table).is_empty());
    assert_consistent(&log.table);
}

#[test]
fn when_a_session_expires_all_its_leases_end_in_one_command_and_waiters_are_served() {
    let mut log = Log::new();
    let (s, stamps) = session_with_three(&mut log);
    let queued = log.run(E1, 20, OTHER, plain("b", "you", 5_000, 10_000));
    assert_eq!(outcome(&queued), &Outcome::Queued);
    // Nobody else gets a lease of the session before it ends.
    let early = log.run(E1, 999, OTHER, plain("a", "you", 5_000, 0));
    assert!(matches!(outcome(&early), Outcome::Held(h) if h.stamp == stamps[0]));
    assert_eq!(log.table.next_deadline_us(), Some(1_000_000));
    let applied = log.tick(E1, 1_000);
    assert!(held(&log.table) == ["b"], "{:?}", held(&log.table));
    assert_eq!(log.table.holder("b").unwrap().owner, "you");
    let expired = applied
        .events
        .iter()
        .filter(|e| matches!(e, Event::Expired { .. }))
        .count();
    assert_eq!(expired, 3);
    assert!(applied.events.contains(&Event::SessionEnded {
        session: s,
        expired: true
    }));
    assert!(
        applied
            .responses
            .iter()
            .any(|r| r.client == ClientId(OTHER) && matches!(r.outcome, Outcome::Granted { .. }))
    );
    assert_eq!(log.table.lease_sessions_len(), 0);
    assert_consistent(&log.table);
}

#[test]
fn closing_a_session_releases_its_leases_and_serves_waiters() {
    let mut log = Log::new();
    let (s, _) = session_with_three(&mut log);
    log.run(E1, 20, OTHER, plain("c", "you", 5_000, 10_000));
    let closed = log.run(E1, 30, ME, close(s, "me"));
    assert_eq!(outcome(&closed), &Outcome::SessionClosed);
    assert_eq!(held(&log.table), ["c"]);
    assert!(closed.events.contains(&Event::SessionEnded {
        session: s,
        expired: false
    }));
    // It is over: keeping or acquiring in it is answered so.
    assert_eq!(
        outcome(&log.run(E1, 40, ME, keep(s, "me"))),
        &Outcome::NoSession
    );
    let late = log.run(E1, 50, ME, in_session("a", s, "me", 0));
    assert_eq!(outcome(&late), &Outcome::NoSession);
    assert_consistent(&log.table);
}

#[test]
fn only_the_sessions_owner_with_its_token_may_keep_close_or_acquire_in_it() {
    let mut log = Log::new();
    let (s, _) = session_with_three(&mut log);
    let forged = Op::KeepSession {
        session: s,
        owner: "me".into(),
        token: token("you"),
    };
    for op in [
        forged,
        keep(s, "you"),
        close(s, "you"),
        in_session("d", s, "you", 0),
        keep(SessionId(99), "me"),
    ] {
        assert_eq!(outcome(&log.run(E1, 100, OTHER, op)), &Outcome::NoSession);
    }
    assert_eq!(held(&log.table), NAMES);
    assert_eq!(log.table.lease_session_expiry_us(s), Some(1_000_000));
}

#[test]
fn a_lease_in_a_session_is_kept_by_its_session_never_renewed_alone() {
    let mut log = Log::new();
    let (s, stamps) = session_with_three(&mut log);
    let renew = Op::Renew {
        name: "a".into(),
        owner: "me".into(),
        stamp: stamps[0],
        token: token("me"),
        ttl_ms: 60_000,
    };
    let answer = log.run(E1, 100, ME, renew);
    assert_eq!(outcome(&answer), &Outcome::Refused(Refusal::LeaseInSession));
    // A plain acquire by the same owner and token is not reentrant
    // either: its TTL would promise time the session does not.
    let plain_again = log.run(E1, 110, ME, plain("a", "me", 60_000, 0));
    assert!(matches!(outcome(&plain_again), Outcome::Held(_)));
    // An acquire in the same session is.
    let again = log.run(E1, 120, ME, in_session("a", s, "me", 0));
    assert_eq!(stamp_of(&again), stamps[0]);
    log.tick(E1, 1_000);
    assert!(held(&log.table).is_empty());
}

#[test]
fn a_waiter_whose_session_ended_is_answered_no_session_and_skipped() {
    let mut log = Log::new();
    let holder = stamp_of(&log.run(E1, 0, OTHER, plain("a", "you", 5_000, 0)));
    let s = open(&mut log, 0, "me", 1_000);
    let queued = log.run(E1, 10, ME, in_session("a", s, "me", 60_000));
    assert_eq!(outcome(&queued), &Outcome::Queued);
    let third = log.run(E1, 20, 3, plain("a", "third", 5_000, 60_000));
    assert_eq!(outcome(&third), &Outcome::Queued);
    log.tick(E1, 1_000);
    let release = Op::Release {
        name: "a".into(),
        owner: "you".into(),
        stamp: holder,
        token: token("you"),
    };
    let released = log.run(E1, 1_100, OTHER, release);
    assert!(
        released
            .responses
            .iter()
            .any(|r| r.client == ClientId(ME) && r.outcome == Outcome::NoSession)
    );
    assert_eq!(log.table.holder("a").unwrap().owner, "third");
    assert_consistent(&log.table);
}

#[test]
fn a_waiter_in_a_session_is_granted_a_lease_bound_to_it() {
    let mut log = Log::new();
    let holder = stamp_of(&log.run(E1, 0, OTHER, plain("a", "you", 5_000, 0)));
    let s = open(&mut log, 0, "me", 1_000);
    log.run(E1, 10, ME, in_session("a", s, "me", 60_000));
    let release = Op::Release {
        name: "a".into(),
        owner: "you".into(),
        stamp: holder,
        token: token("you"),
    };
    log.run(E1, 100, OTHER, release);
    assert_eq!(log.table.leases_bound_to(s), ["a"]);
    assert_consistent(&log.table);
    log.tick(E1, 1_000);
    assert!(log.table.holder("a").is_none());
}

#[test]
fn bound_leases_stay_out_of_the_lease_expiry_index() {
    let mut log = Log::new();
    let s = open(&mut log, 0, "me", 1_000);
    for i in 0..100 {
        log.run(E1, 1, ME, in_session(&format!("l{i}"), s, "me", 0));
    }
    assert!(log.table.expiries.is_empty());
    assert_eq!(log.table.lease_sessions.expiries.len(), 1);
    assert_eq!(log.table.held_len(), 100);
    assert_consistent(&log.table);
}

#[test]
fn leases_per_session_are_capped_with_a_typed_refusal() {
    let mut log = Log::new();
    let s = open(&mut log, 0, "me", 60_000);
    for i in 0..MAX_LEASES_PER_SESSION {
        let granted = log.run(E1, 1, ME, in_session(&format!("l{i}"), s, "me", 0));
        assert!(matches!(outcome(&granted), Outcome::Granted { .. }));
    }
    let over = log.run(E1, 2, ME, in_session("one-more", s, "me", 0));
    assert_eq!(
        outcome(&over),
        &Outcome::Refused(Refusal::TooManyLeasesInSession)
    );
    assert_consistent(&log.table);
}

#[test]
fn open_sessions_are_capped_with_a_typed_refusal() {
    let mut t = LeaseTable::new();
    for i in 0..MAX_LEASE_SESSIONS as u64 {
        t.open_session("me", token("me"), 60_000_000);
        assert_eq!(t.lease_sessions.last_id, i + 1);
    }
    assert_eq!(
        t.open_session("me", token("me"), 60_000_000),
        Outcome::Refused(Refusal::TooManyLeaseSessions)
    );
    assert_eq!(t.lease_sessions_len(), MAX_LEASE_SESSIONS);
}

#[test]
fn session_requests_out_of_bounds_are_refused_before_proposing() {
    let request = |op| Request {
        client: ClientId(1),
        request: 1,
        acked_below: 1,
        op,
    };
    let cases = [
        (
            Op::OpenSession {
                owner: "me".into(),
                token: token("me"),
                ttl_ms: 0,
            },
            Refusal::TtlOutOfRange,
        ),
        (
            Op::OpenSession {
                owner: String::new(),
                token: token("me"),
                ttl_ms: 1_000,
            },
            Refusal::EmptyOwner,
        ),
        (keep(SessionId(1), &"x".repeat(300)), Refusal::OwnerTooLong),
        (close(SessionId(1), ""), Refusal::EmptyOwner),
        (in_session("", SessionId(1), "me", 0), Refusal::EmptyName),
        (
            in_session("a", SessionId(1), "me", crate::table::MAX_WAIT_MS + 1),
            Refusal::WaitTooLong,
        ),
    ];
    for (op, refusal) in cases {
        assert_eq!(admit(&request(op.clone())), Err(refusal), "{op:?}");
    }
}

#[test]
fn a_snapshot_keeps_lease_sessions_and_their_leases() {
    let mut log = Log::new();
    let (s, stamps) = session_with_three(&mut log);
    log.run(E1, 20, OTHER, plain("b", "you", 5_000, 10_000));
    let bytes = log.table.to_snapshot();
    let mut restored = LeaseTable::from_snapshot(&bytes).unwrap();
    assert_eq!(restored, log.table);
    assert_consistent(&restored);
    assert_eq!(restored.holder("a").unwrap().stamp, stamps[0]);
    // The restored session is the same session: kept by its owner, and
    // its end ends its leases.
    let mut restored_log = Log::new();
    std::mem::swap(&mut restored_log.table, &mut restored);
    restored_log.request = 100;
    let kept = restored_log.run(E1, 900, ME, keep(s, "me"));
    assert_eq!(outcome(&kept), &Outcome::SessionKept);
    restored_log.tick(E1, 1_899);
    assert_eq!(held(&restored_log.table), NAMES);
    let ended: Applied = restored_log.tick(E1, 1_900);
    assert!(ended.events.contains(&Event::SessionEnded {
        session: s,
        expired: true
    }));
    assert_eq!(restored_log.table.holder("b").unwrap().owner, "you");
    // A session opened after the restore gets a new number.
    assert_eq!(
        open(&mut restored_log, 2_000, "me", 1_000),
        SessionId(s.0 + 1)
    );
}

#[test]
fn a_snapshot_from_before_lease_sessions_is_refused_by_its_format() {
    let mut log = Log::new();
    session_with_three(&mut log);
    let mut old = log.table.to_snapshot().to_vec();
    old[0] = 2;
    assert!(matches!(
        LeaseTable::from_snapshot(&old),
        Err(crate::table::SnapshotError::Format { found: 2 })
    ));
}
