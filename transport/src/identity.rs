//! Identities bound to certificates.
//!
//! A certificate of a trexlock cluster names exactly one identity, as a URI
//! subject alternative name: `trexlock://<cluster>/node/<id>` for a member
//! and `trexlock://<cluster>/client/<name>` for a process that runs no node,
//! or `trexlock://<cluster>/admin/<name>` for an operator's client, which
//! may also take a stuck lease away from its holder. The handshake admits a
//! connection only in the role its verified certificate names, so a
//! certificate proves who its holder is, not just that the cluster CA
//! issued it; the node then learns the identity of each client connection
//! ([`Transport::client_identity`](crate::Transport::client_identity)) to
//! decide what it may ask.

use crate::error::IdentityError;
use std::fmt;
use trexlock_paxos::NodeId;

/// The URI scheme of trexlock identities.
pub const IDENTITY_SCHEME: &str = "trexlock://";

/// Who a certificate says its holder is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Member `node` of `cluster`: may act as that peer, or as a client.
    Node {
        /// The cluster id.
        cluster: String,
        /// The node id.
        node: NodeId,
    },
    /// A client of `cluster` named `name`: may act as a client only.
    Client {
        /// The cluster id.
        cluster: String,
        /// The client's name (letters, digits, `-`, `_`, `.`).
        name: String,
    },
    /// An administrator of `cluster` named `name`: a client that may also
    /// force a lease's release. Never a peer.
    Admin {
        /// The cluster id.
        cluster: String,
        /// The administrator's name (letters, digits, `-`, `_`, `.`).
        name: String,
    },
}

/// Checks that `label` (a cluster id or client name) can be written in an
/// identity URI and read back unchanged.
pub(crate) fn check_label(label: &str) -> Result<(), IdentityError> {
    if valid_label(label) {
        Ok(())
    } else {
        Err(IdentityError::InvalidName(label.to_owned()))
    }
}

fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Identity {
    /// The cluster the identity belongs to.
    pub fn cluster(&self) -> &str {
        match self {
            Identity::Node { cluster, .. }
            | Identity::Client { cluster, .. }
            | Identity::Admin { cluster, .. } => cluster,
        }
    }

    /// Checks that the cluster id and client name can be written in a URI
    /// and read back unchanged.
    pub fn validate(&self) -> Result<(), IdentityError> {
        let (cluster, name) = match self {
            Identity::Node { cluster, .. } => (cluster, None),
            Identity::Client { cluster, name } | Identity::Admin { cluster, name } => {
                (cluster, Some(name))
            }
        };
        std::iter::once(cluster)
            .chain(name)
            .try_for_each(|label| check_label(label))
    }

    /// The identity's URI, as written in a certificate.
    pub fn uri(&self) -> String {
        self.to_string()
    }

    /// Reads a trexlock identity URI; `None` if `uri` is not one.
    pub fn parse_uri(uri: &str) -> Option<Identity> {
        let rest = uri.strip_prefix(IDENTITY_SCHEME)?;
        let mut parts = rest.split('/');
        let (cluster, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || !valid_label(cluster) {
            return None;
        }
        let cluster = cluster.to_owned();
        match kind {
            // Canonical decimal only, so that one node has one URI.
            "node" => {
                let node: u16 = name.parse().ok()?;
                (node.to_string() == name).then_some(Identity::Node {
                    cluster,
                    node: NodeId(node),
                })
            }
            "client" if valid_label(name) => Some(Identity::Client {
                cluster,
                name: name.to_owned(),
            }),
            "admin" if valid_label(name) => Some(Identity::Admin {
                cluster,
                name: name.to_owned(),
            }),
            _ => None,
        }
    }

    /// The one trexlock identity named by a DER certificate's URI subject
    /// alternative names. Fails if the certificate cannot be parsed, names
    /// none, or names several (a certificate must not speak for two).
    pub fn from_certificate(der: &[u8]) -> Result<Identity, IdentityError> {
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::Unparsable(e.to_string()))?;
        let mut found = None;
        for name in san.iter().flat_map(|san| san.value.general_names.iter()) {
            let x509_parser::extensions::GeneralName::URI(uri) = name else {
                continue;
            };
            if !uri.starts_with(IDENTITY_SCHEME) {
                continue;
            }
            let identity = Identity::parse_uri(uri)
                .ok_or_else(|| IdentityError::Malformed(uri.to_string()))?;
            if found.replace(identity).is_some() {
                return Err(IdentityError::Several);
            }
        }
        found.ok_or(IdentityError::Missing)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Identity::Node { cluster, node } => {
                write!(f, "{IDENTITY_SCHEME}{cluster}/node/{}", node.0)
            }
            Identity::Client { cluster, name } => {
                write!(f, "{IDENTITY_SCHEME}{cluster}/client/{name}")
            }
            Identity::Admin { cluster, name } => {
                write!(f, "{IDENTITY_SCHEME}{cluster}/admin/{name}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_uris_round_trip() {
        for identity in [
            Identity::Node {
                cluster: "orders".into(),
                node: NodeId(3),
            },
            Identity::Client {
                cluster: "orders".into(),
                name: "billing-1".into(),
            },
            Identity::Admin {
                cluster: "orders".into(),
                name: "ops".into(),
            },
        ] {
            assert_eq!(Identity::parse_uri(&identity.uri()), Some(identity));
        }
    }

    #[test]
    fn uris_that_are_not_canonical_identities_are_rejected() {
        for uri in [
            "https://orders/node/1",
            "trexlock://orders/node/01",
            "trexlock://orders/node/70000",
            "trexlock://orders/node/1/extra",
            "trexlock://orders/peer/1",
            "trexlock:///node/1",
            "trexlock://orders/client/",
            "trexlock://orders/client/a b",
            "trexlock://orders/admin/",
            "trexlock://orders/admin/a/b",
        ] {
            assert_eq!(Identity::parse_uri(uri), None, "{uri}");
        }
    }
}
