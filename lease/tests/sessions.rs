//! Lease sessions through the local and the remote client: one keep-alive
//! for many leases, and a lost-session signal when they end together.

mod common;

use common::Cluster;
use std::sync::Arc;
use std::time::Duration;
use trexlock_lease::remote::{self, RemoteConfig};
use trexlock_lease::{FencedMutex, GuardError, LeaseError, TryAcquire};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_keeps_all_its_leases_past_their_ttl_and_closing_it_frees_them() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(0, "indexer");
    let ttl = Duration::from_millis(600);
    let session = client.open_session(ttl).await.unwrap();
    let mut shards = Vec::new();
    for i in 0..16 {
        let shard = session.acquire(&format!("shard-{i}"), Duration::ZERO).await;
        shards.push(shard.unwrap());
    }
    tokio::time::sleep(3 * ttl).await;
    let other = cluster.client(1, "rival");
    for shard in &shards {
        assert!(shard.is_valid_with_safety_gap(Duration::from_millis(50)));
        let holder = other.holder(shard.name()).await.unwrap().expect("held");
        assert_eq!(
            (holder.owner.as_str(), holder.stamp),
            ("indexer", shard.stamp())
        );
    }
    assert!(!session.is_lost());
    session.close().await.unwrap();
    for shard in &shards {
        assert!(!shard.is_valid_with_safety_gap(Duration::ZERO));
        assert!(other.holder(shard.name()).await.unwrap().is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_session_ends_its_leases_signals_the_holder_and_poisons_its_mutex() {
    let cluster = Cluster::start(3).await;
    let client = cluster.client(0, "alice");
    let session = client
        .open_session(Duration::from_millis(900))
        .await
        .unwrap();
    let lease = match session.try_acquire("ledger").await.unwrap() {
        TryAcquire::Acquired(lease) => Arc::new(lease),
        TryAcquire::Held(h) => panic!("held by {h:?}"),
    };
    let ledger = FencedMutex::in_session(lease.clone(), &session, Duration::from_millis(50), 0);
    assert!(ledger.lock().await.is_ok());
    // Someone who knows the secret ends the session behind its back.
    let token = session.token().unwrap();
    let elsewhere = cluster.client(1, "alice");
    elsewhere.close_session(session.id(), token).await.unwrap();
    let lost = tokio::time::timeout(Duration::from_secs(5), session.lost())
        .await
        .expect("the keep-alive learns it");
    assert_eq!(
        lost,
        LeaseError::SessionLost {
            session: session.id()
        }
    );
    assert!(matches!(
        ledger.lock().await,
        Err(GuardError::Poisoned { .. })
    ));
    let rival = cluster.client(2, "bob");
    let next = rival.try_acquire("ledger", Duration::from_secs(5)).await;
    assert!(matches!(next, Ok(TryAcquire::Acquired(l)) if l.stamp() > lease.stamp()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_runs_out_and_its_leases_go_to_their_waiters() {
    let cluster = Cluster::start(3).await;
    let session = cluster
        .client(0, "alice")
        .open_session(Duration::from_millis(500))
        .await
        .unwrap();
    let held = session.acquire("job", Duration::ZERO).await.unwrap();
    let ends = session.expire_time_unsafe();
    drop(session);
    let waiter = cluster.client(1, "bob");
    let next = waiter
        .acquire("job", Duration::from_secs(10), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(next.stamp() > held.stamp());
    assert!(
        std::time::Instant::now() >= ends,
        "granted before the holder's deadline"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_remote_client_binds_leases_to_a_session_and_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::tcp_node("sessions-test", dir.path(), |_| {}).await;
    let remote = remote::connect(RemoteConfig::new("sessions-test", vec![node.local_addr()]))
        .await
        .unwrap();
    remote.wait_for_leader(Duration::from_secs(5)).await;
    let client = remote.client("remote-worker");
    let session = client.open_session(Duration::from_secs(5)).await.unwrap();
    let a = session.acquire("a", Duration::ZERO).await.unwrap();
    let b = session.acquire("b", Duration::ZERO).await.unwrap();
    assert_eq!(a.session(), Some(session.id()));
    a.renew().await.unwrap();
    assert!(b.is_valid_with_safety_gap(Duration::from_secs(1)));
    session.close().await.unwrap();
    assert!(client.holder("a").await.unwrap().is_none());
    assert!(client.holder("b").await.unwrap().is_none());
    assert!(matches!(
        a.renew().await,
        Err(LeaseError::SessionLost { .. })
    ));
    node.shutdown().await.unwrap();
}
