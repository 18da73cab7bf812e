//! Nodes that sync their journal on their own task
//! ([`JournalSync::InPlace`], the `trexlock` command's setting): their
//! votes are as durable as the journal thread's, a leader answers nothing
//! its own journal has not made durable, and a journal that fails stops
//! the node instead of wedging it.

mod common;

use common::Cluster;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use trexlock_lease::{InProcessNetwork, JournalSync, Node, NodeConfig, TryAcquire};
use trexlock_paxos::{Journal, JournalError, JournalState, JournalWrite, MemJournal, NodeId};

const TTL: Duration = Duration::from_secs(10);

fn in_place(config: &mut NodeConfig) {
    config.journal_sync = JournalSync::InPlace;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_syncing_in_place_alone_keep_every_granted_lease() {
    let mut cluster = Cluster::start_with(3, in_place).await;
    let leader = cluster.leader().await;
    let mut stamps = Vec::new();
    for i in 0..10 {
        let client = cluster.client(leader, "owner");
        match client.try_acquire(&format!("l{i}"), TTL).await.unwrap() {
            TryAcquire::Acquired(lease) => stamps.push(lease.stamp()),
            TryAcquire::Held(h) => panic!("held by {h:?}"),
        }
    }
    cluster.shutdown_all().await;
    // Restarted without the old leader, the followers' journals are all
    // there is.
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    for i in &followers {
        cluster.restart(*i).await;
    }
    cluster.leader().await;
    for (i, stamp) in stamps.iter().enumerate() {
        let holder = cluster
            .client(followers[0], "reader")
            .holder(&format!("l{i}"))
            .await
            .unwrap();
        assert_eq!(holder.map(|h| h.stamp), Some(*stamp), "lease l{i} was lost");
    }
}

/// A journal in memory whose writes fail once `broken` is set.
struct Breakable {
    inner: MemJournal,
    broken: Arc<AtomicBool>,
}

impl Journal for Breakable {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.inner.load()
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        if self.broken.load(Ordering::SeqCst) {
            return Err(JournalError::Storage {
                path: "breakable".into(),
                source: "the disk is gone".into(),
            });
        }
        self.inner.persist(write)
    }
}

/// Three nodes syncing in place on journals that fail when switched,
/// once one leads: the nodes, their switches and the leader's index.
async fn breakable_cluster() -> (Vec<Node>, Vec<Arc<AtomicBool>>, usize) {
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let network = InProcessNetwork::new();
    let mut nodes = Vec::new();
    let mut switches = Vec::new();
    for id in &members {
        let mut config = NodeConfig::new(*id, members.clone());
        in_place(&mut config);
        let broken = Arc::new(AtomicBool::new(false));
        let journal = Breakable {
            inner: MemJournal::new(),
            broken: broken.clone(),
        };
        let inbox = network.register(*id);
        let node = Node::start(config, Box::new(journal), network.clone(), inbox)
            .await
            .expect("node starts");
        nodes.push(node);
        switches.push(broken);
    }
    for _ in 0..500 {
        if let Some(leader) = nodes.iter().position(|n| n.status().is_leader) {
            return (nodes, switches, leader);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no leader within 5 s");
}

/// Why `node` stopped, once it has (within 5 s).
async fn stop_reason(node: &Node) -> String {
    for _ in 0..500 {
        if let Some(reason) = node.status().stopped {
            return reason;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node did not stop within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_journal_fails_in_place_stops_naming_the_failure() {
    let (nodes, switches, leader) = breakable_cluster().await;
    let follower = (leader + 1) % 3;
    switches[follower].store(true, Ordering::SeqCst);
    let client = nodes[leader].client("owner");
    assert!(matches!(
        client.try_acquire("x", TTL).await.unwrap(),
        TryAcquire::Acquired(_)
    ));
    let reason = stop_reason(&nodes[follower]).await;
    assert!(reason.contains("the disk is gone"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_syncing_in_place_grants_nothing_its_own_journal_refused() {
    let (nodes, switches, leader) = breakable_cluster().await;
    switches[leader].store(true, Ordering::SeqCst);
    let client = nodes[leader].client("owner");
    let answer = client.try_acquire("x", TTL).await;
    assert!(
        !matches!(answer, Ok(TryAcquire::Acquired(_))),
        "granted on a vote its journal refused"
    );
    let reason = stop_reason(&nodes[leader]).await;
    assert!(reason.contains("the disk is gone"), "{reason}");
}
