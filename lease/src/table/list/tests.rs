//! Specifications of listing leases.

use super::*;
use crate::command::{ClientId, Mode, Request, SessionId, Stamp};
use crate::table::test_log::{Log, token};
use crate::table::{MAX_VALUE_BYTES, admit};

impl Log {
    /// Applies `op` from `owner`'s session at `at_ms`: the last answer.
    fn answer(&mut self, at_ms: u64, owner: &str, op: Op) -> Outcome {
        self.run(at_ms, owner, op).pop().expect("an answer").1
    }

    fn hold(&mut self, at_ms: u64, name: &str, owner: &str, ttl_ms: u64, wait_ms: u64) -> Outcome {
        let op = Op::Acquire {
            name: name.into(),
            owner: owner.into(),
            token: token(owner),
            ttl_ms,
            wait_ms,
        };
        self.answer(at_ms, owner, op)
    }

    fn list(
        &mut self,
        at_ms: u64,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> (Vec<ListedLease>, Option<String>) {
        let op = Op::List {
            prefix: prefix.into(),
            after: after.map(str::to_owned),
            limit,
        };
        match self.answer(at_ms, "lister", op) {
            Outcome::Listed { leases, next } => (leases, next),
            other => panic!("not a list: {other:?}"),
        }
    }
}

fn names(leases: &[ListedLease]) -> Vec<&str> {
    leases.iter().map(|l| l.name.as_str()).collect()
}

#[test]
fn a_list_reports_the_held_leases_under_a_prefix_in_name_order_with_holder_stamp_time_left_and_waiters()
 {
    let mut log = Log::default();
    log.hold(0, "jobs/b", "alice", 10_000, 0);
    log.hold(1, "jobs/a", "bob", 5_000, 0);
    log.hold(2, "other", "carol", 10_000, 0);
    log.hold(3, "jobs/a", "dave", 10_000, 60_000);
    log.hold(4, "jobs", "erin", 10_000, 0);
    let (leases, next) = log.list(1_001, "jobs/", None, 100);
    assert_eq!(names(&leases), ["jobs/a", "jobs/b"]);
    assert_eq!(next, None);
    let a = &leases[0];
    assert_eq!(a.holders.len(), 1);
    assert_eq!(
        (a.holders[0].owner.as_str(), a.holders[0].stamp),
        ("bob", Stamp(2))
    );
    assert_eq!(a.holders[0].remaining_ms, 4_000);
    assert_eq!(a.waiters, 1);
    assert_eq!(
        (leases[1].holders[0].stamp, leases[1].waiters),
        (Stamp(1), 0)
    );
    let (all, _) = log.list(1_001, "", None, 100);
    assert_eq!(names(&all), ["jobs", "jobs/a", "jobs/b", "other"]);
}

#[test]
fn an_expired_lease_is_not_listed_and_a_waiter_that_took_over_is() {
    let mut log = Log::default();
    log.hold(0, "a", "alice", 1_000, 0);
    log.hold(0, "b", "bob", 1_000, 0);
    log.hold(1, "b", "carol", 1_000, 60_000);
    let (leases, _) = log.list(1_500, "", None, 10);
    assert_eq!(names(&leases), ["b"]);
    assert_eq!(leases[0].holders[0].owner, "carol");
}

#[test]
fn pages_follow_the_limit_and_the_continuation_resumes_without_gaps_or_repeats() {
    let mut log = Log::default();
    let mut expected: Vec<String> = (0..25).map(|i| format!("n{i:02}")).collect();
    for name in &expected {
        log.hold(0, name, "alice", 60_000, 0);
    }
    log.hold(0, "z", "alice", 60_000, 0);
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let (leases, next) = log.list(1, "n", after.as_deref(), 10);
        assert!(leases.len() <= 10);
        seen.extend(leases.into_iter().map(|l| l.name));
        pages += 1;
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(pages, 3);
}

#[test]
fn a_page_of_the_longest_names_and_owners_stays_within_its_byte_bound() {
    let mut log = Log::default();
    let owner = "o".repeat(crate::table::MAX_OWNER_BYTES);
    for i in 0..300 {
        let name = format!("{i:03}{}", "n".repeat(MAX_NAME_BYTES - 3));
        log.hold(0, &name, &owner, 60_000, 0);
    }
    let (leases, next) = log.list(1, "", None, MAX_LIST_ENTRIES);
    assert!(next.is_some(), "the rest is on later pages");
    assert!(!leases.is_empty());
    let answer = Outcome::Listed { leases, next };
    let size = postcard::to_stdvec(&answer).unwrap().len();
    assert!(size <= MAX_LIST_PAGE_BYTES, "{size} bytes");
    assert!(size <= MAX_VALUE_BYTES, "no larger than a read's value");
}

#[test]
fn a_list_with_a_limit_out_of_range_or_an_overlong_prefix_is_refused_before_it_is_proposed() {
    let long = "x".repeat(MAX_NAME_BYTES + 1);
    let cases = [
        (String::new(), None, 0, Refusal::ListLimitOutOfRange),
        (
            String::new(),
            None,
            MAX_LIST_ENTRIES + 1,
            Refusal::ListLimitOutOfRange,
        ),
        (long.clone(), None, 1, Refusal::NameTooLong),
        ("a".into(), Some(long), 1, Refusal::NameTooLong),
    ];
    for (prefix, after, limit, refusal) in cases {
        let request = Request {
            client: ClientId(1),
            request: 1,
            acked_below: 0,
            op: Op::List {
                prefix,
                after,
                limit,
            },
        };
        assert_eq!(admit(&request), Err(refusal));
        assert!(refusal.is_invalid());
    }
}

#[test]
fn a_list_needs_no_session_and_leaves_the_table_unchanged() {
    let mut log = Log::default();
    log.hold(0, "a", "alice", 60_000, 0);
    let before = log.table.sessions_len();
    let snapshot = log.table.clone();
    log.list(0, "", None, 10);
    assert_eq!(log.table.sessions_len(), before);
    assert_eq!(log.table, snapshot);
}

impl Log {
    fn release_share(&mut self, at_ms: u64, name: &str, owner: &str, stamp: Stamp) {
        let op = Op::Release {
            name: name.into(),
            owner: owner.into(),
            stamp,
            token: token(owner),
        };
        assert_eq!(self.answer(at_ms, owner, op), Outcome::Released);
    }

    fn share(&mut self, at_ms: u64, name: &str, owner: &str, mode: Mode) -> Stamp {
        let op = Op::AcquireShare {
            name: name.into(),
            owner: owner.into(),
            token: token(owner),
            ttl_ms: 10_000,
            wait_ms: 60_000,
            mode,
        };
        match self.answer(at_ms, owner, op) {
            Outcome::Granted { stamp, .. } => stamp,
            Outcome::Queued => Stamp(0),
            other => panic!("not granted: {other:?}"),
        }
    }

    fn in_session(&mut self, at_ms: u64, names: &[&str], owner: &str, ttl_ms: u64) -> SessionId {
        let token = token(owner);
        let op = Op::OpenSession {
            owner: owner.into(),
            token,
            ttl_ms,
        };
        let Outcome::SessionOpened { session } = self.answer(at_ms, owner, op) else {
            panic!("no session");
        };
        for name in names {
            let op = Op::AcquireInSession {
                name: (*name).into(),
                owner: owner.into(),
                token,
                session,
                wait_ms: 0,
            };
            assert!(matches!(
                self.answer(at_ms, owner, op),
                Outcome::Granted { .. }
            ));
        }
        session
    }
}

fn holders(lease: &ListedLease) -> Vec<(&str, Stamp, Option<Mode>)> {
    lease
        .holders
        .iter()
        .map(|h| (h.owner.as_str(), h.stamp, h.mode))
        .collect()
}

#[test]
fn a_list_reports_every_permit_holder_of_a_semaphore_and_every_reader_or_the_writer_of_a_read_write_lease()
 {
    let mut log = Log::default();
    let permit = Mode::Permit { permits: 2 };
    let a = log.share(0, "pool", "alice", permit);
    let b = log.share(1, "pool", "bob", permit);
    log.share(2, "pool", "carol", permit);
    let r1 = log.share(0, "report", "reader-1", Mode::Read);
    let r2 = log.share(1, "report", "reader-2", Mode::Read);
    log.share(2, "report", "writer", Mode::Write);
    log.hold(3, "plain", "dave", 10_000, 0);
    let (leases, next) = log.list(1_000, "", None, 100);
    assert_eq!(
        (names(&leases), next),
        (vec!["plain", "pool", "report"], None)
    );
    assert_eq!(
        holders(&leases[1]),
        [("alice", a, Some(permit)), ("bob", b, Some(permit))]
    );
    assert_eq!(leases[1].waiters, 1);
    assert_eq!(leases[1].holders[0].remaining_ms, 9_000);
    assert_eq!(
        holders(&leases[2]),
        [
            ("reader-1", r1, Some(Mode::Read)),
            ("reader-2", r2, Some(Mode::Read))
        ]
    );
    assert_eq!(leases[2].waiters, 1);

    log.release_share(1_000, "report", "reader-1", r1);
    log.release_share(1_000, "report", "reader-2", r2);
    let (leases, _) = log.list(1_000, "report", None, 100);
    assert_eq!(leases[0].holders[0].owner, "writer");
    assert_eq!(leases[0].holders[0].mode, Some(Mode::Write));
}

#[test]
fn a_lease_bound_to_a_session_is_listed_with_its_session_and_the_time_the_session_has_left() {
    let mut log = Log::default();
    let session = log.in_session(0, &["s/a", "s/b"], "alice", 5_000);
    log.hold(0, "s/c", "bob", 60_000, 0);
    let (leases, _) = log.list(2_000, "s/", None, 100);
    assert_eq!(names(&leases), ["s/a", "s/b", "s/c"]);
    for lease in &leases[..2] {
        assert_eq!(lease.holders[0].session, Some(session));
        assert_eq!(lease.holders[0].remaining_ms, 3_000);
    }
    assert_eq!(leases[2].holders[0].session, None);
}

#[test]
fn pages_of_plain_and_shared_names_interleave_in_name_order_without_gaps_or_repeats() {
    let mut log = Log::default();
    let mut expected = Vec::new();
    for i in 0..12 {
        let name = format!("n{i:02}");
        if i % 3 == 0 {
            log.share(0, &name, "alice", Mode::Read);
        } else {
            log.hold(0, &name, "alice", 60_000, 0);
        }
        expected.push(name);
    }
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (leases, next) = log.list(1, "n", after.as_deref(), 5);
        seen.extend(leases.into_iter().map(|l| l.name));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}
