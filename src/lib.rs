//! # trexlock
//!
//! Embedded multi-Paxos leases for Rust: run trexlock inside 3 or 5 of your
//! own processes and get named, fenced, expiring leases (and mutual
//! exclusion, leader election and work ownership on top) with no lock
//! server to deploy.
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
//!     lease.release().await?;
//! }
//! # Ok(()) }
//! ```
//!
//! The crates behind the facade: [`paxos`] (the consensus core), [`journal`]
//! (durable storage), [`transport`] (TCP and TLS), [`lease`] (table,
//! runtime, API); [`remote`] runs nodes on TCP and connects processes that
//! run no node.
#![deny(missing_docs)]

pub use trexlock_journal as journal;
pub use trexlock_lease as lease;
pub use trexlock_lease::remote;
pub use trexlock_paxos as paxos;
pub use trexlock_transport as transport;

pub use trexlock_journal::{JournalIdentity, RedbJournal};
pub use trexlock_lease::{
    DriftBound, Elected, Election, HolderInfo, InProcessNetwork, KeepAlive, LeaseClient,
    LeaseError, LeaseHandle, MetricsSnapshot, Network, Node, NodeConfig, NodeError, NodeHandle,
    NodeStatus, Observed, Stamp, TryAcquire,
};
pub use trexlock_paxos::{Journal, JournalError, MemJournal, NodeId};
