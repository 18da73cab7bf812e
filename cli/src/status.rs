//! `trexlock status`: every member's view of the cluster, as a table for
//! people or JSON for scripts.
//!
//! The servers given are asked first; the members they are configured with
//! are asked next at the addresses those nodes know them by, so one
//! reachable server is enough to see the whole cluster. A member nobody
//! can reach is shown with the reason.

use serde::Serialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use trexlock_lease::ConnectFailure;
use trexlock_lease::remote::{self, RemoteConfig, RemoteStatus};
use trexlock_paxos::NodeId;

/// One member's line.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The member's node id.
    pub node: u16,
    /// Where it was asked.
    pub address: SocketAddr,
    /// What it answered; `None` when it could not be asked.
    pub status: Option<MemberStatus>,
    /// Why it could not be asked.
    pub error: Option<String>,
}

/// What one member answered.
#[derive(Debug, Serialize)]
pub struct MemberStatus {
    /// leader, follower, learner, electing or stopped.
    pub role: String,
    /// The leader it knows.
    pub leader: Option<u16>,
    /// The highest ballot it promised, `counter.node`.
    pub ballot: String,
    /// Highest slot applied.
    pub applied: u64,
    /// Slots behind the highest slot applied by any member that answered.
    pub lag: u64,
    /// Leases held.
    pub leases: u64,
    /// Waiters in all lines.
    pub waiters: u64,
    /// Client sessions remembered.
    pub sessions: u64,
    /// Whether `/ready` would answer 200.
    pub ready: bool,
}

/// Asks every member it can find and prints the table (or JSON).
pub async fn run(config: RemoteConfig, json: bool) -> Result<(), String> {
    let rows = gather(&config).await;
    if rows.iter().all(|r| r.status.is_none()) {
        let failures: Vec<String> = rows.iter().filter_map(|r| r.error.clone()).collect();
        return Err(format!("no member answered: {}", failures.join("; ")));
    }
    if json {
        let text = serde_json::to_string_pretty(&rows).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", table(&rows));
    }
    Ok(())
}

async fn gather(config: &RemoteConfig) -> Vec<Row> {
    let mut answers: BTreeMap<NodeId, (SocketAddr, RemoteStatus)> = BTreeMap::new();
    let mut failed: Vec<(SocketAddr, ConnectFailure)> = Vec::new();
    for addr in &config.servers {
        match remote::status_of(*addr, config).await {
            Ok(s) => {
                answers.insert(s.node, (*addr, s));
            }
            Err(failure) => failed.push((*addr, failure)),
        }
    }
    // Members the answering nodes know of, at the addresses they know.
    let known: BTreeMap<NodeId, SocketAddr> = answers
        .values()
        .flat_map(|(_, s)| s.members.iter().copied())
        .collect();
    let mut rows = Vec::new();
    for (id, addr) in known {
        if answers.contains_key(&id) {
            continue;
        }
        match remote::status_of(addr, config).await {
            Ok(s) if s.node == id => {
                answers.insert(id, (addr, s));
            }
            Ok(s) => rows.push(unreachable(id, addr, format!("{} answered there", s.node))),
            Err(failure) => rows.push(unreachable(id, addr, failure.to_string())),
        }
    }
    let newest = answers.values().map(|(_, s)| s.applied).max().unwrap_or(0);
    rows.extend(answers.into_values().map(|(address, s)| Row {
        node: s.node.0,
        address,
        status: Some(MemberStatus {
            role: s.role,
            leader: s.leader.map(|l| l.0),
            ballot: s.promised.to_string(),
            applied: s.applied,
            lag: newest.saturating_sub(s.applied),
            leases: s.metrics.leases_held,
            waiters: s.metrics.waiters,
            sessions: s.metrics.sessions,
            ready: s.ready,
        }),
        error: None,
    }));
    rows.sort_by_key(|r| r.node);
    // Servers given that answered for nobody (no node there at all).
    if rows.is_empty() {
        rows.extend(failed.into_iter().map(|(addr, failure)| Row {
            node: 0,
            address: addr,
            status: None,
            error: Some(failure.to_string()),
        }));
    }
    rows
}

fn unreachable(id: NodeId, address: SocketAddr, error: String) -> Row {
    Row {
        node: id.0,
        address,
        status: None,
        error: Some(error),
    }
}

/// The rows as an aligned text table.
fn table(rows: &[Row]) -> String {
    let header = [
        "NODE", "ADDRESS", "ROLE", "LEADER", "BALLOT", "APPLIED", "LAG", "LEASES", "WAITERS",
        "SESSIONS", "READY",
    ];
    let mut lines: Vec<Vec<String>> = vec![header.iter().map(|h| (*h).to_owned()).collect()];
    for row in rows {
        let mut line = vec![format!("n{}", row.node), row.address.to_string()];
        match &row.status {
            Some(s) => line.extend([
                s.role.clone(),
                s.leader.map_or("-".into(), |l| format!("n{l}")),
                s.ballot.clone(),
                s.applied.to_string(),
                s.lag.to_string(),
                s.leases.to_string(),
                s.waiters.to_string(),
                s.sessions.to_string(),
                if s.ready { "yes" } else { "no" }.into(),
            ]),
            None => line.push(format!(
                "unreachable: {}",
                row.error.as_deref().unwrap_or("")
            )),
        }
        lines.push(line);
    }
    aligned(&lines)
}

/// Lines of cells as a table: each column as wide as its widest cell (a
/// short line, such as an unreachable member's, does not count), the last
/// cell of a line unpadded.
pub(crate) fn aligned(lines: &[Vec<String>]) -> String {
    let columns = lines.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            lines
                .iter()
                .filter(|l| l.len() == columns)
                .map(|l| l[c].len())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for line in lines {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c + 1 == line.len() {
                    cell.clone()
                } else {
                    format!("{cell:<width$}", width = widths[c])
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_aligns_columns_and_names_why_a_member_is_missing() {
        let rows = vec![
            Row {
                node: 1,
                address: "127.0.0.1:7001".parse().unwrap(),
                status: Some(MemberStatus {
                    role: "leader".into(),
                    leader: Some(1),
                    ballot: "3.n1".into(),
                    applied: 120,
                    lag: 0,
                    leases: 4,
                    waiters: 1,
                    sessions: 2,
                    ready: true,
                }),
                error: None,
            },
            unreachable(
                NodeId(2),
                "127.0.0.1:7002".parse().unwrap(),
                "connection refused".into(),
            ),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("NODE  ADDRESS         ROLE"));
        let applied_at = lines[0].find("APPLIED").unwrap();
        assert_eq!(&lines[1][applied_at..applied_at + 3], "120");
        assert!(lines[1].ends_with("yes"));
        assert!(lines[2].contains("unreachable: connection refused"));
        assert!(!text.contains("Some("), "no Debug output: {text}");
    }
}
