//! The `trexlock node` processes: configuration files, start, SIGKILL,
//! SIGSTOP/SIGCONT, restart, journal damage and wiping. Every process is
//! killed when its `NodeProc` is dropped (panics included), and each is
//! started with `PR_SET_PDEATHSIG`, so even a harness killed outright takes
//! its nodes with it.

use super::proxy::{Dialer, Proxy};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use trexlock_lease::remote::{self, RemoteConfig, RemoteStatus};
use trexlock_test_support::local_addr;

pub const CLUSTER: &str = "nemesis";
const NODE_BIN: &str = env!("CARGO_BIN_EXE_trexlock");

/// Nanoseconds of `CLOCK_MONOTONIC`, the clock the client processes
/// report in, so their times and the harness's compare.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sends `signal` to `pid` (SIGSTOP/SIGCONT; killing goes through `Child`).
pub fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a child we started and have not reaped.
    unsafe { libc::kill(pid as libc::pid_t, signal) };
}

/// Makes a child die with the harness, even if the harness is SIGKILLed.
pub fn die_with_parent(cmd: &mut Command) {
    // SAFETY: prctl is async-signal-safe; nothing else runs in the hook.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

pub struct NodeProc {
    pub config: PathBuf,
    pub data_dir: PathBuf,
    /// The journal's file name in `data_dir`.
    pub journal: &'static str,
    pub log: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

impl NodeProc {
    /// A node process for the configuration file `config` (not started).
    pub fn new(
        config: PathBuf,
        data_dir: PathBuf,
        journal: &'static str,
        log: PathBuf,
    ) -> NodeProc {
        NodeProc {
            config,
            data_dir,
            journal,
            log,
            child: None,
            paused: false,
        }
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node already running");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log");
        let mut cmd = Command::new(NODE_BIN);
        cmd.args(["node", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            // Plain logs: the harness greps them for elections.
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        die_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn trexlock node"));
        self.paused = false;
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.paused = false;
    }

    /// If the process ended on its own, reaps it and says how.
    pub fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status.to_string())
            }
            _ => None,
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.sigkill();
    }
}

/// How a journal is damaged before a restart.
#[derive(Clone, Copy, Debug)]
pub enum Damage {
    /// Cut to a fraction of its length, as a lost tail would.
    Truncate,
    /// Overwrite the file's header with garbage, as a bad sector would.
    Scribble,
    /// Put back an older copy of the file (taken by
    /// [`Cluster::copy_journal`]), as a restored backup would: the node has
    /// acknowledged commits the copy lacks.
    RestoreOlder,
}

/// A node's journal file and acknowledgement mark at one moment.
pub struct JournalCopy {
    journal: Vec<u8>,
    mark: Vec<u8>,
}

pub struct Cluster {
    pub proxy: Proxy,
    pub nodes: Vec<NodeProc>,
    /// The node id each slot runs (slot `i` starts as node `i + 1`; a
    /// replaced node's slot runs its successor, on the same port).
    pub ids: Vec<u16>,
    /// Where each slot's node listens (peers and clients reach it through
    /// the proxy; a node added at runtime is reached here directly).
    pub listen: Vec<SocketAddr>,
    /// Whether the membership has changed since the start: a node that
    /// loses its disk then must be taken out and added back (the README's
    /// disk-loss procedure), as it refuses to relearn as a voter.
    pub changed: bool,
}

impl Cluster {
    /// Writes the configuration of `n` nodes whose peers are reached
    /// through the proxy, and starts them.
    pub async fn start(dir: &Path, n: usize) -> Cluster {
        let listen: Vec<SocketAddr> = (0..n).map(|_| local_addr()).collect();
        let proxy = Proxy::start(&listen).await;
        let mut nodes = Vec::new();
        for (i, addr) in listen.iter().enumerate() {
            let data_dir = dir.join(format!("n{}", i + 1));
            // n2 keeps the append-only log journal, the others redb, so
            // that every fault meets both engines.
            let (engine, journal) = if i == 1 {
                ("log", "journal.log")
            } else {
                ("redb", "journal.redb")
            };
            let mut text = format!(
                "cluster_id = \"{CLUSTER}\"\nnode_id = {}\nlisten = \"{addr}\"\ndata_dir = \"{}\"\n\
                 journal = \"{engine}\"\n\
                 # Snapshots every 500 slots, so compaction and snapshot\n\
                 # installs happen within a short run.\nsnapshot_every = 500\n[peers]\n",
                i + 1,
                data_dir.display()
            );
            for j in (0..n).filter(|j| *j != i) {
                let via = proxy.addr((Dialer::Node(i), j));
                text.push_str(&format!("{} = \"{via}\"\n", j + 1));
            }
            let config = dir.join(format!("n{}.toml", i + 1));
            std::fs::write(&config, text).expect("write config");
            let log = dir.join(format!("n{}.log", i + 1));
            let mut node = NodeProc::new(config, data_dir, journal, log);
            node.spawn();
            nodes.push(node);
        }
        let ids = (1..=n as u16).collect();
        Cluster {
            proxy,
            nodes,
            ids,
            listen,
            changed: false,
        }
    }

    /// Makes slot `i` run node `id` from its next start: rewrites its
    /// configuration (the slot must be down and wiped).
    pub fn renumber(&mut self, i: usize, id: u16) {
        assert!(!self.nodes[i].is_running());
        let text = std::fs::read_to_string(&self.nodes[i].config).expect("read config");
        let text: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("node_id = ") {
                    format!("node_id = {id}")
                } else {
                    l.to_owned()
                }
            })
            .collect();
        std::fs::write(&self.nodes[i].config, text.join("\n") + "\n").expect("write config");
        self.ids[i] = id;
    }

    /// Slot `i`'s node for the schedule's notes: its id, and its slot when
    /// a successor runs there.
    pub fn name(&self, i: usize) -> String {
        match self.ids[i] {
            id if usize::from(id) == i + 1 => format!("n{id}"),
            id => format!("n{id} (slot {})", i + 1),
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Where clients reach node `i` (through its client link).
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        self.proxy.addr((Dialer::Clients, i))
    }

    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        (0..self.len()).map(|i| self.client_addr(i)).collect()
    }

    pub fn remote(&self, i: usize) -> RemoteConfig {
        RemoteConfig::new(CLUSTER, vec![self.client_addr(i)])
    }

    pub fn sigkill(&mut self, i: usize) {
        self.nodes[i].sigkill();
    }

    pub fn restart(&mut self, i: usize) {
        self.nodes[i].spawn();
    }

    pub fn pause(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGSTOP);
            self.nodes[i].paused = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if let Some(pid) = self.nodes[i].pid() {
            signal(pid, libc::SIGCONT);
        }
        self.nodes[i].paused = false;
    }

    /// A node's status, if it answers within a second.
    pub async fn status(&self, i: usize) -> Option<RemoteStatus> {
        if !self.nodes[i].is_running() || self.nodes[i].paused {
            return None;
        }
        tokio::time::timeout(Duration::from_secs(1), remote::status(&self.remote(i)))
            .await
            .ok()?
            .ok()
    }

    /// The node that says it leads (the one with the newest view wins if
    /// a deposed leader has not noticed yet).
    pub async fn leader(&self) -> Option<usize> {
        let mut claims = Vec::new();
        for i in 0..self.len() {
            if let Some(s) = self.status(i).await
                && s.is_leader
            {
                claims.push((s.applied, i));
            }
        }
        claims.into_iter().max().map(|(_, i)| i)
    }

    fn journal_paths(&self, i: usize) -> (PathBuf, PathBuf) {
        let node = &self.nodes[i];
        (
            node.data_dir.join(node.journal),
            node.data_dir.join(format!("{}.acked", node.journal)),
        )
    }

    /// Whether node `i` has a journal and its mark: not when it never
    /// started since its data directory was wiped, nor while it relearns
    /// after a disk loss (it writes nothing until it votes).
    pub fn has_journal(&self, i: usize) -> bool {
        let (journal, mark) = self.journal_paths(i);
        journal.exists() && mark.exists()
    }

    /// Copies node `i`'s journal and mark (the node must be down); `None`
    /// when it has none (see [`Cluster::has_journal`]).
    pub fn copy_journal(&self, i: usize) -> Option<JournalCopy> {
        assert!(!self.nodes[i].is_running());
        let (journal, mark) = self.journal_paths(i);
        Some(JournalCopy {
            journal: std::fs::read(journal).ok()?,
            mark: std::fs::read(mark).ok()?,
        })
    }

    /// Whether node `i` has acknowledged a commit since `copy` was taken.
    pub fn acknowledged_since(&self, i: usize, copy: &JournalCopy) -> bool {
        std::fs::read(self.journal_paths(i).1).is_ok_and(|mark| mark != copy.mark)
    }

    /// Damages node `i`'s journal (the node must be down); `older` is the
    /// copy [`Damage::RestoreOlder`] puts back.
    pub fn damage_journal(
        &self,
        i: usize,
        damage: Damage,
        older: Option<JournalCopy>,
        rng: &mut fastrand::Rng,
    ) -> String {
        assert!(!self.nodes[i].is_running());
        let path = self.journal_paths(i).0;
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open journal");
        let len = file.metadata().expect("journal metadata").len();
        match damage {
            Damage::Truncate => {
                // Into what was written: the log journal's file is
                // preallocated, its tail zeros.
                let mut bytes = Vec::new();
                file.read_to_end(&mut bytes).expect("read journal");
                let used = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1) as u64;
                let keep = used * rng.u64(10..60) / 100;
                file.set_len(keep).expect("truncate journal");
                format!("truncated {len} -> {keep} bytes")
            }
            Damage::Scribble => {
                let mut head = vec![0u8; 4096.min(len as usize)];
                file.read_exact(&mut head).expect("read journal");
                for b in head.iter_mut().skip(rng.usize(0..64)) {
                    *b = rng.u8(..);
                }
                file.seek(SeekFrom::Start(0)).expect("seek");
                file.write_all(&head).expect("scribble journal");
                file.sync_all().expect("sync journal");
                format!("scribbled over the first {} bytes of {len}", head.len())
            }
            Damage::RestoreOlder => {
                let older = older.expect("an older copy to restore");
                drop(file);
                std::fs::write(&path, &older.journal).expect("restore journal");
                format!(
                    "put back an older copy ({} bytes, was {len}) under a newer mark",
                    older.journal.len()
                )
            }
        }
    }

    /// Starts node `i` on its (damaged) journal and expects it to refuse:
    /// returns its error message, or why that expectation failed.
    pub async fn expect_refusal(&mut self, i: usize) -> Result<String, String> {
        let node = &self.nodes[i];
        let mut cmd = Command::new(NODE_BIN);
        cmd.args(["node", "--config"])
            .arg(&node.config)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        die_with_parent(&mut cmd);
        let mut child = cmd.spawn().expect("spawn trexlock node");
        for _ in 0..200 {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut stderr) = child.stderr.take() {
                    let _ = stderr.read_to_string(&mut err);
                }
                return if status.success() {
                    Err(format!("exited successfully on a damaged journal: {err}"))
                } else {
                    Ok(err.trim().to_owned())
                };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err("still running 10 s after starting on a damaged journal".into())
    }

    /// The operator's remedy: delete the node's data directory.
    pub fn wipe(&self, i: usize) {
        assert!(!self.nodes[i].is_running());
        std::fs::remove_dir_all(&self.nodes[i].data_dir).expect("wipe data dir");
    }

    /// Distinct elected ballots in every node's log: the leader changes.
    pub fn leader_elections(&self) -> usize {
        let mut ballots = std::collections::BTreeSet::new();
        for node in &self.nodes {
            let text = std::fs::read_to_string(&node.log).unwrap_or_default();
            for line in text.lines().filter(|l| l.contains("elected leader")) {
                if let Some(b) = line.split("ballot=").nth(1) {
                    ballots.insert(b.split_whitespace().next().unwrap_or("").to_owned());
                }
            }
        }
        ballots.len()
    }
}
