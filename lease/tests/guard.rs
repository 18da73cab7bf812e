//! `FencedMutex`: a local mutex that only locks while its lease is safe.

mod common;

use common::Cluster;
use std::sync::Arc;
use std::time::Duration;
use trexlock_lease::{FencedMutex, GuardError, LeaseHandle, TryAcquire};

async fn take(cluster: &Cluster, owner: &str, name: &str, ttl: Duration) -> Arc<LeaseHandle> {
    match cluster.client(0, owner).try_acquire(name, ttl).await {
        Ok(TryAcquire::Acquired(lease)) => Arc::new(lease),
        other => panic!("not acquired: {other:?}"),
    }
}

/// Releases the lease behind the holder's back, from another session of
/// the same owner that knows the token (an operator's script).
async fn release_elsewhere(cluster: &Cluster, lease: &LeaseHandle) {
    cluster
        .client(1, "alice")
        .release_stamp(lease.name(), lease.stamp(), lease.token().unwrap())
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guard_hands_the_lease_stamp_to_the_code_holding_it_and_guards_the_value() {
    let cluster = Cluster::start(3).await;
    let lease = take(&cluster, "alice", "ledger", Duration::from_secs(10)).await;
    let ledger = FencedMutex::new(lease.clone(), Duration::from_secs(1), Vec::new());
    {
        let mut entries = ledger.lock().await.unwrap();
        assert_eq!(entries.stamp(), lease.stamp());
        let stamp = entries.stamp();
        entries.push(stamp);
        assert!(ledger.try_lock().unwrap().is_none(), "one holder at a time");
    }
    assert_eq!(*ledger.lock().await.unwrap(), vec![lease.stamp()]);
    let (entries, released) = ledger.release().await;
    released.unwrap();
    assert_eq!(entries, vec![lease.stamp()]);
    let next = take(&cluster, "bob", "ledger", Duration::from_secs(10)).await;
    assert!(next.stamp() > lease.stamp());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lock_fails_while_the_lease_is_within_the_gap_and_works_again_after_a_renewal() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_millis(1500);
    let gap = Duration::from_millis(1000);
    let lease = take(&cluster, "alice", "ledger", ttl).await;
    let ledger = FencedMutex::new(lease.clone(), gap, 0_u32);
    assert!(ledger.lock().await.is_ok());
    tokio::time::sleep_until(lease.expire_time_with_safety_gap(gap).into()).await;
    match ledger.lock().await {
        Err(GuardError::NotValid { name, stamp, .. }) => {
            assert_eq!((name.as_str(), stamp), ("ledger", lease.stamp()));
        }
        other => panic!("locked inside the gap: {other:?}"),
    }
    lease.renew().await.unwrap();
    assert!(ledger.lock().await.is_ok(), "a renewal makes it safe again");
    assert!(!ledger.is_poisoned());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mutex_is_poisoned_for_good_when_its_keep_alive_finds_the_lease_lost() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_millis(900);
    let lease = take(&cluster, "alice", "ledger", ttl).await;
    let ledger = FencedMutex::with_keep_alive(lease.clone(), Duration::from_millis(100), 0_u32);
    let guard = ledger.lock().await.unwrap();
    release_elsewhere(&cluster, &lease).await;
    let lost = tokio::time::timeout(ttl * 3, ledger.lost())
        .await
        .expect("the loss is reported");
    assert!(matches!(lost, GuardError::Poisoned { .. }), "{lost:?}");
    assert!(
        matches!(guard.check(), Err(GuardError::Poisoned { .. })),
        "work in progress sees it"
    );
    drop(guard);
    assert!(ledger.is_poisoned());
    // Another owner takes the name; the poison stays.
    take(&cluster, "bob", "ledger", Duration::from_secs(10)).await;
    for _ in 0..2 {
        match ledger.lock().await {
            Err(GuardError::Poisoned { stamp, .. }) => assert_eq!(stamp, lease.stamp()),
            other => panic!("a lost lease locked: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keep_alive_keeps_the_mutex_usable_past_the_ttl() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_millis(1200);
    let lease = take(&cluster, "alice", "ledger", ttl).await;
    let ledger = FencedMutex::with_keep_alive(lease, Duration::from_millis(200), 0_u32);
    let end = tokio::time::Instant::now() + ttl * 2;
    while tokio::time::Instant::now() < end {
        *ledger.lock().await.unwrap() += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!ledger.is_poisoned());
}
