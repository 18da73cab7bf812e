//! Remote clients: processes that run no node but talk to one. A client
//! connection is a single TCP (or TLS) connection carrying requests to the
//! node and replies back, after a hello with [`Role::Client`].

use crate::codec::{FrameReader, encode_frame};
use crate::config::{DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CLIENT_FRAME_BYTES};
use crate::error::TransportError;
use crate::handshake::{self, Hello, Role};
use crate::identity::Identity;
use crate::peer::{flush_and_close, report_read_error, write_batch};
use crate::stats::bump;
use crate::tls::{BoxIo, TlsConfig};
use crate::transport::Shared;
use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use trexlock_paxos::NodeId;

/// Names one client connection to this node, for
/// [`Transport::reply`](crate::Transport::reply). Assigned by the node,
/// unique for the life of its transport; a client that reconnects gets a new
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientId(pub u64);

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}", self.0)
    }
}

/// An open client connection: its reply queue, and who its verified
/// certificate names (`None` over plain TCP).
struct Session<Resp> {
    replies: mpsc::Sender<Resp>,
    identity: Option<Identity>,
}

/// The open client connections.
pub(crate) struct ClientTable<Resp> {
    sessions: Mutex<HashMap<ClientId, Session<Resp>>>,
}

impl<Resp> ClientTable<Resp> {
    pub(crate) fn new() -> Self {
        ClientTable {
            sessions: Mutex::new(HashMap::new()),
        }
    }

    // No code holding this lock can panic, so poisoning cannot happen; it
    // is tolerated anyway rather than turned into a panic.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ClientId, Session<Resp>>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn sender(&self, id: ClientId) -> Option<mpsc::Sender<Resp>> {
        self.lock().get(&id).map(|s| s.replies.clone())
    }

    /// `None` once the connection is closed; `Some(None)` over plain TCP.
    pub(crate) fn identity(&self, id: ClientId) -> Option<Option<Identity>> {
        self.lock().get(&id).map(|s| s.identity.clone())
    }
}

/// Serves one accepted client connection: its requests go to `inbound`,
/// the replies queued for it are written back in batches, both within the
/// client frame limit. Returns when the client leaves, misbehaves, stays
/// idle (no request and no reply) for the idle timeout, or the transport
/// stops.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_client<Req, Resp>(
    shared: &Shared,
    table: &ClientTable<Resp>,
    id: ClientId,
    (instance, identity): (u64, Option<Identity>),
    remote: SocketAddr,
    mut conn: FrameReader<BoxIo>,
    inbound: &mpsc::Sender<(ClientId, Req)>,
) where
    Req: DeserializeOwned,
    Resp: Serialize,
{
    let (tx, mut replies) = mpsc::channel(shared.queue_capacity);
    table.lock().insert(
        id,
        Session {
            replies: tx,
            identity,
        },
    );
    tracing::debug!(%id, instance, %remote, "client connected");
    let limit = shared.max_client_frame_bytes;
    conn.set_max_frame_bytes(limit);
    let (mut reader, mut writer) = conn.split();
    let mut out = BytesMut::new();
    let idle = tokio::time::sleep(shared.client_idle_timeout);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            biased;
            _ = shared.stopping.cancelled() => {
                flush_and_close(shared, limit, &id, &mut writer, &mut replies).await;
                break;
            }
            Some(first) = replies.recv() => {
                idle.as_mut().reset(tokio::time::Instant::now() + shared.client_idle_timeout);
                if write_batch(shared, limit, &id, &mut writer, &mut out, first, &mut replies).await.is_err() {
                    break;
                }
            }
            _ = &mut idle => {
                bump(&shared.counters.idle_clients_closed, 1);
                tracing::debug!(%id, %remote, "closing an idle client connection");
                let _ = writer.shutdown().await;
                break;
            }
            read = reader.next::<Req>() => match read {
                Ok(Some(request)) => {
                    idle.as_mut().reset(tokio::time::Instant::now() + shared.client_idle_timeout);
                    bump(&shared.counters.frames_in, 1);
                    if inbound.send((id, request)).await.is_err() {
                        break;
                    }
                }
                Ok(None) => break,
                Err(error) => {
                    report_read_error(shared, Role::Client(instance), remote, &error);
                    break;
                }
            },
        }
    }
    table.lock().remove(&id);
    tracing::debug!(%id, %remote, "client disconnected");
}

/// A connection from a process that runs no node to one node of the
/// cluster: it sends `Req`s and receives `Resp`s, in the order the node
/// sends them. It does not reconnect; on an error, connect again (to this or
/// another node).
pub struct ClientConnection<Req, Resp> {
    conn: FrameReader<BoxIo>,
    out: BytesMut,
    server: NodeId,
    _messages: PhantomData<fn(Req) -> Resp>,
}

impl<Req: Serialize, Resp: DeserializeOwned> ClientConnection<Req, Resp> {
    /// Connects to the node at `addr` as a client of `cluster_id`, over
    /// mutual TLS when `tls` is given (the certificate must come from the
    /// cluster CA, and the node's must name the node that answers),
    /// otherwise over plain TCP, which is refused unless `addr` is a
    /// loopback address (see [`ClientConnection::connect_insecure`]). Fails
    /// if the node is unreachable, refuses the handshake (another cluster or
    /// version, too many connections) or does not answer within 5 s.
    pub async fn connect(
        addr: SocketAddr,
        cluster_id: &str,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, TransportError> {
        if tls.is_none() && !addr.ip().is_loopback() {
            return Err(TransportError::PlainTcpNotLoopback { addr });
        }
        Self::dial(addr, cluster_id, tls).await
    }

    /// Connects over plain, unauthenticated TCP to any address: anyone on
    /// the path can read and forge the traffic. For networks where that is
    /// acceptable and said so explicitly (the `insecure` setting).
    pub async fn connect_insecure(
        addr: SocketAddr,
        cluster_id: &str,
    ) -> Result<Self, TransportError> {
        Self::dial(addr, cluster_id, None).await
    }

    async fn dial(
        addr: SocketAddr,
        cluster_id: &str,
        tls: Option<&TlsConfig>,
    ) -> Result<Self, TransportError> {
        // The instance id only tells connections apart in the node's logs.
        let instance = RandomState::new().hash_one(std::process::id());
        let hello = Hello::new(cluster_id, Role::Client(instance));
        let (mut conn, server) =
            handshake::dial(addr, tls, &hello, None, DEFAULT_HANDSHAKE_TIMEOUT).await?;
        conn.set_max_frame_bytes(DEFAULT_MAX_CLIENT_FRAME_BYTES);
        Ok(ClientConnection {
            conn,
            out: BytesMut::new(),
            server,
            _messages: PhantomData,
        })
    }

    /// The node this connection talks to.
    pub fn server(&self) -> NodeId {
        self.server
    }

    /// Sends one request and flushes it (with anything queued before it).
    /// Not cancel-safe: if the future is dropped midway the connection may
    /// hold a partial frame; drop the connection then.
    pub async fn send(&mut self, request: &Req) -> Result<(), TransportError> {
        self.queue(request)?;
        self.flush().await
    }

    /// Encodes one request into the send buffer without writing it, so
    /// that several requests leave in one write (call
    /// [`ClientConnection::flush`]). A request that cannot be encoded is
    /// refused and leaves the buffer as it was.
    pub fn queue(&mut self, request: &Req) -> Result<(), TransportError> {
        encode_frame(request, DEFAULT_MAX_CLIENT_FRAME_BYTES, &mut self.out)?;
        Ok(())
    }

    /// Writes every queued request and flushes. Not cancel-safe (as
    /// [`ClientConnection::send`]).
    pub async fn flush(&mut self) -> Result<(), TransportError> {
        if self.out.is_empty() {
            return Ok(());
        }
        let io = self.conn.get_mut();
        let written = io.write_all(&self.out).await;
        self.out.clear();
        written.map_err(crate::error::CodecError::Io)?;
        io.flush().await.map_err(crate::error::CodecError::Io)?;
        Ok(())
    }

    /// The next reply, or `None` once the node has closed the connection.
    /// Cancel-safe, so it can wait in `select!` beside other work.
    pub async fn recv(&mut self) -> Result<Option<Resp>, TransportError> {
        Ok(self.conn.next().await?)
    }

    /// The next reply if it has already arrived whole, else `None`,
    /// without waiting: replies sent together arrive in one read, and
    /// after [`ClientConnection::recv`] returns the first, the others can
    /// be taken at once. A malformed frame is an error, as in `recv`.
    pub fn try_recv(&mut self) -> Result<Option<Resp>, TransportError> {
        Ok(self.conn.next_buffered()?)
    }
}
