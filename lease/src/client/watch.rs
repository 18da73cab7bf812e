//! Watching leases: a stream of events from the node the client talks to.

use super::LeaseClient;
use crate::watch::{Watch, WatchError, WatchPosition, WatchRequest};

impl LeaseClient {
    /// Watches the leases whose names start with `prefix` (a whole name
    /// watches that lease; empty: every lease), from now: the events of
    /// every slot the node applies from here on, in log order (see
    /// [`crate::watch`]). Through a remote client the watch survives a
    /// broken connection: it resumes on the next node after the last
    /// event it delivered, or ends with [`WatchError::Compacted`] if that
    /// node no longer has the events in between.
    ///
    /// # Errors
    /// [`WatchError::PrefixTooLong`]; [`WatchError::TooManyWatchers`] when
    /// the node serves its limit; [`WatchError::Timeout`] or
    /// [`WatchError::Stopped`] when the node did not confirm the watch.
    pub async fn watch(&self, prefix: &str) -> Result<Watch, WatchError> {
        self.open_watch(prefix, None).await
    }

    /// Watches as [`LeaseClient::watch`] does, from `position`: every
    /// matching event after it (pass the position of the last event seen,
    /// or [`Watch::position`], to resume after a disconnect).
    ///
    /// # Errors
    /// As [`LeaseClient::watch`]; [`WatchError::Compacted`] when the node
    /// no longer has every event after `position`.
    pub async fn watch_from(
        &self,
        prefix: &str,
        position: WatchPosition,
    ) -> Result<Watch, WatchError> {
        self.open_watch(prefix, Some(position)).await
    }

    async fn open_watch(
        &self,
        prefix: &str,
        after: Option<WatchPosition>,
    ) -> Result<Watch, WatchError> {
        let request = WatchRequest {
            prefix: prefix.to_owned(),
            after,
        };
        let calls = self.inner.node.calls.clone();
        Watch::open(calls, request, self.inner.call_timeout).await
    }
}
