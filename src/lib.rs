//! # trexlock
//!
//! Embedded multi-Paxos leases for Rust: run trexlock inside 3 or 5 of your
//! own processes and get named, fenced, expiring leases (and mutual
//! exclusion, leader election and work ownership on top) with no lock
//! server to deploy.
//!
//! ## A cluster and a lease
//!
//! ```
//! use std::time::Duration;
//! use trexlock::{InProcessNetwork, MemJournal, Node, NodeConfig, NodeId, TryAcquire};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = InProcessNetwork::new();
//! let members = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let mut nodes = Vec::new();
//! for id in &members {
//!     let config = NodeConfig::new(*id, members.clone());
//!     let inbox = network.register(*id);
//!     nodes.push(Node::start(config, Box::new(MemJournal::new()), network.clone(), inbox).await?);
//! }
//! let client = nodes[0].client("reporter");
//! if let TryAcquire::Acquired(lease) = client.try_acquire("nightly", Duration::from_secs(30)).await? {
//!     // Hand lease.stamp() to every resource you touch; stop before
//!     // lease.expire_time_with_safety_gap(gap).
//!     assert!(lease.is_valid_with_safety_gap(Duration::from_secs(1)));
//!     lease.release().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! For durability start nodes with [`Node::start_with_redb`] (or
//! [`Node::start_with_journal`] and a [`JournalFile`]); across machines run
//! them with [`TcpNode`] (a [`TcpNodeConfig`]: the [`NodeConfig`], a
//! [`TransportConfig`] with its peers, limits and [`TlsConfig`], and the
//! journal), or with the `trexlock` binary of the `trexlock-cli` crate.
//! Processes that run no node call [`remote::connect`] with a
//! [`RemoteConfig`]: its [`RemoteHandle`] offers the same [`LeaseClient`],
//! and a connection that fails says why per server ([`ConnectFailure`]).
//!
//! ## Limits
//!
//! A name or owner is at most [`table::MAX_NAME_BYTES`] /
//! [`table::MAX_OWNER_BYTES`] (256) bytes, a value at most
//! [`table::MAX_VALUE_BYTES`] (64 KiB), a TTL or wait at most a day
//! ([`table::MAX_TTL_MS`], [`table::MAX_WAIT_MS`]); a request beyond them
//! is [`LeaseError::Invalid`] and never reaches the log. The table itself
//! is bounded (leases, sessions, waiters, value bytes): beyond that,
//! [`LeaseError::Refused`]. [`LeaseClient::acquire`] returns within its
//! wait plus [`ACQUIRE_MARGIN`].
//!
//! ## Operating
//!
//! [`observe::register`] adds a node's figures (counters, latency
//! histograms, table sizes, readiness) to a Prometheus registry;
//! [`NodeStatus::is_ready`] is what a readiness probe asks.
//!
//! ## Waiting, renewing, electing
//!
//! ```
//! # use std::time::Duration;
//! # use std::sync::Arc;
//! # use trexlock::{InProcessNetwork, MemJournal, Node, NodeConfig, NodeId};
//! use bytes::Bytes;
//! use trexlock::{Election, KeepAlive};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let network = InProcessNetwork::new();
//! # let members = vec![NodeId(1), NodeId(2), NodeId(3)];
//! # let mut nodes = Vec::new();
//! # for id in &members {
//! #     let inbox = network.register(*id);
//! #     nodes.push(Node::start(NodeConfig::new(*id, members.clone()), Box::new(MemJournal::new()), network.clone(), inbox).await?);
//! # }
//! let worker = nodes[1].client("worker-1");
//! // Wait in line (first come, first served) for up to a minute.
//! let lease = Arc::new(worker.acquire("shard-7", Duration::from_secs(10), Duration::from_secs(60)).await?);
//! // Renew in the background; `lost()` tells you when to stop.
//! let keep_alive = KeepAlive::start(lease.clone());
//! assert!(!keep_alive.is_lost());
//! drop(keep_alive);
//! lease.release().await?;
//!
//! // Leader election: one campaigner leads, observers see what it proclaims.
//! let election = Election::new(nodes[2].client("db-a"), "primary", Duration::from_secs(5));
//! let leader = election.campaign(Bytes::from_static(b"10.0.0.7:5432"), Duration::from_secs(10)).await?;
//! let seen = election.observe().await?.expect("someone leads");
//! assert_eq!(seen.value.as_deref(), Some(&b"10.0.0.7:5432"[..]));
//! leader.resign().await?;
//! # Ok(()) }
//! ```
//!
//! ## Safety, in one paragraph
//!
//! The lease table never reads a clock: time comes only from commands the
//! leader stamps with its own monotonic clock, and it stands still across a
//! change of leader (every outstanding lease keeps its full remaining time).
//! A holder counts its lease from the moment it sent the request, shrunk by
//! the configured clock drift bound ([`DriftBound`], derived in [`time`]); so the cluster never
//! grants a lease to anyone else before the holder's
//! [`LeaseHandle::expire_time_unsafe`], assuming only that clock *rates*
//! stay within the bound. Pauses are covered by the safety gap you pass to
//! [`LeaseHandle::is_valid_with_safety_gap`], and by fencing: every grant's
//! [`Stamp`] is higher than all before it. The argument is written out in
//! [`lease::time`].
//!
//! ## The crates behind the facade
//!
//! [`paxos`] (the sans-I/O consensus core), [`journal`] (durable storage:
//! redb, and a conformance suite for your own [`Journal`]), [`transport`]
//! (framed TCP and mutual TLS), [`lease`] (table, runtime, API), and
//! [`remote`] (nodes on TCP, clients without a node).
#![deny(missing_docs)]

pub use trexlock_journal as journal;
pub use trexlock_lease as lease;
pub use trexlock_lease::{observe, remote, table, time, watch};
pub use trexlock_paxos as paxos;
pub use trexlock_transport as transport;

pub use trexlock_journal::{JournalIdentity, LogJournal, RedbJournal};
pub use trexlock_lease::client::ACQUIRE_MARGIN;
pub use trexlock_lease::remote::{RemoteConfig, RemoteHandle, TcpNode, TcpNodeConfig};
pub use trexlock_lease::{
    ConnectFailure, DriftBound, Elected, Election, FencedGuard, FencedMutex, GuardError,
    HolderInfo, InProcessNetwork, JournalFile, JournalSync, KeepAlive, LeaseClient, LeaseError,
    LeaseHandle, LeaseSession, LeaseToken, ListPage, ListedHolder, ListedLease, MetricsSnapshot,
    Mode, Network, Node, NodeConfig, NodeError, NodeHandle, NodeStatus, Observed, Refusal,
    SessionId, Stamp, TryAcquire,
};
pub use trexlock_lease::{
    LeaderChange, LeaderChanges, Watch, WatchError, WatchEvent, WatchPosition,
};
pub use trexlock_paxos::{Journal, JournalError, MemJournal, NodeId};
pub use trexlock_transport::{TlsConfig, TransportConfig};

/// The README's Rust blocks, compiled as doctests so the API tour cannot
/// drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
