//! Operating real `trexlock node` processes: Prometheus metrics that
//! promtool accepts, `/health` and `/ready` through a change of leader,
//! the `status` table, the CLI's `renew`, host names and deadlines, TLS
//! paths beside the config file, and errors that name their cause.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_lease::{ConnectFailure, LeaseError, TryAcquire};

#[path = "operations/exposition.rs"]
mod exposition;
mod support;

use exposition::{check_exposition, promtool};
use support::{BIN, Process, local_addr};

const CLUSTER: &str = "ops-test";

/// One three-node cluster at a time: the tests run in parallel, and several
/// clusters electing at once on a small, busy machine can take longer than
/// any wait here is willing to give them.
static ONE_CLUSTER_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Three nodes on loopback, each serving metrics.
struct Cluster {
    _dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    metrics: Vec<SocketAddr>,
    procs: Vec<Process>,
    // Last, so that the nodes are gone before the next cluster starts.
    _turn: MutexGuard<'static, ()>,
}

impl Cluster {
    fn start() -> Cluster {
        // A test that failed while holding its turn has still finished with it.
        let turn = ONE_CLUSTER_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> = (0..3).map(|_| local_addr()).collect();
        let metrics: Vec<SocketAddr> = (0..3).map(|_| local_addr()).collect();
        let mut procs = Vec::new();
        for i in 0..3 {
            let mut text = format!(
                "cluster_id = \"{CLUSTER}\"\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\nmetrics_listen = \"{}\"\n[peers]\n",
                i + 1,
                addrs[i],
                dir.path().join(format!("n{}", i + 1)).display(),
                metrics[i],
            );
            for (j, addr) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                text.push_str(&format!("{} = \"{addr}\"\n", j + 1));
            }
            let path = dir.path().join(format!("n{}.toml", i + 1));
            std::fs::write(&path, text).unwrap();
            procs.push(Process::start_in(
                &path,
                "error",
                Stdio::inherit(),
                dir.path(),
            ));
        }
        Cluster {
            _dir: dir,
            addrs,
            metrics,
            procs,
            _turn: turn,
        }
    }

    fn remote(&self) -> RemoteConfig {
        RemoteConfig::new(CLUSTER, self.addrs.clone())
    }

    /// The index of the node that says it leads, once all three answer.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            for i in 0..3 {
                let one = RemoteConfig::new(CLUSTER, vec![self.addrs[i]]);
                if let Ok(s) = remote::status(&one).await
                    && s.is_leader
                {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader within 60 s");
    }
}

/// One HTTP GET; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    Ok((code, body))
}

/// Polls `path` until it answers `code`, or panics after `within`;
/// returns that answer's body.
async fn until_code(addr: SocketAddr, path: &str, code: u16, within: Duration) -> String {
    let start = Instant::now();
    loop {
        if let Ok((got, body)) = get(addr, path)
            && got == code
        {
            return body;
        }
        assert!(
            start.elapsed() < within,
            "{path} on {addr} never answered {code} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn cli(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run trexlock")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_nodes_metrics_pass_promtool_and_count_what_happened() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    let handle = remote::connect(cluster.remote()).await.unwrap();
    let client = handle.client("metrics-test");
    let TryAcquire::Acquired(lease) = client
        .try_acquire("job", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("nobody else holds it");
    };
    lease.renew().await.unwrap();
    // Every node applies the grant; the leader's figures include its
    // answers.
    let start = Instant::now();
    let (code, text) = loop {
        let (code, text) = get(cluster.metrics[leader], "/metrics").unwrap();
        let renewed = text
            .lines()
            .any(|l| l.starts_with("trexlock_renewals_total{") && l.ends_with(" 1"));
        if renewed {
            break (code, text);
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, 200);
    let families = check_exposition(&text);
    for (family, kind) in [
        ("trexlock_grants_total", "counter"),
        ("trexlock_expiries_total", "counter"),
        ("trexlock_renewals_total", "counter"),
        ("trexlock_releases_total", "counter"),
        ("trexlock_leader_changes_total", "counter"),
        ("trexlock_acquire_wait_seconds", "histogram"),
        ("trexlock_commit_latency_seconds", "histogram"),
        ("trexlock_journal_sync_seconds", "histogram"),
        ("trexlock_leases_held", "gauge"),
        ("trexlock_waiters", "gauge"),
        ("trexlock_sessions", "gauge"),
        ("trexlock_applied_slot", "gauge"),
        ("trexlock_peer_lag_slots", "gauge"),
        ("trexlock_journal_bytes", "gauge"),
        ("trexlock_ready", "gauge"),
    ] {
        assert!(
            families.contains(&(family.to_owned(), kind.to_owned())),
            "{family} ({kind}) missing from:\n{text}"
        );
    }
    let node = leader + 1;
    for sample in [
        format!("trexlock_grants_total{{node=\"{node}\"}} 1"),
        format!("trexlock_leases_held{{node=\"{node}\"}} 1"),
        format!("trexlock_is_leader{{node=\"{node}\"}} 1"),
    ] {
        assert!(
            text.lines().any(|l| l == sample),
            "no {sample:?} in:\n{text}"
        );
    }
    if let Some((ok, verdict)) = promtool(&text) {
        assert!(ok, "promtool check metrics: {verdict}\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_flips_when_the_leader_is_killed_and_back_when_another_is_elected() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    let probe = cluster.metrics[follower];
    until_code(probe, "/ready", 200, Duration::from_secs(10)).await;
    assert_eq!(get(probe, "/health").unwrap().0, 200);
    // With the leader and the other follower both down, no election can
    // end, so the follower stays unready long enough to be seen so, however
    // slowly this machine polls.
    let other = (leader + 2) % 3;
    cluster.procs[leader].sigkill();
    cluster.procs[other].sigkill();
    let why = until_code(probe, "/ready", 503, Duration::from_secs(10)).await;
    assert_eq!(why, "not ready: no leader known\n");
    assert_eq!(
        get(probe, "/health").unwrap().0,
        200,
        "alive while electing"
    );
    cluster.procs[other].restart();
    until_code(probe, "/ready", 200, Duration::from_secs(30)).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    assert_eq!(get(probe, "/nowhere").unwrap().0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_every_member_from_one_server_as_a_table_and_as_json() {
    let cluster = Cluster::start();
    let leader = cluster.leader().await;
    // One server, named by host name: the others are found through it.
    let server = format!("localhost:{}", cluster.addrs[0].port());
    let out = cli(&["status", "--cluster", CLUSTER, "--servers", &server]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 4, "{table}");
    for column in [
        "NODE", "ROLE", "LEADER", "BALLOT", "APPLIED", "LAG", "LEASES", "WAITERS", "SESSIONS",
    ] {
        assert!(lines[0].contains(column), "{table}");
    }
    assert!(lines[leader + 1].contains("leader"), "{table}");
    assert_eq!(table.matches("follower").count(), 2, "{table}");
    assert!(!table.contains("Some(") && !table.contains('{'), "{table}");

    let out = cli(&[
        "status",
        "--json",
        "--cluster",
        CLUSTER,
        "--servers",
        &server,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[leader]["status"]["role"], "leader");
    assert_eq!(rows[leader]["status"]["leader"], leader as u64 + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_second_wait_on_a_held_lease_returns_held_long_before_the_lease_ends() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let handle = remote::connect(cluster.remote()).await.unwrap();
    let alice = handle.client("alice");
    let _lease = alice
        .acquire("busy", Duration::from_secs(30), Duration::from_secs(5))
        .await
        .unwrap();
    let bob = handle.client("bob");
    let start = Instant::now();
    let result = bob
        .acquire("busy", Duration::from_secs(10), Duration::from_millis(500))
        .await;
    let took = start.elapsed();
    match result {
        Err(LeaseError::Held { holder, .. }) => assert_eq!(holder.owner, "alice"),
        other => panic!("expected Held by alice, got {other:?}"),
    }
    // The bound is the wait (plus half a second to hear the answer), not
    // the holder's 30 s lease nor the 5 s default: allow a busy machine
    // plenty beyond the bound, and nothing near the lease.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(took >= Duration::from_millis(500), "took {took:?}");

    // The CLI keeps the same bound.
    let servers = cluster.addrs[0].to_string();
    let start = Instant::now();
    let out = cli(&[
        "acquire",
        "busy",
        "--wait",
        "500ms",
        "--owner",
        "carol",
        "--cluster",
        CLUSTER,
        "--servers",
        &servers,
    ]);
    let took = start.elapsed();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("held by alice"), "{}", stderr(&out));
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_and_release_take_the_owner_stamp_and_token_that_acquire_printed() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let servers = cluster.addrs[1].to_string();
    let common = ["--cluster", CLUSTER, "--servers", servers.as_str()];
    let out = cli(&[&["acquire", "report", "--ttl", "2s"][..], &common].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    let field = |key: &str| {
        printed
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .unwrap_or_else(|| panic!("no {key} in {printed}"))
            .to_owned()
    };
    let (owner, stamp, token) = (field("owner="), field("stamp="), field("token="));
    let wrong = format!("{:032x}", u128::from_str_radix(&token, 16).unwrap() ^ 1);
    let out = cli(&[
        &["renew", "report", "--stamp", &stamp, "--token", &wrong][..],
        &common,
    ]
    .concat());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not the holder"), "{}", stderr(&out));
    // The default owner is the one acquire used.
    let out = cli(&[
        &[
            "renew", "report", "--stamp", &stamp, "--token", &token, "--ttl", "60s",
        ][..],
        &common,
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("renewed report"));
    // Renewed to a minute: still held after the first TTL.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let out = cli(&[&["holder", "report"][..], &common].concat());
    assert!(
        stdout(&out).contains(&format!("held by {owner}")),
        "{}",
        stdout(&out)
    );
    let out = cli(&[
        &[
            "release", "report", "--owner", &owner, "--stamp", &stamp, "--token", &token,
        ][..],
        &common,
    ]
    .concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let help = stdout(&cli(&["acquire", "--help"]));
    assert!(help.contains(&format!("[default: {owner}]")), "{help}");
}

/// A one-node TLS cluster whose config names its certificates relative to
/// its own folder, started from another working directory.
fn tls_node(dir: &Path) -> (Process, SocketAddr, PathBuf) {
    let certs = dir.join("etc/certs");
    let out = cli(&[
        "certs",
        "--cluster",
        CLUSTER,
        "--nodes",
        "1",
        "--clients",
        "ops",
        "--out",
        certs.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let addr = local_addr();
    let config = dir.join("etc/n1.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_id = \"{CLUSTER}\"\nnode_id = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n[peers]\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/node-1.pem\"\nkey = \"certs/node-1.key\"\n",
            dir.join("n1").display()
        ),
    )
    .unwrap();
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    (
        Process::start_in(&config, "error", Stdio::inherit(), &elsewhere),
        addr,
        certs,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_connections_are_refused_with_errors_that_name_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, addr, certs) = tls_node(dir.path());
    let tls = trexlock_transport::TlsConfig::from_pem_files(
        certs.join("ca.pem"),
        certs.join("client-ops.pem"),
        certs.join("client-ops.key"),
    )
    .unwrap();
    let mut good = RemoteConfig::new(CLUSTER, vec![addr]);
    good.tls = Some(tls.clone());
    // The node found its certificates beside its config file.
    let start = Instant::now();
    let status = loop {
        match remote::status(&good).await {
            Ok(status) => break status,
            Err(e) => assert!(start.elapsed() < Duration::from_secs(10), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.node.0, 1);

    let failure = |result: Result<_, LeaseError>| match result {
        Err(LeaseError::Connect(failures)) => failures.into_iter().next().unwrap(),
        Err(other) => panic!("expected a connect failure, got {other}"),
        Ok(_) => panic!("expected a connect failure"),
    };
    let mut other_cluster = good.clone();
    other_cluster.cluster_id = "elsewhere".into();
    match failure(remote::connect(other_cluster).await.map(|_| ())) {
        ConnectFailure::Refused {
            refusal: trexlock_transport::Refusal::WrongCluster { expected, offered },
            ..
        } => assert_eq!(
            (expected.as_str(), offered.as_str()),
            (CLUSTER, "elsewhere")
        ),
        other => panic!("{other}"),
    }
    let plain = RemoteConfig::new(CLUSTER, vec![addr]);
    let error = remote::connect(plain).await.map(|_| ());
    assert!(
        error
            .as_ref()
            .is_err_and(|e| e.to_string().contains("requires mutual TLS")),
        "{error:?}"
    );
    assert!(matches!(
        failure(error),
        ConnectFailure::Refused {
            refusal: trexlock_transport::Refusal::TlsRequired,
            ..
        }
    ));
    let rogue = trexlock_transport::certs::ClusterCa::generate(CLUSTER).unwrap();
    let mut forged = good.clone();
    forged.tls = Some(rogue.client("ops").unwrap().tls(rogue.cert_pem()).unwrap());
    match failure(remote::connect(forged).await.map(|_| ())) {
        // The node refuses the client's certificate, or (first) the client
        // refuses the node's, which the rogue CA did not sign either.
        ConnectFailure::CertificateRejected { .. } | ConnectFailure::Tls { .. } => {}
        other => panic!("{other}"),
    }
    let mut with_ca_only = good.clone();
    let ca_pem = std::fs::read_to_string(certs.join("ca.pem")).unwrap();
    with_ca_only.tls = Some(rogue.client("ops").unwrap().tls(&ca_pem).unwrap());
    match failure(remote::connect(with_ca_only).await.map(|_| ())) {
        ConnectFailure::CertificateRejected { alert, .. } => assert!(!alert.is_empty()),
        other => panic!("expected the node to reject the certificate: {other}"),
    }
    // The CLI says the same.
    let out = cli(&[
        "status",
        "--cluster",
        "elsewhere",
        "--servers",
        &addr.to_string(),
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("requires mutual TLS"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logging_into_a_pipe_writes_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let addr = local_addr();
    let config = dir.path().join("n1.toml");
    std::fs::write(
        &config,
        format!(
            "cluster_id = \"{CLUSTER}\"\nnode_id = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n[peers]\n",
            dir.path().join("n1").display()
        ),
    )
    .unwrap();
    let mut node = Process::start_in(&config, "info", Stdio::piped(), dir.path());
    let mut child = node.take_child();
    let mut stderr = child.stderr.take().unwrap();
    let start = Instant::now();
    while remote::status(&RemoteConfig::new(CLUSTER, vec![addr]))
        .await
        .is_err()
    {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(log.contains("node running"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}
