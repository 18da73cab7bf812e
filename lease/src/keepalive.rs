//! Background renewal with a "lease lost" signal.

use crate::client::LeaseHandle;
use crate::error::LeaseError;
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
        let (tx, rx) = watch::channel(None);
        let task = tokio::spawn(async move {
            let period = handle.ttl() / 3;
            loop {
                tokio::time::sleep(period).await;
                let error = loop {
                    // Never wait on a renewal past the moment the lease ends.
                    let left = handle
                        .expire_time_unsafe()
                        .saturating_duration_since(Instant::now());
                    let renewed = tokio::time::timeout(left, handle.renew())
                        .await
                        .unwrap_or(Err(LeaseError::Timeout));
                    match renewed {
                        Ok(()) => break None,
                        Err(e @ (LeaseError::LeaseLost { .. } | LeaseError::Stopped)) => {
                            break Some(e);
                        }
                        // The cluster may be electing a leader: keep trying
                        // while the lease can still be ours.
                        Err(e) if Instant::now() >= handle.expire_time_unsafe() => break Some(e),
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                };
                if let Some(e) = error {
                    tracing::warn!(lease = %handle.name(), stamp = %handle.stamp(), error = %e, "lease lost");
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
