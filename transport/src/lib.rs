//! # trexlock-transport
//!
//! The network layer of trexlock, generic over the message types so that it
//! depends on nothing but the node ids of `trexlock-paxos`.
//!
//! - **Frames**: a 4-byte big-endian length then a postcard payload
//!   ([`codec`]), with a hard maximum size; a connection that sends a
//!   truncated, oversized, undecodable or wrong-type frame is dropped, logged
//!   and counted, and the node keeps serving everyone else.
//! - **Handshake** ([`handshake`]): every connection opens with a versioned
//!   [`Hello`] naming the cluster and the sender's role; another cluster, an
//!   unknown node or another protocol version is refused with the reason
//!   logged on both sides.
//! - **Peers**: one outgoing connection per peer and direction, owned by a
//!   task that dials, reconnects with capped exponential backoff and jitter,
//!   and writes queued messages in batches. [`Transport::send`] never waits:
//!   each peer's queue is bounded and a full queue drops the message
//!   (consensus tolerates loss; memory stays bounded when a peer is dead).
//! - **Clients**: processes that run no node connect with
//!   [`ClientConnection`]; their requests arrive on [`Inbound::clients`] and
//!   [`Transport::reply`] answers on the same connection.
//! - **Security**: mutual TLS 1.3 with a cluster CA ([`TlsConfig`]); every
//!   certificate names one [`Identity`] (`trexlock://<cluster>/node/<id>` or
//!   `trexlock://<cluster>/client/<name>`) and a connection is admitted only
//!   in the role its certificate names ([`certs`] makes such certificates).
//!   Without TLS the transport is plain, unauthenticated TCP, allowed only
//!   on loopback addresses unless [`TransportConfig::insecure`] says
//!   otherwise.
//! - **Limits**: incoming connections are capped in all and per address,
//!   idle clients are closed, client frames are limited far below peer
//!   frames, and no buffer is reserved for a frame before its bytes arrive.
//!
//! ```no_run
//! # async fn example() -> Result<(), trexlock_transport::TransportError> {
//! use std::collections::BTreeMap;
//! use trexlock_paxos::NodeId;
//! use trexlock_transport::{Transport, TransportConfig};
//!
//! let peers = BTreeMap::from([(NodeId(2), "127.0.0.1:7002".parse().unwrap())]);
//! let config = TransportConfig::new("demo", NodeId(1), "127.0.0.1:7001".parse().unwrap(), peers);
//! let (transport, mut inbound) = Transport::<String, String, String>::start(config).await?;
//! transport.send(NodeId(2), "hello".to_owned()).ok();
//! if let Some((from, message)) = inbound.peers.recv().await {
//!     println!("{from} says {message}");
//! }
//! transport.shutdown().await;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

pub mod certs;
mod client;
pub mod codec;
mod config;
mod error;
pub mod handshake;
mod identity;
mod peer;
mod stats;
mod tls;
mod transport;

pub use client::{ClientConnection, ClientId};
pub use config::{
    DEFAULT_CLIENT_IDLE_TIMEOUT, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CLIENT_FRAME_BYTES,
    DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS_PER_ADDRESS, DEFAULT_MAX_FRAME_BYTES,
    TransportConfig,
};
pub use error::{
    CertError, CodecError, ConfigError, HandshakeError, IdentityError, SendError, TlsError,
    TransportError,
};
pub use handshake::{Hello, HelloReply, PROTOCOL_VERSION, Refusal, Role};
pub use identity::{IDENTITY_SCHEME, Identity};
pub use stats::Stats;
pub use tls::TlsConfig;
pub use transport::{Inbound, Transport};
