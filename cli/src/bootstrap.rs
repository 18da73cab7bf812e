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
//! A node the cluster lists as a voter starts as a bootstrap member only
//! while the membership is still the one the cluster began with: after a
//! change, an empty journal would relearn against memberships the TOML
//! cannot name, so it is refused and told to take the disk-loss procedure
//! (remove it, add it back as a learner). Answers that make a node join or
//! refuse come from the leader when one answers: a lagging member may list
//! an older membership. When no peer answers, the cluster is new and the
//! TOML's members are the bootstrap members.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use trexlock_lease::Role;
use trexlock_lease::client::{MemberError, MemberList};
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
    /// This node has no journal, and the running cluster lists it as a
    /// voter of a membership other than the one its configuration
    /// bootstraps: it lost its disk after the membership changed (or its
    /// `[peers]` are not the cluster's first members). It must not vote as
    /// the member it was: the disk-loss procedure takes it out and back in
    /// as a learner.
    #[error(
        "node {node} has an empty journal and the running cluster lists it as a voter, but not of the membership its configuration starts from (the cluster's voters: {voters}, in effect from slot {effective}; [peers] and this node: {configured}): an empty journal cannot relearn what this node voted for since; take it out and add it back as a learner: trexlock member remove {node} --cluster <id> --servers <a member>, then trexlock member add {node} <address> ..., start it again, and promote it once caught up"
    )]
    EmptyVoter {
        /// This node.
        node: u16,
        /// The voters the cluster listed.
        voters: String,
        /// From which slot the cluster's newest membership governs.
        effective: u64,
        /// The members the configuration file names.
        configured: String,
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

/// How long a first start waits for the leader's word before it acts on
/// another member's when that word would make it join or refuse: a member
/// that lags (or relearns after a disk loss) may list an older membership.
const LEADER_WAIT: Duration = Duration::from_secs(10);

/// How a node with no record starts, as the running cluster lists it.
#[derive(Debug, PartialEq, Eq)]
enum Start {
    /// A bootstrap member: the TOML's members are the cluster's first ones.
    Bootstrap,
    /// A learner the cluster added: it joins, reaching these members.
    Join(BTreeMap<String, SocketAddr>),
}

/// Decides how a node with no record starts: a learner the cluster lists
/// joins; a journal already there (a node from before records) or a
/// cluster that does not answer bootstraps from the TOML. An answer that
/// would make it join or refuse is taken from the leader when one answers
/// within [`LEADER_WAIT`].
async fn first_start(config: &TcpNodeConfig) -> Result<Record, BootstrapError> {
    let me = config.node.node;
    let record = |joining, peers| Record {
        cluster_id: config.transport.cluster_id.clone(),
        node_id: me.0,
        joining,
        peers,
    };
    let toml_peers = names(&config.transport.peers);
    if config.journal.path().exists() || config.transport.peers.is_empty() {
        return Ok(record(false, toml_peers));
    }
    let mut ask = RemoteConfig::new(
        config.transport.cluster_id.clone(),
        config.transport.peers.values().copied().collect(),
    );
    ask.tls = config.transport.tls.clone();
    ask.insecure = config.transport.insecure;
    let deadline = tokio::time::Instant::now() + LEADER_WAIT;
    let mut heard = None;
    let list = loop {
        match remote::member_list(&ask).await {
            Ok(list) => {
                let from_leader = list.leader == Some(list.node);
                let plain = decide(&list, config).is_ok_and(|s| s == Start::Bootstrap);
                if from_leader || plain || tokio::time::Instant::now() >= deadline {
                    break Some(list);
                }
                heard = Some(list);
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(MemberError::Cluster(_) | MemberError::Refused(_)) => break heard,
        }
    };
    let Some(list) = list else {
        tracing::info!(%me, "no peer answered: bootstrapping a new cluster from the configuration file");
        return Ok(record(false, toml_peers));
    };
    match decide(&list, config)? {
        Start::Bootstrap => {
            tracing::info!(%me, "bootstrapping from the configuration file: first start of a bootstrap member");
            Ok(record(false, toml_peers))
        }
        Start::Join(peers) => {
            tracing::info!(%me, ?peers, "the cluster lists this node as a learner: joining it");
            Ok(record(true, peers))
        }
    }
}

/// What the members `list` says about this node, which has no journal.
///
/// A learner joins. A voter starts as a bootstrap member only if the
/// cluster still has the membership it began with and the TOML names it:
/// an empty journal then relearns as the replica's rejoin rules say,
/// asking every other voter. Once the membership has changed, an empty
/// journal cannot tell which memberships governed the slots it missed,
/// and the TOML's members are not the cluster's first ones (a node added
/// later never had any): such a node is refused, and takes the disk-loss
/// procedure (remove it, add it back as a learner).
fn decide(list: &MemberList, config: &TcpNodeConfig) -> Result<Start, BootstrapError> {
    let me = config.node.node;
    let listed = |role| {
        list.members
            .iter()
            .filter(move |m| m.role == role)
            .map(|m| m.node)
    };
    let described = |role| joined(listed(role));
    match list.members.iter().find(|m| m.node == me).map(|m| m.role) {
        Some(Role::Learner) => {
            // The members as the cluster lists them, not as [peers] does:
            // the leader may be one [peers] does not name, and its links
            // must be admitted before this node learns the membership from
            // the log.
            let peers = list
                .members
                .iter()
                .filter(|m| m.node != me)
                .filter_map(|m| Some((m.node.0.to_string(), m.address.as_ref()?.parse().ok()?)))
                .collect();
            Ok(Start::Join(peers))
        }
        Some(Role::Voter) => {
            let voters: BTreeSet<NodeId> = listed(Role::Voter).collect();
            let configured: BTreeSet<NodeId> = config.node.members.iter().copied().collect();
            if list.effective <= 1 && voters == configured {
                return Ok(Start::Bootstrap);
            }
            Err(BootstrapError::EmptyVoter {
                node: me.0,
                voters: described(Role::Voter),
                effective: list.effective,
                configured: joined(configured.iter()),
            })
        }
        None => Err(BootstrapError::NotAMember {
            node: me.0,
            members: joined(list.members.iter().map(|m| m.node)),
        }),
    }
}

fn joined<N: std::borrow::Borrow<NodeId>>(nodes: impl Iterator<Item = N>) -> String {
    let names: Vec<String> = nodes.map(|n| n.borrow().to_string()).collect();
    names.join(", ")
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

    fn listed(effective: u64, voters: &[u16], learners: &[u16]) -> MemberList {
        let member = |node: u16, role| trexlock_lease::MemberInfo {
            node: NodeId(node),
            role,
            address: Some(format!("127.0.0.1:{}", 7000 + node)),
            lag: None,
        };
        let voters = voters.iter().map(|n| member(*n, Role::Voter));
        let learners = learners.iter().map(|n| member(*n, Role::Learner));
        MemberList {
            node: NodeId(2),
            leader: Some(NodeId(2)),
            committed: 9000,
            effective,
            members: voters.chain(learners).collect(),
        }
    }

    #[test]
    fn an_empty_voter_starts_as_a_bootstrap_member_only_in_the_first_membership() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &[(2, "127.0.0.1:9"), (3, "127.0.0.1:10")]);
        assert_eq!(
            decide(&listed(1, &[1, 2, 3], &[]), &config).unwrap(),
            Start::Bootstrap
        );
        // Node 1 lost its disk after node 3 was replaced by node 13: the
        // TOML's members are no longer the cluster's, whatever they say.
        let error = decide(&listed(5012, &[1, 2, 13], &[]), &config)
            .unwrap_err()
            .to_string();
        assert!(error.contains("node 1 has an empty journal"), "{error}");
        assert!(error.contains("n1, n2, n13"), "{error}");
        assert!(error.contains("trexlock member remove 1"), "{error}");
        // Changed and changed back: still not the first membership.
        let back = decide(&listed(600, &[1, 2, 3], &[]), &config);
        assert!(
            matches!(back, Err(BootstrapError::EmptyVoter { effective: 600, .. })),
            "{back:?}"
        );
    }

    #[test]
    fn a_listed_learner_joins_reaching_the_members_the_cluster_lists() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &[(2, "127.0.0.1:9")]);
        let start = decide(&listed(700, &[2, 3, 4], &[1]), &config).unwrap();
        let Start::Join(peers) = start else {
            panic!("{start:?}")
        };
        assert_eq!(peers.keys().collect::<Vec<_>>(), ["2", "3", "4"]);
        let stranger = decide(&listed(700, &[2, 3, 4], &[]), &config);
        assert!(
            matches!(stranger, Err(BootstrapError::NotAMember { node: 1, .. })),
            "{stranger:?}"
        );
    }
}
