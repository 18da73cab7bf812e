//! The fault schedule: one fault at a time, chosen by a seeded generator,
//! each healed before the next, with the node and link faults of issue 8.

use super::clients::{NAMES, Shared as ClientShared};
use super::cluster::{Cluster, Damage, JournalCopy, mono_ns, signal};
use super::history::{History, Read};
use super::proxy::Dialer;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use trexlock_lease::remote;

pub struct Nemesis {
    pub cluster: Arc<tokio::sync::Mutex<Cluster>>,
    pub clients: Vec<Arc<ClientShared>>,
    pub history: Arc<Mutex<History>>,
    pub rng: fastrand::Rng,
    pub ttl: Duration,
    pub faults: BTreeMap<&'static str, u64>,
    pub log: Vec<String>,
    started: Instant,
}

const KINDS: [(&str, u32); 13] = [
    ("kill node", 3),
    ("kill leader", 3),
    ("pause node", 2),
    ("pause leader", 2),
    ("pause client holding a lease", 2),
    ("pause client mid-write", 2),
    ("isolate leader", 2),
    ("isolate node", 1),
    ("one-way cut", 1),
    ("delay links", 2),
    ("reset links", 1),
    ("damage journal then wipe and rejoin", 1),
    // Only when named in TREXLOCK_NEMESIS_FAULTS. Once it has run, the
    // membership is no longer the one the cluster began with, so "damage
    // journal then wipe and rejoin" takes the remove-and-add procedure
    // from then on: the default schedule keeps exercising the plain wipe.
    ("replace node", 0),
];

impl Nemesis {
    pub fn new(
        cluster: Arc<tokio::sync::Mutex<Cluster>>,
        clients: Vec<Arc<ClientShared>>,
        history: Arc<Mutex<History>>,
        seed: u64,
        ttl: Duration,
    ) -> Nemesis {
        Nemesis {
            cluster,
            clients,
            history,
            rng: fastrand::Rng::with_seed(seed),
            ttl,
            faults: BTreeMap::new(),
            log: Vec::new(),
            started: Instant::now(),
        }
    }

    pub(super) fn note(&mut self, what: String) {
        let line = format!("{:>8.1}s {what}", self.started.elapsed().as_secs_f64());
        eprintln!("nemesis: {line}");
        self.log.push(line);
    }

    fn ms(&mut self, range: std::ops::Range<u64>) -> Duration {
        Duration::from_millis(self.rng.u64(range))
    }

    /// Injects faults until `until`; a journal is damaged at least once.
    /// `TREXLOCK_NEMESIS_FAULTS` (comma-separated kinds) narrows the
    /// schedule, to minimise a reproduction.
    pub async fn run(&mut self, until: Instant) {
        let only = std::env::var("TREXLOCK_NEMESIS_FAULTS").ok();
        let kinds: Vec<(&'static str, u32)> = KINDS
            .iter()
            .copied()
            .filter(|(k, weight)| match &only {
                None => *weight > 0,
                Some(o) => o.split(',').any(|x| x == *k),
            })
            .map(|(k, weight)| (k, weight.max(1)))
            .collect();
        assert!(
            !kinds.is_empty(),
            "TREXLOCK_NEMESIS_FAULTS names no fault kind"
        );
        let total: u32 = kinds.iter().map(|k| k.1).sum();
        let halfway = self.started + (until - self.started) / 3;
        for _ in 0..100_000 {
            if Instant::now() >= until {
                return;
            }
            let quiet = self.ms(500..2500);
            sleep(quiet).await;
            self.check_nodes().await;
            self.audit().await;
            let mut pick = self.rng.u32(..total);
            let mut kind = kinds[0].0;
            for &(k, w) in &kinds {
                if pick < w {
                    kind = k;
                    break;
                }
                pick -= w;
            }
            if only.is_none() && Instant::now() >= halfway && !self.faults.contains_key(KINDS[11].0)
            {
                kind = KINDS[11].0;
            }
            *self.faults.entry(kind).or_default() += 1;
            self.inject(kind).await;
        }
    }

    async fn leader_or_any(&mut self) -> usize {
        let cluster = self.cluster.lock().await;
        let n = cluster.len();
        match cluster.leader().await {
            Some(l) => l,
            None => self.rng.usize(..n),
        }
    }

    async fn inject(&mut self, kind: &'static str) {
        let n = self.cluster.lock().await.len();
        let target = if kind.contains("leader") {
            self.leader_or_any().await
        } else {
            self.rng.usize(..n)
        };
        match kind {
            "kill node" | "kill leader" => {
                let down = self.ms(200..3000);
                self.note(format!("{kind}: SIGKILL n{} for {down:?}", target + 1));
                self.cluster.lock().await.sigkill(target);
                sleep(down).await;
                self.cluster.lock().await.restart(target);
            }
            "pause node" | "pause leader" => {
                // Sometimes longer than a lease: the node wakes up to a
                // world that moved on.
                let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(2000);
                let pause = self.ms(300..ttl * 2);
                self.note(format!("{kind}: SIGSTOP n{} for {pause:?}", target + 1));
                self.cluster.lock().await.pause(target);
                sleep(pause).await;
                self.cluster.lock().await.resume(target);
            }
            "pause client holding a lease" => self.pause_client().await,
            "pause client mid-write" => {
                let c = self.clients[self.rng.usize(..self.clients.len())].clone();
                let ttl = u64::try_from(self.ttl.as_millis()).unwrap_or(2000);
                let pause = ttl + self.rng.u64(300..2000);
                self.note(format!(
                    "{kind}: SIGSTOP {} for {pause} ms between its next check and write",
                    c.owner
                ));
                c.stall_next_write_ms.store(pause, Ordering::SeqCst);
            }
            "isolate leader" | "isolate node" => {
                let with_clients = self.rng.bool();
                let length = self.ms(500..5000);
                self.note(format!(
                    "{kind}: cut n{} off from its peers{} for {length:?}",
                    target + 1,
                    if with_clients { " and its clients" } else { "" }
                ));
                let cluster = self.cluster.lock().await;
                for link in cluster.proxy.links_of(target, with_clients) {
                    cluster.proxy.set(link, |s| s.stalled = true);
                }
                drop(cluster);
                sleep(length).await;
                self.cluster.lock().await.proxy.heal_all();
            }
            "one-way cut" => {
                let to = (target + 1 + self.rng.usize(..n - 1)) % n;
                let length = self.ms(500..4000);
                self.note(format!(
                    "{kind}: n{} cannot reach n{} for {length:?}",
                    target + 1,
                    to + 1
                ));
                self.cluster
                    .lock()
                    .await
                    .proxy
                    .set((Dialer::Node(target), to), |s| s.stalled = true);
                sleep(length).await;
                self.cluster.lock().await.proxy.heal_all();
            }
            "delay links" => {
                let delay = self.ms(5..150);
                let length = self.ms(1000..5000);
                self.note(format!(
                    "{kind}: +{delay:?} on every link of n{} for {length:?}",
                    target + 1
                ));
                let cluster = self.cluster.lock().await;
                for link in cluster.proxy.links_of(target, true) {
                    cluster.proxy.set(link, |s| s.delay = delay);
                }
                drop(cluster);
                sleep(length).await;
                self.cluster.lock().await.proxy.heal_all();
            }
            "reset links" => {
                self.note(format!("{kind}: reset every connection of n{}", target + 1));
                let cluster = self.cluster.lock().await;
                for link in cluster.proxy.links_of(target, true) {
                    cluster.proxy.set(link, |s| s.resets += 1);
                }
            }
            "replace node" => self.replace_node(target).await,
            _ => self.damage_and_rejoin(target).await,
        }
    }

    async fn pause_client(&mut self) {
        let holding: Vec<Arc<ClientShared>> = self
            .clients
            .iter()
            .filter(|c| c.holding.load(Ordering::SeqCst))
            .cloned()
            .collect();
        let Some(c) =
            (!holding.is_empty()).then(|| holding[self.rng.usize(..holding.len())].clone())
        else {
            self.note("pause client: nobody holds a lease now".into());
            return;
        };
        // Longer than the lease: when it wakes up, someone else may hold it
        // and its stale writes must be fenced out.
        let pause = self.ttl + self.ms(300..2000);
        self.note(format!(
            "pause client holding a lease: SIGSTOP {} for {pause:?}",
            c.owner
        ));
        c.paused.store(true, Ordering::SeqCst);
        signal(c.pid, libc::SIGSTOP);
        sleep(pause).await;
        signal(c.pid, libc::SIGCONT);
        c.paused.store(false, Ordering::SeqCst);
    }

    /// Copies `target`'s journal while it is down, restarts it and waits
    /// until it has acknowledged a commit the copy lacks; None (and the node
    /// running) if it acknowledges none within 10 s.
    async fn copy_then_run_on(&mut self, target: usize) -> Option<JournalCopy> {
        let mut cluster = self.cluster.lock().await;
        cluster.sigkill(target);
        let copy = cluster.copy_journal(target);
        cluster.restart(target);
        drop(cluster);
        let copy = copy?;
        for _ in 0..100 {
            sleep(Duration::from_millis(100)).await;
            if self.cluster.lock().await.acknowledged_since(target, &copy) {
                return Some(copy);
            }
        }
        let name = self.cluster.lock().await.name(target);
        self.note(format!(
            "{name}: acknowledged nothing within 10 s of a restart; scribbling instead of \
             restoring an older copy"
        ));
        None
    }

    /// Damages a journal, expects the node to refuse it, then follows the
    /// operator procedure: with the membership the cluster began with, wipe
    /// and restart (it relearns as a voter); once the membership changed,
    /// take it out, wipe it and add it back under its own id as a learner
    /// (see the README).
    /// Either way, wait for the catch-up.
    async fn damage_and_rejoin(&mut self, target: usize) {
        let mut damage =
            [Damage::Truncate, Damage::Scribble, Damage::RestoreOlder][self.rng.usize(..3)];
        let older = match damage {
            Damage::RestoreOlder => self.copy_then_run_on(target).await,
            _ => None,
        };
        if older.is_none() {
            damage = Damage::Scribble;
        }
        let mut cluster = self.cluster.lock().await;
        let name = cluster.name(target);
        cluster.sigkill(target);
        if !cluster.has_journal(target) {
            cluster.restart(target);
            drop(cluster);
            self.note(format!(
                "damage journal: {name} has none yet (it relearns, or never started since \
                 its wipe); skipped"
            ));
            return;
        }
        let what = cluster.damage_journal(target, damage, older, &mut self.rng);
        let refusal = cluster.expect_refusal(target).await;
        let changed = cluster.changed;
        drop(cluster);
        self.note(format!("damage journal of {name}: {what}"));
        match refusal {
            Ok(message) => {
                self.note(format!("{name} refused to start: {message}"));
                let named = message.contains("journal")
                    && (!matches!(damage, Damage::RestoreOlder) || message.contains("rolled back"));
                if !named {
                    self.history.lock().expect("history").violation(format!(
                        "{name} refused a damaged journal ({damage:?}) without saying so: {message}"
                    ));
                }
            }
            Err(why) => self
                .history
                .lock()
                .expect("history")
                .violation(format!("{name}: {why}")),
        }
        // The operator procedure (see the top of nemesis.rs): every other
        // node up and caught up with one leader before the wiped one starts.
        let mut ready = None;
        for _ in 0..100 {
            ready = self.others_agree(target).await;
            if ready.is_some() {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        if ready.is_none() {
            self.note(format!(
                "{name}: the other nodes did not agree on a leader and slot within 10 s; \
                 going on anyway"
            ));
        }
        if changed {
            if !self.rejoin_as_learner(target).await {
                return;
            }
        } else {
            let mut cluster = self.cluster.lock().await;
            cluster.wipe(target);
            cluster.restart(target);
        }
        self.await_catch_up(target).await;
    }

    /// Waits until `target` has applied what the leader had when it was
    /// first asked; a violation after 30 s.
    async fn await_catch_up(&mut self, target: usize) {
        let name = self.cluster.lock().await.name(target);
        let since = Instant::now();
        let mut last = None;
        let mut goal = None;
        for _ in 0..300 {
            if goal.is_none() {
                let cluster = self.cluster.lock().await;
                if let Some(l) = cluster.leader().await {
                    goal = cluster.status(l).await.map(|s| s.applied);
                }
            }
            let status = self.cluster.lock().await.status(target).await;
            last = status.clone();
            if let (Some(goal), Some(status)) = (goal, status)
                && status.applied >= goal
            {
                self.note(format!(
                    "{name} wiped and restarted: caught up to slot {goal} in {:?}",
                    since.elapsed()
                ));
                return;
            }
            sleep(Duration::from_millis(100)).await;
        }
        let mut others = Vec::new();
        for i in 0..n_nodes(&self.cluster).await {
            let status = self.cluster.lock().await.status(i).await;
            others.push(status.map(|s| (s.leader, s.is_leader, s.applied)));
        }
        self.history.lock().expect("history").violation(format!(
            "{name} did not catch up to slot {goal:?} within 30 s of rejoining with a wiped \
             journal (its last status: {last:?}; (leader, is_leader, applied) of each node: \
             {others:?})"
        ));
    }

    /// Whether every node but `except` runs, names the same leader and has
    /// applied as much as it.
    pub(super) async fn others_agree(&self, except: usize) -> Option<()> {
        let cluster = self.cluster.lock().await;
        let mut seen = Vec::new();
        for i in (0..cluster.len()).filter(|i| *i != except) {
            let s = cluster.status(i).await?;
            seen.push((s.leader?, s.applied));
        }
        let (leader, applied) = seen[0];
        seen.iter().all(|s| *s == (leader, applied)).then_some(())
    }

    /// A node that died on its own is a finding; restart it and go on.
    pub async fn check_nodes(&mut self) {
        let mut cluster = self.cluster.lock().await;
        for i in 0..cluster.len() {
            if let Some(status) = cluster.nodes[i].exited() {
                let log = std::fs::read_to_string(&cluster.nodes[i].log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(5).collect();
                self.history.lock().expect("history").violation(format!(
                    "n{} exited on its own ({status}); log tail: {tail:?}",
                    i + 1
                ));
                cluster.restart(i);
            }
        }
    }

    /// Reads every lease's holder through one running node (recorded; the
    /// checker compares them with what clients were told).
    pub async fn audit(&mut self) {
        let n = self.cluster.lock().await.len();
        let node = self.rng.usize(..n);
        audit_node(&self.cluster, &self.history, node, &NAMES).await;
    }
}

async fn n_nodes(cluster: &tokio::sync::Mutex<Cluster>) -> usize {
    cluster.lock().await.len()
}

/// Reads `names` through node `node` alone; returns what it said, or None
/// if it did not answer.
pub async fn audit_node(
    cluster: &tokio::sync::Mutex<Cluster>,
    history: &Mutex<History>,
    node: usize,
    names: &[&str],
) -> Option<Vec<Option<(String, u64)>>> {
    let config = {
        let cluster = cluster.lock().await;
        if !cluster.nodes[node].is_running() || cluster.nodes[node].paused {
            return None;
        }
        cluster.remote(node)
    };
    let handle = tokio::time::timeout(Duration::from_secs(2), remote::connect(config))
        .await
        .ok()?
        .ok()?;
    let client = handle
        .client("auditor")
        .with_call_timeout(Duration::from_secs(2));
    let mut seen = Vec::new();
    for name in names {
        let sent = mono_ns();
        let holder = client.holder(name).await.ok()?;
        let replied = mono_ns();
        let holder = holder.map(|h| (h.owner, h.stamp.0));
        history.lock().expect("history").reads.push(Read {
            node,
            name: (*name).to_owned(),
            sent,
            replied,
            holder: holder.clone(),
        });
        seen.push(holder);
    }
    Some(seen)
}
