//! What a node accepts from remote clients.

mod common;

use std::time::Duration;
use trexlock_lease::remote::{ClientMessage, NodeReply};
use trexlock_lease::{ClientId, Op, Outcome, Refusal, Request};
use trexlock_transport::ClientConnection;

#[tokio::test(flavor = "current_thread")]
async fn a_remote_client_may_not_force_a_release() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::tcp_node("remote-test", dir.path(), |_| {}).await;
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
