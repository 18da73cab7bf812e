//! Membership over the network: the requests a remote client sends, who
//! may send them, how a remote client finds the leader to ask, and how a
//! TCP node keeps its transport's peers in step with the committed
//! membership.

use super::client::{RemoteConfig, open};
use super::{ClientMessage, NodeReply, NodeTransport};
use crate::client::DEFAULT_CALL_TIMEOUT;
use crate::client::members::{MemberCall, MemberError, MemberList, MemberRefusal};
use crate::error::{ConnectFailure, LeaseError};
use crate::node::{Call, NodeHandle};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::oneshot;
use trexlock_paxos::{Change, Membership, NodeId};
use trexlock_transport::{ClientId as ConnectionId, Identity};

/// A membership request from a remote client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberRequest {
    /// The members, their roles, addresses and lag.
    List,
    /// A change, proposed if this node leads and the connection may.
    Change(Change),
}

/// A node's answer to a [`MemberRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberReply {
    /// The members as this node knows them.
    List(MemberList),
    /// Whether the change was proposed (it is chosen later: list the
    /// members to see it).
    Changed(Result<(), MemberRefusal>),
}

/// Whether a connection may change the membership: over TLS only an
/// administrator's certificate; over plain TCP (`identity` is `None`) only
/// when the node listens on loopback, so that every client is local.
///
/// ```
/// use trexlock_lease::client::MemberRefusal;
/// use trexlock_lease::remote::may_change_members;
/// use trexlock_transport::Identity;
///
/// let ops = Identity::Admin { cluster: "orders".into(), name: "ops".into() };
/// let billing = Identity::Client { cluster: "orders".into(), name: "billing".into() };
/// assert_eq!(may_change_members(Some(&ops), false), Ok(()));
/// assert_eq!(may_change_members(Some(&billing), true), Err(MemberRefusal::NotPermitted));
/// assert_eq!(may_change_members(None, true), Ok(()));
/// assert_eq!(may_change_members(None, false), Err(MemberRefusal::NotPermitted));
/// ```
///
/// # Errors
/// [`MemberRefusal::NotPermitted`] for anyone else.
pub fn may_change_members(
    identity: Option<&Identity>,
    loopback_node: bool,
) -> Result<(), MemberRefusal> {
    match identity {
        Some(Identity::Admin { .. }) => Ok(()),
        None if loopback_node => Ok(()),
        _ => Err(MemberRefusal::NotPermitted),
    }
}

/// How a node serves membership requests.
#[derive(Clone)]
pub(super) struct MemberService {
    pub(super) node: NodeHandle,
    pub(super) transport: NodeTransport,
    pub(super) book: Arc<AddressBook>,
    /// Plain TCP on a loopback listener: clients are local.
    pub(super) loopback: bool,
    /// Bounds the membership requests being answered at once, so that a
    /// client flooding them cannot pile up tasks.
    pub(super) in_flight: Arc<tokio::sync::Semaphore>,
}

/// Most membership requests a node answers at once; more are refused as
/// [`MemberRefusal::Busy`] (a list is dropped: its asker times out).
pub const MAX_MEMBER_REQUESTS: usize = 16;

impl MemberService {
    /// Answers `request` from connection `conn` (in a task of its own: the
    /// node answers a change only after proposing it).
    pub(super) fn serve(&self, conn: ConnectionId, request: MemberRequest) {
        // A connection that has closed has nobody left to answer.
        let Some(identity) = self.transport.client_identity(conn) else {
            return;
        };
        let Ok(permit) = self.in_flight.clone().try_acquire_owned() else {
            if matches!(request, MemberRequest::Change(_)) {
                let busy = MemberReply::Changed(Err(MemberRefusal::Busy));
                let _ = self.transport.reply(conn, NodeReply::Members(busy));
            }
            return;
        };
        let service = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let reply = match request {
                MemberRequest::List => match service.list().await {
                    Some(list) => MemberReply::List(list),
                    None => return,
                },
                MemberRequest::Change(change) => {
                    let permitted = may_change_members(identity.as_ref(), service.loopback);
                    let proposed = match permitted {
                        Ok(()) => service.change(change).await,
                        Err(refusal) => Err(refusal),
                    };
                    MemberReply::Changed(proposed)
                }
            };
            let _ = service.transport.reply(conn, NodeReply::Members(reply));
        });
    }

    async fn list(&self) -> Option<MemberList> {
        let (reply, answer) = oneshot::channel();
        let call = Call::Members(MemberCall::List { reply });
        self.node.calls.send(call).await.ok()?;
        let mut list = answer.await.ok()?.ok()?;
        for member in &mut list.members {
            if member.address.is_none() {
                member.address = self.book.address(member.node).map(|a| a.to_string());
            }
        }
        Some(list)
    }

    async fn change(&self, change: Change) -> Result<(), MemberRefusal> {
        let (reply, answer) = oneshot::channel();
        let call = Call::Members(MemberCall::Change { change, reply });
        if self.node.calls.send(call).await.is_err() {
            return Err(MemberRefusal::Stopped);
        }
        match answer.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(MemberError::Refused(refusal))) => Err(refusal),
            Ok(Err(MemberError::Cluster(_))) | Err(_) => Err(MemberRefusal::Stopped),
        }
    }
}

/// How long a node may take to answer a membership request.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// Asks the one node at `addr`.
async fn ask(
    addr: SocketAddr,
    config: &RemoteConfig,
    request: &MemberRequest,
) -> Result<MemberReply, ConnectFailure> {
    let mut conn = open(addr, config).await?;
    let broke = |reason: String| ConnectFailure::Unreachable { addr, reason };
    conn.send(&ClientMessage::Members(request.clone()))
        .await
        .map_err(|e| broke(e.to_string()))?;
    match tokio::time::timeout(ANSWER_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(NodeReply::Members(reply)))) => Ok(reply),
        Ok(Ok(_)) => Err(broke(
            "the node closed the connection without an answer".into(),
        )),
        Ok(Err(e)) => Err(broke(e.to_string())),
        Err(_) => Err(broke(format!("no answer within {ANSWER_TIMEOUT:?}"))),
    }
}

/// Performs a membership call for a remote client: a list comes from the
/// leader if any server is it (else from the first that answers); a change
/// goes to each server in turn until the leader takes or refuses it (the
/// leader a server names is asked too, at the address the members list
/// gives), retried while an election runs.
pub(super) async fn call_cluster(config: RemoteConfig, call: MemberCall) {
    match call {
        MemberCall::List { reply } => {
            let _ = reply.send(list(&config).await);
        }
        MemberCall::Change { change, reply } => {
            let _ = reply.send(change_at_leader(&config, change).await);
        }
    }
}

/// Asks the servers of `config` for the members: the leader's answer if
/// any server is the leader, else the first answer.
///
/// # Errors
/// [`MemberError::Cluster`] with [`LeaseError::Connect`] naming why each
/// server could not be asked.
pub async fn member_list(config: &RemoteConfig) -> Result<MemberList, MemberError> {
    list(config).await
}

async fn list(config: &RemoteConfig) -> Result<MemberList, MemberError> {
    let mut failures = Vec::new();
    let mut first = None;
    for addr in &config.servers {
        match ask(*addr, config, &MemberRequest::List).await {
            Ok(MemberReply::List(list)) if list.leader == Some(list.node) => return Ok(list),
            Ok(MemberReply::List(list)) => {
                first.get_or_insert(list);
            }
            Ok(MemberReply::Changed(_)) => {}
            Err(failure) => failures.push(failure),
        }
    }
    first.ok_or(MemberError::Cluster(LeaseError::Connect(failures)))
}

async fn change_at_leader(config: &RemoteConfig, change: Change) -> Result<(), MemberError> {
    let deadline = tokio::time::Instant::now() + DEFAULT_CALL_TIMEOUT;
    let request = MemberRequest::Change(change);
    let mut servers = config.servers.clone();
    loop {
        let mut failures = Vec::new();
        let mut not_leader = None;
        for addr in &servers {
            match ask(*addr, config, &request).await {
                Ok(MemberReply::Changed(Ok(()))) => return Ok(()),
                Ok(MemberReply::Changed(Err(
                    refusal @ (MemberRefusal::NotLeader { .. } | MemberRefusal::Busy),
                ))) => {
                    not_leader = Some(refusal);
                }
                Ok(MemberReply::Changed(Err(refusal))) => {
                    return Err(MemberError::Refused(refusal));
                }
                Ok(MemberReply::List(_)) => {}
                Err(failure) => failures.push(failure),
            }
        }
        if let Some(MemberRefusal::NotLeader {
            leader: Some(leader),
        }) = &not_leader
            && let Some(addr) = address_of(config, *leader).await
            && !servers.contains(&addr)
        {
            // The leader is not among the servers given: ask it next.
            servers.insert(0, addr);
            continue;
        }
        if tokio::time::Instant::now() + Duration::from_millis(100) >= deadline {
            return Err(match not_leader {
                Some(refusal) => MemberError::Refused(refusal),
                None => MemberError::Cluster(LeaseError::Connect(failures)),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Where the servers of `config` say `node` listens.
async fn address_of(config: &RemoteConfig, node: NodeId) -> Option<SocketAddr> {
    let list = list(config).await.ok()?;
    let member = list.members.into_iter().find(|m| m.node == node)?;
    member.address?.parse().ok()
}

/// Where a TCP node reaches its peers: the bootstrap members' addresses
/// (from its configuration) and those the committed membership records,
/// kept in step with the memberships the node follows.
pub struct AddressBook {
    me: NodeId,
    own: SocketAddr,
    bootstrap: BTreeMap<NodeId, SocketAddr>,
    followed: Mutex<Followed>,
}

#[derive(Default)]
struct Followed {
    memberships: Option<(Membership, Membership)>,
    peers: BTreeMap<NodeId, SocketAddr>,
}

impl AddressBook {
    /// A book for node `me` listening at `own`, knowing the bootstrap
    /// members at `bootstrap`.
    pub fn new(
        me: NodeId,
        own: SocketAddr,
        bootstrap: BTreeMap<NodeId, SocketAddr>,
    ) -> AddressBook {
        let peers = bootstrap.clone();
        AddressBook {
            me,
            own,
            bootstrap,
            followed: Mutex::new(Followed {
                memberships: None,
                peers,
            }),
        }
    }

    /// Where `node` is reached, as far as this node knows.
    pub fn address(&self, node: NodeId) -> Option<SocketAddr> {
        if node == self.me {
            return Some(self.own);
        }
        self.lock().peers.get(&node).copied()
    }

    /// Every member this node reaches, itself included, by id.
    pub fn all(&self) -> Vec<(NodeId, SocketAddr)> {
        let mut all: Vec<(NodeId, SocketAddr)> =
            self.lock().peers.iter().map(|(n, a)| (*n, *a)).collect();
        all.push((self.me, self.own));
        all.sort();
        all
    }

    /// Notes the memberships the node follows; returns the new peer set
    /// when it changed: every member of either, at the address the
    /// membership records, else its bootstrap address, else the one known
    /// before (a member with none is left out, and said so), and every
    /// former member at its last address.
    pub(super) fn follow(
        &self,
        governing: &Membership,
        latest: &Membership,
    ) -> Option<BTreeMap<NodeId, SocketAddr>> {
        let mut followed = self.lock();
        if followed
            .memberships
            .as_ref()
            .is_some_and(|(g, l)| g == governing && l == latest)
        {
            return None;
        }
        let recorded = |node: &NodeId| {
            [latest, governing]
                .iter()
                .find_map(|m| m.addresses.get(node))
                .and_then(|a| a.parse::<SocketAddr>().ok())
        };
        let mut peers = BTreeMap::new();
        for node in governing.members().chain(latest.members()) {
            if node == self.me || peers.contains_key(&node) {
                continue;
            }
            let found = recorded(&node)
                .or_else(|| self.bootstrap.get(&node).copied())
                .or_else(|| followed.peers.get(&node).copied());
            match found {
                Some(addr) => {
                    peers.insert(node, addr);
                }
                None => {
                    tracing::warn!(node = %self.me, peer = %node, "a member has no known address: not reachable")
                }
            }
        }
        // A former member stays reachable: a removed node stops only once
        // a leader of the new membership releases it in answer to its probe
        // (see the node core), so it must still reach the members and hear
        // from them. The core admits only probes and catch-up requests
        // from it. The set grows only by members an operator added.
        for (node, addr) in &followed.peers {
            peers.entry(*node).or_insert(*addr);
        }
        followed.memberships = Some((governing.clone(), latest.clone()));
        if peers == followed.peers {
            return None;
        }
        tracing::info!(node = %self.me, ?peers, "following the committed membership: peers now");
        followed.peers = peers.clone();
        Some(peers)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Followed> {
        self.followed.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
