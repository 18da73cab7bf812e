//! Background renewal with a "lease lost" signal.

use crate::client::LeaseHandle;
use crate::error::LeaseError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Renews a lease in the background every third of its TTL until dropped
/// or until the lease is lost. Dropping it stops renewing (the lease then
/// runs out, or release it first).
pub struct KeepAlive {
    lost: watch::Receiver<Option<LeaseError>>,
    task: tokio::task::JoinHandle<()>,
}

impl KeepAlive {
    /// Starts renewing `handle`.
    pub fn start(handle: Arc<LeaseHandle>) -> KeepAlive {
        let period = handle.ttl() / 3;
        let what = format!("lease {} (stamp {})", handle.name(), handle.stamp());
        let renewing = handle.clone();
        KeepAlive::repeat(
            period,
            what,
            move || handle.expire_time_unsafe(),
            move || {
                let handle = renewing.clone();
                async move { handle.renew().await }
            },
        )
    }

    /// Calls `renew` every `period` until it fails for good: with
    /// [`LeaseError::LeaseLost`], [`LeaseError::SessionLost`] or
    /// [`LeaseError::Stopped`], or with any error once `deadline()` (when
    /// what it renews ends at the latest) has passed. Failures before then
    /// (a leader election, say) are retried at once, each attempt bounded
    /// by the deadline.
    pub(crate) fn repeat<D, R, F>(
        period: Duration,
        what: String,
        deadline: D,
        renew: R,
    ) -> KeepAlive
    where
        D: Fn() -> Instant + Send + 'static,
        R: Fn() -> F + Send + 'static,
        F: Future<Output = Result<(), LeaseError>> + Send,
    {
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                let error = loop {
                    // Never wait on a renewal past the moment it ends.
                    let left = deadline().saturating_duration_since(Instant::now());
                    let renewed = tokio::time::timeout(left, renew())
                        .await
                        .unwrap_or(Err(LeaseError::Timeout));
                    match renewed {
                        Ok(()) => break None,
                        Err(
                            e @ (LeaseError::LeaseLost { .. }
                            | LeaseError::SessionLost { .. }
                            | LeaseError::Stopped),
                        ) => {
                            break Some(e);
                        }
                        // The cluster may be electing a leader: keep trying
                        // while it can still be ours.
                        Err(e) if Instant::now() >= deadline() => break Some(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                if let Some(e) = error {
                    tracing::warn!(%what, error = %e, "lost");
                    let _ = tx.send(Some(e));
                    return;
                }
            }
        });
        KeepAlive { lost: rx, task }
    }

    /// True once the lease is known lost.
    pub fn is_lost(&self) -> bool {
        self.lost.borrow().is_some()
    }

    /// The signal [`KeepAlive::lost`] waits on: `Some` once the lease is
    /// lost, and kept after the keep-alive is dropped.
    pub(crate) fn lost_signal(&self) -> watch::Receiver<Option<LeaseError>> {
        self.lost.clone()
    }

    /// Resolves when the lease is lost, with the reason. The application
    /// must stop acting as the holder at once.
    pub async fn lost(&mut self) -> LeaseError {
        match self.lost.wait_for(Option::is_some).await {
            Ok(e) => e.clone().expect("checked"),
            Err(_) => LeaseError::Stopped,
        }
    }
}

impl Drop for KeepAlive {
    fn drop(&mut self) {
        self.task.abort();
    }
}
