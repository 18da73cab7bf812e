//! What the table reports about each applied command: the events watches
//! are made of.

use super::*;
use crate::command::{LeaseToken, Op, Request};

const E1: Ballot = Ballot {
    counter: 1,
    node: trexlock_paxos::NodeId(1),
};

fn apply(table: &mut LeaseTable, at_ms: u64, request: u64, op: Op) -> Vec<Event> {
    let request = Request {
        client: ClientId(request % 2),
        request,
        acked_below: request.saturating_sub(1),
        op,
    };
    let body = Body::Request(request);
    let command = Command {
        epoch: E1,
        elapsed_us: at_ms * 1000,
        body,
    };
    table.apply(&command).events
}

fn acquire(owner: &str, wait_ms: u64) -> Op {
    Op::Acquire {
        name: "l".into(),
        owner: owner.into(),
        token: LeaseToken(owner.len() as u128),
        ttl_ms: 100,
        wait_ms,
    }
}

#[test]
fn every_change_is_reported_with_the_holder_its_stamp_and_the_value_never_the_token() {
    let mut t = LeaseTable::new();
    let granted = apply(&mut t, 0, 1, acquire("alice", 0));
    let Event::Granted { stamp, .. } = granted[0].clone() else {
        panic!("{granted:?}")
    };
    assert_eq!(
        granted,
        [Event::Granted {
            name: "l".into(),
            stamp,
            waited: false,
            owner: "alice".into()
        }]
    );
    let holder = |op| match op {
        "renew" => Op::Renew {
            name: "l".into(),
            owner: "alice".into(),
            stamp,
            token: LeaseToken(5),
            ttl_ms: 100,
        },
        _ => Op::Write {
            name: "l".into(),
            owner: "alice".into(),
            stamp,
            token: LeaseToken(5),
            value: "v".into(),
        },
    };
    assert_eq!(
        apply(&mut t, 1, 2, holder("renew")),
        [Event::Renewed {
            name: "l".into(),
            stamp
        }]
    );
    assert_eq!(
        apply(&mut t, 2, 3, holder("write")),
        [Event::Written {
            name: "l".into(),
            stamp,
            value: "v".into()
        }]
    );
    assert!(
        apply(&mut t, 3, 4, acquire("bob", 1000)).is_empty(),
        "queued"
    );
    let release = Op::Release {
        name: "l".into(),
        owner: "alice".into(),
        stamp,
        token: LeaseToken(5),
    };
    let handed = apply(&mut t, 4, 5, release);
    assert_eq!(
        handed,
        [
            Event::Released {
                name: "l".into(),
                stamp
            },
            Event::Granted {
                name: "l".into(),
                stamp: Stamp(stamp.0 + 1),
                waited: true,
                owner: "bob".into()
            }
        ]
    );
    let read = Op::Read { name: "l".into() };
    let expired = apply(&mut t, 500, 6, read);
    assert_eq!(
        expired,
        [Event::Expired {
            name: "l".into(),
            stamp: Stamp(stamp.0 + 1)
        }]
    );
    let text = format!("{granted:?}{handed:?}");
    assert!(!text.contains("LeaseToken"), "{text}");
}
