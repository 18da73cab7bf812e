//! Making a cluster's certificates: a CA of its own, and node and client
//! certificates that name their identity (see [`Identity`]). The
//! `trexlock certs` command and the tests both use this module.

use crate::error::{CertError, TlsError};
use crate::identity::{Identity, check_label};
use crate::tls::TlsConfig;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use trexlock_paxos::NodeId;

/// A cluster's certificate authority: it issues the certificates of the
/// cluster's nodes and clients, each naming exactly one identity.
pub struct ClusterCa {
    cluster: String,
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for ClusterCa {
    // Deliberately says nothing about the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterCa {{ cluster: {:?}, .. }}", self.cluster)
    }
}

/// A certificate and its private key, both PEM.
#[derive(Clone)]
pub struct IssuedCert {
    /// Who the certificate names.
    pub identity: Identity,
    /// The certificate (PEM).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM).
    pub key_pem: String,
}

impl fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IssuedCert {{ identity: {}, .. }}", self.identity)
    }
}

impl IssuedCert {
    /// The TLS configuration of the certificate's holder, trusting the CA
    /// certificate `ca_pem`.
    pub fn tls(&self, ca_pem: &str) -> Result<TlsConfig, TlsError> {
        TlsConfig::from_pem(
            ca_pem.as_bytes(),
            self.cert_pem.as_bytes(),
            self.key_pem.as_bytes(),
        )
    }
}

impl ClusterCa {
    /// A new CA with a fresh key for `cluster`.
    pub fn generate(cluster: &str) -> Result<ClusterCa, CertError> {
        check_label(cluster)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(DnType::CommonName, format!("trexlock cluster {cluster} CA"));
        let key = KeyPair::generate()?;
        let cert_pem = params.self_signed(&key)?.pem();
        let key_pem = key.serialize_pem();
        Ok(ClusterCa {
            cluster: cluster.to_owned(),
            cert_pem,
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA of `cluster` from its certificate and key (PEM), to issue
    /// more certificates later.
    pub fn from_pem(cluster: &str, cert_pem: &str, key_pem: &str) -> Result<ClusterCa, CertError> {
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)?;
        Ok(ClusterCa {
            cluster: cluster.to_owned(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            issuer,
        })
    }

    /// The CA certificate (PEM): every node and client trusts it.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM): keep it off the cluster's machines.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate naming node `node` of this CA's cluster.
    pub fn node(&self, node: NodeId) -> Result<IssuedCert, CertError> {
        self.issue(Identity::Node {
            cluster: self.cluster.clone(),
            node,
        })
    }

    /// A certificate naming client `name` of this CA's cluster.
    pub fn client(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.issue(Identity::Client {
            cluster: self.cluster.clone(),
            name: name.to_owned(),
        })
    }

    /// A certificate naming administrator `name` of this CA's cluster: a
    /// client that may also force a lease's release.
    pub fn admin(&self, name: &str) -> Result<IssuedCert, CertError> {
        self.issue(Identity::Admin {
            cluster: self.cluster.clone(),
            name: name.to_owned(),
        })
    }

    /// A certificate naming `identity`, which must belong to this CA's
    /// cluster. It is valid for both TLS server and client use, since a
    /// node both accepts and dials.
    pub fn issue(&self, identity: Identity) -> Result<IssuedCert, CertError> {
        identity.validate()?;
        if identity.cluster() != self.cluster {
            return Err(CertError::OtherCluster {
                ca: self.cluster.clone(),
                identity: identity.uri(),
            });
        }
        let uri = identity.uri();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = vec![SanType::URI(uri.as_str().try_into()?)];
        params.distinguished_name.push(DnType::CommonName, &uri);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(IssuedCert {
            identity,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Writes `content` to a new file; private files are readable by their
/// owner only. An existing file is never overwritten.
fn write_new(path: &Path, content: &str, private: bool) -> Result<(), CertError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let io = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = options.open(path).map_err(io)?;
    file.write_all(content.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

fn read_pem(path: &Path) -> Result<String, CertError> {
    std::fs::read_to_string(path).map_err(|source| CertError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes a cluster's certificates into `dir` (created if missing) and
/// returns the files written: `ca.pem` and `ca.key` (kept and reused when
/// both already exist, so that certificates can be added later),
/// `node-<id>.pem`/`.key` per node, `client-<name>.pem`/`.key` per
/// client and `admin-<name>.pem`/`.key` per administrator. Keys are written readable by their owner only; no existing
/// certificate or key is ever overwritten.
pub fn write_cluster_certs(
    dir: &Path,
    cluster: &str,
    nodes: &[NodeId],
    clients: &[String],
    admins: &[String],
) -> Result<Vec<PathBuf>, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let (ca_cert, ca_key) = (dir.join("ca.pem"), dir.join("ca.key"));
    let mut written = Vec::new();
    let ca = if ca_cert.exists() && ca_key.exists() {
        ClusterCa::from_pem(cluster, &read_pem(&ca_cert)?, &read_pem(&ca_key)?)?
    } else {
        let ca = ClusterCa::generate(cluster)?;
        write_new(&ca_cert, ca.cert_pem(), false)?;
        write_new(&ca_key, ca.key_pem(), true)?;
        written.extend([ca_cert, ca_key]);
        ca
    };
    let identities = nodes
        .iter()
        .map(|&node| (format!("node-{}", node.0), ca.node(node)))
        .chain(
            clients
                .iter()
                .map(|name| (format!("client-{name}"), ca.client(name))),
        )
        .chain(
            admins
                .iter()
                .map(|name| (format!("admin-{name}"), ca.admin(name))),
        );
    for (stem, cert) in identities {
        let cert = cert?;
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        write_new(&cert_path, &cert.cert_pem, false)?;
        write_new(&key_path, &cert.key_pem, true)?;
        written.extend([cert_path, key_path]);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::IdentityError;

    #[test]
    fn names_that_a_uri_cannot_carry_are_refused_before_anything_is_issued() {
        assert!(matches!(
            ClusterCa::generate("my cluster"),
            Err(CertError::Identity(IdentityError::InvalidName(_)))
        ));
        let ca = ClusterCa::generate("orders").unwrap();
        assert!(matches!(
            ca.client("a/b"),
            Err(CertError::Identity(IdentityError::InvalidName(_)))
        ));
        assert!(matches!(
            ca.issue(Identity::Node {
                cluster: "billing".into(),
                node: NodeId(1)
            }),
            Err(CertError::OtherCluster { .. })
        ));
    }

    #[test]
    fn an_issued_certificate_names_exactly_its_identity() {
        let ca = ClusterCa::generate("orders").unwrap();
        let issued = ca.node(NodeId(4)).unwrap();
        let tls = issued.tls(ca.cert_pem()).unwrap();
        assert_eq!(tls.identity().uri(), "trexlock://orders/node/4");
        let issued = ca.admin("ops").unwrap();
        let tls = issued.tls(ca.cert_pem()).unwrap();
        assert_eq!(tls.identity().uri(), "trexlock://orders/admin/ops");
    }
}
