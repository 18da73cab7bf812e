//! The nodes' journal syncs during a case, read from each node's
//! `/metrics` (`trexlock_journal_sync_seconds`), so that a run's
//! throughput can be read beside the flush latency its nodes met: on a
//! disk whose flushes slow down after an idle gap (see `benches/flush.rs`),
//! that latency, not the code, is what differs between a fast and a slow
//! run of the same case. Beside them, the slots applied
//! (`trexlock_slots_applied_total`) and the time from a request's arrival
//! at the node core to its answer (`trexlock_commit_latency_seconds`)
//! split the rest of a request's latency into inside and outside the core.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A node's totals: journal syncs and their seconds, slots applied, and
/// requests answered and their seconds from arrival to answer.
#[derive(Clone, Copy)]
struct Totals {
    syncs: f64,
    sync_secs: f64,
    slots: f64,
    answered: f64,
    answer_secs: f64,
}

/// Every node's totals when the meter started.
pub struct SyncMeter {
    addrs: Vec<SocketAddr>,
    started: Instant,
    at_start: Vec<Option<Totals>>,
}

impl SyncMeter {
    /// Reads every node's totals now.
    pub async fn start(addrs: Vec<SocketAddr>) -> SyncMeter {
        let mut at_start = Vec::new();
        for addr in &addrs {
            at_start.push(totals(*addr).await);
        }
        SyncMeter {
            addrs,
            started: Instant::now(),
            at_start,
        }
    }

    /// Prints, for the span since [`SyncMeter::start`], each node's syncs
    /// per second, their mean latency, the slots it applied per second and
    /// the mean time from a request's arrival to its answer there (`-` for
    /// a node that answered none or did not answer, such as one the case
    /// killed): `SYNC system=S case=C clients=K syncs_per_s=A,B,C
    /// mean_us=X,Y,Z slots_per_s=P,Q,R answer_us=L,M,N`. Operations per
    /// second over slots per second is the batch a slot carried; the
    /// client's latency less `answer_us` is the time outside the node.
    pub async fn report(&self, system: &str, case: &str, clients: usize) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut rates = Vec::new();
        let mut means = Vec::new();
        let mut slots = Vec::new();
        let mut answers = Vec::new();
        for (addr, start) in self.addrs.iter().zip(&self.at_start) {
            match (start, totals(*addr).await) {
                (Some(t0), Some(t1)) if t1.syncs > t0.syncs => {
                    let syncs = t1.syncs - t0.syncs;
                    rates.push(format!("{:.0}", syncs / secs));
                    means.push(format!(
                        "{:.0}",
                        (t1.sync_secs - t0.sync_secs) / syncs * 1e6
                    ));
                    slots.push(format!("{:.0}", (t1.slots - t0.slots) / secs));
                    let answered = t1.answered - t0.answered;
                    answers.push(if answered > 0.0 {
                        format!("{:.0}", (t1.answer_secs - t0.answer_secs) / answered * 1e6)
                    } else {
                        "-".into()
                    });
                }
                _ => {
                    rates.push("-".into());
                    means.push("-".into());
                    slots.push("-".into());
                    answers.push("-".into());
                }
            }
        }
        println!(
            "SYNC system={system} case={case} clients={clients} syncs_per_s={} mean_us={} slots_per_s={} answer_us={}",
            rates.join(","),
            means.join(","),
            slots.join(","),
            answers.join(",")
        );
    }
}

/// A node's totals, from its `/metrics`.
async fn totals(addr: SocketAddr) -> Option<Totals> {
    let text = scrape(addr).await?;
    let value = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some(Totals {
        syncs: value("trexlock_journal_sync_seconds_count")?,
        sync_secs: value("trexlock_journal_sync_seconds_sum")?,
        slots: value("trexlock_slots_applied_total")?,
        answered: value("trexlock_commit_latency_seconds_count")?,
        answer_secs: value("trexlock_commit_latency_seconds_sum")?,
    })
}

async fn scrape(addr: SocketAddr) -> Option<String> {
    let read = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await
            .ok()?;
        let mut body = Vec::new();
        stream.read_to_end(&mut body).await.ok()?;
        String::from_utf8(body).ok()
    };
    tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .ok()
        .flatten()
}
