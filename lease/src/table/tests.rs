//! Specifications of the lease table.

use super::*;
use crate::command::Request;
use proptest::prelude::*;

const E1: Ballot = Ballot {
    counter: 1,
    node: trexlock_paxos::NodeId(1),
};
const E2: Ballot = Ballot {
    counter: 2,
    node: trexlock_paxos::NodeId(2),
};

struct Log {
    table: LeaseTable,
    request: u64,
}

impl Log {
    fn new() -> Log {
        Log {
            table: LeaseTable::new(),
            request: 0,
        }
    }

    fn run(&mut self, epoch: Ballot, at_ms: u64, client: u64, op: Op) -> Applied {
        self.request += 1;
        let command = Command {
            epoch,
            elapsed_us: at_ms * 1000,
            body: Body::Request(Request {
                client: ClientId(client),
                request: self.request,
                acked_below: 0,
                op,
            }),
        };
        self.table.apply(&command)
    }

    fn tick(&mut self, epoch: Ballot, at_ms: u64) -> Applied {
        self.table.apply(&Command {
            epoch,
            elapsed_us: at_ms * 1000,
            body: Body::Tick,
        })
    }
}

fn acquire(owner: &str, ttl_ms: u64, wait_ms: u64) -> Op {
    Op::Acquire {
        name: "l".into(),
        owner: owner.into(),
        ttl_ms,
        wait_ms,
    }
}

fn outcome(applied: &Applied) -> &Outcome {
    &applied.responses.last().expect("a response").outcome
}

fn stamp_of(applied: &Applied) -> Stamp {
    match outcome(applied) {
        Outcome::Granted { stamp, .. } => *stamp,
        other => panic!("not granted: {other:?}"),
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
    let released = log.run(
        E1,
        3,
        1,
        Op::Release {
            name: "l".into(),
            owner: "a".into(),
            stamp: a,
        },
    );
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
fn renew_release_and_write_need_the_current_stamp() {
    let mut log = Log::new();
    let a = stamp_of(&log.run(E1, 0, 1, acquire("a", 100, 0)));
    let stale = Stamp(a.0 + 100);
    for op in [
        Op::Renew {
            name: "l".into(),
            owner: "a".into(),
            stamp: stale,
            ttl_ms: 100,
        },
        Op::Release {
            name: "l".into(),
            owner: "a".into(),
            stamp: stale,
        },
        Op::Write {
            name: "l".into(),
            owner: "a".into(),
            stamp: stale,
            value: Bytes::new(),
        },
        Op::Renew {
            name: "l".into(),
            owner: "b".into(),
            stamp: a,
            ttl_ms: 100,
        },
    ] {
        assert!(matches!(
            outcome(&log.run(E1, 1, 1, op)),
            Outcome::NotHolder { current: Some(_) }
        ));
    }
    let written = log.run(
        E1,
        2,
        1,
        Op::Write {
            name: "l".into(),
            owner: "a".into(),
            stamp: a,
            value: Bytes::from_static(b"v"),
        },
    );
    assert_eq!(outcome(&written), &Outcome::Written);
    log.run(
        E1,
        3,
        1,
        Op::Release {
            name: "l".into(),
            owner: "a".into(),
            stamp: a,
        },
    );
    let b = log.run(E1, 4, 2, acquire("b", 100, 0));
    assert!(matches!(outcome(&b), Outcome::Granted { value: Some(v), .. } if v == "v"));
}

#[test]
fn invalid_requests_are_answered_not_executed() {
    let mut log = Log::new();
    for op in [
        acquire("a", 0, 0),
        acquire("", 10, 0),
        acquire("a", MAX_TTL_MS + 1, 0),
    ] {
        assert!(matches!(
            outcome(&log.run(E1, 0, 1, op)),
            Outcome::Invalid(_)
        ));
    }
    assert!(log.table.is_empty());
}

#[test]
fn idle_sessions_are_forgotten() {
    let mut log = Log::new();
    log.run(E1, 0, 1, Op::Read { name: "l".into() });
    assert_eq!(log.table.sessions.len(), 1);
    log.tick(E1, SESSION_IDLE_US / 1000 + 1);
    assert!(log.table.sessions.is_empty());
}

fn op_strategy() -> impl Strategy<Value = (u64, u64, Op)> {
    let owner = prop::sample::select(vec!["a", "b", "c"]);
    let name = prop::sample::select(vec!["x", "y"]);
    (0u64..4, 1u64..20, owner, name, 0u8..5, 1u64..50, 0u64..50).prop_map(
        |(client, dt, owner, name, kind, ttl, wait)| {
            let (name, owner) = (name.to_owned(), owner.to_owned());
            let op = match kind {
                0 => Op::Acquire {
                    name,
                    owner,
                    ttl_ms: ttl,
                    wait_ms: wait,
                },
                1 => Op::Renew {
                    name,
                    owner,
                    stamp: Stamp(ttl),
                    ttl_ms: ttl,
                },
                2 => Op::Release {
                    name,
                    owner,
                    stamp: Stamp(wait),
                },
                3 => Op::Cancel { name, owner },
                _ => Op::Read { name },
            };
            (client, dt, op)
        },
    )
}

proptest! {
    #[test]
    fn replaying_a_log_rebuilds_the_same_table_and_snapshots_round_trip(
        ops in proptest::collection::vec(op_strategy(), 1..80)
    ) {
        let mut a = Log::new();
        let mut b = Log::new();
        let mut at = 0;
        let mut stamps: BTreeMap<String, Stamp> = BTreeMap::new();
        for (client, dt, op) in ops {
            at += dt;
            let ra = a.run(E1, at, client, op.clone());
            let rb = b.run(E1, at, client, op);
            prop_assert_eq!(&ra, &rb);
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
