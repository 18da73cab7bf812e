//! The JVM TrexLock pattern: take the distributed lease first, then a local
//! `std::sync::Mutex`.
//!
//! The lease decides which PROCESS owns the inventory; the local mutex
//! decides which THREAD of that process works on it right now. Before each
//! critical step a thread checks `is_valid_with_safety_gap(GAP)` (the gap
//! covers a pause between the check and the write), and every write carries
//! the lease's stamp, so the inventory can refuse a holder whose lease ran
//! out. Two processes (on nodes 1 and 2) want the lease; the second waits in
//! line and gets it, with a higher stamp, when the first releases it.
//!
//! Run it with `cargo run --release --example lease_then_mutex`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trexlock::{KeepAlive, LeaseClient, LeaseHandle, Stamp};

const LEASE: &str = "inventory";
const TTL: Duration = Duration::from_secs(2);
/// Longer than the longest pause we expect plus one step of work.
const GAP: Duration = Duration::from_millis(500);
const THREADS: usize = 3;
const STEPS: usize = 2;

/// The protected resource (a database, a file, a remote API). It remembers
/// the highest stamp it has seen and refuses older ones.
#[derive(Default)]
struct Inventory {
    state: Mutex<(Stamp, Vec<String>)>,
}

impl Inventory {
    fn write(&self, stamp: Stamp, entry: String) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if stamp < state.0 {
            return Err(format!("stamp {stamp} is older than {}", state.0));
        }
        state.0 = stamp;
        state.1.push(entry);
        Ok(())
    }
}

/// One process of the service: lease first, then the local mutex.
async fn process(
    name: &str,
    client: LeaseClient,
    inventory: Arc<Inventory>,
) -> Result<(), BoxError> {
    // 1. The distributed lease, waiting in line for up to 10 s; renewed in
    //    the background while the threads work.
    let lease = Arc::new(client.acquire(LEASE, TTL, Duration::from_secs(10)).await?);
    let keep_alive = KeepAlive::start(lease.clone());
    println!("{name}: holds lease '{LEASE}' with stamp {}", lease.stamp());

    // 2. The local mutex, shared by this process's threads. It guards what
    //    the process does with the inventory (here: a count of its steps).
    let (name, held) = (name.to_owned(), lease.clone());
    tokio::task::spawn_blocking(move || {
        let local = Mutex::new(0_usize);
        std::thread::scope(|s| {
            for t in 1..=THREADS {
                let who = format!("{name}/thread-{t}");
                let (held, local, inventory) = (&held, &local, &inventory);
                s.spawn(move || thread(&who, held, local, inventory));
            }
        });
        let steps = local.into_inner().unwrap();
        println!("{name}: {steps} steps done under the local mutex");
    })
    .await?;

    // 5. Stop renewing and give the lease to the next in line.
    drop(keep_alive);
    lease.release().await?;
    Ok(())
}

/// One thread of a process that holds the lease.
fn thread(who: &str, lease: &LeaseHandle, local: &Mutex<usize>, inventory: &Inventory) {
    for step in 1..=STEPS {
        let mut steps = local.lock().unwrap();
        // 3. Check the lease, with the gap, before each step (and after
        //    taking the local mutex: waiting for it takes time).
        if !lease.is_valid_with_safety_gap(GAP) {
            println!("{who}: lease too close to expiry, stopping");
            return;
        }
        // 4. Hand the stamp to the resource.
        let entry = format!("{who} step {step}");
        match inventory.write(lease.stamp(), entry.clone()) {
            Ok(()) => {
                *steps += 1;
                println!("  {entry}: written with stamp {}", lease.stamp());
            }
            Err(why) => println!("  {entry}: refused, {why}"),
        }
        std::thread::sleep(Duration::from_millis(30)); // the work
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let inventory = Arc::new(Inventory::default());
    let a = process(
        "process-a",
        cluster.nodes[0].client("process-a"),
        inventory.clone(),
    );
    let b = async {
        tokio::time::sleep(Duration::from_millis(50)).await; // a asks first
        let client = cluster.nodes[1].client("process-b");
        if let Some(holder) = client.holder(LEASE).await? {
            println!(
                "process-b: '{LEASE}' is held by {}, waiting in line",
                holder.owner
            );
        }
        process("process-b", client, inventory.clone()).await
    };
    let (a, b) = tokio::join!(a, b);
    a?;
    b?;

    let (highest, writes) = inventory.state.lock().unwrap().clone();
    println!(
        "inventory: {} writes accepted, highest stamp {highest}",
        writes.len()
    );
    assert_eq!(writes.len(), 2 * THREADS * STEPS);
    cluster.shutdown().await
}
