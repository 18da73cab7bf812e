//! The "replace node" fault: a node is taken out of the membership and a
//! node with a new id takes its place (its slot and port), through the
//! membership API, while the clients keep working: stop it, remove it,
//! wipe it, add the successor as a learner, start it, promote it. The same
//! steps, with the node's own id, are the disk-loss procedure once the
//! membership has changed ([`Nemesis::rejoin_as_learner`]).
//!
//! The successor's address in the membership is its port itself, not a
//! proxy link: the other nodes reach it directly, so later partitions of
//! that slot cut only its own outgoing links and its clients.

use super::cluster::CLUSTER;
use super::schedule::Nemesis;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::{Instant, sleep};
use trexlock_lease::LeaseClient;
use trexlock_lease::client::{MemberError, MemberRefusal};
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_paxos::{Change, NodeId};

/// How long one membership step may take before the fault gives up.
const STEP: Duration = Duration::from_secs(30);

impl Nemesis {
    /// Replaces the node of slot `target` by one with a new id.
    pub(super) async fn replace_node(&mut self, target: usize) {
        for _ in 0..100 {
            if self.others_agree(target).await.is_some() {
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        let (old, servers, listen) = self.others_of(target).await;
        let new = old + 10;
        let Ok(handle) = remote::connect(RemoteConfig::new(CLUSTER, servers)).await else {
            self.note("replace node: no other node answers; skipped".into());
            return;
        };
        let ops = handle.client("nemesis-ops");
        self.cluster.lock().await.sigkill(target);
        let removed = step(&ops, Change::Remove { node: NodeId(old) }).await;
        if let Err(e) = removed {
            self.note(format!(
                "replace node: removing n{old} refused ({e}); restarting it"
            ));
            self.cluster.lock().await.restart(target);
            return;
        }
        let mut cluster = self.cluster.lock().await;
        cluster.changed = true;
        cluster.wipe(target);
        cluster.renumber(target, new);
        drop(cluster);
        let since = Instant::now();
        if self.add_and_promote(&ops, target, new, listen).await {
            self.note(format!(
                "replace node: n{old} (slot {}) replaced by n{new}, a voter {:?} after it was added",
                target + 1,
                since.elapsed()
            ));
        }
    }

    /// The README's disk-loss procedure for the node of slot `target`
    /// (down, its journal damaged): remove it, wipe it, add it back under
    /// its own id as a learner, start it, promote it. Its log replays its
    /// own removal before the membership that names it again, so a node
    /// that took anything but a release for its release would stop here.
    /// False (a violation recorded) if a step failed: the cluster had a
    /// leader and a majority up, so every step should have gone through.
    pub(super) async fn rejoin_as_learner(&mut self, target: usize) -> bool {
        let (id, servers, listen) = self.others_of(target).await;
        let Ok(handle) = remote::connect(RemoteConfig::new(CLUSTER, servers)).await else {
            self.violation(format!(
                "n{id} lost its disk: no other node answers to take it out"
            ));
            return false;
        };
        let ops = handle.client("nemesis-ops");
        if let Err(e) = step(&ops, Change::Remove { node: NodeId(id) }).await {
            self.violation(format!("n{id} lost its disk: removing it: {e}"));
            return false;
        }
        self.cluster.lock().await.wipe(target);
        let since = Instant::now();
        if !self.add_and_promote(&ops, target, id, listen).await {
            return false;
        }
        self.note(format!(
            "n{id} lost its disk: removed, wiped, added back as a learner and promoted in {:?}",
            since.elapsed()
        ));
        true
    }

    /// Slot `target`'s node id, the other slots' client addresses and the
    /// slot's listen address.
    async fn others_of(&self, target: usize) -> (u16, Vec<SocketAddr>, SocketAddr) {
        let cluster = self.cluster.lock().await;
        let servers = (0..cluster.len())
            .filter(|i| *i != target)
            .map(|i| cluster.client_addr(i))
            .collect();
        (cluster.ids[target], servers, cluster.listen[target])
    }

    /// Adds node `id` (the wiped slot `target`) as a learner at `listen`,
    /// starts it and promotes it; false (a violation recorded) if a step
    /// failed.
    async fn add_and_promote(
        &mut self,
        ops: &LeaseClient,
        target: usize,
        id: u16,
        listen: SocketAddr,
    ) -> bool {
        let add = Change::AddLearner {
            node: NodeId(id),
            address: listen.to_string(),
        };
        if let Err(e) = step(ops, add).await {
            self.violation(format!("adding n{id} as a learner: {e}"));
            return false;
        }
        self.cluster.lock().await.restart(target);
        if let Err(e) = step(ops, Change::Promote { node: NodeId(id) }).await {
            self.violation(format!("promoting n{id}: {e}"));
            return false;
        }
        true
    }

    fn violation(&mut self, what: String) {
        self.history.lock().expect("history").violation(what);
    }
}

/// Makes `change`, retrying while time may cure the refusal (an election,
/// a learner catching up, the previous change taking effect).
async fn step(ops: &LeaseClient, change: Change) -> Result<(), MemberError> {
    let deadline = Instant::now() + STEP;
    loop {
        let result = match &change {
            Change::AddLearner { node, address } => ops.add_learner(*node, address).await,
            Change::Promote { node } => ops.promote(*node).await,
            Change::Remove { node } => ops.remove(*node).await,
        };
        // A retry of a change that was made after all.
        let done = match (&change, &result) {
            (
                Change::AddLearner { node, .. },
                Err(MemberError::Refused(MemberRefusal::AlreadyMember(n))),
            )
            | (
                Change::Promote { node },
                Err(MemberError::Refused(MemberRefusal::NotALearner(n))),
            )
            | (Change::Remove { node }, Err(MemberError::Refused(MemberRefusal::UnknownNode(n)))) => {
                n == node
            }
            _ => false,
        };
        if done {
            return Ok(());
        }
        let curable = matches!(
            &result,
            Err(MemberError::Cluster(_)
                | MemberError::Refused(
                    MemberRefusal::NotLeader { .. }
                        | MemberRefusal::NotCaughtUp { .. }
                        | MemberRefusal::ChangeInProgress { .. }
                        | MemberRefusal::WouldLoseQuorum { .. }
                ))
        );
        if !curable || Instant::now() >= deadline {
            return result;
        }
        sleep(Duration::from_millis(200)).await;
    }
}
