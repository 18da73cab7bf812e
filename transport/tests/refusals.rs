//! Handshake refusals and bad input: each drops only the offending
//! connection, is counted, and the node keeps serving its peers.

mod common;

use common::*;
use tokio::io::AsyncWriteExt;
use trexlock_paxos::NodeId;
use trexlock_transport::{
    ClientConnection, ConfigError, Hello, HelloReply, PROTOCOL_VERSION, Refusal, Role,
    TransportError,
};

#[tokio::test]
async fn a_hello_from_another_cluster_is_refused_with_the_reason() {
    let nodes = cluster(2, |_| {}).await;
    let addr = nodes[0].transport.local_addr();
    let (mut stream, reply) = raw_hello(addr, &Hello::new("other", Role::Peer(NodeId(2)))).await;
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::WrongCluster {
            expected: CLUSTER.into(),
            offered: "other".into()
        }))
    );
    assert!(closed_by_node(&mut stream).await);
    assert!(eventually(|| nodes[0].transport.stats().refused_handshakes == 1).await);
}

#[tokio::test]
async fn a_node_from_another_cluster_never_links_up() {
    let mut nodes = cluster(2, |c| {
        if c.node == NodeId(2) {
            c.cluster_id = "other".into();
        }
    })
    .await;
    let _ = nodes[1].transport.send(NodeId(1), Msg::Ping(1));
    assert!(eventually(|| nodes[0].transport.stats().refused_handshakes >= 1).await);
    assert!(eventually(|| nodes[1].transport.stats().connect_failures >= 1).await);
    assert!(nodes[0].inbound.peers.try_recv().is_err());
}

#[tokio::test]
async fn an_unknown_node_id_is_refused() {
    let nodes = cluster(2, |_| {}).await;
    let addr = nodes[0].transport.local_addr();
    for stranger in [NodeId(7), NodeId(1)] {
        let (mut stream, reply) = raw_hello(addr, &Hello::new(CLUSTER, Role::Peer(stranger))).await;
        assert_eq!(
            reply,
            Some(HelloReply::Refused(Refusal::UnknownNode(stranger)))
        );
        assert!(closed_by_node(&mut stream).await);
    }
    assert!(eventually(|| nodes[0].transport.stats().refused_handshakes == 2).await);
}

#[tokio::test]
async fn another_protocol_version_is_refused() {
    let nodes = cluster(2, |_| {}).await;
    let mut hello = Hello::new(CLUSTER, Role::Peer(NodeId(2)));
    hello.protocol_version = PROTOCOL_VERSION + 1;
    let (_, reply) = raw_hello(nodes[0].transport.local_addr(), &hello).await;
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::IncompatibleVersion {
            supported: PROTOCOL_VERSION,
            offered: PROTOCOL_VERSION + 1
        }))
    );
}

#[tokio::test]
async fn garbage_instead_of_a_hello_is_refused() {
    let nodes = cluster(2, |_| {}).await;
    let addr = nodes[0].transport.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    // A TLS ClientHello's first bytes read as a 369 MB frame length.
    stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    assert!(closed_by_node(&mut stream).await);
    assert!(eventually(|| nodes[0].transport.stats().refused_handshakes == 1).await);
}

/// Connects as peer 2 to node 1, completes the handshake, then writes
/// `bytes` (and optionally half-closes). Checks that node 1 drops that
/// connection, counts a bad frame, and still takes messages from node 3.
async fn bad_input_drops_only_that_connection(bytes: &[u8], then_close: bool) {
    let mut nodes = cluster(3, |c| {
        c.max_frame_bytes = 64 * 1024;
        c.max_client_frame_bytes = 16 * 1024;
    })
    .await;
    let third = nodes[2].transport.clone();
    deliver(&third, NodeId(1), Msg::Ping(0), &mut nodes[0].inbound).await;
    // We impersonate node 2: stop the real one so that its reconnecting
    // link cannot supersede ours.
    nodes[1].transport.shutdown().await;

    let addr = nodes[0].transport.local_addr();
    let mut stream = raw_hello_accepted(addr, &Hello::new(CLUSTER, Role::Peer(NodeId(2)))).await;
    stream.write_all(bytes).await.unwrap();
    if then_close {
        stream.shutdown().await.unwrap();
    }
    assert!(eventually(|| nodes[0].transport.stats().bad_frames == 1).await);
    if !then_close {
        assert!(closed_by_node(&mut stream).await);
    }
    deliver(&third, NodeId(1), Msg::Ping(1), &mut nodes[0].inbound).await;
}

#[tokio::test]
async fn a_garbage_frame_drops_only_its_connection() {
    bad_input_drops_only_that_connection(&[0, 0, 0, 3, 0xff, 0xff, 0xff], false).await;
}

#[tokio::test]
async fn an_oversized_frame_drops_only_its_connection() {
    let len = (64 * 1024 + 1u32).to_be_bytes();
    bad_input_drops_only_that_connection(&len, false).await;
}

#[tokio::test]
async fn a_truncated_frame_drops_only_its_connection() {
    let mut bytes = 100u32.to_be_bytes().to_vec();
    bytes.extend_from_slice(&[1; 10]);
    bad_input_drops_only_that_connection(&bytes, true).await;
}

#[tokio::test]
async fn a_frame_of_another_type_drops_only_its_connection() {
    // A valid postcard value, of the wrong type: a Hello where a Msg is due.
    let wrong = frame(&Hello::new(CLUSTER, Role::Client(5)));
    bad_input_drops_only_that_connection(&wrong, false).await;
}

#[tokio::test]
async fn a_connection_that_never_says_hello_is_closed_after_the_timeout() {
    let nodes = cluster(2, |c| {
        c.handshake_timeout = std::time::Duration::from_millis(200)
    })
    .await;
    let addr = nodes[0].transport.local_addr();
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert!(closed_by_node(&mut silent).await);
    assert_eq!(nodes[0].transport.stats().refused_handshakes, 1);
}

#[tokio::test]
async fn over_plain_tcp_a_second_connection_claiming_a_connected_peer_is_refused_and_the_live_link_kept()
 {
    let mut nodes = cluster(2, |_| {}).await;
    let second = nodes[1].transport.clone();
    deliver(&second, NodeId(1), Msg::Ping(1), &mut nodes[0].inbound).await;
    // An impostor claims node 2 while the real node 2 is linked.
    let addr = nodes[0].transport.local_addr();
    let hello = Hello::new(CLUSTER, Role::Peer(NodeId(2)));
    let (mut impostor, reply) = raw_hello(addr, &hello).await;
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::DuplicatePeer(NodeId(2))))
    );
    assert!(closed_by_node(&mut impostor).await);
    // The real link was not touched: messages keep flowing on it.
    for i in 10..20 {
        second.send(NodeId(1), Msg::Ping(i)).unwrap();
    }
    for i in 10..20 {
        assert_eq!(
            recv(&mut nodes[0].inbound).await,
            Some((NodeId(2), Msg::Ping(i)))
        );
    }
    assert_eq!(second.stats().reconnects, 0);
    assert!(nodes[0].transport.stats().refused_handshakes >= 1);
}

#[tokio::test]
async fn a_peer_that_restarts_over_plain_tcp_links_up_again() {
    let mut nodes = cluster(2, |_| {}).await;
    nodes[1].transport.shutdown().await;
    // Once the old link is closed, a new connection for node 2 is accepted.
    let addr = nodes[0].transport.local_addr();
    let mut newer = raw_hello_accepted(addr, &Hello::new(CLUSTER, Role::Peer(NodeId(2)))).await;
    newer.write_all(&frame(&Msg::Ping(5))).await.unwrap();
    assert_eq!(
        recv(&mut nodes[0].inbound).await,
        Some((NodeId(2), Msg::Ping(5)))
    );
}

#[tokio::test]
async fn a_hello_of_the_previous_protocol_version_is_refused_naming_both_versions() {
    let nodes = cluster(2, |_| {}).await;
    let mut hello = Hello::new(CLUSTER, Role::Peer(NodeId(2)));
    hello.protocol_version = 4;
    let (_, reply) = raw_hello(nodes[0].transport.local_addr(), &hello).await;
    let refusal = Refusal::IncompatibleVersion {
        supported: 5,
        offered: 4,
    };
    assert_eq!(PROTOCOL_VERSION, 5);
    assert_eq!(
        refusal.to_string(),
        "protocol version 4 is not supported (this node speaks 5)"
    );
    assert_eq!(reply, Some(HelloReply::Refused(refusal)));
}

#[tokio::test]
async fn plain_tcp_off_loopback_is_refused_at_start_unless_insecure() {
    let mut plain = config(1, "0.0.0.0:0".parse().unwrap(), Default::default());
    match Net::start(plain.clone()).await {
        Err(TransportError::Config(ConfigError::PlainTcpNotLoopback { addr })) => {
            assert_eq!(addr, plain.listen)
        }
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
    plain.insecure = true;
    let (transport, _inbound) = Net::start(plain).await.unwrap();
    transport.shutdown().await;

    let far: std::net::SocketAddr = "192.0.2.1:7001".parse().unwrap();
    let client = ClientConnection::<Msg, Msg>::connect(far, CLUSTER, None).await;
    assert!(
        matches!(client, Err(TransportError::PlainTcpNotLoopback { addr }) if addr == far),
        "{:?}",
        client.err()
    );
}
