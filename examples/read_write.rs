//! A read-write lease: readers share it, a writer holds it alone, and a
//! waiting writer is never starved by readers that come after it.
//!
//! Two readers hold the read-write lease "report". A writer asks for it
//! and waits in line. A third reader arrives after the writer: although
//! only readers hold the lease, it is not let in ahead of the writer (it
//! is told the lease is busy, then waits in line behind the writer). When
//! the first two readers release, the writer gets the lease; when the
//! writer releases, the third reader does. Stamps show the order of
//! grants. Upgrades and downgrades are not offered: a reader asking to
//! write is refused until it releases, so no queued writer is slipped
//! past (Curator's RW-lock bugs 276 and 621).
//!
//! Run it with `cargo run --release --example read_write`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::time::Duration;
use trexlock::{LeaseError, Refusal};

const NAME: &str = "report";
const TTL: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(10);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let client = |i: usize, name: &str| cluster.nodes[i % 3].client(name);
    let (reader_1, reader_2) = (client(0, "reader-1"), client(1, "reader-2"));
    let r1 = reader_1.acquire_read(NAME, TTL, WAIT).await?;
    let r2 = reader_2.acquire_read(NAME, TTL, WAIT).await?;
    println!(
        "reader-1 and reader-2 read, stamps {} and {}",
        r1.stamp(),
        r2.stamp()
    );

    let refused = reader_1.acquire_write(NAME, TTL, Duration::ZERO).await;
    assert!(matches!(
        refused,
        Err(LeaseError::Refused(Refusal::OtherModeHeld))
    ));
    println!("reader-1 asking to write: refused (no upgrade; release first)");

    let writer = client(2, "writer");
    let write = tokio::spawn(async move {
        let lease = writer.acquire_write(NAME, TTL, WAIT).await?;
        println!("writer writes, stamp {}", lease.stamp());
        tokio::time::sleep(Duration::from_millis(200)).await;
        println!("writer releases");
        lease.release().await?;
        Ok::<_, LeaseError>(lease.stamp())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let reader_3 = client(0, "reader-3");
    let busy = reader_3.acquire_read(NAME, TTL, Duration::ZERO).await;
    match &busy {
        Err(LeaseError::Busy {
            holders, waiters, ..
        }) => {
            println!("reader-3 not let in ahead of the writer: {holders} hold it, {waiters} waits");
        }
        other => panic!("reader-3 slipped past the waiting writer: {other:?}"),
    }
    let read = tokio::spawn(async move {
        let lease = reader_3.acquire_read(NAME, TTL, WAIT).await?;
        println!("reader-3 reads, stamp {}", lease.stamp());
        lease.release().await?;
        Ok::<_, LeaseError>(lease.stamp())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("reader-1 and reader-2 release");
    r1.release().await?;
    r2.release().await?;

    let (w, r3) = (write.await??, read.await??);
    assert!(
        r2.stamp() < w && w < r3,
        "the writer before the later reader"
    );
    cluster.shutdown().await
}
