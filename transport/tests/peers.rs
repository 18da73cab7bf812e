//! Peer links on loopback: delivery, reconnection, bounded queues, shutdown.

mod common;

use common::*;
use std::time::Duration;
use trexlock_paxos::NodeId;
use trexlock_transport::SendError;

#[tokio::test]
async fn every_node_of_three_reaches_every_other() {
    let mut nodes = cluster(3, |_| {}).await;
    for from in 0..3 {
        for to in 0..3 {
            if from == to {
                continue;
            }
            let message = Msg::Text(format!("{from}->{to}"));
            let sender = nodes[from].transport.clone();
            deliver(
                &sender,
                NodeId(to as u16 + 1),
                message,
                &mut nodes[to].inbound,
            )
            .await;
        }
    }
    // Once links are up, messages arrive in the order they were sent.
    for i in 0..100 {
        nodes[0].transport.send(NodeId(2), Msg::Ping(i)).unwrap();
    }
    for i in 0..100 {
        assert_eq!(
            recv(&mut nodes[1].inbound).await,
            Some((NodeId(1), Msg::Ping(i)))
        );
    }
    let stats = nodes[0].transport.stats();
    assert!(stats.frames_out >= 102, "{stats:?}");
    assert_eq!(stats.bad_frames, 0);
    assert_eq!(stats.refused_handshakes, 0);
    for node in &nodes {
        node.transport.shutdown().await;
    }
}

#[tokio::test]
async fn sending_to_an_unknown_node_or_to_itself_is_an_error() {
    let nodes = cluster(2, |_| {}).await;
    let t = &nodes[0].transport;
    assert_eq!(
        t.send(NodeId(9), Msg::Ping(0)),
        Err(SendError::UnknownPeer(NodeId(9)))
    );
    assert_eq!(
        t.send(NodeId(1), Msg::Ping(0)),
        Err(SendError::UnknownPeer(NodeId(1)))
    );
}

#[tokio::test]
async fn a_restarted_peer_is_reconnected_to() {
    let mut nodes = cluster(2, |_| {}).await;
    let first = nodes[0].transport.clone();
    deliver(&first, NodeId(2), Msg::Ping(1), &mut nodes[1].inbound).await;

    let second = nodes.pop().unwrap();
    let addr = second.transport.local_addr();
    let peers = [(NodeId(1), first.local_addr())].into();
    second.transport.shutdown().await;
    drop(second);

    // Node 1 notices the loss while node 2 is down...
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = first.send(NodeId(2), Msg::Ping(2));
    tokio::time::sleep(Duration::from_millis(300)).await;

    // ...and reaches it again once it is back on the same address.
    let (restarted, mut inbound) = Net::start(config(2, addr, peers)).await.unwrap();
    deliver(&first, NodeId(2), Msg::Ping(3), &mut inbound).await;
    // And the restarted node reaches node 1 on a fresh link of its own.
    deliver(&restarted, NodeId(1), Msg::Ping(4), &mut nodes[0].inbound).await;
    let stats = first.stats();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(stats.connect_failures >= 1, "{stats:?}");
}

#[tokio::test]
async fn a_full_queue_drops_new_messages_instead_of_growing() {
    // The peer's address has nothing listening: the link never comes up.
    let dead = bind().await.local_addr().unwrap();
    let mut config = config(
        1,
        "127.0.0.1:0".parse().unwrap(),
        [(NodeId(2), dead)].into(),
    );
    config.queue_capacity = 8;
    let (transport, _inbound) = Net::start(config).await.unwrap();
    let mut full = 0;
    for i in 0..100 {
        match transport.send(NodeId(2), Msg::Ping(i)) {
            Ok(()) => {}
            Err(SendError::QueueFull) => full += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(full, 92);
    assert_eq!(transport.stats().dropped_queue_full, 92);
    transport.shutdown().await;
    assert_eq!(
        transport.send(NodeId(2), Msg::Ping(0)),
        Err(SendError::Closed)
    );
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued_for_a_connected_peer() {
    let mut nodes = cluster(2, |_| {}).await;
    let first = nodes[0].transport.clone();
    deliver(
        &first,
        NodeId(2),
        Msg::Ping(u64::MAX),
        &mut nodes[1].inbound,
    )
    .await;
    for i in 0..1000 {
        first.send(NodeId(2), Msg::Ping(i)).unwrap();
    }
    first.shutdown().await;
    for i in 0..1000 {
        assert_eq!(
            recv(&mut nodes[1].inbound).await,
            Some((NodeId(1), Msg::Ping(i)))
        );
    }
    // The stopped node's inbound channels end, and its port is free again.
    assert_eq!(recv(&mut nodes[0].inbound).await, None);
    tokio::net::TcpListener::bind(first.local_addr())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_address_in_use_is_a_bind_error_naming_it() {
    let taken = bind().await;
    let addr = taken.local_addr().unwrap();
    let error = Net::start(config(1, addr, Default::default()))
        .await
        .err()
        .unwrap();
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test]
async fn a_message_over_the_frame_limit_is_dropped_and_the_link_survives() {
    let mut nodes = cluster(2, |c| {
        c.max_frame_bytes = 64 * 1024;
        c.max_client_frame_bytes = 16 * 1024;
    })
    .await;
    let first = nodes[0].transport.clone();
    deliver(&first, NodeId(2), Msg::Ping(0), &mut nodes[1].inbound).await;
    first
        .send(NodeId(2), Msg::Blob(vec![7; 100 * 1024]))
        .unwrap();
    first.send(NodeId(2), Msg::Ping(1)).unwrap();
    assert_eq!(
        recv(&mut nodes[1].inbound).await,
        Some((NodeId(1), Msg::Ping(1)))
    );
    assert_eq!(first.stats().dropped_unencodable, 1);
    assert_eq!(first.stats().reconnects, 0);
}
