//! The etcd side of `benches/compare_etcd.sh`: the cases of
//! `benches/cluster.rs`, run against a three-member etcd cluster through the
//! `etcd-client` crate, timed and printed by the same code
//! (`benches/support/load.rs`).
//!
//! ```text
//! trexlock-etcd-driver --endpoints http://127.0.0.1:2379,... --pids 11,12,13 --case uncontended:64
//! trexlock-etcd-driver --free-ports 6
//! ```
//!
//! Cases:
//! - `uncontended:K`: each client locks and unlocks its own name with the
//!   lock API, on a long-lived lease granted up front (one op = lock +
//!   unlock; with one client also `case=acquire`, the lock alone).
//! - `contended:K`: every client locks ONE name through the lock API
//!   (`case=contended`), then the same through a plain key-value queue
//!   (`case=contended_kv`): put a key under the lease, wait for the key with
//!   the next lower create revision to be deleted, delete ours to release
//!   (clientv3's mutex recipe). One op = one acquisition, latency = the wait.
//! - `renew:K`: K leases kept alive on their keep-alive streams as fast as
//!   the server answers.
//! - `renew_session:K`: ONE lease with K keys attached (etcd's
//!   one-lease-many-keys, what its `Session` does), kept alive on one
//!   stream as fast as the server answers; one op = one keep-alive.
//! - `failover:K`: the uncontended load, SIGKILL of the leader's process,
//!   then the time until the next successful lock.
//!
//! Clients talk to the leader only (trexlock's bench lists its leader first
//! too), except in `failover`, where they know every member.

#[path = "../../support/load.rs"]
mod load;

use etcd_client::{
    Client, ConnectOptions, EventType, GetOptions, LockOptions, PutOptions, SortOrder, SortTarget,
    WatchOptions,
};
use load::{CpuMeter, Recorder, Settings, Window};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const SYSTEM: &str = "etcd";
/// Leases outlive every case, so nothing expires while measuring.
const LEASE_TTL_S: i64 = 120;

fn main() -> ExitCode {
    let settings = match Settings::parse(std::env::args().skip(1)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("etcd-driver: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = settings.get("free-ports") {
        return free_ports(n);
    }
    // One thread, as for the trexlock bench.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("etcd-driver: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `n` distinct free loopback ports (for the script's etcd members).
fn free_ports(n: &str) -> ExitCode {
    let Ok(n) = n.parse::<usize>() else {
        return ExitCode::FAILURE;
    };
    // Hold every listener until all are chosen, so no port repeats.
    let listeners: Vec<_> = (0..n)
        .filter_map(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    let ports: Vec<String> = listeners
        .iter()
        .filter_map(|l| l.local_addr().ok())
        .map(|a| a.port().to_string())
        .collect();
    println!("{}", ports.join(" "));
    ExitCode::SUCCESS
}

type Error = String;

fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}

struct Driver {
    endpoints: Vec<String>,
    pids: Vec<String>,
    leader: usize,
    settings: Settings,
}

async fn run(settings: Settings) -> Result<(), Error> {
    let endpoints: Vec<String> = settings
        .get("endpoints")
        .ok_or("--endpoints is required")?
        .split(',')
        .map(str::to_owned)
        .collect();
    let pids: Vec<String> = settings
        .get("pids")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let leader = find_leader(&endpoints).await?;
    let driver = Driver {
        endpoints,
        pids,
        leader,
        settings: settings.clone(),
    };
    let cases: Vec<(String, usize)> = if settings.cases.is_empty() {
        load::DEFAULT_CASES
            .iter()
            .map(|(n, k)| ((*n).to_owned(), *k))
            .collect()
    } else {
        settings
            .cases
            .iter()
            .map(|(n, k)| (n.clone(), k.unwrap_or(16)))
            .collect()
    };
    for (case, k) in cases {
        match case.as_str() {
            "uncontended" => driver.uncontended(k).await?,
            "contended" => {
                driver.contended_lock(k).await?;
                driver.contended_kv(k).await?;
            }
            "renew" => driver.renew(k).await?,
            "renew_session" => driver.renew_session(k).await?,
            "failover" => driver.failover(k).await?,
            other => return Err(format!("unknown case {other:?}")),
        }
    }
    Ok(())
}

/// The index of the endpoint whose member leads, once one does.
async fn find_leader(endpoints: &[String]) -> Result<usize, Error> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for (i, endpoint) in endpoints.iter().enumerate() {
            let Ok(mut client) = Client::connect([endpoint], Some(options())).await else {
                continue;
            };
            if let Ok(status) = client.status().await
                && status.header().map(|h| h.member_id()) == Some(status.leader())
            {
                return Ok(i);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no etcd leader within 30 s".into())
}

fn options() -> ConnectOptions {
    ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5))
}

impl Driver {
    fn window(&self) -> Window {
        Window::new(self.settings.warmup, self.settings.measure)
    }

    fn conns(&self) -> usize {
        self.settings
            .get("conns")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1usize)
            .max(1)
    }

    /// `n` client handles (sharing `conns` connections) to the leader, or
    /// to every member.
    async fn clients(&self, n: usize, all_members: bool) -> Result<Vec<Client>, Error> {
        let endpoints: Vec<&str> = if all_members {
            self.endpoints.iter().map(String::as_str).collect()
        } else {
            vec![self.endpoints[self.leader].as_str()]
        };
        let mut conns = Vec::new();
        for _ in 0..self.conns().min(n) {
            conns.push(
                Client::connect(&endpoints, Some(options()))
                    .await
                    .map_err(err)?,
            );
        }
        Ok((0..n).map(|i| conns[i % conns.len()].clone()).collect())
    }

    async fn grant(client: &mut Client) -> Result<i64, Error> {
        Ok(client
            .lease_grant(LEASE_TTL_S, None)
            .await
            .map_err(err)?
            .id())
    }

    async fn uncontended(&self, k: usize) -> Result<(), Error> {
        let clients = self.clients(k, false).await?;
        let window = self.window();
        let meter = CpuMeter::start(self.pids.clone());
        let (recs, acquires) = lock_loop(clients, window).await?;
        let cpu = meter.stop();
        load::report(SYSTEM, "uncontended", k, &load::merge(&window, recs), cpu);
        if k == 1 {
            load::report_acquire_only(SYSTEM, &window, acquires);
        }
        Ok(())
    }

    async fn contended_lock(&self, k: usize) -> Result<(), Error> {
        let mut clients = self.clients(k, false).await?;
        let mut leases = Vec::new();
        for client in &mut clients {
            leases.push(Self::grant(client).await?);
        }
        let window = self.window();
        let meter = CpuMeter::start(self.pids.clone());
        let tasks: Vec<_> = clients
            .into_iter()
            .zip(leases)
            .map(|(mut client, lease)| {
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    while rec.go_on(&window) {
                        let started = Instant::now();
                        let opts = LockOptions::new().with_lease(lease);
                        match client.lock("hot", Some(opts)).await {
                            Ok(resp) => {
                                rec.ok(&window, started);
                                if client.unlock(resp.key()).await.is_err() {
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
        load::report(SYSTEM, "contended", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    async fn contended_kv(&self, k: usize) -> Result<(), Error> {
        let mut clients = self.clients(k, false).await?;
        let mut leases = Vec::new();
        for client in &mut clients {
            leases.push(Self::grant(client).await?);
        }
        let window = self.window();
        let meter = CpuMeter::start(self.pids.clone());
        let tasks: Vec<_> = clients
            .into_iter()
            .zip(leases)
            .map(|(mut client, lease)| {
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    let key = format!("queue/hot/{lease:016x}");
                    while rec.go_on(&window) {
                        let started = Instant::now();
                        match kv_queue_acquire(&mut client, &key, lease).await {
                            Ok(()) => {
                                rec.ok(&window, started);
                                if client.delete(key.as_str(), None).await.is_err() {
                                    rec.error(&window);
                                }
                            }
                            Err(_) => {
                                rec.error(&window);
                                let _ = client.delete(key.as_str(), None).await;
                            }
                        }
                    }
                    rec
                })
            })
            .collect();
        let recs = join(tasks).await;
        let cpu = meter.stop();
        load::report(SYSTEM, "contended_kv", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    async fn renew(&self, k: usize) -> Result<(), Error> {
        let mut clients = self.clients(k, false).await?;
        let mut keepers = Vec::new();
        for client in &mut clients {
            let lease = Self::grant(client).await?;
            keepers.push(client.lease_keep_alive(lease).await.map_err(err)?);
        }
        let window = self.window();
        let meter = CpuMeter::start(self.pids.clone());
        let tasks: Vec<_> = keepers
            .into_iter()
            .map(|(mut keeper, mut stream)| {
                tokio::spawn(async move {
                    let mut rec = Recorder::default();
                    while rec.go_on(&window) {
                        let started = Instant::now();
                        let answered = match keeper.keep_alive().await {
                            Ok(()) => matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0),
                            Err(_) => false,
                        };
                        if answered {
                            rec.ok(&window, started);
                        } else {
                            rec.error(&window);
                        }
                    }
                    rec
                })
            })
            .collect();
        let recs = join(tasks).await;
        let cpu = meter.stop();
        load::report(SYSTEM, "renew", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    async fn renew_session(&self, k: usize) -> Result<(), Error> {
        let mut client = self.clients(1, false).await?.remove(0);
        let lease = Self::grant(&mut client).await?;
        for i in 0..k {
            let key = format!("session-{i}");
            let attached = PutOptions::new().with_lease(lease);
            client.put(key, "", Some(attached)).await.map_err(err)?;
        }
        let (mut keeper, mut stream) = client.lease_keep_alive(lease).await.map_err(err)?;
        let window = self.window();
        let meter = CpuMeter::start(self.pids.clone());
        let task = tokio::spawn(async move {
            let mut rec = Recorder::default();
            while rec.go_on(&window) {
                let started = Instant::now();
                let answered = match keeper.keep_alive().await {
                    Ok(()) => matches!(stream.message().await, Ok(Some(r)) if r.ttl() > 0),
                    Err(_) => false,
                };
                if answered {
                    rec.ok(&window, started);
                } else {
                    rec.error(&window);
                }
            }
            rec
        });
        let recs = join(vec![task]).await;
        let cpu = meter.stop();
        load::report(SYSTEM, "renew_session", k, &load::merge(&window, recs), cpu);
        Ok(())
    }

    async fn failover(&self, k: usize) -> Result<(), Error> {
        let pid = self
            .pids
            .get(self.leader)
            .ok_or("failover needs --pids in the order of --endpoints")?
            .clone();
        let clients = self.clients(k, true).await?;
        let mut probe = Client::connect(
            &self.endpoints,
            Some(
                ConnectOptions::new()
                    .with_connect_timeout(Duration::from_millis(250))
                    .with_timeout(Duration::from_millis(250)),
            ),
        )
        .await
        .map_err(err)?;
        let probe_lease = Self::grant(&mut probe).await?;
        let measure = self.settings.measure.max(Duration::from_secs(4));
        let window = Window::new(self.settings.warmup, measure);
        let meter = CpuMeter::start(self.pids.clone());
        let load = tokio::spawn(lock_loop(clients, window));
        tokio::time::sleep_until((window.measure_from + Duration::from_millis(500)).into()).await;
        let killed = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .map_err(err)?;
        if !killed.success() {
            return Err(format!("cannot kill the leader (pid {pid})"));
        }
        let killed = Instant::now();
        let mut recovery = None;
        let opts = LockOptions::new().with_lease(probe_lease);
        while killed.elapsed() < Duration::from_secs(10) {
            if probe.lock("probe", Some(opts.clone())).await.is_ok() {
                recovery = Some(killed.elapsed());
                break;
            }
        }
        let (recs, _) = load.await.map_err(err)??;
        let cpu = meter.stop();
        load::report(SYSTEM, "failover", k, &load::merge(&window, recs), cpu);
        load::report_failover(SYSTEM, recovery);
        Ok(())
    }
}

/// Each client locks and unlocks its own name on its own lease until the
/// window closes. Returns the cycle recorders and the lock-only recorders.
async fn lock_loop(
    clients: Vec<Client>,
    window: Window,
) -> Result<(Vec<Recorder>, Vec<Recorder>), Error> {
    let mut leases = Vec::new();
    let mut clients = clients;
    for client in &mut clients {
        leases.push(Driver::grant(client).await?);
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .zip(leases)
        .enumerate()
        .map(|(i, (mut client, lease))| {
            tokio::spawn(async move {
                let name = format!("own-{i}");
                let mut rec = Recorder::default();
                let mut acq = Recorder::default();
                while rec.go_on(&window) {
                    let started = Instant::now();
                    let opts = LockOptions::new().with_lease(lease);
                    match client.lock(name.as_str(), Some(opts)).await {
                        Ok(resp) => {
                            acq.ok(&window, started);
                            match client.unlock(resp.key()).await {
                                Ok(_) => rec.ok(&window, started),
                                Err(_) => rec.error(&window),
                            }
                        }
                        Err(_) => rec.error(&window),
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
    Ok((recs, acqs))
}

/// Queues `key` under the lock's prefix and waits until every key created
/// before it is gone (clientv3's mutex: each waiter watches only its
/// predecessor, so one release wakes one waiter).
async fn kv_queue_acquire(client: &mut Client, key: &str, lease: i64) -> Result<(), Error> {
    let put = client
        .put(key, "", Some(PutOptions::new().with_lease(lease)))
        .await
        .map_err(err)?;
    let mine = put.header().ok_or("no header")?.revision();
    loop {
        let before = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Descend)
            .with_max_create_revision(mine - 1)
            .with_limit(1);
        let got = client.get("queue/hot/", Some(before)).await.map_err(err)?;
        let Some(predecessor) = got.kvs().first() else {
            return Ok(());
        };
        let from = got.header().ok_or("no header")?.revision() + 1;
        let mut watch = client
            .watch(
                predecessor.key(),
                Some(WatchOptions::new().with_start_revision(from)),
            )
            .await
            .map_err(err)?;
        'wait: loop {
            match watch.message().await.map_err(err)? {
                Some(resp) => {
                    if resp
                        .events()
                        .iter()
                        .any(|e| e.event_type() == EventType::Delete)
                    {
                        break 'wait;
                    }
                }
                None => return Err("watch ended".into()),
            }
        }
    }
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
