//! Cluster load benchmark: three `trexlock node` processes on loopback, each
//! with its own durable journal (redb, or with `--journal log` the
//! append-only log) in a temporary directory, driven through the remote
//! client.
//!
//! ```text
//! cargo bench --bench cluster                       # every case
//! cargo bench --bench cluster -- --case uncontended:64 --secs 5
//! ```
//!
//! Cases (`--case NAME[:CLIENTS]`, repeatable; default all, in this order):
//! - `uncontended:K` (K = 1, 16, 64): each client acquires and releases its
//!   own lease in a loop; one op = acquire + release. With one client it
//!   also prints `case=acquire`, the latency of the acquire alone.
//! - `contended:16`: every client waits in line for ONE lease, then
//!   releases it; one op = one acquisition, latency = the wait.
//! - `renew:64`: 64 held leases renewed as fast as possible.
//! - `renew_session:64`: 64 leases held by ONE lease session, renewed all
//!   together by keeping the session in a loop; one op = one keep (64
//!   lease renewals), `clients=` is the number of leases (etcd's side:
//!   one lease with 64 keys on one keep-alive stream).
//! - `watch:16`: 16 watchers, each on a connection of its own, watch the
//!   prefix `w/` while 16 writers acquire and release their own names under
//!   it (two events per cycle); one op = one event delivered to one
//!   watcher, latency = the gap since that watcher's previous event.
//! - `failover:16`: the uncontended load, then SIGKILL of the leader; prints
//!   `FAILOVER system=trexlock recovery_ms=X`, the time from the kill to the
//!   next successful acquire.
//!
//! After each case a `SYNC` line gives each node's journal syncs per
//! second and their mean latency over the case (from the nodes' `/metrics`),
//! the figure that explains most of the spread between runs on a disk whose
//! flushes slow down after an idle gap (`cargo bench --bench flush`).
//!
//! Other options: `--journal redb|log` (default redb; results are reported
//! as system `trexlock` or `trexlock-log`), `--bin PATH` (the `trexlock` binary; by default it is
//! built with `cargo build --release -p trexlock-cli` and taken from this
//! bench's target directory), `--secs S` and `--warmup S` per case,
//! `--conns N` client connections shared by the clients (default 1, like
//! one application process), `--pidfile FILE` (node pids are appended, for
//! a caller that must be able to stop them), `--node-log DIR` (keep the
//! nodes' logs).
//!
//! Clients list the leader first, so they talk to it directly (the etcd
//! comparison does the same); the other nodes follow for failover. Every
//! node process is killed when the bench ends, fails, or gets SIGINT/SIGTERM.

#[path = "support/load.rs"]
mod load;
#[path = "support/processes.rs"]
mod processes;
#[path = "support/sync_meter.rs"]
mod sync_meter;

use load::{CpuMeter, Recorder, Settings, Window};
use processes::{built_binary, connect, free_port};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use sync_meter::SyncMeter;
use trexlock::lease::remote::{self, RemoteConfig};
use trexlock::lease::{LeaseClient, TryAcquire};

const CLUSTER: &str = "bench";
const TTL: Duration = Duration::from_secs(10);
/// Writers whose events the watchers of the `watch` case receive.
const WATCH_WRITERS: usize = 16;

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bin = match locate_binary(&settings) {
        Ok(bin) => bin,
        Err(e) => {
            eprintln!("cluster: {e}");
            return ExitCode::FAILURE;
        }
    };
    // One thread for the load generator: it leaves the second core to the
    // nodes, and the etcd driver is run the same way.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(settings, bin)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cluster: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The `trexlock` binary: `--bin`, else freshly built next to this bench.
fn locate_binary(settings: &Settings) -> Result<PathBuf, String> {
    match settings.get("bin") {
        Some(bin) => Ok(PathBuf::from(bin)),
        None => built_binary(),
    }
}

async fn run(settings: Settings, bin: PathBuf) -> Result<(), String> {
    let cases: Vec<(String, usize)> = if settings.cases.is_empty() {
        load::DEFAULT_CASES
            .iter()
            .map(|(n, k)| ((*n).to_owned(), *k))
            .collect()
    } else {
        settings
            .cases
            .iter()
            .map(|(n, k)| (n.clone(), k.unwrap_or_else(|| default_clients(n))))
            .collect()
    };
    let conns: usize = settings
        .get("conns")
        .map_or(Ok(1), str::parse)
        .map_err(|_| "--conns wants a number")?;
    let system = match settings.get("journal").unwrap_or("redb") {
        "redb" => "trexlock",
        "log" => "trexlock-log",
        other => return Err(format!("--journal is redb or log, not {other:?}")),
    };
    // One fresh cluster per case, so no case inherits another's state.
    for (case, clients) in cases {
        let nodes = Nodes::start(&bin, &settings)?;
        kill_on_signal(nodes.children.clone());
        let leader = nodes.leader().await?;
        let syncs = SyncMeter::start(nodes.metrics.clone()).await;
        let bench = Bench {
            system,
            nodes: &nodes,
            leader,
            settings: &settings,
            conns: conns.max(1),
        };
        match case.as_str() {
            "uncontended" => bench.uncontended(clients).await?,
            "contended" => bench.contended(clients).await?,
            "renew" => bench.renew(clients).await?,
            "renew_session" => bench.renew_session(clients).await?,
            "failover" => bench.failover(clients).await?,
            "watch" => bench.watch(clients).await?,
            other => return Err(format!("unknown case {other:?}")),
        }
        syncs.report(system, &case, clients).await;
        drop(nodes);
    }
    Ok(())
}

fn default_clients(case: &str) -> usize {
    match case {
        "uncontended" => 1,
        "renew" | "renew_session" => 64,
        _ => 16,
    }
}

type Children = Arc<Mutex<Vec<Option<Child>>>>;

/// Three node processes; killed (SIGKILL) and reaped when dropped.
struct Nodes {
    dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    /// Where each node serves `/metrics`.
    metrics: Vec<SocketAddr>,
    /// Where node `i + 1` writes its log, `n{i + 1}.log`.
    log_dir: PathBuf,
    children: Children,
}

impl Nodes {
    fn start(bin: &Path, settings: &Settings) -> Result<Nodes, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        let loopback = || -> Result<SocketAddr, String> {
            Ok(SocketAddr::from(([127, 0, 0, 1], free_port()?)))
        };
        let addrs: Vec<SocketAddr> = (0..3).map(|_| loopback()).collect::<Result<_, String>>()?;
        let metrics: Vec<SocketAddr> = (0..3).map(|_| loopback()).collect::<Result<_, String>>()?;
        let log_dir = settings
            .get("node-log")
            .map_or_else(|| dir.path().to_owned(), PathBuf::from);
        let nodes = Nodes {
            dir,
            addrs,
            metrics,
            log_dir,
            children: Arc::new(Mutex::new(Vec::new())),
        };
        for i in 0..3 {
            let root = nodes.dir.path();
            let mut text = format!(
                "cluster_id = \"{CLUSTER}\"\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\njournal = \"{}\"\nmetrics_listen = \"{}\"\n[peers]\n",
                i + 1,
                nodes.addrs[i],
                root.join(format!("n{}", i + 1)).display(),
                settings.get("journal").unwrap_or("redb"),
                nodes.metrics[i],
            );
            for (j, addr) in nodes.addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                text.push_str(&format!("{} = \"{addr}\"\n", j + 1));
            }
            let config = root.join(format!("n{}.toml", i + 1));
            std::fs::write(&config, text).map_err(|e| format!("writing config: {e}"))?;
            let log = std::fs::File::create(nodes.log_dir.join(format!("n{}.log", i + 1)))
                .map_err(|e| format!("node log: {e}"))?;
            let child = Command::new(bin)
                .args(["node", "--config"])
                .arg(&config)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
            if let Some(pidfile) = settings.get("pidfile") {
                use std::io::Write;
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(pidfile)
                    .map_err(|e| format!("pidfile: {e}"))?;
                let _ = writeln!(f, "{}", child.id());
            }
            lock(&nodes.children).push(Some(child));
        }
        Ok(nodes)
    }

    fn pids(&self) -> Vec<String> {
        lock(&self.children)
            .iter()
            .flatten()
            .map(|c| c.id().to_string())
            .collect()
    }

    fn sigkill(&self, i: usize) {
        if let Some(mut child) = lock(&self.children)[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn remote(&self, order: &[usize]) -> RemoteConfig {
        RemoteConfig::new(CLUSTER, order.iter().map(|i| self.addrs[*i]).collect())
    }

    /// The index of the node that leads, once it serves requests.
    async fn leader(&self) -> Result<usize, String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut last = String::from("no node says it leads");
        while Instant::now() < deadline {
            for i in 0..3 {
                if let Ok(s) = remote::status(&self.remote(&[i])).await
                    && s.is_leader
                {
                    let client = connect(&self.remote(&[i])).await?.client("warm-up");
                    match client.try_acquire("warm-up", TTL).await {
                        Ok(_) => return Ok(i),
                        Err(e) => last = format!("node {} leads but: {e}", i + 1),
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!(
            "no leader within 20 s ({last}); {}",
            self.describe()
        ))
    }

    /// Whether each node still runs, and the end of its log: the logs of
    /// a failed case are gone once the bench's temporary directory is.
    fn describe(&self) -> String {
        let mut out = Vec::new();
        for (i, child) in lock(&self.children).iter_mut().enumerate() {
            let state = match child.as_mut().map(Child::try_wait) {
                Some(Ok(None)) => "running".to_owned(),
                Some(Ok(Some(status))) => format!("exited ({status})"),
                Some(Err(e)) => format!("unknown ({e})"),
                None => "killed".to_owned(),
            };
            let log = std::fs::read_to_string(self.log_dir.join(format!("n{}.log", i + 1)))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(5)..];
            out.push(format!(
                "node {} {state}, log ends: {}",
                i + 1,
                tail.join(" | ")
            ));
        }
        out.join("; ")
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in lock(&self.children).iter_mut() {
            if let Some(mut child) = child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// On SIGINT or SIGTERM, kills the nodes before exiting (drop handlers do
/// not run when a signal ends the process).
fn kill_on_signal(children: Children) {
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) else {
            return;
        };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        for child in lock(&children).iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::process::exit(130);
    });
}

struct Bench<'a> {
    /// The name results are reported under.
    system: &'static str,
    nodes: &'a Nodes,
    leader: usize,
    settings: &'a Settings,
    conns: usize,
}

impl Bench<'_> {
    /// Servers with the leader first.
    fn order(&self) -> Vec<usize> {
        let mut order = vec![self.leader];
        order.extend((0..3).filter(|i| *i != self.leader));
        order
    }

    /// `n` client sessions spread over `self.conns` connections.
    async fn clients(&self, n: usize, prefix: &str) -> Result<Vec<LeaseClient>, String> {
        let config = self.nodes.remote(&self.order());
        let mut handles = Vec::new();
        for _ in 0..self.conns.min(n) {
            handles.push(connect(&config).await?);
        }
        Ok((0..n)
            .map(|i| handles[i % handles.len()].client(format!("{prefix}{i}")))
            .collect())
    }

    fn window(&self) -> Window {
        Window::new(self.settings.warmup, self.settings.measure)
    }

    async fn uncontended(&self, k: usize) -> Result<(), String> {
        let clients = self.clients(k, "u").await?;
        let window = self.window();
        let meter = CpuMeter::start(self.nodes.pids());
        let (recs, acquires) = uncontended_load(clients, window).await;
        let cpu = meter.stop();
        load::report(
            self.system,
            "uncontended",
            k,
            &load::merge(&window, recs),
            cpu,
        );
        if k == 1 {
            load::report_acquire_only(self.system, &window, acquires);
        }
        Ok(())
    }

    async fn contended(&self, k: usize) -> Result<(), String> {
        let clients = self.clients(k, "c").await?;
        let window = self.window();
        let meter = CpuMeter::start(self.nodes.pids());
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|client| {
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    while rec.go_on(&window) {
                        let started = Instant::now();
                        match client.acquire("hot", TTL, Duration::from_secs(5)).await {
                            Ok(lease) => {
                                rec.ok(&window, started);
                                if lease.release().await.is_err() {
                                    rec.error(&window);
                                }
                            }
                            Err(_) => rec.error(&window),
                        }
                    }
                    rec
                })
            })
            .collect();
        let recs = join(tasks).await;
        let cpu = meter.stop();
        load::report(
            self.system,
            "contended",
            k,
            &load::merge(&window, recs),
            cpu,
        );
        Ok(())
    }

    async fn renew(&self, k: usize) -> Result<(), String> {
        let clients = self.clients(k, "r").await?;
        let mut leases = Vec::new();
        for (i, client) in clients.iter().enumerate() {
            match client.try_acquire(&format!("renew-{i}"), TTL).await {
                Ok(TryAcquire::Acquired(lease)) => leases.push(lease),
                other => return Err(format!("cannot take lease {i}: {other:?}")),
            }
        }
        let window = self.window();
        let meter = CpuMeter::start(self.nodes.pids());
        let tasks: Vec<_> = leases
            .into_iter()
            .map(|lease| {
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    while rec.go_on(&window) {
                        let started = Instant::now();
                        match lease.renew().await {
                            Ok(()) => rec.ok(&window, started),
                            Err(_) => rec.error(&window),
                        }
                    }
                    rec
                })
            })
            .collect();
        let recs = join(tasks).await;
        let cpu = meter.stop();
        load::report(self.system, "renew", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    /// `k` leases bound to one session, all renewed by each keep.
    async fn renew_session(&self, k: usize) -> Result<(), String> {
        let client = self.clients(1, "session").await?.remove(0);
        let session = client
            .open_session(TTL)
            .await
            .map_err(|e| format!("cannot open a session: {e}"))?;
        for i in 0..k {
            session
                .acquire(&format!("session-{i}"), Duration::ZERO)
                .await
                .map_err(|e| format!("cannot take lease {i} in the session: {e}"))?;
        }
        let window = self.window();
        let meter = CpuMeter::start(self.nodes.pids());
        let keeper = tokio::spawn(async move {
            let mut rec = Recorder::default();
            while rec.go_on(&window) {
                let started = Instant::now();
                match session.keep().await {
                    Ok(()) => rec.ok(&window, started),
                    Err(_) => rec.error(&window),
                }
            }
            rec
        });
        let recs = join(vec![keeper]).await;
        let cpu = meter.stop();
        let stats = load::merge(&window, recs);
        load::report(self.system, "renew_session", k, &stats, cpu);
        Ok(())
    }

    /// `k` watchers on `w/`, each on its own connection, receive the
    /// events of [`WATCH_WRITERS`] writers cycling through acquire and
    /// release.
    async fn watch(&self, k: usize) -> Result<(), String> {
        let config = self.nodes.remote(&self.order());
        let mut watches = Vec::new();
        for i in 0..k {
            let handle = connect(&config).await?;
            let watch = handle.client(format!("watcher-{i}")).watch("w/").await;
            watches.push((handle, watch.map_err(|e| format!("watch {i}: {e}"))?));
        }
        let writers = self.clients(WATCH_WRITERS, "writer-").await?;
        let window = self.window();
        let meter = CpuMeter::start(self.nodes.pids());
        let writing: Vec<_> = writers
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                tokio::spawn(async move {
                    let name = format!("w/{i}");
                    while window.running() {
                        if let Ok(TryAcquire::Acquired(lease)) =
                            client.try_acquire(&name, TTL).await
                        {
                            let _ = lease.release().await;
                        }
                    }
                })
            })
            .collect();
        let end = tokio::time::Instant::from_std(window.end);
        let tasks: Vec<_> = watches
            .into_iter()
            .map(|(handle, mut watch)| {
                tokio::spawn(async move {
                    let _connection = handle;
                    let mut rec = Recorder::default();
                    let mut last = Instant::now();
                    while rec.go_on(&window) {
                        match tokio::time::timeout_at(end, watch.next()).await {
                            Ok(Some(Ok(_))) => {
                                rec.ok(&window, last);
                                last = Instant::now();
                            }
                            Ok(Some(Err(_)) | None) => {
                                rec.error(&window);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    rec
                })
            })
            .collect();
        let recs = join(tasks).await;
        for writer in writing {
            let _ = writer.await;
        }
        let cpu = meter.stop();
        load::report(self.system, "watch", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    async fn failover(&self, k: usize) -> Result<(), String> {
        let clients = self.clients(k, "f").await?;
        // The probe has its own connection, leader first, like any client.
        let probe = connect(&self.nodes.remote(&self.order()))
            .await?
            .client("probe")
            .with_call_timeout(Duration::from_millis(250));
        let measure = self.settings.measure.max(Duration::from_secs(4));
        let window = Window::new(self.settings.warmup, measure);
        let meter = CpuMeter::start(self.nodes.pids());
        let load = tokio::spawn(uncontended_load(clients, window));
        tokio::time::sleep_until((window.measure_from + Duration::from_millis(500)).into()).await;
        self.nodes.sigkill(self.leader);
        let killed = Instant::now();
        let mut recovery = None;
        while killed.elapsed() < Duration::from_secs(10) {
            if let Ok(TryAcquire::Acquired(_)) = probe.try_acquire("probe", TTL).await {
                recovery = Some(killed.elapsed());
                break;
            }
        }
        let (recs, _) = load.await.map_err(|e| e.to_string())?;
        let cpu = meter.stop();
        load::report(self.system, "failover", k, &load::merge(&window, recs), cpu);
        load::report_failover(self.system, recovery);
        Ok(())
    }
}

/// Each client acquires and releases its own lease until the window
/// closes. Returns the cycle recorders and the acquire-only recorders.
async fn uncontended_load(
    clients: Vec<LeaseClient>,
    window: Window,
) -> (Vec<Recorder>, Vec<Recorder>) {
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            tokio::spawn(async move {
                let name = format!("own-{i}");
                let mut rec = Recorder::default();
                let mut acq = Recorder::default();
                while rec.go_on(&window) {
                    let started = Instant::now();
                    match client.try_acquire(&name, TTL).await {
                        Ok(TryAcquire::Acquired(lease)) => {
                            acq.ok(&window, started);
                            match lease.release().await {
                                Ok(()) => rec.ok(&window, started),
                                Err(_) => rec.error(&window),
                            }
                        }
                        Ok(TryAcquire::Held(_)) | Err(_) => rec.error(&window),
                    }
                }
                (rec, acq)
            })
        })
        .collect();
    let mut recs = Vec::new();
    let mut acqs = Vec::new();
    for task in tasks {
        if let Ok((rec, acq)) = task.await {
            recs.push(rec);
            acqs.push(acq);
        }
    }
    (recs, acqs)
}

async fn join(tasks: Vec<tokio::task::JoinHandle<Recorder>>) -> Vec<Recorder> {
    let mut out = Vec::new();
    for task in tasks {
        if let Ok(rec) = task.await {
            out.push(rec);
        }
    }
    out
}
