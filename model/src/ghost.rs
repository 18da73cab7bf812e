//! Ground truth the properties are judged against: the simulator's
//! [`Checker`] (every journal write the moment it is durable, every
//! message the moment it is sent, every command the moment it is applied)
//! and the few history variables the model checks beyond it. The cores
//! never read any of it.

use crate::Property;
use bytes::Bytes;
use std::collections::BTreeMap;
use trexlock_lease::Stamp;
use trexlock_lease::command::{ClientId, Outcome};
use trexlock_lease::table::{Applied, Event};
use trexlock_lease::watch::{WatchId, WatchPosition};
use trexlock_paxos::{Ballot, JournalWrite, Membership, Message, NodeId, Slot, Value};
use trexlock_sim::checker::{Checker, Rule};
use trexlock_sim::leases::LeaseChecker;
use trexlock_sim::lists::ListChecker;
use trexlock_sim::shares::ShareChecker;
use trexlock_sim::watches::WatchChecker;

/// What has happened so far, as far as the properties need to know.
#[derive(Clone, Debug)]
pub(crate) struct Ghost {
    /// Votes, promises, choices, answers: the rules the simulator checks.
    checker: Checker,
    /// Grants acknowledged and lists in flight, as the simulator checks.
    lists: ListChecker,
    /// Last slot each node applied (or installed) since it started.
    applied: BTreeMap<NodeId, Slot>,
    /// Last stamp granted per lease name, per node, since it started.
    granted: BTreeMap<(NodeId, String), Stamp>,
    /// The first violation of each property the model checks itself.
    own: BTreeMap<Property, String>,
    /// Holders' actions on the lease, as the simulator checks them against
    /// lock-delays (only when the scenario sets lock-delays).
    pub(crate) leases: Option<LeaseChecker>,
    /// The grant each client last acted under, and the step it did.
    pub(crate) acted: BTreeMap<ClientId, (Stamp, u32)>,
    /// Requests for shares, queued writers and grants, as the simulator
    /// checks them.
    pub(crate) shares: ShareChecker,
    /// The events of each slot, once a watcher watches.
    pub(crate) watches: Option<WatchChecker>,
    /// Each watcher's position: the last event it received (where its
    /// watch started, before the first; `None` until it started).
    pub(crate) watchers: BTreeMap<WatchId, Option<WatchPosition>>,
}

/// The property a rule of the shared checker belongs to.
fn property(rule: Rule) -> Property {
    match rule {
        Rule::OneValuePerSlot | Rule::PhaseOneQuorum => Property::OneValuePerSlot,
        Rule::OneMembershipChange => Property::OneMembershipChangeAtATime,
        Rule::OneLeaderPerBallot => Property::OneLeaderPerBallot,
        Rule::SnapshotsAgree => Property::SnapshotsAgree,
        Rule::ApplyOnlyChosen => Property::ApplyChosenInOrder,
        Rule::PromisesNeverGoBack => Property::PromisesNeverGoBack,
        Rule::DurableBeforeAnnounced => Property::DurableBeforeAnnounced,
        Rule::NoRequestExecutedTwice => Property::NoRequestExecutedTwice,
        Rule::AnswersAreTheLogs => Property::NoAcknowledgedCommandLost,
    }
}

impl Ghost {
    /// The ground truth of a cluster whose members are `nodes`; with
    /// `lock_delays`, holders' actions are checked against lock-delays.
    pub(crate) fn new(nodes: impl IntoIterator<Item = NodeId>, lock_delays: bool) -> Ghost {
        Ghost {
            checker: Checker::new(Membership::of_voters(nodes)),
            lists: ListChecker::default(),
            applied: BTreeMap::new(),
            granted: BTreeMap::new(),
            own: BTreeMap::new(),
            leases: lock_delays.then(|| LeaseChecker::new(crate::world::DRIFT_PPM)),
            acted: BTreeMap::new(),
            shares: ShareChecker::default(),
            watches: None,
            watchers: BTreeMap::new(),
        }
    }

    pub(crate) fn violate(&mut self, property: Property, what: String) {
        self.own.entry(property).or_insert(what);
    }

    /// Whether any property is broken.
    pub(crate) fn violated(&self) -> bool {
        !self.own.is_empty() || !self.checker.broken().is_empty()
    }

    /// The first violation of each broken property.
    pub(crate) fn violations(&self) -> BTreeMap<Property, String> {
        let mut all = self.own.clone();
        for (rule, what) in self.checker.broken() {
            all.entry(property(*rule)).or_insert_with(|| what.clone());
        }
        all
    }

    /// Whether `property` still holds.
    pub(crate) fn kept(&self, property: Property) -> bool {
        !self.own.contains_key(&property)
            && !self
                .checker
                .broken()
                .keys()
                .any(|r| self::property(*r) == property)
    }

    /// A node (re)started from its journal: it has applied nothing yet.
    pub(crate) fn started(&mut self, node: NodeId, promised: Ballot) {
        self.applied.insert(node, 0);
        self.granted.retain(|(n, _), _| *n != node);
        self.checker.saw_promise(node, promised);
    }

    /// A node lost its disk: its promise legitimately starts again.
    pub(crate) fn disk_lost(&mut self, node: NodeId) {
        self.checker.forget_promises(node);
    }

    /// `node` became leader in `ballot` (see [`Checker::on_elected`]).
    pub(crate) fn on_elected(&mut self, node: NodeId, ballot: Ballot) {
        self.checker.on_elected(node, ballot);
    }

    /// A message leaves `from` (see [`Checker::on_send`]).
    pub(crate) fn on_send(&mut self, from: NodeId, message: &Message) {
        self.checker.on_send(from, message);
    }

    /// `node`'s journal made `write` durable (see [`Checker::on_durable`]).
    pub(crate) fn on_durable(&mut self, node: NodeId, write: &JournalWrite) {
        self.checker.on_durable(node, write);
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
        self.checker.on_apply(node, slot, value, results);
        self.events_applied(node, slot, results);
        for event in results.iter().flat_map(|a| &a.events) {
            if let Event::Granted { name, stamp, .. } = event {
                let key = (node, name.clone());
                if let Some(last) = self.granted.insert(key, *stamp).filter(|l| l >= stamp) {
                    let what = format!("{node}: lease {name} granted stamp {stamp} after {last}");
                    self.violate(Property::StampsGrow, what);
                }
            }
        }
    }

    /// A snapshot replaced `node`'s table up to `slot`.
    pub(crate) fn on_install(&mut self, node: NodeId, slot: Slot) {
        self.applied.insert(node, slot);
        self.granted.retain(|(n, _), _| *n != node);
    }

    /// A client was told `outcome` for its request, which it still waits
    /// for or not: the answer must be the log's (see
    /// [`Checker::on_client_answer`]), and the command it answers must be
    /// chosen (held durably by a quorum), so that no crash can lose it.
    pub(crate) fn on_acknowledged(
        &mut self,
        client: ClientId,
        request: u64,
        outcome: &Outcome,
        waiting: bool,
    ) {
        self.checker
            .on_client_answer(client, request, outcome, waiting);
        self.check_lists(client, request, outcome);
        if matches!(outcome, Outcome::Queued | Outcome::AlreadyAnswered)
            || matches!(outcome, Outcome::Refused(r) if r.is_invalid())
        {
            return;
        }
        let held = self
            .checker
            .chosen()
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

impl Ghost {
    /// A client sent list request `request` for the first time.
    pub(crate) fn list_sent(&mut self, client: ClientId, request: u64) {
        self.lists.on_sent(client, request);
    }

    /// What an answer tells the list check: a grant acknowledged, or a
    /// list that must show no holder older than those acknowledged before
    /// it was sent.
    fn check_lists(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        match outcome {
            Outcome::Granted { stamp, .. } => {
                self.lists.on_granted(crate::world::NAME, *stamp);
            }
            Outcome::Listed { leases, .. } => {
                if let Some(what) = self.lists.on_listed(client, request, leases).pop() {
                    self.violate(Property::ListsAreLinearizable, what);
                }
            }
            _ => {}
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
