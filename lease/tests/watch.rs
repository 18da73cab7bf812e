//! Watches through a node's own client and through a remote client.

mod common;

use common::Cluster;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use trexlock_lease::remote::{self, JournalFile, RemoteConfig, TcpNode, TcpNodeConfig};
use trexlock_lease::table::Event;
use trexlock_lease::{NodeConfig, Stamp, TryAcquire, Watch, WatchError, WatchEvent};
use trexlock_paxos::NodeId;
use trexlock_test_support::local_addr;
use trexlock_transport::TransportConfig;

const WAIT: Duration = Duration::from_secs(10);

async fn next(watch: &mut Watch) -> WatchEvent {
    tokio::time::timeout(WAIT, watch.next())
        .await
        .expect("an event in time")
        .expect("the watch goes on")
        .expect("no error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_on_a_follower_reports_each_change_with_owner_stamp_and_value_in_log_order() {
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let mut watch = cluster
        .client(follower, "watcher")
        .watch("jobs/")
        .await
        .unwrap();
    let alice = cluster.client(cluster.leader().await, "alice");
    let TryAcquire::Acquired(lease) = alice.try_acquire("jobs/1", WAIT).await.unwrap() else {
        panic!("free")
    };
    alice.try_acquire("other", WAIT).await.unwrap();
    lease.renew().await.unwrap();
    lease.write_value("v1".into()).await.unwrap();
    lease.release().await.unwrap();
    let TryAcquire::Acquired(short) = alice
        .try_acquire("jobs/2", Duration::from_millis(200))
        .await
        .unwrap()
    else {
        panic!("free")
    };
    // Nobody waits for it: its expiry is an event at the slot of the next
    // command applied after its time ran out.
    tokio::time::sleep(Duration::from_millis(400)).await;
    alice.try_acquire("jobs/3", WAIT).await.unwrap();
    let stamp = lease.stamp();
    let expected = [
        Event::Granted {
            name: "jobs/1".into(),
            stamp,
            waited: false,
            owner: "alice".into(),
        },
        Event::Renewed {
            name: "jobs/1".into(),
            stamp,
        },
        Event::Written {
            name: "jobs/1".into(),
            stamp,
            value: "v1".into(),
        },
        Event::Released {
            name: "jobs/1".into(),
            stamp,
        },
        Event::Granted {
            name: "jobs/2".into(),
            stamp: short.stamp(),
            waited: false,
            owner: "alice".into(),
        },
        Event::Expired {
            name: "jobs/2".into(),
            stamp: short.stamp(),
        },
    ];
    let mut last = watch.position();
    for want in expected {
        let got = next(&mut watch).await;
        assert_eq!(got.event, want);
        assert!(got.position > last, "positions grow");
        last = got.position;
    }
    let third = next(&mut watch).await;
    assert!(matches!(third.event, Event::Granted { ref name, .. } if name == "jobs/3"));
    assert_eq!(watch.position(), third.position);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_a_position_on_another_node_delivers_exactly_the_events_after_it() {
    let cluster = Cluster::start(3).await;
    let leader = cluster.leader().await;
    let alice = cluster.client(leader, "alice");
    let mut first = cluster.client(leader, "w").watch("").await.unwrap();
    for i in 0..6 {
        alice.try_acquire(&format!("n{i}"), WAIT).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next(&mut first).await);
    }
    drop(first);
    let follower = cluster.follower().await;
    let mut resumed = cluster
        .client(follower, "w")
        .watch_from("", seen[2].position)
        .await
        .unwrap();
    for i in 3..6 {
        let e = next(&mut resumed).await;
        assert_eq!(e.event.name(), Some(format!("n{i}").as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_older_than_the_node_keeps_is_refused_as_compacted_never_skipped() {
    let cluster = Cluster::start_with(1, |c| c.watch_history = 4).await;
    let alice = cluster.client(0, "alice");
    let start = cluster.client(0, "w").watch("").await.unwrap().position();
    for i in 0..8 {
        alice.try_acquire(&format!("n{i}"), WAIT).await.unwrap();
    }
    let refused = cluster
        .client(0, "w")
        .watch_from("", start)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, WatchError::Compacted { requested, .. } if requested == start),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_does_not_read_is_cut_off_with_where_to_resume() {
    let cluster = Cluster::start(1).await;
    let alice = cluster.client(0, "alice");
    let mut slow = cluster.client(0, "w").watch("").await.unwrap();
    let start = slow.position();
    // Each grant is a slot of its own: far more deliveries than a
    // watcher's buffer holds.
    for i in 0..(trexlock_lease::watch::WATCH_BUFFER_BATCHES * 2) {
        alice.try_acquire(&format!("n{i}"), WAIT).await.unwrap();
    }
    let mut delivered = 0;
    let resume_from = loop {
        match tokio::time::timeout(WAIT, slow.next()).await.unwrap() {
            Some(Ok(_)) => delivered += 1,
            Some(Err(WatchError::Lagged { resume_from })) => break resume_from,
            other => panic!("{other:?}"),
        }
    };
    assert!(delivered > 0 && delivered < trexlock_lease::watch::WATCH_BUFFER_BATCHES * 2);
    // Every event up to it was delivered (none lies between the last one
    // and it), and the resume continues with the first one that was not.
    assert!(resume_from >= slow.position());
    assert!(resume_from > start);
    assert!(slow.next().await.is_none(), "it ends after the error");
    let mut again = cluster
        .client(0, "w")
        .watch_from("", resume_from)
        .await
        .unwrap();
    let e = next(&mut again).await;
    assert_eq!(e.event.name(), Some(format!("n{delivered}").as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watch_resumes_on_another_node_after_its_node_stops_without_missing_an_event() {
    let dir = tempfile::tempdir().unwrap();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    let addrs: Vec<SocketAddr> = ids.iter().map(|_| local_addr()).collect();
    let mut nodes = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let peers: BTreeMap<NodeId, SocketAddr> = ids
            .iter()
            .zip(&addrs)
            .filter(|(p, _)| *p != id)
            .map(|(p, a)| (*p, *a))
            .collect();
        let config = TcpNodeConfig {
            node: NodeConfig::new(*id, ids.to_vec()),
            transport: TransportConfig::new("watch-test", *id, addrs[i], peers),
            journal: JournalFile::Redb(dir.path().join(format!("{i}.redb"))),
        };
        nodes.push(Some(TcpNode::start(config).await.unwrap()));
    }
    let cluster = remote::connect(RemoteConfig::new("watch-test", addrs.clone()))
        .await
        .unwrap();
    assert!(cluster.wait_for_leader(WAIT).await.is_some());
    let watching = cluster.clone();
    let mut watch = watching.client("w").watch("").await.unwrap();
    let writer = remote::connect(RemoteConfig::new("watch-test", addrs[1..].to_vec()))
        .await
        .unwrap()
        .client("alice");
    let mut stamps = Vec::new();
    for i in 0..3 {
        stamps.push(grant(&writer, &format!("before/{i}")).await);
    }
    for _ in 0..3 {
        next(&mut watch).await;
    }
    // The watch's node (the first server) stops; the link moves on and
    // resumes after the last event it delivered.
    let connected = watching.connected_to().unwrap();
    let index = ids.iter().position(|id| *id == connected).unwrap();
    nodes[index].take().unwrap().shutdown().await.unwrap();
    for i in 0..3 {
        stamps.push(grant(&writer, &format!("after/{i}")).await);
    }
    for stamp in &stamps[3..] {
        let e = next(&mut watch).await;
        assert!(
            matches!(e.event, Event::Granted { stamp: s, .. } if s == *stamp),
            "{e:?}"
        );
    }
    for node in nodes.into_iter().flatten() {
        node.shutdown().await.unwrap();
    }
}

async fn grant(client: &trexlock_lease::LeaseClient, name: &str) -> Stamp {
    for _ in 0..50 {
        match client.try_acquire(name, WAIT).await {
            Ok(TryAcquire::Acquired(lease)) => return lease.stamp(),
            Ok(TryAcquire::Held(h)) => panic!("{name} held by {h:?}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    panic!("{name} never granted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_elections_change_stream_reports_every_leader_and_what_it_proclaimed() {
    use trexlock_lease::{Election, LeaderChange};
    let cluster = Cluster::start(3).await;
    let follower = cluster.follower().await;
    let observer = Election::new(cluster.client(follower, "observer"), "leader", WAIT);
    let mut changes = observer.changes().await.unwrap();
    let a = Election::new(cluster.client(0, "a"), "leader", WAIT);
    let b = Election::new(cluster.client(1, "b"), "leader", WAIT);
    // A lease whose name starts with the election's is another lease.
    cluster
        .client(2, "c")
        .try_acquire("leader-2", WAIT)
        .await
        .unwrap();
    let first = a.campaign("a:1".into(), WAIT).await.unwrap();
    let s1 = first.stamp();
    first.resign().await.unwrap();
    let second = b.campaign("b:1".into(), WAIT).await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let change = tokio::time::timeout(WAIT, changes.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(match change {
            LeaderChange::Elected { owner, stamp, .. } => format!("elected {owner} {stamp}"),
            LeaderChange::Proclaimed { value, .. } => {
                format!("proclaimed {}", String::from_utf8_lossy(&value))
            }
            LeaderChange::Vacant { stamp, .. } => format!("vacant {stamp}"),
        });
    }
    let s2 = second.stamp();
    assert_eq!(
        seen,
        [
            format!("elected a {s1}"),
            "proclaimed a:1".to_owned(),
            format!("vacant {s1}"),
            format!("elected b {s2}"),
            "proclaimed b:1".to_owned(),
        ]
    );
}

/// How many values of 60 KiB the writer writes while the remote client
/// reads nothing: far more bytes than the socket buffers and the node's
/// four-frame queue for the connection hold, and less than the 16 MiB of
/// values the node keeps for resumes.
const BACKLOG_WRITES: usize = 150;

/// Values of 60 KiB written under `few/1` after the backlog: few enough
/// for the client's buffer of the `few` watch, enough to fill any room the
/// stalled connection still finds.
const FEW_WRITES: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_watcher_whose_connection_backs_up_is_told_it_lagged_and_where_to_resume() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::tcp_node("lag-test", dir.path(), |t| t.queue_capacity = 4).await;
    let addr = node.local_addr();
    assert!(node.node().wait_for_leader(WAIT).await.is_some());
    // The remote client's connection is served by a runtime of its own,
    // which the test then blocks, so nothing reads the connection. Two
    // watches share it: `bulk` (never read) sees the big values that fill
    // the connection, `few` (read here) sees only a handful of events, so
    // its own buffer in this process never overflows: whatever ends it
    // must come from the node.
    let (opened, watch) = std::sync::mpsc::channel();
    let (resume, blocked) = std::sync::mpsc::channel::<()>();
    let (finished, done) = tokio::sync::oneshot::channel::<()>();
    let link = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let cluster = remote::connect(RemoteConfig::new("lag-test", vec![addr]))
                .await
                .unwrap();
            let client = cluster.client("w");
            let _bulk = client.watch("bulk").await.unwrap();
            opened.send(client.watch("few/").await.unwrap()).unwrap();
            blocked.recv().unwrap();
            // Serve the connection until the test is done with it.
            let _ = done.await;
        });
    });
    let mut few: Watch = watch.recv().unwrap();
    let writer = node.node().client("alice");
    let first = grant(&writer, "few/0").await;
    let TryAcquire::Acquired(bulk) = writer.try_acquire("bulk", WAIT * 6).await.unwrap() else {
        panic!("free")
    };
    let value = bytes::Bytes::from(vec![7u8; 60 * 1024]);
    for _ in 0..BACKLOG_WRITES {
        bulk.write_value(value.clone()).await.unwrap();
    }
    // The events `few` is owed after its first, as (granted, stamp); a
    // write is an event of 60 KiB. Room the stalled connection may still
    // find (the receiving kernel compacting its buffer) can take a small
    // event, never all of these: the rest meet a full queue.
    let TryAcquire::Acquired(one) = writer.try_acquire("few/1", WAIT * 6).await.unwrap() else {
        panic!("free")
    };
    let mut later = vec![(true, one.stamp())];
    for _ in 0..FEW_WRITES {
        one.write_value(value.clone()).await.unwrap();
        later.push((false, one.stamp()));
    }
    later.push((true, grant(&writer, "few/2").await));
    resume.send(()).unwrap();
    let e = next(&mut few).await;
    assert!(matches!(e.event, Event::Granted { stamp, .. } if stamp == first));
    let owed = |e: &WatchEvent, (granted, stamp): (bool, Stamp)| match e.event {
        Event::Granted { stamp: s, .. } => granted && s == stamp,
        Event::Written { stamp: s, .. } => !granted && s == stamp,
        _ => false,
    };
    let mut before_lag = 0;
    let resume_from = loop {
        match tokio::time::timeout(WAIT, few.next()).await {
            Ok(Some(Err(WatchError::Lagged { resume_from }))) => break resume_from,
            Ok(Some(Ok(e))) if before_lag < later.len() && owed(&e, later[before_lag]) => {
                before_lag += 1;
            }
            other => panic!(
                "the watch stalled or went on otherwise after {before_lag} of {} events: {other:?}",
                later.len()
            ),
        }
    };
    assert!(resume_from >= few.position());
    // From where it was told to resume, the rest comes, none missing.
    let mut again = writer.watch_from("few/", resume_from).await.unwrap();
    for expected in &later[before_lag..] {
        let e = next(&mut again).await;
        assert!(owed(&e, *expected), "{e:?}, expected {expected:?}");
    }
    drop(few);
    finished.send(()).unwrap();
    link.join().unwrap();
    node.shutdown().await.unwrap();
}
