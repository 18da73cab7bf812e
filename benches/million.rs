//! A million live leases on a real three-node cluster: three `trexlock node`
//! processes on loopback with redb journals (the default) in a temporary
//! directory, driven through the remote client.
//!
//! ```text
//! bash benches/million.sh                      # 1 000 000 leases, 10 000 sessions
//! cargo bench --bench million -- --leases 100000 --sessions 1000
//! ```
//!
//! It measures the acquire p50 of one client on the empty cluster, grants
//! `--leases` leases (TTL one hour) over `--sessions` sessions, measures
//! the acquire p50 again with them in place, waits until every node has
//! taken a snapshot holding all of them, reads each node's RSS and snapshot
//! size, then SIGKILLs a follower and restarts it: the restart time runs
//! from the spawn to the moment the node answers and has applied every
//! slot the leader had (journal load, snapshot decode, replay). The time to
//! take a snapshot is measured in this process, encoding a table of the
//! same shape (the node's core reads no clock, so it cannot time itself).
//! Prints, last,
//! `MILLION leases=N rss_mb=R snapshot_mb=S snapshot_ms=T restart_ms=U acquire_p50_us=V empty_p50_us=W`
//! with the largest RSS and snapshot over the three nodes. Every node
//! process is killed when the bench ends or fails.

#[path = "support/processes.rs"]
mod processes;

use processes::{built_binary, connect, free_port};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use trexlock::lease::command::{Body, ClientId, LeaseToken, Op, Outcome, Request};
use trexlock::lease::remote::RemoteHandle;
use trexlock::lease::remote::{self, RemoteConfig, RemoteStatus};
use trexlock::lease::{LeaseClient, LeaseError, LeaseTable, TryAcquire};

const CLUSTER: &str = "million";
const TTL: Duration = Duration::from_secs(3600);
/// Snapshots every this many slots: the probes after the grant run past
/// it, so every node holds a snapshot with every lease in it.
const SNAPSHOT_EVERY: u64 = 5_000;
/// Sequential acquire + release pairs per latency measurement.
const PROBES: usize = 1_000;
/// Client connections the sessions share.
const CONNECTIONS: usize = 4;
/// Acquires in flight at once while granting.
const IN_FLIGHT: usize = 512;

struct Options {
    leases: u64,
    sessions: u64,
    bin: Option<PathBuf>,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        leases: 1_000_000,
        sessions: 10_000,
        bin: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} wants a value"));
        match arg.as_str() {
            "--leases" => o.leases = value()?.parse().map_err(|_| "--leases wants a number")?,
            "--sessions" => {
                o.sessions = value()?.parse().map_err(|_| "--sessions wants a number")?;
            }
            "--bin" => o.bin = Some(PathBuf::from(value()?)),
            // cargo bench passes --bench to every bench binary.
            "--bench" => {}
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    if o.sessions == 0 || o.leases < o.sessions {
        return Err("--leases must be at least --sessions, which must be positive".into());
    }
    Ok(o)
}

fn main() -> ExitCode {
    let result = options().and_then(|o| {
        let bin = match &o.bin {
            Some(bin) => bin.clone(),
            None => built_binary()?,
        };
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("tokio runtime: {e}"))?
            .block_on(run(o, bin))
    });
    match result {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("million: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(o: Options, bin: PathBuf) -> Result<String, String> {
    let mut nodes = Nodes::start(&bin)?;
    let leader = nodes.leader().await?;
    let order = [leader, (leader + 1) % 3, (leader + 2) % 3];
    let probe = connect(&nodes.remote(&order)).await?;
    let empty_p50 = acquire_p50(&probe, "empty").await?;
    eprintln!("million: empty table, acquire p50 {empty_p50} µs");

    let started = Instant::now();
    grant(&nodes, &order, &o).await?;
    eprintln!(
        "million: granted {} leases over {} sessions in {:.1} s",
        o.leases,
        o.sessions,
        started.elapsed().as_secs_f64()
    );
    let full_p50 = acquire_p50(&probe, "full").await?;
    eprintln!("million: full table, acquire p50 {full_p50} µs");
    let statuses = nodes.until_snapshotted(&probe, o.leases).await?;
    let snapshot_bytes = statuses
        .iter()
        .map(|s| s.metrics.snapshot_bytes)
        .max()
        .unwrap_or(0);
    let rss: Vec<u64> = (0..3).map(|i| nodes.rss_kib(i)).collect::<Result<_, _>>()?;
    eprintln!("million: RSS per node {rss:?} KiB, snapshots {snapshot_bytes} bytes");

    let follower = order[1];
    let target = statuses[leader].applied;
    let restart = nodes.restart(&bin, follower, target).await?;
    let snapshot_ms = snapshot_time(o.leases, o.sessions);
    Ok(format!(
        "MILLION leases={} rss_mb={} snapshot_mb={:.1} snapshot_ms={} restart_ms={} acquire_p50_us={} empty_p50_us={}",
        o.leases,
        rss.iter().max().copied().unwrap_or(0) / 1024,
        snapshot_bytes as f64 / 1e6,
        snapshot_ms.as_millis(),
        restart.as_millis(),
        full_p50,
        empty_p50
    ))
}

/// One client's acquire latency, sequentially: acquire then release.
async fn acquire_p50(node: &RemoteHandle, tag: &str) -> Result<u64, String> {
    let client = node.client(format!("probe-{tag}"));
    let mut micros = Vec::with_capacity(PROBES);
    for k in 0..PROBES {
        let start = Instant::now();
        let lease = match client.try_acquire(&format!("probe-{tag}-{k}"), TTL).await {
            Ok(TryAcquire::Acquired(lease)) => lease,
            other => return Err(format!("probe acquire: {other:?}")),
        };
        micros.push(start.elapsed().as_micros() as u64);
        lease
            .release()
            .await
            .map_err(|e| format!("probe release: {e}"))?;
    }
    micros.sort_unstable();
    Ok(micros[micros.len() / 2])
}

/// Grants `o.leases` leases: session `s` takes names `s`, `s + sessions`,
/// ... so every session holds the same share.
async fn grant(nodes: &Nodes, order: &[usize], o: &Options) -> Result<(), String> {
    let mut handles = Vec::new();
    for _ in 0..CONNECTIONS {
        handles.push(connect(&nodes.remote(order)).await?);
    }
    let next_session = Arc::new(AtomicU64::new(0));
    let local = tokio::task::LocalSet::new();
    let mut workers = Vec::new();
    for w in 0..IN_FLIGHT {
        let node = handles[w % CONNECTIONS].clone();
        let next_session = next_session.clone();
        let (leases, sessions) = (o.leases, o.sessions);
        workers.push(local.spawn_local(async move {
            loop {
                let s = next_session.fetch_add(1, Ordering::Relaxed);
                if s >= sessions {
                    return Ok::<(), String>(());
                }
                let client = node.client(format!("owner-{s:05}"));
                let mut i = s;
                while i < leases {
                    acquire_with_retries(&client, &format!("m-{i:07}")).await?;
                    i += sessions;
                }
            }
        }));
    }
    local
        .run_until(async {
            for w in workers {
                w.await.map_err(|e| e.to_string())??;
            }
            Ok(())
        })
        .await
}

/// Acquires `name`, trying again after a timeout: the same session asking
/// again is answered exactly once (a reentrant acquire), so a retry cannot
/// grant twice. Under full load on a shared machine a call now and then
/// outlasts the client's timeout.
async fn acquire_with_retries(client: &LeaseClient, name: &str) -> Result<(), String> {
    let mut last = None;
    for _ in 0..5 {
        match client.try_acquire(name, TTL).await {
            Ok(TryAcquire::Acquired(_)) => return Ok(()),
            Err(e @ (LeaseError::Timeout | LeaseError::NoLeader)) => last = Some(e),
            other => return Err(format!("acquire {name}: {other:?}")),
        }
    }
    Err(format!("acquire {name}: {last:?} five times"))
}

/// Encodes a table of the shape the cluster holds: `leases` leases over
/// `sessions` owners and sessions.
fn snapshot_time(leases: u64, sessions: u64) -> Duration {
    let mut table = LeaseTable::new();
    let epoch = trexlock::paxos::Ballot {
        counter: 1,
        node: trexlock::paxos::NodeId(1),
    };
    for i in 0..leases {
        let s = i % sessions;
        let request = Request {
            client: ClientId(s),
            request: i / sessions + 1,
            acked_below: i / sessions + 1,
            op: Op::Acquire {
                name: format!("m-{i:07}"),
                owner: format!("owner-{s:05}"),
                token: LeaseToken(u128::from(s).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060)),
                ttl_ms: TTL.as_millis() as u64,
                wait_ms: 0,
            },
        };
        let command = trexlock::lease::command::Command {
            epoch,
            elapsed_us: i,
            body: Body::Request(request),
        };
        let applied = table.apply(&command);
        debug_assert!(matches!(
            applied.responses[0].outcome,
            Outcome::Granted { .. }
        ));
    }
    let start = Instant::now();
    let bytes = table.to_snapshot();
    let took = start.elapsed();
    eprintln!(
        "million: a local table of the same shape encodes to {} bytes in {} ms",
        bytes.len(),
        took.as_millis()
    );
    took
}

/// Three node processes; killed and reaped when dropped.
struct Nodes {
    dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    children: Vec<Option<Child>>,
}

impl Nodes {
    fn start(bin: &Path) -> Result<Nodes, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let addrs = (0..3)
            .map(|_| Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?))))
            .collect::<Result<_, String>>()?;
        let mut nodes = Nodes {
            dir,
            addrs,
            children: Vec::new(),
        };
        for i in 0..3 {
            let mut text = format!(
                "cluster_id = \"{CLUSTER}\"\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\nsnapshot_every = {SNAPSHOT_EVERY}\n[peers]\n",
                i + 1,
                nodes.addrs[i],
                nodes.dir.path().join(format!("n{}", i + 1)).display(),
            );
            for (j, addr) in nodes.addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                text.push_str(&format!("{} = \"{addr}\"\n", j + 1));
            }
            std::fs::write(nodes.config(i), text).map_err(|e| format!("config: {e}"))?;
            let child = nodes.spawn(bin, i)?;
            nodes.children.push(Some(child));
        }
        Ok(nodes)
    }

    fn config(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("n{}.toml", i + 1))
    }

    fn spawn(&self, bin: &Path, i: usize) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("n{}.log", i + 1)))
            .map_err(|e| format!("node log: {e}"))?;
        Command::new(bin)
            .args(["node", "--config"])
            .arg(self.config(i))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))
    }

    fn remote(&self, order: &[usize]) -> RemoteConfig {
        RemoteConfig::new(CLUSTER, order.iter().map(|i| self.addrs[*i]).collect())
    }

    async fn status(&self, i: usize) -> Option<RemoteStatus> {
        remote::status(&self.remote(&[i])).await.ok()
    }

    /// The node that leads, once it grants a lease.
    async fn leader(&self) -> Result<usize, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            for i in 0..3 {
                if self.status(i).await.is_some_and(|s| s.is_leader) {
                    let client = connect(&self.remote(&[i])).await?.client("warm-up");
                    if matches!(
                        client.try_acquire("warm-up", TTL).await,
                        Ok(TryAcquire::Acquired(_))
                    ) {
                        return Ok(i);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err("no leader within 20 s".into())
    }

    /// Reads (one slot each) until every node's latest snapshot holds at
    /// least `leases` leases; returns the nodes' statuses then.
    async fn until_snapshotted(
        &self,
        probe: &RemoteHandle,
        leases: u64,
    ) -> Result<Vec<RemoteStatus>, String> {
        let client = probe.client("filler");
        let deadline = Instant::now() + Duration::from_secs(300);
        while Instant::now() < deadline {
            let mut statuses = Vec::new();
            for i in 0..3 {
                statuses.push(
                    self.status(i)
                        .await
                        .ok_or(format!("node {} is silent", i + 1))?,
                );
            }
            if statuses.iter().all(|s| s.metrics.leases >= leases) {
                return Ok(statuses);
            }
            for _ in 0..200 {
                // A node writing a snapshot of the whole table to its
                // journal may hold a slot up past the client's timeout.
                match client.read("filler").await {
                    Ok(_) | Err(LeaseError::Timeout | LeaseError::NoLeader) => {}
                    Err(e) => return Err(format!("filler read: {e}")),
                }
            }
        }
        Err("no snapshot with every lease within 300 s".into())
    }

    fn rss_kib(&self, i: usize) -> Result<u64, String> {
        let pid = self.children[i].as_ref().ok_or("node not running")?.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no VmRSS for {pid}"))
    }

    /// SIGKILLs node `i`, starts it again and returns the time from the
    /// start until it answers having applied slot `target`.
    async fn restart(&mut self, bin: &Path, i: usize, target: u64) -> Result<Duration, String> {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let start = Instant::now();
        self.children[i] = Some(self.spawn(bin, i)?);
        while start.elapsed() < Duration::from_secs(120) {
            if self.status(i).await.is_some_and(|s| s.applied >= target) {
                return Ok(start.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Err(format!("node {} did not catch up within 120 s", i + 1))
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
