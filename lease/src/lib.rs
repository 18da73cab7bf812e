//! # trexlock-lease
//!
//! Named, fenced, expiring leases replicated by multi-Paxos among a few of
//! your own processes.
//!
//! - [`table`]: the lease table, a deterministic state machine that never
//!   reads a clock;
//! - [`time`]: why leases are safe with unsynchronised clocks (read it);
//! - [`Node`]: the runtime (the Paxos core, the table and the journal on
//!   tokio);
//! - [`LeaseClient`], [`LeaseHandle`], [`KeepAlive`], [`Election`]: the API;
//! - [`LeaseSession`]: one TTL and one keep-alive for many leases;
//! - [`FencedMutex`]: a local mutex that only locks while its lease is safe;
//! - [`watch`]: streams of lease events, resumable from a log position;
//! - [`remote`]: nodes over TCP and mutual TLS, and clients in processes
//!   that run no node;
//! - [`observe`]: a node's figures for Prometheus, and readiness.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_lease::{InProcessNetwork, Node, NodeConfig, TryAcquire};
//! use trexlock_paxos::{MemJournal, NodeId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = InProcessNetwork::new();
//! let members = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let mut nodes = Vec::new();
//! for id in &members {
//!     let inbox = network.register(*id);
//!     let config = NodeConfig::new(*id, members.clone());
//!     nodes.push(Node::start(config, Box::new(MemJournal::new()), network.clone(), inbox).await?);
//! }
//! let client = nodes[0].client("worker-1");
//! let TryAcquire::Acquired(lease) = client.try_acquire("nightly-report", Duration::from_secs(10)).await? else {
//!     panic!("nobody else wants it");
//! };
//! assert!(lease.is_valid_with_safety_gap(Duration::from_millis(500)));
//! println!("stamp {} valid until {:?}", lease.stamp(), lease.expire_time_unsafe());
//! lease.release().await?;
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

/// Evaluates to true when the node or client runs the named sabotage
/// (feature `sabotage` only; a constant `false` otherwise).
#[cfg(feature = "sabotage")]
macro_rules! sabotaged {
    ($owner:expr, $variant:ident) => {
        $owner.cfg.sabotage == Some($crate::Sabotage::$variant)
    };
}
#[cfg(not(feature = "sabotage"))]
macro_rules! sabotaged {
    ($owner:expr, $variant:ident) => {
        false
    };
}

pub mod client;
pub mod command;
pub mod election;
pub mod error;
pub mod guard;
mod journal_worker;
pub mod keepalive;
mod metrics;
pub mod network;
pub mod node;
pub mod observe;
pub mod remote;
#[cfg(feature = "sabotage")]
mod sabotage;
pub mod table;
pub mod time;
pub mod watch;

pub use client::{LeaseClient, LeaseHandle, LeaseSession, ListPage, TryAcquire};
pub use command::{
    Body, ClientId, Command, HolderInfo, LeaseToken, ListedHolder, ListedLease, Mode, Op, Outcome,
    Refusal, Request, SessionId, Stamp,
};
pub use election::{Elected, Election, Observed};
pub use error::{ConnectFailure, LeaseError, NodeError};
pub use guard::{FencedGuard, FencedMutex, GuardError};
pub use keepalive::KeepAlive;
pub use metrics::MetricsSnapshot;
pub use network::{InProcessNetwork, Network, PeerMessage};
pub use node::{
    Effect, JournalFile, JournalSync, MemberInfo, Node, NodeConfig, NodeCore, NodeHandle,
    NodeStatus, Role,
};
#[cfg(feature = "sabotage")]
pub use sabotage::Sabotage;
pub use table::LeaseTable;
pub use time::DriftBound;
pub use watch::{LeaderChange, LeaderChanges, Watch, WatchError, WatchEvent, WatchPosition};
