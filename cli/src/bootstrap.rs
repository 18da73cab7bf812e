//! A node takes its members from its TOML once: the first start records
//! them in `bootstrap.toml` beside the journal, and every later start uses
//! that record, whatever `[peers]` says by then. From there on the node
//! follows the membership committed in its log (members added, promoted
//! and removed at runtime, with their addresses).
//!
//! Why the record: the replica rebuilds which membership governs each slot
//! from the bootstrap membership plus the changes in its log, so the
//! bootstrap membership must be the same at every start. An operator who
//! edits `[peers]` after a change must not rewrite history.
//!
//! At the first start the node also asks its configured peers who the
//! members are. A node the cluster lists as a learner (added with
//! `trexlock member add`) joins as one: it starts empty, needs only the
//! leader, and votes once promoted. A node the cluster does not list is
//! refused, so that a wiped node is never mistaken for a bootstrap member.
//! When no peer answers, the cluster is new and the TOML's members are the
//! bootstrap members.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use trexlock_lease::Role;
use trexlock_lease::client::MemberError;
use trexlock_lease::remote::{self, RemoteConfig, TcpNodeConfig};
use trexlock_paxos::NodeId;

/// The record's file name, in the data directory.
pub const FILE: &str = "bootstrap.toml";

/// What the first start recorded.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    cluster_id: String,
    node_id: u16,
    /// True when this node joined a running cluster as a learner: its
    /// peers are where to find the cluster, not a membership.
    joining: bool,
    /// The other bootstrap members (or, joining, the nodes to ask first),
    /// by id.
    peers: BTreeMap<String, SocketAddr>,
}

/// Why a node may not start on its bootstrap record.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// The record cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The record.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The record does not parse, or is another node's or cluster's.
    #[error("{path}: {message}")]
    Invalid {
        /// The record.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The running cluster does not list this node: add it first.
    #[error(
        "node {node} is not a member of the running cluster (members: {members}); add it first: trexlock member add {node} <address> --cluster <id> --servers <a member>"
    )]
    NotAMember {
        /// This node.
        node: u16,
        /// The members the cluster listed.
        members: String,
    },
}

/// Settles the members `config` starts with: the recorded ones, else
/// (first start) those the cluster or the TOML names, recorded.
///
/// # Errors
/// A [`BootstrapError`] naming the cause.
pub async fn settle(config: &mut TcpNodeConfig) -> Result<(), BootstrapError> {
    let dir = config
        .journal
        .path()
        .parent()
        .map(Path::to_owned)
        .unwrap_or_default();
    let path = dir.join(FILE);
    let me = config.node.node;
    let record = match read(&path)? {
        Some(record) => {
            check(&record, config, &path)?;
            let toml_peers = names(&config.transport.peers);
            if toml_peers != record.peers {
                tracing::info!(%me, recorded = ?record.peers, "[peers] differ from the first start's: this node follows the committed membership, and [peers] are read at the first start only");
            }
            record
        }
        None => {
            let record = first_start(config).await?;
            write(&dir, &path, &record)?;
            record
        }
    };
    apply(&record, config, &path)
}

/// Decides how a node with no record starts: a learner the cluster lists
/// joins; a journal already there (a node from before records) or a
/// cluster that does not answer bootstraps from the TOML.
async fn first_start(config: &TcpNodeConfig) -> Result<Record, BootstrapError> {
    let me = config.node.node;
    let record = |joining| Record {
        cluster_id: config.transport.cluster_id.clone(),
        node_id: me.0,
        joining,
        peers: names(&config.transport.peers),
    };
    if config.journal.path().exists() || config.transport.peers.is_empty() {
        return Ok(record(false));
    }
    let mut ask = RemoteConfig::new(
        config.transport.cluster_id.clone(),
        config.transport.peers.values().copied().collect(),
    );
    ask.tls = config.transport.tls.clone();
    ask.insecure = config.transport.insecure;
    match remote::member_list(&ask).await {
        Ok(list) => match list.members.iter().find(|m| m.node == me) {
            Some(m) if m.role == Role::Learner => {
                // The members as the cluster lists them, not as [peers]
                // does: the leader may be one [peers] does not name, and
                // its links must be admitted before this node learns the
                // membership from the log.
                let peers = list
                    .members
                    .iter()
                    .filter(|m| m.node != me)
                    .filter_map(|m| Some((m.node.0.to_string(), m.address.as_ref()?.parse().ok()?)))
                    .collect();
                tracing::info!(%me, ?peers, "the cluster lists this node as a learner: joining it");
                Ok(Record {
                    peers,
                    ..record(true)
                })
            }
            Some(_) => {
                tracing::info!(%me, "bootstrapping from the configuration file: first start of a bootstrap member");
                Ok(record(false))
            }
            None => Err(BootstrapError::NotAMember {
                node: me.0,
                members: list
                    .members
                    .iter()
                    .map(|m| m.node.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        },
        Err(MemberError::Cluster(_) | MemberError::Refused(_)) => {
            tracing::info!(%me, "no peer answered: bootstrapping a new cluster from the configuration file");
            Ok(record(false))
        }
    }
}

/// Sets `config`'s members and peers from `record`.
fn apply(record: &Record, config: &mut TcpNodeConfig, path: &Path) -> Result<(), BootstrapError> {
    let mut peers = BTreeMap::new();
    for (id, addr) in &record.peers {
        let id: u16 = id
            .parse()
            .map_err(|_| invalid(path, format!("peer id {id:?} is not a number")))?;
        peers.insert(NodeId(id), *addr);
    }
    let me = config.node.node;
    let mut members: Vec<NodeId> = peers.keys().copied().collect();
    if !record.joining {
        members.push(me);
    }
    members.sort();
    tracing::info!(%me, ?members, joining = record.joining, "bootstrap members (recorded at the first start)");
    config.node.members = members;
    config.transport.peers = peers;
    Ok(())
}

fn check(record: &Record, config: &TcpNodeConfig, path: &Path) -> Result<(), BootstrapError> {
    if record.cluster_id != config.transport.cluster_id || record.node_id != config.node.node.0 {
        return Err(invalid(
            path,
            format!(
                "recorded for node {} of cluster {:?}, not node {} of {:?}",
                record.node_id, record.cluster_id, config.node.node, config.transport.cluster_id
            ),
        ));
    }
    Ok(())
}

fn names(peers: &BTreeMap<NodeId, SocketAddr>) -> BTreeMap<String, SocketAddr> {
    peers.iter().map(|(id, a)| (id.0.to_string(), *a)).collect()
}

fn invalid(path: &Path, message: String) -> BootstrapError {
    BootstrapError::Invalid {
        path: path.to_owned(),
        message,
    }
}

fn read(path: &Path) -> Result<Option<Record>, BootstrapError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BootstrapError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    toml::from_str(&text)
        .map(Some)
        .map_err(|e| invalid(path, e.to_string()))
}

/// Writes the record durably: a temporary file synced, renamed into place,
/// and the folder synced, so a crash leaves the whole record or none.
fn write(dir: &Path, path: &Path, record: &Record) -> Result<(), BootstrapError> {
    let io = |source| BootstrapError::Io {
        path: path.to_owned(),
        source,
    };
    let text = toml::to_string(record).map_err(|e| invalid(path, e.to_string()))?;
    let tmp = dir.join(format!("{FILE}.tmp"));
    let mut file = std::fs::File::create(&tmp).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use trexlock_lease::NodeConfig;
    use trexlock_lease::remote::JournalFile;
    use trexlock_transport::TransportConfig;

    fn config(dir: &Path, peers: &[(u16, &str)]) -> TcpNodeConfig {
        let peers: BTreeMap<NodeId, SocketAddr> = peers
            .iter()
            .map(|(id, a)| (NodeId(*id), a.parse().unwrap()))
            .collect();
        let mut members: Vec<NodeId> = peers.keys().copied().collect();
        members.push(NodeId(1));
        TcpNodeConfig {
            node: NodeConfig::new(NodeId(1), members),
            transport: TransportConfig::new(
                "orders",
                NodeId(1),
                "127.0.0.1:7001".parse().unwrap(),
                peers,
            ),
            journal: JournalFile::Redb(dir.join("journal.redb")),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_members_recorded_at_the_first_start_win_over_a_later_toml() {
        let dir = tempfile::tempdir().unwrap();
        // Nobody listens on these ports: a new cluster.
        let first = [(2, "127.0.0.1:9"), (3, "127.0.0.1:10")];
        let mut started = config(dir.path(), &first);
        settle(&mut started).await.unwrap();
        assert_eq!(started.node.members, [1, 2, 3].map(NodeId));
        let mut edited = config(dir.path(), &[(2, "127.0.0.1:9"), (5, "127.0.0.1:11")]);
        settle(&mut edited).await.unwrap();
        assert_eq!(edited.node.members, [1, 2, 3].map(NodeId));
        assert_eq!(
            edited.transport.peers.keys().copied().collect::<Vec<_>>(),
            [2, 3].map(NodeId)
        );
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_record_of_another_node_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut started = config(dir.path(), &[(2, "127.0.0.1:9")]);
        settle(&mut started).await.unwrap();
        let mut other = config(dir.path(), &[(2, "127.0.0.1:9")]);
        other.node.node = NodeId(2);
        let error = settle(&mut other).await.unwrap_err().to_string();
        assert!(error.contains("recorded for node 1"), "{error}");
    }
}
