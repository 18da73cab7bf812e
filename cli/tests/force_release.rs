//! The operator's view of identities, with real processes: `certs --admins`
//! issues an administrator's certificate, `force-release` works with it and
//! is refused, naming the cause, with a client's; a client's certificate
//! cannot act for another owner.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{BIN, local_addr, with_cert};

const CLUSTER: &str = "force-test";

/// A `trexlock node` process, killed when dropped.
struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Issues certificates for node 1, client `billing` and admin `ops`, and
/// starts node 1 on mutual TLS.
fn secured_node(dir: &Path, addr: SocketAddr) -> (PathBuf, Node) {
    let certs = dir.join("certs");
    let out = Command::new(BIN)
        .args(["certs", "--cluster", CLUSTER, "--nodes", "1"])
        .args(["--clients", "billing", "--admins", "ops", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let config = dir.join("n1.toml");
    let text = format!(
        "cluster_id = \"{CLUSTER}\"\nnode_id = 1\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n[peers]\n[tls]\nca = \"{1}/ca.pem\"\ncert = \"{1}/node-1.pem\"\nkey = \"{1}/node-1.key\"\n",
        dir.join("n1").display(),
        certs.display()
    );
    std::fs::write(&config, text).unwrap();
    let child = Command::new(BIN)
        .args(["node", "--config"])
        .arg(&config)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    (certs, Node(child))
}

/// Runs a client command with the certificate `cert` (file stem in `certs`).
fn as_cert(certs: &Path, cert: &str, addr: SocketAddr, args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .args(["--cluster", CLUSTER, "--servers"])
        .arg(addr.to_string());
    with_cert(&mut command, certs, cert).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn an_operator_force_releases_with_an_admin_certificate_and_a_client_is_refused_with_the_cause() {
    let dir = tempfile::tempdir().unwrap();
    let addr = local_addr();
    let (certs, _node) = secured_node(dir.path(), addr);
    let acquire = ["acquire", "job-42", "--ttl", "60s"];
    let deadline = Instant::now() + Duration::from_secs(15);
    let taken = loop {
        let out = as_cert(&certs, "client-billing", addr, &acquire);
        if out.status.success() {
            break stdout(&out);
        }
        assert!(Instant::now() < deadline, "{}", stderr(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    // Without --owner the CLI acts under the certificate's name.
    assert!(taken.contains("owner=billing/"), "{taken}");

    // An owner the certificate may not use is put under its name: the CLI
    // never sends one the node would refuse (the node's own refusal is
    // lease/tests/identities.rs).
    let posing = as_cert(
        &certs,
        "client-billing",
        addr,
        &["acquire", "job-43", "--owner", "alice"],
    );
    assert!(posing.status.success(), "{}", stderr(&posing));
    assert!(
        stdout(&posing).contains("owner=billing/alice "),
        "{}",
        stdout(&posing)
    );

    let refused = as_cert(&certs, "client-billing", addr, &["force-release", "job-42"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("only an administrator's certificate"),
        "{}",
        stderr(&refused)
    );

    let forced = as_cert(&certs, "admin-ops", addr, &["force-release", "job-42"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(stdout(&forced).trim(), "force-released job-42");
    let holder = as_cert(&certs, "client-billing", addr, &["holder", "job-42"]);
    assert_eq!(
        stdout(&holder).trim(),
        "job-42 is free",
        "{}",
        stderr(&holder)
    );
}
