//! A node on TCP: transport, node runtime and the service for remote
//! clients, started and stopped together.

use super::authz::authorize;
use super::members::{AddressBook, MAX_MEMBER_REQUESTS, MemberService};
use super::watches::{OWED_RETRY, SWEEP_INTERVAL, ServedWatches};
use super::{ClientMessage, NodeReply, NodeTransport, RemoteStatus, TcpNetwork};
use crate::command::{Outcome, Refusal, Request};
use crate::error::NodeError;
use crate::node::{Call, JournalFile, Node, NodeConfig, NodeHandle, Reply};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use trexlock_paxos::NodeId;
use trexlock_transport::{ClientId as ConnectionId, TransportConfig};

/// Everything a TCP node needs.
#[derive(Clone, Debug)]
pub struct TcpNodeConfig {
    /// Consensus, timing and lease settings.
    pub node: NodeConfig,
    /// Listen address, peers' addresses, TLS, limits.
    pub transport: TransportConfig,
    /// The node's journal.
    pub journal: JournalFile,
}

/// A running node on TCP.
pub struct TcpNode {
    node: Node,
    transport: NodeTransport,
    service: tokio::task::JoinHandle<()>,
}

impl TcpNode {
    /// Binds the listener, opens the journal and starts the node.
    ///
    /// # Errors
    /// The address cannot be bound, the journal cannot be opened (corrupt,
    /// another cluster's or node's, newer format), or the configuration is
    /// invalid.
    pub async fn start(config: TcpNodeConfig) -> Result<TcpNode, NodeError> {
        let cluster = config.transport.cluster_id.clone();
        let bootstrap = config.transport.peers.clone();
        let tls = config.transport.tls.is_some();
        let loopback = !tls && config.transport.listen.ip().is_loopback();
        let (transport, inbound) = NodeTransport::start(config.transport).await?;
        let book = Arc::new(AddressBook::new(
            config.node.node,
            transport.local_addr(),
            bootstrap,
        ));
        let network = Arc::new(TcpNetwork::following(transport.clone(), book.clone()));
        let started = Node::start_with_journal(
            config.node,
            &cluster,
            config.journal,
            network,
            inbound.peers,
        )
        .await;
        let node = match started {
            Ok(node) => node,
            Err(e) => {
                transport.shutdown().await;
                return Err(e);
            }
        };
        let members = MemberService {
            node: node.handle(),
            transport: transport.clone(),
            book,
            loopback,
            in_flight: Arc::new(tokio::sync::Semaphore::new(MAX_MEMBER_REQUESTS)),
        };
        let service = tokio::spawn(serve_clients(members, inbound.clients, tls));
        Ok(TcpNode {
            node,
            transport,
            service,
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Where the node listens (the real port when configured with port 0).
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.transport.local_addr()
    }

    /// Resolves once the node has stopped on its own (a journal error, its
    /// task ending), with the reason; a running node never resolves it. A
    /// process that runs only this node should exit then, so that its
    /// supervisor sees the failure instead of a node that answers `status`
    /// with stale state.
    pub async fn stopped(&self) -> String {
        let mut status = self.node.handle().status;
        match status.wait_for(|s| s.stopped.is_some()).await {
            Ok(s) => s.stopped.clone().unwrap_or_default(),
            Err(_) => "the node task ended".to_owned(),
        }
    }

    /// The transport's counters.
    pub fn transport_stats(&self) -> trexlock_transport::Stats {
        self.transport.stats()
    }

    /// Stops cleanly: the node finishes its journal syncs and closes the
    /// journal, then queued frames are flushed and connections closed.
    ///
    /// # Errors
    /// The error that had already stopped the node, if any.
    pub async fn shutdown(self) -> Result<(), NodeError> {
        let result = self.node.shutdown().await;
        self.service.abort();
        self.transport.shutdown().await;
        result
    }
}

/// Answers remote clients: each request the connection's identity allows
/// (see [`authorize`]) becomes a call on the local node, and its answers go
/// back on the client's connection.
async fn serve_clients(
    members: MemberService,
    mut clients: mpsc::Receiver<(ConnectionId, ClientMessage)>,
    tls: bool,
) {
    let (node, transport) = (&members.node, &members.transport);
    let mut watches = ServedWatches::default();
    let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
    let mut retry = tokio::time::interval(OWED_RETRY);
    loop {
        let (conn, message) = tokio::select! {
            received = clients.recv() => match received {
                Some(received) => received,
                None => return,
            },
            _ = sweep.tick() => {
                watches.sweep(node, transport).await;
                continue;
            }
            _ = retry.tick(), if watches.owes() => {
                watches.send_owed(transport);
                continue;
            }
        };
        match message {
            ClientMessage::Watch { watch, request } => {
                // Watching is a read: any connection the transport admitted
                // may watch (over TLS, one with a verified certificate).
                match transport.client_identity(conn) {
                    Some(identity) if !tls || identity.is_some() => {}
                    _ => continue,
                }
                if !watches.start(node, transport, conn, watch, request).await {
                    return;
                }
            }
            ClientMessage::Unwatch { watch } => {
                if !watches.stop(node, conn, watch).await {
                    return;
                }
            }
            ClientMessage::Status => {
                let reply = NodeReply::Status(remote_status(node, &members.book.all()));
                let _ = transport.reply(conn, reply);
            }
            ClientMessage::Members(request) => members.serve(conn, request),
            ClientMessage::Lease(request) => {
                if !serve_lease_request(node, transport, conn, request, tls).await {
                    return;
                }
            }
        }
    }
}

/// Passes a lease request from connection `conn` to the node if the
/// connection's identity allows it, else answers it refused. False once
/// the node has stopped taking calls.
async fn serve_lease_request(
    node: &NodeHandle,
    transport: &NodeTransport,
    conn: ConnectionId,
    request: Request,
    tls: bool,
) -> bool {
    // Over TLS a connection without an identity has closed: nobody is
    // left to answer.
    let Some(identity) = transport.client_identity(conn) else {
        return true;
    };
    if tls && identity.is_none() {
        return true;
    }
    let refused = if node.status().removed {
        // Its table ends at its removal: a member serves better.
        Err(Refusal::Removed)
    } else {
        authorize(identity.as_ref(), &request.op)
    };
    if let Err(refusal) = refused {
        node.metrics.refused(refusal);
        let reply = NodeReply::Outcome {
            client: request.client,
            request: request.request,
            outcome: Outcome::Refused(refusal),
        };
        let _ = transport.reply(conn, reply);
        return true;
    }
    let (client, id) = (request.client, request.request);
    let answering = transport.clone();
    // Answers go straight from the node task onto the client's connection
    // queue; a failed send (the client is gone or not reading) makes the
    // node stop waiting on its behalf.
    let reply = Reply::Remote(Box::new(move |outcome| {
        answering
            .reply(
                conn,
                NodeReply::Outcome {
                    client,
                    request: id,
                    outcome,
                },
            )
            .is_ok()
    }));
    node.calls
        .send(Call::Request { request, reply })
        .await
        .is_ok()
}

/// What `node` answers a status request.
fn remote_status(node: &NodeHandle, members: &[(NodeId, SocketAddr)]) -> RemoteStatus {
    let status = node.status();
    RemoteStatus {
        node: node.id(),
        leader: status.leader,
        is_leader: status.is_leader,
        role: status.role().to_owned(),
        ready: status.is_ready(),
        promised: status.promised,
        applied: status.applied,
        leader_committed: status.leader_committed,
        members: members.to_vec(),
        peer_lag: node.metrics.peer_lag(),
        metrics: node.metrics(),
    }
}
