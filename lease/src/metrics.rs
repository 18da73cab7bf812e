//! What an operator measures on a node. Every figure is a plain atomic (or,
//! for the rare refusals and the leader's per-peer lag, a short-held lock)
//! written by the node core or its shell, so that counting costs a relaxed
//! add on the request path. [`crate::observe`] exports the same figures to
//! Prometheus; [`crate::Node::metrics`] gives a plain snapshot to
//! applications that use another system. Events are also logged with
//! `tracing`.

use crate::command::Refusal;
use crate::table::LeaseTable;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use trexlock_paxos::NodeId;

/// Bucket bounds (µs) for latencies a healthy cluster keeps within
/// milliseconds: commits and journal syncs.
const LATENCY_BOUNDS_US: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];

/// Bucket bounds (µs) for time spent in a wait line: up to the one-day
/// limit on a wait.
const WAIT_BOUNDS_US: &[u64] = &[
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    60_000_000,
    600_000_000,
    3_600_000_000,
    86_400_000_000,
];

/// A histogram of durations with fixed buckets, updated with relaxed
/// atomic adds (no lock on the hot path).
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [u64],
    /// One count per bound, then the overflow bucket (above every bound).
    counts: Box<[AtomicU64]>,
    sum_us: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [u64]) -> Histogram {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let bucket = self.bounds.partition_point(|b| *b < us);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The cumulative counts per bound, the total count and the sum.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.bounds.len());
        for (bound, count) in self.bounds.iter().zip(self.counts.iter()) {
            cumulative += count.load(Ordering::Relaxed);
            buckets.push((*bound, cumulative));
        }
        let overflow = self.counts[self.bounds.len()].load(Ordering::Relaxed);
        HistogramSnapshot {
            buckets,
            count: cumulative + overflow,
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A histogram's state at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct HistogramSnapshot {
    /// (upper bound in µs, observations at or below it), bounds ascending.
    pub(crate) buckets: Vec<(u64, u64)>,
    /// Every observation, the ones above the last bound included.
    pub(crate) count: u64,
    /// Sum of the observations, µs.
    pub(crate) sum_us: u64,
}

/// Live figures of one node.
#[derive(Debug)]
pub(crate) struct Metrics {
    pub(crate) acquisitions: AtomicU64,
    pub(crate) waits: AtomicU64,
    pub(crate) expiries: AtomicU64,
    pub(crate) renewals: AtomicU64,
    pub(crate) releases: AtomicU64,
    pub(crate) leader_changes: AtomicU64,
    pub(crate) slots_applied: AtomicU64,
    pub(crate) commands_applied: AtomicU64,
    pub(crate) journal_syncs: AtomicU64,
    pub(crate) commit_latency_us_total: AtomicU64,
    pub(crate) commit_latency_count: AtomicU64,
    /// Time from an acquire's arrival to its grant, for acquires that
    /// waited in line.
    pub(crate) acquire_wait: Histogram,
    /// Time from a request's arrival at this node to its final answer.
    pub(crate) commit_latency: Histogram,
    /// Time the journal took to make one write durable.
    pub(crate) journal_sync: Histogram,
    /// Size of the latest snapshot this node took or installed, in bytes.
    pub(crate) snapshot_bytes: AtomicU64,
    /// Leases held or awaited, as of the last snapshot taken or installed.
    pub(crate) leases: AtomicU64,
    leases_held: AtomicU64,
    waiters: AtomicU64,
    sessions: AtomicU64,
    /// Requests answered `Refused`, by reason. Refusals are rare next to
    /// requests, and a reason is known only when one happens.
    refused: Mutex<BTreeMap<&'static str, u64>>,
    /// The leader's view: slots each peer's commit index is behind its own.
    peer_lag: Mutex<BTreeMap<NodeId, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            acquisitions: AtomicU64::new(0),
            waits: AtomicU64::new(0),
            expiries: AtomicU64::new(0),
            renewals: AtomicU64::new(0),
            releases: AtomicU64::new(0),
            leader_changes: AtomicU64::new(0),
            slots_applied: AtomicU64::new(0),
            commands_applied: AtomicU64::new(0),
            journal_syncs: AtomicU64::new(0),
            commit_latency_us_total: AtomicU64::new(0),
            commit_latency_count: AtomicU64::new(0),
            acquire_wait: Histogram::new(WAIT_BOUNDS_US),
            commit_latency: Histogram::new(LATENCY_BOUNDS_US),
            journal_sync: Histogram::new(LATENCY_BOUNDS_US),
            snapshot_bytes: AtomicU64::new(0),
            leases: AtomicU64::new(0),
            leases_held: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
            sessions: AtomicU64::new(0),
            refused: Mutex::new(BTreeMap::new()),
            peer_lag: Mutex::new(BTreeMap::new()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks is a single map operation.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
    }

    /// Counts one request answered with `refusal`.
    pub(crate) fn refused(&self, refusal: Refusal) {
        *lock(&self.refused).entry(refusal.label()).or_default() += 1;
    }

    /// Publishes the table's sizes (three relaxed stores).
    pub(crate) fn table_sizes(&self, table: &LeaseTable) {
        let set = |g: &AtomicU64, n: usize| g.store(n as u64, Ordering::Relaxed);
        set(&self.leases_held, table.held_len());
        set(&self.waiters, table.waiters_len());
        set(&self.sessions, table.sessions_len());
    }

    /// Replaces the leader's per-peer lag (empty on a follower).
    pub(crate) fn set_peer_lag(&self, lag: impl IntoIterator<Item = (NodeId, u64)>) {
        let mut map = lock(&self.peer_lag);
        map.clear();
        map.extend(lag);
    }

    pub(crate) fn refused_by_reason(&self) -> Vec<(&'static str, u64)> {
        lock(&self.refused).iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn peer_lag(&self) -> Vec<(NodeId, u64)> {
        lock(&self.peer_lag).iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(crate) fn snapshot(&self, is_leader: bool) -> MetricsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            is_leader,
            acquisitions: get(&self.acquisitions),
            waits: get(&self.waits),
            expiries: get(&self.expiries),
            renewals: get(&self.renewals),
            releases: get(&self.releases),
            leader_changes: get(&self.leader_changes),
            slots_applied: get(&self.slots_applied),
            commands_applied: get(&self.commands_applied),
            journal_syncs: get(&self.journal_syncs),
            commit_latency_us_total: get(&self.commit_latency_us_total),
            commit_latency_count: get(&self.commit_latency_count),
            refused: lock(&self.refused).values().sum(),
            leases_held: get(&self.leases_held),
            waiters: get(&self.waiters),
            sessions: get(&self.sessions),
            snapshot_bytes: get(&self.snapshot_bytes),
            leases: get(&self.leases),
        }
    }
}

/// A point-in-time copy of a node's counters (since it started) and of
/// its table's sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MetricsSnapshot {
    /// Whether this node leads right now.
    pub is_leader: bool,
    /// Leases granted (immediately or from the wait line).
    pub acquisitions: u64,
    /// Acquire requests that had to wait in line.
    pub waits: u64,
    /// Leases that ran out without release.
    pub expiries: u64,
    /// Renewals (including reentrant acquires).
    pub renewals: u64,
    /// Releases.
    pub releases: u64,
    /// Times this node became or stopped being leader.
    pub leader_changes: u64,
    /// Log slots applied to the lease table (one consensus round each).
    pub slots_applied: u64,
    /// Commands applied (a slot carries a batch of them), ticks included.
    pub commands_applied: u64,
    /// Journal syncs (each covers a group of writes).
    pub journal_syncs: u64,
    /// Sum of request latencies, from arrival at this node to the answer.
    pub commit_latency_us_total: u64,
    /// Requests counted in `commit_latency_us_total`.
    pub commit_latency_count: u64,
    /// Requests that arrived at this node and were answered `Refused`
    /// (invalid, or over one of the table's limits).
    pub refused: u64,
    /// Leases held right now, as of the last applied slot.
    pub leases_held: u64,
    /// Waiters in all lines.
    pub waiters: u64,
    /// Client sessions the table remembers.
    pub sessions: u64,
    /// Size of the latest snapshot this node took or installed, in bytes.
    pub snapshot_bytes: u64,
    /// Leases held or awaited, as of the last snapshot taken or installed.
    pub leases: u64,
}
