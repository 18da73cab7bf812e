//! Lock-delay through a node's own client.

mod common;

use common::Cluster;
use std::time::{Duration, Instant};
use trexlock_lease::{LeaseError, TryAcquire};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_lease_with_a_lock_delay_expires_nobody_gets_it_before_the_delay_has_passed() {
    let cluster = Cluster::start(3).await;
    let alice = cluster.client(0, "alice");
    let bob = cluster.client(1, "bob");
    let delay = Duration::from_millis(800);
    let TryAcquire::Acquired(lease) = alice
        .try_acquire("printer", Duration::from_millis(300))
        .await
        .unwrap()
    else {
        panic!("held");
    };
    lease.set_lock_delay(delay).await.unwrap();
    let deadline = lease.expire_time_unsafe();
    tokio::time::sleep_until((deadline + Duration::from_millis(100)).into()).await;
    match bob.try_acquire("printer", Duration::from_secs(5)).await {
        Err(LeaseError::LockDelay { remaining_ms, .. }) => {
            assert!(remaining_ms > 0 && remaining_ms <= 800, "{remaining_ms}");
        }
        other => panic!("granted inside the lock-delay: {other:?}"),
    }
    let granted = bob
        .acquire("printer", Duration::from_secs(5), Duration::from_secs(5))
        .await
        .unwrap();
    assert!(Instant::now() >= deadline + delay.mul_f64(0.99));
    assert!(granted.stamp() > lease.stamp());
    // A release ends a grant without its delay.
    granted.set_lock_delay(delay).await.unwrap();
    granted.release().await.unwrap();
    assert!(matches!(
        alice.try_acquire("printer", Duration::from_secs(5)).await,
        Ok(TryAcquire::Acquired(_))
    ));
}
