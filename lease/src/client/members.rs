//! Membership changes from a client: list the members with their roles
//! and lag, add a learner, promote it, remove a member.
//!
//! Only the leader proposes a change (one at a time, a learner promoted
//! only once caught up, never one that leaves the reachable voters short
//! of a majority: see [`trexlock_paxos::Replica::change_membership`]). A
//! change returns once the cluster has chosen it; it governs the log
//! [`trexlock_paxos::CONFIG_DELAY`] slots later, which the leader fills at
//! once when idle: a change returns once it is in effect, so the next
//! one can follow at once.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_lease::client::{MemberError, MemberRefusal};
//! use trexlock_lease::{InProcessNetwork, Node, NodeConfig, Role};
//! use trexlock_paxos::{MemJournal, NodeId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = InProcessNetwork::new();
//! let inbox = network.register(NodeId(1));
//! let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
//! let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
//! node.wait_for_leader(Duration::from_secs(5)).await;
//! let ops = node.client("ops");
//! let list = ops.members().await?;
//! assert_eq!((list.members[0].node, list.members[0].role), (NodeId(1), Role::Voter));
//! let refused = ops.remove(NodeId(2)).await.unwrap_err();
//! assert_eq!(refused, MemberError::Refused(MemberRefusal::UnknownNode(NodeId(2))));
//! let refused = ops.add_learner(NodeId(2), "node-2:7000").await.unwrap_err();
//! assert!(matches!(refused, MemberError::Refused(MemberRefusal::BadAddress(_))));
//! # Ok(()) }
//! ```

use super::LeaseClient;
use crate::error::LeaseError;
use crate::node::{Call, MemberInfo, NodeCore};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use trexlock_paxos::{Change, ChangeError, NodeId, Slot};

/// The members as one node reported them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberList {
    /// The node that answered.
    pub node: NodeId,
    /// The leader it knows (itself when it leads).
    pub leader: Option<NodeId>,
    /// Its commit index.
    pub committed: Slot,
    /// The slot from which the newest chosen membership governs (it may
    /// still be ahead of `committed`: a change under way).
    pub effective: Slot,
    /// Voters first, then learners, each in id order. Lags are known only
    /// when the answering node leads.
    pub members: Vec<MemberInfo>,
}

/// Why a node refused a membership request. Nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum MemberRefusal {
    /// Only the leader proposes changes; ask it.
    #[error("not the leader (the leader is {leader:?})")]
    NotLeader {
        /// The leader the node knows, if any.
        leader: Option<NodeId>,
    },
    /// A learner is promoted only once it holds the log up to the
    /// leader's commit index (give it time, or check it runs).
    #[error("learner {node} is not caught up: it holds slots up to {at}, the leader {committed}")]
    NotCaughtUp {
        /// The learner.
        node: NodeId,
        /// The highest slot it acknowledged.
        at: Slot,
        /// The leader's commit index.
        committed: Slot,
    },
    /// After the change, the voters the leader hears from would not form a
    /// majority: the cluster would stop. Bring members back first.
    #[error("the change would lose quorum: {reachable} reachable voters where {needed} are needed")]
    WouldLoseQuorum {
        /// Voters of the new membership the leader heard recently.
        reachable: usize,
        /// Their majority.
        needed: usize,
    },
    /// Another change is proposed or not yet in effect: one at a time.
    #[error("a membership change is already in progress (in effect from slot {effective})")]
    ChangeInProgress {
        /// Where the pending change takes effect (0 while still proposed).
        effective: Slot,
    },
    /// The node is not a member.
    #[error("unknown node {0}: not a member")]
    UnknownNode(NodeId),
    /// The node is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// Only a learner can be promoted.
    #[error("{0} is not a learner")]
    NotALearner(NodeId),
    /// A replicated cluster keeps at least two voters.
    #[error("a replicated cluster keeps at least two voters")]
    TooFewVoters,
    /// Too many voters or members.
    #[error("too many members: {0}")]
    TooManyMembers(String),
    /// The address is not `ip:port` (nodes dial members by it).
    #[error("bad address {0:?}: a member's address is ip:port")]
    BadAddress(String),
    /// This connection may not change the membership: over TLS only an
    /// administrator's certificate may; over plain TCP only a node that
    /// listens on loopback lets clients.
    #[error(
        "not permitted: only an administrator's certificate (trexlock://<cluster>/admin/<name>), a client in a node's own process, or a loopback client of a loopback node may change members"
    )]
    NotPermitted,
    /// The node is stopped (or was removed).
    #[error("the node is stopped")]
    Stopped,
    /// The node is answering as many membership requests as it takes at
    /// once: try again.
    #[error("the node is busy with other membership requests")]
    Busy,
}

impl From<ChangeError> for MemberRefusal {
    fn from(error: ChangeError) -> MemberRefusal {
        match error {
            ChangeError::NotLeader { leader } => MemberRefusal::NotLeader { leader },
            ChangeError::ChangePending { effective } => {
                MemberRefusal::ChangeInProgress { effective }
            }
            ChangeError::AlreadyMember(node) => MemberRefusal::AlreadyMember(node),
            ChangeError::NotALearner(node) => MemberRefusal::NotALearner(node),
            ChangeError::NotAMember(node) => MemberRefusal::UnknownNode(node),
            ChangeError::LearnerBehind {
                node,
                at,
                committed,
            } => MemberRefusal::NotCaughtUp {
                node,
                at,
                committed,
            },
            ChangeError::WouldLoseQuorum { reachable, needed } => {
                MemberRefusal::WouldLoseQuorum { reachable, needed }
            }
            ChangeError::TooFewVoters => MemberRefusal::TooFewVoters,
            ChangeError::TooManyMembers => MemberRefusal::TooManyMembers(error.to_string()),
            ChangeError::BadAddress => MemberRefusal::BadAddress(String::new()),
            ChangeError::Stopped => MemberRefusal::Stopped,
        }
    }
}

/// Why a membership call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemberError {
    /// A node refused it, saying why; nothing was proposed.
    #[error("membership change refused: {0}")]
    Refused(MemberRefusal),
    /// The cluster could not be asked, or did not choose the change in
    /// time ([`LeaseError::Timeout`]: it may still take effect; list the
    /// members before trying again).
    #[error(transparent)]
    Cluster(LeaseError),
}

/// A membership call to a node task (or to a remote link, which asks the
/// cluster's nodes).
pub(crate) enum MemberCall {
    List {
        reply: oneshot::Sender<Result<MemberList, MemberError>>,
    },
    Change {
        change: Change,
        reply: oneshot::Sender<Result<(), MemberError>>,
    },
}

/// Checks what the node layer needs of a change before it is proposed: an
/// added member's address must be one the transport can dial.
pub(crate) fn check(change: &Change) -> Result<(), MemberRefusal> {
    match change {
        Change::AddLearner { address, .. } if address.parse::<SocketAddr>().is_err() => {
            Err(MemberRefusal::BadAddress(address.clone()))
        }
        _ => Ok(()),
    }
}

/// What `core` answers a list request at `now`.
pub(crate) fn list(core: &NodeCore, now: Duration) -> MemberList {
    let replica = core.replica();
    MemberList {
        node: replica.id(),
        leader: replica.live_leader(now),
        committed: replica.committed(),
        effective: replica.membership_effective(),
        members: core.members(),
    }
}

/// Proposes `change` at `core` (the leader), after the node layer's own
/// checks.
pub(crate) fn propose(
    core: &mut NodeCore,
    now: Duration,
    change: Change,
) -> Result<(), MemberRefusal> {
    check(&change)?;
    if core.replica().is_stopped() {
        return Err(MemberRefusal::Stopped);
    }
    core.change_members(now, change)
        .map_err(MemberRefusal::from)
}

/// How often a change is checked for being chosen.
const CHOSEN_POLL: Duration = Duration::from_millis(50);

impl LeaseClient {
    /// The members of the newest chosen membership: voters and learners,
    /// their addresses and (from the leader) how many slots each is behind.
    /// A remote client asks the leader when it can reach it.
    ///
    /// # Errors
    /// [`MemberError::Cluster`] when no node answered in time.
    pub async fn members(&self) -> Result<MemberList, MemberError> {
        let (reply, answer) = oneshot::channel();
        self.member_call(MemberCall::List { reply }, answer).await
    }

    /// Adds `node`, listening at `address` (`ip:port`), as a learner: it
    /// receives the log and does not vote. Start it (with the cluster's
    /// current members as its peers) before or after; promote it once it
    /// has caught up.
    ///
    /// # Errors
    /// [`MemberError::Refused`] naming why (not the leader, a change
    /// already in progress, already a member, a bad address, not
    /// permitted); [`MemberError::Cluster`] when the cluster did not
    /// answer or choose it in time.
    pub async fn add_learner(&self, node: NodeId, address: &str) -> Result<(), MemberError> {
        let change = Change::AddLearner {
            node,
            address: address.to_owned(),
        };
        self.change_members(change).await
    }

    /// Makes learner `node` a voter, once it has caught up with the log.
    ///
    /// # Errors
    /// As [`LeaseClient::add_learner`], and
    /// [`MemberRefusal::NotCaughtUp`], [`MemberRefusal::NotALearner`],
    /// [`MemberRefusal::WouldLoseQuorum`] (the learner is not heard from).
    pub async fn promote(&self, node: NodeId) -> Result<(), MemberError> {
        self.change_members(Change::Promote { node }).await
    }

    /// Removes voter or learner `node`. Removing the leader makes it hand
    /// over once the change is in effect. A removed node stops serving;
    /// wipe its data before adding it back.
    ///
    /// # Errors
    /// As [`LeaseClient::add_learner`], and [`MemberRefusal::UnknownNode`],
    /// [`MemberRefusal::WouldLoseQuorum`], [`MemberRefusal::TooFewVoters`].
    pub async fn remove(&self, node: NodeId) -> Result<(), MemberError> {
        self.change_members(Change::Remove { node }).await
    }

    /// Proposes `change`, then waits until a node reports it chosen and in
    /// effect.
    async fn change_members(&self, change: Change) -> Result<(), MemberError> {
        check(&change).map_err(MemberError::Refused)?;
        let deadline = tokio::time::Instant::now() + self.inner.call_timeout;
        let (reply, answer) = oneshot::channel();
        let call = MemberCall::Change {
            change: change.clone(),
            reply,
        };
        self.member_call(call, answer).await?;
        loop {
            if let Ok(list) = self.members().await
                && is_chosen(&list, &change)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() + CHOSEN_POLL >= deadline {
                return Err(MemberError::Cluster(LeaseError::Timeout));
            }
            tokio::time::sleep(CHOSEN_POLL).await;
        }
    }

    async fn member_call<T>(
        &self,
        call: MemberCall,
        answer: oneshot::Receiver<Result<T, MemberError>>,
    ) -> Result<T, MemberError> {
        let stopped = MemberError::Cluster(LeaseError::Stopped);
        self.inner
            .node
            .calls
            .send(Call::Members(call))
            .await
            .map_err(|_| stopped.clone())?;
        match tokio::time::timeout(self.inner.call_timeout, answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(stopped),
            Err(_) => Err(MemberError::Cluster(LeaseError::Timeout)),
        }
    }
}

/// True when `list` shows `change` chosen and in effect (so the next
/// change is not refused as one in progress).
fn is_chosen(list: &MemberList, change: &Change) -> bool {
    if list.committed.saturating_add(1) < list.effective {
        return false;
    }
    let role = |node: &NodeId| {
        list.members
            .iter()
            .find(|m| m.node == *node)
            .map(|m| m.role)
    };
    match change {
        Change::AddLearner { node, .. } => role(node).is_some(),
        Change::Promote { node } => role(node) == Some(crate::node::Role::Voter),
        Change::Remove { node } => role(node).is_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::Role;

    fn list(committed: Slot, effective: Slot, learner: Option<NodeId>) -> MemberList {
        let voter = |n| MemberInfo {
            node: NodeId(n),
            role: Role::Voter,
            address: None,
            lag: None,
        };
        let mut members = vec![voter(1), voter(2)];
        members.extend(learner.map(|node| MemberInfo {
            node,
            role: Role::Learner,
            address: Some("127.0.0.1:7003".into()),
            lag: None,
        }));
        MemberList {
            node: NodeId(1),
            leader: Some(NodeId(1)),
            committed,
            effective,
            members,
        }
    }

    #[test]
    fn a_change_counts_as_done_only_once_chosen_and_in_effect() {
        let add = Change::AddLearner {
            node: NodeId(3),
            address: "127.0.0.1:7003".into(),
        };
        assert!(!is_chosen(&list(10, 1, None), &add), "not chosen yet");
        assert!(
            !is_chosen(&list(10, 265, Some(NodeId(3))), &add),
            "chosen, not in effect"
        );
        assert!(is_chosen(&list(264, 265, Some(NodeId(3))), &add));
        let promote = Change::Promote { node: NodeId(3) };
        assert!(!is_chosen(&list(264, 265, Some(NodeId(3))), &promote));
        let remove = Change::Remove { node: NodeId(3) };
        assert!(is_chosen(&list(600, 600, None), &remove));
        assert!(!is_chosen(&list(600, 600, Some(NodeId(3))), &remove));
    }

    #[test]
    fn an_added_member_needs_an_address_the_transport_can_dial() {
        let add = |address: &str| Change::AddLearner {
            node: NodeId(4),
            address: address.into(),
        };
        assert_eq!(check(&add("10.0.0.4:7000")), Ok(()));
        assert_eq!(check(&add("[::1]:7000")), Ok(()));
        for bad in ["node-4:7000", "10.0.0.4", ""] {
            assert_eq!(check(&add(bad)), Err(MemberRefusal::BadAddress(bad.into())));
        }
    }
}
