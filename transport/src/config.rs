//! The transport's configuration.

use crate::codec::MAX_FRAME_LIMIT;
use crate::error::ConfigError;
use crate::handshake::HANDSHAKE_MAX_FRAME_BYTES;
use crate::tls::TlsConfig;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use trexlock_paxos::NodeId;

/// The default [`TransportConfig::max_frame_bytes`], also used by
/// [`ClientConnection`](crate::ClientConnection): 16 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

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
    /// The largest frame accepted or sent; a larger incoming frame drops its
    /// connection. Default 16 MiB.
    pub max_frame_bytes: usize,
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
    /// Mutual TLS. `None` means plain, unauthenticated TCP: for loopback and
    /// tests only, never across a network anyone else can reach.
    pub tls: Option<TlsConfig>,
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
            queue_capacity: 4096,
            connect_backoff_min: Duration::from_millis(50),
            connect_backoff_max: Duration::from_secs(2),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            shutdown_grace: Duration::from_secs(2),
            tls: None,
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
    }
}
