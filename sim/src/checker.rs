//! Ground truth and invariants, shared by the simulator and the model
//! checker (`trexlock-model`). The checker sees every journal write the
//! moment it becomes durable and every message the moment it is sent, so
//! it knows which values a quorum really holds on disk, independent of
//! what any node believes; and it sees every answer the table produced.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use trexlock_lease::command::{ClientId, Outcome, Refusal};
use trexlock_lease::table::Applied;
use trexlock_paxos::{
    Ballot, CONFIG_DELAY, JournalWrite, Membership, Message, NodeId, Slot, Value,
};

/// The rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// At most one value is chosen per slot: one proposal per slot and
    /// ballot, and nothing held that its leader never proposed.
    OneValuePerSlot,
    /// A leader proposes only with promises from a majority of the
    /// membership governing the slot.
    PhaseOneQuorum,
    /// One membership change at a time, each changing one voter.
    OneMembershipChange,
    /// No ballot elects two leaders.
    OneLeaderPerBallot,
    /// Snapshots of one slot are identical on every node.
    SnapshotsAgree,
    /// Nodes apply only the value chosen for a slot.
    ApplyOnlyChosen,
    /// No node's promise goes back, across restarts.
    PromisesNeverGoBack,
    /// A promise or a vote is durable before a message announces it.
    DurableBeforeAnnounced,
    /// No request is executed twice.
    NoRequestExecutedTwice,
    /// Every answer a client gets is the one the log gave.
    AnswersAreTheLogs,
}

/// Records violations of the safety properties.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    /// The memberships chosen so far, by the first slot each governs,
    /// with the slot each was chosen at (0 for the bootstrap one).
    memberships: BTreeMap<Slot, (Slot, Membership)>,
    /// Who sent a promise of each ballot (its owner promised it too).
    promisers: BTreeMap<Ballot, BTreeSet<NodeId>>,
    /// What the leader of a ballot proposed for a slot (one value each).
    proposals: BTreeMap<(Slot, Ballot), Value>,
    /// Who holds a durable vote for the value at (slot, ballot).
    votes: BTreeMap<(Slot, Ballot), BTreeSet<NodeId>>,
    /// The value a quorum holds durably: at most one per slot, forever.
    chosen: BTreeMap<Slot, Value>,
    /// Highest promise each node has shown, surviving its restarts.
    max_promised: BTreeMap<NodeId, Ballot>,
    /// Where each command was applied first.
    command_slot: BTreeMap<Bytes, Slot>,
    /// The first final answer the log gave each request.
    answers: BTreeMap<(ClientId, u64), Outcome>,
    /// Every snapshot a node persisted, by slot: all must be equal.
    snapshots: BTreeMap<Slot, Bytes>,
    /// Every slot up to here is chosen, and some node announced a commit
    /// index at or past it.
    announced_through: Slot,
    /// Ballots in which a replica became leader: each elects one.
    elected: BTreeSet<Ballot>,
    /// The first violation of each rule.
    broken: BTreeMap<Rule, String>,
    /// Problems found, in order (the rules' and any the caller adds).
    pub violations: Vec<String>,
}

impl Checker {
    /// A checker for a cluster that starts with this membership.
    pub fn new(bootstrap: Membership) -> Self {
        Checker {
            memberships: BTreeMap::from([(1, (0, bootstrap))]),
            ..Checker::default()
        }
    }

    fn violate(&mut self, rule: Rule, what: String) {
        self.broken.entry(rule).or_insert_with(|| what.clone());
        self.violations.push(what);
    }

    /// The first violation of each rule broken so far.
    pub fn broken(&self) -> &BTreeMap<Rule, String> {
        &self.broken
    }

    /// The values chosen so far (held durably by a quorum in one ballot),
    /// by slot.
    pub fn chosen(&self) -> &BTreeMap<Slot, Value> {
        &self.chosen
    }

    /// The membership governing `slot`, by the values chosen so far (a
    /// leader proposes at a slot only once it knows every slot up to
    /// `slot - CONFIG_DELAY` chosen, so those are known here by then).
    fn governing(&self, slot: Slot) -> &Membership {
        self.memberships
            .range(..=slot)
            .next_back()
            .map(|(_, (_, m))| m)
            .expect("the bootstrap membership governs from slot 1")
    }

    /// A membership chosen at `slot`: it must differ from the one before
    /// by at most one voter, and that one must be in effect (one change at
    /// a time, the rule the single-change argument rests on).
    fn membership_chosen(&mut self, slot: Slot, next: &Membership) {
        let before = self
            .memberships
            .values()
            .filter(|(chosen_at, _)| *chosen_at < slot)
            .max_by_key(|(chosen_at, _)| *chosen_at)
            .cloned();
        if let Some((chosen_at, previous)) = before {
            let effective = chosen_at + CONFIG_DELAY;
            if chosen_at > 0 && slot < effective {
                self.violate(Rule::OneMembershipChange, format!(
                    "membership change chosen at slot {slot} while the one chosen at slot {chosen_at} was not in effect (from slot {effective})"
                ));
            }
            let changed = previous.voters.symmetric_difference(&next.voters).count();
            if changed > 1 {
                self.violate(
                    Rule::OneMembershipChange,
                    format!(
                        "membership change chosen at slot {slot} changes {changed} voters at once"
                    ),
                );
            }
        }
        self.memberships
            .insert(slot + CONFIG_DELAY, (slot, next.clone()));
    }

    /// A leader proposes at a slot only with promises that meet every
    /// majority of the membership governing it.
    fn check_phase_one(&mut self, slot: Slot, ballot: Ballot) {
        let mut promisers = self.promisers.get(&ballot).cloned().unwrap_or_default();
        promisers.insert(ballot.node);
        let governing = self.governing(slot);
        if !governing.is_met_by(promisers.iter()) {
            let voters = governing.voters.clone();
            self.violate(Rule::PhaseOneQuorum, format!(
                "leader of {ballot} proposed at slot {slot} with promises from {promisers:?}, which miss a majority of {voters:?}, the voters governing it"
            ));
        }
    }

    /// Node `node` became leader in `ballot`: no ballot elects two leaders
    /// (a ballot belongs to one node, and that node never campaigns twice
    /// in it, restarts and disk losses included), so no two leaders act in
    /// one ballot.
    pub fn on_elected(&mut self, node: NodeId, ballot: Ballot) {
        if !self.elected.insert(ballot) {
            self.violate(
                Rule::OneLeaderPerBallot,
                format!(
                    "{node} became leader in ballot {ballot}, which elected a leader before: two leaders in one ballot"
                ),
            );
        }
    }

    /// A node announced `committed` as its commit index: every slot up to
    /// it must be chosen, that is held durably in one ballot by a majority
    /// of the voters of the membership governing that slot. A leader that
    /// counts another membership's quorum (an old one, or its electorate)
    /// announces a slot this majority does not hold.
    fn check_announced(&mut self, from: NodeId, committed: Slot) {
        while self.announced_through < committed {
            let slot = self.announced_through + 1;
            if !self.chosen.contains_key(&slot) {
                let voters = self.governing(slot).voters.clone();
                self.violate(
                    Rule::ApplyOnlyChosen,
                    format!(
                        "{from} announced commit index {committed}, but slot {slot} is not held durably by a majority of {voters:?}, the voters governing it"
                    ),
                );
                return;
            }
            self.announced_through = slot;
        }
    }

    /// Records what a message reveals, a leader's proposal, and checks
    /// that a vote or a promise it announces is already durable at its
    /// sender. (A Promise message may leave after the acceptor promised
    /// more, once the write it waited for is synced: it is only checked
    /// against what is durable.)
    pub fn on_send(&mut self, from: NodeId, message: &Message) {
        match message {
            Message::Accept {
                ballot,
                entries,
                committed,
            } if ballot.node == from => {
                for (slot, value) in entries {
                    self.propose(*slot, *ballot, value, from);
                }
                self.check_announced(from, *committed);
            }
            Message::Accept { ballot, .. } => self.violate(
                Rule::OneValuePerSlot,
                format!("{from} sent an Accept in ballot {ballot}, which another node leads"),
            ),
            Message::Accepted {
                ballot,
                slots,
                committed,
            } => {
                self.check_announced(from, *committed);
                for slot in slots {
                    let durable = self
                        .votes
                        .get(&(*slot, *ballot))
                        .is_some_and(|v| v.contains(&from));
                    // An acceptor that knows the slot chosen acknowledges
                    // the same value again without a new vote: harmless.
                    let already_chosen = self.chosen.get(slot).is_some_and(|chosen| {
                        self.proposals.get(&(*slot, *ballot)) == Some(chosen)
                    });
                    if !durable && !already_chosen {
                        self.violate(Rule::DurableBeforeAnnounced, format!(
                            "{from} announced its vote for slot {slot} in ballot {ballot} before it was durable"
                        ));
                    }
                }
            }
            Message::Commit { committed, .. }
            | Message::CommitAck { committed, .. }
            | Message::Release { committed, .. } => self.check_announced(from, *committed),
            Message::Promise {
                ballot, committed, ..
            } => {
                self.check_announced(from, *committed);
                self.promisers.entry(*ballot).or_default().insert(from);
                let durable = self.max_promised.get(&from).copied().unwrap_or_default();
                if durable < *ballot {
                    self.violate(
                        Rule::DurableBeforeAnnounced,
                        format!(
                            "{from} sent a promise of {ballot} while only {durable} is durable"
                        ),
                    );
                }
            }
            _ => {}
        }
    }

    fn propose(&mut self, slot: Slot, ballot: Ballot, value: &Value, by: NodeId) {
        match self.proposals.get(&(slot, ballot)) {
            Some(v) if v != value => self.violate(
                Rule::OneValuePerSlot,
                format!("{by}: two values for slot {slot} in ballot {ballot}"),
            ),
            Some(_) => {}
            None => {
                self.proposals.insert((slot, ballot), value.clone());
                self.check_phase_one(slot, ballot);
            }
        }
    }

    /// `node`'s journal made `write` durable: its votes now count, and its
    /// promise is one it can never go back on.
    ///
    /// An entry is a vote when its value is what the ballot's leader
    /// proposed (the leader's own entry is its proposal). A replica that
    /// learns a chosen value by catch-up writes it over its old vote and
    /// keeps that vote's ballot; such an entry is no vote, and its value
    /// must be the chosen one.
    pub fn on_durable(&mut self, node: NodeId, write: &JournalWrite) {
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
                _ => self.violate(Rule::OneValuePerSlot, format!(
                    "{node} holds a value for slot {slot} in ballot {ballot} that its leader never proposed and no quorum chose"
                )),
            }
        }
        if let Some(snapshot) = &write.snapshot {
            match self.snapshots.get(&snapshot.slot) {
                Some(data) if *data != snapshot.data => self.violate(
                    Rule::SnapshotsAgree,
                    format!(
                        "{node}: its snapshot at slot {} differs from another node's",
                        snapshot.slot
                    ),
                ),
                Some(_) => {}
                None => {
                    self.snapshots.insert(snapshot.slot, snapshot.data.clone());
                }
            }
        }
    }

    fn vote(&mut self, slot: Slot, ballot: Ballot, voter: NodeId) {
        let voters = self.votes.entry((slot, ballot)).or_default();
        voters.insert(voter);
        let voters = voters.clone();
        if !self.governing(slot).is_quorum(voters.iter()) {
            return;
        }
        let value = self.proposals[&(slot, ballot)].clone();
        match self.chosen.get(&slot) {
            Some(v) if *v != value => self.violate(
                Rule::OneValuePerSlot,
                format!("two values chosen for slot {slot} (second in ballot {ballot})"),
            ),
            Some(_) => {}
            None => {
                if let Value::Reconfig(next) = &value {
                    self.membership_chosen(slot, next);
                }
                self.chosen.insert(slot, value);
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
            let what = format!("{node} promise went back from {max} to {ballot}");
            self.violate(Rule::PromisesNeverGoBack, what);
        } else {
            *max = ballot;
        }
    }

    /// A node applied `value` at `slot`: it must be the value a quorum
    /// holds durably. `results` is what its commands did to the table.
    pub fn on_apply(&mut self, node: NodeId, slot: Slot, value: &Value, results: &[Applied]) {
        match self.chosen.get(&slot) {
            None => self.violate(
                Rule::ApplyOnlyChosen,
                format!("{node} applied slot {slot}, which no quorum holds durably"),
            ),
            Some(v) if v != value => self.violate(
                Rule::ApplyOnlyChosen,
                format!("{node} applied a value at slot {slot} other than the chosen one"),
            ),
            Some(_) => {}
        }
        // A retry may put the same command in two slots; the first slot is
        // where it was acknowledged.
        for cmd in value.commands() {
            self.command_slot.entry(cmd.clone()).or_insert(slot);
        }
        for response in results.iter().flat_map(|a| &a.responses) {
            if !is_final(&response.outcome) || is_replay_refusal(&response.outcome) {
                continue;
            }
            let key = (response.client, response.request);
            match self.answers.get(&key) {
                Some(first) if execution(first) != execution(&response.outcome) => self.violate(Rule::NoRequestExecutedTwice, format!(
                    "{node}: request {} of session {} executed twice (slot {slot}: {:?} after {:?})",
                    response.request, response.client.0, response.outcome, first
                )),
                Some(_) => {}
                None => {
                    self.answers.insert(key, response.outcome.clone());
                }
            }
        }
    }

    /// A client received `outcome` for its request: a final answer must be
    /// the one the log gave (requests refused before proposal aside), and
    /// a request the client still waits for is never one the table calls
    /// already answered.
    pub fn on_client_answer(
        &mut self,
        client: ClientId,
        request: u64,
        outcome: &Outcome,
        waiting: bool,
    ) {
        if is_replay_refusal(outcome) {
            if waiting {
                self.violate(Rule::AnswersAreTheLogs, format!(
                    "session {} still waits for request {request}, which the table calls already answered",
                    client.0
                ));
            }
            return;
        }
        // Refused at admission, never proposed: invalid, or asked of a node
        // removed from the membership.
        let admission =
            matches!(outcome, Outcome::Refused(r) if r.is_invalid() || *r == Refusal::Removed);
        if !is_final(outcome) || admission {
            return;
        }
        match self.answers.get(&(client, request)) {
            Some(logged) if execution(logged) == execution(outcome) => {}
            logged => self.violate(
                Rule::AnswersAreTheLogs,
                format!(
                    "session {} got {outcome:?} for request {request}; the log says {logged:?}",
                    client.0
                ),
            ),
        }
    }

    /// Every command applied anywhere, with its slot: the acknowledged ones.
    pub fn acknowledged(&self) -> impl Iterator<Item = (&Bytes, Slot)> {
        self.command_slot.iter().map(|(c, s)| (c, *s))
    }
}

/// A final answer that is an execution: reads (a list, a holder) are
/// executed again for every copy in the log, each answering as of its
/// own slot, so two answers to one read may differ.
fn is_final(outcome: &Outcome) -> bool {
    !matches!(
        outcome,
        Outcome::Queued | Outcome::Listed { .. } | Outcome::Holder { .. }
    )
}

/// The table's answer to a duplicate of a request it already answered and
/// may have forgotten: a refusal, not an execution.
fn is_replay_refusal(outcome: &Outcome) -> bool {
    *outcome == Outcome::AlreadyAnswered
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
