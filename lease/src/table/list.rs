//! Listing held leases by prefix, one bounded page at a time.
//!
//! A page holds at most the `limit` names asked for (never more than
//! [`MAX_LIST_ENTRIES`]) and at most [`MAX_LIST_PAGE_BYTES`] of names and
//! owners (a shared name's holders all on one page: at most
//! [`super::MAX_PERMITS`] of them), so an answer is never larger than a
//! read that returns a value of [`super::MAX_VALUE_BYTES`] and fits any
//! client frame that read fits.
//! The table looks at one lease more than the page holds, whatever the
//! table's size: a long list costs one command per page.

use super::{Lease, LeaseTable, MAX_NAME_BYTES};
use crate::command::{ListedHolder, ListedLease, Op, Outcome, Refusal};
use std::ops::Bound;

/// Most leases one [`Op::List`] answer reports.
pub const MAX_LIST_ENTRIES: u32 = 1000;
/// Most bytes of names and owners (plus a fixed 48-byte allowance per
/// holder) in one [`Op::List`] answer.
pub const MAX_LIST_PAGE_BYTES: usize = 64 * 1024;
/// What a holder costs beyond its owner, counted generously: the length
/// prefixes, stamp, remaining time, mode, session (40 bytes at most as
/// varints) and its entry's share of the name's prefix and waiter count.
const ENTRY_OVERHEAD_BYTES: usize = 48;

impl LeaseTable {
    /// One page of the held names that start with `prefix`, after
    /// `after`, in name order, as of the last applied command: plain
    /// leases (bound to a lease session or not), semaphores and read-write
    /// leases, each with all its holders. What an [`Op::List`] applied now
    /// would answer; only an answer that went through the log is
    /// linearizable.
    pub fn list(&self, prefix: &str, after: Option<&str>, limit: u32) -> Outcome {
        let from = match after {
            Some(after) if after >= prefix => Bound::Excluded(after),
            _ => Bound::Included(prefix),
        };
        let range = (from, Bound::Unbounded);
        let plain = self
            .leases
            .range::<str, _>(range)
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter_map(|(name, lease)| self.listed(name, lease));
        let shared = self
            .shares
            .range::<str, _>(range)
            .take_while(|(name, _)| name.starts_with(prefix))
            .filter_map(|(name, line)| line.listed(name, self.now));
        let mut leases = Vec::new();
        let mut bytes = 0;
        let mut next = None;
        for entry in merge_by_name(plain, shared) {
            let size = entry.name.len()
                + entry
                    .holders
                    .iter()
                    .map(|h| h.owner.len() + ENTRY_OVERHEAD_BYTES)
                    .sum::<usize>();
            if leases.len() == limit as usize || bytes + size > MAX_LIST_PAGE_BYTES {
                next = leases.last().map(|l: &ListedLease| l.name.clone());
                break;
            }
            bytes += size;
            leases.push(entry);
        }
        Outcome::Listed { leases, next }
    }

    /// A plain lease as a list reports it; `None` while nobody holds it.
    fn listed(&self, name: &str, lease: &Lease) -> Option<ListedLease> {
        // Every lease the table keeps has a holder once a command is
        // applied (a freed lease goes to its next waiter or is dropped).
        let info = self.info(lease)?;
        let session = lease.holder.as_ref().and_then(|h| h.session);
        Some(ListedLease {
            name: name.to_owned(),
            holders: vec![ListedHolder {
                owner: info.owner,
                stamp: info.stamp,
                remaining_ms: info.remaining_ms,
                mode: None,
                session,
            }],
            waiters: u32::try_from(lease.waiters.len()).unwrap_or(u32::MAX),
        })
    }
}

/// The entries of two name-ordered lists, in name order. A name is never
/// in both: it is a plain lease or a shared one, one kind at a time.
fn merge_by_name(
    a: impl Iterator<Item = ListedLease>,
    b: impl Iterator<Item = ListedLease>,
) -> impl Iterator<Item = ListedLease> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if y.name < x.name => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
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
