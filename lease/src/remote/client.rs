//! A lease session in a process that runs no node.

use super::{ClientMessage, NodeReply, RemoteStatus};
use crate::command::{ClientId, Outcome, Request};
use crate::error::LeaseError;
use crate::metrics::Metrics;
use crate::node::{Call, NodeHandle, NodeStatus, Reply};
use crate::time::DriftBound;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use trexlock_paxos::NodeId;
use trexlock_transport::{ClientConnection, TlsConfig, TransportError};

type Connection = ClientConnection<ClientMessage, NodeReply>;

/// Most requests the link writes at once.
const MAX_REQUESTS_PER_WRITE: usize = 256;

/// Where and how to reach the cluster.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// The cluster's id.
    pub cluster_id: String,
    /// Addresses of some or all nodes; tried in turn.
    pub servers: Vec<SocketAddr>,
    /// Mutual TLS with a certificate from the cluster CA; `None` is plain
    /// TCP, refused for servers off loopback unless `insecure` is set.
    pub tls: Option<TlsConfig>,
    /// Allows plain TCP to servers that are not on loopback (anyone on the
    /// path can then read and forge the traffic). Default false.
    pub insecure: bool,
    /// The drift bound the cluster is configured with.
    pub drift: DriftBound,
}

impl RemoteConfig {
    /// Plain TCP to `servers` of `cluster_id`, default drift bound.
    pub fn new(cluster_id: impl Into<String>, servers: Vec<SocketAddr>) -> RemoteConfig {
        RemoteConfig {
            cluster_id: cluster_id.into(),
            servers,
            tls: None,
            insecure: false,
            drift: DriftBound::DEFAULT,
        }
    }
}

/// Connects to the cluster. The returned handle's
/// [`NodeHandle::client`] gives lease sessions exactly as on a local node.
/// The connection is kept up in the background, moving to another node
/// when one fails.
///
/// # Errors
/// [`LeaseError::NoLeader`] when no server could be reached at all.
pub async fn connect(config: RemoteConfig) -> Result<NodeHandle, LeaseError> {
    if config.servers.is_empty() {
        return Err(LeaseError::Invalid("no servers given".into()));
    }
    let mut link = Link::new(config.clone());
    link.reconnect_once().await?;
    let (calls_tx, calls_rx) = mpsc::channel(1024);
    let (status_tx, status_rx) = watch::channel(link.status());
    let handle = NodeHandle {
        id: NodeId(0),
        calls: calls_tx,
        status: status_rx,
        drift: config.drift,
        metrics: Arc::new(Metrics::default()),
    };
    tokio::spawn(link.run(calls_rx, status_tx));
    Ok(handle)
}

/// Asks one node for its status (for operators and scripts).
///
/// # Errors
/// [`LeaseError::NoLeader`] if no server answers.
pub async fn status(config: &RemoteConfig) -> Result<RemoteStatus, LeaseError> {
    for addr in &config.servers {
        let Ok(mut conn) = open(*addr, config).await else {
            continue;
        };
        if conn.send(&ClientMessage::Status).await.is_err() {
            continue;
        }
        if let Ok(Ok(Some(NodeReply::Status(s)))) =
            tokio::time::timeout(Duration::from_secs(5), conn.recv()).await
        {
            return Ok(s);
        }
    }
    Err(LeaseError::NoLeader)
}

/// One connection to `addr`, as `config` says: TLS, plain TCP (loopback
/// only), or plain TCP anywhere when `insecure` is set.
async fn open(addr: SocketAddr, config: &RemoteConfig) -> Result<Connection, TransportError> {
    match &config.tls {
        Some(tls) => Connection::connect(addr, &config.cluster_id, Some(tls)).await,
        None if config.insecure => Connection::connect_insecure(addr, &config.cluster_id).await,
        None => Connection::connect(addr, &config.cluster_id, None).await,
    }
}

struct Waiting {
    request: Request,
    reply: Reply,
}

/// The background connection of one remote handle.
struct Link {
    config: RemoteConfig,
    conn: Option<Connection>,
    next_server: usize,
    waiting: HashMap<(ClientId, u64), Waiting>,
}

impl Link {
    fn new(config: RemoteConfig) -> Link {
        Link {
            config,
            conn: None,
            next_server: 0,
            waiting: HashMap::new(),
        }
    }

    fn status(&self) -> NodeStatus {
        NodeStatus {
            leader: self.conn.as_ref().map(Connection::server),
            ..NodeStatus::default()
        }
    }

    /// Tries each server once.
    async fn reconnect_once(&mut self) -> Result<(), LeaseError> {
        self.conn = None;
        for _ in 0..self.config.servers.len() {
            let addr = self.config.servers[self.next_server % self.config.servers.len()];
            self.next_server += 1;
            if let Ok(conn) = open(addr, &self.config).await {
                self.conn = Some(conn);
                return Ok(());
            }
        }
        Err(LeaseError::NoLeader)
    }

    /// Sends every unanswered request again on a new connection; the table
    /// answers duplicates from its record.
    async fn resend(&mut self) {
        let requests: Vec<Request> = self.waiting.values().map(|w| w.request.clone()).collect();
        for chunk in requests.chunks(MAX_REQUESTS_PER_WRITE) {
            if !self.send_all(chunk.to_vec()).await {
                return;
            }
        }
    }

    /// Sends requests with one write; false (and no connection) if that
    /// failed.
    async fn send_all(&mut self, requests: Vec<Request>) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        for request in requests {
            // An unencodable request cannot be sent anywhere: it stays
            // unanswered and its caller times out, as with `send`.
            let _ = conn.queue(&ClientMessage::Lease(request));
        }
        if conn.flush().await.is_ok() {
            return true;
        }
        self.conn = None;
        false
    }

    async fn run(mut self, mut calls: mpsc::Receiver<Call>, status: watch::Sender<NodeStatus>) {
        let mut backoff = Duration::from_millis(20);
        loop {
            if self.conn.is_none() {
                status.send_replace(self.status());
                if self.reconnect_once().await.is_ok() {
                    backoff = Duration::from_millis(20);
                    self.resend().await;
                } else {
                    // Keep taking calls while no node answers, so callers
                    // time out on their own deadlines.
                    let sleep = tokio::time::sleep(backoff);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            _ = &mut sleep => break,
                            call = calls.recv() => match call {
                                Some(call) => {
                                    self.take(call);
                                }
                                None => return,
                            },
                        }
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
                status.send_replace(self.status());
            }
            let conn = self.conn.as_mut().expect("connected");
            tokio::select! {
                call = calls.recv() => match call {
                    Some(call) => {
                        // Everything the session's callers have queued
                        // meanwhile leaves in the same write.
                        let mut requests: Vec<Request> = self.take(call).into_iter().collect();
                        while requests.len() < MAX_REQUESTS_PER_WRITE {
                            match calls.try_recv() {
                                Ok(call) => requests.extend(self.take(call)),
                                Err(_) => break,
                            }
                        }
                        self.send_all(requests).await;
                    }
                    None => return,
                },
                reply = conn.recv() => match reply {
                    Ok(Some(NodeReply::Outcome { client, request, outcome })) => {
                        self.answer((client, request), outcome);
                    }
                    Ok(Some(NodeReply::Status(_))) => {}
                    Ok(None) | Err(_) => self.conn = None,
                },
            }
        }
    }

    /// Records a call; returns the request to send, if any.
    fn take(&mut self, call: Call) -> Option<Request> {
        match call {
            Call::Request { request, reply } => {
                let key = (request.client, request.request);
                self.waiting.insert(
                    key,
                    Waiting {
                        request: request.clone(),
                        reply,
                    },
                );
                Some(request)
            }
            Call::Forget { client, request } => {
                self.waiting.remove(&(client, request));
                None
            }
            Call::Shutdown { done } => {
                let _ = done.send(());
                None
            }
        }
    }

    fn answer(&mut self, key: (ClientId, u64), outcome: Outcome) {
        let last = outcome != Outcome::Queued;
        if let Some(w) = self.waiting.get(&key) {
            let _ = w.reply.send(outcome);
        }
        if last {
            self.waiting.remove(&key);
        }
    }
}
