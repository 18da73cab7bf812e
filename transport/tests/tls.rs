//! Mutual TLS: members with certificates from the cluster CA talk; a node
//! with a certificate from another CA, or with no TLS at all, is refused.

mod common;

use common::*;
use std::time::Duration;
use trexlock_paxos::NodeId;
use trexlock_transport::{ClientConnection, TlsConfig, TlsError, TransportError};

#[tokio::test]
async fn members_with_cluster_certificates_talk_over_mutual_tls() {
    let ca = TestCa::new("cluster ca");
    let mut nodes = cluster(3, |c| {
        c.tls = Some(ca.tls(&ca, &format!("node{}", c.node.0)))
    })
    .await;
    for (from, to) in [(0, 1), (1, 2), (2, 0)] {
        let sender = nodes[from].transport.clone();
        deliver(
            &sender,
            NodeId(to as u16 + 1),
            Msg::Text(format!("{from}")),
            &mut nodes[to].inbound,
        )
        .await;
    }

    // A remote client with a certificate from the same CA is served too.
    let node = nodes[0].transport.clone();
    let client_tls = ca.tls(&ca, "client");
    let mut client =
        ClientConnection::<Msg, Msg>::connect(node.local_addr(), CLUSTER, Some(&client_tls))
            .await
            .unwrap();
    client.send(&Msg::Ping(9)).await.unwrap();
    let (id, request) = nodes[0].inbound.clients.recv().await.unwrap();
    node.reply(id, request).unwrap();
    assert_eq!(client.recv().await.unwrap(), Some(Msg::Ping(9)));
    assert_eq!(node.stats().refused_handshakes, 0);
}

#[tokio::test]
async fn a_node_with_a_certificate_from_another_ca_is_refused() {
    let ca = TestCa::new("cluster ca");
    let rogue_ca = TestCa::new("rogue ca");
    // Node 3's certificate is from the rogue CA (it trusts the cluster CA,
    // so only the others' verification of it can fail).
    let mut nodes = cluster(3, |c| {
        let issuer = if c.node == NodeId(3) { &rogue_ca } else { &ca };
        c.tls = Some(issuer.tls(&ca, "node"));
    })
    .await;
    let first = nodes[0].transport.clone();
    deliver(&first, NodeId(2), Msg::Ping(1), &mut nodes[1].inbound).await;

    let rogue = nodes[2].transport.clone();
    for i in 0..20 {
        let _ = rogue.send(NodeId(1), Msg::Ping(i));
        let _ = first.send(NodeId(3), Msg::Ping(i));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(eventually(|| first.stats().refused_handshakes >= 1).await);
    assert!(rogue.stats().connect_failures >= 1);
    // Node 1 also refuses to talk to node 3 as a server.
    assert!(first.stats().connect_failures >= 1);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), nodes[0].inbound.peers.recv())
            .await
            .is_err()
    );
    assert!(nodes[2].inbound.peers.try_recv().is_err());
}

#[tokio::test]
async fn a_node_without_tls_is_refused_by_tls_nodes() {
    let ca = TestCa::new("cluster ca");
    let mut nodes = cluster(2, |c| {
        if c.node == NodeId(1) {
            c.tls = Some(ca.tls(&ca, "node1"));
        }
    })
    .await;
    let plain = nodes[1].transport.clone();
    let secure = nodes[0].transport.clone();
    for i in 0..20 {
        let _ = plain.send(NodeId(1), Msg::Ping(i));
        let _ = secure.send(NodeId(2), Msg::Ping(i));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Each side refuses the other's connections.
    assert!(eventually(|| secure.stats().refused_handshakes >= 1).await);
    assert!(eventually(|| plain.stats().refused_handshakes >= 1).await);
    assert!(nodes[0].inbound.peers.try_recv().is_err());
    assert!(nodes[1].inbound.peers.try_recv().is_err());

    // A client without TLS is refused as well.
    let refused = ClientConnection::<Msg, Msg>::connect(secure.local_addr(), CLUSTER, None).await;
    assert!(refused.is_err());
}

#[test]
fn unreadable_or_invalid_pem_files_are_named_in_the_error() {
    let dir = std::env::temp_dir().join(format!("trexlock-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = TestCa::new("ca");
    let (cert, key) = ca.leaf("node");
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&ca_path, ca.ca_pem()).unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    TlsConfig::from_pem_files(&ca_path, &cert_path, &key_path).unwrap();

    let missing = dir.join("missing.pem");
    let error = TlsConfig::from_pem_files(&ca_path, &missing, &key_path).unwrap_err();
    assert!(
        matches!(
            error,
            TlsError::Read {
                what: "certificate chain",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("missing.pem"), "{error}");

    // A key file passed as the certificate: no CERTIFICATE inside.
    let error = TlsConfig::from_pem_files(&ca_path, &key_path, &key_path).unwrap_err();
    assert!(error.to_string().contains("node.key"), "{error}");

    // A key that does not belong to the certificate.
    let (_, other_key) = ca.leaf("other");
    std::fs::write(&key_path, other_key).unwrap();
    let error = TlsConfig::from_pem_files(&ca_path, &cert_path, &key_path).unwrap_err();
    assert!(matches!(error, TlsError::Rustls(_)), "{error}");
    // TlsError converts into the transport's error for `?` in start-up code.
    let _: TransportError = error.into();
    std::fs::remove_dir_all(&dir).unwrap();
}
