//! What a node accepts from remote clients.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;
use trexlock_lease::remote::{ClientMessage, JournalFile, NodeReply, TcpNode, TcpNodeConfig};
use trexlock_lease::{ClientId, NodeConfig, Op, Outcome, Refusal, Request};
use trexlock_paxos::NodeId;
use trexlock_transport::{ClientConnection, TransportConfig};

#[tokio::test(flavor = "current_thread")]
async fn a_remote_client_may_not_force_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = TcpNodeConfig {
        node: NodeConfig::new(NodeId(1), vec![NodeId(1)]),
        transport: TransportConfig::new("remote-test", NodeId(1), addr, BTreeMap::new()),
        journal: JournalFile::Redb(dir.path().join("journal.redb")),
    };
    let node = TcpNode::start(config).await.unwrap();
    let mut conn: ClientConnection<ClientMessage, NodeReply> =
        ClientConnection::connect(node.local_addr(), "remote-test", None)
            .await
            .unwrap();
    let request = Request {
        client: ClientId(5),
        request: 1,
        acked_below: 1,
        op: Op::ForceRelease { name: "job".into() },
    };
    conn.send(&ClientMessage::Lease(request)).await.unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(5), conn.recv())
        .await
        .expect("an answer")
        .unwrap();
    assert_eq!(
        reply,
        Some(NodeReply::Outcome {
            client: ClientId(5),
            request: 1,
            outcome: Outcome::Refused(Refusal::NotPermitted),
        })
    );
    node.shutdown().await.unwrap();
}
