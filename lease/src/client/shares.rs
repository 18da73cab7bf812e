//! Semaphores and read-write leases through a client session.
//!
//! Each share is a [`LeaseHandle`] with its own stamp: renew, release,
//! check validity and fence with it exactly as with a lease. A name is
//! one kind at a time (see [`Op::AcquireShare`]).

use super::{ACQUIRE_MARGIN, Answer, LeaseClient, LeaseHandle, millis, unexpected};
use crate::command::{Mode, Op, Outcome};
use crate::error::LeaseError;
use std::time::{Duration, Instant};

impl LeaseClient {
    /// Takes one of the `permits` permits of the semaphore `name` for
    /// `ttl`, waiting in line (first come, first served) for up to `wait`
    /// (zero: not at all). At most `permits` holders hold one at any
    /// instant; each gets its own stamp.
    ///
    /// ```
    /// use std::time::Duration;
    /// use trexlock_lease::{InProcessNetwork, Node, NodeConfig};
    /// use trexlock_paxos::{MemJournal, NodeId};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let network = InProcessNetwork::new();
    /// let inbox = network.register(NodeId(1));
    /// let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
    /// let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
    /// let (ttl, wait) = (Duration::from_secs(10), Duration::ZERO);
    /// let a = node.client("a").acquire_permit("gpus", 2, ttl, wait).await?;
    /// let b = node.client("b").acquire_permit("gpus", 2, ttl, wait).await?;
    /// assert!(b.stamp() > a.stamp());
    /// assert!(node.client("c").acquire_permit("gpus", 2, ttl, wait).await.is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LeaseError::Busy`] when no permit came free in time;
    /// [`LeaseError::Invalid`] for permits of 0 or over
    /// [`crate::table::MAX_PERMITS`]; [`LeaseError::Refused`] with
    /// [`crate::Refusal::KindMismatch`] when `name` is a lease, a
    /// read-write lease or a semaphore of another size; otherwise as
    /// [`LeaseClient::acquire`].
    pub async fn acquire_permit(
        &self,
        name: &str,
        permits: u32,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseHandle, LeaseError> {
        self.acquire_share(name, Mode::Permit { permits }, ttl, wait)
            .await
    }

    /// Takes the read-write lease `name` shared (a reader) for `ttl`,
    /// waiting up to `wait`. Readers hold it together while no writer
    /// does; a writer waiting in line holds back every reader that asks
    /// after it.
    ///
    /// # Errors
    /// As [`LeaseClient::acquire_permit`]; [`crate::Refusal::OtherModeHeld`]
    /// when this session writes it (no downgrade: release first).
    pub async fn acquire_read(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseHandle, LeaseError> {
        self.acquire_share(name, Mode::Read, ttl, wait).await
    }

    /// Takes the read-write lease `name` exclusively (a writer) for
    /// `ttl`, waiting up to `wait`: nobody else holds it meanwhile.
    ///
    /// # Errors
    /// As [`LeaseClient::acquire_permit`]; [`crate::Refusal::OtherModeHeld`]
    /// when this session reads it (no upgrade: release first).
    pub async fn acquire_write(
        &self,
        name: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseHandle, LeaseError> {
        self.acquire_share(name, Mode::Write, ttl, wait).await
    }

    /// Takes the share `mode` of `name` for `ttl`, waiting up to `wait`;
    /// returns within `wait` plus [`ACQUIRE_MARGIN`]. A waiter whose wait
    /// ran out leaves the line and asks once more without waiting, so a
    /// share granted as it left is returned rather than lost.
    ///
    /// # Errors
    /// As [`LeaseClient::acquire_permit`].
    pub async fn acquire_share(
        &self,
        name: &str,
        mode: Mode,
        ttl: Duration,
        wait: Duration,
    ) -> Result<LeaseHandle, LeaseError> {
        let op = |wait_ms| -> Result<Op, LeaseError> {
            Ok(Op::AcquireShare {
                name: name.to_owned(),
                owner: self.inner.owner.clone(),
                token: self.token()?,
                ttl_ms: millis("ttl", ttl)?,
                wait_ms,
                mode,
            })
        };
        if wait.is_zero() {
            let answer = self.call(op(0)?, self.inner.call_timeout).await?;
            return self.share_answer(name, ttl, answer).await;
        }
        let waiting = op(millis("wait", wait)?.max(1))?;
        match self.call(waiting, wait + ACQUIRE_MARGIN / 2).await {
            Ok(answer) if answer.outcome != Outcome::TimedOut => {
                self.share_answer(name, ttl, answer).await
            }
            Ok(_) | Err(LeaseError::Timeout) => {
                let leave = Op::Cancel {
                    name: name.to_owned(),
                    owner: self.inner.owner.clone(),
                    token: self.token()?,
                };
                self.call(leave, ACQUIRE_MARGIN / 4).await?;
                let answer = self.call(op(0)?, ACQUIRE_MARGIN / 4).await?;
                self.share_answer(name, ttl, answer).await
            }
            Err(e) => Err(e),
        }
    }

    async fn share_answer(
        &self,
        name: &str,
        ttl: Duration,
        answer: Answer,
    ) -> Result<LeaseHandle, LeaseError> {
        match answer.outcome {
            Outcome::Granted { stamp, .. } => {
                let handle = self.handle(name, stamp, ttl);
                if answer.queued && handle.expire_time_unsafe() < Instant::now() + ttl / 2 {
                    // Granted from the line after a long wait: count again
                    // from a renewal (see `acquire`).
                    handle.renew().await?;
                }
                Ok(handle)
            }
            Outcome::Busy { holders, waiters } => Err(LeaseError::Busy {
                name: name.to_owned(),
                holders,
                waiters,
            }),
            other => Err(unexpected(other)),
        }
    }
}
