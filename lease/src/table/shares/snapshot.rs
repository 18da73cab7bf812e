//! The share lines as a table snapshot carries them. Their indexes and
//! counters are rebuilt on load, and every limit is checked again.

use super::{Kind, ShareLine};
use crate::command::{ClientId, LeaseToken, Mode, Stamp};
use crate::table::snapshot::SnapshotError;
use crate::table::{
    Holder, LeaseTable, MAX_LEASES, MAX_NAME_BYTES, MAX_WAITERS, MAX_WAITERS_PER_LEASE, Waiter,
};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct HolderRecord<'a> {
    owner: &'a str,
    token: [u8; 16],
    stamp: u64,
    expires_at: u64,
    mode: Mode,
}

#[derive(Serialize, Deserialize)]
struct WaiterRecord<'a> {
    owner: &'a str,
    token: [u8; 16],
    client: ClientId,
    request: u64,
    ttl_us: u64,
    give_up_at: u64,
    mode: Mode,
}

#[derive(Serialize, Deserialize)]
struct LineRecord<'a> {
    name: &'a str,
    /// The semaphore's permits; 0 for a read-write lease.
    permits: u32,
    #[serde(borrow)]
    holders: Vec<HolderRecord<'a>>,
    #[serde(borrow)]
    waiters: Vec<WaiterRecord<'a>>,
}

/// Every share line, in name order.
#[derive(Serialize, Deserialize)]
pub(in crate::table) struct ShareRecords<'a> {
    #[serde(borrow)]
    lines: Vec<LineRecord<'a>>,
}

impl LeaseTable {
    /// The share lines, for a snapshot.
    pub(in crate::table) fn share_records(&self) -> ShareRecords<'_> {
        let lines = self.shares.iter().map(|(name, line)| LineRecord {
            name,
            permits: match line.kind {
                Kind::Semaphore(permits) => permits,
                Kind::ReadWrite => 0,
            },
            holders: line
                .holders
                .iter()
                .map(|(h, mode)| HolderRecord {
                    owner: &h.owner,
                    token: h.token.0.to_le_bytes(),
                    stamp: h.stamp.0,
                    expires_at: h.expires_at,
                    mode: *mode,
                })
                .collect(),
            waiters: line
                .waiters
                .iter()
                .map(|(w, mode)| WaiterRecord {
                    owner: &w.owner,
                    token: w.token.0.to_le_bytes(),
                    client: w.client,
                    request: w.request,
                    ttl_us: w.ttl_us,
                    give_up_at: w.give_up_at,
                    mode: *mode,
                })
                .collect(),
        });
        ShareRecords {
            lines: lines.collect(),
        }
    }

    /// Restores the share lines of a snapshot (after its leases).
    pub(in crate::table) fn restore_shares(
        &mut self,
        records: ShareRecords<'_>,
    ) -> Result<(), SnapshotError> {
        if records.lines.len() > MAX_LEASES.saturating_sub(self.leases.len()) {
            return Err(SnapshotError::Invalid("more names than allowed"));
        }
        let mut previous: Option<&str> = None;
        for record in records.lines {
            let line = self.share_line(&record)?;
            if previous.is_some_and(|p| p >= record.name) || self.leases.contains_key(record.name) {
                return Err(SnapshotError::Invalid("share names out of order or taken"));
            }
            previous = Some(record.name);
            let kind = line.kind;
            self.update_share(record.name, kind, |l| *l = line);
        }
        if self.share_holders > super::MAX_SHARE_HOLDERS || self.waiters > MAX_WAITERS {
            return Err(SnapshotError::Invalid(
                "more holders or waiters than allowed",
            ));
        }
        Ok(())
    }

    /// One line from its record, if a sequence of commands could have
    /// built it.
    fn share_line(&mut self, record: &LineRecord<'_>) -> Result<ShareLine, SnapshotError> {
        let invalid = SnapshotError::Invalid;
        if record.name.is_empty() || record.name.len() > MAX_NAME_BYTES {
            return Err(invalid("a share name out of bounds"));
        }
        let kind = match record.permits {
            0 => Kind::ReadWrite,
            n if n <= super::MAX_PERMITS => Kind::Semaphore(n),
            _ => return Err(invalid("a semaphore of too many permits")),
        };
        let of_kind = |mode: Mode| Kind::of(mode) == kind;
        if record.waiters.len() > MAX_WAITERS_PER_LEASE
            || record.holders.len() > super::MAX_PERMITS as usize
            || !record.holders.iter().all(|h| of_kind(h.mode))
            || !record.waiters.iter().all(|w| of_kind(w.mode))
        {
            return Err(invalid("a share line breaks its limits"));
        }
        let mut line = ShareLine {
            kind,
            holders: Vec::with_capacity(record.holders.len()),
            waiters: Default::default(),
        };
        for h in &record.holders {
            if !line.fits(h.mode, 0) {
                return Err(invalid("share holders that could not hold together"));
            }
            let holder = Holder {
                owner: self.owners.intern(h.owner),
                token: LeaseToken(u128::from_le_bytes(h.token)),
                stamp: Stamp(h.stamp),
                expires_at: h.expires_at,
                session: None,
            };
            line.holders.push((holder, h.mode));
        }
        for w in &record.waiters {
            let waiter = Waiter {
                owner: self.owners.intern(w.owner),
                token: LeaseToken(u128::from_le_bytes(w.token)),
                client: w.client,
                request: w.request,
                ttl_us: w.ttl_us,
                give_up_at: w.give_up_at,
                session: None,
            };
            line.waiters.push_back((waiter, w.mode));
        }
        if line.is_idle() {
            return Err(invalid("a share line nobody holds or waits for"));
        }
        Ok(line)
    }
}
