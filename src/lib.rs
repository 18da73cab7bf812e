//! # trexlock
//!
//! Embedded multi-Paxos leases. See the README for the tour.
#![deny(missing_docs)]

pub use trexlock_paxos as paxos;
