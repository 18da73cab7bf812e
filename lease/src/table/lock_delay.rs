//! Lock-delay (Chubby, Consul): after a holder's lease EXPIRES, its name is
//! not granted again for the delay the holder set, so that a resource that
//! cannot check stamps sees the old holder's last requests drain before a
//! new holder acts. A release (by the holder or an operator) ends the lease
//! without a delay: the holder said it is done.
//!
//! The delay is set on one grant ([`Op::SetLockDelay`], fenced like a
//! write) and ends with it. A blocked name keeps its waiters; the leader
//! proposes a tick when the block ends ([`LeaseTable::next_deadline_us`])
//! and the first of them is granted then. Blocked names count against
//! [`super::MAX_LEASES`], so the table stays bounded.

use super::snapshot::SnapshotError;
use super::{Applied, LeaseTable, MAX_LEASES, MAX_NAME_BYTES};
use crate::command::{Op, Outcome, Refusal, Stamp};
use serde::{Deserialize, Serialize};

/// Longest lock-delay: one minute (Chubby's limit).
pub const MAX_LOCK_DELAY_MS: u64 = 60_000;

impl LeaseTable {
    /// Records the lock-delay of the grant `stamp` of `name` (the caller
    /// checked that it holds it).
    pub(super) fn set_lock_delay(&mut self, name: &str, stamp: Stamp, delay_ms: u64) -> Outcome {
        self.lock_delays
            .insert(name.to_owned(), (stamp, delay_ms.saturating_mul(1000)));
        Outcome::LockDelaySet
    }

    /// The grant `stamp` of `name` ended: if it expired (at table time
    /// `expired_at`), its lock-delay (if any) blocks the name from that
    /// moment; if it was released, the delay is dropped.
    pub(super) fn grant_ended(&mut self, name: &str, stamp: Stamp, expired_at: Option<u64>) {
        let Some((of, delay_us)) = self.lock_delays.remove(name) else {
            return;
        };
        let Some(expired_at) = expired_at.filter(|_| of == stamp && delay_us > 0) else {
            return;
        };
        // Nothing was granted since the expiry: a grant needs a command,
        // and every command ends the leases due before it acts.
        let until = expired_at.saturating_add(delay_us);
        if until <= self.now {
            return;
        }
        if let Some(old) = self.blocked.insert(name.to_owned(), until) {
            self.unblocks.remove(&(old, name.to_owned()));
        }
        self.unblocks.insert((until, name.to_owned()));
    }

    /// True while `name` may not be granted.
    pub(super) fn is_blocked(&self, name: &str) -> bool {
        self.blocked
            .get(name)
            .is_some_and(|until| *until > self.now)
    }

    /// Table time left of the block on `name`, for the answer to an
    /// acquire that does not wait.
    pub(super) fn blocked_answer(&self, name: &str) -> Outcome {
        let until = self.blocked.get(name).copied().unwrap_or(self.now);
        Outcome::Blocked {
            remaining_ms: until.saturating_sub(self.now).div_ceil(1000),
        }
    }

    /// Ends the blocks that are due and serves each name's waiters.
    pub(super) fn unblock_due(&mut self, out: &mut Applied) {
        while let Some((at, name)) = self.unblocks.first().cloned() {
            if at > self.now {
                break;
            }
            self.unblocks.pop_first();
            self.blocked.remove(&name);
            self.grant_next(&name, out);
        }
    }

    /// The earliest table time at which a block ends.
    pub(super) fn next_unblock_us(&self) -> Option<u64> {
        self.unblocks.first().map(|(at, _)| *at)
    }

    /// Names blocked now (each also counts as a lease toward the cap).
    pub(super) fn blocked_len(&self) -> usize {
        self.blocked.len()
    }
}

/// The lock-delay state as a snapshot carries it: the delays set on
/// current grants and the names blocked now. The index of blocks by end
/// time is rebuilt on load.
#[derive(Serialize, Deserialize)]
pub(super) struct LockDelayRecords<'a> {
    /// (name, stamp of the grant, delay in µs).
    #[serde(borrow)]
    delays: Vec<(&'a str, u64, u64)>,
    /// (name, table time the block ends).
    blocked: Vec<(&'a str, u64)>,
}

impl LeaseTable {
    /// The lock-delay state, for a snapshot.
    pub(super) fn lock_delay_records(&self) -> LockDelayRecords<'_> {
        LockDelayRecords {
            delays: self
                .lock_delays
                .iter()
                .map(|(name, (stamp, delay_us))| (name.as_str(), stamp.0, *delay_us))
                .collect(),
            blocked: self
                .blocked
                .iter()
                .map(|(name, until)| (name.as_str(), *until))
                .collect(),
        }
    }

    /// Restores the lock-delay state of a snapshot, checking its limits.
    pub(super) fn restore_lock_delays(
        &mut self,
        records: LockDelayRecords<'_>,
    ) -> Result<(), SnapshotError> {
        let bad_name = |name: &str| name.is_empty() || name.len() > MAX_NAME_BYTES;
        if records.delays.len() > MAX_LEASES || records.blocked.len() > MAX_LEASES {
            return Err(SnapshotError::Invalid(
                "more lock-delays than leases allowed",
            ));
        }
        for (name, stamp, delay_us) in records.delays {
            if bad_name(name) || delay_us > MAX_LOCK_DELAY_MS * 1000 {
                return Err(SnapshotError::Invalid("a lock-delay out of bounds"));
            }
            self.lock_delays
                .insert(name.to_owned(), (Stamp(stamp), delay_us));
        }
        for (name, until) in records.blocked {
            if bad_name(name) {
                return Err(SnapshotError::Invalid("a blocked name out of bounds"));
            }
            self.blocked.insert(name.to_owned(), until);
            self.unblocks.insert((until, name.to_owned()));
        }
        Ok(())
    }
}

/// The limits of an [`Op::SetLockDelay`]: a delay up to
/// [`MAX_LOCK_DELAY_MS`].
pub(super) fn validate(op: &Op) -> Result<(), Refusal> {
    if let Op::SetLockDelay { lock_delay_ms, .. } = op
        && *lock_delay_ms > MAX_LOCK_DELAY_MS
    {
        return Err(Refusal::LockDelayTooLong);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
