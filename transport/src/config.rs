//! The transport's configuration.

use crate::codec::MAX_FRAME_LIMIT;
use crate::error::ConfigError;
use crate::handshake::HANDSHAKE_MAX_FRAME_BYTES;
use crate::identity::Identity;
use crate::tls::TlsConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use trexlock_paxos::NodeId;

/// The default [`TransportConfig::max_frame_bytes`], the limit of frames
/// between peers: 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// The default [`TransportConfig::max_client_frame_bytes`], also the limit
/// of [`ClientConnection`](crate::ClientConnection): 1 MiB.
pub const DEFAULT_MAX_CLIENT_FRAME_BYTES: usize = 1024 * 1024;

/// The default [`TransportConfig::max_connections`]: 256.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// The default [`TransportConfig::max_connections_per_address`]: 64.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;

/// The default [`TransportConfig::client_idle_timeout`]: 120 s.
pub const DEFAULT_CLIENT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The default [`TransportConfig::handshake_timeout`], also used by
/// [`ClientConnection`](crate::ClientConnection): 5 s.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a node's transport needs. Build it with
/// [`TransportConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
pub struct TransportConfig {
    /// Names the cluster; connections naming another cluster are refused.
    pub cluster_id: String,
    /// This node.
    pub node: NodeId,
    /// Where this node accepts peers and clients.
    pub listen: SocketAddr,
    /// Every other member and where it listens.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// The largest frame accepted from or sent to a peer; a larger incoming
    /// frame drops its connection. Default 16 MiB.
    pub max_frame_bytes: usize,
    /// The largest frame accepted from or sent to a client; a larger
    /// incoming frame drops its connection. At most `max_frame_bytes`.
    /// Default 1 MiB.
    pub max_client_frame_bytes: usize,
    /// Incoming connections open at once, peers' links excepted: beyond it
    /// new connections are closed at once, without a TLS handshake. Keep it
    /// well below the process's file descriptor limit. Default 256.
    pub max_connections: usize,
    /// Incoming connections open at once from one IP address (peers' links
    /// excepted), so that one host cannot take every slot. Default 64.
    pub max_connections_per_address: usize,
    /// A client connection that neither sends a request nor is sent a reply
    /// for this long is closed (the remote client reconnects when it needs
    /// to). Default 120 s.
    pub client_idle_timeout: Duration,
    /// Messages queued per peer (and per client) before new ones are
    /// dropped. Default 4096.
    pub queue_capacity: usize,
    /// The first delay before reconnecting to a peer. Default 50 ms.
    pub connect_backoff_min: Duration,
    /// The longest delay between reconnection attempts. Default 2 s.
    pub connect_backoff_max: Duration,
    /// How long connecting plus the TLS and protocol handshakes may take,
    /// on either side. Default 5 s.
    pub handshake_timeout: Duration,
    /// How long [`Transport::shutdown`](crate::Transport::shutdown) waits for
    /// queued frames to be flushed. Default 2 s.
    pub shutdown_grace: Duration,
    /// Mutual TLS. `None` means plain, unauthenticated TCP, which
    /// [`TransportConfig::validate`] allows only when the listen address and
    /// every peer address are loopback addresses, unless `insecure` is set.
    pub tls: Option<TlsConfig>,
    /// Allows plain TCP on addresses other machines can reach: anyone who
    /// can reach the port can then pose as any node or client. Default
    /// false.
    pub insecure: bool,
}

impl TransportConfig {
    /// A plain-TCP configuration with the default limits and timings.
    pub fn new(
        cluster_id: impl Into<String>,
        node: NodeId,
        listen: SocketAddr,
        peers: BTreeMap<NodeId, SocketAddr>,
    ) -> Self {
        TransportConfig {
            cluster_id: cluster_id.into(),
            node,
            listen,
            peers,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_client_frame_bytes: DEFAULT_MAX_CLIENT_FRAME_BYTES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS,
            client_idle_timeout: DEFAULT_CLIENT_IDLE_TIMEOUT,
            queue_capacity: 4096,
            connect_backoff_min: Duration::from_millis(50),
            connect_backoff_max: Duration::from_secs(2),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: Duration::from_secs(2),
            tls: None,
            insecure: false,
        }
    }

    /// Checks that the configuration can work; [`Transport::start`] calls it.
    ///
    /// [`Transport::start`]: crate::Transport::start
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty() {
            return Err(ConfigError::EmptyClusterId);
        }
        if self.peers.contains_key(&self.node) {
            return Err(ConfigError::SelfInPeers(self.node));
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::ZeroQueueCapacity);
        }
        if !(HANDSHAKE_MAX_FRAME_BYTES..=MAX_FRAME_LIMIT).contains(&self.max_frame_bytes) {
            return Err(ConfigError::FrameSize {
                min: HANDSHAKE_MAX_FRAME_BYTES,
                max: MAX_FRAME_LIMIT,
                got: self.max_frame_bytes,
            });
        }
        if self.connect_backoff_min.is_zero() || self.connect_backoff_min > self.connect_backoff_max
        {
            return Err(ConfigError::Backoff);
        }
        if self.handshake_timeout.is_zero() {
            return Err(ConfigError::ZeroHandshakeTimeout);
        }
        if self.client_idle_timeout.is_zero() {
            return Err(ConfigError::ZeroClientIdleTimeout);
        }
        if !(HANDSHAKE_MAX_FRAME_BYTES..=self.max_frame_bytes)
            .contains(&self.max_client_frame_bytes)
        {
            return Err(ConfigError::ClientFrameSize {
                min: HANDSHAKE_MAX_FRAME_BYTES,
                max: self.max_frame_bytes,
                got: self.max_client_frame_bytes,
            });
        }
        if self.max_connections <= self.peers.len()
            || !(1..=self.max_connections).contains(&self.max_connections_per_address)
        {
            return Err(ConfigError::ConnectionLimits {
                total: self.max_connections,
                per_address: self.max_connections_per_address,
                peers: self.peers.len(),
            });
        }
        match &self.tls {
            Some(tls) => {
                let expected = Identity::Node {
                    cluster: self.cluster_id.clone(),
                    node: self.node,
                };
                if *tls.identity() != expected {
                    return Err(ConfigError::CertificateIdentity {
                        expected: expected.uri(),
                        certified: tls.identity().uri(),
                    });
                }
            }
            None if !self.insecure => {
                let addrs = std::iter::once(&self.listen).chain(self.peers.values());
                if let Some(&addr) = addrs.into_iter().find(|a| !a.ip().is_loopback()) {
                    return Err(ConfigError::PlainTcpNotLoopback { addr });
                }
            }
            None => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> TransportConfig {
        TransportConfig::new(
            "c",
            NodeId(1),
            "127.0.0.1:0".parse().unwrap(),
            BTreeMap::new(),
        )
    }

    #[test]
    fn the_defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn unusable_settings_are_rejected_before_anything_starts() {
        let mut c = config();
        c.queue_capacity = 0;
        assert_eq!(c.validate(), Err(ConfigError::ZeroQueueCapacity));
        let mut c = config();
        c.peers.insert(NodeId(1), c.listen);
        assert_eq!(c.validate(), Err(ConfigError::SelfInPeers(NodeId(1))));
        let mut c = config();
        c.connect_backoff_max = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::Backoff));
        let mut c = config();
        c.max_frame_bytes = 10;
        assert!(matches!(c.validate(), Err(ConfigError::FrameSize { .. })));
        let mut c = config();
        c.cluster_id.clear();
        assert_eq!(c.validate(), Err(ConfigError::EmptyClusterId));
        let mut c = config();
        c.max_client_frame_bytes = c.max_frame_bytes + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ClientFrameSize { .. })
        ));
        let mut c = config();
        c.max_connections_per_address = c.max_connections + 1;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ConnectionLimits { .. })
        ));
        let mut c = config();
        c.client_idle_timeout = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::ZeroClientIdleTimeout));
    }

    #[test]
    fn the_client_frame_limit_is_far_below_the_peer_frame_limit_by_default() {
        let c = config();
        assert!(c.max_client_frame_bytes * 16 <= c.max_frame_bytes);
    }

    #[test]
    fn plain_tcp_is_refused_off_loopback_unless_insecure_is_explicit() {
        let mut c = config();
        c.listen = "0.0.0.0:7001".parse().unwrap();
        assert_eq!(
            c.validate(),
            Err(ConfigError::PlainTcpNotLoopback { addr: c.listen })
        );
        let mut c = config();
        let remote: SocketAddr = "10.1.2.3:7002".parse().unwrap();
        c.peers.insert(NodeId(2), remote);
        assert_eq!(
            c.validate(),
            Err(ConfigError::PlainTcpNotLoopback { addr: remote })
        );
        c.insecure = true;
        assert_eq!(c.validate(), Ok(()));
        let mut c = config();
        c.listen = "[::1]:7001".parse().unwrap();
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn a_node_certificate_must_name_this_node_of_this_cluster() {
        let ca = crate::certs::ClusterCa::generate("c").unwrap();
        let mut c = config();
        c.tls = Some(ca.node(NodeId(2)).unwrap().tls(ca.cert_pem()).unwrap());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CertificateIdentity { .. })
        ));
        c.tls = Some(ca.client("alice").unwrap().tls(ca.cert_pem()).unwrap());
        assert!(matches!(
            c.validate(),
            Err(ConfigError::CertificateIdentity { .. })
        ));
        c.tls = Some(ca.node(NodeId(1)).unwrap().tls(ca.cert_pem()).unwrap());
        assert_eq!(c.validate(), Ok(()));
    }
}
