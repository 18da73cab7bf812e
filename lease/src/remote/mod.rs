//! Nodes over TCP (optionally mutual TLS), and clients in processes that
//! run no node.
//!
//! A node started with [`TcpNode::start`] talks to its peers through the
//! `trexlock-transport` crate and serves remote clients on the same port.
//! A process with no node calls [`connect`] and gets a [`NodeHandle`](crate::NodeHandle)
//! whose [`NodeHandle::client`](crate::NodeHandle::client) offers exactly the lease API of a local
//! node: requests go to one node (which forwards them to the leader), and
//! on a broken connection the session reconnects to another node and
//! resends what is unanswered, under the same request ids, so nothing runs
//! twice.

mod authz;
mod client;
mod server;

pub use crate::node::JournalFile;
pub use authz::{authorize, principal};
pub use client::{RemoteConfig, connect, status};
pub use server::{TcpNode, TcpNodeConfig};

use crate::command::{ClientId, Outcome, Request};
use crate::metrics::MetricsSnapshot;
use serde::{Deserialize, Serialize};
use trexlock_paxos::NodeId;

/// What a remote client sends a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMessage {
    /// A lease request.
    Lease(Request),
    /// Asks for the node's status and counters.
    Status,
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
}

/// A node's status as seen by a remote client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    /// The node answering.
    pub node: NodeId,
    /// The leader it knows.
    pub leader: Option<NodeId>,
    /// Whether it leads.
    pub is_leader: bool,
    /// Highest slot applied.
    pub applied: u64,
    /// Its counters.
    pub metrics: MetricsSnapshot,
}

/// The transport a TCP node runs on.
pub type NodeTransport =
    trexlock_transport::Transport<crate::network::PeerMessage, ClientMessage, NodeReply>;

/// Delivers peer messages through the TCP transport (best effort: a full
/// queue or an unreachable peer drops the message, as the protocol allows).
pub struct TcpNetwork {
    transport: NodeTransport,
}

impl TcpNetwork {
    /// Wraps a started transport.
    pub fn new(transport: NodeTransport) -> TcpNetwork {
        TcpNetwork { transport }
    }
}

impl crate::network::Network for TcpNetwork {
    fn send(&self, _from: NodeId, to: NodeId, message: crate::network::PeerMessage) {
        let _ = self.transport.send(to, message);
    }
}
