//! The lease table: the replicated state machine.
//!
//! It is deterministic: it never reads a clock. Time comes only from the
//! commands it applies, each stamped by the leader that proposed it with
//! its epoch (ballot) and the microseconds elapsed on its own monotonic
//! clock since it took over. Within an epoch the table's time advances by
//! that leader's elapsed time; when a new epoch starts, **no time passes**:
//! the new leader cannot know how long the old one ran, so every
//! outstanding lease keeps its full remaining time, counted from the new
//! leader's takeover. Replaying the same log gives the same table on every
//! node.
//!
//! # Requests are executed at most once
//!
//! Every request carries its session and request id. The table remembers
//! each session's outcomes until the session acknowledges them
//! ([`Request::acked_below`]) and keeps the highest mark acknowledged: a
//! copy of a request at or above the mark is answered from the remembered
//! outcome; a copy below it (a retry held up in a partition, say) is
//! answered [`Outcome::AlreadyAnswered`] and never executed again.
//! One window remains: a session that sends nothing for
//! [`SESSION_IDLE_US`] of table time (and waits for nothing) is forgotten
//! with its mark, so a copy delayed longer than that would be executed as
//! new. Clients retry within seconds, so the window is far beyond any
//! honest retry. A request refused because its session already has
//! [`MAX_OUTCOMES_PER_SESSION`] unacknowledged requests (or all sessions
//! [`MAX_REMEMBERED_OUTCOMES`]), or because the table already has
//! [`MAX_SESSIONS`] sessions, is not remembered (there
//! is no room): it was not executed, and a copy of it is judged again when
//! it arrives.
//!
//! # The table is bounded
//!
//! Clients cannot make it grow without limit: at most [`MAX_LEASES`]
//! leases (held or awaited), [`MAX_WAITERS_PER_LEASE`] waiters each and
//! [`MAX_WAITERS`] in all, [`MAX_SESSIONS`] sessions remembering at most
//! [`MAX_OUTCOMES_PER_SESSION`] outcomes each and
//! [`MAX_REMEMBERED_OUTCOMES`] in all, and [`MAX_TOTAL_VALUE_BYTES`] of
//! values in all. With names and owners of their largest size that is
//! roughly 6 MB of leases, 35 MB of waiters, 30 MB of outcomes, 1 MB of
//! sessions and 64 MiB of values at the very worst. A value lives only as long
//! as its lease (held, or awaited by someone it will be handed to);
//! remembered outcomes hold no copy of it, and reads are not remembered at
//! all (a read executed twice changes nothing). Going over a limit is
//! refused with a typed [`Refusal`], never by growing. The session cap
//! means clients that open more than [`MAX_SESSIONS`] sessions within
//! [`SESSION_IDLE_US`] are refused new ones until idle ones are forgotten;
//! limiting who may open sessions is the node's job, before proposing.
//!
//! These request-dedup sessions are not **lease sessions** (one TTL and
//! one keep-alive for many leases, [`Op::OpenSession`]): those are opened
//! explicitly, numbered by the table and end their leases when they end;
//! at most [`MAX_LEASE_SESSIONS`] are open, holding at most
//! [`MAX_LEASES_PER_SESSION`] leases each (`lease_sessions.rs` says why
//! the two are kept apart).
//!
//! [`Request::acked_below`]: crate::command::Request::acked_below
//! [`Outcome::AlreadyAnswered`]: crate::command::Outcome::AlreadyAnswered
//! [`Refusal`]: crate::command::Refusal
//! [`Op::OpenSession`]: crate::command::Op::OpenSession

use crate::command::{Body, ClientId, Command, HolderInfo, Stamp};
use owners::{Owners, Shared};
use std::collections::{BTreeMap, BTreeSet};
use trexlock_paxos::Ballot;

mod admission;
mod applied;
mod client_sessions;
mod execute;
mod grants;
mod lease;
mod lease_sessions;
mod line;
mod list;
mod lock_delay;
mod owners;
mod shares;
mod snapshot;
#[cfg(test)]
mod test_log;

pub use admission::{admit, validate};
pub use applied::{Applied, Event, Response};
use client_sessions::Session;
use lease::{Holder, Lease, Waiter};
use lease_sessions::LeaseSessions;
pub use lease_sessions::{MAX_LEASE_SESSIONS, MAX_LEASES_PER_SESSION};
pub use list::{MAX_LIST_ENTRIES, MAX_LIST_PAGE_BYTES};
pub use lock_delay::MAX_LOCK_DELAY_MS;
pub use shares::{MAX_PERMITS, MAX_SHARE_HOLDERS};
pub use snapshot::SnapshotError;

/// Longest lease name, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Longest lease owner, in bytes.
pub const MAX_OWNER_BYTES: usize = 256;
/// Largest TTL: one day. Longer leases defeat the point of leases.
pub const MAX_TTL_MS: u64 = 24 * 60 * 60 * 1000;
/// Longest wait in line: one day.
pub const MAX_WAIT_MS: u64 = 24 * 60 * 60 * 1000;
/// Largest fenced value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Largest encoded [`Request`](crate::command::Request), in bytes: a value of [`MAX_VALUE_BYTES`]
/// with a name and an owner of their largest sizes and every other field
/// fits, with room to spare. A frame limit for client requests must be at
/// least this (plus the frame's own header).
pub const MAX_REQUEST_BYTES: usize = MAX_VALUE_BYTES + 1024;
/// A session that sends nothing for this long (table time), and waits for
/// no lease, is forgotten.
pub const SESSION_IDLE_US: u64 = 10 * 60 * 1_000_000;
/// Most leases the table tracks (held, or awaited): the ceiling every node
/// applies alike. A node refuses new leases earlier, before proposing, at
/// its configured `max_leases` (this by default).
pub const MAX_LEASES: usize = 2_000_000;
/// Most waiters in line for one lease.
pub const MAX_WAITERS_PER_LEASE: usize = 64;
/// Most waiters in line for all leases together.
pub const MAX_WAITERS: usize = 100_000;
/// Most sessions the table remembers at once. An idle session makes room
/// after [`SESSION_IDLE_US`].
pub const MAX_SESSIONS: usize = 100_000;
/// Most unacknowledged requests one session may have: each holds a
/// remembered outcome (a request waiting in line included).
pub const MAX_OUTCOMES_PER_SESSION: usize = 128;
/// Most remembered outcomes for all sessions together.
pub const MAX_REMEMBERED_OUTCOMES: usize = 100_000;
/// Most bytes of fenced values the whole table holds.
pub const MAX_TOTAL_VALUE_BYTES: usize = 64 * 1024 * 1024;

/// Settings of a table beyond its state (feature `sabotage` only).
#[cfg(feature = "sabotage")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Settings {
    sabotage: Option<crate::Sabotage>,
}

/// The replicated lease table. See the module docs for how time works,
/// why a request runs at most once and how the table is bounded.
///
/// Each lease name is stored once (the indexes share it) and each owner
/// once however many leases it holds or waits for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseTable {
    now: u64,
    epoch: Ballot,
    epoch_base: u64,
    next_stamp: u64,
    leases: BTreeMap<Shared, Lease>,
    /// Every holder's expiry.
    expiries: BTreeSet<(u64, Shared)>,
    /// The expiries of holders someone waits behind: the only deadlines
    /// the leader must propose a tick for.
    awaited: BTreeSet<(u64, Shared)>,
    /// Bytes of all stored values.
    value_bytes: u64,
    /// Waiters in all lines.
    waiters: usize,
    /// Remembered outcomes of all sessions.
    outcomes: usize,
    sessions: BTreeMap<ClientId, Session>,
    /// Every session's `expires_at`.
    session_expiries: BTreeSet<(u64, ClientId)>,
    lease_sessions: LeaseSessions,
    owners: Owners,
    /// The lock-delay of a grant, by name: (its stamp, delay in µs).
    lock_delays: BTreeMap<String, (Stamp, u64)>,
    /// Names not to be granted before a table time (a lock-delay).
    blocked: BTreeMap<String, u64>,
    /// `blocked`, ordered by when each block ends.
    unblocks: BTreeSet<(u64, String)>,
    /// Semaphores and read-write leases, by name.
    shares: BTreeMap<Shared, shares::ShareLine>,
    /// Each share line's next deadline (an expiry or a give-up).
    share_due: BTreeSet<(u64, Shared)>,
    /// Shares held in all lines.
    share_holders: usize,
    /// A deliberately broken rule, the same on every node of a
    /// simulated cluster (feature `sabotage` only).
    #[cfg(feature = "sabotage")]
    cfg: Settings,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The same table running a deliberately broken rule.
    #[cfg(feature = "sabotage")]
    pub fn with_sabotage(mut self, sabotage: Option<crate::Sabotage>) -> Self {
        self.cfg.sabotage = sabotage;
        self
    }

    /// The table's time, in microseconds. Monotonic in log order.
    pub fn now_us(&self) -> u64 {
        self.now
    }

    /// The epoch (leader ballot) of the last command that moved time.
    pub fn epoch(&self) -> Ballot {
        self.epoch
    }

    /// Table time at which the current epoch began.
    pub fn epoch_base_us(&self) -> u64 {
        self.epoch_base
    }

    /// How many leases, semaphores and read-write leases are held or
    /// awaited.
    pub fn len(&self) -> usize {
        self.leases.len() + self.shares.len()
    }

    /// True when nothing is held or awaited.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many leases have a holder.
    pub fn held_len(&self) -> usize {
        self.expiries.len() + self.lease_sessions.bound
    }

    /// How many waiters wait in all lines.
    pub fn waiters_len(&self) -> usize {
        self.waiters
    }

    /// True when `name` is held or awaited (so acquiring it creates no
    /// lease).
    pub fn tracks(&self, name: &str) -> bool {
        self.leases.contains_key(name) || self.is_shared(name)
    }

    /// How many client sessions the table remembers.
    pub fn sessions_len(&self) -> usize {
        self.sessions.len()
    }

    /// The current holder of `name`, as of the last applied command.
    pub fn holder(&self, name: &str) -> Option<HolderInfo> {
        self.leases.get(name).and_then(|l| self.info(l))
    }

    /// The earliest table time at which a lease that someone waits for
    /// runs out: the leader proposes a tick then, so expiry is decided by
    /// a command, never by a timer on one node. Cheap: leases nobody
    /// waits for are not looked at.
    /// Lease sessions count as due when they end, whoever waits.
    pub fn next_deadline_us(&self) -> Option<u64> {
        let expiry = self.awaited.first().map(|(at, _)| *at);
        let sessions = self.next_lease_session_expiry_us();
        [
            expiry,
            sessions,
            self.next_unblock_us(),
            self.next_share_due_us(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The earliest table time at which a session is forgotten. Any
    /// command applied at or after it (a periodic tick will do) forgets
    /// it; nothing is lost by proposing that tick late.
    pub fn next_session_expiry_us(&self) -> Option<u64> {
        self.session_expiries.first().map(|(at, _)| *at)
    }

    /// Applies one command. Deterministic: the result depends only on the
    /// table and the command.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let mut out = Applied::default();
        self.advance(command.epoch, command.elapsed_us);
        self.expire_due(&mut out);
        self.end_expired_sessions(&mut out);
        self.unblock_due(&mut out);
        self.settle_shares(&mut out);
        self.forget_idle_sessions();
        if let Body::Request(req) = &command.body {
            let outcome = self.answer(req, &mut out);
            out.responses.push(Response {
                client: req.client,
                request: req.request,
                outcome,
            });
        }
        out
    }

    fn advance(&mut self, epoch: Ballot, elapsed_us: u64) {
        if epoch > self.epoch {
            self.epoch = epoch;
            self.epoch_base = self.now;
        }
        if epoch == self.epoch {
            self.now = self.now.max(self.epoch_base.saturating_add(elapsed_us));
        }
    }

    /// Ends every lease whose time is up, handing each to its next waiter.
    fn expire_due(&mut self, out: &mut Applied) {
        while let Some((at, name)) = self.expiries.first().cloned() {
            if at > self.now {
                break;
            }
            // Popped before the update, so the loop ends whatever the
            // lease looks like; and a holder is only ever taken when its
            // own expiry is due, never on the index's word alone.
            self.expiries.pop_first();
            let now = self.now;
            if let Some(h) = self.update(&name, |l| l.holder.take_if(|h| h.expires_at <= now)) {
                self.grant_ended(&name, h.stamp, Some(h.expires_at));
                out.events.push(Event::Expired {
                    name: name.to_string(),
                    stamp: h.stamp,
                });
            }
            self.grant_next(&name, out);
        }
    }

    fn info(&self, lease: &Lease) -> Option<HolderInfo> {
        lease.holder.as_ref().map(|h| {
            let ends = h
                .session
                .map_or(h.expires_at, |s| self.session_expires_at(s));
            HolderInfo {
                owner: h.owner.to_string(),
                stamp: h.stamp,
                remaining_ms: ends.saturating_sub(self.now) / 1000,
            }
        })
    }
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod tests;
