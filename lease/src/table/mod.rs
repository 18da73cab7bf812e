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

use crate::command::{Body, ClientId, Command, HolderInfo, Op, Outcome, Stamp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use trexlock_paxos::Ballot;

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
/// A session that sends nothing for this long (table time) is forgotten.
pub const SESSION_IDLE_US: u64 = 10 * 60 * 1_000_000;

/// The current holder of a lease.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Holder {
    owner: String,
    stamp: Stamp,
    expires_at: u64,
}

/// Someone waiting in line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Waiter {
    owner: String,
    client: ClientId,
    request: u64,
    ttl_us: u64,
    give_up_at: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Lease {
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
    value: Option<Bytes>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    last_seen: u64,
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

/// Something that happened to a lease, for metrics and observers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A lease was granted (from a request or from the wait line).
    Granted {
        /// Lease name.
        name: String,
        /// Its stamp.
        stamp: Stamp,
        /// True when the grantee had waited in line.
        waited: bool,
    },
    /// A lease ran out without being released.
    Expired {
        /// Lease name.
        name: String,
        /// The stamp that expired.
        stamp: Stamp,
    },
    /// A lease was renewed.
    Renewed {
        /// Lease name.
        name: String,
    },
    /// A lease was released.
    Released {
        /// Lease name.
        name: String,
    },
}

/// What applying one command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Replies, to be routed to the sessions that asked.
    pub responses: Vec<Response>,
    /// Lease events.
    pub events: Vec<Event>,
}

/// The replicated lease table. See the module docs for how time works.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    now: u64,
    epoch: Ballot,
    epoch_base: u64,
    next_stamp: u64,
    leases: BTreeMap<String, Lease>,
    expiries: BTreeSet<(u64, String)>,
    sessions: BTreeMap<ClientId, Session>,
}

impl LeaseTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
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

    /// How many leases have a holder, waiters or a value.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// True when no lease is tracked.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The current holder of `name`, as of the last applied command.
    pub fn holder(&self, name: &str) -> Option<HolderInfo> {
        self.leases.get(name).and_then(|l| self.info(l))
    }

    /// The earliest table time at which a lease that someone waits for
    /// runs out: the leader proposes a tick then, so expiry is decided by
    /// a command, never by a timer on one node.
    pub fn next_deadline_us(&self) -> Option<u64> {
        self.expiries
            .iter()
            .find(|(_, name)| self.leases.get(name).is_some_and(|l| !l.waiters.is_empty()))
            .map(|(at, _)| *at)
    }

    /// Applies one command. Deterministic: the result depends only on the
    /// table and the command.
    pub fn apply(&mut self, command: &Command) -> Applied {
        let mut out = Applied::default();
        self.advance(command.epoch, command.elapsed_us);
        self.expire_due(&mut out);
        match &command.body {
            Body::Tick => self.forget_idle_sessions(),
            Body::Request(req) => {
                let session = self.sessions.entry(req.client).or_default();
                session.last_seen = self.now;
                session.outcomes = session.outcomes.split_off(&req.acked_below);
                let outcome = match session.outcomes.get(&req.request) {
                    Some(done) => done.clone(),
                    None => {
                        let outcome = self.execute(req.client, req.request, &req.op, &mut out);
                        self.remember(req.client, req.request, &outcome);
                        outcome
                    }
                };
                out.responses.push(Response {
                    client: req.client,
                    request: req.request,
                    outcome,
                });
            }
        }
        out
    }

    /// Serialises the whole table (a snapshot).
    pub fn to_snapshot(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("serialising to a Vec cannot fail"))
    }

    /// Restores a table from [`LeaseTable::to_snapshot`].
    ///
    /// # Errors
    /// The bytes are not a snapshot of this format.
    pub fn from_snapshot(bytes: &[u8]) -> Result<LeaseTable, postcard::Error> {
        postcard::from_bytes(bytes)
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

    fn expire_due(&mut self, out: &mut Applied) {
        while let Some((at, name)) = self.expiries.first().cloned() {
            if at > self.now {
                break;
            }
            self.expiries.pop_first();
            let Some(lease) = self.leases.get_mut(&name) else {
                continue;
            };
            if let Some(h) = lease.holder.take() {
                out.events.push(Event::Expired {
                    name: name.clone(),
                    stamp: h.stamp,
                });
            }
            self.grant_next(&name, out);
        }
    }

    fn forget_idle_sessions(&mut self) {
        let now = self.now;
        self.sessions
            .retain(|_, s| s.last_seen.saturating_add(SESSION_IDLE_US) > now);
    }

    fn remember(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        if let Some(s) = self.sessions.get_mut(&client) {
            s.outcomes.insert(request, outcome.clone());
        }
    }

    fn info(&self, lease: &Lease) -> Option<HolderInfo> {
        lease.holder.as_ref().map(|h| HolderInfo {
            owner: h.owner.clone(),
            stamp: h.stamp,
            remaining_ms: h.expires_at.saturating_sub(self.now) / 1000,
        })
    }

    fn execute(&mut self, client: ClientId, request: u64, op: &Op, out: &mut Applied) -> Outcome {
        if let Err(why) = validate(op) {
            return Outcome::Invalid(why);
        }
        let now = self.now;
        let name = op.name().to_owned();
        match op {
            Op::Acquire {
                owner,
                ttl_ms,
                wait_ms,
                ..
            } => {
                let held_by = self
                    .leases
                    .get(&name)
                    .and_then(|l| l.holder.as_ref())
                    .map(|h| (h.owner == *owner, h.stamp));
                match held_by {
                    Some((true, stamp)) => {
                        self.set_expiry(&name, now + ttl_ms * 1000);
                        out.events.push(Event::Renewed { name: name.clone() });
                        Outcome::Granted {
                            stamp,
                            value: self.leases[&name].value.clone(),
                        }
                    }
                    Some((false, _)) if *wait_ms > 0 => {
                        let lease = self.leases.get_mut(&name).expect("held");
                        if !lease.waiters.iter().any(|w| w.owner == *owner) {
                            lease.waiters.push_back(Waiter {
                                owner: owner.clone(),
                                client,
                                request,
                                ttl_us: ttl_ms * 1000,
                                give_up_at: now + wait_ms * 1000,
                            });
                        }
                        Outcome::Queued
                    }
                    Some((false, _)) => Outcome::Held(self.holder(&name).expect("held")),
                    None => {
                        let stamp = self.grant(&name, owner.clone(), ttl_ms * 1000);
                        out.events.push(Event::Granted {
                            name: name.clone(),
                            stamp,
                            waited: false,
                        });
                        Outcome::Granted {
                            stamp,
                            value: self.leases[&name].value.clone(),
                        }
                    }
                }
            }
            Op::Renew {
                owner,
                stamp,
                ttl_ms,
                ..
            } => {
                if !self.holds(&name, owner, *stamp) {
                    return self.not_holder(&name);
                }
                self.set_expiry(&name, now + ttl_ms * 1000);
                out.events.push(Event::Renewed { name });
                Outcome::Renewed
            }
            Op::Release { owner, stamp, .. } => {
                if !self.holds(&name, owner, *stamp) {
                    return self.not_holder(&name);
                }
                let lease = self.leases.get_mut(&name).expect("held");
                if let Some(h) = lease.holder.take() {
                    self.expiries.remove(&(h.expires_at, name.clone()));
                }
                out.events.push(Event::Released { name: name.clone() });
                self.grant_next(&name, out);
                Outcome::Released
            }
            Op::Cancel { owner, .. } => {
                if let Some(lease) = self.leases.get_mut(&name) {
                    lease.waiters.retain(|w| w.owner != *owner);
                    self.drop_if_idle(&name);
                }
                Outcome::Cancelled
            }
            Op::Read { .. } => {
                let lease = self.leases.get(&name);
                Outcome::Holder {
                    holder: lease.and_then(|l| self.info(l)),
                    value: lease.and_then(|l| l.value.clone()),
                }
            }
            Op::Write {
                owner,
                stamp,
                value,
                ..
            } => {
                if !self.holds(&name, owner, *stamp) {
                    return self.not_holder(&name);
                }
                self.leases.get_mut(&name).expect("held").value = Some(value.clone());
                Outcome::Written
            }
        }
    }

    fn holds(&self, name: &str, owner: &str, stamp: Stamp) -> bool {
        self.leases
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.owner == owner && h.stamp == stamp)
    }

    fn not_holder(&self, name: &str) -> Outcome {
        Outcome::NotHolder {
            current: self.leases.get(name).and_then(|l| self.info(l)),
        }
    }

    /// Makes `owner` the holder with a fresh stamp.
    fn grant(&mut self, name: &str, owner: String, ttl_us: u64) -> Stamp {
        self.next_stamp += 1;
        let stamp = Stamp(self.next_stamp);
        let expires_at = self.now + ttl_us;
        let lease = self.leases.entry(name.to_owned()).or_default();
        lease.holder = Some(Holder {
            owner,
            stamp,
            expires_at,
        });
        self.expiries.insert((expires_at, name.to_owned()));
        stamp
    }

    fn set_expiry(&mut self, name: &str, expires_at: u64) {
        let lease = self.leases.get_mut(name).expect("held");
        let holder = lease.holder.as_mut().expect("held");
        self.expiries.remove(&(holder.expires_at, name.to_owned()));
        holder.expires_at = expires_at;
        self.expiries.insert((expires_at, name.to_owned()));
    }

    /// The lease came free: hand it to the first waiter still willing to
    /// wait (validity is checked again now, at grant time).
    fn grant_next(&mut self, name: &str, out: &mut Applied) {
        while let Some(waiter) = self
            .leases
            .get_mut(name)
            .and_then(|l| l.waiters.pop_front())
        {
            if waiter.give_up_at < self.now {
                self.remember(waiter.client, waiter.request, &Outcome::TimedOut);
                out.responses.push(Response {
                    client: waiter.client,
                    request: waiter.request,
                    outcome: Outcome::TimedOut,
                });
                continue;
            }
            let stamp = self.grant(name, waiter.owner, waiter.ttl_us);
            let value = self.leases[name].value.clone();
            let outcome = Outcome::Granted { stamp, value };
            self.remember(waiter.client, waiter.request, &outcome);
            out.responses.push(Response {
                client: waiter.client,
                request: waiter.request,
                outcome,
            });
            out.events.push(Event::Granted {
                name: name.to_owned(),
                stamp,
                waited: true,
            });
            return;
        }
        self.drop_if_idle(name);
    }

    fn drop_if_idle(&mut self, name: &str) {
        if self
            .leases
            .get(name)
            .is_some_and(|l| l.holder.is_none() && l.waiters.is_empty() && l.value.is_none())
        {
            self.leases.remove(name);
        }
    }
}

/// Checks the limits every request must respect.
pub fn validate(op: &Op) -> Result<(), String> {
    let name = op.name();
    if name.is_empty() {
        return Err("lease name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(format!("lease name is longer than {MAX_NAME_BYTES} bytes"));
    }
    let (owner, ttl_ms, wait_ms) = match op {
        Op::Acquire {
            owner,
            ttl_ms,
            wait_ms,
            ..
        } => (Some(owner), Some(*ttl_ms), *wait_ms),
        Op::Renew { owner, ttl_ms, .. } => (Some(owner), Some(*ttl_ms), 0),
        Op::Release { owner, .. } | Op::Cancel { owner, .. } => (Some(owner), None, 0),
        Op::Write { owner, value, .. } => {
            if value.len() > MAX_VALUE_BYTES {
                return Err(format!("value is larger than {MAX_VALUE_BYTES} bytes"));
            }
            (Some(owner), None, 0)
        }
        Op::Read { .. } => (None, None, 0),
    };
    if let Some(owner) = owner {
        if owner.is_empty() {
            return Err("owner is empty".into());
        }
        if owner.len() > MAX_OWNER_BYTES {
            return Err(format!("owner is longer than {MAX_OWNER_BYTES} bytes"));
        }
    }
    if let Some(ttl) = ttl_ms
        && !(1..=MAX_TTL_MS).contains(&ttl)
    {
        return Err(format!("ttl must be between 1 ms and {MAX_TTL_MS} ms"));
    }
    if wait_ms > MAX_WAIT_MS {
        return Err(format!("wait must be at most {MAX_WAIT_MS} ms"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
