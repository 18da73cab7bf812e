//! The node's TOML configuration file.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trexlock_lease::remote::{JournalFile, TcpNodeConfig};
use trexlock_lease::{DriftBound, JournalSync, NodeConfig};
use trexlock_paxos::NodeId;
use trexlock_transport::{TlsConfig, TransportConfig};

/// A node's configuration file, e.g.
///
/// ```toml
/// cluster_id = "orders"
/// node_id = 1
/// listen = "127.0.0.1:7001"
/// data_dir = "/var/lib/trexlock/n1"
///
/// # Optional: the journal engine, "redb" (the default, data_dir/journal.redb)
/// # or "log" (an append-only file, data_dir/journal.log: cheaper syncs).
/// # journal = "log"
///
/// # Optional: serve /metrics (Prometheus), /health and /ready over HTTP.
/// # metrics_listen = "127.0.0.1:9101"
///
/// # Without [tls], plain TCP is allowed only on loopback addresses unless
/// # this says so explicitly (anyone who reaches the port can then pose as
/// # any node or client).
/// # insecure = false
///
/// # Optional limits (the defaults shown).
/// # max_frame_bytes = 16777216        # peer frames
/// # max_client_frame_bytes = 1048576  # client frames
/// # max_connections = 256             # incoming, peer links excepted
/// # max_connections_per_address = 64
/// # client_idle_timeout_ms = 120000
///
/// # Optional timings.
/// # heartbeat_ms = 50
/// # election_timeout_ms = 300
/// # drift_ppm = 1000
/// # snapshot_every = 10000
///
/// [peers]
/// 2 = "127.0.0.1:7002"
/// 3 = "127.0.0.1:7003"
///
/// # Optional: mutual TLS with certificates from the cluster CA, the node's
/// # naming trexlock://orders/node/1 (`trexlock certs` makes them). Relative
/// # paths are resolved against this file's folder.
/// # [tls]
/// # ca = "certs/ca.pem"
/// # cert = "certs/node-1.pem"
/// # key = "certs/node-1.key"
/// ```
///
/// Every top-level key comes before `[peers]` and `[tls]`: TOML puts each
/// key after a table header into that table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    cluster_id: String,
    node_id: u16,
    listen: SocketAddr,
    data_dir: PathBuf,
    #[serde(default)]
    journal: JournalEngine,
    peers: BTreeMap<String, SocketAddr>,
    tls: Option<TlsFiles>,
    #[serde(default)]
    insecure: bool,
    max_frame_bytes: Option<usize>,
    max_client_frame_bytes: Option<usize>,
    max_connections: Option<usize>,
    max_connections_per_address: Option<usize>,
    client_idle_timeout_ms: Option<u64>,
    heartbeat_ms: Option<u64>,
    election_timeout_ms: Option<u64>,
    drift_ppm: Option<u32>,
    snapshot_every: Option<u64>,
    metrics_listen: Option<SocketAddr>,
    max_leases: Option<usize>,
}

/// The `journal` setting.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JournalEngine {
    /// `data_dir/journal.redb`.
    #[default]
    Redb,
    /// `data_dir/journal.log`.
    Log,
}

/// PEM files for mutual TLS.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsFiles {
    /// Reads the files.
    pub fn load(&self) -> Result<TlsConfig, ConfigError> {
        TlsConfig::from_pem_files(&self.ca, &self.cert, &self.key)
            .map_err(|e| ConfigError::Invalid(e.to_string()))
    }
}

/// Why a configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (names the field).
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, naming the field and line.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: FileConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        // Relative certificate paths are the file's, not the working
        // directory's: a node started from anywhere finds the same files.
        if let (Some(tls), Some(folder)) = (&mut config.tls, path.parent()) {
            for file in [&mut tls.ca, &mut tls.cert, &mut tls.key] {
                *file = folder.join(&*file);
            }
        }
        Ok(config)
    }

    /// Where the node serves `/metrics`, `/health` and `/ready`, if set.
    pub fn metrics_listen(&self) -> Option<SocketAddr> {
        self.metrics_listen
    }

    /// Builds the node's settings.
    pub fn into_node_config(self) -> Result<TcpNodeConfig, ConfigError> {
        let me = NodeId(self.node_id);
        let mut peers = BTreeMap::new();
        for (id, addr) in self.peers {
            let id: u16 = id
                .parse()
                .map_err(|_| ConfigError::Invalid(format!("peer id {id:?} is not a number")))?;
            if id == self.node_id {
                return Err(ConfigError::Invalid(format!(
                    "node {id} lists itself as a peer"
                )));
            }
            peers.insert(NodeId(id), addr);
        }
        let mut members: Vec<NodeId> = peers.keys().copied().collect();
        members.push(me);
        members.sort();
        let mut node = NodeConfig::new(me, members);
        // This process's runtime serves the node alone (see `main`), so the
        // node may block it for a sync: two fewer thread hand-offs on the
        // path of every vote.
        node.journal_sync = JournalSync::InPlace;
        if let Some(ms) = self.heartbeat_ms {
            node.heartbeat_interval = Duration::from_millis(ms);
        }
        if let Some(ms) = self.election_timeout_ms {
            node.election_timeout = Duration::from_millis(ms);
        }
        if let Some(ppm) = self.drift_ppm {
            node.drift = DriftBound::from_ppm(ppm).map_err(ConfigError::Invalid)?;
        }
        if let Some(n) = self.snapshot_every {
            node.snapshot_every = n;
        }
        if let Some(n) = self.max_leases {
            node.max_leases = n;
        }
        let mut transport = TransportConfig::new(self.cluster_id, me, self.listen, peers);
        transport.tls = self.tls.as_ref().map(TlsFiles::load).transpose()?;
        transport.insecure = self.insecure;
        if let Some(n) = self.max_frame_bytes {
            transport.max_frame_bytes = n;
        }
        if let Some(n) = self.max_client_frame_bytes {
            transport.max_client_frame_bytes = n;
        }
        if let Some(n) = self.max_connections {
            transport.max_connections = n;
        }
        if let Some(n) = self.max_connections_per_address {
            transport.max_connections_per_address = n;
        }
        if let Some(ms) = self.client_idle_timeout_ms {
            transport.client_idle_timeout = Duration::from_millis(ms);
        }
        transport
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        std::fs::create_dir_all(&self.data_dir).map_err(|source| ConfigError::Read {
            path: self.data_dir.clone(),
            source,
        })?;
        Ok(TcpNodeConfig {
            node,
            transport,
            journal: match self.journal {
                JournalEngine::Redb => JournalFile::Redb(self.data_dir.join("journal.redb")),
                JournalEngine::Log => JournalFile::Log(self.data_dir.join("journal.log")),
            },
        })
    }
}
