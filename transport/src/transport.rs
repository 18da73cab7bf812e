//! The node-side transport: the listener, the per-peer outgoing tasks and
//! the handle the node runtime uses to send.

use crate::client::{ClientId, ClientTable, serve_client};
use crate::codec::FrameReader;
use crate::codec::encode_frame;
use crate::config::TransportConfig;
use crate::error::{HandshakeError, SendError, TransportError};
use crate::handshake::{self, HANDSHAKE_MAX_FRAME_BYTES, HelloReply, Membership, Refusal, Role};
use crate::identity::Identity;
use crate::peer::serve_incoming;
use crate::stats::{Counters, Stats, bump};
use crate::tls::{self, TlsConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use trexlock_paxos::NodeId;

mod follow;
use follow::Outgoing;

/// What every connection task of one transport shares.
pub(crate) struct Shared {
    pub(crate) cluster_id: String,
    pub(crate) node: NodeId,
    /// The peers admitted and dialled; it changes when the node follows a
    /// new membership ([`Transport::set_peers`]).
    pub(crate) peers: Mutex<BTreeMap<NodeId, SocketAddr>>,
    pub(crate) max_frame_bytes: usize,
    pub(crate) max_client_frame_bytes: usize,
    pub(crate) client_idle_timeout: Duration,
    pub(crate) queue_capacity: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) shutdown_grace: Duration,
    pub(crate) tls: Option<TlsConfig>,
    pub(crate) counters: Counters,
    /// Graceful stop: stop accepting, flush the queues, close.
    pub(crate) stopping: CancellationToken,
    /// Hard stop: abandon whatever is still running.
    abort: CancellationToken,
    tracker: TaskTracker,
    /// The open incoming connection of each peer: over TLS a newer,
    /// authenticated one (after the peer restarted, or a half-open one)
    /// replaces it; over plain TCP a second claim is refused.
    incoming: Mutex<HashMap<NodeId, Incoming>>,
    /// Numbers connections, for [`ClientId`]s and the `incoming` map.
    next_connection: AtomicU64,
    /// The connection limits and what is open.
    admission: Arc<Admission>,
    /// When a refusal over the limits was last logged as a warning (a
    /// flood must not flood the log too).
    last_limit_warning: Mutex<Option<Instant>>,
}

/// A peer's current incoming connection.
struct Incoming {
    number: u64,
    remote: SocketAddr,
    replaced: CancellationToken,
}

/// A peer id claimed by one connection, released when dropped (whether the
/// handshake fails, the link ends, or a newer link replaced it).
struct PeerClaim {
    shared: Arc<Shared>,
    peer: NodeId,
    number: u64,
    replaced: CancellationToken,
}

impl Drop for PeerClaim {
    fn drop(&mut self) {
        let mut incoming = lock(&self.shared.incoming);
        if incoming
            .get(&self.peer)
            .is_some_and(|i| i.number == self.number)
        {
            incoming.remove(&self.peer);
        }
    }
}

/// The connection limits: how many incoming connections that are not peer
/// links are open, in all and per remote IP address.
struct Admission {
    max_total: usize,
    max_per_address: usize,
    open: Mutex<Open>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// One connection's place within the limits, given back when dropped.
struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Takes a slot for a connection from `ip`, or says which limit is full.
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let mut open = lock(&self.open);
        let from_ip = open.per_address.get(&ip).copied().unwrap_or(0);
        let full = |open: usize, limit: usize, per_address| Refusal::TooManyConnections {
            open: open as u64,
            limit: limit as u64,
            per_address,
        };
        if open.total >= self.max_total {
            return Err(full(open.total, self.max_total, false));
        }
        if from_ip >= self.max_per_address {
            return Err(full(from_ip, self.max_per_address, true));
        }
        open.total += 1;
        *open.per_address.entry(ip).or_default() += 1;
        Ok(Slot {
            admission: self.clone(),
            ip,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = lock(&self.admission.open);
        open.total -= 1;
        if let Some(n) = open.per_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_address.remove(&self.ip);
            }
        }
    }
}

impl Shared {
    /// Spawns a task that the transport waits for on shutdown and abandons
    /// on a hard stop.
    fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let abort = self.abort.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                _ = abort.cancelled() => {}
                _ = task => {}
            }
        });
    }

    fn membership<'a>(&'a self, peers: &'a BTreeMap<NodeId, SocketAddr>) -> Membership<'a> {
        Membership {
            cluster_id: &self.cluster_id,
            node: self.node,
            peers,
        }
    }

    /// Registers connection `number` as `peer`'s incoming link. Over TLS
    /// (`authenticated`: the certificate names that peer) it replaces the
    /// peer's previous link, which is typically half-open after a restart.
    /// Over plain TCP nothing proves which claimant is the real peer, so a
    /// live link is never dropped for a newcomer: the newcomer is refused.
    fn claim_peer(
        self: &Arc<Self>,
        peer: NodeId,
        number: u64,
        remote: SocketAddr,
        authenticated: bool,
    ) -> Result<PeerClaim, Refusal> {
        let mut incoming = lock(&self.incoming);
        if let Some(live) = incoming.get(&peer) {
            if !authenticated {
                warn!(
                    %peer, %remote, live = %live.remote,
                    "a second connection claims to be a connected peer: is another process running with this node id? Refusing it and keeping the live link"
                );
                return Err(Refusal::DuplicatePeer(peer));
            }
            debug!(%peer, %remote, previous = %live.remote, "peer reconnected; replacing its previous link");
            live.replaced.cancel();
        }
        let replaced = CancellationToken::new();
        incoming.insert(
            peer,
            Incoming {
                number,
                remote,
                replaced: replaced.clone(),
            },
        );
        Ok(PeerClaim {
            shared: self.clone(),
            peer,
            number,
            replaced,
        })
    }

    /// Logs a refusal over the connection limits: a warning at most once a
    /// second, the rest at debug level.
    fn report_over_limit(&self, remote: SocketAddr, refusal: &Refusal) {
        bump(&self.counters.refused_over_limit, 1);
        let now = Instant::now();
        let mut last = lock(&self.last_limit_warning);
        if last.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(1)) {
            *last = Some(now);
            warn!(%remote, reason = %refusal, "refusing connections over the limit");
        } else {
            debug!(%remote, reason = %refusal, "refused connection");
        }
    }
}

/// The messages arriving at this node, from authenticated peers and clients.
/// Both channels end once the transport has shut down (or been dropped).
#[derive(Debug)]
pub struct Inbound<M, Req> {
    /// Peer messages, tagged with the sending node.
    pub peers: mpsc::Receiver<(NodeId, M)>,
    /// Client requests, tagged with the connection to reply on.
    pub clients: mpsc::Receiver<(ClientId, Req)>,
}

/// A node's network endpoint. It carries `M` between cluster members, and
/// accepts remote clients that send `Req` and receive `Resp`. Cloning gives
/// another handle to the same transport; when the last handle is dropped,
/// every connection is closed at once (use [`Transport::shutdown`] to flush
/// first).
pub struct Transport<M, Req, Resp> {
    inner: Arc<Inner<M, Resp>>,
    _requests: PhantomData<fn() -> Req>,
}

impl<M, Req, Resp> Clone for Transport<M, Req, Resp> {
    fn clone(&self) -> Self {
        Transport {
            inner: self.inner.clone(),
            _requests: PhantomData,
        }
    }
}

struct Inner<M, Resp> {
    shared: Arc<Shared>,
    outgoing: Mutex<BTreeMap<NodeId, Outgoing<M>>>,
    clients: Arc<ClientTable<Resp>>,
    local_addr: SocketAddr,
}

impl<M, Resp> Drop for Inner<M, Resp> {
    fn drop(&mut self) {
        self.shared.stopping.cancel();
        self.shared.abort.cancel();
    }
}

impl<M, Req, Resp> Transport<M, Req, Resp>
where
    M: Serialize + DeserializeOwned + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// Binds `config.listen` and starts the transport: peer links are dialled
    /// in the background and reconnect forever, so `start` succeeds whether
    /// or not the peers are up. Fails on an invalid configuration or if the
    /// address cannot be bound (the error names it). Must run on a tokio
    /// runtime.
    pub async fn start(config: TransportConfig) -> Result<(Self, Inbound<M, Req>), TransportError> {
        config.validate()?;
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| TransportError::Bind {
                    addr: config.listen,
                    source,
                })?;
        Self::start_with_listener(config, listener)
    }

    /// Like [`Transport::start`] on an already bound listener (then
    /// `config.listen` is ignored): for tests that need every node's port
    /// before any node starts, or for socket activation.
    pub fn start_with_listener(
        config: TransportConfig,
        listener: TcpListener,
    ) -> Result<(Self, Inbound<M, Req>), TransportError> {
        config.validate()?;
        let local_addr = listener
            .local_addr()
            .map_err(|source| TransportError::Bind {
                addr: config.listen,
                source,
            })?;
        let shared = Arc::new(Shared {
            cluster_id: config.cluster_id,
            node: config.node,
            peers: Mutex::new(config.peers.clone()),
            max_frame_bytes: config.max_frame_bytes,
            max_client_frame_bytes: config.max_client_frame_bytes,
            client_idle_timeout: config.client_idle_timeout,
            queue_capacity: config.queue_capacity,
            backoff_min: config.connect_backoff_min,
            backoff_max: config.connect_backoff_max,
            handshake_timeout: config.handshake_timeout,
            shutdown_grace: config.shutdown_grace,
            tls: config.tls,
            counters: Counters::default(),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            tracker: TaskTracker::new(),
            incoming: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(0),
            admission: Arc::new(Admission {
                max_total: config.max_connections,
                max_per_address: config.max_connections_per_address,
                open: Mutex::new(Open::default()),
            }),
            last_limit_warning: Mutex::new(None),
        });
        let (peer_tx, peer_rx) = mpsc::channel(shared.queue_capacity);
        let (client_tx, client_rx) = mpsc::channel(shared.queue_capacity);
        let clients = Arc::new(ClientTable::new());

        let mut outgoing = BTreeMap::new();
        for (&peer, &addr) in &config.peers {
            outgoing.insert(peer, Outgoing::start(&shared, peer, addr));
        }
        shared.spawn(accept_loop(
            shared.clone(),
            listener,
            peer_tx,
            client_tx,
            clients.clone(),
        ));
        let transport = Transport {
            inner: Arc::new(Inner {
                shared,
                outgoing: Mutex::new(outgoing),
                clients,
                local_addr,
            }),
            _requests: PhantomData,
        };
        let inbound = Inbound {
            peers: peer_rx,
            clients: client_rx,
        };
        Ok((transport, inbound))
    }
}

impl<M, Req, Resp> Transport<M, Req, Resp> {
    /// Queues `message` for peer `to` without waiting: it is written by that
    /// peer's link task, in order, whenever the link is up. Fails without
    /// queueing if `to` is not a configured peer (this node included), if
    /// the peer's queue is full (the message is dropped and counted: a dead
    /// peer costs bounded memory), or after shutdown.
    pub fn send(&self, to: NodeId, message: M) -> Result<(), SendError> {
        let outgoing = lock(&self.inner.outgoing);
        let link = outgoing.get(&to).ok_or(SendError::UnknownPeer(to))?;
        self.enqueue(&link.queue, message)
    }

    /// Queues `message` as a reply on client connection `client`, without
    /// waiting. Fails if that connection is closed, if its queue is full
    /// (dropped and counted), or after shutdown.
    pub fn reply(&self, client: ClientId, message: Resp) -> Result<(), SendError> {
        let queue = self
            .inner
            .clients
            .sender(client)
            .ok_or(SendError::UnknownClient(client))?;
        self.enqueue(&queue, message)
    }

    fn enqueue<T>(&self, queue: &mpsc::Sender<T>, message: T) -> Result<(), SendError> {
        if self.inner.shared.stopping.is_cancelled() {
            return Err(SendError::Closed);
        }
        match queue.try_send(message) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                bump(&self.inner.shared.counters.dropped_queue_full, 1);
                Err(SendError::QueueFull)
            }
            Err(TrySendError::Closed(_)) => Err(SendError::Closed),
        }
    }

    /// Who is on the other end of client connection `client`: `Some` with
    /// the identity its verified certificate names (over TLS), `Some(None)`
    /// over plain TCP (nothing proves who it is), or `None` once the
    /// connection has closed. The node decides from it what a client may
    /// ask (owners, forced releases).
    pub fn client_identity(&self, client: ClientId) -> Option<Option<Identity>> {
        self.inner.clients.identity(client)
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.inner.shared.counters.snapshot()
    }

    /// The address the listener is bound to (the real port when the
    /// configuration asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// This node's id.
    pub fn node(&self) -> NodeId {
        self.inner.shared.node
    }

    /// Stops accepting connections, writes out what is queued for connected
    /// peers and clients (best effort, for at most the configured
    /// `shutdown_grace`), then closes every connection. The listening port
    /// is released when it returns, and the [`Inbound`] channels end. Calling
    /// it again does nothing more.
    pub async fn shutdown(&self) {
        let shared = &self.inner.shared;
        shared.stopping.cancel();
        shared.tracker.close();
        if tokio::time::timeout(shared.shutdown_grace, shared.tracker.wait())
            .await
            .is_err()
        {
            debug!("shutdown grace elapsed; abandoning unflushed frames");
            shared.abort.cancel();
            shared.tracker.wait().await;
        }
    }
}

/// Accepts connections until the transport stops. Each one gets its own
/// task, so a slow or hostile connection never delays the others.
async fn accept_loop<M, Req, Resp>(
    shared: Arc<Shared>,
    listener: TcpListener,
    peers: mpsc::Sender<(NodeId, M)>,
    clients: mpsc::Sender<(ClientId, Req)>,
    table: Arc<ClientTable<Resp>>,
) where
    M: DeserializeOwned + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shared.stopping.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, remote)) => match shared.admission.admit(remote.ip()) {
                Ok(slot) => shared.spawn(serve_connection(
                    shared.clone(),
                    tcp,
                    remote,
                    slot,
                    peers.clone(),
                    clients.clone(),
                    table.clone(),
                )),
                Err(refusal) => refuse_over_limit(&shared, tcp, remote, refusal),
            },
            Err(error) => {
                // Typically out of file descriptors: pause rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Closes a connection over the limits at once, spending no TLS handshake
/// on it. Over plain TCP the reason is written first, without waiting,
/// where the client's hello reply would be.
fn refuse_over_limit(shared: &Shared, tcp: TcpStream, remote: SocketAddr, refusal: Refusal) {
    shared.report_over_limit(remote, &refusal);
    if shared.tls.is_none() {
        let mut frame = bytes::BytesMut::new();
        if encode_frame(
            &HelloReply::Refused(refusal),
            HANDSHAKE_MAX_FRAME_BYTES,
            &mut frame,
        )
        .is_ok()
        {
            let _ = tcp.try_write(&frame);
        }
    }
}

/// On a TLS listener: a connection whose first byte is not a TLS
/// handshake record is a plain-TCP hello (a client or node without TLS
/// settings). It is told so in plain text, where its hello reply would be,
/// and refused.
async fn refuse_plain_hello(tcp: &TcpStream) -> Result<(), HandshakeError> {
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;
    let mut first = [0u8; 1];
    let read = tcp.peek(&mut first).await.map_err(HandshakeError::Tls)?;
    if read == 0 {
        return Err(HandshakeError::Closed);
    }
    if first[0] == TLS_HANDSHAKE_RECORD {
        return Ok(());
    }
    // Read what the hello sent so far: closing a socket with unread bytes
    // resets the connection, and the reset could overtake the reason.
    let mut hello = [0u8; 1024];
    let _ = tcp.try_read(&mut hello);
    let mut frame = bytes::BytesMut::new();
    if encode_frame(
        &HelloReply::Refused(Refusal::TlsRequired),
        HANDSHAKE_MAX_FRAME_BYTES,
        &mut frame,
    )
    .is_ok()
    {
        let _ = tcp.try_write(&frame);
    }
    Err(HandshakeError::Refused(Refusal::TlsRequired))
}

/// Authenticates one accepted connection (TLS, then the hello) and serves
/// it as a peer or a client link. Refusals are counted and logged.
#[allow(clippy::too_many_arguments)]
async fn serve_connection<M, Req, Resp>(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    slot: Slot,
    peers: mpsc::Sender<(NodeId, M)>,
    clients: mpsc::Sender<(ClientId, Req)>,
    table: Arc<ClientTable<Resp>>,
) where
    M: DeserializeOwned + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let number = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    let greeting =
        async {
            if shared.tls.is_some() {
                refuse_plain_hello(&tcp).await?;
            }
            let (io, certified) = tls::accept(tcp, shared.tls.as_ref())
                .await
                .map_err(HandshakeError::Tls)?;
            let mut conn = FrameReader::new(io, HANDSHAKE_MAX_FRAME_BYTES);
            let authenticated = certified.is_some();
            let peers = lock(&shared.peers).clone();
            let (_, link) =
                handshake::accept(&mut conn, &shared.membership(&peers), &certified, |role| {
                    match role {
                        Role::Peer(peer) => shared
                            .claim_peer(peer, number, remote, authenticated)
                            .map(Link::Peer),
                        Role::Client(instance) => Ok(Link::Client(
                            instance,
                            certified.as_ref().and_then(|c| c.as_ref().ok()).cloned(),
                        )),
                    }
                })
                .await?;
            Ok::<_, HandshakeError>((conn, link))
        };
    let greeted = tokio::select! {
        // A stopping node does not wait for half-open handshakes.
        _ = shared.stopping.cancelled() => return,
        greeted = tokio::time::timeout(shared.handshake_timeout, greeting) => {
            greeted.unwrap_or(Err(HandshakeError::Timeout))
        }
    };
    let (conn, link) = match greeted {
        Ok(greeted) => greeted,
        Err(reason) => {
            bump(&shared.counters.refused_handshakes, 1);
            match reason {
                // Connect-and-close is what health checks and port probes
                // do: not worth a warning.
                HandshakeError::Closed => debug!(%remote, %reason, "refused connection"),
                // Already warned about, with the live link's address.
                HandshakeError::Refused(Refusal::DuplicatePeer(_)) => {
                    debug!(%remote, %reason, "refused connection")
                }
                _ => warn!(%remote, %reason, "refused connection"),
            }
            return;
        }
    };
    match link {
        Link::Peer(claim) => {
            // A peer link holds no slot: there is at most one per member,
            // and clients filling the limits must not keep peers out.
            drop(slot);
            debug!(peer = %claim.peer, %remote, "peer connected");
            let replaced = claim.replaced.clone();
            serve_incoming(&shared, claim.peer, remote, conn, &peers, replaced).await;
        }
        Link::Client(instance, identity) => {
            let id = ClientId(number);
            let who = (instance, identity);
            serve_client(&shared, &table, id, who, remote, conn, &clients).await;
            drop(slot);
        }
    }
}

/// What an admitted connection becomes.
enum Link {
    /// A peer's incoming link, holding its claim on the peer id.
    Peer(PeerClaim),
    /// A client connection, with the client's instance id and the identity
    /// its certificate names (none over plain TCP).
    Client(u64, Option<Identity>),
}

// No code holding this lock can panic, so poisoning cannot happen; it is
// tolerated anyway rather than turned into a panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
