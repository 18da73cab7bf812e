//! `FencedMutex`: the TrexLock pattern built in. A local mutex tied to a
//! lease locks only while the lease is valid with a safety gap, hands the
//! stamp to the code holding it, and is poisoned for good once the lease
//! is lost, so the work stops (as Consul's `lock` kills its child).
//!
//! Process A holds the lease "ledger" and appends to a fenced ledger under
//! the mutex. Then A's node is cut off from the others: its keep-alive can
//! no longer renew. A's lock refuses as soon as the lease is within the
//! gap of its end (before anyone else can be granted it), and the mutex is
//! poisoned once the keep-alive gives up. Process B, waiting in line,
//! takes over with a higher stamp; the ledger never sees a stale write.
//!
//! Run it with `cargo run --release --example guard`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::BoxError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use trexlock::{FencedMutex, GuardError, LeaseClient, Stamp};

const LEASE: &str = "ledger";
const TTL: Duration = Duration::from_millis(900);
/// Longer than a pause we expect plus one step of work.
const GAP: Duration = Duration::from_millis(200);

/// The protected resource: refuses stamps older than the newest it saw.
/// With the mutex's gap honoured it never has to.
#[derive(Default)]
struct Ledger {
    entries: Mutex<(Stamp, Vec<String>)>,
}

impl Ledger {
    fn append(&self, stamp: Stamp, entry: String) -> Result<(), String> {
        let mut state = self.entries.lock().unwrap();
        if stamp < state.0 {
            return Err(format!("stamp {stamp} is older than {}", state.0));
        }
        state.0 = stamp;
        state.1.push(entry);
        Ok(())
    }
}

/// Appends to the ledger under the mutex, `steps` times or until the
/// mutex refuses; says why it stopped, if it was refused.
async fn work(
    who: &str,
    mutex: &FencedMutex<u32>,
    ledger: &Ledger,
    steps: u32,
) -> Option<GuardError> {
    loop {
        let mut done = match mutex.lock().await {
            Ok(guard) => guard,
            Err(refused) => return Some(refused),
        };
        if *done == steps {
            return None;
        }
        let entry = format!("{who} step {}", *done + 1);
        if let Err(why) = ledger.append(done.stamp(), entry) {
            panic!("{who}: the ledger refused a write under a valid lease: {why}");
        }
        *done += 1;
        drop(done);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let ledger = Arc::new(Ledger::default());

    // Process A: the lease, renewed in the background, tied to a mutex.
    let a: LeaseClient = cluster.nodes[0].client("process-a");
    let lease = Arc::new(a.acquire(LEASE, TTL, Duration::from_secs(10)).await?);
    println!("process-a: holds '{LEASE}' with stamp {}", lease.stamp());
    let mutex_a = FencedMutex::with_keep_alive(lease.clone(), GAP, 0_u32);
    let a_work = work("process-a", &mutex_a, &ledger, u32::MAX);

    // After a while process-a's node is cut off from the others (a
    // partition): renewals stop getting through. Process B waits in line.
    let partition = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        cluster.network.isolate(cluster.nodes[0].id());
        println!("partition: process-a's node is cut off");
    };
    let b = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let client = cluster.nodes[1].client("process-b");
        let lease = Arc::new(client.acquire(LEASE, TTL, Duration::from_secs(10)).await?);
        println!("process-b: holds '{LEASE}' with stamp {}", lease.stamp());
        let mutex = FencedMutex::with_keep_alive(lease.clone(), GAP, 0_u32);
        if let Some(refused) = work("process-b", &mutex, &ledger, 10).await {
            return Err(refused.into());
        }
        let (steps, released) = mutex.release().await;
        released?;
        println!("process-b: {steps} steps done, released");
        Ok::<_, BoxError>(lease.stamp())
    };
    let a = async {
        // Before the lease can be granted to anyone else, the lock refuses
        // (the gap); once the keep-alive gives up, the mutex is poisoned.
        let stopped = a_work.await;
        println!(
            "process-a: the lock refused: {}",
            stopped.expect("a loop without end")
        );
        let poisoned = mutex_a.lost().await;
        println!("process-a: {poisoned}");
    };
    let ((), (), b_stamp) = tokio::join!(a, partition, b);
    let b_stamp = b_stamp?;
    assert!(mutex_a.is_poisoned(), "a lost lease poisons the mutex");
    assert!(matches!(
        mutex_a.lock().await,
        Err(GuardError::Poisoned { .. })
    ));
    cluster.network.heal();
    assert!(b_stamp > lease.stamp());

    let (highest, entries) = ledger.entries.lock().unwrap().clone();
    let a_steps = entries
        .iter()
        .filter(|e| e.starts_with("process-a"))
        .count();
    println!(
        "ledger: {} entries ({a_steps} from process-a, 10 from process-b), highest stamp {highest}",
        entries.len()
    );
    assert_eq!(highest, b_stamp);
    assert_eq!(entries.len() - a_steps, 10);
    cluster.shutdown().await
}
