//! Counters of what the transport did, readable at any time.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the transport's counters since it started. Each counter
/// only grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames received from peers and clients and handed to the inbound
    /// channels.
    pub frames_in: u64,
    /// Frames written (and flushed) to peers and clients.
    pub frames_out: u64,
    /// Messages dropped because their outgoing queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they could not be encoded or exceeded the
    /// maximum frame size.
    pub dropped_unencodable: u64,
    /// Connections dropped after the handshake because the remote side sent
    /// a truncated, oversized, garbage or wrong-type frame.
    pub bad_frames: u64,
    /// Incoming connections refused during the TLS or protocol handshake
    /// (wrong cluster, unknown node, other version, bad certificate, a role
    /// the certificate does not name, a duplicate of a connected peer, no
    /// hello in time, malformed hello).
    pub refused_handshakes: u64,
    /// Incoming connections closed on arrival because the node already held
    /// `max_connections`, or `max_connections_per_address` from that
    /// address.
    pub refused_over_limit: u64,
    /// Client connections closed for being idle longer than
    /// `client_idle_timeout`.
    pub idle_clients_closed: u64,
    /// Outgoing connection attempts to peers that failed (unreachable,
    /// TLS failure, refused by the peer, timeout).
    pub connect_failures: u64,
    /// Outgoing peer links re-established after one was lost or failed.
    pub reconnects: u64,
}

/// The live counters behind [`Stats`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_unencodable: AtomicU64,
    pub(crate) bad_frames: AtomicU64,
    pub(crate) refused_handshakes: AtomicU64,
    pub(crate) refused_over_limit: AtomicU64,
    pub(crate) idle_clients_closed: AtomicU64,
    pub(crate) connect_failures: AtomicU64,
    pub(crate) reconnects: AtomicU64,
}

/// Adds `n` to a counter. Relaxed ordering: the counters are statistics and
/// synchronise nothing.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn snapshot(&self) -> Stats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Stats {
            frames_in: get(&self.frames_in),
            frames_out: get(&self.frames_out),
            dropped_queue_full: get(&self.dropped_queue_full),
            dropped_unencodable: get(&self.dropped_unencodable),
            bad_frames: get(&self.bad_frames),
            refused_handshakes: get(&self.refused_handshakes),
            refused_over_limit: get(&self.refused_over_limit),
            idle_clients_closed: get(&self.idle_clients_closed),
            connect_failures: get(&self.connect_failures),
            reconnects: get(&self.reconnects),
        }
    }
}
