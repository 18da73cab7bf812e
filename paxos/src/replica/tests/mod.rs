//! Per-message specifications of the replica, in the spirit of Trex2's
//! per-message property tests: for every handler, what it must persist,
//! what it must send, and what it must never do. Shared fixtures live here;
//! each module specifies one role.

use super::*;
use crate::journal::JournalState;
use crate::types::MAX_SLOT;
use proptest::prelude::*;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const T0: Duration = Duration::ZERO;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(node: NodeId) -> Config {
    Config::new(node, vec![N1, N2, N3])
}

fn replica_with(node: NodeId, state: JournalState) -> Replica {
    // Non-empty journals start as voters; empty ones go through `fresh`.
    Replica::new(config(node), state, T0).expect("valid state")
}

/// A replica of a brand-new cluster: empty, and told by both peers that
/// they are empty too, so it may vote.
fn fresh(node: NodeId) -> Replica {
    let mut r = replica_with(node, JournalState::default());
    assert!(r.is_learner());
    for peer in [N1, N2, N3].into_iter().filter(|p| *p != node) {
        let reply = Message::ProbeReply {
            promised: Ballot::ZERO,
            last_slot: 0,
        };
        let _ = r.handle(T0, env(peer, node, reply)).unwrap();
    }
    assert!(!r.is_learner());
    r
}

fn b(counter: u64, node: NodeId) -> Ballot {
    Ballot { counter, node }
}

fn cmd(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

fn batch(s: &str) -> Value {
    Value::Batch(vec![cmd(s)])
}

/// Votes cast in `ballot`, each slot for a batch of its one command.
fn votes(ballot: Ballot, values: &[(Slot, &str)]) -> BTreeMap<Slot, LogEntry> {
    values
        .iter()
        .map(|(slot, value)| {
            let value = batch(value);
            (*slot, LogEntry { ballot, value })
        })
        .collect()
}

/// N1 restarted from a journal that promised `ballot` and holds `values`
/// voted in it.
fn voter(ballot: Ballot, values: &[(Slot, &str)]) -> Replica {
    let state = JournalState {
        promised: ballot,
        entries: votes(ballot, values),
        ..Default::default()
    };
    replica_with(N1, state)
}

/// The leader of `ballot` sends `r`, at `at`, an Accept of one-command
/// batches; what `r` does with it.
fn accept(
    r: &mut Replica,
    at: Duration,
    ballot: Ballot,
    committed: Slot,
    values: &[(Slot, &str)],
) -> Ready {
    let entries = values.iter().map(|(slot, v)| (*slot, batch(v))).collect();
    let message = Message::Accept {
        ballot,
        committed,
        entries,
    };
    let to = r.id();
    r.handle(at, env(ballot.node, to, message)).unwrap()
}

fn env(from: NodeId, to: NodeId, message: Message) -> Envelope {
    Envelope { from, to, message }
}

fn first_accept(ready: &Ready) -> &Vec<(Slot, Value)> {
    ready
        .messages
        .iter()
        .find_map(|e| match &e.message {
            Message::Accept { entries, .. } => Some(entries),
            _ => None,
        })
        .expect("an accept was sent")
}

fn only_message(ready: &Ready) -> &Message {
    assert_eq!(ready.messages.len(), 1, "{:?}", ready.messages);
    &ready.messages[0].message
}

/// Drives N1 to leadership with promises from N2 carrying `entries`.
fn elect_n1(entries_from_n2: Vec<(Slot, LogEntry)>, n2_committed: Slot) -> (Replica, Ready) {
    let mut r = fresh(N1);
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let promise = Message::Promise {
        ballot,
        committed: n2_committed,
        truncated: 0,
        first: 1,
        through: MAX_SLOT,
        entries: entries_from_n2,
    };
    let ready = r.handle(ms(10_001), env(N2, N1, promise)).unwrap();
    assert!(r.is_leader());
    (r, ready)
}

mod acceptor;
mod catchup;
mod hostile;
mod leader;
mod limits;
mod members;
mod rejoin;
mod transfer;
