//! Watching leases instead of polling them: a dashboard follows every
//! grant, renewal, write, release and expiry under `jobs/`, each at the
//! log position where it happened; it loses its connection, resumes from
//! the last position it saw on another node and misses nothing; and an
//! election's observer sees every change of leader as it happens.
//!
//! Run it with `cargo run --release --example watch`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::time::Duration;
use trexlock::table::Event;
use trexlock::{Election, LeaderChange, TryAcquire, Watch, WatchEvent};

const WAIT: Duration = Duration::from_secs(5);

async fn next(watch: &mut Watch) -> Result<WatchEvent, BoxError> {
    match tokio::time::timeout(WAIT, watch.next()).await? {
        Some(event) => Ok(event?),
        None => Err("the watch ended".into()),
    }
}

fn describe(e: &WatchEvent) -> String {
    match &e.event {
        Event::Granted {
            name, owner, stamp, ..
        } => format!("{name} granted to {owner} (stamp {stamp})"),
        Event::Renewed { name, stamp } => format!("{name} renewed (stamp {stamp})"),
        Event::Written { name, value, .. } => {
            format!("{name} value {:?}", String::from_utf8_lossy(value))
        }
        Event::Released { name, stamp } => format!("{name} released (stamp {stamp})"),
        Event::Expired { name, stamp } => format!("{name} expired (stamp {stamp})"),
        Event::SessionEnded { session, .. } => format!("lease session {session} ended"),
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let dashboard = cluster.nodes[1].client("dashboard");
    let mut watch = dashboard.watch("jobs/").await?;
    println!("watching jobs/ from position {}", watch.position());

    let worker = cluster.nodes[0].client("worker-1");
    let TryAcquire::Acquired(job) = worker
        .try_acquire("jobs/42", Duration::from_secs(10))
        .await?
    else {
        return Err("jobs/42 is free in a new cluster".into());
    };
    job.renew().await?;
    job.write_value("step 1 of 3".into()).await?;
    for _ in 0..3 {
        let e = next(&mut watch).await?;
        println!("  {:>6}  {}", e.position.to_string(), describe(&e));
    }

    // The dashboard goes away; meanwhile the work goes on.
    let seen = watch.position();
    drop(watch);
    job.write_value("step 2 of 3".into()).await?;
    job.release().await?;
    let TryAcquire::Acquired(short) = worker
        .try_acquire("jobs/43", Duration::from_millis(300))
        .await?
    else {
        return Err("jobs/43 is free".into());
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Any later command applies the expiry; a read will do.
    worker.holder("jobs/43").await?;
    println!("dashboard back on another node, resuming after {seen}");
    let mut watch = cluster.nodes[2]
        .client("dashboard")
        .watch_from("jobs/", seen)
        .await?;
    let mut stamps = Vec::new();
    for _ in 0..4 {
        let e = next(&mut watch).await?;
        println!("  {:>6}  {}", e.position.to_string(), describe(&e));
        stamps.push(e.event);
    }
    let expired =
        matches!(stamps.last(), Some(Event::Expired { stamp, .. }) if *stamp == short.stamp());
    if !expired {
        return Err(format!("expected jobs/43's expiry last, saw {stamps:?}").into());
    }

    // An election's observers follow every change of leader.
    let observer = Election::new(cluster.nodes[2].client("observer"), "primary", WAIT);
    let mut changes = observer.changes().await?;
    let a = Election::new(cluster.nodes[0].client("db-a"), "primary", WAIT);
    let b = Election::new(cluster.nodes[1].client("db-b"), "primary", WAIT);
    let leading = a.campaign("10.0.0.7:5432".into(), WAIT).await?;
    leading.resign().await?;
    let leading = b.campaign("10.0.0.8:5432".into(), WAIT).await?;
    for _ in 0..5 {
        let change = tokio::time::timeout(WAIT, changes.next())
            .await?
            .ok_or("ended")??;
        match change {
            LeaderChange::Elected { owner, stamp, .. } => {
                println!("  leader: {owner} (stamp {stamp})")
            }
            LeaderChange::Proclaimed { value, .. } => {
                println!("  proclaimed: {}", String::from_utf8_lossy(&value))
            }
            LeaderChange::Vacant { .. } => println!("  no leader"),
        }
    }
    leading.resign().await?;
    drop(changes);
    cluster.shutdown().await?;
    println!("done");
    Ok(())
}
