//! What the tests with real `trexlock` processes share: the binary, free
//! loopback addresses, node processes that die with the test, and a client
//! command's certificate arguments.

#![allow(dead_code)] // Each test binary uses a different part.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_trexlock");

pub use trexlock_test_support::local_addr;

/// A loopback port a node can still bind when it starts.
pub fn free_port() -> u16 {
    local_addr().port()
}

/// A `trexlock node` process, SIGKILLed and reaped when dropped.
pub struct Process {
    config: PathBuf,
    child: Option<Child>,
}

impl Process {
    /// Starts a node from `config`, logging errors only to the test's
    /// stderr.
    pub fn start(config: &Path) -> Process {
        Process::start_in(config, "error", Stdio::inherit(), Path::new("."))
    }

    /// Starts a node from `config` in `cwd`, logging at `level` to
    /// `stderr`.
    pub fn start_in(config: &Path, level: &str, stderr: Stdio, cwd: &Path) -> Process {
        let child = Command::new(BIN)
            .args(["node", "--config"])
            .arg(config)
            .current_dir(cwd)
            .env("RUST_LOG", level)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn trexlock node");
        Process {
            config: config.to_owned(),
            child: Some(child),
        }
    }

    /// False once killed.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Takes the running child over: the caller kills and reaps it.
    pub fn take_child(&mut self) -> Child {
        self.child.take().expect("running")
    }

    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reap");
        }
    }

    /// Starts the killed node again from the same configuration.
    pub fn restart(&mut self) {
        assert!(self.child.is_none());
        *self = Process::start(&self.config.clone());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// Adds the arguments that make a client command present certificate
/// `cert` (its file stem in `certs`) and trust the cluster's CA there.
pub fn with_cert<'a>(command: &'a mut Command, certs: &Path, cert: &str) -> &'a mut Command {
    command
        .arg("--tls-ca")
        .arg(certs.join("ca.pem"))
        .arg("--tls-cert")
        .arg(certs.join(format!("{cert}.pem")))
        .arg("--tls-key")
        .arg(certs.join(format!("{cert}.key")))
}
