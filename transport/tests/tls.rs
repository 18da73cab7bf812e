//! Mutual TLS with identities: members with certificates from the cluster
//! CA that name them talk; a certificate from another CA, no TLS at all, or
//! a certificate that does not name the role claimed is refused.

mod common;

use common::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use trexlock_paxos::NodeId;
use trexlock_transport::certs::{ClusterCa, write_cluster_certs};
use trexlock_transport::{
    ClientConnection, ConfigError, HandshakeError, Hello, HelloReply, Identity, IdentityError,
    Refusal, Role, TlsConfig, TlsError, TransportError,
};

#[tokio::test]
async fn members_with_cluster_certificates_talk_over_mutual_tls() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let mut nodes = cluster(3, |c| c.tls = Some(node_tls(&ca, c.node.0))).await;
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

    // A remote client with a client certificate from the same CA is served.
    let node = nodes[0].transport.clone();
    let client_tls = ca.client("alice").unwrap().tls(ca.cert_pem()).unwrap();
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
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let rogue_ca = ClusterCa::generate(CLUSTER).unwrap();
    // Node 3's certificate is from the rogue CA (it trusts the cluster CA,
    // so only the others' verification of it can fail).
    let mut nodes = cluster(3, |c| {
        let issuer = if c.node == NodeId(3) { &rogue_ca } else { &ca };
        c.tls = Some(issuer.node(c.node).unwrap().tls(ca.cert_pem()).unwrap());
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
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let mut nodes = cluster(2, |c| {
        if c.node == NodeId(1) {
            c.tls = Some(node_tls(&ca, 1));
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

#[tokio::test]
async fn a_client_certificate_can_never_claim_a_peer_role() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let nodes = cluster(2, |c| c.tls = Some(node_tls(&ca, c.node.0))).await;
    let alice = ca.client("alice").unwrap();
    let addr = nodes[0].transport.local_addr();
    let hello = Hello::new(CLUSTER, Role::Peer(NodeId(2)));
    let (_, reply) = raw_tls_hello(addr, &alice.cert_pem, &alice.key_pem, &hello).await;
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::NotCertified {
            claimed: Role::Peer(NodeId(2)),
            certificate: format!("trexlock://{CLUSTER}/client/alice"),
        }))
    );
    // The same certificate is welcome in the role it names.
    let (_, reply) = raw_tls_hello(
        addr,
        &alice.cert_pem,
        &alice.key_pem,
        &Hello::new(CLUSTER, Role::Client(1)),
    )
    .await;
    assert!(matches!(reply, Some(HelloReply::Accepted(_))), "{reply:?}");
}

#[tokio::test]
async fn a_node_certificate_admits_only_the_node_id_it_names() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let nodes = cluster(3, |c| c.tls = Some(node_tls(&ca, c.node.0))).await;
    let addr = nodes[0].transport.local_addr();
    let third = ca.node(NodeId(3)).unwrap();
    let (_, reply) = raw_tls_hello(
        addr,
        &third.cert_pem,
        &third.key_pem,
        &Hello::new(CLUSTER, Role::Peer(NodeId(2))),
    )
    .await;
    assert_eq!(
        reply,
        Some(HelloReply::Refused(Refusal::NotCertified {
            claimed: Role::Peer(NodeId(2)),
            certificate: format!("trexlock://{CLUSTER}/node/3"),
        }))
    );
    assert!(eventually(|| nodes[0].transport.stats().refused_handshakes >= 1).await);
}

#[tokio::test]
async fn a_certificate_naming_no_identity_is_refused_at_load_and_on_the_wire() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let (cert, key) = anonymous_cert(&ca);
    let loaded = TlsConfig::from_pem(ca.cert_pem().as_bytes(), cert.as_bytes(), key.as_bytes());
    assert!(
        matches!(
            loaded,
            Err(TlsError::Identity {
                source: IdentityError::Missing,
                ..
            })
        ),
        "{loaded:?}"
    );
    let nodes = cluster(2, |c| c.tls = Some(node_tls(&ca, c.node.0))).await;
    let addr = nodes[0].transport.local_addr();
    let (_, reply) = raw_tls_hello(
        addr,
        &cert,
        &key,
        &Hello::new(CLUSTER, Role::Peer(NodeId(2))),
    )
    .await;
    assert!(
        matches!(
            reply,
            Some(HelloReply::Refused(Refusal::NotCertified { .. }))
        ),
        "{reply:?}"
    );
}

#[tokio::test]
async fn a_node_refuses_to_start_with_a_certificate_naming_another_node() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let mut config = config(1, "127.0.0.1:0".parse().unwrap(), Default::default());
    config.tls = Some(node_tls(&ca, 2));
    match Net::start(config).await {
        Err(TransportError::Config(ConfigError::CertificateIdentity {
            expected,
            certified,
        })) => {
            assert_eq!(expected, format!("trexlock://{CLUSTER}/node/1"));
            assert_eq!(certified, format!("trexlock://{CLUSTER}/node/2"));
        }
        other => panic!(
            "expected a certificate identity error, got {:?}",
            other.err()
        ),
    }
}

#[tokio::test]
async fn a_server_whose_certificate_does_not_name_the_node_it_answers_as_is_refused() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    // A process holding only a client certificate answers as node 2.
    let mallory = ca.client("mallory").unwrap();
    let addr = fake_tls_node(&ca, &mallory, NodeId(2)).await;
    let client_tls = ca.client("bob").unwrap().tls(ca.cert_pem()).unwrap();
    let refused = ClientConnection::<Msg, Msg>::connect(addr, CLUSTER, Some(&client_tls)).await;
    match refused {
        Err(TransportError::Handshake {
            source:
                HandshakeError::Refused(Refusal::NotCertified {
                    claimed,
                    certificate,
                }),
            ..
        }) => {
            assert_eq!(claimed, Role::Peer(NodeId(2)));
            assert_eq!(certificate, format!("trexlock://{CLUSTER}/client/mallory"));
        }
        other => panic!("expected a refusal, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn an_authenticated_newer_connection_replaces_the_peers_older_link() {
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let mut nodes = cluster(2, |c| c.tls = Some(node_tls(&ca, c.node.0))).await;
    // We act as node 2 with its certificate: stop the real one so that its
    // reconnecting link cannot supersede ours.
    nodes[1].transport.shutdown().await;
    let addr = nodes[0].transport.local_addr();
    let second = ca.node(NodeId(2)).unwrap();
    let hello = Hello::new(CLUSTER, Role::Peer(NodeId(2)));
    let (mut older, reply) = raw_tls_hello(addr, &second.cert_pem, &second.key_pem, &hello).await;
    assert!(matches!(reply, Some(HelloReply::Accepted(_))), "{reply:?}");
    let (mut newer, reply) = raw_tls_hello(addr, &second.cert_pem, &second.key_pem, &hello).await;
    assert!(matches!(reply, Some(HelloReply::Accepted(_))), "{reply:?}");
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read(&mut older, &mut buf),
    )
    .await;
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    newer.write_all(&frame(&Msg::Ping(5))).await.unwrap();
    newer.flush().await.unwrap();
    assert_eq!(
        recv(&mut nodes[0].inbound).await,
        Some((NodeId(2), Msg::Ping(5)))
    );
}

#[test]
fn the_certs_folder_holds_a_ca_and_certificates_that_name_their_holders() {
    let dir = tempdir();
    let written = write_cluster_certs(
        &dir,
        CLUSTER,
        &[NodeId(1), NodeId(2)],
        &["alice".to_owned()],
        &["ops".to_owned()],
    )
    .unwrap();
    assert_eq!(written.len(), 10, "{written:?}");
    let ca = dir.join("ca.pem");
    let node =
        TlsConfig::from_pem_files(&ca, dir.join("node-2.pem"), dir.join("node-2.key")).unwrap();
    assert_eq!(
        node.identity(),
        &Identity::Node {
            cluster: CLUSTER.into(),
            node: NodeId(2)
        }
    );
    let client = TlsConfig::from_pem_files(
        &ca,
        dir.join("client-alice.pem"),
        dir.join("client-alice.key"),
    )
    .unwrap();
    assert_eq!(
        client.identity().uri(),
        format!("trexlock://{CLUSTER}/client/alice")
    );
    let admin =
        TlsConfig::from_pem_files(&ca, dir.join("admin-ops.pem"), dir.join("admin-ops.key"))
            .unwrap();
    assert_eq!(
        admin.identity().uri(),
        format!("trexlock://{CLUSTER}/admin/ops")
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("node-2.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "keys are private: {mode:o}");
    }
    // A later run adds certificates signed by the same CA, and never
    // overwrites one.
    let added = write_cluster_certs(&dir, CLUSTER, &[NodeId(3)], &[], &[]).unwrap();
    assert_eq!(added.len(), 2, "{added:?}");
    TlsConfig::from_pem_files(&ca, dir.join("node-3.pem"), dir.join("node-3.key")).unwrap();
    assert!(write_cluster_certs(&dir, CLUSTER, &[NodeId(3)], &[], &[]).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "trexlock-tls-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::Instant::now())
}

#[test]
fn unreadable_or_invalid_pem_files_are_named_in_the_error() {
    let dir = tempdir();
    let ca = ClusterCa::generate(CLUSTER).unwrap();
    let issued = ca.node(NodeId(1)).unwrap();
    let (ca_path, cert_path, key_path) = (
        dir.join("ca.pem"),
        dir.join("node.pem"),
        dir.join("node.key"),
    );
    std::fs::write(&ca_path, ca.cert_pem()).unwrap();
    std::fs::write(&cert_path, &issued.cert_pem).unwrap();
    std::fs::write(&key_path, &issued.key_pem).unwrap();
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
    let other_key = ca.node(NodeId(2)).unwrap().key_pem;
    std::fs::write(&key_path, other_key).unwrap();
    let error = TlsConfig::from_pem_files(&ca_path, &cert_path, &key_path).unwrap_err();
    assert!(matches!(error, TlsError::Rustls(_)), "{error}");
    // TlsError converts into the transport's error for `?` in start-up code.
    let _: TransportError = error.into();
    std::fs::remove_dir_all(&dir).unwrap();
}
