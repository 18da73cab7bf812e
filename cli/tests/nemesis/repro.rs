//! Directed scenarios behind the nemesis's journal and wipe faults. Each
//! states the property that must hold. (The journal rollback the nemesis
//! found is reproduced by `journal/tests/rollback.rs`.)

use super::cluster::{Cluster, Damage, mono_ns};
use std::time::Duration;
use tokio::time::sleep;
use trexlock_lease::remote;
use trexlock_lease::{LeaseClient, TryAcquire};
use trexlock_paxos::{Ballot, NodeId, Value};

async fn client(cluster: &Cluster, node: usize, owner: &str) -> LeaseClient {
    for _ in 0..100 {
        if let Ok(Ok(h)) = tokio::time::timeout(
            Duration::from_secs(2),
            remote::connect(cluster.remote(node)),
        )
        .await
        {
            return h.client(owner).with_call_timeout(Duration::from_secs(2));
        }
        sleep(Duration::from_millis(100)).await;
    }
    panic!("cannot reach n{}", node + 1);
}

/// Wiping a replica's journal (the operator's remedy for a damaged one)
/// makes it forget its votes. Here the wiped node W was half of the quorum
/// {L, W} that chose alice's grant while B was cut off, and L is gone when
/// W comes back blank. Had W voted at once, B and W would form a quorum
/// that never saw the grant and could hand the lease to bob. A rejoining
/// replica is a learner until every member has answered it, so B and W
/// must serve nobody until L is back, and then alice's grant must stand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_replica_never_helps_overwrite_an_acknowledged_grant() {
    let tmp = tempfile::tempdir().unwrap();
    // TREXLOCK_NEMESIS_DIR keeps the nodes' logs for a post-mortem.
    // (a subdirectory: the main nemesis test may be using the directory).
    let dir = std::env::var("TREXLOCK_NEMESIS_DIR").map_or(tmp.path().to_owned(), |d| {
        std::path::PathBuf::from(d).join("wipe-scenario")
    });
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = Cluster::start(&dir, 3).await;
    let mut leader = None;
    for _ in 0..100 {
        leader = cluster.leader().await;
        if leader.is_some() {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    let l = leader.expect("a leader");
    let (w, b) = ((l + 1) % 3, (l + 2) % 3);
    eprintln!(
        "leader n{}, to be wiped n{}, cut off n{}",
        l + 1,
        w + 1,
        b + 1
    );
    // B is cut off from its peers: the grant below is chosen by L and W only.
    for link in cluster.proxy.links_of(b, false) {
        cluster.proxy.set(link, |s| s.stalled = true);
    }
    let alice = client(&cluster, l, "alice").await;
    let ttl = Duration::from_secs(60);
    let lease = match alice.try_acquire("x", ttl).await.expect("alice's grant") {
        TryAcquire::Acquired(lease) => lease,
        TryAcquire::Held(h) => panic!("held by {h:?}"),
    };
    // W's journal is wiped, then L dies before B ever hears of the grant.
    cluster.sigkill(w);
    cluster.wipe(w);
    cluster.sigkill(l);
    // What B was sent while cut off is lost with the partition.
    for link in cluster.proxy.links_of(b, false) {
        cluster.proxy.set(link, |s| s.resets += 1);
    }
    cluster.proxy.heal_all();
    cluster.restart(w);
    let bob = client(&cluster, b, "bob").await;
    // Several election timeouts with B and the blank W alone.
    for _ in 0..4 {
        if let Ok(TryAcquire::Acquired(second)) = bob.try_acquire("x", ttl).await {
            panic!(
                "x granted to bob (stamp {}) while alice holds stamp {}: the wiped replica \
                 let a chosen grant be overwritten",
                second.stamp(),
                lease.stamp()
            );
        }
        sleep(Duration::from_millis(250)).await;
    }
    cluster.restart(l);
    let mut answer = None;
    for _ in 0..60 {
        if let Ok(t) = bob.try_acquire("x", ttl).await {
            answer = Some(t);
            break;
        }
        sleep(Duration::from_millis(250)).await;
    }
    eprintln!("at {} ns, with L back: {answer:?}", mono_ns());
    match answer.expect("served once every member is back") {
        TryAcquire::Held(h) => assert_eq!((h.owner.as_str(), h.stamp), ("alice", lease.stamp())),
        TryAcquire::Acquired(second) => panic!(
            "x granted to bob (stamp {}) while alice holds stamp {}",
            second.stamp(),
            lease.stamp()
        ),
    }
    for node in 0..3 {
        let reader = client(&cluster, node, "reader").await;
        let mut holder = None;
        for _ in 0..40 {
            if let Ok(h) = reader.holder("x").await {
                holder = h;
                break;
            }
            sleep(Duration::from_millis(250)).await;
        }
        let holder = holder.map(|h| (h.owner, h.stamp));
        assert_eq!(
            holder,
            Some(("alice".to_owned(), lease.stamp())),
            "node n{}",
            node + 1
        );
    }
}

/// A wiped replica rejoins as a learner until it has heard every member.
/// That must survive a crash while it is still learning: had it persisted
/// what it caught up on, its journal would be non-empty on restart and it
/// would start as a voter with no promise at all, the very state the
/// learner mode exists to prevent. (The nemesis found this; the core now
/// keeps a learner's catch-up out of its journal until it votes.)
#[test]
fn a_learner_that_crashes_while_catching_up_is_still_a_learner_after_restart() {
    use trexlock_paxos::{Config, Envelope, JournalState, Message, Replica};
    let members = vec![NodeId(1), NodeId(2), NodeId(3)];
    let cfg = Config::new(NodeId(3), members);
    let leader = Ballot {
        counter: 5,
        node: NodeId(1),
    };
    let at = |ms| Duration::from_millis(ms);
    let mut disk = JournalState::default();
    let mut wiped = Replica::new(cfg.clone(), disk.clone(), at(0)).unwrap();
    assert!(wiped.is_learner(), "an empty journal starts a learner");
    // The leader's heartbeat, then the chosen values it asked for.
    for (ms, message) in [
        (
            1,
            Message::Commit {
                ballot: leader,
                committed: 2,
            },
        ),
        (
            2,
            Message::CatchupResponse {
                entries: vec![(1, Value::Noop), (2, Value::Noop)],
            },
        ),
    ] {
        let envelope = Envelope {
            from: NodeId(1),
            to: NodeId(3),
            message,
        };
        let ready = wiped.handle(at(ms), envelope).unwrap();
        disk.apply(&ready.write);
    }
    assert!(wiped.is_learner(), "node 2 never answered its probe");
    eprintln!("persisted while learning: {disk:?}");
    // SIGKILL, restart on what reached the disk.
    let mut restarted = Replica::new(cfg, disk, at(10)).unwrap();
    let old = Ballot {
        counter: 1,
        node: NodeId(2),
    };
    let ready = restarted
        .handle(
            at(11),
            Envelope {
                from: NodeId(2),
                to: NodeId(3),
                message: Message::Prepare {
                    ballot: old,
                    from: 1,
                },
            },
        )
        .unwrap();
    let promised = ready
        .messages
        .iter()
        .any(|e| matches!(e.message, Message::Promise { .. }));
    assert!(
        restarted.is_learner() && !promised,
        "restarted as a voter (learner: {}) and promised ballot {old} (promised: {promised}), \
         below what its lost journal may have promised",
        restarted.is_learner()
    );
}

/// A node whose journal is put back to an older copy (a restored backup)
/// has forgotten commits it acknowledged, perhaps promises it gave: it must
/// refuse to start, saying the journal was rolled back, until the operator
/// wipes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_an_older_copy_of_its_journal_refuses_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::env::var("TREXLOCK_NEMESIS_DIR").map_or(tmp.path().to_owned(), |d| {
        std::path::PathBuf::from(d).join("restore-scenario")
    });
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = Cluster::start(&dir, 3).await;
    for _ in 0..100 {
        if cluster.leader().await.is_some() {
            break;
        }
        sleep(Duration::from_millis(100)).await;
    }
    // n2 keeps the log journal, n3 redb.
    for target in [1, 2] {
        cluster.sigkill(target);
        let copy = cluster
            .copy_journal(target)
            .expect("a node that ran has a journal");
        cluster.restart(target);
        let alice = client(&cluster, 0, "alice").await;
        let mut acknowledged = false;
        for round in 0..100 {
            let _ = alice
                .try_acquire(&format!("job-{target}-{round}"), Duration::from_secs(30))
                .await;
            if cluster.acknowledged_since(target, &copy) {
                acknowledged = true;
                break;
            }
            sleep(Duration::from_millis(100)).await;
        }
        assert!(
            acknowledged,
            "n{} never acknowledged a commit after restart",
            target + 1
        );
        cluster.sigkill(target);
        let what = cluster.damage_journal(
            target,
            Damage::RestoreOlder,
            Some(copy),
            &mut fastrand::Rng::new(),
        );
        let message = cluster
            .expect_refusal(target)
            .await
            .unwrap_or_else(|why| panic!("after {what}: {why}"));
        assert!(
            message.contains(cluster.nodes[target].journal) && message.contains("rolled back"),
            "{message}"
        );
        // The operator's remedy, so the next round has a quorum.
        cluster.wipe(target);
        cluster.restart(target);
    }
}
