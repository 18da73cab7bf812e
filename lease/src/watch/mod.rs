//! Watches: a stream of what happens to the leases under a name prefix,
//! each event at the log position where it happened.
//!
//! Events come from applying the real lease table: every node applies the
//! same commands in the same order, so every node produces the same events
//! at the same positions ([`crate::table::Event`]: granted with owner and
//! stamp, renewed, released, expired, value written). A watch is served by
//! the node the client talks to, from the events of the slots it applies;
//! expiry is an event at the slot whose command (often a tick) expired the
//! lease.
//!
//! A watch resumes from a position: [`crate::LeaseClient::watch_from`]
//! delivers every event after it. A node keeps a bounded history of recent
//! events ([`crate::NodeConfig::watch_history`] events, and at most
//! [`MAX_HISTORY_VALUE_BYTES`] of names and values); a position older than
//! what the node still has (evicted from the history, or inside a snapshot
//! the node installed instead of applying) ends the watch with
//! [`WatchError::Compacted`]. A watch never skips an event silently: it
//! either delivers every matching event after its position, in log order,
//! or ends with an error saying from where to go on.
//!
//! Everything is bounded and checked before a watcher is registered: the
//! prefix ([`MAX_WATCH_PREFIX_BYTES`]), the watchers per node
//! ([`crate::NodeConfig::max_watchers`]) and per remote connection
//! ([`MAX_WATCHES_PER_CONNECTION`]), and what waits for a watcher: a
//! watcher that falls [`WATCH_BUFFER_BATCHES`] deliveries behind is cut off
//! with [`WatchError::Lagged`] naming where to resume.
//!
//! Watching is a read. Over mutual TLS any authenticated client may watch
//! any prefix (etcd's answer): lease names, owners, stamps and fenced
//! values are readable by any client anyway ([`crate::LeaseClient::read`]),
//! and a holder's secret ([`crate::LeaseToken`]) is never in an event.

mod hub;
mod leader;
mod stream;

pub(crate) use hub::WatchHub;
pub use leader::{LeaderChange, LeaderChanges};
pub use stream::Watch;
pub(crate) use stream::{Delivered, WatchSink};

use crate::table::Event;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest watch prefix, in bytes: a lease name's limit.
pub const MAX_WATCH_PREFIX_BYTES: usize = crate::table::MAX_NAME_BYTES;
/// The default [`crate::NodeConfig::max_watchers`].
pub const DEFAULT_MAX_WATCHERS: usize = 1024;
/// The default [`crate::NodeConfig::watch_history`]: events kept for
/// resumes.
pub const DEFAULT_WATCH_HISTORY: usize = 16_384;
/// Most bytes of names and written values a node's watch history holds:
/// the oldest events are dropped beyond it (as beyond
/// [`crate::NodeConfig::watch_history`] events), so that recent large
/// values cannot hold memory without bound.
pub const MAX_HISTORY_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Most watches one remote connection may hold at a node.
pub const MAX_WATCHES_PER_CONNECTION: usize = 64;
/// Most deliveries waiting for one watcher before it is cut off with
/// [`WatchError::Lagged`].
pub const WATCH_BUFFER_BATCHES: usize = 16;
/// Most events in one delivery.
pub const MAX_BATCH_EVENTS: usize = 64;
/// A delivery stops growing once its values reach this many bytes, so that
/// it fits a client frame (one value is at most
/// [`crate::table::MAX_VALUE_BYTES`]).
pub const MAX_BATCH_VALUE_BYTES: usize = 256 * 1024;

/// Where an event happened in the log: its slot, and its index among the
/// events of that slot (in the order the slot's commands produced them).
/// Positions are the same on every node. A watch resumed "from" a position
/// delivers the events strictly after it.
///
/// Written `SLOT.INDEX`; a bare `SLOT` means "after all of that slot".
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct WatchPosition {
    /// The log slot.
    pub slot: u64,
    /// The event's index within the slot.
    pub event: u32,
}

impl WatchPosition {
    /// The position after every event of `slot` (and of the slots before
    /// it): a watch from here starts with slot `slot + 1`.
    pub const fn after_slot(slot: u64) -> WatchPosition {
        WatchPosition {
            slot,
            event: u32::MAX,
        }
    }
}

impl fmt::Display for WatchPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.event == u32::MAX {
            write!(f, "{}", self.slot)
        } else {
            write!(f, "{}.{}", self.slot, self.event)
        }
    }
}

/// A position that is not `SLOT` or `SLOT.INDEX`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a watch position is SLOT or SLOT.INDEX (two unsigned integers), not {0:?}")]
pub struct BadPosition(pub String);

impl FromStr for WatchPosition {
    type Err = BadPosition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadPosition(s.to_owned());
        match s.split_once('.') {
            None => Ok(WatchPosition::after_slot(s.parse().map_err(|_| bad())?)),
            Some((slot, event)) => Ok(WatchPosition {
                slot: slot.parse().map_err(|_| bad())?,
                event: event.parse().map_err(|_| bad())?,
            }),
        }
    }
}

/// One event of a watch: what happened, and where in the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// Where it happened; pass the last one seen to
    /// [`crate::LeaseClient::watch_from`] to resume after it.
    pub position: WatchPosition,
    /// What happened.
    pub event: Event,
}

/// Why a watch ended. After any of these the stream yields nothing more.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WatchError {
    /// The node no longer has the events after `requested`: it keeps only
    /// those after `oldest` (its history is bounded, and a node that
    /// installed a snapshot never saw the events inside it). Read the
    /// current state (a list) and watch again from now.
    #[error(
        "events after position {requested} are compacted away: this node keeps only events after {oldest}"
    )]
    Compacted {
        /// The position the watch asked to continue after.
        requested: WatchPosition,
        /// The node keeps the events after this position.
        oldest: WatchPosition,
    },
    /// The watcher did not take its events fast enough: more than
    /// [`WATCH_BUFFER_BATCHES`] deliveries waited for it. Resume with
    /// [`crate::LeaseClient::watch_from`] from `resume_from`.
    #[error("the watcher fell too far behind and was cut off; resume from position {resume_from}")]
    Lagged {
        /// Every event up to here was delivered.
        resume_from: WatchPosition,
    },
    /// The prefix is longer than [`MAX_WATCH_PREFIX_BYTES`].
    #[error("watch prefix is longer than {MAX_WATCH_PREFIX_BYTES} bytes")]
    PrefixTooLong,
    /// The node (or the connection) serves its limit of watchers already.
    #[error("the node serves its limit of watchers already")]
    TooManyWatchers,
    /// The node stopped, or the client was dropped.
    #[error("the node stopped serving the watch")]
    Stopped,
    /// The node did not confirm the watch in time.
    #[error("the node did not confirm the watch in time")]
    Timeout,
}

/// What a node sends a watcher, in order: `Started` once, then `Events`
/// until `Ended`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WatchDelivery {
    /// The watch is registered; it delivers the events after `after`.
    Started {
        /// The position the watch starts after.
        after: WatchPosition,
    },
    /// Events, in log order, each after the one before.
    Events(Vec<WatchEvent>),
    /// The watch ended.
    Ended(WatchError),
}

/// Names one watcher at a node. Unique within a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WatchId(pub u64);

impl WatchId {
    /// A new id, never handed out before in this process.
    pub fn fresh() -> WatchId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        WatchId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// What a watch asks for: validated before anything is registered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchRequest {
    /// Lease names start with this (empty: every name).
    pub prefix: String,
    /// Deliver the events after this position; `None`: after the last slot
    /// the node applied.
    pub after: Option<WatchPosition>,
}

impl WatchRequest {
    /// Checks the request's bounds.
    ///
    /// # Errors
    /// [`WatchError::PrefixTooLong`].
    pub fn validate(&self) -> Result<(), WatchError> {
        if self.prefix.len() > MAX_WATCH_PREFIX_BYTES {
            return Err(WatchError::PrefixTooLong);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
