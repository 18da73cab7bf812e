//! Leader election on top of a lease: campaign, observe, proclaim, resign.

use crate::client::{LeaseClient, LeaseHandle};
use crate::command::{HolderInfo, Stamp};
use crate::error::LeaseError;
use crate::keepalive::KeepAlive;
use crate::watch::{LeaderChanges, WatchError, WatchPosition};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;

/// An election for one role, named by a lease. At most one campaigner
/// holds the lease at a time; it proclaims a value (its address, say) that
/// observers read.
#[derive(Clone, Debug)]
pub struct Election {
    client: LeaseClient,
    name: String,
    ttl: Duration,
}

/// The current leader as observers see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// The lease holder.
    pub holder: HolderInfo,
    /// What it proclaimed.
    pub value: Option<Bytes>,
}

/// Our leadership. Renewed in the background; once
/// [`Elected::lost`] resolves, stop acting as leader at once.
pub struct Elected {
    handle: Arc<LeaseHandle>,
    keep_alive: KeepAlive,
}

impl Election {
    /// An election named `name`, whose leader's lease lasts `ttl` between
    /// renewals.
    pub fn new(client: LeaseClient, name: impl Into<String>, ttl: Duration) -> Election {
        Election {
            client,
            name: name.into(),
            ttl,
        }
    }

    /// Waits up to `wait` to become leader, then proclaims `value`.
    ///
    /// # Errors
    /// [`LeaseError::Timeout`] if someone else kept leading.
    pub async fn campaign(&self, value: Bytes, wait: Duration) -> Result<Elected, LeaseError> {
        let handle = Arc::new(self.client.acquire(&self.name, self.ttl, wait).await?);
        handle.write_value(value).await?;
        let keep_alive = KeepAlive::start(handle.clone());
        Ok(Elected { handle, keep_alive })
    }

    /// The current leader and its proclaimed value, if any.
    ///
    /// # Errors
    /// As any lease call.
    pub async fn observe(&self) -> Result<Option<Observed>, LeaseError> {
        let (holder, value) = self.client.read(&self.name).await?;
        Ok(holder.map(|holder| Observed { holder, value }))
    }

    /// Every leader change from now on, in log order: elected (owner and
    /// stamp), proclaimed (the value), vacant (resigned or expired). Built
    /// on a watch of the election's lease, so it resumes and fails as a
    /// watch does (see [`crate::watch`]). Read [`Election::observe`] first
    /// for the leader as of now.
    ///
    /// # Errors
    /// As [`LeaseClient::watch`].
    pub async fn changes(&self) -> Result<LeaderChanges, WatchError> {
        LeaderChanges::open(&self.client, &self.name, None).await
    }

    /// Every leader change after `position` (from
    /// [`LeaderChanges::position`], after a disconnect).
    ///
    /// # Errors
    /// As [`LeaseClient::watch_from`].
    pub async fn changes_from(&self, position: WatchPosition) -> Result<LeaderChanges, WatchError> {
        LeaderChanges::open(&self.client, &self.name, Some(position)).await
    }
}

impl Elected {
    /// The leadership's fencing token.
    pub fn stamp(&self) -> Stamp {
        self.handle.stamp()
    }

    /// The lease behind the leadership.
    pub fn lease(&self) -> &LeaseHandle {
        &self.handle
    }

    /// True while we lead, allowing `gap` for pauses.
    pub fn is_leader(&self, gap: Duration) -> bool {
        !self.keep_alive.is_lost() && self.handle.is_valid_with_safety_gap(gap)
    }

    /// Publishes a new value to observers.
    ///
    /// # Errors
    /// [`LeaseError::StaleStamp`] if leadership was lost.
    pub async fn proclaim(&self, value: Bytes) -> Result<(), LeaseError> {
        self.handle.write_value(value).await
    }

    /// Resolves when leadership is lost.
    pub async fn lost(&mut self) -> LeaseError {
        self.keep_alive.lost().await
    }

    /// Steps down: stops renewing and releases the lease so another
    /// campaigner takes over at once.
    ///
    /// # Errors
    /// As [`LeaseHandle::release`].
    pub async fn resign(self) -> Result<(), LeaseError> {
        drop(self.keep_alive);
        self.handle.release().await
    }
}
