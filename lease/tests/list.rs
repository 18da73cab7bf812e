//! Listing held leases through a node's own client.

mod common;

use common::Cluster;
use std::time::Duration;
use trexlock_lease::{LeaseError, Mode, TryAcquire};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_from_a_follower_sees_every_grant_and_release_acknowledged_before_it() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let reader = cluster.client(follower, "reader");
    let alice = cluster.client(cluster.leader().await, "alice");
    let ttl = Duration::from_secs(30);
    let mut stamps = Vec::new();
    for name in ["shard/2", "shard/1", "shard/3"] {
        let TryAcquire::Acquired(lease) = alice.try_acquire(name, ttl).await.unwrap() else {
            panic!("{name} held");
        };
        stamps.push((name, lease));
    }
    stamps[2].1.release().await.unwrap();
    let page = reader.list("shard/").await.unwrap();
    let seen: Vec<_> = page
        .leases
        .iter()
        .map(|l| (l.name.as_str(), l.holders[0].stamp))
        .collect();
    assert_eq!(
        seen,
        [
            ("shard/1", stamps[1].1.stamp()),
            ("shard/2", stamps[0].1.stamp())
        ]
    );
    assert!(matches!(
        reader.list_page("shard/", None, 0).await,
        Err(LeaseError::Invalid(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_through_a_local_client_names_every_permit_reader_and_session_holder() {
    let cluster = Cluster::start(3).await;
    let reader = cluster.client(cluster.follower().await, "reader");
    let alice = cluster.client(cluster.leader().await, "alice");
    let (ttl, wait) = (Duration::from_secs(30), Duration::from_secs(5));
    let permit = alice.acquire_permit("p/gpus", 4, ttl, wait).await.unwrap();
    let read = alice.acquire_read("p/report", ttl, wait).await.unwrap();
    let session = alice.open_session(ttl).await.unwrap();
    let bound = session.acquire("p/shard", Duration::ZERO).await.unwrap();
    let page = reader.list("p/").await.unwrap();
    let seen: Vec<_> = page
        .holders()
        .map(|(name, h)| (name, h.stamp, h.mode, h.session))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "p/gpus",
                permit.stamp(),
                Some(Mode::Permit { permits: 4 }),
                None
            ),
            ("p/report", read.stamp(), Some(Mode::Read), None),
            ("p/shard", bound.stamp(), None, Some(session.id())),
        ]
    );
}
