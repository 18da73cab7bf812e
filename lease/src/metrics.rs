//! Counters an operator expects. Kept as plain atomics behind
//! [`crate::Node::metrics`] rather than a metrics facade: the library adds
//! no dependency and no global registry, and an application exports the
//! snapshot to whatever system it already uses. Events are also logged
//! with `tracing`.

use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of one node.
#[derive(Debug, Default)]
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
    pub(crate) snapshot_bytes: AtomicU64,
    pub(crate) leases: AtomicU64,
}

impl Metrics {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn set(gauge: &AtomicU64, n: u64) {
        gauge.store(n, Ordering::Relaxed);
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
            snapshot_bytes: get(&self.snapshot_bytes),
            leases: get(&self.leases),
        }
    }
}

/// A point-in-time copy of a node's counters (since it started).
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
    /// Size of the latest snapshot this node took or installed, in bytes.
    pub snapshot_bytes: u64,
    /// Leases held or awaited, as of the last snapshot taken or installed.
    pub leases: u64,
}
