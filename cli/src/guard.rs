//! `trexlock acquire NAME -- COMMAND...`: a command that runs only while
//! the lease is held (the guard pattern for a program that knows nothing
//! of leases, as Consul's `lock` runs its child).

use std::sync::Arc;
use std::time::Duration;
use trexlock_lease::{KeepAlive, LeaseHandle};

/// Runs `command` with `TREXLOCK_NAME` and `TREXLOCK_STAMP` set, renewing
/// the lease meanwhile. The command is killed as soon as the lease is no
/// longer valid with `gap` to spare (renewals stopped getting through) or
/// is lost, and on SIGINT/SIGTERM; the lease is released once the command
/// has ended by itself or by a signal.
///
/// # Errors
/// The command cannot be started, exits unsuccessfully, or was killed
/// because the lease was lost (its reason named).
pub async fn run_while_held(
    lease: LeaseHandle,
    gap: Duration,
    command: &[String],
) -> Result<(), String> {
    let (program, args) = command.split_first().ok_or("no command to run")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("TREXLOCK_NAME", lease.name())
        .env("TREXLOCK_STAMP", lease.stamp().to_string())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let lease = Arc::new(lease);
    let mut keep_alive = KeepAlive::start(lease.clone());
    let ended = loop {
        let unsafe_at = lease.expire_time_with_safety_gap(gap);
        tokio::select! {
            status = child.wait() => break status.map_err(|e| e.to_string())?,
            lost = keep_alive.lost() => {
                let _ = child.kill().await;
                return Err(format!("lease lost ({lost}): {program} was killed"));
            }
            // A renewal moves the moment on; if none did, it is time.
            _ = tokio::time::sleep_until(unsafe_at.into()) => {
                if lease.expire_time_with_safety_gap(gap) <= unsafe_at {
                    let _ = child.kill().await;
                    return Err(format!("the lease could not be renewed in time: {program} was killed"));
                }
            }
            _ = crate::shutdown_signal() => {
                let _ = child.kill().await;
                break child.wait().await.map_err(|e| e.to_string())?;
            }
        }
    };
    drop(keep_alive);
    lease.release().await.map_err(|e| e.to_string())?;
    if ended.success() {
        Ok(())
    } else {
        Err(format!("{program} ended with {ended}"))
    }
}
