//! Helpers shared by the loopback tests: small clusters on ephemeral ports,
//! raw sockets that speak (or break) the protocol, and a test CA.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trexlock_paxos::NodeId;
use trexlock_transport::codec::{decode_payload, encode_frame};
use trexlock_transport::{Hello, HelloReply, Inbound, TlsConfig, Transport, TransportConfig};

/// The message type of the tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Ping(u64),
    Text(String),
    Blob(Vec<u8>),
}

pub type Net = Transport<Msg, Msg, Msg>;

pub struct Node {
    pub transport: Net,
    pub inbound: Inbound<Msg, Msg>,
}

pub const CLUSTER: &str = "test-cluster";

/// Fast timings so that reconnect tests finish quickly.
pub fn config(id: u16, listen: SocketAddr, peers: BTreeMap<NodeId, SocketAddr>) -> TransportConfig {
    let mut config = TransportConfig::new(CLUSTER, NodeId(id), listen, peers);
    config.connect_backoff_min = Duration::from_millis(10);
    config.connect_backoff_max = Duration::from_millis(200);
    config.handshake_timeout = Duration::from_secs(2);
    config
}

pub async fn bind() -> TcpListener {
    TcpListener::bind("127.0.0.1:0").await.unwrap()
}

/// Binds `n` listeners first, so every node knows every port before any
/// node starts; `adjust` may change each node's config (TLS, limits).
pub async fn cluster(n: u16, adjust: impl Fn(&mut TransportConfig)) -> Vec<Node> {
    let mut listeners = Vec::new();
    for _ in 0..n {
        listeners.push(bind().await);
    }
    let addrs: Vec<SocketAddr> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
    let mut nodes = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        let id = i as u16 + 1;
        let peers = (1..=n)
            .filter(|&p| p != id)
            .map(|p| (NodeId(p), addrs[p as usize - 1]))
            .collect();
        let mut config = config(id, addrs[i], peers);
        adjust(&mut config);
        let (transport, inbound) = Net::start_with_listener(config, listener).unwrap();
        nodes.push(Node { transport, inbound });
    }
    nodes
}

/// The next peer message within 10 s.
pub async fn recv(inbound: &mut Inbound<Msg, Msg>) -> Option<(NodeId, Msg)> {
    tokio::time::timeout(Duration::from_secs(10), inbound.peers.recv())
        .await
        .ok()
        .flatten()
}

/// Whether `condition` becomes true within 10 s.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// Sends `message` to `to` every 20 ms until `inbound` receives a message
/// equal to it (links come up asynchronously, and a message written just
/// before a link is found dead is lost, as consensus allows).
pub async fn deliver(from: &Net, to: NodeId, message: Msg, inbound: &mut Inbound<Msg, Msg>) {
    for _ in 0..500 {
        let _ = from.send(to, message.clone());
        if let Ok(Some((sender, got))) =
            tokio::time::timeout(Duration::from_millis(20), inbound.peers.recv()).await
            && got == message
        {
            assert_eq!(sender, from.node());
            return;
        }
    }
    panic!("{message:?} never arrived at {to}");
}

pub fn frame<T: Serialize>(message: &T) -> BytesMut {
    let mut buf = BytesMut::new();
    encode_frame(message, 1 << 20, &mut buf).unwrap();
    buf
}

/// Reads one length-prefixed frame's payload, or `None` at end of stream.
pub async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.ok()?;
    let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload).await.ok()?;
    Some(payload)
}

/// Opens a plain connection to `addr`, sends `hello` and returns the socket
/// with the node's answer.
pub async fn raw_hello(addr: SocketAddr, hello: &Hello) -> (TcpStream, Option<HelloReply>) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(&frame(hello)).await.unwrap();
    let reply = read_frame(&mut stream)
        .await
        .map(|payload| decode_payload::<HelloReply>(&payload).unwrap());
    (stream, reply)
}

/// Whether the node closed `stream` (reads end of stream within 10 s).
pub async fn closed_by_node(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A certificate authority for tests.
pub struct TestCa {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        TestCa {
            ca: rcgen::CertifiedIssuer::self_signed(params, key).unwrap(),
        }
    }

    pub fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// A leaf certificate and key (PEM) for a process of the cluster.
    pub fn leaf(&self, name: &str) -> (String, String) {
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.extended_key_usages = vec![
            rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            rcgen::ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    /// A TLS config for a process whose certificate this CA issued, trusting
    /// `trusted` as the cluster CA.
    pub fn tls(&self, trusted: &TestCa, name: &str) -> TlsConfig {
        let (cert, key) = self.leaf(name);
        TlsConfig::from_pem(trusted.ca_pem().as_bytes(), cert.as_bytes(), key.as_bytes()).unwrap()
    }
}
