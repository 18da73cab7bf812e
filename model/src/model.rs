//! The stateright model: which steps each state allows, and the
//! properties every reachable state must keep.

use crate::scenario::Scenario;
use crate::stages::Stage;
use crate::world::{Packet, State};
use crate::{Bounds, Property};
use stateright::Model;

/// One step the checker may take.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Deliver the in-flight packet at this index (the network is kept
    /// sorted, so the index names one packet of this state).
    Deliver(usize),
    /// Lose the packet at this index.
    Drop(usize),
    /// Send the packet at this index a second time.
    Duplicate(usize),
    /// Node `i`'s journal write becomes durable and the node hears of it.
    Sync(usize),
    /// Node `i` handles a tick at the present time.
    Tick(usize),
    /// Node `i` stops at once and starts again from its journal (messages
    /// it misses while down are the network's losses).
    Crash {
        /// The node.
        node: usize,
        /// Its write in flight reached the disk (the node never heard).
        write_survives: bool,
        /// Its disk is lost too.
        disk_lost: bool,
    },
    /// Client `c` starts its next operation.
    ClientStart(usize),
    /// Client `c` sends its unanswered request again, to the next node.
    ClientResend(usize),
    /// Real time advances one step.
    Advance,
    /// One event of the fixed prefix: the fault-free startup that elects
    /// the first leader, then the scenario's stages, if any (the only step
    /// possible until the prefix is over).
    Prefix,
}

/// The system under check: [`Bounds`] and the steps and properties they
/// allow. Its initial state is a new cluster with empty journals; a
/// deterministic prefix runs first (a fault-free startup, every write
/// synced at once and every message delivered in order, until the first
/// leader has taken over; then the stages of the [`Scenario`], if any),
/// and the checker explores every order of steps from there.
#[derive(Clone, Debug)]
pub struct LeaseModel {
    pub(crate) bounds: Bounds,
    init: State,
    /// The stages of the prefix: the startup, then the scenario's.
    pub(crate) stages: Vec<Stage>,
    /// Steps the deterministic prefix takes (to its end or a violation).
    pub prefix_steps: usize,
    /// Real time at which faults stop.
    gst: u32,
    /// Real time at which time stops.
    horizon: u32,
    pub(crate) tracing: bool,
}

impl LeaseModel {
    /// The model for `bounds`.
    ///
    /// # Panics
    /// When the bounds name no node or client, or the prefix never ends
    /// (a fault-free startup that elects no leader: a broken core; the
    /// prefix is deterministic).
    pub fn new(bounds: Bounds) -> LeaseModel {
        assert!(
            bounds.nodes > 0 && bounds.clients > 0,
            "a model needs a node and a client"
        );
        let mut stages = vec![Stage::Elect];
        stages.extend(bounds.scenario.map(Scenario::stages).unwrap_or_default());
        let mut model = LeaseModel {
            bounds,
            init: State::new(&bounds),
            stages,
            prefix_steps: 0,
            gst: u32::MAX,
            horizon: u32::MAX,
            tracing: false,
        };
        let (started, prefix_steps) = run_prefix(&model);
        model.prefix_steps = prefix_steps;
        model.gst = started.now + bounds.fault_steps;
        model.horizon = started.now + bounds.time_steps;
        model
    }

    /// Performs the next event of the prefix; once the last stage is over,
    /// the search takes over (and a cut heals when the faults stop).
    pub(crate) fn prefix_step(&self, state: &mut State) {
        while let Some(index) = state.prefix {
            let first = !state.stage_begun;
            state.stage_begun = true;
            if state.stage_step(&self.bounds, self.stages[index], first) {
                return;
            }
            state.stage_begun = false;
            state.prefix = (index + 1 < self.stages.len()).then_some(index + 1);
        }
        state.cut_until = self.gst;
    }

    /// The same model, recording what each step did (for [`crate::explain`]).
    pub fn traced(mut self) -> LeaseModel {
        self.tracing = true;
        self.init.tracing = true;
        self
    }

    fn faults_on(&self, state: &State) -> bool {
        state.now < self.gst
    }

    /// Nothing in flight, every node up and ticked: after the faults,
    /// time only moves on from such a state.
    fn quiescent(state: &State) -> bool {
        state.network.is_empty()
            && state.nodes.iter().all(|n| {
                n.removed || (n.core.is_some() && n.writing.is_none() && n.ticked == state.now)
            })
    }
}

/// Runs the prefix to its end, or to a violation; returns the state it
/// ends in and how many steps it took.
fn run_prefix(model: &LeaseModel) -> (State, usize) {
    let mut state = State::new(&model.bounds);
    for steps in 0..100_000 {
        if state.prefix.is_none() || state.violated() || state.believers().len() > 1 {
            return (state, steps);
        }
        model.prefix_step(&mut state);
        state.observe();
    }
    panic!("the prefix never ended: {state:?}");
}

impl Model for LeaseModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![self.init.clone()]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        if state.violated() || state.believers().len() > 1 {
            return;
        }
        if state.prefix.is_some() {
            actions.push(Action::Prefix);
            return;
        }
        let faults = self.faults_on(state);
        for (i, (key, _)) in state.network.iter().enumerate() {
            if i > 0 && state.network[i - 1].0 == *key {
                continue;
            }
            actions.push(Action::Deliver(i));
            if faults && state.drops_left > 0 {
                actions.push(Action::Drop(i));
            }
            if faults && state.duplicates_left > 0 {
                actions.push(Action::Duplicate(i));
            }
        }
        for (i, node) in state.nodes.iter().enumerate() {
            if node.core.is_none() {
                continue;
            }
            if node.writing.is_some() {
                actions.push(Action::Sync(i));
            }
            if node.ticked < state.now {
                actions.push(Action::Tick(i));
            }
            if faults && state.crashes_left > 0 {
                actions.push(Action::Crash {
                    node: i,
                    write_survives: false,
                    disk_lost: false,
                });
                if node.writing.is_some() {
                    actions.push(Action::Crash {
                        node: i,
                        write_survives: true,
                        disk_lost: false,
                    });
                }
                if state.disk_losses_left > 0 {
                    actions.push(Action::Crash {
                        node: i,
                        write_survives: false,
                        disk_lost: true,
                    });
                }
            }
        }
        let quiet = Self::quiescent(state);
        for (c, client) in state.clients.iter().enumerate() {
            if client.commands_left > 0 && client.waiting.is_none() {
                actions.push(Action::ClientStart(c));
            }
            // During the faults a resend is a late duplicate; after them it
            // is how a client whose node went away gets its answer.
            let resend = if faults {
                state.resends_left > 0 && client.waiting.is_some_and(|(_, queued)| !queued)
            } else {
                quiet && client.waiting.is_some()
            };
            if resend {
                actions.push(Action::ClientResend(c));
            }
        }
        if state.now < self.horizon && (faults || quiet) {
            actions.push(Action::Advance);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        state.notes.clear();
        let bounds = &self.bounds;
        let touched = match action {
            Action::Deliver(i) => match &state.network[i].1 {
                Packet::Peer { to, .. } => Some(*to),
                Packet::Request { node, .. } => Some(*node),
                Packet::Answer { .. } => None,
            },
            Action::Sync(i) | Action::Tick(i) | Action::Crash { node: i, .. } => Some(i),
            _ => None,
        };
        match action {
            Action::Deliver(i) => {
                if touched.is_some_and(|n| state.nodes[n].core.is_none()) {
                    state.network.remove(i);
                } else {
                    state.deliver(i);
                }
            }
            Action::Drop(i) => {
                state.drops_left -= 1;
                state.network.remove(i);
            }
            Action::Duplicate(i) => {
                state.duplicates_left -= 1;
                let packet = state.network[i].1.clone();
                state.send(packet);
            }
            Action::Sync(i) => state.sync(i),
            Action::Tick(i) => {
                state.nodes[i].ticked = state.now;
                state.step(i, |core, now| core.tick(now));
            }
            Action::Crash {
                node,
                write_survives,
                disk_lost,
            } => {
                state.crash(node, write_survives, disk_lost);
                state.start_node(bounds, node);
            }
            Action::ClientStart(c) => state.client_start(c),
            Action::ClientResend(c) => {
                if self.faults_on(&state) {
                    state.resends_left -= 1;
                }
                state.client_resend(c);
            }
            Action::Advance => state.now += 1,
            Action::Prefix => self.prefix_step(&mut state),
        }
        if let Some(i) = touched {
            state.refresh(i);
        }
        state.observe();
        Some(state)
    }

    fn properties(&self) -> Vec<stateright::Property<Self>> {
        use stateright::Property as P;
        fn kept(state: &State, property: Property) -> bool {
            state.ghost.kept(property)
        }
        vec![
            P::always(Property::OneValuePerSlot.name(), |_, s| {
                kept(s, Property::OneValuePerSlot)
            }),
            P::always(Property::ApplyChosenInOrder.name(), |_, s| {
                kept(s, Property::ApplyChosenInOrder)
            }),
            P::always(Property::PromisesNeverGoBack.name(), |_, s| {
                kept(s, Property::PromisesNeverGoBack)
            }),
            P::always(Property::DurableBeforeAnnounced.name(), |_, s| {
                kept(s, Property::DurableBeforeAnnounced)
            }),
            P::always(Property::NoAcknowledgedCommandLost.name(), |_, s| {
                kept(s, Property::NoAcknowledgedCommandLost)
            }),
            P::always(Property::OneHolderAtATime.name(), |_, s: &State| {
                s.believers().len() <= 1
            }),
            P::always(Property::StampsGrow.name(), |_, s| {
                kept(s, Property::StampsGrow)
            }),
            P::always(Property::NoRequestExecutedTwice.name(), |_, s| {
                kept(s, Property::NoRequestExecutedTwice)
            }),
            P::always(Property::NoNodeStops.name(), |_, s| {
                kept(s, Property::NoNodeStops)
            }),
            P::always(Property::ListsAreLinearizable.name(), |_, s| {
                kept(s, Property::ListsAreLinearizable)
            }),
            P::always(Property::LockDelayHonoured.name(), |_, s| {
                kept(s, Property::LockDelayHonoured)
            }),
            P::always(Property::SharesWithinTheirLimits.name(), |_, s| {
                kept(s, Property::SharesWithinTheirLimits)
            }),
            P::always(Property::NoReaderOvertakesAQueuedWriter.name(), |_, s| {
                kept(s, Property::NoReaderOvertakesAQueuedWriter)
            }),
            P::always(Property::WatchersGetTheLog.name(), |_, s| {
                kept(s, Property::WatchersGetTheLog)
            }),
            P::always(Property::OneLeaderPerBallot.name(), |_, s| {
                kept(s, Property::OneLeaderPerBallot)
            }),
            P::always(Property::OneMembershipChangeAtATime.name(), |_, s| {
                kept(s, Property::OneMembershipChangeAtATime)
            }),
            P::always(Property::SnapshotsAgree.name(), |_, s| {
                kept(s, Property::SnapshotsAgree)
            }),
            P::eventually(Property::EveryCommandAnswered.name(), |_, s: &State| {
                s.clients
                    .iter()
                    .all(|c| c.commands_left == 0 && c.waiting.is_none())
            }),
        ]
    }
}
