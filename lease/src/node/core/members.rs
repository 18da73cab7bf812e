//! Membership at the node: proposing changes through the replica, the
//! members' roles and lag, following the committed membership, and
//! stopping once removed.

use super::NodeCore;
use crate::error::NodeError;
use std::time::Duration;
use trexlock_paxos::{Change, ChangeError, Membership, NodeId, Slot};

/// What a member does in the membership in effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// Its votes count.
    Voter,
    /// It receives the log; its votes do not count.
    Learner,
}

/// One member as the node reports it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MemberInfo {
    /// Its id.
    pub node: NodeId,
    /// Voter or learner.
    pub role: Role,
    /// Where it listens, when the membership records it.
    pub address: Option<String>,
    /// How many slots it is behind the leader's commit index, as the
    /// leader last heard (`None` when this node does not lead, or has not
    /// heard from it yet).
    pub lag: Option<Slot>,
}

impl NodeCore {
    /// Proposes a membership change (only the leader does; see
    /// [`trexlock_paxos::Replica::change_membership`] for the rules).
    ///
    /// # Errors
    /// A [`ChangeError`] saying why nothing was proposed.
    pub fn change_members(&mut self, now: Duration, change: Change) -> Result<(), ChangeError> {
        self.now = now;
        tracing::info!(node = %self.cfg.node, ?change, "membership change proposed");
        let ready = self.replica.change_membership(now, change)?;
        self.perform(ready).map_err(|e| {
            tracing::error!(node = %self.cfg.node, error = %e, "membership change stopped the node");
            ChangeError::Stopped
        })
    }

    /// The newest chosen membership, with each member's role, address and
    /// (at the leader) lag.
    pub fn members(&self) -> Vec<MemberInfo> {
        let membership = self.replica.membership();
        let progress = self.replica.peer_progress();
        let committed = self.replica.committed();
        let lag = |node: NodeId| {
            if node == self.cfg.node && self.replica.is_leader() {
                return Some(0);
            }
            progress
                .iter()
                .find(|(n, _)| *n == node)
                .map(|(_, at)| committed.saturating_sub(*at))
        };
        let info = |node: NodeId, role: Role| MemberInfo {
            node,
            role,
            address: membership.addresses.get(&node).cloned(),
            lag: lag(node),
        };
        let voters = membership.voters.iter().map(|n| info(*n, Role::Voter));
        let learners = membership.learners.iter().map(|n| info(*n, Role::Learner));
        voters.chain(learners).collect()
    }

    /// The newest chosen membership.
    pub fn membership(&self) -> &Membership {
        self.replica.membership()
    }

    /// Logs a membership the node now follows, and stops a node that was
    /// removed (it must serve nothing more: its votes no longer count, and
    /// its table stops at its removal).
    pub(super) fn follow_membership(&mut self) -> Result<(), NodeError> {
        let membership = self.replica.membership();
        if self.followed.as_ref() != Some(membership) {
            tracing::info!(
                node = %self.cfg.node,
                voters = ?membership.voters,
                learners = ?membership.learners,
                effective = self.replica.membership_effective(),
                "following the committed membership"
            );
            self.followed = Some(membership.clone());
        }
        if self.replica.is_removed() {
            let slot = self.replica.committed();
            tracing::warn!(node = %self.cfg.node, slot, "removed from the membership: stopping");
            return Err(NodeError::Removed {
                node: self.cfg.node,
                slot,
            });
        }
        Ok(())
    }
}
