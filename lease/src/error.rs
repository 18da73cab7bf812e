//! Errors of the lease API and of the node runtime.

use crate::command::{HolderInfo, Refusal, SessionId, Stamp};
use std::net::SocketAddr;
use trexlock_paxos::{JournalError, PaxosError};

/// Why a lease call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// No leader could be reached before the call's deadline (the cluster
    /// is electing one, or this node is cut off from a majority).
    #[error("no leader reachable")]
    NoLeader,
    /// The call did not complete before its deadline. It may still take
    /// effect; a retry with the same handle is safe.
    #[error("timed out")]
    Timeout,
    /// The lease is no longer ours: it expired, was released, or was taken.
    #[error("lease {name} lost (stamp {stamp})")]
    LeaseLost {
        /// Lease name.
        name: String,
        /// Our stamp, now stale.
        stamp: Stamp,
        /// Who holds it now, if anyone.
        holder: Option<HolderInfo>,
    },
    /// A fenced write carried a stamp that is no longer the holder's.
    #[error("stale stamp {stamp} for lease {name}")]
    StaleStamp {
        /// Lease name.
        name: String,
        /// The refused stamp.
        stamp: Stamp,
    },
    /// The lease is held by someone else: an [`acquire`](crate::LeaseClient::acquire)
    /// whose wait ran out (a [`try_acquire`](crate::LeaseClient::try_acquire)
    /// answers [`TryAcquire::Held`](crate::TryAcquire::Held) instead).
    #[error("lease {name} is held by {}", holder.owner)]
    Held {
        /// Lease name.
        name: String,
        /// The holder.
        holder: HolderInfo,
    },
    /// Nobody holds the lease, but its last holder's lease expired with a
    /// lock-delay that has not passed: it is granted to nobody before.
    #[error("lease {name} is blocked by a lock-delay for {remaining_ms} ms more")]
    LockDelay {
        /// Lease name.
        name: String,
        /// Milliseconds of the delay left, as the cluster counts.
        remaining_ms: u64,
    },
    /// No share of a semaphore or read-write lease could be had: every
    /// permit is taken, or a writer holds or waits for it, and the wait
    /// (if any) ran out.
    #[error("no share of {name} is free: {holders} hold it, {waiters} wait")]
    Busy {
        /// The semaphore's or read-write lease's name.
        name: String,
        /// How many held a share.
        holders: u32,
        /// How many waited in line.
        waiters: u32,
    },
    /// A TTL, wait, name, owner or value outside the limits.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The request was not executed: the lease table is full (too many
    /// leases, waiters, sessions, unacknowledged requests or value bytes;
    /// it may succeed later), or the sender may not ask for it
    /// ([`Refusal::NotPermitted`], [`Refusal::OwnerNotCertified`]).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The operating system's random generator failed, so no lease token
    /// could be drawn.
    #[error("no randomness for a lease token: {0}")]
    Random(String),
    /// The node is stopped (shut down, or halted by an error).
    #[error("node stopped")]
    Stopped,
    /// A remote client could connect to none of the cluster's servers;
    /// says why for each (another cluster, another protocol version, a
    /// certificate refused or missing, nobody listening).
    #[error("cannot connect to the cluster: {}", list(.0))]
    Connect(Vec<ConnectFailure>),
    /// The lease session is over: it expired before a keep reached the
    /// cluster, or was closed. Every lease bound to it ended with it.
    #[error("lease session {session} is over (expired or closed); its leases ended with it")]
    SessionLost {
        /// The session.
        session: SessionId,
    },
}

fn list(failures: &[ConnectFailure]) -> String {
    let all: Vec<String> = failures.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// Why a remote client could not connect to one server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnectFailure {
    /// The server refused the handshake and said why: another cluster
    /// ([`Refusal::WrongCluster`](trexlock_transport::Refusal::WrongCluster)),
    /// another protocol version
    /// ([`Refusal::IncompatibleVersion`](trexlock_transport::Refusal::IncompatibleVersion)),
    /// no certificate where it requires TLS
    /// ([`Refusal::TlsRequired`](trexlock_transport::Refusal::TlsRequired)),
    /// a certificate that names no client, too many connections. Also a
    /// server that answered for another cluster.
    #[error("{addr} refused the connection: {refusal}")]
    Refused {
        /// The server.
        addr: SocketAddr,
        /// Its reason.
        refusal: trexlock_transport::Refusal,
    },
    /// The server rejected this client's certificate during the TLS
    /// handshake (it is not signed by the cluster's CA, or has expired).
    #[error("{addr} rejected this client's certificate: {alert}")]
    CertificateRejected {
        /// The server.
        addr: SocketAddr,
        /// The TLS alert it sent.
        alert: String,
    },
    /// The TLS handshake failed on this side: the server's certificate is
    /// not from the cluster's CA or names another node, or the server does
    /// not speak TLS.
    #[error("{addr}: TLS handshake failed: {reason}")]
    Tls {
        /// The server.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// Plain TCP to an address off loopback, without `insecure`.
    #[error(
        "{addr} is not a loopback address: plain TCP refused (configure TLS, or insecure to accept that)"
    )]
    PlainTcpNotLoopback {
        /// The server.
        addr: SocketAddr,
    },
    /// Nobody answered, or the connection broke before the handshake
    /// completed.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The server.
        addr: SocketAddr,
        /// What the operating system or the handshake said.
        reason: String,
    },
}

/// Why a node could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The journal failed; the node stops rather than guess.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The consensus core refused to go on.
    #[error(transparent)]
    Paxos(#[from] PaxosError),
    /// The configuration is invalid.
    #[error("invalid node configuration: {0}")]
    Config(String),
    /// The transport could not start (the listen address cannot be bound,
    /// or its TLS or peer settings are invalid).
    #[error("transport: {0}")]
    Transport(#[from] trexlock_transport::TransportError),
    /// The thread that performs journal syncs ended without being asked
    /// to (it panicked inside the journal).
    #[error("the journal thread ended unexpectedly")]
    JournalThreadEnded,
    /// The operating system refused to start the thread that performs
    /// journal syncs (out of threads or memory): the node does not start.
    #[error("could not start the journal thread: {0}")]
    JournalThreadSpawn(#[source] std::io::Error),
    /// The node's task panicked or was cancelled.
    #[error("node task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    /// The configured journal's place holds a journal of the other
    /// engine: opening the configured one would start an empty journal
    /// beside the node's real one (done on a majority at once, that wipes
    /// the cluster).
    #[error(
        "journal {configured} not opened: {found} is this node's journal in the other engine; \
         configure that engine again, or move that file away to start this node empty"
    )]
    OtherEngineJournal {
        /// The journal the configuration names.
        configured: std::path::PathBuf,
        /// The other engine's journal found beside it.
        found: std::path::PathBuf,
    },
    /// The node was removed from the membership: it serves nothing more.
    /// Wipe its data directory before adding it back as a learner.
    #[error("{node} was removed from the membership (in effect by slot {slot}); it stops serving")]
    Removed {
        /// This node.
        node: trexlock_paxos::NodeId,
        /// The node's commit index when it saw the removal in effect.
        slot: u64,
    },
    /// A chosen command or a snapshot could not be decoded: this build
    /// cannot read the cluster's log.
    #[error("slot {slot}: undecodable {what}: {reason}")]
    Undecodable {
        /// Where.
        slot: u64,
        /// Command or snapshot.
        what: &'static str,
        /// The decoder's complaint.
        reason: String,
    },
}
