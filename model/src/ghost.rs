//! Ground truth the properties are judged against: history variables that
//! see every journal write the moment it is durable, every message the
//! moment it is sent and every command the moment it is applied. The
//! cores never read any of it.

use crate::Property;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use trexlock_lease::Stamp;
use trexlock_lease::command::{ClientId, Outcome};
use trexlock_lease::table::{Applied, Event};
use trexlock_paxos::{Ballot, JournalWrite, Message, NodeId, Slot, Value};

/// What has happened so far, as far as the properties need to know.
#[derive(Clone, Debug, Default)]
pub(crate) struct Ghost {
    quorum: usize,
    /// What the leader of a ballot proposed for a slot.
    proposals: BTreeMap<(Slot, Ballot), Value>,
    /// Who holds a durable vote for the proposal at (slot, ballot).
    votes: BTreeMap<(Slot, Ballot), BTreeSet<NodeId>>,
    /// The value a quorum holds durably, per slot.
    pub(crate) chosen: BTreeMap<Slot, Value>,
    /// Highest promise each node has made durable or announced.
    max_promised: BTreeMap<NodeId, Ballot>,
    /// Last slot each node applied (or installed) since it started.
    applied: BTreeMap<NodeId, Slot>,
    /// Last stamp granted per lease name, per node, since it started.
    granted: BTreeMap<(NodeId, String), Stamp>,
    /// The first final answer the log gave each request.
    answers: BTreeMap<(ClientId, u64), Outcome>,
    /// The first violation of each property, with what broke it.
    pub(crate) violations: BTreeMap<Property, String>,
}

impl Ghost {
    pub(crate) fn new(quorum: usize) -> Ghost {
        Ghost {
            quorum,
            ..Ghost::default()
        }
    }

    pub(crate) fn violate(&mut self, property: Property, what: String) {
        self.violations.entry(property).or_insert(what);
    }

    /// A node (re)started from its journal: it has applied nothing yet.
    pub(crate) fn started(&mut self, node: NodeId, promised: Ballot) {
        self.applied.insert(node, 0);
        self.granted.retain(|(n, _), _| *n != node);
        self.saw_promise(node, promised);
    }

    /// A node lost its disk: its promise legitimately starts again.
    pub(crate) fn disk_lost(&mut self, node: NodeId) {
        self.max_promised.remove(&node);
    }

    fn saw_promise(&mut self, node: NodeId, ballot: Ballot) {
        let max = self.max_promised.entry(node).or_default();
        if ballot < *max {
            let what = format!("{node}'s promise went back from {max} to {ballot}");
            self.violate(Property::PromisesNeverGoBack, what);
        } else {
            *max = ballot;
        }
    }

    /// A message leaves `from`: a leader's proposal is recorded, and a
    /// vote or promise it announces must already be durable.
    pub(crate) fn on_send(&mut self, from: NodeId, message: &Message) {
        match message {
            Message::Accept {
                ballot, entries, ..
            } if ballot.node == from => {
                for (slot, value) in entries {
                    if let Some(v) = self.proposals.get(&(*slot, *ballot))
                        && v != value
                    {
                        let what =
                            format!("{from} proposed two values for slot {slot} in {ballot}");
                        self.violate(Property::OneValuePerSlot, what);
                    }
                    self.proposals
                        .entry((*slot, *ballot))
                        .or_insert_with(|| value.clone());
                }
            }
            Message::Promise { ballot, .. } => {
                let durable = self.max_promised.get(&from).copied().unwrap_or_default();
                if durable < *ballot {
                    let what = format!("{from} promised {ballot} while only {durable} is durable");
                    self.violate(Property::DurableBeforeAnnounced, what);
                }
            }
            Message::Accepted { ballot, slots } => {
                for slot in slots {
                    let durable = self
                        .votes
                        .get(&(*slot, *ballot))
                        .is_some_and(|v| v.contains(&from));
                    // An acceptor that knows the slot chosen acknowledges
                    // the same value again without a new vote: harmless.
                    let known = self
                        .chosen
                        .get(slot)
                        .is_some_and(|c| self.proposals.get(&(*slot, *ballot)) == Some(c));
                    if !durable && !known {
                        let what = format!(
                            "{from} announced its vote for slot {slot} in {ballot} before it was durable"
                        );
                        self.violate(Property::DurableBeforeAnnounced, what);
                    }
                }
            }
            _ => {}
        }
    }

    /// `node`'s journal made `write` durable: its votes count from now on.
    /// An entry is a vote when its value is what the ballot's leader
    /// proposed; a value learnt by catch-up keeps its old ballot and must
    /// be the chosen one.
    pub(crate) fn on_durable(&mut self, node: NodeId, write: &JournalWrite) {
        if let Some(ballot) = write.promised {
            self.saw_promise(node, ballot);
        }
        for (slot, entry) in &write.entries {
            let (slot, ballot, value) = (*slot, entry.ballot, &entry.value);
            match self.proposals.get(&(slot, ballot)) {
                Some(proposed) if proposed == value => self.vote(slot, ballot, node),
                None if ballot.node == node => {
                    self.proposals.insert((slot, ballot), value.clone());
                    self.vote(slot, ballot, node);
                }
                _ if self.chosen.get(&slot) == Some(value) => {}
                _ => {
                    let what = format!(
                        "{node} holds a value for slot {slot} in {ballot} that its leader never proposed"
                    );
                    self.violate(Property::OneValuePerSlot, what);
                }
            }
        }
    }

    fn vote(&mut self, slot: Slot, ballot: Ballot, voter: NodeId) {
        let voters = self.votes.entry((slot, ballot)).or_default();
        voters.insert(voter);
        if voters.len() < self.quorum {
            return;
        }
        let value = self.proposals[&(slot, ballot)].clone();
        match self.chosen.get(&slot) {
            Some(v) if *v != value => {
                let what = format!("a second value chosen for slot {slot} in {ballot}");
                self.violate(Property::OneValuePerSlot, what);
            }
            Some(_) => {}
            None => {
                self.chosen.insert(slot, value);
            }
        }
    }

    /// `node` applied `value` at `slot`: the next slot, and the value a
    /// quorum holds durably. Stamps grow and no request runs twice.
    pub(crate) fn on_apply(
        &mut self,
        node: NodeId,
        slot: Slot,
        value: &Value,
        results: &[Applied],
    ) {
        let last = self.applied.get(&node).copied().unwrap_or(0);
        if slot != last + 1 {
            let what = format!("{node} applied slot {slot} right after slot {last}");
            self.violate(Property::ApplyChosenInOrder, what);
        }
        self.applied.insert(node, slot);
        match self.chosen.get(&slot) {
            None => {
                let what = format!("{node} applied slot {slot}, which no quorum holds durably");
                self.violate(Property::ApplyChosenInOrder, what);
            }
            Some(v) if v != value => {
                let what =
                    format!("{node} applied a value at slot {slot} other than the chosen one");
                self.violate(Property::ApplyChosenInOrder, what);
            }
            Some(_) => {}
        }
        for applied in results {
            for event in &applied.events {
                if let Event::Granted { name, stamp, .. } = event {
                    let key = (node, name.clone());
                    if let Some(last) = self.granted.insert(key, *stamp).filter(|l| l >= stamp) {
                        let what =
                            format!("{node}: lease {name} granted stamp {stamp} after {last}");
                        self.violate(Property::StampsGrow, what);
                    }
                }
            }
            for response in &applied.responses {
                let outcome = &response.outcome;
                if *outcome == Outcome::Queued || *outcome == Outcome::AlreadyAnswered {
                    continue;
                }
                let key = (response.client, response.request);
                match self.answers.get(&key) {
                    Some(first) if execution(first) != execution(outcome) => {
                        let what = format!(
                            "{node}: request {} of session {} executed twice (slot {slot}: {outcome:?} after {first:?})",
                            response.request, response.client.0
                        );
                        self.violate(Property::NoRequestExecutedTwice, what);
                    }
                    Some(_) => {}
                    None => {
                        self.answers.insert(key, outcome.clone());
                    }
                }
            }
        }
    }

    /// A snapshot replaced `node`'s table up to `slot`.
    pub(crate) fn on_install(&mut self, node: NodeId, slot: Slot) {
        self.applied.insert(node, slot);
        self.granted.retain(|(n, _), _| *n != node);
    }

    /// A client was told `outcome` for its request: an answer the log gave
    /// must be the log's first for that request, and the command it
    /// answers must be chosen (held durably by a quorum), so that no crash
    /// can lose it.
    pub(crate) fn on_acknowledged(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        if matches!(outcome, Outcome::Queued | Outcome::AlreadyAnswered)
            || matches!(outcome, Outcome::Refused(r) if r.is_invalid())
        {
            return;
        }
        match self.answers.get(&(client, request)) {
            Some(logged) if execution(logged) == execution(outcome) => {}
            logged => {
                let what = format!(
                    "session {} was told {outcome:?} for request {request}; the log says {logged:?}",
                    client.0
                );
                self.violate(Property::NoAcknowledgedCommandLost, what);
                return;
            }
        }
        let held = self
            .chosen
            .values()
            .any(|v| v.commands().iter().any(|c| carries(c, client, request)));
        if !held {
            let what = format!(
                "session {} was told {outcome:?} for request {request}, which no quorum holds durably",
                client.0
            );
            self.violate(Property::NoAcknowledgedCommandLost, what);
        }
    }
}

/// True when the encoded command is request `request` of `client`.
fn carries(bytes: &Bytes, client: ClientId, request: u64) -> bool {
    use trexlock_lease::command::{Body, Command};
    Command::decode(bytes).is_ok_and(
        |c| matches!(c.body, Body::Request(r) if r.client == client && r.request == request),
    )
}

/// What identifies an execution: a grant answered again from the table
/// carries the lease's value as of the retry, so values are left out.
fn execution(outcome: &Outcome) -> Outcome {
    match outcome {
        Outcome::Granted { stamp, .. } => Outcome::Granted {
            stamp: *stamp,
            value: None,
        },
        other => other.clone(),
    }
}
