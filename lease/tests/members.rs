//! Membership changes through the client API on an in-process cluster:
//! a learner joins and is promoted, members are listed with roles and lag,
//! and every refusal names its cause.

mod common;

use common::{CLUSTER, Cluster};
use std::time::Duration;
use trexlock_lease::client::{MemberError, MemberRefusal};
use trexlock_lease::{LeaseClient, Node, NodeConfig, Role, TryAcquire};
use trexlock_paxos::NodeId;

/// Starts node `id` joining the cluster: its configured members are the
/// cluster's bootstrap members, which do not include it.
async fn join(cluster: &Cluster, id: NodeId) -> Node {
    let config = NodeConfig::new(id, cluster.members.clone());
    let inbox = cluster.network.register(id);
    let path = cluster.dir.path().join(format!("node-{}.redb", id.0));
    Node::start_with_redb(config, CLUSTER, path, cluster.network.clone(), inbox)
        .await
        .expect("the joining node starts")
}

fn refusal(result: Result<(), MemberError>) -> MemberRefusal {
    match result {
        Err(MemberError::Refused(refusal)) => refusal,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn role_of(ops: &LeaseClient, node: NodeId) -> Option<Role> {
    let list = ops.members().await.expect("members");
    list.members.iter().find(|m| m.node == node).map(|m| m.role)
}

#[tokio::test(flavor = "current_thread")]
async fn a_learner_joins_catches_up_and_is_promoted_to_voter() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let ops = cluster.client(leader, "ops");
    let TryAcquire::Acquired(lease) = ops
        .try_acquire("before", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("free")
    };
    let fourth = join(&cluster, NodeId(4)).await;
    ops.add_learner(NodeId(4), "127.0.0.1:7004").await.unwrap();
    assert_eq!(role_of(&ops, NodeId(4)).await, Some(Role::Learner));
    let mut promoted = Err(MemberError::Refused(MemberRefusal::Stopped));
    for _ in 0..100 {
        promoted = ops.promote(NodeId(4)).await;
        if !matches!(
            promoted,
            Err(MemberError::Refused(MemberRefusal::NotCaughtUp { .. }))
        ) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    promoted.unwrap();
    let list = ops.members().await.unwrap();
    assert_eq!(list.leader, Some(list.node));
    assert!(
        list.committed + 1 >= list.effective,
        "a change returns once in effect: {list:?}"
    );
    let voters: Vec<NodeId> = list
        .members
        .iter()
        .filter(|m| m.role == Role::Voter)
        .map(|m| m.node)
        .collect();
    assert_eq!(voters, [1, 2, 3, 4].map(NodeId));
    let fourth_info = list.members.iter().find(|m| m.node == NodeId(4)).unwrap();
    assert_eq!(fourth_info.address.as_deref(), Some("127.0.0.1:7004"));
    assert!(
        fourth_info.lag.is_some(),
        "the leader reports the new voter's lag"
    );
    // The new voter serves the same table.
    let holder = fourth.client("reader").holder("before").await.unwrap();
    assert_eq!(holder.map(|h| h.stamp), Some(lease.stamp()));
    fourth.shutdown().await.unwrap();
    cluster.shutdown_all().await;
}

#[tokio::test(flavor = "current_thread")]
async fn every_refused_change_names_its_cause() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let follower = cluster.follower().await;
    let ops = cluster.client(leader, "ops");
    assert_eq!(
        refusal(cluster.client(follower, "ops").remove(NodeId(3)).await),
        MemberRefusal::NotLeader {
            leader: Some(NodeId(leader as u16 + 1))
        }
    );
    assert_eq!(
        refusal(ops.remove(NodeId(9)).await),
        MemberRefusal::UnknownNode(NodeId(9))
    );
    assert_eq!(
        refusal(ops.promote(NodeId(2)).await),
        MemberRefusal::NotALearner(NodeId(2))
    );
    assert_eq!(
        refusal(ops.add_learner(NodeId(2), "127.0.0.1:7002").await),
        MemberRefusal::AlreadyMember(NodeId(2))
    );
    assert_eq!(
        refusal(ops.add_learner(NodeId(5), "node5:7005").await),
        MemberRefusal::BadAddress("node5:7005".into())
    );
    let (first, second) = tokio::join!(
        ops.add_learner(NodeId(5), "127.0.0.1:7005"),
        ops.add_learner(NodeId(6), "127.0.0.1:7006")
    );
    first.unwrap();
    assert!(matches!(
        refusal(second),
        MemberRefusal::ChangeInProgress { .. }
    ));
    // Node 5 never runs, so it never catches up.
    assert!(matches!(
        refusal(ops.promote(NodeId(5)).await),
        MemberRefusal::NotCaughtUp {
            node: NodeId(5),
            ..
        }
    ));
    // With one of the three voters down, removing another would leave one
    // reachable voter of two.
    let down = (0..3).find(|i| *i != leader).unwrap();
    cluster.kill(down).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let other = (0..3).find(|i| *i != leader && *i != down).unwrap();
    assert_eq!(
        refusal(ops.remove(NodeId(other as u16 + 1)).await),
        MemberRefusal::WouldLoseQuorum {
            reachable: 1,
            needed: 2
        }
    );
    cluster.shutdown_all().await;
}
