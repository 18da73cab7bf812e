//! Real `trexlock node` processes on loopback: remote clients, SIGKILL of
//! the leader while leases are held and others wait, restart and catch-up,
//! and clear refusals of bad configurations.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_lease::{LeaseClient, LeaseError, Mode, TryAcquire};

mod support;

use support::{BIN, Process, free_port, local_addr, with_cert};

const CLUSTER: &str = "proc-test";

struct Cluster {
    _dir: tempfile::TempDir,
    addrs: Vec<SocketAddr>,
    procs: Vec<Process>,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let addrs: Vec<SocketAddr> = (0..3)
            .map(|_| format!("127.0.0.1:{}", free_port()).parse().unwrap())
            .collect();
        let mut procs = Vec::new();
        for i in 0..3 {
            // n2 keeps the append-only log journal, the others redb: a
            // cluster may mix them.
            let journal = if i == 1 { "log" } else { "redb" };
            let mut text = format!(
                "cluster_id = \"{CLUSTER}\"\nnode_id = {}\nlisten = \"{}\"\ndata_dir = \"{}\"\njournal = \"{journal}\"\n[peers]\n",
                i + 1,
                addrs[i],
                dir.path().join(format!("n{}", i + 1)).display()
            );
            for (j, addr) in addrs.iter().enumerate().filter(|(j, _)| *j != i) {
                text.push_str(&format!("{} = \"{addr}\"\n", j + 1));
            }
            let path = dir.path().join(format!("n{}.toml", i + 1));
            std::fs::write(&path, text).unwrap();
            procs.push(Process::start(&path));
        }
        Cluster {
            _dir: dir,
            addrs,
            procs,
        }
    }

    fn remote(&self, servers: &[usize]) -> RemoteConfig {
        RemoteConfig::new(CLUSTER, servers.iter().map(|i| self.addrs[*i]).collect())
    }

    async fn client(&self, servers: &[usize], owner: &str) -> LeaseClient {
        for _ in 0..100 {
            if let Ok(handle) = remote::connect(self.remote(servers)).await {
                return handle.client(owner);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("cannot reach {servers:?}");
    }

    /// The index of the node that says it leads.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for i in 0..3 {
                if !self.procs[i].is_running() {
                    continue;
                }
                if let Ok(s) = remote::status(&self.remote(&[i])).await
                    && s.is_leader
                {
                    return i;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no leader within 10 s");
    }
}

fn held(t: TryAcquire) -> trexlock_lease::LeaseHandle {
    match t {
        TryAcquire::Acquired(h) => h,
        TryAcquire::Held(h) => panic!("held by {h:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_process_loses_no_lease_and_grants_none_twice() {
    let mut cluster = Cluster::start();
    let leader = cluster.leader().await;
    let others: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let alice = cluster.client(&others, "alice").await;
    let ttl = Duration::from_secs(20);
    let lease = held(alice.try_acquire("orders", ttl).await.unwrap());
    let bob = cluster.client(&others, "bob").await;
    let bob_waits =
        tokio::spawn(async move { bob.acquire("orders", ttl, Duration::from_secs(30)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    cluster.procs[leader].sigkill();
    let killed = Instant::now();
    let carol = cluster.client(&others, "carol").await;
    let probe = loop {
        match carol.try_acquire("after-failover", ttl).await {
            Ok(t) => break held(t),
            Err(_) if killed.elapsed() < Duration::from_secs(10) => continue,
            Err(e) => panic!("no new leader served within 10 s: {e}"),
        }
    };
    eprintln!(
        "failover: first acquire served {:?} after SIGKILL",
        killed.elapsed()
    );
    assert!(probe.stamp() > lease.stamp(), "stamps keep growing");

    lease
        .renew()
        .await
        .expect("alice's lease survived the failover");
    match carol.try_acquire("orders", ttl).await.unwrap() {
        TryAcquire::Held(h) => {
            assert_eq!((h.owner.as_str(), h.stamp), ("alice", lease.stamp()));
        }
        TryAcquire::Acquired(_) => panic!("granted twice after failover"),
    }
    assert!(!bob_waits.is_finished(), "bob still waits in line");
    lease.release().await.unwrap();
    let bobs = bob_waits
        .await
        .unwrap()
        .expect("bob served after alice released");
    assert!(bobs.stamp() > probe.stamp());

    cluster.procs[leader].restart();
    let back = cluster.client(&[leader], "dave").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(h)) = back.holder("orders").await
            && h.owner == "bob"
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted node did not catch up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_through_a_remote_client_and_the_cli_names_every_holder_with_its_stamp() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let ttl = Duration::from_secs(30);
    let alice = cluster.client(&[0], "alice").await;
    let bob = cluster.client(&[1], "bob").await;
    let a = held(alice.try_acquire("jobs/a", ttl).await.unwrap());
    let b = held(bob.try_acquire("jobs/b", ttl).await.unwrap());
    held(bob.try_acquire("other", ttl).await.unwrap());

    let reader = cluster.client(&[2], "reader").await;
    let page = reader.list("jobs/").await.unwrap();
    let seen: Vec<_> = page
        .leases
        .iter()
        .map(|l| {
            (
                l.name.as_str(),
                l.holders[0].owner.as_str(),
                l.holders[0].stamp,
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("jobs/a", "alice", a.stamp()), ("jobs/b", "bob", b.stamp())]
    );
    assert!(
        page.leases
            .iter()
            .all(|l| l.holders[0].remaining_ms <= 30_000)
    );
    assert_eq!(page.next, None);

    // One lease per page: the command follows the continuation.
    let stdout = cli(&cluster, 2, &["list", "jobs/", "--page", "1"]).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with(&format!("jobs/a owner=alice stamp={} ", a.stamp())),
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(&format!("jobs/b owner=bob stamp={} ", b.stamp())),
        "{stdout}"
    );

    // Permits, readers and leases bound to a session are listed too, each
    // holder with its stamp.
    let wait = Duration::from_secs(5);
    let p1 = alice
        .acquire_permit("shared/pool", 2, ttl, wait)
        .await
        .unwrap();
    let p2 = bob
        .acquire_permit("shared/pool", 2, ttl, wait)
        .await
        .unwrap();
    let r = bob.acquire_read("shared/report", ttl, wait).await.unwrap();
    let session = alice.open_session(ttl).await.unwrap();
    let s = session
        .acquire("shared/shard", Duration::ZERO)
        .await
        .unwrap();
    let page = reader.list("shared/").await.unwrap();
    let seen: Vec<_> = page
        .holders()
        .map(|(name, h)| (name, h.stamp, h.mode, h.session))
        .collect();
    let permit = Some(Mode::Permit { permits: 2 });
    assert_eq!(
        seen,
        [
            ("shared/pool", p1.stamp(), permit, None),
            ("shared/pool", p2.stamp(), permit, None),
            ("shared/report", r.stamp(), Some(Mode::Read), None),
            ("shared/shard", s.stamp(), None, Some(session.id())),
        ]
    );
    let out = cli(&cluster, 2, &["list", "shared/"]).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[1].starts_with(&format!("shared/pool owner=bob stamp={} ", p2.stamp())),
        "{out}"
    );
    assert!(lines[1].ends_with(" mode=permit/2"), "{out}");
    assert!(lines[2].ends_with(" mode=read"), "{out}");
    assert!(
        lines[3].ends_with(&format!(" session={}", session.id())),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acquire_with_a_lock_delay_keeps_the_name_from_everyone_after_it_expires() {
    let cluster = Cluster::start();
    cluster.leader().await;
    cluster.client(&[0], "probe").await;
    let acquire = |owner: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["acquire", "printer", "--owner", owner, "--cluster", CLUSTER])
            .args(extra)
            .arg("--servers")
            .arg(cluster.addrs[0].to_string())
            .output()
            .unwrap()
    };
    let first = acquire("alice", &["--ttl", "300ms", "--lock-delay", "30s"]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let second = acquire("bob", &[]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success(), "granted inside the lock-delay");
    assert!(stderr.contains("lock-delay"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permits_and_read_write_shares_through_the_cli_and_a_remote_client() {
    let cluster = Cluster::start();
    cluster.leader().await;
    cluster.client(&[0], "probe").await;
    let acquire = |name: &str, owner: &str, extra: &[&str]| {
        Command::new(BIN)
            .args(["acquire", name, "--owner", owner, "--cluster", CLUSTER])
            .args(["--ttl", "30s"])
            .args(extra)
            .arg("--servers")
            .arg(cluster.addrs[1].to_string())
            .output()
            .unwrap()
    };
    for owner in ["a", "b"] {
        let out = acquire("gpus", owner, &["--permits", "2"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let third = acquire("gpus", "c", &["--permits", "2"]);
    let stderr = String::from_utf8_lossy(&third.stderr);
    assert!(!third.status.success(), "a third permit of two");
    assert!(stderr.contains("no share of gpus is free"), "{stderr}");

    let ttl = Duration::from_secs(30);
    let reader = cluster.client(&[2], "r1").await;
    let read = reader
        .acquire_read("doc", ttl, Duration::ZERO)
        .await
        .unwrap();
    let writer = cluster.client(&[0], "w").await;
    assert!(matches!(
        writer.acquire_write("doc", ttl, Duration::ZERO).await,
        Err(LeaseError::Busy { holders: 1, .. })
    ));
    let out = acquire("doc", "r2", &["--read"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!acquire("doc", "w2", &["--write"]).status.success());
    read.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_command_prints_each_event_after_a_position_as_text_or_json() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let alice = cluster.client(&[0], "alice").await;
    let from = alice.watch("jobs/").await.unwrap().position();
    let a = held(
        alice
            .try_acquire("jobs/a", Duration::from_secs(30))
            .await
            .unwrap(),
    );
    held(
        alice
            .try_acquire("other", Duration::from_secs(30))
            .await
            .unwrap(),
    );
    a.write_value("hello".into()).await.unwrap();
    a.release().await.unwrap();
    let watch = |json: bool| {
        let mut command = Command::new(BIN);
        command.args([
            "watch",
            "jobs/",
            "--count",
            "3",
            "--from",
            &from.to_string(),
        ]);
        if json {
            command.arg("--json");
        }
        let out = command
            .args(["--cluster", CLUSTER, "--servers"])
            .arg(cluster.addrs[1].to_string())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = watch(false);
    let kinds: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split(' ').skip(1).collect())
        .collect();
    let stamp = format!("stamp={}", a.stamp());
    assert_eq!(
        kinds,
        [
            vec!["granted", "jobs/a", "owner=alice", &stamp, "waited=false"],
            vec!["written", "jobs/a", &stamp, "bytes=5"],
            vec!["released", "jobs/a", &stamp],
        ],
        "{text}"
    );
    let json = watch(true);
    let objects: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objects[0]["kind"], "granted");
    assert_eq!(objects[0]["owner"], "alice");
    assert_eq!(objects[1]["value"], "hello");
    assert_eq!(objects[2]["stamp"], a.stamp().0);
    let positions: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    let json_positions: Vec<&str> = objects
        .iter()
        .map(|o| o["position"].as_str().unwrap())
        .collect();
    assert_eq!(positions, json_positions);
}

fn run_with_config(text: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        text.replace("DIR", &dir.path().display().to_string()),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bad_configurations_are_refused_with_a_clear_message() {
    let (ok, err) =
        run_with_config("cluster_id = \"c\"\nnode_id = 1\nlisten = \"127.0.0.1:1\"\n[peers]\n");
    assert!(!ok && err.contains("data_dir"), "{err}");

    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let text = format!(
        "cluster_id = \"c\"\nnode_id = 1\nlisten = \"127.0.0.1:{port}\"\ndata_dir = \"DIR/d\"\n[peers]\n2 = \"127.0.0.1:{}\"\n3 = \"127.0.0.1:{}\"\n",
        free_port(),
        free_port()
    );
    let (ok, err) = run_with_config(&text);
    assert!(!ok && err.contains(&port.to_string()), "{err}");

    let text = format!(
        "cluster_id = \"c\"\nnode_id = 1\nlisten = \"127.0.0.1:{}\"\ndata_dir = \"DIR/d\"\n[peers]\n2 = \"127.0.0.1:{}\"\n[tls]\nca = \"DIR/missing-ca.pem\"\ncert = \"DIR/c.pem\"\nkey = \"DIR/k.pem\"\n",
        free_port(),
        free_port()
    );
    let (ok, err) = run_with_config(&text);
    assert!(!ok && err.contains("missing-ca.pem"), "{err}");

    let (ok, err) = run_with_config(
        "cluster_id = \"c\"\nnode_id = 1\nlisten = \"0.0.0.0:1\"\ndata_dir = \"DIR\"\n[peers]\n",
    );
    assert!(!ok && err.contains("insecure"), "{err}");

    let (ok, err) = run_with_config(
        "cluster_id = \"c\"\nnode_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"DIR\"\ncolour = \"blue\"\n[peers]\n",
    );
    assert!(!ok && err.contains("colour"), "{err}");

    let (ok, err) = run_with_config(
        "cluster_id = \"c\"\nnode_id = 1\nlisten = \"127.0.0.1:1\"\ndata_dir = \"DIR\"\njournal = \"sqlite\"\n[peers]\n",
    );
    assert!(
        !ok && err.contains("sqlite") && err.contains("log"),
        "{err}"
    );
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "node", "acquire", "release", "holder", "list", "watch", "status", "certs", "session",
    ] {
        let out = Command::new(BIN).args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help failed");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage"));
    }
}

/// Runs the CLI against node `i` of `cluster` with `args`; its stdout,
/// or its stderr as the error.
fn cli(cluster: &Cluster, i: usize, args: &[&str]) -> Result<String, String> {
    let out = Command::new(BIN)
        .args(args)
        .args(["--cluster", CLUSTER, "--servers"])
        .arg(cluster.addrs[i].to_string())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// The value of `key=` in a line of `key=value` words.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_from_the_cli_binds_leases_and_closing_it_releases_them_all() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let opened = cli(
        &cluster,
        0,
        &["session", "open", "--ttl", "30s", "--owner", "ops"],
    )
    .unwrap();
    // "session <id> owner=ops ttl_ms=30000 token=<hex>"
    let id = opened.split_whitespace().nth(1).unwrap().to_owned();
    let token = field(&opened, "token").to_owned();
    let bind = |name: &str| {
        let args = [
            "acquire",
            name,
            "--owner",
            "ops",
            "--session",
            &id,
            "--token",
            &token,
        ];
        cli(&cluster, 1, &args)
    };
    let a = bind("jobs/a").unwrap();
    let b = bind("jobs/b").unwrap();
    assert_eq!(field(&a, "session"), id);
    let keep = ["session", "keep", &id, "--owner", "ops", "--token", &token];
    cli(&cluster, 2, &keep).unwrap();
    let listed = cli(&cluster, 2, &["list", "jobs/"]).unwrap();
    assert!(
        listed.contains(&format!("jobs/a owner=ops stamp={}", field(&a, "stamp"))),
        "{listed}"
    );
    assert!(
        listed.contains(&format!("jobs/b owner=ops stamp={}", field(&b, "stamp"))),
        "{listed}"
    );
    let close = ["session", "close", &id, "--owner", "ops", "--token", &token];
    cli(&cluster, 0, &close).unwrap();
    assert_eq!(cli(&cluster, 1, &["list", "jobs/"]).unwrap(), "");
    let over = cli(&cluster, 0, &keep).unwrap_err();
    assert!(
        over.contains(&format!("lease session {id} is over")),
        "{over}"
    );
    let late = bind("jobs/c").unwrap_err();
    assert!(late.contains("is over"), "{late}");
}

/// A one-node cluster's configuration in `dir`, with `extra` TOML lines.
fn single_node(dir: &Path, addr: SocketAddr, extra: &str) -> PathBuf {
    let text = format!(
        "cluster_id = \"{CLUSTER}\"\nnode_id = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\njournal = \"log\"\n{extra}\n[peers]\n",
        dir.join("n1").display()
    );
    let path = dir.join("n1.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_task_stops_exits_non_zero_with_the_reason() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let addr = local_addr();
    let config = single_node(dir.path(), addr, "");
    let mut command = Command::new(BIN);
    command
        .args(["node", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // Files may grow to 4 MiB only (the log journal's first allocation),
    // and growing past it fails with EFBIG instead of a signal: the
    // journal's writes fail once its records fill that much.
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let limit = libc::rlimit {
                rlim_cur: 4 << 20,
                rlim_max: 4 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    let remote = RemoteConfig::new(CLUSTER, vec![addr]);
    let mut handle = None;
    for _ in 0..100 {
        if let Ok(h) = remote::connect(remote.clone()).await {
            handle = Some(h);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = handle.expect("node reachable").client("filler");
    let lease = loop {
        match client.try_acquire("big", Duration::from_secs(60)).await {
            Ok(t) => break held(t),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    // Large values until the journal cannot grow any more.
    for _ in 0..128 {
        if lease
            .write_value(bytes::Bytes::from(vec![7u8; 60 * 1024]))
            .await
            .is_err()
        {
            break;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node process outlived its node"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(stderr.contains("the node stopped"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_into_a_closed_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let addr = local_addr();
    let _node = Process::start(&single_node(dir.path(), addr, ""));
    let remote = RemoteConfig::new(CLUSTER, vec![addr]);
    for _ in 0..100 {
        if remote::status(&remote).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The reader is gone before the command writes a byte, as when piped
    // into `head -1` that has already exited.
    let mut child = Command::new(BIN)
        .args(["status", "--cluster", CLUSTER, "--servers"])
        .arg(addr.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "panicked: {:?}", out.status);
}

#[test]
fn a_tls_certificate_without_the_cluster_ca_is_an_error() {
    for args in [
        ["--tls-cert", "c.pem", "--tls-key", "k.pem"],
        ["--tls-ca", "ca.pem", "--tls-key", "k.pem"],
    ] {
        let out = Command::new(BIN)
            .args(["status", "--cluster", "c", "--servers", "127.0.0.1:1"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains("--tls-ca") || stderr.contains("--tls-cert"),
            "{stderr}"
        );
        assert!(!stderr.contains("cannot reach"), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_from_the_certs_command_secure_a_node_and_its_clients() {
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let out = Command::new(BIN)
        .args([
            "certs",
            "--cluster",
            CLUSTER,
            "--nodes",
            "1",
            "--clients",
            "ops",
        ])
        .arg("--out")
        .arg(&certs)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = local_addr();
    let tls = format!(
        "[tls]\nca = \"{0}/ca.pem\"\ncert = \"{0}/node-1.pem\"\nkey = \"{0}/node-1.key\"",
        certs.display()
    );
    // [tls] must come last in the file: put it after [peers].
    let config = single_node(dir.path(), addr, "");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&tls);
    std::fs::write(&config, text).unwrap();
    let _node = Process::start(&config);
    let status = |cert: &str| {
        let mut command = Command::new(BIN);
        command
            .args(["status", "--cluster", CLUSTER, "--servers"])
            .arg(addr.to_string());
        with_cert(&mut command, &certs, cert).output().unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = status("client-ops");
        if out.status.success() {
            let table = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                table
                    .lines()
                    .nth(1)
                    .is_some_and(|row| row.starts_with("n1 ")),
                "{table}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Without a certificate the node does not answer.
    let plain = Command::new(BIN)
        .args(["status", "--cluster", CLUSTER, "--servers"])
        .arg(addr.to_string())
        .output()
        .unwrap();
    assert!(!plain.status.success());
    let refused = String::from_utf8_lossy(&plain.stderr);
    assert!(refused.contains("requires mutual TLS"), "{refused}");
}

#[test]
fn a_second_node_with_an_existing_id_is_refused_and_named_in_the_real_nodes_log() {
    let dir = tempfile::tempdir().unwrap();
    let addrs: Vec<SocketAddr> = (0..3).map(|_| local_addr()).collect();
    // Node 1 and node 2 as configured, and an impostor that also says it
    // is node 2, listening elsewhere but dialling node 1 as node 2 does.
    let write = |name: &str, id: usize, listen: SocketAddr, peer: (usize, SocketAddr)| {
        let text = format!(
            "cluster_id = \"{CLUSTER}\"\nnode_id = {id}\nlisten = \"{listen}\"\ndata_dir = \"{}\"\n[peers]\n{} = \"{}\"\n",
            dir.path().join(name).display(),
            peer.0,
            peer.1
        );
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    };
    let first = write("n1", 1, addrs[0], (2, addrs[1]));
    let second = write("n2", 2, addrs[1], (1, addrs[0]));
    let impostor = write("n2-again", 2, addrs[2], (1, addrs[0]));
    let spawn = |config: &Path| {
        Command::new(BIN)
            .args(["node", "--config"])
            .arg(config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut n1 = spawn(&first);
    let mut n2 = spawn(&second);
    // Let the real pair link up before the impostor appears.
    std::thread::sleep(Duration::from_secs(2));
    // The pair may replace a link while they first dial each other; only
    // what happens once the impostor appears counts.
    let impostor_at = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    let mut n2_again = spawn(&impostor);
    std::thread::sleep(Duration::from_secs(3));
    for child in [&mut n1, &mut n2, &mut n2_again] {
        child.kill().unwrap();
    }
    let log = |child: Child| {
        String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned()
    };
    let (n1_log, n2_log, impostor_log) = (log(n1), log(n2), log(n2_again));
    let warning = n1_log
        .lines()
        .find(|line| line.contains("another process running with this node id"))
        .unwrap_or_else(|| panic!("no warning in node 1's log:\n{n1_log}"));
    assert!(
        warning.contains("peer=n2") || warning.contains("n2"),
        "{warning}"
    );
    assert!(warning.contains(&addrs[0].ip().to_string()), "{warning}");
    // The impostor is told why; the real node 2 never lost its link.
    assert!(impostor_log.contains("already connected"), "{impostor_log}");
    let lost_after_impostor = n2_log.lines().map(without_ansi).any(|line| {
        line.contains("peer link lost")
            && line
                .split_whitespace()
                .next()
                .is_some_and(|at| at >= impostor_at.as_str())
    });
    assert!(!lost_after_impostor, "{n2_log}");
}

/// A log line without its terminal colour codes.
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_under_a_lease_gets_its_stamp_and_is_killed_when_the_lease_cannot_be_kept() {
    let cluster = Cluster::start();
    cluster.leader().await;
    let reader = cluster.client(&[2], "reader").await;
    let dir = tempfile::tempdir().unwrap();
    let servers = cluster
        .addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let under_lease = |name: &str, script: &str| {
        Command::new(BIN)
            .args([
                "acquire",
                name,
                "--ttl",
                "3s",
                "--gap",
                "1s",
                "--cluster",
                CLUSTER,
            ])
            .args(["--servers", &servers, "--", "sh", "-c", script])
            .current_dir(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // A command that ends by itself: it saw the stamp, the lease is released.
    let done = under_lease("job", "echo \"$TREXLOCK_NAME $TREXLOCK_STAMP\" > seen")
        .wait_with_output()
        .unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let printed = String::from_utf8_lossy(&done.stdout).into_owned();
    let stamp = field(printed.trim(), "stamp");
    let seen = std::fs::read_to_string(dir.path().join("seen")).unwrap();
    assert_eq!(seen.trim(), format!("job {stamp}"));
    assert!(reader.holder("job").await.unwrap().is_none(), "released");

    // A command whose lease cannot be renewed (two of three nodes gone) is
    // killed before the lease runs out.
    let mut held = under_lease("long", "echo $$ > pid; exec sleep 60");
    let start = Instant::now();
    while reader.holder("long").await.unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cluster = cluster;
    cluster.procs[0].sigkill();
    cluster.procs[1].sigkill();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = held.try_wait().unwrap() {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(10), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(held.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("was killed"), "{stderr}");
    let pid = std::fs::read_to_string(dir.path().join("pid")).unwrap();
    assert!(
        !Path::new(&format!("/proc/{}", pid.trim())).exists(),
        "the command still runs"
    );
}
