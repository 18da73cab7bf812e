//! A whole cluster in one process, on real redb journals.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;
use trexlock_lease::remote::{JournalFile, TcpNode, TcpNodeConfig};
use trexlock_lease::{InProcessNetwork, LeaseClient, Node, NodeConfig};
use trexlock_paxos::NodeId;
use trexlock_test_support::local_addr;
use trexlock_transport::TransportConfig;

pub const CLUSTER: &str = "test-cluster";

pub struct Cluster {
    pub network: Arc<InProcessNetwork>,
    pub nodes: Vec<Option<Node>>,
    pub members: Vec<NodeId>,
    pub dir: TempDir,
    pub tweak: fn(&mut NodeConfig),
}

impl Cluster {
    pub async fn start(n: u16) -> Cluster {
        Cluster::start_with(n, |_| {}).await
    }

    pub async fn start_with(n: u16, tweak: fn(&mut NodeConfig)) -> Cluster {
        let members: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let mut cluster = Cluster {
            network: InProcessNetwork::new(),
            nodes: Vec::new(),
            members: members.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
            tweak,
        };
        for id in members {
            let node = cluster.boot(id).await;
            cluster.nodes.push(Some(node));
        }
        cluster.leader().await;
        cluster
    }

    async fn boot(&self, id: NodeId) -> Node {
        let mut config = NodeConfig::new(id, self.members.clone());
        (self.tweak)(&mut config);
        let inbox = self.network.register(id);
        let path = self.dir.path().join(format!("node-{}.redb", id.0));
        Node::start_with_redb(config, CLUSTER, path, self.network.clone(), inbox)
            .await
            .expect("node starts")
    }

    pub fn node(&self, i: usize) -> &Node {
        self.nodes[i].as_ref().expect("node running")
    }

    pub fn client(&self, i: usize, owner: &str) -> LeaseClient {
        self.node(i).client(owner)
    }

    /// Index of the leader, once one has started its epoch.
    pub async fn leader(&self) -> usize {
        for _ in 0..500 {
            if let Some(i) = self
                .nodes
                .iter()
                .position(|n| n.as_ref().is_some_and(|n| n.status().is_leader))
            {
                return i;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no leader elected within 5 s");
    }

    /// Index of some running node that is not the leader.
    pub async fn follower(&self) -> usize {
        let leader = self.leader().await;
        (0..self.nodes.len())
            .find(|i| *i != leader && self.nodes[*i].is_some())
            .expect("a follower")
    }

    pub async fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill().await;
        }
    }

    pub async fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "stop it first");
        let node = self.boot(self.members[i]).await;
        self.nodes[i] = Some(node);
    }

    pub async fn shutdown_all(&mut self) {
        for slot in &mut self.nodes {
            if let Some(node) = slot.take() {
                node.shutdown().await.expect("clean shutdown");
            }
        }
    }
}

/// A one-node cluster `cluster` on TCP, its journal in `dir`, its
/// transport changed by `tweak` first.
pub async fn tcp_node(
    cluster: &str,
    dir: &Path,
    tweak: impl FnOnce(&mut TransportConfig),
) -> TcpNode {
    let mut transport = TransportConfig::new(cluster, NodeId(1), local_addr(), BTreeMap::new());
    tweak(&mut transport);
    let config = TcpNodeConfig {
        node: NodeConfig::new(NodeId(1), vec![NodeId(1)]),
        transport,
        journal: JournalFile::Redb(dir.join("journal.redb")),
    };
    TcpNode::start(config).await.unwrap()
}
