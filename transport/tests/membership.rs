//! Following the membership: a transport admits and dials the peers it is
//! told about at runtime, and forgets the ones that left.

mod common;

use common::*;
use std::time::Duration;
use trexlock_paxos::NodeId;
use trexlock_transport::SendError;

#[tokio::test]
async fn a_peer_added_at_runtime_is_dialled_and_admitted() {
    let mut nodes = cluster(2, |_| {}).await;
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    let peers = [
        (NodeId(1), nodes[0].transport.local_addr()),
        (NodeId(2), nodes[1].transport.local_addr()),
    ]
    .into();
    let (third, mut third_inbound) =
        Net::start_with_listener(config(3, addr, peers), listener).unwrap();
    assert_eq!(
        nodes[0].transport.send(NodeId(3), Msg::Ping(0)),
        Err(SendError::UnknownPeer(NodeId(3)))
    );
    let mut grown =
        std::collections::BTreeMap::from([(NodeId(2), nodes[1].transport.local_addr())]);
    grown.insert(NodeId(3), addr);
    nodes[0].transport.set_peers(grown);
    deliver(
        &nodes[0].transport,
        NodeId(3),
        Msg::Ping(1),
        &mut third_inbound,
    )
    .await;
    deliver(&third, NodeId(1), Msg::Ping(2), &mut nodes[0].inbound).await;
    third.shutdown().await;
}

#[tokio::test]
async fn a_removed_peer_is_neither_dialled_nor_admitted() {
    let mut nodes = cluster(3, |_| {}).await;
    let first = nodes[0].transport.clone();
    let third = nodes[2].transport.clone();
    deliver(&third, NodeId(1), Msg::Ping(1), &mut nodes[0].inbound).await;
    let refused_before = first.stats().refused_handshakes;
    first.set_peers([(NodeId(2), nodes[1].transport.local_addr())].into());
    assert_eq!(
        first.send(NodeId(3), Msg::Ping(2)),
        Err(SendError::UnknownPeer(NodeId(3)))
    );
    // Node 3's link to node 1 is closed, and its redials are refused.
    assert!(
        eventually(|| first.stats().refused_handshakes > refused_before).await,
        "node 3 was never refused"
    );
    for i in 0..20 {
        let _ = third.send(NodeId(1), Msg::Ping(100 + i));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok((from, message)) = nodes[0].inbound.peers.try_recv() {
        assert!(
            !matches!(message, Msg::Ping(n) if n >= 100),
            "{message:?} from {from} arrived after node 3 was removed"
        );
    }
    deliver(&first, NodeId(2), Msg::Ping(3), &mut nodes[1].inbound).await;
}
