//! Semaphores and read-write leases through nodes' own clients.

mod common;

use common::Cluster;
use std::time::{Duration, Instant};
use trexlock_lease::{LeaseError, Refusal};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_permit_is_handed_to_the_first_waiter_with_a_new_stamp() {
    let cluster = Cluster::start(3).await;
    let short = Duration::from_millis(400);
    let long = Duration::from_secs(30);
    let a = cluster.client(0, "a");
    let first = a
        .acquire_permit("pool", 2, short, Duration::ZERO)
        .await
        .unwrap();
    let second = cluster
        .client(1, "b")
        .acquire_permit("pool", 2, long, Duration::ZERO)
        .await
        .unwrap();
    assert!(second.stamp() > first.stamp());
    let c = cluster.client(2, "c");
    assert!(matches!(
        c.acquire_permit("pool", 2, long, Duration::ZERO).await,
        Err(LeaseError::Busy {
            holders: 2,
            waiters: 0,
            ..
        })
    ));
    // Nobody releases: the first permit runs out and the line moves on
    // then, not when the wait runs out.
    let asked = Instant::now();
    let third = c
        .acquire_permit("pool", 2, long, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(Instant::now() >= first.expire_time_unsafe());
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(third.stamp() > second.stamp());
    assert!(matches!(
        a.acquire_permit("pool", 3, long, Duration::ZERO).await,
        Err(LeaseError::Refused(Refusal::KindMismatch))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_writer_is_served_before_a_reader_that_asked_after_it() {
    let cluster = Cluster::start(3).await;
    let ttl = Duration::from_secs(30);
    let wait = Duration::from_secs(5);
    let first = cluster
        .client(0, "r1")
        .acquire_read("doc", ttl, wait)
        .await
        .unwrap();
    let writer = cluster.client(1, "w");
    let write = tokio::spawn(async move { writer.acquire_write("doc", ttl, wait).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let reader = cluster.client(2, "r2");
    let read = tokio::spawn(async move { reader.acquire_read("doc", ttl, wait).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!write.is_finished() && !read.is_finished(), "both wait");
    first.release().await.unwrap();
    let w = write.await.unwrap().unwrap();
    assert!(
        !read.is_finished(),
        "the reader waits while the writer writes"
    );
    w.release().await.unwrap();
    let r = read.await.unwrap().unwrap();
    assert!(w.stamp() < r.stamp());
}
