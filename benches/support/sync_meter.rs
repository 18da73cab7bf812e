//! The nodes' journal syncs during a case, read from each node's
//! `/metrics` (`trexlock_journal_sync_seconds`), so that a run's
//! throughput can be read beside the flush latency its nodes met: on a
//! disk whose flushes slow down after an idle gap (see `benches/flush.rs`),
//! that latency, not the code, is what differs between a fast and a slow
//! run of the same case.

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sync count and total seconds of each node when the meter started.
pub struct SyncMeter {
    addrs: Vec<SocketAddr>,
    started: Instant,
    at_start: Vec<Option<(f64, f64)>>,
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
    /// per second and their mean latency (`-` for a node that did not
    /// answer, such as one the case killed):
    /// `SYNC system=S case=C clients=K syncs_per_s=A,B,C mean_us=X,Y,Z`.
    pub async fn report(&self, system: &str, case: &str, clients: usize) {
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        let mut rates = Vec::new();
        let mut means = Vec::new();
        for (addr, start) in self.addrs.iter().zip(&self.at_start) {
            match (start, totals(*addr).await) {
                (Some((count0, sum0)), Some((count1, sum1))) if count1 > *count0 => {
                    let syncs = count1 - count0;
                    rates.push(format!("{:.0}", syncs / secs));
                    means.push(format!("{:.0}", (sum1 - sum0) / syncs * 1e6));
                }
                _ => {
                    rates.push("-".into());
                    means.push("-".into());
                }
            }
        }
        println!(
            "SYNC system={system} case={case} clients={clients} syncs_per_s={} mean_us={}",
            rates.join(","),
            means.join(",")
        );
    }
}

/// (count, sum in seconds) of a node's journal sync histogram.
async fn totals(addr: SocketAddr) -> Option<(f64, f64)> {
    let text = scrape(addr).await?;
    let value = |name: &str| {
        text.lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
    };
    Some((
        value("trexlock_journal_sync_seconds_count")?,
        value("trexlock_journal_sync_seconds_sum")?,
    ))
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
