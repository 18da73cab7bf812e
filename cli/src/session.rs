//! `trexlock session open|keep|close`: lease sessions from the command
//! line. `open` prints the session's id and secret; `acquire --session ID
//! --token HEX` binds a lease to it; `keep` extends it (and every lease
//! bound to it) once; `close` ends it, releasing them all.

use crate::{ClusterArgs, default_owner, parse_token, shutdown_signal};
use clap::Subcommand;
use std::time::Duration;
use trexlock_lease::{LeaseClient, LeaseError, LeaseToken, SessionId};

/// The `session` subcommands.
#[derive(Subcommand)]
pub enum SessionCommand {
    /// Open a lease session; prints its id and secret token. With --hold,
    /// keeps it alive until interrupted, then closes it (releasing its
    /// leases); without, it runs out after --ttl unless kept.
    Open {
        /// How long the session (and every lease bound to it) lasts after
        /// each keep (e.g. 10s, 500ms).
        #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Who owns the session (keep, close and acquire --session take the
        /// same; under the certificate's name, as for acquire).
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// Keep it alive until interrupted, then close it.
        #[arg(long)]
        hold: bool,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Extend a session, and every lease bound to it, to its TTL from now.
    Keep {
        /// The session's id, as `session open` printed it.
        id: u64,
        /// The session's owner.
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// The session's secret token, as `session open` printed it (hex).
        #[arg(long, value_parser = parse_token)]
        token: LeaseToken,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// End a session now: every lease bound to it is released.
    Close {
        /// The session's id, as `session open` printed it.
        id: u64,
        /// The session's owner.
        #[arg(long, default_value_t = default_owner())]
        owner: String,
        /// The session's secret token, as `session open` printed it (hex).
        #[arg(long, value_parser = parse_token)]
        token: LeaseToken,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
}

/// Runs one `session` subcommand.
///
/// # Errors
/// What went wrong, as text: a session that is over is named as such.
pub async fn run(command: SessionCommand) -> Result<(), String> {
    match command {
        SessionCommand::Open {
            ttl,
            owner,
            hold,
            cluster,
        } => {
            let owner = cluster.owner(Some(owner))?;
            let client = cluster.client(owner.clone()).await?;
            let session = client.open_session(ttl).await.map_err(|e| e.to_string())?;
            let token = session.token().map_err(|e| e.to_string())?;
            println!(
                "session {} owner={owner} ttl_ms={} token={:032x}",
                session.id(),
                ttl.as_millis(),
                token.0
            );
            if hold {
                tokio::select! {
                    lost = session.lost() => return Err(format!("session lost: {lost}")),
                    _ = shutdown_signal() => {}
                }
                let id = session.id();
                session.close().await.map_err(|e| e.to_string())?;
                println!("closed session {id}");
            }
            Ok(())
        }
        SessionCommand::Keep {
            id,
            owner,
            token,
            cluster,
        } => {
            let client = cluster.client(cluster.owner(Some(owner))?).await?;
            answer(client.keep_session(SessionId(id), token).await, id, "kept")
        }
        SessionCommand::Close {
            id,
            owner,
            token,
            cluster,
        } => {
            let client = cluster.client(cluster.owner(Some(owner))?).await?;
            answer(
                client.close_session(SessionId(id), token).await,
                id,
                "closed",
            )
        }
    }
}

/// `acquire NAME --session ID --token HEX`: takes the lease bound to the
/// session, waiting up to `wait`; prints its stamp.
///
/// # Errors
/// The lease is held (and the wait ran out), the session is over, or the
/// call failed, as text.
pub async fn acquire(
    client: &LeaseClient,
    name: &str,
    id: u64,
    token: LeaseToken,
    wait: Duration,
) -> Result<(), String> {
    match client
        .acquire_in_session(name, SessionId(id), token, wait)
        .await
    {
        Ok(stamp) => {
            println!(
                "acquired {name} owner={} stamp={stamp} session={id} token={:032x}",
                client.owner(),
                token.0
            );
            Ok(())
        }
        Err(LeaseError::Held { holder, .. }) => Err(format!(
            "{name} is held by {} (stamp {}, {} ms left)",
            holder.owner, holder.stamp, holder.remaining_ms
        )),
        Err(e) => Err(e.to_string()),
    }
}

fn answer(result: Result<(), LeaseError>, id: u64, done: &str) -> Result<(), String> {
    match result {
        Ok(()) => {
            println!("{done} session {id}");
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}
