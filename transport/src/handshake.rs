//! The handshake every connection starts with, before any message.
//!
//! The connecting side sends a [`Hello`] frame; the accepting side answers
//! with a [`HelloReply`]: its own `Hello`, or the reason it refuses. Both
//! sides check the other's hello. The handshake frames are limited to
//! [`HANDSHAKE_MAX_FRAME_BYTES`] so that an unauthenticated connection cannot
//! make a node reserve a large buffer.
//!
//! Wire compatibility: `protocol_version` is the first field of `Hello`, so a
//! node reads it (a postcard varint) before the rest and can refuse another
//! version even if that version lays out the remaining fields differently.
//! The variant order of [`HelloReply`] and [`Refusal`] is part of the wire
//! format: append, never reorder.
//!
//! Identity: over TLS the accepting side admits a hello only in the role
//! the verified certificate names (see [`Identity`]): a node certificate for
//! that very peer id, and any certificate of the cluster for a client (a
//! client or administrator certificate can never be a peer). The
//! connecting side likewise checks that the acceptor's certificate names
//! the node it answers as.

use crate::codec::{FrameReader, decode_payload, encode_frame};
use crate::error::{CodecError, HandshakeError, TransportError};
use crate::identity::Identity;
use crate::tls::{self, BoxIo, Certified, TlsConfig};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use trexlock_paxos::NodeId;

/// The protocol version this build speaks. Nodes only talk to nodes and
/// clients of the same version. Version 2 binds roles to certificate
/// identities and added refusal reasons that version 1 cannot decode.
/// Version 3 sends snapshots in chunks (`SnapshotRequest`,
/// `SnapshotChunk`) instead of whole inside a catch-up response, and a
/// Paxos promise in parts, each naming its slot range. Version 4
/// changes membership at runtime (a `Release` for a removed node, a
/// `Removed` refusal) and adds the client's watch, member, session and
/// share requests, and each listed lease's holders. Version 5 adds the
/// voter's commit index to a vote (`Accepted`), so that followers under
/// load answer a leader's commit notices only now and then.
pub const PROTOCOL_VERSION: u32 = 5;

/// The frame limit during the handshake (a hello is a few dozen bytes).
pub const HANDSHAKE_MAX_FRAME_BYTES: usize = 4096;

/// The first frame on every connection, in both directions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The sender's [`PROTOCOL_VERSION`]. Must stay the first field.
    pub protocol_version: u32,
    /// The cluster the sender belongs to (or, for a client, wants).
    pub cluster_id: String,
    /// Who the sender is.
    pub role: Role,
}

/// Who is on the other end of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// A cluster member. Its connections carry peer messages one way: from
    /// the connecting node to the accepting one.
    Peer(NodeId),
    /// A process that runs no node. Its connection carries requests to the
    /// node and replies back. The number is the client's self-chosen
    /// instance id, used only in logs.
    Client(u64),
}

/// The accepting side's answer to a [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HelloReply {
    /// The connection is accepted; this is the acceptor's own hello.
    Accepted(Hello),
    /// The connection is refused and will be closed.
    Refused(Refusal),
}

/// Why a node refuses a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The two sides speak different protocol versions.
    #[error("protocol version {offered} is not supported (this node speaks {supported})")]
    IncompatibleVersion {
        /// The acceptor's version.
        supported: u32,
        /// The version in the hello.
        offered: u32,
    },
    /// The hello names another cluster.
    #[error("cluster {offered:?} is not this node's cluster {expected:?}")]
    WrongCluster {
        /// The acceptor's cluster id.
        expected: String,
        /// The cluster id in the hello.
        offered: String,
    },
    /// The hello names a node that is not a member of this cluster (or is
    /// the acceptor itself).
    #[error("{0} is not a member of this cluster")]
    UnknownNode(NodeId),
    /// The hello frame could not be decoded.
    #[error("malformed hello")]
    MalformedHello,
    /// The hello claims a role the sender's verified certificate does not
    /// name (for example: a client certificate claiming to be a peer).
    #[error("the hello claims to be {claimed} but the certificate names {certificate}")]
    NotCertified {
        /// The role in the hello.
        claimed: Role,
        /// What the certificate names, or why it names no identity.
        certificate: String,
    },
    /// Over plain TCP, a second connection claims a peer that already has a
    /// live link; nothing proves which is the real one, so the live link is
    /// kept.
    #[error(
        "{0} is already connected; refusing a second unauthenticated connection claiming it (is another process running with this node id?)"
    )]
    DuplicatePeer(NodeId),
    /// The node holds as many connections as it is configured to.
    #[error("too many connections ({open} open, limit {limit}{})", if *.per_address { " for this address" } else { "" })]
    TooManyConnections {
        /// Connections open when this one arrived.
        open: u64,
        /// The limit that was reached.
        limit: u64,
        /// Whether the limit is the one per remote address.
        per_address: bool,
    },
    /// The node accepts only mutual TLS and the hello came over plain
    /// TCP: the client has no certificate configured.
    #[error(
        "this node requires mutual TLS; the connection came without it (configure the cluster CA and a client certificate)"
    )]
    TlsRequired,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Peer(node) => write!(f, "peer {node}"),
            Role::Client(id) => write!(f, "client {id:#x}"),
        }
    }
}

impl Hello {
    /// The hello of this build for `cluster_id` and `role`.
    pub fn new(cluster_id: impl Into<String>, role: Role) -> Self {
        Hello {
            protocol_version: PROTOCOL_VERSION,
            cluster_id: cluster_id.into(),
            role,
        }
    }

    /// Decodes a hello frame payload, checking the version before anything
    /// else so that a hello from another version is refused with the right
    /// reason rather than as malformed.
    pub fn decode(payload: &[u8]) -> Result<Hello, Refusal> {
        let (offered, _) =
            postcard::take_from_bytes::<u32>(payload).map_err(|_| Refusal::MalformedHello)?;
        if offered != PROTOCOL_VERSION {
            return Err(Refusal::IncompatibleVersion {
                supported: PROTOCOL_VERSION,
                offered,
            });
        }
        decode_payload(payload).map_err(|_| Refusal::MalformedHello)
    }
}

/// What the accepting side checks a hello against.
pub(crate) struct Membership<'a> {
    pub(crate) cluster_id: &'a str,
    pub(crate) node: NodeId,
    pub(crate) peers: &'a BTreeMap<NodeId, SocketAddr>,
}

impl Membership<'_> {
    /// Accepts a peer of this cluster or any client of this cluster; over
    /// TLS (`certified` is set) only in the role the certificate names.
    fn admit(&self, hello: &Hello, certified: &Certified) -> Result<(), Refusal> {
        if hello.cluster_id != self.cluster_id {
            return Err(Refusal::WrongCluster {
                expected: self.cluster_id.to_owned(),
                offered: hello.cluster_id.clone(),
            });
        }
        if let Role::Peer(node) = hello.role
            && !self.peers.contains_key(&node)
        {
            return Err(Refusal::UnknownNode(node));
        }
        let Some(certified) = certified else {
            return Ok(());
        };
        let admitted = match (hello.role, certified) {
            (Role::Peer(claimed), Ok(Identity::Node { cluster, node })) => {
                cluster == self.cluster_id && *node == claimed
            }
            (Role::Client(_), Ok(identity)) => identity.cluster() == self.cluster_id,
            (Role::Peer(_), Ok(Identity::Client { .. } | Identity::Admin { .. })) | (_, Err(_)) => {
                false
            }
        };
        if admitted {
            Ok(())
        } else {
            Err(Refusal::NotCertified {
                claimed: hello.role,
                certificate: match certified {
                    Ok(identity) => identity.uri(),
                    Err(error) => error.to_string(),
                },
            })
        }
    }
}

async fn write_one<W: AsyncWrite + Unpin, T: Serialize>(
    io: &mut W,
    frame: &T,
) -> Result<(), CodecError> {
    let mut buf = BytesMut::new();
    encode_frame(frame, HANDSHAKE_MAX_FRAME_BYTES, &mut buf)?;
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// The accepting side: reads the hello, checks it against the membership
/// and the remote certificate, lets `register` take the connection (or
/// refuse it), answers, and returns the remote role with what `register`
/// returned. A refusal is sent to the remote side before returning.
pub(crate) async fn accept<S: AsyncRead + AsyncWrite + Unpin, T>(
    conn: &mut FrameReader<S>,
    membership: &Membership<'_>,
    certified: &Certified,
    register: impl FnOnce(Role) -> Result<T, Refusal>,
) -> Result<(Role, T), HandshakeError> {
    let payload = match conn.next_raw().await? {
        Some(payload) => payload,
        None => return Err(HandshakeError::Closed),
    };
    let verdict = Hello::decode(&payload).and_then(|hello| {
        membership.admit(&hello, certified)?;
        Ok((hello.role, register(hello.role)?))
    });
    match verdict {
        Ok(admitted) => {
            let own = Hello::new(membership.cluster_id, Role::Peer(membership.node));
            write_one(conn.get_mut(), &HelloReply::Accepted(own)).await?;
            Ok(admitted)
        }
        Err(refusal) => {
            // Best effort: the remote side learns why, then the caller closes.
            let _ = write_one(conn.get_mut(), &HelloReply::Refused(refusal.clone())).await;
            let _ = conn.get_mut().shutdown().await;
            Err(HandshakeError::Refused(refusal))
        }
    }
}

/// The connecting side: sends `hello`, reads the answer, and returns the
/// acceptor's node id. When `expected` is set the acceptor must be that node;
/// over TLS (`certified` is set) its certificate must name the node it
/// answers as.
pub(crate) async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    conn: &mut FrameReader<S>,
    hello: &Hello,
    expected: Option<NodeId>,
    certified: &Certified,
) -> Result<NodeId, HandshakeError> {
    write_one(conn.get_mut(), hello).await?;
    let reply = match conn.next::<HelloReply>().await? {
        Some(reply) => reply,
        None => return Err(HandshakeError::Closed),
    };
    let theirs = match reply {
        HelloReply::Accepted(theirs) => theirs,
        HelloReply::Refused(refusal) => return Err(HandshakeError::RefusedByRemote(refusal)),
    };
    if theirs.protocol_version != PROTOCOL_VERSION {
        return Err(HandshakeError::Refused(Refusal::IncompatibleVersion {
            supported: PROTOCOL_VERSION,
            offered: theirs.protocol_version,
        }));
    }
    if theirs.cluster_id != hello.cluster_id {
        return Err(HandshakeError::Refused(Refusal::WrongCluster {
            expected: hello.cluster_id.clone(),
            offered: theirs.cluster_id,
        }));
    }
    let node = match (theirs.role, expected) {
        (Role::Peer(node), None) => node,
        (Role::Peer(node), Some(want)) if node == want => node,
        (got, expected) => return Err(HandshakeError::UnexpectedRole { expected, got }),
    };
    match certified {
        None => Ok(node),
        Some(Err(error)) => Err(HandshakeError::Identity(error.clone())),
        Some(Ok(Identity::Node {
            cluster,
            node: certified,
        })) if *cluster == hello.cluster_id && *certified == node => Ok(node),
        Some(Ok(identity)) => Err(HandshakeError::Refused(Refusal::NotCertified {
            claimed: theirs.role,
            certificate: identity.uri(),
        })),
    }
}

/// Opens a connection to `addr` (TCP, then TLS if configured) and performs
/// the connecting side of the handshake, all within `timeout`. Returns the
/// framed connection and the acceptor's node id.
pub(crate) async fn dial(
    addr: SocketAddr,
    tls: Option<&TlsConfig>,
    hello: &Hello,
    expected: Option<NodeId>,
    timeout: Duration,
) -> Result<(FrameReader<BoxIo>, NodeId), TransportError> {
    let attempt = async {
        let (io, certified) = tls::open(addr, tls)
            .await
            .map_err(|source| TransportError::Connect { addr, source })?;
        let mut conn = FrameReader::new(io, HANDSHAKE_MAX_FRAME_BYTES);
        let node = connect(&mut conn, hello, expected, &certified)
            .await
            .map_err(|source| TransportError::Handshake { addr, source })?;
        Ok((conn, node))
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or(Err(TransportError::Handshake {
            addr,
            source: HandshakeError::Timeout,
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_of_another_version_is_refused_for_its_version_whatever_follows() {
        let mut payload = postcard::to_stdvec(&(PROTOCOL_VERSION + 1)).unwrap();
        payload.extend_from_slice(b"\xff\xff future layout");
        assert_eq!(
            Hello::decode(&payload),
            Err(Refusal::IncompatibleVersion {
                supported: PROTOCOL_VERSION,
                offered: PROTOCOL_VERSION + 1
            })
        );
    }

    #[test]
    fn an_empty_hello_is_malformed() {
        assert_eq!(Hello::decode(&[]), Err(Refusal::MalformedHello));
    }

    #[test]
    fn membership_admits_members_and_clients_only_of_its_cluster() {
        let peers = BTreeMap::from([(NodeId(2), "127.0.0.1:1".parse().unwrap())]);
        let m = Membership {
            cluster_id: "c",
            node: NodeId(1),
            peers: &peers,
        };
        assert!(
            m.admit(&Hello::new("c", Role::Peer(NodeId(2))), &None)
                .is_ok()
        );
        assert!(m.admit(&Hello::new("c", Role::Client(9)), &None).is_ok());
        assert_eq!(
            m.admit(&Hello::new("c", Role::Peer(NodeId(1))), &None),
            Err(Refusal::UnknownNode(NodeId(1)))
        );
        assert!(matches!(
            m.admit(&Hello::new("d", Role::Client(9)), &None),
            Err(Refusal::WrongCluster { .. })
        ));
    }

    #[test]
    fn over_tls_a_role_is_admitted_only_if_the_certificate_names_it() {
        let peers = BTreeMap::from([
            (NodeId(2), "127.0.0.1:1".parse().unwrap()),
            (NodeId(3), "127.0.0.1:2".parse().unwrap()),
        ]);
        let m = Membership {
            cluster_id: "c",
            node: NodeId(1),
            peers: &peers,
        };
        let node = |cluster: &str, n| {
            Some(Ok(Identity::Node {
                cluster: cluster.into(),
                node: NodeId(n),
            }))
        };
        let client = Some(Ok(Identity::Client {
            cluster: "c".into(),
            name: "alice".into(),
        }));
        let admin = Some(Ok(Identity::Admin {
            cluster: "c".into(),
            name: "ops".into(),
        }));
        let peer2 = Hello::new("c", Role::Peer(NodeId(2)));
        let a_client = Hello::new("c", Role::Client(7));
        assert_eq!(m.admit(&peer2, &node("c", 2)), Ok(()));
        assert_eq!(m.admit(&a_client, &client), Ok(()));
        assert_eq!(m.admit(&a_client, &admin), Ok(()));
        assert_eq!(m.admit(&a_client, &node("c", 3)), Ok(()));
        for wrong in [
            node("c", 3),
            node("other", 2),
            client.clone(),
            admin.clone(),
            Some(Err(crate::error::IdentityError::Missing)),
        ] {
            assert!(
                matches!(m.admit(&peer2, &wrong), Err(Refusal::NotCertified { .. })),
                "{wrong:?}"
            );
        }
        let other_clients = Some(Ok(Identity::Client {
            cluster: "other".into(),
            name: "alice".into(),
        }));
        assert!(matches!(
            m.admit(&a_client, &other_clients),
            Err(Refusal::NotCertified { .. })
        ));
    }
}
