//! `trexlock member list|add|promote|remove`: see and change who votes and
//! who learns. Changes go to the leader (whichever server given leads),
//! one at a time, and return once in effect; they need an admin
//! certificate over TLS (`trexlock certs --admins NAME`).

use crate::ClusterArgs;
use clap::Subcommand;
use serde::Serialize;
use trexlock_lease::Role;
use trexlock_lease::client::{MemberError, MemberList, MemberRefusal};
use trexlock_paxos::NodeId;

/// What `trexlock member` does.
#[derive(Subcommand)]
pub enum MemberCommand {
    /// Print the voters and learners with their addresses and lag (from
    /// the leader), as a table or JSON.
    List {
        /// JSON instead of a table, for scripts.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Add node ID listening at ADDRESS (ip:port) as a learner: it gets
    /// the log and does not vote. Start it with the current members as
    /// its [peers]; promote it once caught up.
    Add {
        /// The new node's id (never used in this cluster, or removed since).
        id: u16,
        /// Where it listens, ip:port.
        address: String,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Make learner ID a voter (refused until it has caught up).
    Promote {
        /// The learner's id.
        id: u16,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Remove voter or learner ID (refused if the voters left could not
    /// form a majority). A removed node stops serving; wipe its data dir
    /// before adding it back.
    Remove {
        /// The member's id.
        id: u16,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Runs one `member` command.
pub(crate) async fn run(command: MemberCommand) -> Result<(), String> {
    match command {
        MemberCommand::List { json, cluster } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            let list = client.members().await.map_err(|e| e.to_string())?;
            if json {
                let text =
                    serde_json::to_string_pretty(&Listing::of(&list)).map_err(|e| e.to_string())?;
                println!("{text}");
            } else {
                print!("{}", table(&list));
            }
            Ok(())
        }
        MemberCommand::Add {
            id,
            address,
            cluster,
        } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            let added = client.add_learner(NodeId(id), &address).await;
            done(added, &format!("added n{id} at {address} as a learner"))
        }
        MemberCommand::Promote { id, cluster } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            done(
                client.promote(NodeId(id)).await,
                &format!("promoted n{id} to voter"),
            )
        }
        MemberCommand::Remove { id, cluster } => {
            let client = cluster.client(cluster.default_owner()?).await?;
            done(client.remove(NodeId(id)).await, &format!("removed n{id}"))
        }
    }
}

fn done(result: Result<(), MemberError>, said: &str) -> Result<(), String> {
    match result {
        Ok(()) => {
            println!("{said}");
            Ok(())
        }
        Err(MemberError::Refused(MemberRefusal::NotPermitted)) => Err(format!(
            "{} (connect with --tls-cert/--tls-key of an admin certificate)",
            MemberRefusal::NotPermitted
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// `member list --json`.
#[derive(Debug, Serialize)]
struct Listing {
    /// The node that answered.
    answered_by: u16,
    /// The leader it knows.
    leader: Option<u16>,
    /// Its commit index.
    committed: u64,
    /// From which slot the newest membership governs.
    effective: u64,
    members: Vec<Row>,
}

#[derive(Debug, Serialize)]
struct Row {
    node: u16,
    role: &'static str,
    address: Option<String>,
    leader: bool,
    /// Slots behind the leader (known when the leader answered).
    lag: Option<u64>,
}

impl Listing {
    fn of(list: &MemberList) -> Listing {
        Listing {
            answered_by: list.node.0,
            leader: list.leader.map(|l| l.0),
            committed: list.committed,
            effective: list.effective,
            members: list
                .members
                .iter()
                .map(|m| Row {
                    node: m.node.0,
                    role: match m.role {
                        Role::Voter => "voter",
                        Role::Learner => "learner",
                    },
                    address: m.address.clone(),
                    leader: list.leader == Some(m.node),
                    lag: m.lag,
                })
                .collect(),
        }
    }
}

/// The members as an aligned table, the leader marked.
fn table(list: &MemberList) -> String {
    let listing = Listing::of(list);
    let mut lines = vec![
        ["NODE", "ROLE", "ADDRESS", "LAG"]
            .map(String::from)
            .to_vec(),
    ];
    for row in &listing.members {
        let role = if row.leader {
            format!("{} (leader)", row.role)
        } else {
            row.role.to_owned()
        };
        lines.push(vec![
            format!("n{}", row.node),
            role,
            row.address.clone().unwrap_or_else(|| "-".into()),
            row.lag.map_or("-".into(), |l| l.to_string()),
        ]);
    }
    crate::status::aligned(&lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use trexlock_lease::MemberInfo;

    #[test]
    fn the_table_marks_the_leader_and_shows_unknown_lag_as_a_dash() {
        let member = |node, role, lag| MemberInfo {
            node: NodeId(node),
            role,
            address: Some(format!("127.0.0.1:700{node}")),
            lag,
        };
        let list = MemberList {
            node: NodeId(1),
            leader: Some(NodeId(1)),
            committed: 300,
            effective: 270,
            members: vec![
                member(1, Role::Voter, Some(0)),
                member(2, Role::Voter, Some(3)),
                member(4, Role::Learner, None),
            ],
        };
        let text = table(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("NODE  ROLE"), "{text}");
        assert!(lines[1].contains("voter (leader)"), "{text}");
        assert!(
            lines[2].ends_with('3') && !lines[2].contains("leader"),
            "{text}"
        );
        assert!(
            lines[3].contains("learner") && lines[3].ends_with('-'),
            "{text}"
        );
        let json = serde_json::to_value(Listing::of(&list)).unwrap();
        assert_eq!(json["members"][2]["role"], "learner");
        assert_eq!(json["members"][0]["leader"], true);
    }
}
