//! Listing held leases by prefix, one bounded page at a time.
//!
//! A page holds at most the `limit` asked for (never more than
//! [`MAX_LIST_ENTRIES`]) and at most [`MAX_LIST_PAGE_BYTES`] of names and
//! owners, so an answer is never larger than a read that returns a value
//! of [`super::MAX_VALUE_BYTES`] and fits any client frame that read fits.
//! The table looks at one lease more than the page holds, whatever the
//! table's size: a long list costs one command per page.

use super::{LeaseTable, MAX_NAME_BYTES};
use crate::command::{ListedLease, Op, Outcome, Refusal};
use std::ops::Bound;

/// Most leases one [`Op::List`] answer reports.
pub const MAX_LIST_ENTRIES: u32 = 1000;
/// Most bytes of names and owners (plus a fixed 32-byte allowance each)
/// in one [`Op::List`] answer.
pub const MAX_LIST_PAGE_BYTES: usize = 64 * 1024;
/// What an entry costs beyond its name and owner, counted generously: the
/// two length prefixes, stamp, remaining time and waiter count as varints.
const ENTRY_OVERHEAD_BYTES: usize = 32;

impl LeaseTable {
    /// One page of the held leases whose names start with `prefix`, after
    /// `after`, in name order, as of the last applied command: what an
    /// [`Op::List`] applied now would answer. Only an answer that went
    /// through the log is linearizable.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Outcome {
        let from = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let mut leases = Vec::new();
        let mut bytes = 0;
        let mut next = None;
        let mut looked_at = 0;
        for (name, lease) in self
            .leases
            .range::<str, _>((from, Bound::Unbounded))
            .take_while(|(name, _)| name.starts_with(prefix))
        {
            let Some(holder) = self.info(lease) else {
                // Every lease the table keeps has a holder once a command
                // is applied (a freed lease goes to its next waiter or is
                // dropped): nothing to report, nothing to count.
                continue;
            };
            let size = name.len() + holder.owner.len() + ENTRY_OVERHEAD_BYTES;
            if looked_at == limit || bytes + size > MAX_LIST_PAGE_BYTES {
                next = leases.last().map(|l: &ListedLease| l.name.clone());
                break;
            }
            looked_at += 1;
            bytes += size;
            leases.push(ListedLease {
                name: name.to_string(),
                holder,
                waiters: u32::try_from(lease.waiters.len()).unwrap_or(u32::MAX),
            });
        }
        Outcome::Listed { leases, next }
    }
}

/// The limits of an [`Op::List`]: a prefix and a continuation no longer
/// than a name, and a limit from 1 to [`MAX_LIST_ENTRIES`]. The prefix may
/// be empty (every name).
pub(super) fn validate(op: &Op) -> Result<(), Refusal> {
    let Op::List {
        prefix,
        after,
        limit,
    } = op
    else {
        return Ok(());
    };
    if prefix.len() > MAX_NAME_BYTES || after.as_ref().is_some_and(|a| a.len() > MAX_NAME_BYTES) {
        return Err(Refusal::NameTooLong);
    }
    if !(1..=MAX_LIST_ENTRIES).contains(limit) {
        return Err(Refusal::ListLimitOutOfRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
