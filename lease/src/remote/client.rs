//! A lease session in a process that runs no node.

use super::{ClientMessage, NodeReply, RemoteStatus};
use crate::client::LeaseClient;
use crate::command::{ClientId, Outcome, Refusal, Request};
use crate::error::{ConnectFailure, LeaseError};
use crate::metrics::Metrics;
use crate::node::{Call, NodeHandle, NodeStatus, Reply};
use crate::time::DriftBound;
use crate::watch::{Delivered, WatchDelivery, WatchError, WatchId, WatchRequest, WatchSink};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use trexlock_paxos::NodeId;
use trexlock_transport::{ClientConnection, CodecError, HandshakeError, TlsConfig, TransportError};

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

/// A connection to the cluster from a process that runs no node. Its
/// [`RemoteHandle::client`] gives lease sessions exactly as on a local
/// node; everything else it reports is what a node answered, never a
/// guess: a remote process has no node id, applied slot or counters of
/// its own. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct RemoteHandle {
    node: NodeHandle,
    config: RemoteConfig,
}

impl std::fmt::Debug for RemoteHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteHandle")
            .field("cluster_id", &self.config.cluster_id)
            .field("connected_to", &self.connected_to())
            .finish_non_exhaustive()
    }
}

impl RemoteHandle {
    /// A lease session over this connection. Leases are reentrant by
    /// session (see [`LeaseClient`]).
    pub fn client(&self, owner: impl Into<String>) -> LeaseClient {
        self.node.client(owner)
    }

    /// The node the connection talks to right now (requests reach the
    /// leader through it); `None` while reconnecting.
    pub fn connected_to(&self) -> Option<NodeId> {
        self.node.status().leader
    }

    /// Asks the cluster: the first server that answers gives its status
    /// (its leader, applied slot, counters).
    ///
    /// # Errors
    /// [`LeaseError::Connect`] naming why each server failed.
    pub async fn status(&self) -> Result<RemoteStatus, LeaseError> {
        status(&self.config).await
    }

    /// Asks the cluster until some server knows a leader, or `timeout`
    /// passes; returns the leader.
    pub async fn wait_for_leader(&self, timeout: Duration) -> Option<NodeId> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Ok(Ok(s)) = tokio::time::timeout(left, self.status()).await
                && s.leader.is_some()
            {
                return s.leader;
            }
            if tokio::time::Instant::now() + Duration::from_millis(20) >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Connects to the cluster. The returned handle's
/// [`RemoteHandle::client`] gives lease sessions exactly as on a local
/// node. The connection is kept up in the background, moving to another
/// node when one fails.
///
/// # Errors
/// [`LeaseError::Connect`] when no server could be connected to, naming
/// each one's reason (another cluster, another protocol version, a
/// certificate refused or missing, nobody listening);
/// [`LeaseError::Invalid`] when no server is given.
pub async fn connect(config: RemoteConfig) -> Result<RemoteHandle, LeaseError> {
    if config.servers.is_empty() {
        return Err(LeaseError::Invalid("no servers given".into()));
    }
    let mut link = Link::new(config.clone());
    link.reconnect_once().await.map_err(LeaseError::Connect)?;
    let (calls_tx, calls_rx) = mpsc::channel(1024);
    let (status_tx, status_rx) = watch::channel(link.status());
    // The session API runs on a node handle; this one's status says only
    // which node the link talks to (see `Link::status`), and it is never
    // handed out.
    let node = NodeHandle {
        id: NodeId(0),
        calls: calls_tx,
        status: status_rx,
        drift: config.drift,
        metrics: Arc::new(Metrics::default()),
        journal: None,
    };
    tokio::spawn(link.run(calls_rx, status_tx));
    Ok(RemoteHandle { node, config })
}

/// Asks the servers in turn for their status; the first answer wins (for
/// operators and scripts).
///
/// # Errors
/// [`LeaseError::Connect`] naming why each server failed.
pub async fn status(config: &RemoteConfig) -> Result<RemoteStatus, LeaseError> {
    let mut failures = Vec::new();
    for addr in &config.servers {
        match status_of(*addr, config).await {
            Ok(s) => return Ok(s),
            Err(failure) => failures.push(failure),
        }
    }
    Err(LeaseError::Connect(failures))
}

/// Asks the one server at `addr` for its status.
///
/// # Errors
/// Why the server could not be asked.
pub async fn status_of(
    addr: SocketAddr,
    config: &RemoteConfig,
) -> Result<RemoteStatus, ConnectFailure> {
    let mut conn = open(addr, config).await?;
    let broke = |e: TransportError| ConnectFailure::Unreachable {
        addr,
        reason: e.to_string(),
    };
    conn.send(&ClientMessage::Status).await.map_err(broke)?;
    match tokio::time::timeout(STATUS_TIMEOUT, conn.recv()).await {
        Ok(Ok(Some(NodeReply::Status(s)))) => Ok(s),
        Ok(Ok(_)) => Err(ConnectFailure::Unreachable {
            addr,
            reason: "the node closed the connection without a status".into(),
        }),
        Ok(Err(e)) => Err(broke(e)),
        Err(_) => Err(ConnectFailure::Unreachable {
            addr,
            reason: format!("no status within {STATUS_TIMEOUT:?}"),
        }),
    }
}

/// How long a node may take to answer a status request.
const STATUS_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to `addr`, as `config` says: TLS, plain TCP (loopback
/// only), or plain TCP anywhere when `insecure` is set.
pub(super) async fn open(
    addr: SocketAddr,
    config: &RemoteConfig,
) -> Result<Connection, ConnectFailure> {
    let opened = match &config.tls {
        Some(tls) => Connection::connect(addr, &config.cluster_id, Some(tls)).await,
        None if config.insecure => Connection::connect_insecure(addr, &config.cluster_id).await,
        None => Connection::connect(addr, &config.cluster_id, None).await,
    };
    opened.map_err(|e| failure(addr, e))
}

/// Names why connecting to `addr` failed, as precisely as the error says.
fn failure(addr: SocketAddr, error: TransportError) -> ConnectFailure {
    let io_failure = |e: &std::io::Error| match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::AlertReceived(alert)) => Some(ConnectFailure::CertificateRejected {
            addr,
            alert: format!("{alert:?}"),
        }),
        Some(tls) => Some(ConnectFailure::Tls {
            addr,
            reason: tls.to_string(),
        }),
        None => None,
    };
    let unreachable = |reason: String| ConnectFailure::Unreachable { addr, reason };
    match error {
        TransportError::PlainTcpNotLoopback { addr } => {
            ConnectFailure::PlainTcpNotLoopback { addr }
        }
        TransportError::Connect { source, .. } => {
            io_failure(&source).unwrap_or_else(|| unreachable(source.to_string()))
        }
        TransportError::Handshake { source, .. } => match source {
            HandshakeError::RefusedByRemote(refusal) | HandshakeError::Refused(refusal) => {
                ConnectFailure::Refused { addr, refusal }
            }
            HandshakeError::Tls(e)
            | HandshakeError::Codec(CodecError::Io(e))
            | HandshakeError::Unintelligible(CodecError::Io(e)) => {
                io_failure(&e).unwrap_or_else(|| unreachable(e.to_string()))
            }
            HandshakeError::Unintelligible(e) => ConnectFailure::Tls {
                addr,
                reason: format!(
                    "the answer is not a trexlock handshake (TLS on the node's side only?): {e}"
                ),
            },
            HandshakeError::Identity(e) => ConnectFailure::Tls {
                addr,
                reason: format!("the node's certificate is unusable: {e}"),
            },
            other => unreachable(other.to_string()),
        },
        other => unreachable(other.to_string()),
    }
}

struct Waiting {
    request: Request,
    reply: Reply,
}

/// A watch the link serves: resumed on the next node, after the last
/// event it delivered, when the connection breaks.
struct LinkWatch {
    /// What it asks; `after` moves with every delivery.
    request: WatchRequest,
    sink: WatchSink,
}

/// The background connection of one remote handle.
struct Link {
    config: RemoteConfig,
    conn: Option<Connection>,
    /// The server `conn` talks to.
    server: Option<SocketAddr>,
    /// Servers that answered [`Refusal::Removed`]: tried again only when
    /// every server is among them.
    removed: std::collections::BTreeSet<SocketAddr>,
    next_server: usize,
    waiting: HashMap<(ClientId, u64), Waiting>,
    watches: HashMap<WatchId, LinkWatch>,
}

impl Link {
    fn new(config: RemoteConfig) -> Link {
        Link {
            config,
            conn: None,
            server: None,
            removed: std::collections::BTreeSet::new(),
            next_server: 0,
            waiting: HashMap::new(),
            watches: HashMap::new(),
        }
    }

    /// What the session API needs to know of the link: `leader` is the
    /// node it talks to (a timed-out call reads `None` as "no node
    /// reachable"). Never shown to users: [`RemoteHandle`] asks nodes.
    fn status(&self) -> NodeStatus {
        NodeStatus {
            leader: self.conn.as_ref().map(Connection::server),
            ..NodeStatus::default()
        }
    }

    /// Tries each server once; says why each failed if none answered.
    async fn reconnect_once(&mut self) -> Result<(), Vec<ConnectFailure>> {
        self.conn = None;
        let mut failures = Vec::new();
        let everywhere_removed = self.config.servers.iter().all(|a| self.removed.contains(a));
        for _ in 0..self.config.servers.len() {
            let addr = self.config.servers[self.next_server % self.config.servers.len()];
            self.next_server += 1;
            if self.removed.contains(&addr) && !everywhere_removed {
                continue;
            }
            match open(addr, &self.config).await {
                Ok(conn) => {
                    self.conn = Some(conn);
                    self.server = Some(addr);
                    return Ok(());
                }
                Err(failure) => failures.push(failure),
            }
        }
        Err(failures)
    }

    /// Sends every unanswered request again on a new connection (the table
    /// answers duplicates from its record), and resumes every watch after
    /// the last event it delivered.
    async fn resend(&mut self) {
        let requests = self
            .waiting
            .values()
            .map(|w| ClientMessage::Lease(w.request.clone()));
        let watches = self.watches.iter().map(|(id, w)| ClientMessage::Watch {
            watch: id.0,
            request: w.request.clone(),
        });
        let messages: Vec<ClientMessage> = requests.chain(watches).collect();
        for chunk in messages.chunks(MAX_REQUESTS_PER_WRITE) {
            if !self.send_all(chunk).await {
                return;
            }
        }
    }

    /// Sends messages with one write; false (and no connection) if that
    /// failed.
    async fn send_all(&mut self, messages: &[ClientMessage]) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        for message in messages {
            // An unencodable request cannot be sent anywhere: it stays
            // unanswered and its caller times out, as with `send`.
            let _ = conn.queue(message);
        }
        self.flush().await
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
                        self.queue(call);
                        for _ in 1..MAX_REQUESTS_PER_WRITE {
                            match calls.try_recv() {
                                Ok(call) => self.queue(call),
                                Err(_) => break,
                            }
                        }
                        self.flush().await;
                    }
                    None => return,
                },
                reply = conn.recv() => {
                    self.on_reply(reply).await;
                    // The rest of the same read, without going back to
                    // `select!` for each reply.
                    while let Some(conn) = self.conn.as_mut() {
                        match conn.try_recv() {
                            Ok(None) => break,
                            reply => self.on_reply(reply).await,
                        }
                    }
                }
            }
        }
    }

    /// Records a call and queues its message, if any, on the connection
    /// (an unencodable one stays unanswered and its caller times out, as
    /// in [`Link::send_all`]).
    fn queue(&mut self, call: Call) {
        if let Some(message) = self.take(call)
            && let Some(conn) = &mut self.conn
        {
            let _ = conn.queue(&message);
        }
    }

    /// Writes what was queued; false (and no connection) if that failed
    /// or there is no connection.
    async fn flush(&mut self) -> bool {
        let Some(conn) = &mut self.conn else {
            return false;
        };
        if conn.flush().await.is_ok() {
            return true;
        }
        self.conn = None;
        false
    }

    /// Handles one reply from the node (or the connection's end).
    async fn on_reply(&mut self, reply: Result<Option<NodeReply>, TransportError>) {
        match reply {
            Ok(Some(NodeReply::Outcome {
                client,
                request,
                outcome,
            })) => {
                if outcome == Outcome::Refused(Refusal::Removed) && self.elsewhere() {
                    // Every request waiting goes to the next server.
                    self.conn = None;
                } else {
                    self.answer((client, request), outcome);
                }
            }
            Ok(Some(NodeReply::Status(_) | NodeReply::Members(_))) => {}
            Ok(Some(NodeReply::Watch { watch, delivery })) => {
                if let Some(unwatch) = self.deliver_watch(WatchId(watch), delivery) {
                    self.send_all(&[unwatch]).await;
                }
            }
            Ok(None) | Err(_) => self.conn = None,
        }
    }

    /// Notes that the server this link talks to was removed from the
    /// membership; true if some other server may still serve.
    fn elsewhere(&mut self) -> bool {
        if let Some(server) = self.server {
            self.removed.insert(server);
        }
        !self.config.servers.iter().all(|a| self.removed.contains(a))
    }

    /// Records a call; returns the message to send, if any.
    fn take(&mut self, call: Call) -> Option<ClientMessage> {
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
                Some(ClientMessage::Lease(request))
            }
            Call::Watch { id, request, sink } => {
                let message = ClientMessage::Watch {
                    watch: id.0,
                    request: request.clone(),
                };
                self.watches.insert(id, LinkWatch { request, sink });
                Some(message)
            }
            Call::Unwatch { id } => {
                self.watches.remove(&id)?;
                Some(ClientMessage::Unwatch { watch: id.0 })
            }
            Call::Forget { client, request } => {
                self.waiting.remove(&(client, request));
                None
            }
            Call::Members(call) => {
                tokio::spawn(super::members::call_cluster(self.config.clone(), call));
                None
            }
            Call::Shutdown { done } => {
                let _ = done.send(());
                None
            }
        }
    }

    /// Passes a node's delivery to its watch, moving the watch's position
    /// so that a resume continues after it. Returns the message that ends
    /// the watch at the node when it is over here: ended by the node, its
    /// stream dropped, or cut off because the stream did not keep up.
    fn deliver_watch(&mut self, id: WatchId, delivery: WatchDelivery) -> Option<ClientMessage> {
        let unwatch = Some(ClientMessage::Unwatch { watch: id.0 });
        let Some(watch) = self.watches.get_mut(&id) else {
            return unwatch;
        };
        let before = watch.request.after;
        let ended = matches!(delivery, WatchDelivery::Ended(_));
        match &delivery {
            WatchDelivery::Started { after } if before.is_none() => {
                watch.request.after = Some(*after);
            }
            WatchDelivery::Events(events) => {
                if let Some(last) = events.last() {
                    watch.request.after = Some(last.position);
                }
            }
            _ => {}
        }
        let delivered = watch.sink.send(delivery);
        match (delivered, before) {
            (Delivered::Yes, _) if !ended => None,
            (Delivered::Full, Some(resume_from)) if !ended => {
                let lagged = WatchDelivery::Ended(WatchError::Lagged { resume_from });
                let _ = watch.sink.send(lagged);
                self.watches.remove(&id);
                unwatch
            }
            _ => {
                self.watches.remove(&id);
                unwatch
            }
        }
    }

    fn answer(&mut self, key: (ClientId, u64), outcome: Outcome) {
        let last = outcome != Outcome::Queued;
        if let Some(w) = self.waiting.get_mut(&key) {
            let _ = w.reply.send(outcome);
        }
        if last {
            self.waiting.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trexlock_transport::Refusal;

    fn addr() -> SocketAddr {
        "127.0.0.1:7001".parse().unwrap()
    }

    #[test]
    fn a_node_of_another_protocol_version_is_named_as_the_cause() {
        let refusal = Refusal::IncompatibleVersion {
            supported: 3,
            offered: 2,
        };
        let error = TransportError::Handshake {
            addr: addr(),
            source: HandshakeError::RefusedByRemote(refusal.clone()),
        };
        let failure = failure(addr(), error);
        assert_eq!(
            failure,
            ConnectFailure::Refused {
                addr: addr(),
                refusal
            }
        );
        let message = LeaseError::Connect(vec![failure]).to_string();
        assert!(
            message.contains("protocol version 2 is not supported (this node speaks 3)"),
            "{message}"
        );
    }

    #[test]
    fn a_tls_alert_from_the_node_is_a_rejected_certificate() {
        let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
        let io = std::io::Error::new(std::io::ErrorKind::InvalidData, alert);
        let error = TransportError::Handshake {
            addr: addr(),
            source: HandshakeError::Codec(CodecError::Io(io)),
        };
        assert!(matches!(
            failure(addr(), error),
            ConnectFailure::CertificateRejected { alert, .. } if alert == "UnknownCA"
        ));
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = TransportError::Connect {
            addr: addr(),
            source: refused,
        };
        assert!(matches!(
            failure(addr(), error),
            ConnectFailure::Unreachable { .. }
        ));
    }
}
