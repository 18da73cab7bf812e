//! Remote clients: requests in on `Inbound::clients`, replies out with
//! `Transport::reply`, on one connection.

mod common;

use common::*;
use std::time::Duration;
use trexlock_paxos::NodeId;
use trexlock_transport::{
    ClientConnection, ClientId, HandshakeError, HelloReply, Refusal, SendError, TransportError,
};

type Client = ClientConnection<Msg, Msg>;

/// A client of this cluster, connected to `node`.
async fn connect(node: &Net) -> Client {
    Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_client_request_is_answered_on_its_connection() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = connect(&node).await;
    assert_eq!(client.server(), NodeId(1));

    for i in 0..10 {
        client.send(&Msg::Ping(i)).await.unwrap();
    }
    for i in 0..10 {
        let (id, request) = nodes[0].inbound.clients.recv().await.unwrap();
        assert_eq!(request, Msg::Ping(i));
        node.reply(id, Msg::Text(format!("pong {i}"))).unwrap();
    }
    for i in 0..10 {
        assert_eq!(
            client.recv().await.unwrap(),
            Some(Msg::Text(format!("pong {i}")))
        );
    }
    // Client requests never show up as peer messages.
    assert!(nodes[0].inbound.peers.try_recv().is_err());

    // Once the node shuts down, the client sees the end of the stream.
    node.shutdown().await;
    assert_eq!(client.recv().await.unwrap(), None);
}

#[tokio::test]
async fn replies_that_arrived_together_are_taken_in_order_without_waiting() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = connect(&node).await;
    // Nothing has arrived: no reply, and no wait.
    assert_eq!(client.try_recv().unwrap(), None);
    client.send(&Msg::Ping(0)).await.unwrap();
    let (id, _) = nodes[0].inbound.clients.recv().await.unwrap();
    for i in 0..20 {
        node.reply(id, Msg::Ping(i)).unwrap();
    }
    // Let every frame reach the client's socket, so that one read takes
    // them all.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(client.recv().await.unwrap(), Some(Msg::Ping(0)));
    for i in 1..20 {
        assert_eq!(client.try_recv().unwrap(), Some(Msg::Ping(i)));
    }
    assert_eq!(client.try_recv().unwrap(), None);
}

#[tokio::test]
async fn queued_requests_leave_in_order_with_one_flush() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = connect(&node).await;
    // Many small frames in one write: the node must split them all, in
    // order, however its reads cut the stream.
    for i in 0..500 {
        client.queue(&Msg::Ping(i)).unwrap();
    }
    client.flush().await.unwrap();
    client.send(&Msg::Text("last".into())).await.unwrap();
    for i in 0..500 {
        let (_, request) = nodes[0].inbound.clients.recv().await.unwrap();
        assert_eq!(request, Msg::Ping(i));
    }
    let (_, request) = nodes[0].inbound.clients.recv().await.unwrap();
    assert_eq!(request, Msg::Text("last".into()));
    // Nothing queued: flushing writes nothing and succeeds.
    client.flush().await.unwrap();
}

#[tokio::test]
async fn two_clients_get_their_own_replies() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut a = connect(&node).await;
    let mut b = connect(&node).await;
    a.send(&Msg::Text("a".into())).await.unwrap();
    b.send(&Msg::Text("b".into())).await.unwrap();
    for _ in 0..2 {
        let (id, request) = nodes[0].inbound.clients.recv().await.unwrap();
        node.reply(id, request).unwrap();
    }
    assert_eq!(a.recv().await.unwrap(), Some(Msg::Text("a".into())));
    assert_eq!(b.recv().await.unwrap(), Some(Msg::Text("b".into())));
}

#[tokio::test]
async fn a_client_of_another_cluster_is_refused() {
    let nodes = cluster(2, |_| {}).await;
    let result = Client::connect(nodes[0].transport.local_addr(), "other", None).await;
    match result {
        Err(TransportError::Handshake {
            source: HandshakeError::RefusedByRemote(Refusal::WrongCluster { .. }),
            ..
        }) => {}
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn replying_to_a_departed_client_is_an_error() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = connect(&node).await;
    client.send(&Msg::Ping(1)).await.unwrap();
    let (id, _) = nodes[0].inbound.clients.recv().await.unwrap();
    drop(client);
    assert!(eventually(|| node.reply(id, Msg::Ping(2)) == Err(SendError::UnknownClient(id))).await);
    assert_eq!(
        node.reply(ClientId(999), Msg::Ping(0)),
        Err(SendError::UnknownClient(ClientId(999)))
    );
}

#[tokio::test]
async fn a_client_that_sends_garbage_is_dropped_and_the_node_serves_others() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let addr = node.local_addr();
    let mut good = Client::connect(addr, CLUSTER, None).await.unwrap();

    let (mut bad, _) = raw_hello(
        addr,
        &trexlock_transport::Hello::new(CLUSTER, trexlock_transport::Role::Client(1)),
    )
    .await;
    tokio::io::AsyncWriteExt::write_all(&mut bad, &[0, 0, 0, 2, 0xff, 0xff])
        .await
        .unwrap();
    assert!(closed_by_node(&mut bad).await);
    assert_eq!(node.stats().bad_frames, 1);

    good.send(&Msg::Ping(3)).await.unwrap();
    let (id, request) =
        tokio::time::timeout(Duration::from_secs(10), nodes[0].inbound.clients.recv())
            .await
            .unwrap()
            .unwrap();
    node.reply(id, request).unwrap();
    assert_eq!(good.recv().await.unwrap(), Some(Msg::Ping(3)));
}

/// Opens a TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: &str, addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test]
async fn a_node_at_its_connection_limit_refuses_newcomers_and_keeps_its_peer_links() {
    let mut nodes = cluster(2, |c| {
        c.max_connections = 4;
        c.max_connections_per_address = 4;
        // The silent connections must outlast the test, however slow.
        c.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let second = nodes[1].transport.clone();
    deliver(&second, NodeId(1), Msg::Ping(1), &mut nodes[0].inbound).await;
    let addr = nodes[0].transport.local_addr();
    // Four silent connections take every slot (the peer link holds none).
    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(connect_from("127.0.0.1", addr).await);
    }
    let refused = Client::connect(addr, CLUSTER, None).await;
    assert!(refused.is_err(), "a fifth connection was admitted");
    assert!(eventually(|| nodes[0].transport.stats().refused_over_limit >= 1).await);
    // The peer link is unaffected...
    deliver(&second, NodeId(1), Msg::Ping(2), &mut nodes[0].inbound).await;
    // ...and the slots come back when the silent connections go.
    drop(silent);
    let mut admitted = None;
    for _ in 0..100 {
        if let Ok(client) = Client::connect(addr, CLUSTER, None).await {
            admitted = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted.is_some(), "no slot came back");
}

#[tokio::test]
async fn one_address_cannot_take_more_than_its_share_of_connections() {
    let nodes = cluster(2, |c| {
        c.max_connections = 16;
        c.max_connections_per_address = 2;
        c.handshake_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = nodes[0].transport.local_addr();
    let _held = [
        connect_from("127.0.0.2", addr).await,
        connect_from("127.0.0.2", addr).await,
    ];
    let mut third = connect_from("127.0.0.2", addr).await;
    let reply = read_frame(&mut third)
        .await
        .map(|payload| trexlock_transport::codec::decode_payload::<HelloReply>(&payload).unwrap());
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::TooManyConnections {
            open: 2,
            limit: 2,
            per_address: true
        }))
    );
    // Another address is still served.
    let client = Client::connect(addr, CLUSTER, None).await;
    assert!(client.is_ok(), "{:?}", client.err());
}

#[tokio::test]
async fn an_idle_client_is_closed_and_an_active_one_is_not() {
    let mut nodes = cluster(2, |c| c.client_idle_timeout = Duration::from_millis(500)).await;
    let node = nodes[0].transport.clone();
    let addr = node.local_addr();
    let mut idle = Client::connect(addr, CLUSTER, None).await.unwrap();
    let mut active = Client::connect(addr, CLUSTER, None).await.unwrap();
    for i in 0..10 {
        active.send(&Msg::Ping(i)).await.unwrap();
        let (id, request) = nodes[0].inbound.clients.recv().await.unwrap();
        node.reply(id, request).unwrap();
        assert_eq!(active.recv().await.unwrap(), Some(Msg::Ping(i)));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.recv()).await;
    assert!(matches!(closed, Ok(Ok(None)) | Ok(Err(_))), "{closed:?}");
    assert_eq!(node.stats().idle_clients_closed, 1);
}

#[tokio::test]
async fn a_client_frame_over_the_client_limit_is_refused_while_peers_may_send_it() {
    // The defaults: 1 MiB for clients, 16 MiB for peers.
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let addr = node.local_addr();
    let blob = Msg::Blob(vec![7; 2 * 1024 * 1024]);
    let (mut raw, _) = raw_hello(
        addr,
        &trexlock_transport::Hello::new(CLUSTER, trexlock_transport::Role::Client(1)),
    )
    .await;
    let mut big = bytes::BytesMut::new();
    trexlock_transport::codec::encode_frame(&blob, 16 << 20, &mut big).unwrap();
    let _ = tokio::io::AsyncWriteExt::write_all(&mut raw, &big).await;
    assert!(closed_by_node(&mut raw).await);
    assert_eq!(node.stats().bad_frames, 1);
    assert!(nodes[0].inbound.clients.try_recv().is_err());
    // The client side refuses to send it in the first place.
    let mut client = Client::connect(addr, CLUSTER, None).await.unwrap();
    assert!(client.queue(&blob).is_err());
    // A peer may.
    let second = nodes[1].transport.clone();
    deliver(&second, NodeId(1), blob, &mut nodes[0].inbound).await;
}
