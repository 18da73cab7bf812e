//! A semaphore: at most N holders at once, each with its own stamp.
//!
//! Five workers share two GPUs, guarded by the semaphore "gpus" of two
//! permits. Each takes a permit (waiting in line, first come first
//! served), works while its permit is valid with a safety gap, then
//! releases it, which hands the permit to the next worker in line. One
//! worker crashes while holding its permit and never releases it: its
//! permit expires with its TTL and the line moves on. A counter checks
//! that no more than two workers ever work at once.
//!
//! Run it with `cargo run --release --example semaphore`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use trexlock::LeaseError;

const NAME: &str = "gpus";
const PERMITS: u32 = 2;
const TTL: Duration = Duration::from_millis(800);
const GAP: Duration = Duration::from_millis(100);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let working = AtomicUsize::new(0);
    let most = AtomicUsize::new(0);
    let worker = |i: usize| {
        let client = cluster.nodes[i % 3].client(format!("worker-{i}"));
        let (working, most) = (&working, &most);
        async move {
            // Arrive in order, so the line's order is the workers' order.
            tokio::time::sleep(Duration::from_millis(30 * i as u64)).await;
            let wait = Duration::from_secs(10);
            let permit = client.acquire_permit(NAME, PERMITS, TTL, wait).await?;
            let now = working.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            println!(
                "worker-{i}: permit with stamp {} ({now} working)",
                permit.stamp()
            );
            for _ in 0..3 {
                assert!(
                    permit.is_valid_with_safety_gap(GAP),
                    "checked before each step"
                );
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            working.fetch_sub(1, Ordering::SeqCst);
            if i == 1 {
                // Crashes: never releases. The permit expires with its TTL.
                println!("worker-{i}: crashes holding its permit");
                return Ok::<_, LeaseError>(());
            }
            permit.release().await?;
            println!("worker-{i}: released");
            Ok(())
        }
    };
    let (a, b, c, d, e) = tokio::join!(worker(0), worker(1), worker(2), worker(3), worker(4));
    for result in [a, b, c, d, e] {
        result?;
    }
    let most = most.load(Ordering::SeqCst);
    println!("at most {most} workers worked at once");
    assert!(most <= PERMITS as usize);
    cluster.shutdown().await
}
