//! Fencing tokens: why a lease alone is not a mutex, and how the stamp
//! makes it safe.
//!
//! A holder checks its lease, finds it valid, and then pauses (a GC pause, a
//! swapped-out process, a slow disk) for longer than the lease. Nothing it
//! can check prevents that. Meanwhile the cluster lets its lease run out
//! and grants it to another worker, with a higher stamp. When the paused
//! holder wakes up and writes, the resource, which remembers the highest
//! stamp it has seen, refuses the late write.
//!
//! Run it with `cargo run --release --example fenced_resource`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trexlock::{Stamp, TryAcquire};

const LEASE: &str = "ledger";
const TTL: Duration = Duration::from_secs(1);
const GAP: Duration = Duration::from_millis(200);
const PAUSE: Duration = Duration::from_millis(1500);

/// The protected resource. In real life: a database row with a `fence`
/// column (`UPDATE ... WHERE fence <= $stamp`), an object store with
/// conditional writes, a service that checks a header.
#[derive(Default)]
struct Ledger {
    state: Mutex<(Stamp, Vec<String>)>,
}

impl Ledger {
    fn write(&self, stamp: Stamp, entry: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        let highest = state.0;
        if stamp < highest {
            return Err(format!("refused: stamp {stamp} < highest seen {highest}"));
        }
        state.0 = stamp;
        state.1.push(format!("{entry} (stamp {stamp})"));
        Ok(())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let start = Instant::now();
    let t = move || format!("t={:.2}s", start.elapsed().as_secs_f64());
    let ledger = Arc::new(Ledger::default());

    let slow = cluster.nodes[0].client("slow-worker");
    let TryAcquire::Acquired(lease) = slow.try_acquire(LEASE, TTL).await? else {
        return Err("the ledger lease should be free".into());
    };
    ledger.write(lease.stamp(), "slow-worker: entry 1")?;
    println!(
        "{} slow-worker: lease stamp {}, entry 1 written",
        t(),
        lease.stamp()
    );

    // The holder checks its lease correctly, with a safety gap...
    assert!(lease.is_valid_with_safety_gap(GAP));
    println!(
        "{} slow-worker: lease valid (with a {GAP:?} gap); about to write entry 2...",
        t()
    );
    // ...and then freezes for longer than the lease, renewing nothing.
    let paused = {
        let ledger = ledger.clone();
        tokio::spawn(async move {
            tokio::time::sleep(PAUSE).await;
            println!(
                "{} slow-worker: wakes from a {PAUSE:?} pause and writes entry 2",
                t()
            );
            let late = ledger.write(lease.stamp(), "slow-worker: entry 2");
            println!(
                "{} ledger: {}",
                t(),
                late.clone().err().unwrap_or("accepted!".into())
            );
            let still_valid = lease.is_valid_with_safety_gap(GAP);
            println!(
                "{} slow-worker: is_valid_with_safety_gap now says {still_valid}",
                t()
            );
            (late, lease.renew().await)
        })
    };

    // Another worker waits in line; the cluster grants it the lease only
    // once the slow worker's lease has run out, never earlier.
    let fast = cluster.nodes[1].client("fast-worker");
    let next = fast.acquire(LEASE, TTL, Duration::from_secs(5)).await?;
    println!(
        "{} fast-worker: granted the lease, stamp {}",
        t(),
        next.stamp()
    );
    ledger.write(next.stamp(), "fast-worker: entry 2")?;
    println!("{} fast-worker: entry 2 written", t());

    let (late, renew) = paused.await?;
    assert!(late.is_err(), "the stale write must be refused");
    println!(
        "{} slow-worker: renew -> {}",
        t(),
        renew.err().ok_or("renewed a lost lease")?
    );
    next.release().await?;

    println!("ledger contents:");
    for entry in &ledger.state.lock().unwrap().1 {
        println!("  {entry}");
    }
    cluster.shutdown().await
}
