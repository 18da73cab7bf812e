//! Mutual TLS (1.3, rustls with the ring provider) and the plain-TCP
//! fallback, behind one boxed stream type.
//!
//! Trust model: the cluster has its own CA. Every node and every remote
//! client presents a certificate chaining to it, and either side refuses a
//! connection whose certificate does not. Each certificate names one
//! [`Identity`](crate::Identity) as a URI subject alternative name
//! (`trexlock://<cluster>/node/<id>` or `trexlock://<cluster>/client/<name>`);
//! the TLS layer only verifies the chain and hands the verified leaf to the
//! handshake, which admits the connection only in the role the certificate
//! names. DNS names and IP addresses in certificates are not checked: nodes
//! are dialled by socket address, and the identity URI is what binds a
//! certificate to a node. Certificates need the serverAuth and clientAuth
//! extended key usages (or none), since every node is both.

use crate::error::{IdentityError, TlsError};
use crate::identity::Identity;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme, version,
};
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A byte stream: plain TCP or TLS over TCP.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// An established connection, before framing.
pub(crate) type BoxIo = Box<dyn Io>;

/// This node's TLS identity and the cluster CA it trusts, ready for both
/// accepting and connecting. Cloning is cheap.
#[derive(Clone)]
pub struct TlsConfig {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
    identity: Identity,
}

impl fmt::Debug for TlsConfig {
    // Deliberately says nothing about the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TlsConfig {{ identity: {}, .. }}", self.identity)
    }
}

fn parse_certs(
    what: &'static str,
    origin: &str,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |reason: String| TlsError::Pem {
        what,
        origin: origin.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_error("no CERTIFICATE section found".to_owned()));
    }
    Ok(certs)
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })
}

impl TlsConfig {
    /// Builds the configuration from PEM text: the cluster CA certificate(s),
    /// this process's certificate chain (leaf first) and its private key
    /// (PKCS#8, PKCS#1 or SEC1). Fails, naming the item, if any is missing,
    /// malformed, if the certificate names no trexlock identity, or if the
    /// key does not match the certificate.
    pub fn from_pem(
        ca_pem: &[u8],
        cert_chain_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, TlsError> {
        Self::build(ca_pem, cert_chain_pem, key_pem, ["in memory"; 3])
    }

    /// Like [`TlsConfig::from_pem`], reading the three PEM files; errors name
    /// the file that is unreadable or invalid.
    pub fn from_pem_files(
        ca: impl AsRef<Path>,
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, TlsError> {
        let (ca, cert_chain, key) = (ca.as_ref(), cert_chain.as_ref(), key.as_ref());
        Self::build(
            &read("CA certificate", ca)?,
            &read("certificate chain", cert_chain)?,
            &read("private key", key)?,
            [
                &ca.display().to_string(),
                &cert_chain.display().to_string(),
                &key.display().to_string(),
            ],
        )
    }

    fn build(
        ca_pem: &[u8],
        chain_pem: &[u8],
        key_pem: &[u8],
        origins: [&str; 3],
    ) -> Result<Self, TlsError> {
        let [ca_origin, chain_origin, key_origin] = origins;
        let mut roots = RootCertStore::empty();
        for ca in parse_certs("CA certificate", ca_origin, ca_pem)? {
            roots.add(ca).map_err(|e| TlsError::Pem {
                what: "CA certificate",
                origin: ca_origin.to_owned(),
                reason: e.to_string(),
            })?;
        }
        let roots = Arc::new(roots);
        let chain = parse_certs("certificate chain", chain_origin, chain_pem)?;
        let identity =
            Identity::from_certificate(&chain[0]).map_err(|source| TlsError::Identity {
                origin: chain_origin.to_owned(),
                source,
            })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| TlsError::Pem {
            what: "private key",
            origin: key_origin.to_owned(),
            reason: e.to_string(),
        })?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13])?
            .with_client_cert_verifier(client_verifier)
            .with_single_cert(chain.clone(), key.clone_key())?;
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ClusterCaVerifier {
                roots,
                algorithms: provider.signature_verification_algorithms,
            }))
            .with_client_auth_cert(chain, key)?;
        Ok(TlsConfig {
            server: Arc::new(server),
            client: Arc::new(client),
            identity,
        })
    }

    /// The identity this process's own certificate names.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn accept(&self, tcp: TcpStream) -> io::Result<(BoxIo, Certified)> {
        let stream = TlsAcceptor::from(self.server.clone()).accept(tcp).await?;
        let leaf = leaf(stream.get_ref().1.peer_certificates());
        Ok((Box::new(stream), Some(leaf)))
    }

    async fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<(BoxIo, Certified)> {
        // The name is required by the API but not checked (see the module doc).
        let name = ServerName::IpAddress(addr.ip().into());
        let stream = TlsConnector::from(self.client.clone())
            .connect(name, tcp)
            .await?;
        let leaf = leaf(stream.get_ref().1.peer_certificates());
        Ok((Box::new(stream), Some(leaf)))
    }
}

/// TCP keepalive on accepted connections: a silent peer host is declared
/// dead after about idle + interval × retries = 25 s.
const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(10);
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// The remote side's verified leaf certificate (`None` over plain TCP), or
/// the reason it names no identity.
pub(crate) type Certified = Option<Result<Identity, IdentityError>>;

fn leaf(certs: Option<&[CertificateDer<'_>]>) -> Result<Identity, IdentityError> {
    // Mutual TLS always yields the remote chain; an empty one names no one.
    certs
        .and_then(<[_]>::first)
        .ok_or(IdentityError::Missing)
        .and_then(|leaf| Identity::from_certificate(leaf))
}

/// Opens a connection to `addr`: TCP, then TLS if configured. Returns the
/// stream and, over TLS, who the verified certificate names.
pub(crate) async fn open(
    addr: SocketAddr,
    tls: Option<&TlsConfig>,
) -> io::Result<(BoxIo, Certified)> {
    let tcp = TcpStream::connect(addr).await?;
    // Consensus messages are small and latency-bound: never wait for Nagle.
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => tls.connect(tcp, addr).await,
        None => Ok((Box::new(tcp), None)),
    }
}

/// Completes the transport-level accept of `tcp`: TLS if configured.
/// Returns the stream and, over TLS, who the verified certificate names.
pub(crate) async fn accept(
    tcp: TcpStream,
    tls: Option<&TlsConfig>,
) -> io::Result<(BoxIo, Certified)> {
    tcp.set_nodelay(true)?;
    // The acceptor of a peer link only reads, so without probes a link
    // whose peer host vanished would stay open, and over plain TCP keep
    // refusing the restarted peer as a duplicate.
    socket2::SockRef::from(&tcp).set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES),
    )?;
    match tls {
        Some(tls) => tls.accept(tcp).await,
        None => Ok((Box::new(tcp), None)),
    }
}

/// Verifies that a node's certificate chains to the cluster CA, without the
/// host name check of rustls' stock verifier (see the module doc: nodes are
/// dialled by address, and the CA defines membership).
#[derive(Debug)]
struct ClusterCaVerifier {
    roots: Arc<RootCertStore>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ClusterCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.algorithms.all,
        )?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
