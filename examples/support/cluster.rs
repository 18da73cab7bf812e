//! Shared by the pattern examples: a three-node trexlock cluster inside this
//! one process, talking over an in-process network, with a redb journal per
//! node in a temporary directory. In production each node is a separate
//! process of your service; the lease API is the same.
#![allow(dead_code)] // each example uses a different part

use std::sync::Arc;
use std::time::Duration;
use trexlock::{InProcessNetwork, Node, NodeConfig, NodeId};

/// Errors from anywhere in an example.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub struct Cluster {
    pub network: Arc<InProcessNetwork>,
    pub nodes: Vec<Node>,
    _dir: tempfile::TempDir, // the journals; deleted on drop
}

/// Starts nodes 1, 2 and 3 and waits until they have elected a leader.
pub async fn start() -> Result<Cluster, BoxError> {
    let dir = tempfile::tempdir()?;
    let network = InProcessNetwork::new();
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let mut nodes = Vec::new();
    for id in &members {
        let config = NodeConfig::new(*id, members.clone());
        let inbox = network.register(*id);
        let journal = dir.path().join(format!("node-{}.redb", id.0));
        let node = Node::start_with_redb(config, "example", journal, network.clone(), inbox);
        nodes.push(node.await?);
    }
    let leader = nodes[0]
        .handle()
        .wait_for_leader(Duration::from_secs(5))
        .await;
    leader.ok_or("no leader elected within 5 s")?;
    Ok(Cluster {
        network,
        nodes,
        _dir: dir,
    })
}

impl Cluster {
    /// Stops every node cleanly (journals synced and closed).
    pub async fn shutdown(self) -> Result<(), BoxError> {
        for node in self.nodes {
            node.shutdown().await?;
        }
        Ok(())
    }
}
