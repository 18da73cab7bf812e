//! Nodes over TCP (optionally mutual TLS), and clients in processes that
//! run no node.
//!
//! A node started with [`TcpNode::start`] talks to its peers through the
//! `trexlock-transport` crate and serves remote clients on the same port.
//! A process with no node calls [`connect`] and gets a [`RemoteHandle`]
//! whose [`RemoteHandle::client`] offers exactly the lease API of a local
//! node: requests go to one node (which forwards them to the leader), and
//! on a broken connection the session reconnects to another node and
//! resends what is unanswered, under the same request ids, so nothing runs
//! twice. What a remote handle reports about the cluster
//! ([`RemoteHandle::status`]) is what a node answered.
//!
//! ```no_run
//! use std::time::Duration;
//! use trexlock_lease::remote::{self, RemoteConfig};
//!
//! # async fn example() -> Result<(), trexlock_lease::LeaseError> {
//! let servers = vec!["127.0.0.1:7001".parse().unwrap(), "127.0.0.1:7002".parse().unwrap()];
//! let cluster = remote::connect(RemoteConfig::new("orders", servers)).await?;
//! let lease = cluster.client("billing").acquire("invoices", Duration::from_secs(10), Duration::from_secs(1)).await?;
//! println!("stamp {}; the leader is {:?}", lease.stamp(), cluster.status().await?.leader);
//! # Ok(()) }
//! ```

mod authz;
mod client;
mod members;
mod server;
mod watches;

pub use crate::node::JournalFile;
pub use authz::{authorize, principal};
pub use client::{RemoteConfig, RemoteHandle, connect, status, status_of};
pub use members::{AddressBook, MemberReply, MemberRequest, may_change_members, member_list};
pub use server::{TcpNode, TcpNodeConfig};

use crate::command::{ClientId, Outcome, Request};
use crate::metrics::MetricsSnapshot;
use crate::watch::{WatchDelivery, WatchRequest};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use trexlock_paxos::{Ballot, NodeId};

/// What a remote client sends a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// A lease request.
    Lease(Request),
    /// Asks for the node's status and counters.
    Status,
    /// Starts (or resumes) watch `watch`, an id the client chose, unique
    /// on its connection (see [`crate::watch`]).
    Watch {
        /// The client's id for the watch.
        watch: u64,
        /// What to watch, from where.
        request: WatchRequest,
    },
    /// Ends watch `watch`.
    Unwatch {
        /// The client's id for the watch.
        watch: u64,
    },
    /// A membership request (list, or a change).
    Members(MemberRequest),
}

/// What a node answers a remote client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeReply {
    /// An answer to a lease request (`Queued` may precede the final one).
    Outcome {
        /// The session that asked.
        client: ClientId,
        /// The request answered.
        request: u64,
        /// The answer.
        outcome: Outcome,
    },
    /// The node's status.
    Status(RemoteStatus),
    /// Something for watch `watch` of this connection.
    Watch {
        /// The client's id for the watch.
        watch: u64,
        /// What the watch is owed.
        delivery: WatchDelivery,
    },
    /// An answer to a membership request.
    Members(MemberReply),
}

/// A node's status, as it answered a remote client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The node answering.
    pub node: NodeId,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Whether it leads.
    pub is_leader: bool,
    /// Its role in words (see [`NodeStatus::role`](crate::NodeStatus::role)).
    pub role: String,
    /// Whether it is ready (see [`NodeStatus::is_ready`](crate::NodeStatus::is_ready)).
    pub ready: bool,
    /// The highest ballot it promised.
    pub promised: Ballot,
    /// Highest slot applied.
    pub applied: u64,
    /// Highest slot its leader announced chosen.
    pub leader_committed: u64,
    /// The members it reaches and their addresses (its own listen address
    /// for itself), as of the membership it follows.
    pub members: Vec<(NodeId, SocketAddr)>,
    /// On the leader: slots each peer is behind, as of its last heartbeat
    /// answer.
    pub peer_lag: Vec<(NodeId, u64)>,
    /// Its counters and table sizes.
    pub metrics: MetricsSnapshot,
}

/// The transport a TCP node runs on.
pub type NodeTransport =
    trexlock_transport::Transport<crate::network::PeerMessage, ClientMessage, NodeReply>;

/// Delivers peer messages through the TCP transport (best effort: a full
/// queue or an unreachable peer drops the message, as the protocol allows).
pub struct TcpNetwork {
    transport: NodeTransport,
    book: Option<std::sync::Arc<AddressBook>>,
}

impl TcpNetwork {
    /// Wraps a started transport whose peers stay as configured.
    pub fn new(transport: NodeTransport) -> TcpNetwork {
        TcpNetwork {
            transport,
            book: None,
        }
    }

    /// Wraps a started transport whose peers follow the committed
    /// membership, with addresses from `book`.
    pub fn following(transport: NodeTransport, book: std::sync::Arc<AddressBook>) -> TcpNetwork {
        TcpNetwork {
            transport,
            book: Some(book),
        }
    }
}

impl crate::network::Network for TcpNetwork {
    fn send(&self, _from: NodeId, to: NodeId, message: crate::network::PeerMessage) {
        let _ = self.transport.send(to, message);
    }

    fn follow(&self, governing: &trexlock_paxos::Membership, latest: &trexlock_paxos::Membership) {
        if let Some(peers) = self.book.as_ref().and_then(|b| b.follow(governing, latest)) {
            self.transport.set_peers(peers);
        }
    }
}
