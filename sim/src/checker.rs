//! Ground truth and invariants. The checker watches every message at the
//! moment it is sent, so it knows which values a quorum really voted for,
//! independent of what any node believes.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use trexlock_paxos::{Ballot, Envelope, Message, NodeId, Slot, Value};

/// Records violations of the safety properties.
#[derive(Default)]
pub struct Checker {
    quorum: usize,
    /// What the leader of a ballot proposed for a slot (one value each).
    proposals: BTreeMap<(Slot, Ballot), Value>,
    /// Who voted for the proposal at (slot, ballot).
    votes: BTreeMap<(Slot, Ballot), BTreeSet<NodeId>>,
    /// The value a quorum voted for: at most one per slot, forever.
    chosen: BTreeMap<Slot, Value>,
    /// Highest promise each node has shown, surviving its restarts.
    max_promised: BTreeMap<NodeId, Ballot>,
    /// Where each command was applied.
    command_slot: BTreeMap<Bytes, Slot>,
    /// Problems found, in order.
    pub violations: Vec<String>,
}

impl Checker {
    /// A checker for a cluster with this quorum size.
    pub fn new(quorum: usize) -> Self {
        Checker {
            quorum,
            ..Checker::default()
        }
    }

    /// Records the votes a message reveals.
    pub fn on_send(&mut self, env: &Envelope) {
        match &env.message {
            Message::Accept {
                ballot, entries, ..
            } if ballot.node == env.from => {
                for (slot, value) in entries {
                    match self.proposals.get(&(*slot, *ballot)) {
                        Some(v) if v != value => self.violations.push(format!(
                            "leader {} proposed two values for slot {slot} in ballot {ballot}",
                            env.from
                        )),
                        Some(_) => {}
                        None => {
                            self.proposals.insert((*slot, *ballot), value.clone());
                        }
                    }
                    self.vote(*slot, *ballot, env.from);
                }
            }
            Message::Accepted { ballot, slots } => {
                for slot in slots {
                    self.vote(*slot, *ballot, env.from);
                }
            }
            Message::Promise { ballot, .. } => self.saw_promise(env.from, *ballot),
            _ => {}
        }
    }

    fn vote(&mut self, slot: Slot, ballot: Ballot, voter: NodeId) {
        let voters = self.votes.entry((slot, ballot)).or_default();
        voters.insert(voter);
        if voters.len() < self.quorum {
            return;
        }
        let Some(value) = self.proposals.get(&(slot, ballot)) else {
            self.violations.push(format!(
                "{voter} voted in ballot {ballot} for slot {slot}, which its leader never proposed"
            ));
            return;
        };
        match self.chosen.get(&slot) {
            Some(v) if v != value => self.violations.push(format!(
                "two values chosen for slot {slot} (second in ballot {ballot})"
            )),
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value.clone());
            }
        }
    }

    /// A node lost its disk: its promise legitimately starts again.
    pub fn forget_promises(&mut self, node: NodeId) {
        self.max_promised.remove(&node);
    }

    /// Promises never go backwards, across restarts included.
    pub fn saw_promise(&mut self, node: NodeId, ballot: Ballot) {
        let max = self.max_promised.entry(node).or_default();
        if ballot < *max {
            self.violations
                .push(format!("{node} promise went back from {max} to {ballot}"));
        } else {
            *max = ballot;
        }
    }

    /// A node applied `value` at `slot`: it must be the chosen value.
    pub fn on_apply(&mut self, node: NodeId, slot: Slot, value: &Value) {
        match self.chosen.get(&slot) {
            None => self.violations.push(format!(
                "{node} applied slot {slot}, for which no quorum voted"
            )),
            Some(v) if v != value => self.violations.push(format!(
                "{node} applied a value at slot {slot} other than the chosen one"
            )),
            Some(_) => {}
        }
        // A client retry may put the same command in two slots; the first
        // slot is where it was acknowledged.
        for cmd in value.commands() {
            self.command_slot.entry(cmd.clone()).or_insert(slot);
        }
    }

    /// Every command applied anywhere, with its slot: the acknowledged ones.
    pub fn acknowledged(&self) -> impl Iterator<Item = (&Bytes, Slot)> {
        self.command_slot.iter().map(|(c, s)| (c, *s))
    }
}
