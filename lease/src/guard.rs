//! A local mutex tied to a lease: the TrexLock pattern built in.
//!
//! A lease decides which PROCESS may act; a [`FencedMutex`] decides which
//! task of that process acts right now, and refuses everyone once the lease
//! can no longer be trusted. Its lock
//! - fails with [`GuardError::NotValid`] while the lease is not valid with
//!   the configured safety gap (checked after the local mutex is taken, as
//!   waiting for it takes time), and works again if a renewal brings the
//!   lease back;
//! - fails with [`GuardError::Poisoned`] for good once the lease is known
//!   lost (its [`KeepAlive`] could not renew it, or, for a mutex made with
//!   [`FencedMutex::in_session`], its lease session is lost), like a `std`
//!   mutex poisoned by a panic;
//! - hands the lease's stamp to the code holding it
//!   ([`FencedGuard::stamp`]), to pass to every resource it writes.
//!
//! ```no_run
//! use std::sync::Arc;
//! use std::time::Duration;
//! use trexlock_lease::{FencedMutex, LeaseClient};
//!
//! # async fn run(client: LeaseClient) -> Result<(), Box<dyn std::error::Error>> {
//! let lease = client.acquire("ledger", Duration::from_secs(10), Duration::from_secs(30)).await?;
//! // Renewed in the background; poisoned if a renewal finds the lease lost.
//! let ledger = FencedMutex::with_keep_alive(Arc::new(lease), Duration::from_secs(1), Vec::new());
//! {
//!     let mut entries = ledger.lock().await?;     // fails once the lease is not safe
//!     let stamp = entries.stamp();                // hand it to the resource
//!     entries.push(format!("entry written under stamp {stamp}"));
//! }
//! let (_entries, released) = ledger.release().await;
//! released?;
//! # Ok(()) }
//! ```

use crate::client::LeaseHandle;
use crate::command::Stamp;
use crate::error::LeaseError;
use crate::keepalive::KeepAlive;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, MutexGuard, watch};

/// Why a [`FencedMutex`] refused to lock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    /// The lease ends within the safety gap (or has ended): acting now
    /// could overlap the next holder. A renewal may make it valid again.
    #[error("lease {name} (stamp {stamp}) is not valid with a safety gap of {gap:?}")]
    NotValid {
        /// Lease name.
        name: String,
        /// The lease's stamp.
        stamp: Stamp,
        /// The configured gap.
        gap: Duration,
    },
    /// The lease is lost for good: the mutex will never lock again.
    #[error("lease {name} (stamp {stamp}) was lost: {cause}")]
    Poisoned {
        /// Lease name.
        name: String,
        /// The lost lease's stamp.
        stamp: Stamp,
        /// Why the lease was lost, as the keep-alive learnt it.
        cause: LeaseError,
    },
}

/// A local mutex around `T` that only locks while its lease is valid with
/// a safety gap, and never again once the lease is lost. See the module
/// docs for the rules.
pub struct FencedMutex<T> {
    lease: Arc<LeaseHandle>,
    gap: Duration,
    value: Mutex<T>,
    /// Set once the keep-alive reports the lease lost; `None` when the
    /// mutex renews nothing itself.
    lost: Option<watch::Receiver<Option<LeaseError>>>,
    keep_alive: Option<KeepAlive>,
}

impl<T> std::fmt::Debug for FencedMutex<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedMutex")
            .field("lease", &self.lease.name())
            .field("stamp", &self.lease.stamp())
            .field("gap", &self.gap)
            .field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl<T> FencedMutex<T> {
    /// Ties `value` to `lease` without renewing the lease: locking works
    /// while the lease is valid with `gap` (the caller renews the lease,
    /// or lets it run out).
    pub fn new(lease: Arc<LeaseHandle>, gap: Duration, value: T) -> Self {
        FencedMutex {
            lease,
            gap,
            value: Mutex::new(value),
            lost: None,
            keep_alive: None,
        }
    }

    /// Ties `value` to `lease` and renews the lease in the background
    /// ([`KeepAlive`]); once a renewal finds the lease lost the mutex is
    /// poisoned. Must be called inside a tokio runtime.
    pub fn with_keep_alive(lease: Arc<LeaseHandle>, gap: Duration, value: T) -> Self {
        let keep_alive = KeepAlive::start(lease.clone());
        FencedMutex {
            lost: Some(keep_alive.lost_signal()),
            keep_alive: Some(keep_alive),
            ..FencedMutex::new(lease, gap, value)
        }
    }

    /// Ties `value` to `lease`, bound to `session` (see
    /// [`crate::LeaseSession`]): the session's keep-alive renews it, and
    /// once the session is lost the mutex is poisoned.
    pub fn in_session(
        lease: Arc<LeaseHandle>,
        session: &crate::LeaseSession,
        gap: Duration,
        value: T,
    ) -> Self {
        FencedMutex {
            lost: Some(session.lost_signal()),
            ..FencedMutex::new(lease, gap, value)
        }
    }

    /// The lease this mutex is tied to.
    pub fn lease(&self) -> &LeaseHandle {
        &self.lease
    }

    /// The safety gap every lock checks the lease with.
    pub fn gap(&self) -> Duration {
        self.gap
    }

    /// True once the lease is known lost: every lock fails from then on.
    pub fn is_poisoned(&self) -> bool {
        self.poison().is_some()
    }

    /// Waits for the local mutex, then checks the lease: the guard is
    /// handed out only if the mutex is not poisoned and the lease is valid
    /// with the gap at that moment.
    ///
    /// # Errors
    /// [`GuardError::Poisoned`] once the lease is lost;
    /// [`GuardError::NotValid`] while it is within the gap of its end.
    pub async fn lock(&self) -> Result<FencedGuard<'_, T>, GuardError> {
        let value = self.value.lock().await;
        self.check()?;
        Ok(FencedGuard { mutex: self, value })
    }

    /// As [`FencedMutex::lock`], without waiting: `None` if another task
    /// holds the local mutex.
    ///
    /// # Errors
    /// As [`FencedMutex::lock`].
    pub fn try_lock(&self) -> Result<Option<FencedGuard<'_, T>>, GuardError> {
        let Ok(value) = self.value.try_lock() else {
            return Ok(None);
        };
        self.check()?;
        Ok(Some(FencedGuard { mutex: self, value }))
    }

    /// Resolves with the poison once the lease is lost, so that work in
    /// progress can be abandoned (e.g. in a `tokio::select!`). Never
    /// resolves for a mutex made with [`FencedMutex::new`], which renews
    /// nothing and so learns of no loss by itself.
    pub async fn lost(&self) -> GuardError {
        let Some(lost) = &self.lost else {
            return std::future::pending().await;
        };
        let mut lost = lost.clone();
        let cause = match lost.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone().unwrap_or(LeaseError::Stopped),
            // The keep-alive is gone without a loss: only `release` drops
            // it, and that consumes the mutex, so nobody can wait here.
            Err(_) => LeaseError::Stopped,
        };
        self.poisoned(cause)
    }

    /// Stops renewing, releases the lease and gives back the value (the
    /// value even if the release failed).
    pub async fn release(self) -> (T, Result<(), LeaseError>) {
        drop(self.keep_alive);
        let released = self.lease.release().await;
        (self.value.into_inner(), released)
    }

    fn poison(&self) -> Option<LeaseError> {
        self.lost.as_ref().and_then(|lost| lost.borrow().clone())
    }

    fn poisoned(&self, cause: LeaseError) -> GuardError {
        GuardError::Poisoned {
            name: self.lease.name().to_owned(),
            stamp: self.lease.stamp(),
            cause,
        }
    }

    fn check(&self) -> Result<(), GuardError> {
        if let Some(cause) = self.poison() {
            return Err(self.poisoned(cause));
        }
        if !self.lease.is_valid_with_safety_gap(self.gap) {
            return Err(GuardError::NotValid {
                name: self.lease.name().to_owned(),
                stamp: self.lease.stamp(),
                gap: self.gap,
            });
        }
        Ok(())
    }
}

/// Access to the value of a [`FencedMutex`], handed out while the lease
/// was valid with the gap. Long work should call [`FencedGuard::check`]
/// before each step that touches a protected resource.
pub struct FencedGuard<'a, T> {
    mutex: &'a FencedMutex<T>,
    value: MutexGuard<'a, T>,
}

impl<T> FencedGuard<'_, T> {
    /// The fencing token of the lease: pass it to every resource written
    /// under this guard.
    pub fn stamp(&self) -> Stamp {
        self.mutex.lease.stamp()
    }

    /// The lease the guard was handed out under.
    pub fn lease(&self) -> &LeaseHandle {
        &self.mutex.lease
    }

    /// Checks again, as [`FencedMutex::lock`] did: call it before each
    /// step of long work.
    ///
    /// # Errors
    /// As [`FencedMutex::lock`].
    pub fn check(&self) -> Result<(), GuardError> {
        self.mutex.check()
    }
}

impl<T> Deref for FencedGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> DerefMut for FencedGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for FencedGuard<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FencedGuard")
            .field("stamp", &self.stamp())
            .field("value", &*self.value)
            .finish()
    }
}
