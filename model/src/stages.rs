//! The stages a scenario's prefix is made of, and how each performs its
//! events: ordinary events only (a request, a partition, a crash, an
//! operator's membership change, time passing with everything settling),
//! each through the real cores.

use crate::Bounds;
use crate::world::{Packet, State};
use trexlock_lease::watch::WatchId;
use trexlock_lease::{Effect, PeerMessage};
use trexlock_paxos::{Change, Message, NodeId};

/// A node named by its role when the stage runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Who {
    /// The node that leads.
    Leader,
    /// The follower with the highest id.
    Follower,
    /// The node that is neither the leader nor cut off.
    Voter,
    /// The node cut off.
    CutOff,
}

/// One stage of a prefix; each step of the prefix performs one event of
/// its stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stage {
    /// The fault-free startup: time passes, every node ticks, and every
    /// write and message completes in order, until a leader has taken
    /// over and every node applied its first slot.
    Elect,
    /// Client `c` starts its next operation and sends it to the node
    /// (from now on its home), where it arrives.
    Request(usize, Who),
    /// The node is cut off from its peers (any earlier cut heals): what
    /// either side sends across is lost; what was in flight stays in
    /// flight, to arrive late or never.
    Cut(Who),
    /// Every write syncs and every message not crossing the cut arrives.
    Settle,
    /// Client `c` asks the node which leases are held (the request is
    /// sent, not yet delivered).
    List(usize, Who),
    /// The node crashes, losing its disk, and restarts.
    Crash(Who),
    /// A watcher asks the node for every event from now on.
    Watch(Who),
    /// Time advances one step; every node ticks and everything settles.
    Pass,
    /// The leader is asked to add node `n` as a learner.
    AddLearner(u16),
    /// The leader is asked to remove the node.
    Remove(Who),
    /// The node crashes, keeping its disk, and restarts.
    Restart(Who),
    /// Every write syncs and every message arrives, until the leader
    /// knows a membership change chosen.
    SettleUntilChanged,

    /// Time passes with every node ticking and everything settling, until
    /// a node not cut off is due to start an election; nobody has ticked
    /// at that instant yet, so the search decides who goes first.
    UntilElection,
}

impl Who {
    fn describe(self) -> &'static str {
        match self {
            Who::Leader => "the leader",
            Who::Follower => "the follower",
            Who::Voter => "the voter",
            Who::CutOff => "the node cut off",
        }
    }
}

impl Stage {
    pub(crate) fn describe(self) -> String {
        match self {
            Stage::Elect => "the fault-free startup".into(),
            Stage::Request(c, who) => {
                format!("client {c}'s next request reaches {}", who.describe())
            }
            Stage::Cut(who) => format!("{} is cut off from its peers", who.describe()),
            Stage::Settle => "every write syncs, every message not crossing the cut arrives".into(),
            Stage::List(c, who) => {
                format!("client {c} sends a list request to {}", who.describe())
            }
            Stage::Crash(who) => format!("{} crashes and loses its disk", who.describe()),
            Stage::Watch(who) => format!("a watcher watches {}", who.describe()),
            Stage::Pass => "time advances one step, every node ticks, all settles".into(),
            Stage::AddLearner(n) => format!("the leader is asked to add n{n} as a learner"),
            Stage::Remove(who) => format!("the leader is asked to remove {}", who.describe()),
            Stage::Restart(who) => {
                format!("{} crashes and restarts from its journal", who.describe())
            }
            Stage::SettleUntilChanged => {
                "everything settles until the leader knows the change chosen".into()
            }

            Stage::UntilElection => "time passes until an election is due".into(),
        }
    }
}

impl State {
    /// Asks the leader, if any, for `change` (it may refuse: nothing is
    /// proposed then).
    fn ask_change(&mut self, change: Change) {
        let Some(leader) = self.resolve(Who::Leader) else {
            return;
        };
        let mut asked = None;
        self.step(leader, |core, now| {
            asked = Some(core.change_members(now, change));
            Ok(())
        });
        self.refresh(leader);
        let id = self.nodes[leader].id;
        self.note(|| format!("  {id} answers the change: {asked:?}"));
    }

    fn resolve(&self, who: Who) -> Option<usize> {
        let leader = self
            .nodes
            .iter()
            .position(|n| n.core.as_ref().is_some_and(|c| c.status().is_leader));
        match who {
            Who::Leader => leader,
            Who::Follower => (0..self.nodes.len())
                .rev()
                .find(|i| Some(*i) != leader && self.nodes[*i].core.is_some()),
            Who::Voter => {
                (0..self.nodes.len()).find(|i| Some(*i) != leader && Some(*i) != self.cut)
            }
            Who::CutOff => self.cut,
        }
    }

    /// One event of the fault-free settling: the first write in flight
    /// syncs, else the first packet not crossing the cut arrives. False
    /// when there is nothing left to settle.
    pub(crate) fn settle_one(&mut self) -> bool {
        if let Some(i) = self.nodes.iter().position(|n| n.writing.is_some()) {
            self.sync(i);
            self.refresh(i);
            return true;
        }
        let Some(index) = self.network.iter().position(|(_, p)| !self.crosses_cut(p)) else {
            return false;
        };
        let to = match &self.network[index].1 {
            Packet::Peer { to, .. } => Some(*to),
            Packet::Request { node, .. } => Some(*node),
            Packet::Answer { .. } => None,
        };
        if to.is_some_and(|n| self.nodes[n].core.is_none()) {
            self.network.remove(index);
        } else {
            self.deliver(index);
        }
        if let Some(i) = to {
            self.refresh(i);
        }
        true
    }

    /// Every node that has not ticked at the present instant ticks.
    fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].ticked < self.now {
                self.nodes[i].ticked = self.now;
                self.step(i, |core, now| core.tick(now));
                self.refresh(i);
            }
        }
    }

    /// Whether a node not cut off would start an election if it ticked
    /// now (tried on a copy of its core).
    fn election_due(&self) -> bool {
        self.nodes.iter().enumerate().any(|(i, node)| {
            let Some(core) = node.core.as_ref() else {
                return false;
            };
            if Some(i) == self.cut || node.ticked >= self.now {
                return false;
            }
            let before = core.replica().promised();
            let mut copy = core.clone();
            let now = crate::world::local(i, false, self.now);
            let ticked = copy.tick(now).and_then(|()| copy.end_round(now)).is_ok();
            // A campaign raises the promise, or (in its own ballot again)
            // at least sends a Prepare.
            let prepares = copy.take_effects().iter().any(|e| {
                matches!(
                    e,
                    Effect::Send {
                        message: PeerMessage::Paxos(Message::Prepare { .. }),
                        ..
                    }
                )
            });
            ticked && (copy.replica().promised() > before || prepares)
        })
    }

    fn startup_settled(&self) -> bool {
        let cores: Vec<_> = self.nodes.iter().filter_map(|n| n.core.as_ref()).collect();
        let leader = cores
            .iter()
            .find(|c| c.status().is_leader)
            .map(|c| c.replica().id());
        leader.is_some()
            && cores.len() == self.nodes.len()
            && cores
                .iter()
                .all(|c| c.status().leader == leader && c.status().applied > 0)
    }

    /// Client `c` starts its next operation, sent to node `home` (its home
    /// from now on), where it arrives at once.
    fn request_reaches(&mut self, c: usize, home: usize) {
        self.clients[c].home = home;
        self.client_start(c);
        let session = self.clients[c].core.id();
        let index = self.network.iter().position(
            |(_, p)| matches!(p, Packet::Request { request, .. } if request.client == session),
        );
        if let Some(index) = index {
            self.deliver(index);
            self.refresh(home);
        }
    }

    /// Performs one event of `stage` (`first`: its first); returns false
    /// when the stage is over and did nothing.
    pub(crate) fn stage_step(&mut self, bounds: &Bounds, stage: Stage, first: bool) -> bool {
        match stage {
            Stage::Settle => self.settle_one(),
            Stage::SettleUntilChanged => !self.leader_changed_members() && self.settle_one(),
            Stage::Pass => self.pass_step(first),
            Stage::Elect => self.elect_step(),
            Stage::UntilElection => self.until_election_step(),
            once => {
                if first {
                    self.perform_once(bounds, once);
                }
                first
            }
        }
    }

    /// The one event of a stage that has one.
    fn perform_once(&mut self, bounds: &Bounds, stage: Stage) {
        match stage {
            Stage::Request(c, who) => {
                if let Some(home) = self.resolve(who) {
                    self.request_reaches(c, home);
                }
            }
            Stage::List(c, who) => {
                if let Some(node) = self.resolve(who) {
                    self.client_list(c, node);
                }
            }
            Stage::Cut(who) => {
                self.cut = None;
                self.cut = self.resolve(who);
                let cut = self.cut.map(|i| self.nodes[i].id);
                self.note(|| format!("  cut off: {cut:?}"));
            }
            Stage::Crash(who) | Stage::Restart(who) => {
                let disk_lost = matches!(stage, Stage::Crash(_));
                if let Some(i) = self.resolve(who) {
                    self.crashes_left += 1;
                    self.disk_losses_left += usize::from(disk_lost);
                    self.crash(i, false, disk_lost);
                    self.start_node(bounds, i);
                    self.refresh(i);
                }
            }
            Stage::Watch(who) => {
                if let Some(i) = self.resolve(who) {
                    let id = WatchId(1);
                    let request = self.ghost.watch_requested(id);
                    self.step(i, |core, _| {
                        core.watch(id, request);
                        Ok(())
                    });
                    self.refresh(i);
                }
            }
            Stage::AddLearner(n) => {
                let node = NodeId(n);
                let address = format!("model:{node}");
                self.ask_change(Change::AddLearner { node, address });
            }
            Stage::Remove(who) => {
                if let Some(i) = self.resolve(who) {
                    let node = self.nodes[i].id;
                    self.ask_change(Change::Remove { node });
                }
            }
            Stage::Settle
            | Stage::SettleUntilChanged
            | Stage::Pass
            | Stage::Elect
            | Stage::UntilElection => {}
        }
    }

    /// Whether the leader knows a membership change chosen.
    fn leader_changed_members(&self) -> bool {
        self.resolve(Who::Leader).is_some_and(|i| {
            let core = self.nodes[i].core.as_ref();
            core.is_some_and(|c| c.membership().voters.len() != self.nodes.len())
        })
    }

    /// One event of [`Stage::Pass`]: time advances, then everything
    /// settles and every node ticks.
    fn pass_step(&mut self, first: bool) -> bool {
        if first {
            self.now += 1;
            return true;
        }
        if self.settle_one() {
            return true;
        }
        let due = self
            .nodes
            .iter()
            .any(|n| n.core.is_some() && n.ticked < self.now);
        self.tick_all();
        due
    }

    /// One event of [`Stage::Elect`].
    fn elect_step(&mut self) -> bool {
        if self.settle_one() {
            return true;
        }
        if self.startup_settled() {
            return false;
        }
        self.now += 1;
        self.tick_all();
        true
    }

    /// One event of [`Stage::UntilElection`].
    fn until_election_step(&mut self) -> bool {
        if self.settle_one() {
            return true;
        }
        if self.nodes.iter().all(|n| n.ticked >= self.now) {
            self.now += 1;
            return true;
        }
        if self.election_due() {
            return false;
        }
        self.tick_all();
        true
    }
}
