//! Many workers, many tasks: lease the SHARD, not the task.
//!
//! 200 tasks, nine in ten on one hot resource; six workers on three nodes.
//!
//! - Anti-pattern, a lease per task: take the task's resource lease, do the
//!   task, release. Every task costs consensus rounds, and workers that drew
//!   a hot task queue up behind it while the cold tasks wait.
//! - Pattern, a lease per shard: take a free shard's lease, drain the shard
//!   renewing the lease as needed, release. A few rounds per shard, and the
//!   other workers take the other shards meanwhile.
//!
//! Consensus rounds = Paxos slots applied on node 1 (`metrics().slots_applied`
//! before and after; a slot may batch concurrent commands, and the leader
//! adds bare ticks that expire leases). Lease calls are the workers' own; an
//! `acquire` served from the wait line also renews once, uncounted there.
//! Refused calls are idle workers finding every shard left busy (per 100 ms).
//!
//! Run it with `cargo run --release --example job_runner`.

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{BoxError, Cluster};
use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use trexlock::{LeaseClient, LeaseError, TryAcquire};

const TASKS: usize = 200;
const RESOURCES: usize = 8;
const WORKERS: usize = 6;
const WORK: Duration = Duration::from_millis(2);
const TTL: Duration = Duration::from_millis(600);

/// Nine tasks in ten go to resource 0, the hot one.
fn resource_of(task: usize) -> usize {
    match task % 10 {
        0 => 1 + task / 10 % (RESOURCES - 1),
        _ => 0,
    }
}

/// The job queue (a table in your database, say) and what happened to it.
struct Queue {
    todo: Mutex<VecDeque<usize>>,
    start: Instant,
    last_cold_done: Mutex<Duration>,
    lease_calls: AtomicU64,
    refused: AtomicU64,
}

impl Queue {
    fn next(&self) -> Option<usize> {
        self.todo.lock().unwrap().pop_front()
    }
    fn next_in(&self, shard: usize) -> Option<usize> {
        let mut todo = self.todo.lock().unwrap();
        let at = todo.iter().position(|t| resource_of(*t) == shard)?;
        todo.remove(at)
    }
    fn shards_with_work(&self) -> BTreeSet<usize> {
        let todo = self.todo.lock().unwrap();
        todo.iter().map(|t| resource_of(*t)).collect()
    }
    fn calls(&self, n: u64) {
        self.lease_calls.fetch_add(n, Relaxed);
    }
    async fn run(&self, task: usize) {
        tokio::time::sleep(WORK).await; // the task's work, fenced by the lease's stamp
        if resource_of(task) != 0 {
            *self.last_cold_done.lock().unwrap() = self.start.elapsed();
        }
    }
}

/// The anti-pattern: one lease (so one consensus round or more) per task.
async fn lease_per_task(queue: Arc<Queue>, client: LeaseClient) -> Result<(), LeaseError> {
    while let Some(task) = queue.next() {
        let name = format!("resource-{}", resource_of(task));
        let lease = client.acquire(&name, TTL, Duration::from_secs(30)).await?;
        queue.run(task).await;
        lease.release().await?;
        queue.calls(2);
    }
    Ok(())
}

/// The pattern: take a free shard, drain it renewing as needed, release.
async fn lease_per_shard(queue: Arc<Queue>, client: LeaseClient) -> Result<(), LeaseError> {
    loop {
        let shards = queue.shards_with_work();
        if shards.is_empty() {
            return Ok(());
        }
        let mut drained = false;
        for shard in shards {
            queue.calls(1);
            let name = format!("shard-{shard}");
            let TryAcquire::Acquired(lease) = client.try_acquire(&name, TTL).await? else {
                queue.refused.fetch_add(1, Relaxed); // another worker is draining it
                continue;
            };
            while let Some(task) = queue.next_in(shard) {
                if !lease.is_valid_with_safety_gap(TTL / 2) {
                    queue.calls(1);
                    lease.renew().await?;
                }
                queue.run(task).await;
            }
            queue.calls(1);
            lease.release().await?;
            drained = true;
        }
        if !drained {
            tokio::time::sleep(Duration::from_millis(100)).await; // all taken: back off
        }
    }
}

async fn run(cluster: &Cluster, title: &str, per_shard: bool) -> Result<(), BoxError> {
    let queue = Arc::new(Queue {
        todo: Mutex::new((0..TASKS).collect()),
        start: Instant::now(),
        last_cold_done: Mutex::new(Duration::ZERO),
        lease_calls: AtomicU64::new(0),
        refused: AtomicU64::new(0),
    });
    let slots_before = cluster.nodes[0].metrics().slots_applied;
    let mut workers = Vec::new();
    for w in 0..WORKERS {
        let client = cluster.nodes[w % 3].client(format!("worker-{w}"));
        workers.push(match per_shard {
            false => tokio::spawn(lease_per_task(queue.clone(), client)),
            true => tokio::spawn(lease_per_shard(queue.clone(), client)),
        });
    }
    for w in workers {
        w.await??;
    }
    let wall = queue.start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(100)).await; // let node 1 apply the last slots
    let slots = cluster.nodes[0].metrics().slots_applied - slots_before;
    let (calls, refused) = (queue.lease_calls.load(Relaxed), queue.refused.load(Relaxed));
    let cold = queue.last_cold_done.lock().unwrap().as_secs_f64();
    let per_task = |n: u64| n as f64 / TASKS as f64;
    println!("{title}: all done in {wall:.2}s; last cold task done at {cold:.2}s");
    println!(
        "  {slots} Paxos slots = {:.2} consensus rounds per task",
        per_task(slots)
    );
    println!(
        "  {calls} lease calls = {:.2} per task ({refused} refused)",
        per_task(calls)
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let cluster = cluster::start().await?;
    let hot = (0..TASKS).filter(|t| resource_of(*t) == 0).count();
    println!(
        "{TASKS} tasks ({hot} on one hot resource), {WORKERS} workers on 3 nodes, {WORK:?} of work per task"
    );
    run(&cluster, "anti-pattern, a lease per task", false).await?;
    run(&cluster, "pattern, a lease per shard", true).await?;
    cluster.shutdown().await
}
