//! Remote clients: requests in on `Inbound::clients`, replies out with
//! `Transport::reply`, on one connection.

mod common;

use common::*;
use std::time::Duration;
use trexlock_paxos::NodeId;
use trexlock_transport::{
    ClientConnection, ClientId, HandshakeError, Refusal, SendError, TransportError,
};

type Client = ClientConnection<Msg, Msg>;

#[tokio::test]
async fn a_client_request_is_answered_on_its_connection() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap();
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
async fn queued_requests_leave_in_order_with_one_flush() {
    let mut nodes = cluster(2, |_| {}).await;
    let node = nodes[0].transport.clone();
    let mut client = Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap();
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
    let mut a = Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap();
    let mut b = Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap();
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
    let mut client = Client::connect(node.local_addr(), CLUSTER, None)
        .await
        .unwrap();
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
