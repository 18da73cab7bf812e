//! A log of requests applied to a table one command each: the fixture of
//! the table's specifications.

use super::{LeaseTable, admit};
use crate::command::{Body, ClientId, Command, LeaseToken, Op, Outcome, Request};
use trexlock_paxos::{Ballot, NodeId};

const EPOCH: Ballot = Ballot {
    counter: 1,
    node: NodeId(1),
};

/// A table and the requests applied to it, all in one epoch.
#[derive(Default)]
pub(super) struct Log {
    pub(super) table: LeaseTable,
    request: u64,
}

/// `owner`'s secret: the same for every request of the owner.
pub(super) fn token(owner: &str) -> LeaseToken {
    LeaseToken(owner.bytes().map(u128::from).sum())
}

/// `owner`'s request session.
pub(super) fn client(owner: &str) -> u64 {
    owner.bytes().map(u64::from).sum()
}

impl Log {
    /// Applies `op` from `owner`'s session at `at_ms`, each request
    /// acknowledging the ones before; every response.
    pub(super) fn run(&mut self, at_ms: u64, owner: &str, op: Op) -> Vec<(u64, Outcome)> {
        self.request += 1;
        let request = Request {
            client: ClientId(client(owner)),
            request: self.request,
            acked_below: self.request,
            op,
        };
        admit(&request).expect("admitted");
        self.apply(at_ms, Body::Request(request))
    }

    /// Applies a command of `body` at `at_ms`; every response.
    pub(super) fn apply(&mut self, at_ms: u64, body: Body) -> Vec<(u64, Outcome)> {
        let applied = self.table.apply(&Command {
            epoch: EPOCH,
            elapsed_us: at_ms * 1000,
            body,
        });
        applied
            .responses
            .into_iter()
            .map(|r| (r.client.0, r.outcome))
            .collect()
    }
}
