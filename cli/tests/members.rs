//! Membership changes between real `trexlock node` processes under client
//! load, through the `trexlock member` CLI: grow 3 to 5, replace a node by
//! a new id on a new port, shrink 5 to 3, and take a node that lost its
//! disk out and back in. Client processes take, renew,
//! write under and release leases the whole time, every member's table is
//! read as it goes, and the nemesis checker goes over the history: no
//! acknowledged grant or release lost, no lease granted twice, stamps
//! increasing.

#[allow(dead_code)]
#[path = "nemesis/clients.rs"]
mod clients;
#[allow(dead_code)]
#[path = "nemesis/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "nemesis/history.rs"]
mod history;
#[allow(dead_code)]
#[path = "nemesis/proxy.rs"]
mod proxy;

use clients::{ClientProc, NAMES, Timing};
use cluster::{CLUSTER, NodeProc, mono_ns};
use history::{History, Read};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{Instant, sleep};
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_lease::{LeaseHandle, TryAcquire};
use trexlock_test_support::local_addr;

const BIN: &str = env!("CARGO_BIN_EXE_trexlock");

/// Node processes by id, each on a port of its own.
struct Members {
    dir: PathBuf,
    addrs: BTreeMap<u16, SocketAddr>,
    procs: BTreeMap<u16, NodeProc>,
}

impl Members {
    /// Picks ports for nodes 1 to `ids` (started later, one by one).
    fn new(dir: &Path, ids: u16) -> Members {
        let addrs = (1..=ids).map(|id| (id, local_addr())).collect();
        Members {
            dir: dir.to_owned(),
            addrs,
            procs: BTreeMap::new(),
        }
    }

    /// Writes node `id`'s configuration, listing `peers`, and starts it.
    fn start(&mut self, id: u16, peers: &[u16]) {
        let data_dir = self.dir.join(format!("n{id}"));
        let mut text = format!(
            "cluster_id = \"{CLUSTER}\"\nnode_id = {id}\nlisten = \"{}\"\ndata_dir = \"{}\"\n\
             snapshot_every = 500\n[peers]\n",
            self.addrs[&id],
            data_dir.display()
        );
        for peer in peers.iter().filter(|p| **p != id) {
            text.push_str(&format!("{peer} = \"{}\"\n", self.addrs[peer]));
        }
        let config = self.dir.join(format!("n{id}.toml"));
        std::fs::write(&config, text).expect("write config");
        let log = self.dir.join(format!("n{id}.log"));
        let mut node = NodeProc::new(config, data_dir, "journal.redb", log);
        node.spawn();
        self.procs.insert(id, node);
    }

    fn servers(&self, ids: &[u16]) -> String {
        let addrs: Vec<String> = ids.iter().map(|id| self.addrs[id].to_string()).collect();
        addrs.join(",")
    }

    fn all(&self) -> Vec<SocketAddr> {
        self.addrs.values().copied().collect()
    }

    fn log(&self, id: u16) -> String {
        std::fs::read_to_string(self.dir.join(format!("n{id}.log"))).unwrap_or_default()
    }
}

/// Runs `trexlock member ARGS --cluster … --servers …`; its stdout, or its
/// stderr as the error.
fn member(args: &[&str], servers: &str) -> Result<String, String> {
    let out = Command::new(BIN)
        .arg("member")
        .args(args)
        .args(["--cluster", CLUSTER, "--servers", servers])
        .output()
        .expect("run trexlock member");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Runs a change until it is done, retrying while it is refused for a
/// reason time cures (a learner catching up, an election, the previous
/// change taking effect).
async fn change(args: &[&str], servers: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match member(args, servers) {
            Ok(_) => return,
            Err(e)
                if Instant::now() < deadline
                    && [
                        "not caught up",
                        "not the leader",
                        "in progress",
                        "timed out",
                    ]
                    .iter()
                    .any(|cure| e.contains(cure)) =>
            {
                sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("trexlock member {args:?} failed: {e}"),
        }
    }
}

/// Reads every lease's holder through each node in `ids`, into the history.
async fn read_all(members: &Members, ids: &[u16], history: &Mutex<History>) {
    for id in ids {
        let config = RemoteConfig::new(CLUSTER, vec![members.addrs[id]]);
        let Ok(Ok(handle)) =
            tokio::time::timeout(Duration::from_secs(1), remote::connect(config)).await
        else {
            continue;
        };
        let client = handle.client("reader");
        for name in NAMES {
            let sent = mono_ns();
            if let Ok(Ok(holder)) =
                tokio::time::timeout(Duration::from_secs(2), client.holder(name)).await
            {
                history.lock().unwrap().reads.push(Read {
                    node: usize::from(*id) - 1,
                    name: name.to_owned(),
                    sent,
                    replied: mono_ns(),
                    holder: holder.map(|h| (h.owner, h.stamp.0)),
                });
            }
        }
    }
}

/// The member that leads, as `trexlock member list --json` says.
async fn leader(servers: &str) -> u16 {
    for _ in 0..100 {
        if let Ok(listed) = member(&["list", "--json"], servers)
            && let Ok(json) = serde_json::from_str::<serde_json::Value>(&listed)
            && let Some(leader) = json["leader"].as_u64()
        {
            return u16::try_from(leader).unwrap();
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader among {servers}");
}

/// Node `id`, removed, exits within 10 s, its log saying why.
async fn stops_on_its_own(members: &mut Members, id: u16) {
    let node = members.procs.get_mut(&id).unwrap();
    for _ in 0..100 {
        if node.exited().is_some() {
            assert!(
                members.log(id).contains("removed from the membership"),
                "node {id}'s log does not say it was removed:\n{}",
                members.log(id)
            );
            return;
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "removed node {id} still runs 10 s after its removal; its log:\n{}",
        members.log(id)
    );
}

/// Runs `trexlock COMMAND ARGS --cluster … --servers …`: its exit status,
/// stdout and stderr.
fn cli(command: &str, args: &[&str], servers: &str) -> (bool, String, String) {
    let out = Command::new(BIN)
        .arg(command)
        .args(args)
        .args(["--cluster", CLUSTER, "--servers", servers])
        .output()
        .expect("run trexlock");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// Node `id`'s role as `trexlock status --json` through it shows it:
/// `want` as soon as it shows that (within 10 s), else the last role it
/// showed. A node just started shows what its configuration implies until
/// the leader tells it more (a node added as a learner lists itself among
/// its members, so it shows `electing` until then).
async fn role_becomes(members: &Members, id: u16, want: &str) -> String {
    let at = members.addrs[&id].to_string();
    let mut seen = None;
    for _ in 0..100 {
        let (ok, out, _) = cli("status", &["--json"], &at);
        if ok && let Ok(serde_json::Value::Array(rows)) = serde_json::from_str(&out) {
            for row in rows {
                if row["node"] == u64::from(id)
                    && let Some(role) = row["status"]["role"].as_str()
                {
                    if role == want {
                        return role.to_owned();
                    }
                    seen = Some(role.to_owned());
                }
            }
        }
        sleep(Duration::from_millis(100)).await;
    }
    seen.unwrap_or_else(|| panic!("node {id} did not answer `trexlock status` within 10 s"))
}

/// Node `id` exits within 10 s (a refusal to start); its log.
async fn exits_within_10s(members: &mut Members, id: u16) -> String {
    let node = members.procs.get_mut(&id).unwrap();
    for _ in 0..100 {
        if node.exited().is_some() {
            return members.log(id);
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "node {id} still runs 10 s after it started:\n{}",
        members.log(id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_replace_and_shrink_under_load_lose_nothing_and_grant_nothing_twice() {
    let tempdir = tempfile::tempdir().expect("tempdir");
    let dir = tempdir.path().to_owned();
    let started = Instant::now();
    let mut members = Members::new(&dir, 7);
    for id in 1..=3 {
        members.start(id, &[1, 2, 3]);
    }
    let timing = Timing {
        ttl: Duration::from_secs(2),
        gap: Duration::from_millis(300),
    };
    let history = Arc::new(Mutex::new(History::default()));
    // Clients know every address up front, started or not.
    let servers = members.all();
    let stop = Arc::new(AtomicBool::new(false));
    let mut drivers = Vec::new();
    for c in 0..4 {
        let mut client = ClientProc::start(
            &dir,
            &format!("c{}", c + 1),
            &servers,
            history.clone(),
            fastrand::u64(..),
            timing,
        )
        .await;
        let stop = stop.clone();
        drivers.push(tokio::spawn(async move {
            client.run(stop).await;
            client
        }));
    }
    sleep(Duration::from_secs(2)).await;

    // Grow 3 to 5: each new node is added as a learner, started (it finds
    // itself a learner and joins), and promoted once caught up.
    for id in [4u16, 5] {
        let voters: Vec<u16> = (1..id).collect();
        let at = members.addrs[&id].to_string();
        change(&["add", &id.to_string(), &at], &members.servers(&voters)).await;
        members.start(id, &voters);
        // Until promoted, `trexlock status` shows it as a learner.
        assert_eq!(role_becomes(&members, id, "learner").await, "learner");
        change(&["promote", &id.to_string()], &members.servers(&voters)).await;
        read_all(&members, &voters, &history).await;
        sleep(Duration::from_secs(1)).await;
    }
    // Replace the leader by node 6 on a new port: the removed leader hands
    // over, then stops on its own and says why.
    let mut voters: Vec<u16> = vec![1, 2, 3, 4, 5];
    let old = leader(&members.servers(&voters)).await;
    let at = members.addrs[&6].to_string();
    change(&["add", "6", &at], &members.servers(&voters)).await;
    let others: Vec<u16> = voters.iter().copied().filter(|v| *v != old).collect();
    members.start(6, &others);
    change(&["promote", "6"], &members.servers(&voters)).await;
    voters = others;
    voters.push(6);
    change(&["remove", &old.to_string()], &members.servers(&voters)).await;
    read_all(&members, &voters, &history).await;
    stops_on_its_own(&mut members, old).await;
    // Shrink 5 to 3, removing followers. A removed follower is stopped by
    // the operator, as the README says: once its removal is in effect
    // nobody sends it the commits that would tell it so (only a probe of
    // its own brings it its release), and until it knows, it still takes
    // connections.
    for _ in 0..2 {
        let lead = leader(&members.servers(&voters)).await;
        let gone = *voters.iter().find(|v| **v != lead).unwrap();
        voters.retain(|v| *v != gone);
        change(&["remove", &gone.to_string()], &members.servers(&voters)).await;
        members.procs.get_mut(&gone).unwrap().sigkill();
        read_all(&members, &voters, &history).await;
    }
    sleep(Duration::from_secs(1)).await;
    // A follower loses its disk. Restarted on an empty data directory as
    // it was, it refuses: the membership changed since the cluster began,
    // so it could not relearn what it voted for.
    let lead = leader(&members.servers(&voters)).await;
    let lost = *voters.iter().find(|v| **v != lead).unwrap();
    let rest: Vec<u16> = voters.iter().copied().filter(|v| *v != lost).collect();
    members.procs.get_mut(&lost).unwrap().sigkill();
    std::fs::remove_dir_all(dir.join(format!("n{lost}"))).expect("wipe");
    let peers = if lost <= 3 {
        vec![1, 2, 3]
    } else {
        voters.clone()
    };
    members.start(lost, &peers);
    let refused = exits_within_10s(&mut members, lost).await;
    assert!(
        refused.contains(&format!(
            "node {lost} has an empty journal and the running cluster lists it as a voter"
        )) && refused.contains(&format!("trexlock member remove {lost}")),
        "{refused}"
    );
    // The README's procedure, with a majority up at every step: stop,
    // remove, wipe, add back as a learner, start, promote.
    change(&["remove", &lost.to_string()], &members.servers(&rest)).await;
    std::fs::remove_dir_all(dir.join(format!("n{lost}"))).expect("wipe");
    let at = members.addrs[&lost].to_string();
    change(&["add", &lost.to_string(), &at], &members.servers(&rest)).await;
    members.start(lost, &rest);
    change(&["promote", &lost.to_string()], &members.servers(&rest)).await;
    let last = members.servers(&voters);
    read_all(&members, &voters, &history).await;
    sleep(Duration::from_secs(2)).await;

    // A node the cluster does not list refuses to start, naming the fix.
    members.start(7, &voters);
    let refused = exits_within_10s(&mut members, 7).await;
    assert!(
        refused.contains("node 7 is not a member of the running cluster"),
        "{refused}"
    );

    stop.store(true, Ordering::SeqCst);
    let mut procs = Vec::new();
    for d in drivers {
        procs.push(d.await.expect("client driver"));
    }
    let listed = member(&["list", "--json"], &last).expect("member list");
    let json: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let listed_voters: Vec<u64> = json["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "voter")
        .map(|m| m["node"].as_u64().unwrap())
        .collect();
    let mut expected: Vec<u64> = voters.iter().map(|v| u64::from(*v)).collect();
    expected.sort();
    assert_eq!(listed_voters, expected, "{listed}");

    // Abandoned leases run out; then every lease is free everywhere, and
    // fresh grants take stamps above every earlier one.
    sleep(timing.ttl + Duration::from_secs(1)).await;
    read_all(&members, &voters, &history).await;
    let handle = remote::connect(RemoteConfig::new(CLUSTER, members.all()))
        .await
        .expect("connect");
    let client = handle.client("final");
    let mut finals: Vec<LeaseHandle> = Vec::new();
    for name in NAMES {
        let sent = mono_ns();
        match client.try_acquire(name, Duration::from_secs(60)).await {
            Ok(TryAcquire::Acquired(lease)) => {
                let acked = mono_ns();
                history.lock().unwrap().granted(
                    "final",
                    name,
                    lease.stamp().0,
                    sent,
                    acked,
                    acked + 50_000_000_000,
                );
                finals.push(lease);
            }
            other => history
                .lock()
                .unwrap()
                .violation(format!("{name} is not free after the workload: {other:?}")),
        }
    }
    read_all(&members, &voters, &history).await;
    for c in &mut procs {
        c.quit().await;
    }
    let (violations, grants, reads) = {
        let history = history.lock().unwrap();
        let (violations, _) = history.check(u64::try_from(timing.gap.as_nanos()).unwrap());
        (violations, history.grants.len(), history.reads.len())
    };
    eprintln!(
        "members: {grants} grants, {reads} reads, {} violations, {:.1} s",
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    if !violations.is_empty() {
        let kept = tempdir.keep();
        panic!(
            "{} violations: {violations:#?}; logs kept in {}",
            violations.len(),
            kept.display()
        );
    }
    assert!(
        grants > 10,
        "too little load to mean anything: {grants} grants"
    );

    // A removed node tells a client why it will not serve, and `status`
    // calls it removed. The other voters are stopped the moment the
    // removal is in effect, so that no leader releases the removed node
    // (it would stop) while it is asked.
    let lead = leader(&last).await;
    let gone = *voters.iter().find(|v| **v != lead).unwrap();
    let rest: Vec<u16> = voters.iter().copied().filter(|v| *v != gone).collect();
    change(&["remove", &gone.to_string()], &members.servers(&rest)).await;
    for id in &rest {
        let pid = members.procs[id].pid().unwrap();
        cluster::signal(pid, libc::SIGSTOP);
    }
    let at = members.addrs[&gone].to_string();
    let (ok, _, refused) = cli("holder", &[NAMES[0]], &at);
    assert!(
        !ok && refused.contains("removed from the cluster's membership"),
        "{refused}"
    );
    assert_eq!(role_becomes(&members, gone, "removed").await, "removed");
    for id in &rest {
        members.procs.get_mut(id).unwrap().sigkill();
    }
}
