//! `trexlock acquire`: take a lease (or a share of one, or a lease bound
//! to a session), then keep it while a command runs, keep it until
//! interrupted, or leave it to run out.

use crate::{ClusterArgs, default_owner, guard, parse_token, session, shares, shutdown_signal};
use std::time::Duration;
use trexlock_lease::{LeaseClient, LeaseHandle, LeaseToken, TryAcquire};

/// The arguments of `trexlock acquire` (its help text is the subcommand's,
/// in `main.rs`).
#[derive(clap::Args)]
pub(crate) struct AcquireArgs {
    /// Lease name.
    name: String,
    /// Lease duration (e.g. 10s, 500ms).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Wait in line up to this long if someone else holds it (0s: do not wait).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    wait: Duration,
    /// Who holds the lease (renew and release take the same). With a
    /// client certificate, an owner not under its name is put under it
    /// (<name>/<owner>): the node lets a certificate use no other.
    #[arg(long, default_value_t = default_owner())]
    owner: String,
    /// Keep renewing until interrupted, then release.
    #[arg(long, conflicts_with = "session")]
    hold: bool,
    /// With a COMMAND: kill it once the lease is valid for less than this.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// Run this (after `--`) while the lease is held, renewing it; the
    /// command gets TREXLOCK_NAME and TREXLOCK_STAMP, is killed if the
    /// lease is lost or cannot be renewed in time, and the lease is
    /// released when it ends.
    #[arg(last = true, conflicts_with_all = ["session", "hold"])]
    command: Vec<String>,
    /// If the lease EXPIRES (is not released), grant it to nobody for this long afterwards (at most 60s).
    #[arg(long, value_parser = humantime::parse_duration)]
    lock_delay: Option<Duration>,
    /// Take one permit of a semaphore of this many permits (1 to 64) instead of a lease.
    #[arg(long, conflicts_with_all = ["read", "write", "lock_delay"])]
    permits: Option<u32>,
    /// Take a read-write lease shared, beside other readers.
    #[arg(long, conflicts_with_all = ["write", "lock_delay"])]
    read: bool,
    /// Take a read-write lease exclusively.
    #[arg(long, conflicts_with = "lock_delay")]
    write: bool,
    /// Bind the lease to this lease session (`session open` printed its
    /// id): it lasts as long as the session, whose TTL replaces --ttl.
    #[arg(long, requires = "token")]
    session: Option<u64>,
    /// The session's secret token (hex), with --session.
    #[arg(long, value_parser = parse_token, requires = "session")]
    token: Option<LeaseToken>,
    #[command(flatten)]
    cluster: ClusterArgs,
}

/// Takes the lease `args` names and does with it what they ask.
pub(crate) async fn run(args: AcquireArgs) -> Result<(), String> {
    let owner = args.cluster.owner(Some(args.owner.clone()))?;
    let client = args.cluster.client(owner.clone()).await?;
    if let (Some(id), Some(token)) = (args.session, args.token) {
        return session::acquire(&client, &args.name, id, token, args.wait).await;
    }
    let lease = take(&client, &args).await?;
    if let Some(delay) = args.lock_delay {
        lease
            .set_lock_delay(delay)
            .await
            .map_err(|e| e.to_string())?;
    }
    let token = lease.token().map_err(|e| e.to_string())?;
    let name = &args.name;
    println!(
        "acquired {name} owner={owner} stamp={} token={:032x}",
        lease.stamp(),
        token.0
    );
    if !args.command.is_empty() {
        return guard::run_while_held(lease, args.gap, &args.command).await;
    }
    if args.hold {
        hold_until_interrupted(lease).await?;
        println!("released {name}");
    }
    Ok(())
}

/// A share, a lease without waiting (refused, naming the holder, if it is
/// held), or a lease waited for.
async fn take(client: &LeaseClient, args: &AcquireArgs) -> Result<LeaseHandle, String> {
    let (name, ttl, wait) = (&args.name, args.ttl, args.wait);
    if let Some(mode) = shares::mode(args.permits, args.read, args.write) {
        return client
            .acquire_share(name, mode, ttl, wait)
            .await
            .map_err(|e| e.to_string());
    }
    if !wait.is_zero() {
        return client
            .acquire(name, ttl, wait)
            .await
            .map_err(|e| e.to_string());
    }
    match client
        .try_acquire(name, ttl)
        .await
        .map_err(|e| e.to_string())?
    {
        TryAcquire::Acquired(lease) => Ok(lease),
        TryAcquire::Held(h) => Err(format!(
            "{name} is held by {} (stamp {}, {} ms left)",
            h.owner, h.stamp, h.remaining_ms
        )),
    }
}

/// Renews `lease` until SIGINT or SIGTERM, then releases it; fails if the
/// lease is lost first.
async fn hold_until_interrupted(lease: LeaseHandle) -> Result<(), String> {
    let lease = std::sync::Arc::new(lease);
    let mut keep_alive = trexlock_lease::KeepAlive::start(lease.clone());
    tokio::select! {
        lost = keep_alive.lost() => return Err(format!("lease lost: {lost}")),
        _ = shutdown_signal() => {}
    }
    drop(keep_alive);
    lease.release().await.map_err(|e| e.to_string())
}
