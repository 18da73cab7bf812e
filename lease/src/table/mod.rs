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

use crate::command::{
    Body, ClientId, Command, HolderInfo, LeaseToken, Op, Outcome, Refusal, Request, SessionId,
    Stamp,
};
use bytes::Bytes;
use line::Line;
use owners::{Owners, Shared};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use trexlock_paxos::Ballot;

mod lease_sessions;
mod line;
mod owners;
mod snapshot;

use lease_sessions::LeaseSessions;
pub use lease_sessions::{MAX_LEASE_SESSIONS, MAX_LEASES_PER_SESSION};

pub use snapshot::SnapshotError;
mod list;
mod lock_delay;
mod shares;
#[cfg(test)]
mod test_log;
pub use list::{MAX_LIST_ENTRIES, MAX_LIST_PAGE_BYTES};
pub use lock_delay::MAX_LOCK_DELAY_MS;
pub use shares::{MAX_PERMITS, MAX_SHARE_HOLDERS};

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
/// Largest encoded [`Request`], in bytes: a value of [`MAX_VALUE_BYTES`]
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

/// The current holder of a lease.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    owner: Shared,
    token: LeaseToken,
    stamp: Stamp,
    /// For a holder bound to a session, `u64::MAX`: its end is the
    /// session's.
    expires_at: u64,
    session: Option<SessionId>,
}

/// Someone waiting in line.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Waiter {
    owner: Shared,
    token: LeaseToken,
    client: ClientId,
    request: u64,
    ttl_us: u64,
    give_up_at: u64,
    session: Option<SessionId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Lease {
    holder: Option<Holder>,
    waiters: Line,
    /// Boxed: most leases have none, and a box is a quarter of `Bytes`.
    value: Option<Box<Bytes>>,
}

impl Lease {
    /// Nobody holds it and nobody waits: it (and its value) is dropped.
    fn is_idle(&self) -> bool {
        self.holder.is_none() && self.waiters.is_empty()
    }

    /// What the table's indexes record about this lease.
    fn marks(&self) -> Marks {
        // A bound holder's expiry is its session's, indexed there once.
        let own_expiry = self.holder.as_ref().filter(|h| h.session.is_none());
        Marks {
            expires_at: own_expiry.map(|h| h.expires_at),
            awaited: own_expiry.is_some() && !self.waiters.is_empty(),
            value_bytes: self.value.as_ref().map_or(0, |v| v.len() as u64),
            waiters: self.waiters.len(),
            session: self.holder.as_ref().and_then(|h| h.session),
        }
    }
}

/// The parts of a lease the table indexes: kept in step by
/// [`LeaseTable::update`].
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    expires_at: Option<u64>,
    awaited: bool,
    value_bytes: u64,
    waiters: usize,
    session: Option<SessionId>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    /// The highest `acked_below` seen: every request below it was answered.
    acked_below: u64,
    /// Table time at which the session is forgotten.
    expires_at: u64,
    /// Outcomes of requests at or above `acked_below`, without values.
    outcomes: BTreeMap<u64, Outcome>,
}

/// A reply for one request of one client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The session.
    pub client: ClientId,
    /// The request answered.
    pub request: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// Something that happened to a lease, for metrics and watchers: what one
/// applied command changed, in the order it changed it. Holders' secrets
/// are never in an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A lease was granted (from a request or from the wait line).
    Granted {
        /// Lease name.
        name: String,
        /// Its stamp.
        stamp: Stamp,
        /// True when the grantee had waited in line.
        waited: bool,
        /// The new holder.
        owner: String,
    },
    /// A lease ran out without being released.
    Expired {
        /// Lease name.
        name: String,
        /// The stamp that expired.
        stamp: Stamp,
    },
    /// A lease was renewed (by a renew, or a reentrant acquire).
    Renewed {
        /// Lease name.
        name: String,
        /// The holder's stamp.
        stamp: Stamp,
    },
    /// A lease was released (by its holder, or forced by an operator).
    Released {
        /// Lease name.
        name: String,
        /// The stamp that was released.
        stamp: Stamp,
    },
    /// A lease session ended, and every lease bound to it with it (each
    /// of those leases is reported as expired or released before this).
    SessionEnded {
        /// The session.
        session: SessionId,
        /// True when it ran out; false when it was closed.
        expired: bool,
    },
    /// The holder stored a fenced value with the lease.
    Written {
        /// Lease name.
        name: String,
        /// The writer's stamp.
        stamp: Stamp,
        /// The value written.
        value: Bytes,
    },
}

impl Event {
    /// The lease the event is about; `None` for a lease session's end,
    /// which is about no one lease (its leases have events of their own),
    /// so no watch is sent it.
    pub fn name(&self) -> Option<&str> {
        match self {
            Event::Granted { name, .. }
            | Event::Expired { name, .. }
            | Event::Renewed { name, .. }
            | Event::Released { name, .. }
            | Event::Written { name, .. } => Some(name),
            Event::SessionEnded { .. } => None,
        }
    }
}

/// What applying one command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Replies, to be routed to the sessions that asked.
    pub responses: Vec<Response>,
    /// Lease events.
    pub events: Vec<Event>,
}

impl Applied {
    /// Records that grant `stamp` of `name` was renewed; the answer to
    /// the renewal, for a plain lease and a share alike.
    fn renewed(&mut self, name: &str, stamp: Stamp) -> Outcome {
        self.events.push(Event::Renewed {
            name: name.to_owned(),
            stamp,
        });
        Outcome::Renewed
    }

    /// Records that grant `stamp` of `name` was released.
    fn released(&mut self, name: &str, stamp: Stamp) {
        self.events.push(Event::Released {
            name: name.to_owned(),
            stamp,
        });
    }
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

    /// Forgets sessions whose time is up: O(log n) per session forgotten,
    /// so it runs on every command.
    fn forget_idle_sessions(&mut self) {
        while let Some(&(at, client)) = self.session_expiries.first() {
            if at > self.now {
                break;
            }
            self.session_expiries.pop_first();
            if let Some(forgotten) = self.sessions.remove(&client) {
                self.outcomes = self.outcomes.saturating_sub(forgotten.outcomes.len());
            }
        }
    }

    /// The session's entry, created if new, kept at least until `until`.
    fn touch_session(&mut self, client: ClientId, until: u64) -> &mut Session {
        let session = self.sessions.entry(client).or_default();
        if until > session.expires_at {
            self.session_expiries.remove(&(session.expires_at, client));
            session.expires_at = until;
            self.session_expiries.insert((until, client));
        }
        session
    }

    /// Answers one request: refused, answered from its session, or
    /// executed (and remembered).
    fn answer(&mut self, req: &Request, out: &mut Applied) -> Outcome {
        // Defence in depth: the node admits requests before proposing
        // them, but the log is the table's only input it can trust to be
        // the same everywhere, so it checks again.
        if let Err(refusal) = validate(&req.op) {
            return Outcome::Refused(refusal);
        }
        let is_read = matches!(req.op, Op::Read { .. } | Op::List { .. });
        let known = self.sessions.contains_key(&req.client);
        if is_read && !known {
            // A read changes nothing, so it needs no session: one-off
            // readers do not fill the table.
            return self.execute(req, out);
        }
        if !known && self.sessions.len() >= MAX_SESSIONS {
            return Outcome::Refused(Refusal::TooManySessions);
        }
        let until = self.now.saturating_add(SESSION_IDLE_US);
        let session = self.touch_session(req.client, until);
        let mut forgotten = 0;
        if req.acked_below > session.acked_below {
            session.acked_below = req.acked_below;
            // Usually one or two entries go: popping them spares building
            // a new map for the rest (`split_off`) on every request.
            while let Some(entry) = session.outcomes.first_entry() {
                if *entry.key() >= req.acked_below {
                    break;
                }
                entry.remove();
                forgotten += 1;
            }
        }
        let answered = req.request < session.acked_below;
        let done = session.outcomes.get(&req.request).cloned();
        let session_full = session.outcomes.len() >= MAX_OUTCOMES_PER_SESSION;
        self.outcomes = self.outcomes.saturating_sub(forgotten);
        if answered {
            return Outcome::AlreadyAnswered;
        }
        if let Some(done) = done {
            return self.replay(done, &req.op);
        }
        if is_read {
            return self.execute(req, out);
        }
        if session_full {
            return Outcome::Refused(Refusal::TooManyPendingRequests);
        }
        if self.outcomes >= MAX_REMEMBERED_OUTCOMES {
            return Outcome::Refused(Refusal::TooManyPendingRequestsInAll);
        }
        let outcome = self.execute(req, out);
        self.remember(req.client, req.request, &outcome);
        outcome
    }

    /// Records the answer to a request of a session still remembered and
    /// not yet acknowledged, without the lease's value (see
    /// [`LeaseTable::replay`]).
    fn remember(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        let Some(s) = self.sessions.get_mut(&client) else {
            return;
        };
        if request < s.acked_below {
            return;
        }
        let kept = match outcome {
            Outcome::Granted { stamp, .. } => Outcome::Granted {
                stamp: *stamp,
                value: None,
            },
            other => other.clone(),
        };
        if s.outcomes.insert(request, kept).is_none() {
            self.outcomes += 1;
        }
    }

    /// A remembered outcome, as sent again: a grant still current carries
    /// the lease's value now.
    fn replay(&self, outcome: Outcome, op: &Op) -> Outcome {
        match outcome {
            Outcome::Granted { stamp, .. } => Outcome::Granted {
                stamp,
                value: self
                    .leases
                    .get(op.name())
                    .filter(|l| l.holder.as_ref().is_some_and(|h| h.stamp == stamp))
                    .and_then(|l| l.value.as_deref().cloned()),
            },
            other => other,
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

    fn execute(&mut self, req: &Request, out: &mut Applied) -> Outcome {
        let now = self.now;
        let name = req.op.name().to_owned();
        let shared_name = !matches!(req.op, Op::List { .. } | Op::AcquireShare { .. });
        if shared_name && self.is_shared(&name) {
            return self.execute_on_share(&req.op, out);
        }
        match &req.op {
            Op::AcquireShare { .. } => self.acquire_share(req, out),
            Op::Acquire {
                owner,
                token,
                ttl_ms,
                wait_ms,
                ..
            } => {
                let claim = Claim {
                    name: &name,
                    owner,
                    token: *token,
                    ttl_us: ttl_ms.saturating_mul(1000),
                    wait_ms: *wait_ms,
                    session: None,
                };
                self.acquire(req, claim, out)
            }
            Op::AcquireInSession {
                owner,
                token,
                session,
                wait_ms,
                ..
            } => match self.session_ttl_us(*session, owner, *token) {
                Some(ttl_us) => {
                    let claim = Claim {
                        name: &name,
                        owner,
                        token: *token,
                        ttl_us,
                        wait_ms: *wait_ms,
                        session: Some(*session),
                    };
                    self.acquire(req, claim, out)
                }
                None => Outcome::NoSession,
            },
            Op::OpenSession {
                owner,
                token,
                ttl_ms,
            } => self.open_session(owner, *token, ttl_ms.saturating_mul(1000)),
            Op::KeepSession {
                session,
                owner,
                token,
            } => self.keep_session(*session, owner, *token),
            Op::CloseSession {
                session,
                owner,
                token,
            } => self.close_session(*session, owner, *token, out),
            Op::Renew {
                owner,
                stamp,
                token,
                ttl_ms,
                ..
            } => {
                if !self.holds(&name, owner, *stamp, *token) {
                    return self.not_holder(&name);
                }
                if self.bound_to_session(&name) {
                    return Outcome::Refused(Refusal::LeaseInSession);
                }
                self.extend(&name, now.saturating_add(ttl_ms.saturating_mul(1000)));
                out.renewed(&name, *stamp)
            }
            Op::Release {
                owner,
                stamp,
                token,
                ..
            } => {
                if !self.holds(&name, owner, *stamp, *token) {
                    return self.not_holder(&name);
                }
                self.release(&name, out)
            }
            Op::ForceRelease { .. } => self.release(&name, out),
            Op::SetLockDelay {
                owner,
                stamp,
                token,
                lock_delay_ms,
                ..
            } => {
                if !self.holds(&name, owner, *stamp, *token) {
                    return self.not_holder(&name);
                }
                self.set_lock_delay(&name, *stamp, *lock_delay_ms)
            }
            Op::Cancel { owner, token, .. } => {
                if self.leases.contains_key(name.as_str()) {
                    self.update(&name, |l| {
                        l.waiters
                            .retain(|w| !(*w.owner == **owner && w.token == *token));
                    });
                }
                Outcome::Cancelled
            }
            Op::List {
                prefix,
                after,
                limit,
            } => self.list(prefix, after.as_deref(), *limit),
            Op::Read { .. } => {
                let lease = self.leases.get(name.as_str());
                Outcome::Holder {
                    holder: lease.and_then(|l| self.info(l)),
                    value: lease.and_then(|l| l.value.as_deref().cloned()),
                }
            }
            Op::Write {
                owner,
                stamp,
                token,
                value,
                ..
            } => {
                if !self.holds(&name, owner, *stamp, *token) {
                    return self.not_holder(&name);
                }
                let old = self
                    .leases
                    .get(name.as_str())
                    .and_then(|l| l.value.as_ref())
                    .map_or(0, |v| v.len() as u64);
                let total = self
                    .value_bytes
                    .saturating_sub(old)
                    .saturating_add(value.len() as u64);
                if total > MAX_TOTAL_VALUE_BYTES as u64 {
                    return Outcome::Refused(Refusal::ValueSpaceFull);
                }
                self.update(&name, |l| l.value = Some(Box::new(value.clone())));
                out.events.push(Event::Written {
                    name,
                    stamp: *stamp,
                    value: value.clone(),
                });
                Outcome::Written
            }
        }
    }

    /// Grants, renews (reentrant), queues or refuses a claim on a lease.
    fn acquire(&mut self, req: &Request, claim: Claim<'_>, out: &mut Applied) -> Outcome {
        let Claim {
            name,
            owner,
            token,
            ttl_us,
            wait_ms,
            session,
        } = claim;
        let now = self.now;
        let held_by = self.leases.get(name).and_then(|l| {
            let h = l.holder.as_ref()?;
            // Reentrant only with the same binding: a plain acquire must
            // not answer for a lease whose end is a session's, nor the
            // reverse.
            let same = *h.owner == *owner && h.token == token && h.session == session;
            Some((same, self.info(l)?))
        });
        // Another holder, or nobody while a lock-delay blocks it.
        let busy = match &held_by {
            Some((mine, _)) => !mine,
            None => self.is_blocked(name),
        };
        match held_by {
            Some((true, holder)) => {
                if session.is_none() {
                    self.extend(name, now.saturating_add(ttl_us));
                }
                out.renewed(name, holder.stamp);
                Outcome::Granted {
                    stamp: holder.stamp,
                    value: self
                        .leases
                        .get(name)
                        .and_then(|l| l.value.as_deref().cloned()),
                }
            }
            _ if busy && wait_ms > 0 => {
                let waiter = Waiter {
                    owner: self.owners.intern(owner),
                    token,
                    client: req.client,
                    request: req.request,
                    ttl_us,
                    give_up_at: now.saturating_add(wait_ms.saturating_mul(1000)),
                    session,
                };
                self.queue(name, waiter, out)
            }
            Some((_, holder)) => Outcome::Held(holder),
            None if busy => self.blocked_answer(name),
            None => {
                let refused = match session {
                    Some(s) => self.session_refusal(s, true),
                    None if self.len() + self.blocked_len() >= MAX_LEASES => {
                        Some(Outcome::Refused(Refusal::TooManyLeases))
                    }
                    None => None,
                };
                if let Some(refused) = refused {
                    return refused;
                }
                let interned = self.owners.intern(owner);
                let stamp = self.grant(name, interned, token, ttl_us, session);
                out.events.push(Event::Granted {
                    name: name.to_owned(),
                    stamp,
                    waited: false,
                    owner: owner.to_owned(),
                });
                Outcome::Granted { stamp, value: None }
            }
        }
    }

    /// True when the holder of `name` is bound to a lease session.
    fn bound_to_session(&self, name: &str) -> bool {
        self.leases
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.session.is_some())
    }

    /// Puts `waiter` in line for the held lease `name`, first answering
    /// (and dropping) the waiters whose wait ran out, so that they never
    /// take up room in the line.
    fn queue(&mut self, name: &str, waiter: Waiter, out: &mut Applied) -> Outcome {
        let now = self.now;
        let keep_until = waiter.give_up_at.saturating_add(SESSION_IDLE_US);
        let client = waiter.client;
        let elsewhere = self
            .waiters
            .saturating_sub(self.leases.get(name).map_or(0, |l| l.waiters.len()));
        let (gone, outcome) = self.update(name, |lease| {
            let (live, gone): (VecDeque<_>, VecDeque<_>) = lease
                .waiters
                .take()
                .into_iter()
                .partition(|w| w.give_up_at >= now);
            lease.waiters = Line::from(live);
            let outcome = if lease
                .waiters
                .iter()
                .any(|w| w.owner == waiter.owner && w.token == waiter.token)
            {
                Outcome::Queued
            } else if lease.waiters.len() >= MAX_WAITERS_PER_LEASE {
                Outcome::Refused(Refusal::TooManyWaiters)
            } else if elsewhere + lease.waiters.len() >= MAX_WAITERS {
                Outcome::Refused(Refusal::TooManyWaitersInAll)
            } else {
                lease.waiters.push_back(waiter);
                Outcome::Queued
            };
            (gone, outcome)
        });
        for w in gone {
            self.answer_waiter(w.client, w.request, Outcome::TimedOut, out);
        }
        if outcome == Outcome::Queued {
            // Its answer may come as late as the end of its wait: the
            // session (and so its mark and that answer) must outlive it.
            self.touch_session(client, keep_until);
        }
        outcome
    }

    /// Remembers and sends an answer to a request that waited in line.
    fn answer_waiter(
        &mut self,
        client: ClientId,
        request: u64,
        outcome: Outcome,
        out: &mut Applied,
    ) {
        self.remember(client, request, &outcome);
        out.responses.push(Response {
            client,
            request,
            outcome,
        });
    }

    /// Ends the holder's lease `name` and hands it to the next waiter.
    fn release(&mut self, name: &str, out: &mut Applied) -> Outcome {
        if !self.leases.contains_key(name) {
            return Outcome::NotHolder { current: None };
        }
        match self.update(name, |l| l.holder.take()) {
            Some(h) => {
                self.grant_ended(name, h.stamp, None);
                out.released(name, h.stamp);
                self.grant_next(name, out);
                Outcome::Released
            }
            None => Outcome::NotHolder { current: None },
        }
    }

    fn holds(&self, name: &str, owner: &str, stamp: Stamp, token: LeaseToken) -> bool {
        self.leases
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| &*h.owner == owner && h.stamp == stamp && h.token == token)
    }

    fn not_holder(&self, name: &str) -> Outcome {
        Outcome::NotHolder {
            current: self.leases.get(name).and_then(|l| self.info(l)),
        }
    }

    /// Makes `owner` the holder of the free lease `name`, with a fresh stamp.
    fn grant(
        &mut self,
        name: &str,
        owner: Shared,
        token: LeaseToken,
        ttl_us: u64,
        session: Option<SessionId>,
    ) -> Stamp {
        self.next_stamp += 1;
        let stamp = Stamp(self.next_stamp);
        let expires_at = self.own_expiry(ttl_us, session);
        self.update(name, |l| {
            l.holder = Some(Holder {
                owner,
                token,
                stamp,
                expires_at,
                session,
            });
        });
        stamp
    }

    /// A new holder's own expiry: none (`u64::MAX`) when a session's end
    /// is its end.
    fn own_expiry(&self, ttl_us: u64, session: Option<SessionId>) -> u64 {
        match session {
            Some(_) => u64::MAX,
            None => self.now.saturating_add(ttl_us),
        }
    }

    /// Moves the holder's expiry to `until` unless it already ends later:
    /// the cluster never takes back time it promised a holder.
    fn extend(&mut self, name: &str, until: u64) {
        self.update(name, |l| {
            if let Some(h) = l.holder.as_mut() {
                h.expires_at = h.expires_at.max(until);
            }
        });
    }

    /// Changes the lease `name` (created if absent) through `change`, then
    /// brings every index in step with it and drops it if nobody holds or
    /// waits for it any more (its value with it). Every change of a lease
    /// goes through here, so the indexes cannot drift from the leases.
    fn update<R>(&mut self, name: &str, change: impl FnOnce(&mut Lease) -> R) -> R {
        // The name is allocated once, when the lease is created; every
        // index shares that allocation.
        let key = self
            .leases
            .get_key_value(name)
            .map_or_else(|| Shared::from(name), |(key, _)| key.clone());
        let lease = self.leases.entry(key.clone()).or_default();
        let before = lease.marks();
        let result = change(lease);
        let after = if lease.is_idle() {
            self.leases.remove(name);
            Marks::default()
        } else {
            lease.marks()
        };
        if (before.expires_at, before.awaited) != (after.expires_at, after.awaited) {
            if let Some(at) = before.expires_at {
                let entry = (at, key.clone());
                self.expiries.remove(&entry);
                self.awaited.remove(&entry);
            }
            if let Some(at) = after.expires_at {
                self.expiries.insert((at, key.clone()));
                if after.awaited {
                    self.awaited.insert((at, key.clone()));
                }
            }
        }
        if before.session != after.session {
            self.lease_sessions
                .moved(&key, before.session, after.session);
        }
        self.value_bytes = self
            .value_bytes
            .saturating_sub(before.value_bytes)
            .saturating_add(after.value_bytes);
        self.waiters = self
            .waiters
            .saturating_sub(before.waiters)
            .saturating_add(after.waiters);
        result
    }

    /// The lease came free: hand it to the first waiter still willing to
    /// wait (validity is checked again now, at grant time).
    fn grant_next(&mut self, name: &str, out: &mut Applied) {
        let Some(lease) = self.leases.get(name) else {
            return;
        };
        if self.is_blocked(name) {
            return;
        }
        let now = self.now;
        let stamp = Stamp(self.next_stamp + 1);
        // Waiters whose session cannot take the lease (ended, or full),
        // decided before the lease is borrowed for the change.
        let barred: Vec<(SessionId, Outcome)> = lease
            .waiters
            .iter()
            .filter_map(|w| w.session)
            .filter_map(|s| Some((s, self.session_refusal(s, false)?)))
            .collect();
        let (gone, turned_away, granted) = self.update(name, |lease| {
            let (mut gone, mut turned_away) = (Vec::new(), Vec::new());
            if lease.holder.is_some() {
                return (gone, turned_away, None);
            }
            while let Some(w) = lease.waiters.pop_front() {
                if w.give_up_at < now {
                    gone.push(w);
                    continue;
                }
                if let Some((_, answer)) = barred.iter().find(|(s, _)| Some(*s) == w.session) {
                    turned_away.push((w, answer.clone()));
                    continue;
                }
                lease.holder = Some(Holder {
                    owner: w.owner.clone(),
                    token: w.token,
                    stamp,
                    expires_at: match w.session {
                        Some(_) => u64::MAX,
                        None => now.saturating_add(w.ttl_us),
                    },
                    session: w.session,
                });
                let value = lease.value.as_deref().cloned();
                return (
                    gone,
                    turned_away,
                    Some((w.client, w.request, value, w.owner)),
                );
            }
            (gone, turned_away, None)
        });
        for w in gone {
            self.answer_waiter(w.client, w.request, Outcome::TimedOut, out);
        }
        for (w, answer) in turned_away {
            self.answer_waiter(w.client, w.request, answer, out);
        }
        if let Some((client, request, value, owner)) = granted {
            self.next_stamp = stamp.0;
            self.answer_waiter(client, request, Outcome::Granted { stamp, value }, out);
            out.events.push(Event::Granted {
                name: name.to_owned(),
                stamp,
                waited: true,
                owner: owner.to_string(),
            });
        }
    }
}

/// A claim on a lease: what [`Op::Acquire`] and [`Op::AcquireInSession`]
/// ask, once checked.
struct Claim<'a> {
    name: &'a str,
    owner: &'a str,
    token: LeaseToken,
    ttl_us: u64,
    wait_ms: u64,
    session: Option<SessionId>,
}

/// Checks the limits every operation must respect. Pure: the same answer
/// on every node, before proposing and when applying.
///
/// # Errors
/// The [`Refusal`] naming the first limit broken.
pub fn validate(op: &Op) -> Result<(), Refusal> {
    if let Op::List { .. } = op {
        return list::validate(op);
    }
    if let Some(checked) = lease_sessions::validate(op) {
        return checked;
    }
    lock_delay::validate(op)?;
    shares::validate(op)?;
    let name = op.name();
    if name.is_empty() {
        return Err(Refusal::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::NameTooLong);
    }
    let (owner, ttl_ms, wait_ms) = match op {
        Op::Acquire {
            owner,
            ttl_ms,
            wait_ms,
            ..
        }
        | Op::AcquireShare {
            owner,
            ttl_ms,
            wait_ms,
            ..
        } => (Some(owner), Some(*ttl_ms), *wait_ms),
        Op::AcquireInSession { owner, wait_ms, .. } => (Some(owner), None, *wait_ms),
        Op::Renew { owner, ttl_ms, .. } => (Some(owner), Some(*ttl_ms), 0),
        Op::Release { owner, .. } | Op::Cancel { owner, .. } | Op::SetLockDelay { owner, .. } => {
            (Some(owner), None, 0)
        }
        Op::Write { owner, value, .. } => {
            if value.len() > MAX_VALUE_BYTES {
                return Err(Refusal::ValueTooLarge);
            }
            (Some(owner), None, 0)
        }
        Op::Read { .. }
        | Op::ForceRelease { .. }
        | Op::List { .. }
        | Op::OpenSession { .. }
        | Op::KeepSession { .. }
        | Op::CloseSession { .. } => (None, None, 0),
    };
    if let Some(owner) = owner {
        check_owner(owner)?;
    }
    if let Some(ttl) = ttl_ms
        && !(1..=MAX_TTL_MS).contains(&ttl)
    {
        return Err(Refusal::TtlOutOfRange);
    }
    if wait_ms > MAX_WAIT_MS {
        return Err(Refusal::WaitTooLong);
    }
    Ok(())
}

/// An owner must be present and within [`MAX_OWNER_BYTES`].
fn check_owner(owner: &str) -> Result<(), Refusal> {
    if owner.is_empty() {
        return Err(Refusal::EmptyOwner);
    }
    if owner.len() > MAX_OWNER_BYTES {
        return Err(Refusal::OwnerTooLong);
    }
    Ok(())
}

/// Admission: what a node checks before it proposes a client's request,
/// so that nothing out of bounds is written to every journal. Pure, and
/// the table applies the same limits again when the request is applied.
///
/// It does not check who sent the request: that [`Op::ForceRelease`]
/// comes from an administrator is for the node to enforce before calling
/// this, from the identity of the connection it came on.
///
/// # Errors
/// The [`Refusal`] naming the first limit broken: [`validate`]'s, then
/// [`Refusal::RequestTooLarge`] when the encoded request is larger than
/// [`MAX_REQUEST_BYTES`] (implied by the field limits today; checked so
/// that a field added later without a limit cannot slip past).
pub fn admit(request: &Request) -> Result<(), Refusal> {
    validate(&request.op)?;
    let size =
        postcard::experimental::serialized_size(request).map_err(|_| Refusal::RequestTooLarge)?;
    if size > MAX_REQUEST_BYTES {
        return Err(Refusal::RequestTooLarge);
    }
    Ok(())
}

#[cfg(test)]
mod events_tests;
#[cfg(test)]
mod tests;
