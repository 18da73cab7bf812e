//! Membership changes during a run (`--reconfig`): the cluster grows (a
//! new node joins as a learner and is promoted), shrinks (a voter, often
//! the leader, is removed) and replaces nodes, while every other fault
//! goes on. Changes are asked of the leader's real core, which refuses
//! what its rules refuse; now and then a second change follows at once,
//! which the one-at-a-time rule must refuse.

use super::{Event, MS, World};
use trexlock_paxos::{Change, Membership, NodeId};

/// Node slots the world keeps for nodes that join during a run.
pub(super) const EXTRA_NODES: usize = 3;

impl World {
    /// One reconfiguration step, then the next one scheduled.
    pub(super) fn reconfigure(&mut self) {
        if !self.faults_on {
            return;
        }
        let next = self.rng.u64(150 * MS..600 * MS);
        self.schedule(next, Event::Reconfig);
        let Some(leader) = self.leader_index().filter(|l| self.runnable(*l)) else {
            return;
        };
        let Some(membership) = self.nodes[leader]
            .core
            .as_ref()
            .map(|c| c.membership().clone())
        else {
            return;
        };
        let Some(change) = self.pick_change(leader, &membership) else {
            return;
        };
        self.ask_change(leader, change);
        if self.rng.f64() < 0.3 && membership.voters.len() > self.min_voters() {
            // Straight after: one at a time means this one is refused.
            let voters: Vec<NodeId> = membership.voters.iter().copied().collect();
            let node = voters[self.rng.usize(0..voters.len())];
            self.ask_change(leader, Change::Remove { node });
        }
    }

    fn pick_change(&mut self, leader: usize, m: &Membership) -> Option<Change> {
        if let Some(learner) = m.learners.iter().next() {
            return Some(Change::Promote { node: *learner });
        }
        let min_voters = self.min_voters();
        let max_voters = (self.opts.nodes + 2).min(trexlock_paxos::MAX_VOTERS);
        let unborn = self.nodes.iter().position(|n| !n.born);
        let voters: Vec<NodeId> = m.voters.iter().copied().collect();
        match self.rng.u32(0..4) {
            0 | 1 if m.voters.len() < max_voters => {
                let j = unborn?;
                self.birth(j, m);
                let node = self.nodes[j].id;
                Some(Change::AddLearner {
                    node,
                    address: format!("sim:{node}"),
                })
            }
            2 if m.voters.len() > min_voters => Some(Change::Remove {
                node: voters[self.rng.usize(0..voters.len())],
            }),
            _ if m.voters.len() > min_voters => Some(Change::Remove {
                node: self.nodes[leader].id,
            }),
            _ => None,
        }
    }

    /// Fewer voters than this would leave a cluster that one disk loss
    /// stops for good (a relearning voter needs a majority without it).
    fn min_voters(&self) -> usize {
        self.opts.nodes.min(3)
    }

    /// Starts node `j` for the first time, as a node that joins: its
    /// bootstrap list names the voters it can reach, not itself.
    fn birth(&mut self, j: usize, m: &Membership) {
        self.nodes[j].born = true;
        self.nodes[j].bootstrap = m.voters.iter().copied().collect();
        self.start_node(j);
    }

    fn ask_change(&mut self, leader: usize, change: Change) {
        let mut asked = None;
        self.step(leader, |core, now| {
            asked = Some(core.change_members(now, change));
            Ok(())
        });
        if matches!(asked, Some(Ok(()))) {
            self.outcome.changes += 1;
        }
    }

    /// The membership of the node that knows the most of the log: whom
    /// liveness and durability are checked on.
    pub(super) fn current_membership(&self) -> Option<Membership> {
        self.nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .max_by_key(|c| c.replica().committed())
            .map(|c| c.membership().clone())
    }

    /// True when node `i` must take part in the final checks: it was
    /// started, was not removed, and is in the current membership.
    pub(super) fn is_live_member(&self, i: usize, membership: Option<&Membership>) -> bool {
        let n = &self.nodes[i];
        n.born && !n.removed && membership.is_none_or(|m| m.contains(n.id))
    }
}
