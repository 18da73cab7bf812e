//! Lease sessions: one TTL and one keep-alive for many leases (etcd's
//! `Session`, Hazelcast's CP session).
//!
//! Process A owns 64 shards. Instead of renewing 64 leases, it binds them
//! to one session: one keep per interval renews them all. Its work on
//! shard 7 runs under a `FencedMutex` tied to the session. Process B waits
//! for shard 7. Then A's node is cut off from the others: A's keeps stop
//! getting through, the session runs out, and all 64 shards end together
//! in one command. B is granted shard 7 (never before A's deadline), and
//! A's mutex is poisoned by the lost-session signal, so its work stops.
//!
//! Run it with `cargo run --release --example session`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::sync::Arc;
use std::time::{Duration, Instant};
use trexlock::{FencedMutex, GuardError};

const SHARDS: usize = 64;
const TTL: Duration = Duration::from_millis(900);
const GAP: Duration = Duration::from_millis(200);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;

    // Process A: one session, 64 leases bound to it.
    let a = cluster.nodes[0].client("process-a");
    let session = a.open_session(TTL).await?;
    let mut shards = Vec::new();
    for shard in 0..SHARDS {
        shards.push(Arc::new(
            session
                .acquire(&format!("shard-{shard}"), Duration::ZERO)
                .await?,
        ));
    }
    println!("process-a: session {} holds {SHARDS} shards", session.id());
    let shard_7 = FencedMutex::in_session(shards[7].clone(), &session, GAP, 0_u32);

    // Three TTLs later every shard is still A's: the session's keep-alive
    // renewed all 64 with one command per interval.
    tokio::time::sleep(3 * TTL).await;
    let reader = cluster.nodes[2].client("reader");
    for shard in &shards {
        let holder = reader
            .holder(shard.name())
            .await?
            .ok_or("a shard ran out")?;
        assert_eq!(holder.stamp, shard.stamp());
    }
    println!(
        "process-a: after {:?} all {SHARDS} shards are still held",
        3 * TTL
    );
    *shard_7.lock().await? += 1;

    // Process B waits in line for shard 7.
    let b = cluster.nodes[1].client("process-b");
    let waiting = tokio::spawn(async move {
        b.acquire("shard-7", Duration::from_secs(10), Duration::from_secs(10))
            .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A's node is cut off: keeps stop getting through.
    let a_deadline = session.expire_time_unsafe();
    cluster.network.isolate(cluster.nodes[0].id());
    println!("partition: process-a's node is cut off");
    let lost = session.lost().await;
    println!("process-a: session lost: {lost}");
    assert!(matches!(
        shard_7.lock().await,
        Err(GuardError::Poisoned { .. })
    ));
    println!("process-a: the shard-7 mutex is poisoned; work stops");

    let lease_b = waiting.await??;
    let granted_at = Instant::now();
    println!("process-b: holds shard-7 with stamp {}", lease_b.stamp());
    assert!(lease_b.stamp() > shards[7].stamp());
    assert!(
        granted_at >= a_deadline,
        "granted before process-a's deadline"
    );
    cluster.network.heal();
    // Every other shard ended with the session.
    for shard in shards.iter().filter(|s| s.name() != "shard-7") {
        assert!(reader.holder(shard.name()).await?.is_none());
    }
    println!("all {SHARDS} shards ended with the session; shard-7 went to its waiter");
    lease_b.release().await?;
    cluster.shutdown().await
}
