//! The lease API on a real three-node cluster (in one process, on redb
//! journals): what users of etcd, ZooKeeper or Chubby expect.

mod common;

use bytes::Bytes;
use common::Cluster;
use std::time::{Duration, Instant};
use trexlock_lease::{Election, KeepAlive, LeaseError, NodeConfig, TryAcquire};

const TTL: Duration = Duration::from_secs(10);
const WAIT: Duration = Duration::from_secs(10);

fn acquired(t: TryAcquire) -> trexlock_lease::LeaseHandle {
    match t {
        TryAcquire::Acquired(h) => h,
        TryAcquire::Held(h) => panic!("held by {h:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_is_granted_renewed_and_released_and_the_next_grant_has_a_higher_stamp() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(cluster.follower().await, "alice");
    let lease = acquired(client.try_acquire("job", TTL).await.unwrap());
    assert_eq!(lease.name(), "job");
    let before = lease.expire_time_unsafe();
    assert!(before > Instant::now() && before <= Instant::now() + TTL);
    lease.renew().await.unwrap();
    assert!(lease.expire_time_unsafe() >= before);
    assert!(lease.expire_time_with_safety_gap(Duration::from_secs(1)) < lease.expire_time_unsafe());
    lease.release().await.unwrap();
    assert!(!lease.is_valid_with_safety_gap(Duration::ZERO));
    let again = acquired(
        cluster
            .client(0, "bob")
            .try_acquire("job", TTL)
            .await
            .unwrap(),
    );
    assert!(again.stamp() > lease.stamp());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_lease_is_refused_to_another_owner_with_the_holder_named() {
    let cluster = Cluster::start(3).await;
    let lease = acquired(
        cluster
            .client(0, "alice")
            .try_acquire("db-leader", TTL)
            .await
            .unwrap(),
    );
    match cluster
        .client(1, "bob")
        .try_acquire("db-leader", TTL)
        .await
        .unwrap()
    {
        TryAcquire::Held(holder) => {
            assert_eq!(holder.owner, "alice");
            assert_eq!(holder.stamp, lease.stamp());
            assert!(holder.remaining_ms > 0);
        }
        TryAcquire::Acquired(_) => panic!("granted twice"),
    }
    let holder = cluster
        .client(2, "carol")
        .holder("db-leader")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.owner, "alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_session_acquiring_again_gets_its_own_lease_back_but_a_namesake_does_not() {
    let cluster = Cluster::start(3).await;
    let alice = cluster.client(0, "alice");
    let first = acquired(alice.try_acquire("cache", TTL).await.unwrap());
    let second = acquired(alice.try_acquire("cache", TTL).await.unwrap());
    assert_eq!(first.stamp(), second.stamp());
    // Owner names are public; only the session's secret token proves
    // that a request comes from the holder.
    let namesake = cluster
        .client(1, "alice")
        .try_acquire("cache", TTL)
        .await
        .unwrap();
    assert!(matches!(namesake, TryAcquire::Held(h) if h.stamp == first.stamp()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_are_served_first_come_first_served() {
    let cluster = Cluster::start(3).await;
    let holder = acquired(cluster.client(0, "a").try_acquire("q", TTL).await.unwrap());
    let b = cluster.client(1, "b");
    let c = cluster.client(2, "c");
    let b_wait = tokio::spawn(async move { b.acquire("q", TTL, WAIT).await });
    // Let b's request into the line before c's.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c_wait = tokio::spawn(async move { c.acquire("q", TTL, WAIT).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    holder.release().await.unwrap();
    let b_lease = b_wait.await.unwrap().unwrap();
    assert!(b_lease.stamp() > holder.stamp());
    assert!(!c_wait.is_finished());
    b_lease.release().await.unwrap();
    let c_lease = c_wait.await.unwrap().unwrap();
    assert!(c_lease.stamp() > b_lease.stamp());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_goes_to_the_waiter_never_before_the_holder_stops_believing() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_millis(400);
    let lease = acquired(cluster.client(0, "a").try_acquire("x", ttl).await.unwrap());
    let next = cluster
        .client(1, "b")
        .acquire("x", ttl, WAIT)
        .await
        .unwrap();
    let granted_seen = Instant::now();
    assert!(
        granted_seen >= lease.expire_time_unsafe(),
        "the waiter got the lease before the holder's own deadline"
    );
    assert!(next.stamp() > lease.stamp());
    assert!(matches!(
        lease.renew().await,
        Err(LeaseError::LeaseLost { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_that_gives_up_leaves_the_line() {
    let cluster = Cluster::start(3).await;
    let holder = acquired(cluster.client(0, "a").try_acquire("y", TTL).await.unwrap());
    let impatient = cluster.client(1, "impatient");
    let err = impatient
        .acquire("y", TTL, Duration::from_millis(200))
        .await
        .unwrap_err();
    // The wait ran out: the answer names who holds it.
    assert!(
        matches!(&err, LeaseError::Held { holder, .. } if holder.owner == "a"),
        "{err:?}"
    );
    holder.release().await.unwrap();
    assert_eq!(
        cluster.client(2, "c").holder("y").await.unwrap(),
        None,
        "nobody inherited it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_requests_are_executed_exactly_once() {
    // Retry every millisecond: each request reaches the leader many times.
    let cluster = Cluster::start_with(3, |c: &mut NodeConfig| {
        c.retry_interval = Duration::from_millis(1)
    })
    .await;
    let client = cluster.client(cluster.follower().await, "retrier");
    let mut stamps = Vec::new();
    for _ in 0..20 {
        let lease = acquired(client.try_acquire("once", TTL).await.unwrap());
        stamps.push(lease.stamp().0);
        lease.release().await.unwrap();
    }
    let first = stamps[0];
    assert_eq!(
        stamps,
        (first..first + 20).collect::<Vec<_>>(),
        "a retry was granted twice"
    );
    // Late copies of the acquires are still arriving at the leader: none
    // may be executed again (the lease would be granted after its release).
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        client.holder("once").await.unwrap(),
        None,
        "a late retry took the lease again"
    );
    for i in 0..3 {
        let metrics = cluster.node(i).metrics();
        let grants = metrics.acquisitions;
        assert_eq!(
            grants, 20,
            "node {i} executed {grants} grants for 20 acquires"
        );
        // A copy executed while the lease is held is a reentrant renewal.
        assert_eq!(
            metrics.renewals, 0,
            "node {i} executed a retried acquire again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_survives_the_leader_being_killed() {
    let mut cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let survivor = (leader + 1) % 3;
    let client = cluster.client(survivor, "alice");
    let lease = acquired(client.try_acquire("svc", TTL).await.unwrap());
    cluster.kill(leader).await;
    let new_leader = cluster.leader().await;
    assert_ne!(new_leader, leader);
    lease.renew().await.unwrap();
    let other = (0..3).find(|i| *i != leader && *i != survivor).unwrap();
    match cluster
        .client(other, "bob")
        .try_acquire("svc", TTL)
        .await
        .unwrap()
    {
        TryAcquire::Held(h) => assert_eq!(h.stamp, lease.stamp()),
        TryAcquire::Acquired(_) => panic!("granted twice after failover"),
    }
    cluster.restart(leader).await;
    let holder = cluster
        .client(leader, "carol")
        .holder("svc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(holder.stamp, lease.stamp(), "the restarted node caught up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_granted_lease_survives_a_restart_of_all_nodes() {
    let mut cluster = Cluster::start(3).await;
    let mut stamps = Vec::new();
    for i in 0..10 {
        let lease = acquired(
            cluster
                .client(i % 3, "owner")
                .try_acquire(&format!("l{i}"), TTL)
                .await
                .unwrap(),
        );
        stamps.push(lease.stamp());
    }
    cluster.shutdown_all().await;
    for i in 0..3 {
        cluster.restart(i).await;
    }
    cluster.leader().await;
    for (i, stamp) in stamps.iter().enumerate() {
        let holder = cluster
            .client(0, "reader")
            .holder(&format!("l{i}"))
            .await
            .unwrap();
        assert_eq!(holder.map(|h| h.stamp), Some(*stamp), "lease l{i} was lost");
    }
    let next = acquired(
        cluster
            .client(1, "new")
            .try_acquire("fresh", TTL)
            .await
            .unwrap(),
    );
    assert!(
        next.stamp() > *stamps.last().unwrap(),
        "stamps keep growing across restarts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_value_passes_to_the_next_holder_and_stale_writes_are_refused() {
    let cluster = Cluster::start(3).await;
    let first = acquired(
        cluster
            .client(0, "a")
            .try_acquire("mutex", TTL)
            .await
            .unwrap(),
    );
    first
        .write_value(Bytes::from_static(b"counter=1"))
        .await
        .unwrap();
    // A value lives as long as its lease: it is handed to whoever waits.
    let b = cluster.client(1, "b");
    let waiting = tokio::spawn(async move { b.acquire("mutex", TTL, WAIT).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.release().await.unwrap();
    let second = waiting.await.unwrap().unwrap();
    assert_eq!(second.value(), Some(Bytes::from_static(b"counter=1")));
    let stale = first
        .write_value(Bytes::from_static(b"counter=99"))
        .await
        .unwrap_err();
    assert!(matches!(stale, LeaseError::StaleStamp { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_holds_a_lease_past_its_ttl_and_reports_its_loss() {
    let mut cluster = Cluster::start(3).await;
    let ttl = Duration::from_millis(600);
    let follower = cluster.follower().await;
    let lease = std::sync::Arc::new(acquired(
        cluster
            .client(follower, "a")
            .try_acquire("k", ttl)
            .await
            .unwrap(),
    ));
    let mut keep_alive = KeepAlive::start(lease.clone());
    tokio::time::sleep(ttl * 3).await;
    assert!(!keep_alive.is_lost());
    assert!(lease.is_valid_with_safety_gap(Duration::from_millis(50)));
    cluster.network.isolate(cluster.node(follower).id());
    let lost = tokio::time::timeout(ttl * 5, keep_alive.lost())
        .await
        .expect("loss reported");
    assert!(matches!(
        lost,
        LeaseError::Timeout | LeaseError::NoLeader | LeaseError::LeaseLost { .. }
    ));
    assert!(!lease.is_valid_with_safety_gap(Duration::ZERO));
    cluster.network.heal();
    let _ = cluster.kill(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_election_has_one_leader_that_observers_see_and_that_can_resign() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(2);
    let first = Election::new(cluster.client(0, "n1"), "primary", ttl);
    let second = Election::new(cluster.client(1, "n2"), "primary", ttl);
    let leader = first
        .campaign(Bytes::from_static(b"10.0.0.1:5432"), WAIT)
        .await
        .unwrap();
    let seen = second.observe().await.unwrap().unwrap();
    assert_eq!(seen.holder.owner, "n1");
    assert_eq!(seen.value, Some(Bytes::from_static(b"10.0.0.1:5432")));
    let waiting = tokio::spawn(async move {
        second
            .campaign(Bytes::from_static(b"10.0.0.2:5432"), WAIT)
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    assert!(leader.is_leader(Duration::from_millis(100)));
    let old_stamp = leader.stamp();
    leader.resign().await.unwrap();
    let next = waiting.await.unwrap().unwrap();
    assert!(next.stamp() > old_stamp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_typed_errors_and_a_stopped_node_says_so() {
    let mut cluster = Cluster::start(3).await;
    let client = cluster.client(0, "a");
    for (name, ttl) in [
        ("", TTL),
        ("x", Duration::ZERO),
        ("x", Duration::from_secs(10 * 24 * 3600)),
    ] {
        assert!(
            matches!(
                client.try_acquire(name, ttl).await,
                Err(LeaseError::Invalid(_))
            ),
            "{name:?} {ttl:?}"
        );
    }
    let long = "n".repeat(300);
    assert!(matches!(
        client.try_acquire(&long, TTL).await,
        Err(LeaseError::Invalid(_))
    ));
    assert!(matches!(
        cluster.client(0, "").try_acquire("x", TTL).await,
        Err(LeaseError::Invalid(_))
    ));
    cluster.kill(0).await;
    assert_eq!(
        client.try_acquire("x", TTL).await.unwrap_err(),
        LeaseError::Stopped
    );
}
