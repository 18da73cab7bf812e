//! Leader election on a lease: campaign, observe, resign, and a leader that
//! loses its lease stopping on its own.
//!
//! alpha (on node 1) wins and proclaims its address; bravo (node 2) waits in
//! line and takes over the moment alpha resigns. Then node 2 is cut off from
//! the others: bravo can no longer renew, so it stops acting as leader once
//! `is_leader(GAP)` turns false (or `Elected::lost()` resolves), and only
//! after its lease has run out does charlie (node 3) become leader. (If
//! node 2 also led the Paxos cluster, the new Paxos leader counts bravo's
//! lease again from its own start, so charlie waits a little longer.)
//!
//! Run it with `cargo run --release --example leader_election`.

#[path = "support/cluster.rs"]
mod cluster;

use bytes::Bytes;
use cluster::BoxError;
use std::time::{Duration, Instant};
use trexlock::{Election, NodeId};

const ROLE: &str = "primary";
const TTL: Duration = Duration::from_secs(1);
/// Stop acting this long before the lease could end.
const GAP: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(10);

/// What the current leader proclaimed, as any observer reads it.
async fn proclaimed(observer: &Election) -> Result<String, BoxError> {
    let leader = observer.observe().await?.ok_or("no leader")?;
    let value = leader.value.unwrap_or_default();
    Ok(format!(
        "{} at {}",
        leader.holder.owner,
        String::from_utf8_lossy(&value)
    ))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let start = Instant::now();
    let t = move || format!("t={:.2}s", start.elapsed().as_secs_f64());
    let election =
        |node: usize, who: &str| Election::new(cluster.nodes[node].client(who), ROLE, TTL);
    let observer = election(0, "observer");

    // alpha wins the empty election and proclaims where to find it.
    let alpha = election(0, "alpha")
        .campaign(Bytes::from("10.0.0.1:5432"), WAIT)
        .await?;
    let seen = proclaimed(&observer).await?;
    println!(
        "{} alpha leads (stamp {}); observers see {seen}",
        t(),
        alpha.stamp()
    );

    // bravo campaigns too and waits in line; alpha resigns and bravo takes over.
    let bravo = election(1, "bravo");
    let bravo =
        tokio::spawn(async move { bravo.campaign(Bytes::from("10.0.0.2:5432"), WAIT).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    alpha.resign().await?;
    let mut bravo = bravo.await??;
    let seen = proclaimed(&observer).await?;
    println!(
        "{} alpha resigned; bravo leads (stamp {}); observers see {seen}",
        t(),
        bravo.stamp()
    );
    let bravo_stamp = bravo.stamp();

    // bravo's leader loop: act only while is_leader(GAP); quit when lost.
    let acting = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        let mut acts = 0;
        let why = loop {
            tokio::select! {
                lost = bravo.lost() => break format!("Elected::lost() resolved ({lost})"),
                _ = every.tick() => {
                    if !bravo.is_leader(GAP) {
                        break "is_leader(gap) turned false".to_owned();
                    }
                    acts += 1; // the leader's work, fenced with bravo.stamp()
                }
            }
        };
        (acts, why, t())
    });

    // charlie waits in line; then node 2 (bravo's) is cut off.
    let charlie = election(2, "charlie");
    let charlie =
        tokio::spawn(async move { charlie.campaign(Bytes::from("10.0.0.3:5432"), WAIT).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let also = match cluster.nodes[1].status().is_leader {
        true => " (it also led the Paxos cluster: nodes 1 and 3 elect a new one)",
        false => "",
    };
    cluster.network.isolate(NodeId(2));
    println!("{} node 2 is cut off{also}; bravo cannot renew", t());

    let (acts, why, when) = acting.await?;
    println!("{when} bravo stops acting after {acts} leader actions: {why}");
    let charlie = charlie.await??;
    println!(
        "{} charlie leads (stamp {} > bravo's {bravo_stamp})",
        t(),
        charlie.stamp()
    );
    assert!(charlie.stamp() > bravo_stamp);

    cluster.network.heal();
    println!(
        "{} network healed; observers see {}",
        t(),
        proclaimed(&observer).await?
    );
    charlie.resign().await?;
    cluster.shutdown().await
}
