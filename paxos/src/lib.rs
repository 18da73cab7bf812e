//! # trexlock-paxos
//!
//! A multi-Paxos replica as a pure state machine: no clock reads, no I/O,
//! no async runtime. Time enters as an argument, randomness from a seeded
//! generator, and every call returns a [`Ready`] listing what to persist,
//! send and apply. The same code therefore runs in the node runtime and,
//! step for step, in the deterministic simulator.
//!
//! The protocol is classic multi-Paxos with a stable leader:
//!
//! - ballots `(counter, node)` that never repeat;
//! - phase 1 (Prepare/Promise) once per leadership, covering every slot not
//!   known chosen;
//! - phase 2 (Accept/Accepted) pipelined over a window of slots, each slot
//!   carrying a batch of commands;
//! - Commit messages that announce the commit index and double as
//!   heartbeats; a follower's vote in the leader's ballot tells it the value;
//! - NACKs carrying the higher ballot, so duels end fast, and randomised
//!   election timeouts;
//! - catch-up (values, or a snapshot once compacted) for lagging replicas.
//!
//! ```
//! use std::time::Duration;
//! use trexlock_paxos::{Ballot, Config, Envelope, JournalState, Message, NodeId, Replica};
//!
//! let members = vec![NodeId(1), NodeId(2), NodeId(3)];
//! let config = Config::new(NodeId(1), members);
//! let mut replica = Replica::new(config, JournalState::default(), Duration::ZERO).unwrap();
//! // An empty journal may mean a lost disk: first ask every other member.
//! let ready = replica.tick(Duration::from_millis(1)).unwrap();
//! assert!(ready.messages.iter().all(|e| e.message == Message::Probe));
//! for peer in [NodeId(2), NodeId(3)] {
//!     let message = Message::ProbeReply { promised: Ballot::ZERO, last_slot: 0 };
//!     let reply = Envelope { from: peer, to: NodeId(1), message };
//!     let _ = replica.handle(Duration::from_millis(2), reply).unwrap();
//! }
//! // A brand-new cluster. Nobody leads: after an election timeout it campaigns.
//! let ready = replica.tick(Duration::from_secs(1)).unwrap();
//! assert!(ready.write.promised.is_some(), "the new promise is persisted first");
//! assert_eq!(ready.messages.len(), 2, "then a Prepare goes to each peer");
//! ```
//!
//! A replica that starts from an empty journal is a **learner** until it
//! is safe for it to vote: see `Replica::is_learner` and the module
//! `replica::rejoin` for the rule.
#![deny(missing_docs)]

/// Evaluates to true when the replica runs the named sabotage (feature
/// `sabotage` only; a constant `false` otherwise).
#[cfg(feature = "sabotage")]
macro_rules! sabotaged {
    ($replica:expr, $variant:ident) => {
        $replica.cfg.sabotage == Some($crate::config::Sabotage::$variant)
    };
}
#[cfg(not(feature = "sabotage"))]
macro_rules! sabotaged {
    ($replica:expr, $variant:ident) => {
        false
    };
}

mod config;
mod error;
mod journal;
mod membership;
mod message;
mod replica;
mod types;

#[cfg(feature = "sabotage")]
pub use config::Sabotage;
pub use config::{
    Config, ConfigError, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_MESSAGE_BYTES,
    DEFAULT_MAX_SNAPSHOT_BYTES,
};
pub use error::{PaxosError, ProposeError};
pub use journal::{Journal, JournalError, JournalState, JournalWrite, MemJournal};
pub use membership::{
    CONFIG_DELAY, Change, ChangeError, MAX_ADDRESS_BYTES, MAX_MEMBERS, MAX_VOTERS, Membership,
    SNAPSHOT_FRAME_ROOM,
};
pub use message::{Envelope, Message};
pub use replica::{Leadership, Ready, Refusal, Replica};
pub use types::{
    Ballot, COMMAND_OVERHEAD_BYTES, ENTRY_OVERHEAD_BYTES, LogEntry, MAX_SLOT,
    MESSAGE_OVERHEAD_BYTES, NodeId, Slot, Snapshot, Value, command_bytes,
};
