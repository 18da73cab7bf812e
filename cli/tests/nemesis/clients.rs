//! Client processes (`trexlock-nemesis-client`) and the tasks that drive
//! them: acquire, critical sections against the fenced resource, renew,
//! release or abandon, with everything recorded in the history.

use super::cluster::{CLUSTER, die_with_parent, mono_ns, signal};
use super::history::History;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

const CLIENT_BIN: &str = env!("CARGO_BIN_EXE_trexlock-nemesis-client");

/// The lease names clients contend for: one hot, two warm.
pub const NAMES: [&str; 3] = ["hot", "warm-a", "warm-b"];

/// Timings every client uses.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub ttl: Duration,
    pub gap: Duration,
}

/// What the fault schedule may see of a client.
pub struct Shared {
    pub owner: String,
    pub pid: u32,
    /// True while the client holds a lease (pausing it then matters).
    pub holding: AtomicBool,
    pub paused: AtomicBool,
    /// If non-zero, the client is SIGSTOPped for this many ms between its
    /// validity check and its next fenced write reaching the resource.
    pub stall_next_write_ms: AtomicU64,
}

pub struct ClientProc {
    pub shared: Arc<Shared>,
    _child: Child,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    replies: mpsc::Receiver<String>,
    history: Arc<Mutex<History>>,
    rng: fastrand::Rng,
    timing: Timing,
    seq: u64,
    /// Attempts so far: each acquire gets a fresh owner (see the client).
    attempts: u64,
}

impl ClientProc {
    /// Starts a client process whose servers are `servers`.
    pub async fn start(
        dir: &Path,
        owner: &str,
        servers: &[SocketAddr],
        history: Arc<Mutex<History>>,
        seed: u64,
        timing: Timing,
    ) -> ClientProc {
        let servers: Vec<String> = servers.iter().map(ToString::to_string).collect();
        let log = std::fs::File::create(dir.join(format!("{owner}.log"))).expect("client log");
        let mut cmd = std::process::Command::new(CLIENT_BIN);
        cmd.args(["--cluster", CLUSTER, "--servers"])
            .arg(servers.join(","))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        die_with_parent(&mut cmd);
        let mut cmd = Command::from(cmd);
        cmd.kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn nemesis client");
        let stdin = Arc::new(tokio::sync::Mutex::new(child.stdin.take().expect("stdin")));
        let stdout = child.stdout.take().expect("stdout");
        let shared = Arc::new(Shared {
            owner: owner.to_owned(),
            pid: child.id().expect("pid"),
            holding: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            stall_next_write_ms: AtomicU64::new(0),
        });
        let (tx, replies) = mpsc::channel(16);
        tokio::spawn(read_replies(
            BufReader::new(stdout),
            stdin.clone(),
            tx,
            history.clone(),
            shared.clone(),
        ));
        let mut client = ClientProc {
            shared,
            _child: child,
            stdin,
            replies,
            history,
            rng: fastrand::Rng::with_seed(seed),
            timing,
            seq: 0,
            attempts: 0,
        };
        let ready = client.next_reply().await;
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "client {owner} did not start"
        );
        client
    }

    async fn next_reply(&mut self) -> Option<String> {
        // Bounded: the longest command (a wait in line, then giving up,
        // each call with its timeout) takes well under this, pauses included.
        tokio::time::timeout(Duration::from_secs(90), self.replies.recv())
            .await
            .ok()
            .flatten()
    }

    async fn call(&mut self, command: String) -> Vec<String> {
        let sent = {
            let mut stdin = self.stdin.lock().await;
            stdin
                .write_all(format!("{command}\n").as_bytes())
                .await
                .is_ok()
        };
        let reply = if sent { self.next_reply().await } else { None };
        match reply {
            Some(line) => line.split_whitespace().map(str::to_owned).collect(),
            None => {
                let owner = self.shared.owner.clone();
                self.history.lock().expect("history").violation(format!(
                    "client {owner} did not answer {command:?} within 90 s"
                ));
                vec!["dead".into()]
            }
        }
    }

    /// The owner of the current attempt.
    fn owner(&self) -> String {
        format!("{}.{}", self.shared.owner, self.attempts)
    }

    fn record(&self, f: impl FnOnce(&mut History, &str)) {
        f(&mut self.history.lock().expect("history"), &self.owner());
    }

    /// Tries for `name`; on a grant returns its stamp.
    pub async fn acquire(&mut self, name: &str, wait: Duration) -> Option<u64> {
        let ttl = self.timing.ttl.as_millis();
        self.attempts += 1;
        let owner = self.owner();
        let reply = self
            .call(format!("acquire {name} {ttl} {} {owner}", wait.as_millis()))
            .await;
        let words: Vec<&str> = reply.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["granted", stamp, sent, acked, belief] => {
                let (stamp, sent, acked, belief) = (num(stamp), num(sent), num(acked), num(belief));
                self.record(|h, o| h.granted(o, name, stamp, sent, acked, belief));
                self.shared.holding.store(true, Ordering::SeqCst);
                Some(stamp)
            }
            ["held", ..] => {
                self.record(|h, _| h.count("acquire answered held"));
                None
            }
            ["timeout"] => {
                self.record(|h, _| h.count("acquire wait timed out"));
                None
            }
            _ => {
                self.record(|h, _| h.count("acquire failed (no answer in time)"));
                None
            }
        }
    }

    /// One critical section; false once the lease is no longer valid.
    pub async fn write(&mut self, name: &str) -> bool {
        self.seq += 1;
        let gap = self.timing.gap.as_millis();
        let reply = self.call(format!("write {name} {gap} {}", self.seq)).await;
        reply.first().map(String::as_str) == Some("done")
    }

    /// Renews; false if the lease is lost.
    pub async fn renew(&mut self, name: &str, stamp: u64) -> bool {
        let reply = self.call(format!("renew {name}")).await;
        let words: Vec<&str> = reply.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["renewed", belief] => {
                let belief = num(belief);
                self.record(|h, o| h.renewed(o, name, stamp, belief));
                true
            }
            ["lost", at] => {
                let at = num(at);
                self.record(|h, o| h.lost(o, name, stamp, at));
                self.shared.holding.store(false, Ordering::SeqCst);
                false
            }
            // A timeout: the lease may still be ours; the next renewal or
            // the validity check decides.
            _ => true,
        }
    }

    pub async fn release(&mut self, name: &str, stamp: u64) {
        let reply = self.call(format!("release {name}")).await;
        let words: Vec<&str> = reply.iter().map(String::as_str).collect();
        match words.as_slice() {
            ["released", sent, acked] => {
                let (sent, acked) = (num(sent), num(acked));
                self.record(|h, o| h.released(o, name, stamp, sent, acked));
            }
            ["lost", sent] | ["error", _, sent] => {
                let sent = num(sent);
                self.record(|h, o| {
                    h.count("release not acknowledged");
                    h.belief_ended(o, name, stamp, sent);
                });
            }
            _ => {}
        }
        self.shared.holding.store(false, Ordering::SeqCst);
    }

    /// Abandons the lease without releasing it: it must run out.
    pub async fn abandon(&mut self, name: &str, stamp: u64) {
        let reply = self.call(format!("drop {name}")).await;
        if let Some(at) = reply.get(1) {
            let at = num(at);
            self.record(|h, o| {
                h.count("lease abandoned");
                h.belief_ended(o, name, stamp, at);
            });
        }
        self.shared.holding.store(false, Ordering::SeqCst);
    }

    /// The workload: until `stop`, take a lease, do a few critical
    /// sections with renewals in between, then release or abandon it.
    pub async fn run(&mut self, stop: Arc<AtomicBool>) {
        // Bounded by `stop`, and by a generous count as a backstop.
        for _ in 0..1_000_000 {
            if stop.load(Ordering::SeqCst) {
                return;
            }
            let name = if self.rng.bool() {
                NAMES[0]
            } else {
                NAMES[self.rng.usize(1..NAMES.len())]
            };
            let wait = if self.rng.u8(..4) == 0 {
                Duration::ZERO
            } else {
                Duration::from_millis(self.rng.u64(200..3000))
            };
            if let Some(stamp) = self.acquire(name, wait).await {
                self.hold(name, stamp).await;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.u64(20..300))).await;
        }
    }

    async fn hold(&mut self, name: &str, stamp: u64) {
        let ttl_ms = u64::try_from(self.timing.ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..self.rng.usize(1..=4) {
            if !self.write(name).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(self.rng.u64(20..ttl_ms / 4))).await;
            if self.rng.bool() && !self.renew(name, stamp).await {
                return;
            }
        }
        if self.rng.u8(..8) == 0 {
            self.abandon(name, stamp).await;
        } else {
            self.release(name, stamp).await;
        }
    }

    /// After the faults: waits in line for `name` (up to `wait`), does one
    /// critical section and releases. True if served.
    pub async fn served(&mut self, name: &str, wait: Duration) -> bool {
        let Some(stamp) = self.acquire(name, wait).await else {
            return false;
        };
        self.write(name).await;
        self.release(name, stamp).await;
        true
    }

    pub async fn quit(&mut self) {
        let mut stdin = self.stdin.lock().await;
        let _ = stdin.write_all(b"quit\n").await;
    }
}

fn num(word: &str) -> u64 {
    word.parse()
        .unwrap_or_else(|_| panic!("not a number: {word}"))
}

/// Reads a client's output: fenced writes are served here, against the
/// resource in the history; everything else is an answer to a command.
async fn read_replies(
    stdout: BufReader<tokio::process::ChildStdout>,
    stdin: Arc<tokio::sync::Mutex<ChildStdin>>,
    replies: mpsc::Sender<String>,
    history: Arc<Mutex<History>>,
    shared: Arc<Shared>,
) {
    let mut lines = stdout.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        if let ["W", name, stamp, _seq, checked, owner] = words.as_slice() {
            let stall = shared.stall_next_write_ms.swap(0, Ordering::SeqCst);
            if stall > 0 {
                // The worst moment for a pause: the lease was checked valid
                // and the write is not done. Only the fence can help now.
                signal(shared.pid, libc::SIGSTOP);
                tokio::time::sleep(Duration::from_millis(stall)).await;
                signal(shared.pid, libc::SIGCONT);
            }
            let accepted = history.lock().expect("history").write(
                name,
                owner,
                num(stamp),
                num(checked),
                mono_ns(),
            );
            let answer: &[u8] = if accepted { b"ok\n" } else { b"refused\n" };
            let _ = stdin.lock().await.write_all(answer).await;
            continue;
        }
        if replies.send(line).await.is_err() {
            return;
        }
    }
}
