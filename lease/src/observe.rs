//! A node's figures for Prometheus, and the health and readiness an
//! orchestrator probes.
//!
//! [`register`] adds one collector to a [`prometheus::Registry`]: the
//! `trexlock` binary serves that registry on `/metrics`, and an
//! application that embeds a node registers into its own registry and
//! serves it beside its own metrics. The collector reads the node's
//! atomics when scraped; nothing is computed on the request path. Every
//! family carries a `node` label, so several nodes in one process (or one
//! registry) stay apart.
//!
//! | family | type | meaning |
//! | --- | --- | --- |
//! | `trexlock_grants_total` | counter | leases granted (at once or from the line) |
//! | `trexlock_waits_total` | counter | acquires that waited in line |
//! | `trexlock_expiries_total` | counter | leases that ran out unreleased |
//! | `trexlock_renewals_total` | counter | renewals |
//! | `trexlock_releases_total` | counter | releases |
//! | `trexlock_leader_changes_total` | counter | times this node became or stopped being leader |
//! | `trexlock_refused_requests_total{reason}` | counter | requests refused, by [`Refusal::label`](crate::Refusal::label) |
//! | `trexlock_slots_applied_total` | counter | log slots applied |
//! | `trexlock_journal_syncs_total` | counter | journal syncs |
//! | `trexlock_acquire_wait_seconds` | histogram | arrival to grant, for acquires that waited |
//! | `trexlock_commit_latency_seconds` | histogram | a request's arrival at this node to its answer |
//! | `trexlock_journal_sync_seconds` | histogram | one journal write made durable |
//! | `trexlock_leases_held` | gauge | leases with a holder |
//! | `trexlock_waiters` | gauge | waiters in all lines |
//! | `trexlock_sessions` | gauge | client sessions the table remembers |
//! | `trexlock_applied_slot` | gauge | highest slot applied |
//! | `trexlock_leader_committed_slot` | gauge | highest slot the leader announced chosen |
//! | `trexlock_is_leader` | gauge | 1 while this node leads |
//! | `trexlock_ready` | gauge | 1 while [`NodeStatus::is_ready`] |
//! | `trexlock_peer_lag_slots{peer}` | gauge | on the leader: slots each peer is behind |
//! | `trexlock_journal_bytes` | gauge | size of the journal file (nodes on a [`JournalFile`](crate::JournalFile)) |
//!
//! ```
//! use trexlock_lease::{InProcessNetwork, Node, NodeConfig, observe};
//! use trexlock_paxos::{MemJournal, NodeId};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let network = InProcessNetwork::new();
//! let inbox = network.register(NodeId(1));
//! let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
//! let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
//! let registry = prometheus::Registry::new();
//! observe::register(&registry, &node.handle())?;
//! let text = observe::encode(&registry)?;
//! assert!(text.contains("# TYPE trexlock_grants_total counter"));
//! # Ok(()) }
//! ```

/// The Prometheus client library these collectors are written for, so an
/// application can name the same `Registry` type.
pub use prometheus;

use crate::metrics::{HistogramSnapshot, Metrics};
use crate::node::{NodeHandle, NodeStatus};
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::sync::Arc;

/// Registers `node`'s figures (the table above) in `registry`.
///
/// # Errors
/// [`prometheus::Error::AlreadyReg`] when this node's figures are in
/// `registry` already.
pub fn register(registry: &prometheus::Registry, node: &NodeHandle) -> prometheus::Result<()> {
    registry.register(Box::new(NodeCollector::new(node.clone())?))
}

/// `registry`'s metrics in the Prometheus text format (version 0.0.4,
/// content type [`prometheus::TEXT_FORMAT`]).
///
/// # Errors
/// A metric the encoder refuses (none of this crate's).
pub fn encode(registry: &prometheus::Registry) -> prometheus::Result<String> {
    prometheus::TextEncoder::new().encode_to_string(&registry.gather())
}

/// Collects one node's figures when the registry is gathered.
pub struct NodeCollector {
    node: NodeHandle,
    descs: Vec<Desc>,
}

struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    /// The variable label, if the family has one besides `node`.
    label: Option<&'static str>,
}

const fn family(
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    label: Option<&'static str>,
) -> Family {
    Family {
        name,
        help,
        kind,
        label,
    }
}

const COUNTER: MetricType = MetricType::COUNTER;
const GAUGE: MetricType = MetricType::GAUGE;
const HISTOGRAM: MetricType = MetricType::HISTOGRAM;

/// Every family, in the order they are collected.
const FAMILIES: &[Family] = &[
    family(
        "trexlock_grants_total",
        "Leases granted, at once or from the wait line.",
        COUNTER,
        None,
    ),
    family(
        "trexlock_waits_total",
        "Acquire requests that waited in line.",
        COUNTER,
        None,
    ),
    family(
        "trexlock_expiries_total",
        "Leases that ran out without being released.",
        COUNTER,
        None,
    ),
    family(
        "trexlock_renewals_total",
        "Lease renewals, reentrant acquires included.",
        COUNTER,
        None,
    ),
    family("trexlock_releases_total", "Lease releases.", COUNTER, None),
    family(
        "trexlock_leader_changes_total",
        "Times this node became or stopped being leader.",
        COUNTER,
        None,
    ),
    family(
        "trexlock_refused_requests_total",
        "Requests answered Refused, by reason.",
        COUNTER,
        Some("reason"),
    ),
    family(
        "trexlock_slots_applied_total",
        "Log slots applied to the lease table.",
        COUNTER,
        None,
    ),
    family(
        "trexlock_journal_syncs_total",
        "Journal syncs (each covers a group of writes).",
        COUNTER,
        None,
    ),
    family(
        "trexlock_acquire_wait_seconds",
        "Time from an acquire's arrival to its grant, for acquires that waited in line.",
        HISTOGRAM,
        None,
    ),
    family(
        "trexlock_commit_latency_seconds",
        "Time from a request's arrival at this node to its answer.",
        HISTOGRAM,
        None,
    ),
    family(
        "trexlock_journal_sync_seconds",
        "Time the journal took to make one write durable.",
        HISTOGRAM,
        None,
    ),
    family(
        "trexlock_leases_held",
        "Leases with a holder, as of the last applied slot.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_waiters",
        "Waiters in all wait lines.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_sessions",
        "Client sessions the lease table remembers.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_applied_slot",
        "Highest log slot applied to the lease table.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_leader_committed_slot",
        "Highest log slot the leader announced chosen.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_is_leader",
        "1 while this node leads, else 0.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_ready",
        "1 while this node knows a leader and has caught up, else 0.",
        GAUGE,
        None,
    ),
    family(
        "trexlock_peer_lag_slots",
        "On the leader: slots each peer's commit index is behind.",
        GAUGE,
        Some("peer"),
    ),
    family(
        "trexlock_journal_bytes",
        "Size of the journal file in bytes.",
        GAUGE,
        None,
    ),
];

impl NodeCollector {
    /// A collector of `node`'s figures.
    ///
    /// # Errors
    /// None in practice: the family names and labels are valid.
    pub fn new(node: NodeHandle) -> prometheus::Result<NodeCollector> {
        let id = node.id().0.to_string();
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = f.label.iter().map(|l| (*l).to_owned()).collect();
                let constant = [("node".to_owned(), id.clone())].into();
                Desc::new(f.name.to_owned(), f.help.to_owned(), labels, constant)
            })
            .collect::<prometheus::Result<Vec<_>>>()?;
        Ok(NodeCollector { node, descs })
    }
}

/// One sample's labels: `node` first, then the family's own.
fn labels(node: &str, extra: Option<(&str, String)>) -> Vec<proto::LabelPair> {
    let pair = |name: &str, value: String| {
        let mut p = proto::LabelPair::default();
        p.set_name(name.to_owned());
        p.set_value(value);
        p
    };
    let mut out = vec![pair("node", node.to_owned())];
    out.extend(extra.map(|(name, value)| pair(name, value)));
    out
}

/// What one family holds at a scrape.
enum Sample {
    /// Nothing to report (a node with no journal file).
    Absent,
    Value(f64),
    Labelled(Vec<(String, f64)>),
    Histogram(HistogramSnapshot),
}

fn metric(f: &Family, node: &str, sample: Sample) -> Vec<proto::Metric> {
    let scalar = |labels: Vec<proto::LabelPair>, v: f64| {
        let mut m = proto::Metric::default();
        m.set_label(labels);
        if f.kind == COUNTER {
            let mut c = proto::Counter::default();
            c.set_value(v);
            m.set_counter(c);
        } else {
            let mut g = proto::Gauge::default();
            g.set_value(v);
            m.set_gauge(g);
        }
        m
    };
    match sample {
        Sample::Absent => Vec::new(),
        Sample::Value(v) => vec![scalar(labels(node, None), v)],
        Sample::Labelled(values) => values
            .into_iter()
            .map(|(value, v)| scalar(labels(node, f.label.map(|l| (l, value))), v))
            .collect(),
        Sample::Histogram(h) => {
            let mut hist = proto::Histogram::default();
            hist.set_sample_count(h.count);
            hist.set_sample_sum(h.sum_us as f64 / 1e6);
            hist.set_bucket(
                h.buckets
                    .iter()
                    .map(|(bound_us, cumulative)| {
                        let mut b = proto::Bucket::default();
                        b.set_upper_bound(*bound_us as f64 / 1e6);
                        b.set_cumulative_count(*cumulative);
                        b
                    })
                    .collect(),
            );
            let mut m = proto::Metric::default();
            m.set_label(labels(node, None));
            m.set_histogram(hist);
            vec![m]
        }
    }
}

impl NodeCollector {
    /// Every family's sample, in [`FAMILIES`] order.
    fn samples(&self, metrics: &Metrics, status: &NodeStatus) -> Vec<Sample> {
        let s = metrics.snapshot(status.is_leader);
        let n = |v: u64| Sample::Value(v as f64);
        let flag = |b: bool| Sample::Value(if b { 1.0 } else { 0.0 });
        let refused = metrics
            .refused_by_reason()
            .into_iter()
            .map(|(reason, count)| (reason.to_owned(), count as f64))
            .collect();
        let lag = metrics
            .peer_lag()
            .into_iter()
            .map(|(peer, lag)| (peer.0.to_string(), lag as f64))
            .collect();
        let journal = self
            .node
            .journal
            .as_ref()
            .and_then(|path| std::fs::metadata(path).ok())
            .map_or(Sample::Absent, |m| n(m.len()));
        vec![
            n(s.acquisitions),
            n(s.waits),
            n(s.expiries),
            n(s.renewals),
            n(s.releases),
            n(s.leader_changes),
            Sample::Labelled(refused),
            n(s.slots_applied),
            n(s.journal_syncs),
            Sample::Histogram(metrics.acquire_wait.snapshot()),
            Sample::Histogram(metrics.commit_latency.snapshot()),
            Sample::Histogram(metrics.journal_sync.snapshot()),
            n(s.leases_held),
            n(s.waiters),
            n(s.sessions),
            n(status.applied),
            n(status.leader_committed),
            flag(status.is_leader),
            flag(status.is_ready()),
            Sample::Labelled(lag),
            journal,
        ]
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics: &Arc<Metrics> = &self.node.metrics;
        let status = self.node.status();
        let node = self.node.id().0.to_string();
        FAMILIES
            .iter()
            .zip(self.samples(metrics, &status))
            .map(|(f, sample)| {
                let mut family = MetricFamily::default();
                family.set_name(f.name.to_owned());
                family.set_help(f.help.to_owned());
                family.set_field_type(f.kind);
                family.set_metric(metric(f, &node, sample));
                family
            })
            .filter(|family| !family.get_metric().is_empty())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ClientId, LeaseToken, Op, Request};
    use crate::node::{NodeConfig, NodeCore};
    use std::time::Duration;
    use trexlock_paxos::{JournalState, NodeId};

    #[test]
    fn a_request_refused_at_admission_is_counted_under_its_reason() {
        let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
        let paxos = config.paxos_config(1);
        let mut core =
            NodeCore::new(config, paxos, JournalState::default(), Duration::ZERO).unwrap();
        let acquire = |owner: &str| Request {
            client: ClientId(7),
            request: 1,
            acked_below: 1,
            op: Op::Acquire {
                name: "job".into(),
                owner: owner.into(),
                token: LeaseToken(1),
                ttl_ms: 1_000,
                wait_ms: 0,
            },
        };
        core.request(Duration::ZERO, acquire(""));
        core.request(Duration::ZERO, acquire(&"x".repeat(300)));
        core.request(Duration::ZERO, acquire(""));
        let metrics = core.shared_metrics();
        assert_eq!(
            metrics.refused_by_reason(),
            vec![("empty_owner", 2), ("owner_too_long", 1)]
        );
        assert_eq!(core.metrics().refused, 3);
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_count_what_no_bound_holds() {
        let metrics = Metrics::default();
        for ms in [0, 1, 3, 40, 20_000] {
            metrics.commit_latency.observe(Duration::from_millis(ms));
        }
        let h = metrics.commit_latency.snapshot();
        assert_eq!(h.count, 5);
        assert_eq!(h.sum_us, 20_044_000);
        let at = |bound_us: u64| h.buckets.iter().find(|(b, _)| *b == bound_us).unwrap().1;
        assert_eq!(at(100), 1);
        assert_eq!(at(1_000), 2);
        assert_eq!(at(5_000), 3);
        assert_eq!(at(50_000), 4);
        assert_eq!(h.buckets.last().unwrap().1, 4, "20 s is above every bound");
        assert!(h.buckets.windows(2).all(|w| w[0].1 <= w[1].1));
    }
}
