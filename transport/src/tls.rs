//! Mutual TLS (1.3, rustls with the ring provider) and the plain-TCP
//! fallback, behind one boxed stream type.
//!
//! Trust model: the cluster has its own CA. Every node and every remote
//! client presents a certificate chaining to it, and either side refuses a
//! connection whose certificate does not. Certificate names are not checked:
//! nodes are dialled by socket address and membership is what the CA
//! vouches for. Consequently a holder of any certificate from the cluster CA
//! may claim any node id in its hello, so the CA must issue certificates only
//! to the cluster's own processes. Certificates need the serverAuth and
//! clientAuth extended key usages (or none), since every node is both.

use crate::error::TlsError;
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
}

impl fmt::Debug for TlsConfig {
    // Deliberately says nothing about the key material.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsConfig { .. }")
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
    /// malformed, or if the key does not match the certificate.
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
        })
    }

    async fn accept(&self, tcp: TcpStream) -> io::Result<BoxIo> {
        Ok(Box::new(
            TlsAcceptor::from(self.server.clone()).accept(tcp).await?,
        ))
    }

    async fn connect(&self, tcp: TcpStream, addr: SocketAddr) -> io::Result<BoxIo> {
        // The name is required by the API but not checked (see the module doc).
        let name = ServerName::IpAddress(addr.ip().into());
        Ok(Box::new(
            TlsConnector::from(self.client.clone())
                .connect(name, tcp)
                .await?,
        ))
    }
}

/// Opens a connection to `addr`: TCP, then TLS if configured.
pub(crate) async fn open(addr: SocketAddr, tls: Option<&TlsConfig>) -> io::Result<BoxIo> {
    let tcp = TcpStream::connect(addr).await?;
    // Consensus messages are small and latency-bound: never wait for Nagle.
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => tls.connect(tcp, addr).await,
        None => Ok(Box::new(tcp)),
    }
}

/// Completes the transport-level accept of `tcp`: TLS if configured.
pub(crate) async fn accept(tcp: TcpStream, tls: Option<&TlsConfig>) -> io::Result<BoxIo> {
    tcp.set_nodelay(true)?;
    match tls {
        Some(tls) => tls.accept(tcp).await,
        None => Ok(Box::new(tcp)),
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
