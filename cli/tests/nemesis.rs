//! The nemesis: a cluster of real `trexlock node` processes on loopback,
//! clients in processes of their own taking leases and writing to a fenced
//! resource, and a seeded schedule of faults: SIGKILL and restart of any
//! node (the leader included), SIGSTOP/SIGCONT of a node and of a client
//! holding a lease for longer than its TTL, partitions through a
//! fault-injecting proxy (isolating the leader, one-way cuts, delays,
//! resets), journals damaged on disk, and (only when named in
//! `TREXLOCK_NEMESIS_FAULTS`, e.g. `"replace node,kill node"`) a node
//! replaced by one with a new id through the membership API. A checker then goes over the
//! recorded history (see `nemesis/history.rs`).
//!
//! ```text
//! cargo test -p trexlock-cli --test nemesis -- --nocapture              # CI size, ~2 min
//! TREXLOCK_NEMESIS_SECS=1800 cargo test -p trexlock-cli --test nemesis -- --nocapture
//! ```
//!
//! Knobs (environment): `TREXLOCK_NEMESIS_SECS` (fault phase, default 75),
//! `TREXLOCK_NEMESIS_SEED` (the schedule; printed at the start),
//! `TREXLOCK_NEMESIS_NODES` (3 or 5), `TREXLOCK_NEMESIS_CLIENTS` (default
//! 5), `TREXLOCK_NEMESIS_DIR` (keep logs and history there; otherwise they
//! are kept only when a violation is found). Real processes and timers
//! mean a seed reproduces the schedule, not the exact interleaving.
//!
//! # Operator procedure: a node whose journal is damaged
//!
//! A node refuses to start on a damaged journal (`data_dir/journal.redb`,
//! or `data_dir/journal.log` with `journal = "log"`; the harness runs n2 on
//! the log journal and the others on redb):
//! it exits with status 1 and a message naming the file, e.g.
//! `trexlock: journal /var/lib/trexlock/n2/journal.redb: corrupt: ...`.
//! It never repairs or resets the journal by itself: the journal holds the
//! node's promises and votes, and forgetting them silently can let the
//! cluster choose two values for one slot.
//!
//! 1. Keep the damaged file for diagnosis: move the data directory aside
//!    (`mv n2 n2.damaged`) rather than deleting it.
//! 2. Check that every OTHER node is running and that they agree on one
//!    leader (`trexlock status` on each). Do this for one node at a time,
//!    never for a majority: the cluster's state survives only on the
//!    others.
//! 3. Start the node with the same configuration. It finds an empty
//!    journal and rejoins as a learner: it asks every other member for its
//!    promise and highest vote, catches up from the leader, and votes only
//!    once that is safe. Until EVERY other member has answered it does not
//!    vote, so if another node is down too, the cluster may have no quorum
//!    until that node is back (in a 3-node cluster: a wiped node plus a
//!    down node is two failures).
//!    Once the membership has changed (a node replaced, say), the node
//!    refuses to start empty as the voter it was (`... has an empty
//!    journal and the running cluster lists it as a voter ...`): take it
//!    out and add it back instead (`trexlock member remove`, wipe,
//!    `trexlock member add`, start, `trexlock member promote`), as the
//!    harness does then.
//! 4. Wait until its `applied` (in `trexlock status`) reaches the leader's.
//!    A learner keeps what it learns out of its journal until it votes, so
//!    if it is stopped before then it simply starts learning again.
//!
//! The data directory holds the journal, the redb journal's write-ahead
//! logs (`journal.redb.wal`, `journal.redb.wal2`) and the acknowledgement mark
//! (`journal.redb.acked`, `journal.log.acked`); move or delete them
//! together. A journal that
//! comes back older than the mark (redb fell back past a damaged commit
//! after an unclean shutdown, or an old copy was restored) is refused as
//! `rolled back`, and takes the same procedure.

#[path = "nemesis/clients.rs"]
mod clients;
#[path = "nemesis/cluster.rs"]
mod cluster;
#[path = "nemesis/history.rs"]
mod history;
#[path = "nemesis/proxy.rs"]
mod proxy;
#[path = "nemesis/replace.rs"]
mod replace;
#[path = "nemesis/repro.rs"]
mod repro;
#[path = "nemesis/schedule.rs"]
mod schedule;

use clients::{ClientProc, NAMES, Timing};
use cluster::{Cluster, mono_ns};
use history::History;
use schedule::{Nemesis, audit_node};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_lease::{LeaseHandle, TryAcquire};

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_stay_exclusive_and_nothing_acknowledged_is_lost_under_faults() {
    let secs = env_u64("TREXLOCK_NEMESIS_SECS", 75);
    let nodes = env_u64("TREXLOCK_NEMESIS_NODES", 3) as usize;
    let n_clients = env_u64("TREXLOCK_NEMESIS_CLIENTS", 5) as usize;
    let seed = env_u64("TREXLOCK_NEMESIS_SEED", fastrand::u64(..));
    let (tempdir, dir) = match std::env::var("TREXLOCK_NEMESIS_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).expect("create TREXLOCK_NEMESIS_DIR");
            (None, std::path::PathBuf::from(d))
        }
        Err(_) => {
            let t = tempfile::tempdir().expect("tempdir");
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    eprintln!(
        "nemesis: seed {seed}, {nodes} nodes, {n_clients} clients, {secs} s of faults, in {}",
        dir.display()
    );
    let started = Instant::now();
    let timing = Timing {
        ttl: Duration::from_secs(2),
        gap: Duration::from_millis(300),
    };
    let history = Arc::new(Mutex::new(History::default()));
    let cluster = Arc::new(tokio::sync::Mutex::new(Cluster::start(&dir, nodes).await));
    let servers = cluster.lock().await.client_addrs();
    wait_for_leader(&cluster).await;

    let mut procs = Vec::new();
    for c in 0..n_clients {
        let owner = format!("c{}", c + 1);
        let client = ClientProc::start(
            &dir,
            &owner,
            &servers,
            history.clone(),
            seed ^ c as u64,
            timing,
        )
        .await;
        procs.push(client);
    }
    let shared: Vec<_> = procs.iter().map(|c| c.shared.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let drivers: Vec<_> = procs
        .into_iter()
        .map(|mut c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                c.run(stop).await;
                c
            })
        })
        .collect();

    let mut nemesis = Nemesis::new(cluster.clone(), shared, history.clone(), seed, timing.ttl);
    nemesis
        .run(Instant::now() + Duration::from_secs(secs))
        .await;

    // The faults stop: heal everything and let the workload drain.
    stop.store(true, Ordering::SeqCst);
    restore(&cluster, &nemesis).await;
    let mut procs = Vec::new();
    for d in drivers {
        procs.push(d.await.expect("client driver"));
    }
    nemesis.check_nodes().await;
    wait_for_leader(&cluster).await;

    // Liveness: everyone queues for the hot lease and must be served.
    let since = Instant::now();
    let waiters: Vec<_> = procs
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                let ok = c.served(NAMES[0], Duration::from_secs(60)).await;
                (c, ok)
            })
        })
        .collect();
    let mut procs = Vec::new();
    for w in waiters {
        let (c, ok) = w.await.expect("waiter");
        if !ok {
            history.lock().unwrap().violation(format!(
                "{} waited in line for {} after the faults stopped and was not served",
                c.shared.owner, NAMES[0]
            ));
        }
        procs.push(c);
    }
    let liveness = since.elapsed();
    final_audit(&cluster, &history, &servers, timing).await;
    for c in &mut procs {
        c.quit().await;
    }

    let leader_changes = cluster.lock().await.leader_elections();
    let history = history.lock().unwrap();
    let (violations, overruns) = history.check(u64::try_from(timing.gap.as_nanos()).unwrap());
    let _ = history.dump(&dir.join("history.txt"));
    let _ = std::fs::write(dir.join("schedule.txt"), nemesis.log.join("\n"));
    print_summary(
        &nemesis,
        &history,
        overruns,
        leader_changes,
        &violations,
        started.elapsed(),
        liveness,
        seed,
    );
    if !violations.is_empty() {
        let kept = tempdir.map_or(dir, |t| t.keep());
        panic!(
            "{} violations (seed {seed}); logs and configs kept in {}",
            violations.len(),
            kept.display()
        );
    }
}

async fn wait_for_leader(cluster: &tokio::sync::Mutex<Cluster>) {
    for _ in 0..200 {
        if cluster.lock().await.leader().await.is_some() {
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader within 20 s");
}

/// Heals every link, wakes every paused process, restarts every node.
async fn restore(cluster: &tokio::sync::Mutex<Cluster>, nemesis: &Nemesis) {
    let mut cluster = cluster.lock().await;
    cluster.proxy.heal_all();
    for i in 0..cluster.len() {
        if cluster.nodes[i].paused {
            cluster.resume(i);
        }
        if !cluster.nodes[i].is_running() {
            cluster.restart(i);
        }
    }
    for c in &nemesis.clients {
        cluster::signal(c.pid, libc::SIGCONT);
    }
}

/// After the workload: every node must show every lease free (all
/// acknowledged releases, nothing left over), then every node must show
/// the final grants, with stamps above all earlier ones.
async fn final_audit(
    cluster: &tokio::sync::Mutex<Cluster>,
    history: &Mutex<History>,
    servers: &[std::net::SocketAddr],
    timing: Timing,
) {
    // Leases whose holders vanished run out within a TTL, and requests
    // whose clients gave up (nodes keep forwarding them) wait in line at
    // most 3 s of table time: the longest wait the workload asks for.
    sleep(timing.ttl + Duration::from_secs(4)).await;
    let n = cluster.lock().await.len();
    let expect_all = |want: Vec<Option<(String, u64)>>, when: &'static str| {
        let want = want.clone();
        async move {
            for node in 0..n {
                let mut seen = None;
                for _ in 0..20 {
                    seen = audit_node(cluster, history, node, &NAMES).await;
                    if seen.is_some() {
                        break;
                    }
                    sleep(Duration::from_millis(250)).await;
                }
                match seen {
                    Some(seen) if seen == want => {}
                    Some(seen) => history.lock().unwrap().violation(format!(
                        "{when}: node {} shows {seen:?}, expected {want:?}",
                        node + 1
                    )),
                    None => history
                        .lock()
                        .unwrap()
                        .violation(format!("{when}: node {} did not answer reads", node + 1)),
                }
            }
        }
    };
    expect_all(vec![None; NAMES.len()], "after every release").await;

    let handle = remote::connect(RemoteConfig::new(cluster::CLUSTER, servers.to_vec()))
        .await
        .expect("connect for the final grants");
    let client = handle.client("final");
    let mut finals: Vec<LeaseHandle> = Vec::new();
    for name in NAMES {
        for attempt in 0..20 {
            let sent = mono_ns();
            match client.try_acquire(name, Duration::from_secs(600)).await {
                Ok(TryAcquire::Acquired(lease)) => {
                    let acked = mono_ns();
                    let belief = acked
                        + lease
                            .expire_time_unsafe()
                            .saturating_duration_since(std::time::Instant::now())
                            .as_nanos() as u64;
                    history.lock().unwrap().granted(
                        "final",
                        name,
                        lease.stamp().0,
                        sent,
                        acked,
                        belief,
                    );
                    finals.push(lease);
                    break;
                }
                other if attempt == 19 => panic!("final grant of {name} failed: {other:?}"),
                _ => sleep(Duration::from_millis(250)).await,
            }
        }
    }
    let want = finals
        .iter()
        .map(|l| Some(("final".to_owned(), l.stamp().0)))
        .collect();
    expect_all(want, "after the final grants").await;
}

#[allow(clippy::too_many_arguments)]
fn print_summary(
    nemesis: &Nemesis,
    history: &History,
    overruns: u64,
    leader_changes: usize,
    violations: &[String],
    took: Duration,
    liveness: Duration,
    seed: u64,
) {
    let mut out = String::new();
    out.push_str(&format!(
        "\n== nemesis summary: seed {seed}, ran {:.0} s ==\n",
        took.as_secs_f64()
    ));
    out.push_str(&format!("{:<44} {:>8}\n", "faults injected", "count"));
    for (kind, count) in &nemesis.faults {
        out.push_str(&format!("  {kind:<42} {count:>8}\n"));
    }
    out.push_str(&format!("{:<44} {:>8}\n", "operations acknowledged", ""));
    for (what, count) in &history.acked {
        out.push_str(&format!("  {what:<42} {count:>8}\n"));
    }
    out.push_str(&format!(
        "  {:<42} {:>8}\n",
        "reads audited",
        history.reads.len()
    ));
    out.push_str(&format!(
        "{:<44} {overruns:>8}\n",
        "critical sections longer than the gap"
    ));
    out.push_str(&format!("{:<44} {leader_changes:>8}\n", "leader changes"));
    out.push_str(&format!(
        "{:<44} {:>8.1}\n",
        "all waiters served after faults (s)",
        liveness.as_secs_f64()
    ));
    out.push_str(&format!("{:<44} {:>8}\n", "VIOLATIONS", violations.len()));
    for v in violations {
        out.push_str(&format!("  - {v}\n"));
    }
    eprintln!("{out}");
}
