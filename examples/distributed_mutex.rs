//! A distributed mutex whose data travels with the lock.
//!
//! A lease can carry a small value (up to 64 KiB) that is replicated with
//! it: the holder stores it with `LeaseHandle::write_value` (fenced by its
//! stamp), and the next holder in line receives it in `LeaseHandle::value()`
//! with its grant. The value lives as long as the lease: once nobody holds
//! or waits for the name, it is gone, so the worker that makes the last
//! increment keeps the lock while the total is read. Here one worker on
//! each node increments a shared counter; they take turns, first come
//! first served, and no increment is lost. A holder that writes after
//! giving the lock away is refused.
//!
//! Run it with `cargo run --release --example distributed_mutex`.

#[path = "support/cluster.rs"]
mod cluster;

use bytes::Bytes;
use cluster::BoxError;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use trexlock::{LeaseClient, LeaseError, LeaseHandle};

const MUTEX: &str = "counter";
const TTL: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(10);
const INCREMENTS: u64 = 3;

/// Reads the counter that came with the grant (none yet means 0).
fn counter(value: Option<&Bytes>) -> Result<u64, BoxError> {
    match value {
        None => Ok(0),
        Some(bytes) => Ok(std::str::from_utf8(bytes)?.parse()?),
    }
}

/// Takes the mutex, increments the counter it carries, gives it back;
/// the worker that makes the last increment returns the lock still held.
/// Workers start together (once each has read through its own node), so
/// that they take turns from the first increment: the value lives only
/// while someone holds or waits, and a worker that came late to an empty
/// line would start again from nothing.
async fn worker(
    name: String,
    client: LeaseClient,
    start: Arc<Barrier>,
) -> Result<Option<LeaseHandle>, BoxError> {
    client.holder(MUTEX).await?;
    start.wait().await;
    for _ in 0..INCREMENTS {
        let lock = client.acquire(MUTEX, TTL, WAIT).await?;
        let seen = counter(lock.value().as_ref())?;
        tokio::time::sleep(Duration::from_millis(20)).await; // the critical section
        let next = seen + 1;
        lock.write_value(Bytes::from(next.to_string())).await?;
        println!("{name} (stamp {}): counter {seen} -> {next}", lock.stamp());
        if next == 3 * INCREMENTS {
            return Ok(Some(lock));
        }
        lock.release().await?;
    }
    Ok(None)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;

    let start = Arc::new(Barrier::new(cluster.nodes.len()));
    let mut workers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        let name = format!("worker@node-{}", i + 1);
        let client = node.client(name.clone());
        workers.push(tokio::spawn(worker(name, client, start.clone())));
    }
    let mut last = None;
    for w in workers {
        last = last.or(w.await??);
    }
    let last = last.ok_or("no worker made the last increment")?;

    // Anyone can read the value (a linearizable read through the log)
    // while the lease lives.
    let (_, value) = cluster.nodes[0].client("reader").read(MUTEX).await?;
    let total = counter(value.as_ref())?;
    println!("final counter: {total} (3 workers x {INCREMENTS} increments)");
    assert_eq!(total, 3 * INCREMENTS);
    last.release().await?;

    // A holder that already gave the mutex away cannot write any more.
    let late = cluster.nodes[2].client("late");
    let lock = late.acquire(MUTEX, TTL, WAIT).await?;
    lock.release().await?;
    match lock.write_value(Bytes::from("0")).await {
        Err(e @ LeaseError::StaleStamp { .. }) => println!("write after release: {e}"),
        other => return Err(format!("expected a stale stamp, got {other:?}").into()),
    }
    cluster.shutdown().await
}
