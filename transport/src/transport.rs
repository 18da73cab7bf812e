//! The node-side transport: the listener, the per-peer outgoing tasks and
//! the handle the node runtime uses to send.

use crate::client::{ClientId, ClientTable, serve_client};
use crate::codec::FrameReader;
use crate::config::TransportConfig;
use crate::error::{HandshakeError, SendError, TransportError};
use crate::handshake::{self, HANDSHAKE_MAX_FRAME_BYTES, Membership, Role};
use crate::peer::{run_outgoing, serve_incoming};
use crate::stats::{Counters, Stats, bump};
use crate::tls::{self, TlsConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};
use trexlock_paxos::NodeId;

/// What every connection task of one transport shares.
pub(crate) struct Shared {
    pub(crate) cluster_id: String,
    pub(crate) node: NodeId,
    pub(crate) peers: BTreeMap<NodeId, SocketAddr>,
    pub(crate) max_frame_bytes: usize,
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
    /// The open incoming connection of each peer, so that a newer one
    /// (after the peer restarted, or a half-open one) replaces it.
    incoming: Mutex<HashMap<NodeId, (u64, CancellationToken)>>,
    /// Numbers connections, for [`ClientId`]s and the `incoming` map.
    next_connection: AtomicU64,
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

    fn membership(&self) -> Membership<'_> {
        Membership {
            cluster_id: &self.cluster_id,
            node: self.node,
            peers: &self.peers,
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
    outgoing: BTreeMap<NodeId, mpsc::Sender<M>>,
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
            peers: config.peers,
            max_frame_bytes: config.max_frame_bytes,
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
        });
        let (peer_tx, peer_rx) = mpsc::channel(shared.queue_capacity);
        let (client_tx, client_rx) = mpsc::channel(shared.queue_capacity);
        let clients = Arc::new(ClientTable::new());

        let mut outgoing = BTreeMap::new();
        for (&peer, &addr) in &shared.peers {
            let (tx, rx) = mpsc::channel(shared.queue_capacity);
            outgoing.insert(peer, tx);
            shared.spawn(run_outgoing(shared.clone(), peer, addr, rx));
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
                outgoing,
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
        let queue = self
            .inner
            .outgoing
            .get(&to)
            .ok_or(SendError::UnknownPeer(to))?;
        self.enqueue(queue, message)
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
            Ok((tcp, remote)) => shared.spawn(serve_connection(
                shared.clone(),
                tcp,
                remote,
                peers.clone(),
                clients.clone(),
                table.clone(),
            )),
            Err(error) => {
                // Typically out of file descriptors: pause rather than spin.
                warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Authenticates one accepted connection (TLS, then the hello) and serves
/// it as a peer or a client link. Refusals are counted and logged.
async fn serve_connection<M, Req, Resp>(
    shared: Arc<Shared>,
    tcp: TcpStream,
    remote: SocketAddr,
    peers: mpsc::Sender<(NodeId, M)>,
    clients: mpsc::Sender<(ClientId, Req)>,
    table: Arc<ClientTable<Resp>>,
) where
    M: DeserializeOwned + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    let greeting = async {
        let io = tls::accept(tcp, shared.tls.as_ref())
            .await
            .map_err(HandshakeError::Tls)?;
        let mut conn = FrameReader::new(io, HANDSHAKE_MAX_FRAME_BYTES);
        let role = handshake::accept(&mut conn, &shared.membership()).await?;
        Ok::<_, HandshakeError>((conn, role))
    };
    let greeted = tokio::select! {
        // A stopping node does not wait for half-open handshakes.
        _ = shared.stopping.cancelled() => return,
        greeted = tokio::time::timeout(shared.handshake_timeout, greeting) => {
            greeted.unwrap_or(Err(HandshakeError::Timeout))
        }
    };
    let (conn, role) = match greeted {
        Ok(greeted) => greeted,
        Err(reason) => {
            bump(&shared.counters.refused_handshakes, 1);
            match reason {
                // Connect-and-close is what health checks and port probes
                // do: not worth a warning.
                HandshakeError::Closed => debug!(%remote, %reason, "refused connection"),
                _ => warn!(%remote, %reason, "refused connection"),
            }
            return;
        }
    };
    let number = shared.next_connection.fetch_add(1, Ordering::Relaxed);
    match role {
        Role::Peer(peer) => {
            let replaced = CancellationToken::new();
            let previous = lock(&shared.incoming).insert(peer, (number, replaced.clone()));
            if let Some((_, previous)) = previous {
                previous.cancel();
            }
            debug!(%peer, %remote, "peer connected");
            serve_incoming(&shared, peer, remote, conn, &peers, replaced).await;
            let mut incoming = lock(&shared.incoming);
            if incoming.get(&peer).is_some_and(|(n, _)| *n == number) {
                incoming.remove(&peer);
            }
        }
        Role::Client(instance) => {
            let id = ClientId(number);
            serve_client(&shared, &table, id, instance, remote, conn, &clients).await;
        }
    }
}

// No code holding this lock can panic, so poisoning cannot happen; it is
// tolerated anyway rather than turned into a panic.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
