//! Nodes that sync their journal on their own task
//! ([`JournalSync::InPlace`], the `trexlock` command's setting), leaders
//! included: their votes are as durable as the journal thread's, a leader
//! answers nothing its own journal has not made durable, and a journal
//! that fails stops the node instead of wedging it.

mod common;

use common::Cluster;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trexlock_lease::{InProcessNetwork, JournalSync, LeaseError, Node, NodeConfig, TryAcquire};
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

/// A journal in memory whose writes fail once `broken` is set, and which
/// notes the names of the threads that wrote to it.
struct Breakable {
    inner: MemJournal,
    broken: Arc<AtomicBool>,
    writers: Arc<Mutex<BTreeSet<String>>>,
}

impl Journal for Breakable {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.inner.load()
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        let thread = std::thread::current()
            .name()
            .unwrap_or("unnamed")
            .to_owned();
        self.writers.lock().unwrap().insert(thread);
        if self.broken.load(Ordering::SeqCst) {
            return Err(JournalError::Storage {
                path: "breakable".into(),
                source: "the disk is gone".into(),
            });
        }
        self.inner.persist(write)
    }
}

/// Three nodes syncing in place on their [`Breakable`] journals, once one
/// of them leads.
struct BreakableCluster {
    nodes: Vec<Node>,
    switches: Vec<Arc<AtomicBool>>,
    writers: Vec<Arc<Mutex<BTreeSet<String>>>>,
    leader: usize,
}

async fn breakable_cluster() -> BreakableCluster {
    let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let network = InProcessNetwork::new();
    let (mut nodes, mut switches, mut writers) = (Vec::new(), Vec::new(), Vec::new());
    for id in &members {
        let mut config = NodeConfig::new(*id, members.clone());
        in_place(&mut config);
        let journal = Breakable {
            inner: MemJournal::new(),
            broken: Arc::default(),
            writers: Arc::default(),
        };
        switches.push(journal.broken.clone());
        writers.push(journal.writers.clone());
        let inbox = network.register(*id);
        let node = Node::start(config, Box::new(journal), network.clone(), inbox)
            .await
            .expect("node starts");
        nodes.push(node);
    }
    for _ in 0..500 {
        if let Some(leader) = nodes.iter().position(|n| n.status().is_leader) {
            return BreakableCluster {
                nodes,
                switches,
                writers,
                leader,
            };
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
    let c = breakable_cluster().await;
    let follower = (c.leader + 1) % 3;
    c.switches[follower].store(true, Ordering::SeqCst);
    let client = c.nodes[c.leader].client("owner");
    assert!(matches!(
        client.try_acquire("x", TTL).await.unwrap(),
        TryAcquire::Acquired(_)
    ));
    let reason = stop_reason(&c.nodes[follower]).await;
    assert!(reason.contains("the disk is gone"), "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_syncing_in_place_writes_its_journal_on_its_own_task() {
    let c = breakable_cluster().await;
    let client = c.nodes[c.leader].client("owner");
    for i in 0..5 {
        assert!(matches!(
            client.try_acquire(&format!("l{i}"), TTL).await.unwrap(),
            TryAcquire::Acquired(_)
        ));
    }
    assert!(c.nodes[c.leader].status().is_leader, "leadership moved");
    let writers = c.writers[c.leader].lock().unwrap().clone();
    assert!(!writers.is_empty());
    assert!(
        writers.iter().all(|t| !t.starts_with("trexlock-journal")),
        "the leader's journal was written by {writers:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_syncing_in_place_grants_nothing_its_own_journal_refused() {
    let c = breakable_cluster().await;
    let client = c.nodes[c.leader].client("owner");
    assert!(matches!(
        client.try_acquire("first", TTL).await.unwrap(),
        TryAcquire::Acquired(_)
    ));
    c.switches[c.leader].store(true, Ordering::SeqCst);
    let answer = client.try_acquire("x", TTL).await;
    assert_eq!(
        answer.err(),
        Some(LeaseError::Stopped),
        "granted on a vote its journal refused"
    );
    let reason = stop_reason(&c.nodes[c.leader]).await;
    assert!(reason.contains("the disk is gone"), "{reason}");
}
