//! A real three-node trexlock cluster on loopback TCP, with durable redb
//! journals in a temporary directory, used the way an application uses it.
//!
//! `cargo run --release --example quickstart`

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};
use trexlock::remote::{self, JournalFile, RemoteConfig, TcpNode, TcpNodeConfig};
use trexlock::transport::TransportConfig;
use trexlock::{NodeConfig, NodeId, TryAcquire};

const CLUSTER: &str = "quickstart";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let addrs: Vec<SocketAddr> = ids.iter().map(|_| free_port()).collect::<Result<_, _>>()?;

    // 1. Three nodes, each with its own journal file. In production these
    //    are three of your own processes on three machines.
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .zip(&addrs)
            .filter(|(p, _)| *p != id)
            .map(|(p, a)| (*p, *a))
            .collect();
        let config = TcpNodeConfig {
            node: NodeConfig::new(*id, ids.to_vec()),
            transport: TransportConfig::new(CLUSTER, *id, addrs[i], peers),
            journal: JournalFile::Redb(dir.path().join(format!("node-{}.redb", id.0))),
        };
        nodes.push(Some(TcpNode::start(config).await?));
    }
    let leader = wait_for_leader(&nodes).await?;
    println!("cluster up: 3 nodes on {addrs:?}, leader {}", ids[leader]);

    // 2. A client process connects to any nodes and takes a lease.
    let cluster = remote::connect(RemoteConfig::new(CLUSTER, addrs.clone())).await?;
    let alice = cluster.client("alice");
    let ttl = Duration::from_secs(10);
    let TryAcquire::Acquired(lease) = alice.try_acquire("nightly-report", ttl).await? else {
        return Err("nobody else should hold it".into());
    };
    let gap = Duration::from_millis(500);
    println!(
        "alice holds {} with stamp {}: safe for {:?}, or {:?} keeping a {gap:?} safety gap",
        lease.name(),
        lease.stamp(),
        until(lease.expire_time_unsafe()),
        until(lease.expire_time_with_safety_gap(gap)),
    );
    lease.renew().await?;
    println!(
        "alice renewed: safe for {:?} again, same stamp {}",
        until(lease.expire_time_unsafe()),
        lease.stamp()
    );

    // 3. Bob waits in line; when alice releases, he gets it, with a higher stamp.
    let bob = cluster.client("bob");
    let bob_waits = tokio::spawn(async move {
        bob.acquire("nightly-report", ttl, Duration::from_secs(30))
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    lease.release().await?;
    let bobs = bob_waits.await??;
    println!(
        "alice released; bob got it with stamp {} (> {})",
        bobs.stamp(),
        lease.stamp()
    );

    // 4. Stop the leader. The others elect a new one and keep serving; bob's
    //    lease survives the change of leader.
    let stopped_at = Instant::now();
    nodes[leader]
        .take()
        .ok_or("leader missing")?
        .shutdown()
        .await?;
    let new_leader = wait_for_leader(&nodes).await?;
    bobs.renew().await?;
    println!(
        "stopped leader {}; {} leads after {:?}; bob renewed, stamp still {}",
        ids[leader],
        ids[new_leader],
        stopped_at.elapsed(),
        bobs.stamp()
    );
    let carol = cluster.client("carol");
    match carol.try_acquire("nightly-report", ttl).await? {
        TryAcquire::Held(h) => println!(
            "carol is told {} holds it (stamp {}, {} ms left)",
            h.owner, h.stamp, h.remaining_ms
        ),
        TryAcquire::Acquired(_) => return Err("granted twice".into()),
    }
    bobs.release().await?;

    for node in nodes.into_iter().flatten() {
        node.shutdown().await?;
    }
    println!(
        "summary: leased, renewed, handed over in order with growing stamps, survived a leader change"
    );
    Ok(())
}

fn free_port() -> std::io::Result<SocketAddr> {
    TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn until(t: std::time::Instant) -> Duration {
    t.saturating_duration_since(std::time::Instant::now())
}

async fn wait_for_leader(nodes: &[Option<TcpNode>]) -> Result<usize, String> {
    for _ in 0..500 {
        if let Some(i) = nodes
            .iter()
            .position(|n| n.as_ref().is_some_and(|n| n.node().status().is_leader))
        {
            return Ok(i);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Err("no leader elected within 5 s".into())
}
