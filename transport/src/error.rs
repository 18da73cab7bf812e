//! The errors of the transport, one enum per failure domain.

use crate::client::ClientId;
use crate::handshake::{Refusal, Role};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use trexlock_paxos::NodeId;

/// Why [`Transport::start`](crate::Transport::start) or a
/// [`ClientConnection`](crate::ClientConnection) could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The listening socket could not be bound (typically: the port is in use).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the configuration.
        addr: SocketAddr,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// The configuration is inconsistent.
    #[error("invalid transport configuration: {0}")]
    Config(#[from] ConfigError),
    /// The TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// Plain TCP to an address other machines can reach was asked for
    /// without saying `insecure` explicitly.
    #[error(
        "refusing plain TCP to {addr}: not a loopback address; use TLS, or the insecure option to accept that"
    )]
    PlainTcpNotLoopback {
        /// The node's address.
        addr: SocketAddr,
    },
    /// A client could not reach the node.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The node's address.
        addr: SocketAddr,
        /// What the operating system or the TLS layer said.
        #[source]
        source: io::Error,
    },
    /// The node did not complete the handshake with a client.
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        /// The node's address.
        addr: SocketAddr,
        /// What went wrong.
        #[source]
        source: HandshakeError,
    },
    /// An established client connection broke or carried a bad frame.
    #[error("connection failed: {0}")]
    Codec(#[from] CodecError),
}

/// A [`TransportConfig`](crate::TransportConfig) that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The cluster id is empty; it must name the cluster.
    #[error("the cluster id is empty")]
    EmptyClusterId,
    /// The node lists itself among its peers.
    #[error("node {0} lists itself among its peers")]
    SelfInPeers(NodeId),
    /// A queue of zero messages could never carry anything.
    #[error("queue_capacity must be at least 1")]
    ZeroQueueCapacity,
    /// The maximum frame size is below what the handshake needs or above
    /// what the 4-byte length prefix can express.
    #[error("max_frame_bytes must be between {min} and {max}, got {got}")]
    FrameSize {
        /// The smallest accepted value.
        min: usize,
        /// The largest accepted value.
        max: usize,
        /// The configured value.
        got: usize,
    },
    /// The reconnect backoff bounds are zero or reversed.
    #[error("connect backoff needs 0 < min <= max")]
    Backoff,
    /// A zero handshake timeout would refuse every connection.
    #[error("handshake_timeout must be positive")]
    ZeroHandshakeTimeout,
    /// A zero client idle timeout would close every client at once.
    #[error("client_idle_timeout must be positive")]
    ZeroClientIdleTimeout,
    /// The client frame limit is out of range or above the peer limit.
    #[error("max_client_frame_bytes must be between {min} and max_frame_bytes ({max}), got {got}")]
    ClientFrameSize {
        /// The smallest accepted value.
        min: usize,
        /// The peer frame limit.
        max: usize,
        /// The configured value.
        got: usize,
    },
    /// The connection limits leave no room for the peers, or per address
    /// exceed the global limit.
    #[error(
        "connection limits need max_connections ({total}) > number of peers ({peers}) and 1 <= max_connections_per_address ({per_address}) <= max_connections"
    )]
    ConnectionLimits {
        /// `max_connections`.
        total: usize,
        /// `max_connections_per_address`.
        per_address: usize,
        /// How many peers the node has.
        peers: usize,
    },
    /// Plain TCP was configured on an address other machines can reach,
    /// without `insecure` saying so explicitly.
    #[error(
        "{addr} is not a loopback address: plain TCP there lets anyone pose as a node; configure TLS, or set insecure = true to accept that"
    )]
    PlainTcpNotLoopback {
        /// The listen or peer address.
        addr: SocketAddr,
    },
    /// The node's own certificate does not name this node of this cluster.
    #[error("this node's certificate names {certified}, not {expected}")]
    CertificateIdentity {
        /// The identity this node needs its certificate to name.
        expected: String,
        /// What the certificate names.
        certified: String,
    },
}

/// Why a certificate does not name a trexlock identity.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    /// The certificate could not be parsed.
    #[error("unparsable certificate: {0}")]
    Unparsable(String),
    /// No `trexlock://` URI among its subject alternative names.
    #[error(
        "the certificate names no trexlock identity (a URI SAN trexlock://<cluster>/node/<id> or trexlock://<cluster>/client/<name>; `trexlock certs` makes such certificates)"
    )]
    Missing,
    /// More than one `trexlock://` URI: a certificate names one holder.
    #[error("the certificate names more than one trexlock identity")]
    Several,
    /// A `trexlock://` URI that is not of either form.
    #[error("malformed trexlock identity URI {0:?}")]
    Malformed(String),
    /// A cluster or client name with characters a URI label cannot carry.
    #[error("{0:?} cannot be used as a name (letters, digits, '-', '_', '.' only)")]
    InvalidName(String),
}

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The certificate library refused (bad key, bad parameters).
    #[error("cannot make the certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    /// A name cannot be used in an identity.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// The identity is of another cluster than the CA.
    #[error("the CA of cluster {ca:?} cannot issue {identity}")]
    OtherCluster {
        /// The CA's cluster.
        ca: String,
        /// The identity asked for.
        identity: String,
    },
    /// A file could not be read or written (an existing one is never
    /// overwritten).
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
}

/// TLS material that could not be read or used. Each variant names the file
/// (or the in-memory item) it is about.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    Read {
        /// Which item: "CA certificate", "certificate chain" or "private key".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What the operating system said.
        #[source]
        source: io::Error,
    },
    /// A PEM item is malformed or missing.
    #[error("invalid {what} ({origin}): {reason}")]
    Pem {
        /// Which item.
        what: &'static str,
        /// The file it came from, or "in memory".
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The certificate does not name a trexlock identity.
    #[error("certificate chain ({origin}): {source}")]
    Identity {
        /// The file it came from, or "in memory".
        origin: String,
        /// What is wrong.
        #[source]
        source: IdentityError,
    },
    /// rustls rejected the certificates or the key (for example: a key that
    /// does not match the certificate).
    #[error("unusable TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Why a connection handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The remote side refused us, for the stated reason.
    #[error("refused by the remote side: {0}")]
    RefusedByRemote(Refusal),
    /// We refused the remote side, for the stated reason.
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The remote side answered as someone other than expected.
    #[error("expected {expected:?} but the remote side is {got:?}")]
    UnexpectedRole {
        /// Who we dialled.
        expected: Option<NodeId>,
        /// Who answered.
        got: Role,
    },
    /// The remote side's verified certificate names no usable identity.
    #[error("the remote certificate is unusable: {0}")]
    Identity(#[source] IdentityError),
    /// The remote side closed the connection during the handshake.
    #[error("connection closed during the handshake")]
    Closed,
    /// The handshake took longer than the configured timeout.
    #[error("handshake timed out")]
    Timeout,
    /// The TLS handshake failed (for example: no certificate, or one that
    /// does not chain to the cluster CA).
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    /// The remote side's first frame was not a trexlock handshake: typically
    /// TLS on one side only, or another protocol on that port.
    #[error("not a trexlock handshake (TLS on one side only, or another protocol?): {0}")]
    Unintelligible(#[source] CodecError),
    /// The handshake frame could not be read or written.
    #[error(transparent)]
    Codec(CodecError),
}

/// Why a frame could not be encoded or decoded. After any of these except
/// [`CodecError::Unencodable`] the connection is dropped.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The frame's length exceeds the configured maximum.
    #[error("frame exceeds the maximum of {max} bytes")]
    Oversized {
        /// The configured maximum.
        max: usize,
    },
    /// The stream ended in the middle of a frame.
    #[error("stream ended inside a frame")]
    Truncated,
    /// The payload is not a valid encoding of the expected message type.
    #[error("malformed payload: {0}")]
    Malformed(#[source] postcard::Error),
    /// The payload decoded, but bytes were left over: it was not the
    /// expected message type.
    #[error("{extra} unexpected trailing bytes after the message")]
    TrailingBytes {
        /// How many bytes were left.
        extra: usize,
    },
    /// The message cannot be encoded (the serializer refused it).
    #[error("message cannot be encoded: {0}")]
    Unencodable(#[source] postcard::Error),
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl From<CodecError> for HandshakeError {
    fn from(error: CodecError) -> Self {
        if error.is_bad_input() {
            HandshakeError::Unintelligible(error)
        } else {
            HandshakeError::Codec(error)
        }
    }
}

impl CodecError {
    /// True when the remote side sent bytes that break the protocol (as
    /// opposed to the connection merely failing).
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            CodecError::Oversized { .. }
                | CodecError::Truncated
                | CodecError::Malformed(_)
                | CodecError::TrailingBytes { .. }
        )
    }
}

/// Why [`Transport::send`](crate::Transport::send) or
/// [`Transport::reply`](crate::Transport::reply) did not queue a message.
/// The message is dropped in every case.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The node id is not one of the configured peers.
    #[error("{0} is not a configured peer")]
    UnknownPeer(NodeId),
    /// No connection from that client is open (any more).
    #[error("client {0} is not connected")]
    UnknownClient(ClientId),
    /// The outgoing queue is full (the peer is slow or down); the message
    /// was dropped and counted in [`Stats::dropped_queue_full`](crate::Stats).
    #[error("outgoing queue is full")]
    QueueFull,
    /// The transport is shut down.
    #[error("the transport is shut down")]
    Closed,
}
