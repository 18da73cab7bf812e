//! The "replace node" fault: a node is taken out of the membership and a
//! node with a new id takes its place (its slot and port), through the
//! membership API, while the clients keep working: stop it, remove it,
//! wipe it, add the successor as a learner, start it, promote it.
//!
//! The successor's address in the membership is its port itself, not a
//! proxy link: the other nodes reach it directly, so later partitions of
//! that slot cut only its own outgoing links and its clients.

use super::cluster::CLUSTER;
use super::schedule::Nemesis;
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
        let (old, servers, listen) = {
            let cluster = self.cluster.lock().await;
            let servers = (0..cluster.len())
                .filter(|i| *i != target)
                .map(|i| cluster.client_addr(i))
                .collect();
            (cluster.ids[target], servers, cluster.listen[target])
        };
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
        cluster.wipe(target);
        cluster.renumber(target, new);
        drop(cluster);
        let add = Change::AddLearner {
            node: NodeId(new),
            address: listen.to_string(),
        };
        let since = Instant::now();
        if let Err(e) = step(&ops, add).await {
            self.violation(format!(
                "replace node: adding n{new} after removing n{old}: {e}"
            ));
            return;
        }
        self.cluster.lock().await.restart(target);
        match step(&ops, Change::Promote { node: NodeId(new) }).await {
            Ok(()) => self.note(format!(
                "replace node: n{old} (slot {}) replaced by n{new}, a voter {:?} after it was added",
                target + 1,
                since.elapsed()
            )),
            Err(e) => self.violation(format!("replace node: promoting n{new}: {e}")),
        }
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
