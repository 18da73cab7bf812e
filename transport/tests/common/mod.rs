//! Helpers shared by the loopback tests: small clusters on ephemeral ports,
//! raw sockets that speak (or break) the protocol, and a test CA.
#![allow(dead_code)] // each test binary uses a different subset

use bytes::BytesMut;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use trexlock_paxos::NodeId;
use trexlock_transport::certs::{ClusterCa, IssuedCert};
use trexlock_transport::codec::{decode_payload, encode_frame};
use trexlock_transport::{Hello, HelloReply, Inbound, Role, TlsConfig, Transport, TransportConfig};

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

/// Like [`raw_hello`], retrying for up to 10 s until the node accepts: for
/// tests that pose as a peer they just stopped, whose old link the node
/// must notice is gone first.
pub async fn raw_hello_accepted(addr: SocketAddr, hello: &Hello) -> TcpStream {
    for _ in 0..500 {
        let (stream, reply) = raw_hello(addr, hello).await;
        if matches!(reply, Some(HelloReply::Accepted(_))) {
            return stream;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{hello:?} never accepted");
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

/// A TLS config for node `id` of the test cluster, from `ca`.
pub fn node_tls(ca: &ClusterCa, id: u16) -> TlsConfig {
    ca.node(NodeId(id)).unwrap().tls(ca.cert_pem()).unwrap()
}

/// Accepts any server certificate: the tests' impostors do not care who
/// answers, only whether the node admits them.
#[derive(Debug)]
struct AnyServer(rustls::crypto::WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

pub type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens a TLS connection to `addr` presenting `cert_pem`/`key_pem`, sends
/// `hello` and returns the stream with the node's answer: what an impostor
/// holding that certificate can do.
pub async fn raw_tls_hello(
    addr: SocketAddr,
    cert_pem: &str,
    key_pem: &str,
    hello: &Hello,
) -> (TlsStream, Option<HelloReply>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(
            provider.signature_verification_algorithms,
        )))
        .with_client_auth_cert(chain, key)
        .unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::IpAddress(addr.ip().into());
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    stream.write_all(&frame(hello)).await.unwrap();
    stream.flush().await.unwrap();
    let mut len = [0u8; 4];
    let reply = match stream.read_exact(&mut len).await {
        Ok(_) => {
            let mut payload = vec![0u8; u32::from_be_bytes(len) as usize];
            stream.read_exact(&mut payload).await.unwrap();
            Some(decode_payload::<HelloReply>(&payload).unwrap())
        }
        Err(_) => None,
    };
    (stream, reply)
}

/// A certificate from `ca` that names no trexlock identity (a DNS name
/// only), as a generic CA would issue.
pub fn anonymous_cert(ca: &ClusterCa) -> (String, String) {
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        ca.cert_pem(),
        rcgen::KeyPair::from_pem(ca.key_pem()).unwrap(),
    )
    .unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["node2.example".to_owned()]).unwrap();
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A TLS server at the returned address that presents `cert`, admits any
/// client of `ca` and answers every hello as node `answer_as`: what a
/// process posing as that node can do.
pub async fn fake_tls_node(ca: &ClusterCa, cert: &IssuedCert, answer_as: NodeId) -> SocketAddr {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.cert_pem().as_bytes()).unwrap())
        .unwrap();
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .unwrap();
    let chain = CertificateDer::pem_slice_iter(cert.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(cert.key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = bind().await;
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let Ok(mut stream) = acceptor.accept(tcp).await else {
                continue;
            };
            let mut len = [0u8; 4];
            if stream.read_exact(&mut len).await.is_err() {
                continue;
            }
            let mut hello = vec![0u8; u32::from_be_bytes(len) as usize];
            if stream.read_exact(&mut hello).await.is_err() {
                continue;
            }
            let reply = HelloReply::Accepted(Hello::new(CLUSTER, Role::Peer(answer_as)));
            let _ = stream.write_all(&frame(&reply)).await;
            let _ = stream.flush().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    addr
}
