//! Executing one request that is new to its session: each operation's
//! checks and effect on the table.

use super::{Applied, Event, LeaseTable, MAX_TOTAL_VALUE_BYTES};
use crate::command::{LeaseToken, Op, Outcome, Refusal, Request, SessionId, Stamp};
use bytes::Bytes;

impl LeaseTable {
    /// Executes `req`, whose session has not had it answered: checks it
    /// against the lease as it is now, changes the table and records what
    /// changed in `out`.
    pub(super) fn execute(&mut self, req: &Request, out: &mut Applied) -> Outcome {
        let name = req.op.name();
        let shared_name = !matches!(req.op, Op::List { .. } | Op::AcquireShare { .. });
        if shared_name && self.is_shared(name) {
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
                    name,
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
                        name,
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
            } => self.renew(name, Grant(owner, *stamp, *token), *ttl_ms, out),
            Op::Release {
                owner,
                stamp,
                token,
                ..
            } if self.holds(name, owner, *stamp, *token) => self.release(name, out),
            Op::ForceRelease { .. } => self.release(name, out),
            Op::SetLockDelay {
                owner,
                stamp,
                token,
                lock_delay_ms,
                ..
            } if self.holds(name, owner, *stamp, *token) => {
                self.set_lock_delay(name, *stamp, *lock_delay_ms)
            }
            Op::Release { .. } | Op::SetLockDelay { .. } => self.not_holder(name),
            Op::Cancel { owner, token, .. } => self.cancel(name, owner, *token),
            Op::List {
                prefix,
                after,
                limit,
            } => self.list(prefix, after.as_deref(), *limit),
            Op::Read { .. } => self.read(name),
            Op::Write {
                owner,
                stamp,
                token,
                value,
                ..
            } => self.write(name, Grant(owner, *stamp, *token), value, out),
        }
    }

    /// Renews the holder's lease `name` for `ttl_ms` from now, unless its
    /// end is a lease session's.
    fn renew(&mut self, name: &str, grant: Grant<'_>, ttl_ms: u64, out: &mut Applied) -> Outcome {
        let Grant(owner, stamp, token) = grant;
        if !self.holds(name, owner, stamp, token) {
            return self.not_holder(name);
        }
        if self.bound_to_session(name) {
            return Outcome::Refused(Refusal::LeaseInSession);
        }
        self.extend(name, self.now.saturating_add(ttl_ms.saturating_mul(1000)));
        out.renewed(name, stamp)
    }

    /// Takes `owner`'s waiter (with `token`) out of the line for `name`;
    /// answered the same whether it waited or not.
    fn cancel(&mut self, name: &str, owner: &str, token: LeaseToken) -> Outcome {
        if self.leases.contains_key(name) {
            self.update(name, |l| {
                l.waiters
                    .retain(|w| !(*w.owner == *owner && w.token == token));
            });
        }
        Outcome::Cancelled
    }

    /// The holder of `name` and its value, as of now.
    fn read(&self, name: &str) -> Outcome {
        let lease = self.leases.get(name);
        Outcome::Holder {
            holder: lease.and_then(|l| self.info(l)),
            value: lease.and_then(|l| l.value.as_deref().cloned()),
        }
    }

    /// Stores the holder's fenced `value` with the lease `name`, within the
    /// table's room for values.
    fn write(&mut self, name: &str, grant: Grant<'_>, value: &Bytes, out: &mut Applied) -> Outcome {
        let Grant(owner, stamp, token) = grant;
        if !self.holds(name, owner, stamp, token) {
            return self.not_holder(name);
        }
        let old = self
            .leases
            .get(name)
            .and_then(|l| l.value.as_ref())
            .map_or(0, |v| v.len() as u64);
        let total = self
            .value_bytes
            .saturating_sub(old)
            .saturating_add(value.len() as u64);
        if total > MAX_TOTAL_VALUE_BYTES as u64 {
            return Outcome::Refused(Refusal::ValueSpaceFull);
        }
        self.update(name, |l| l.value = Some(Box::new(value.clone())));
        out.events.push(Event::Written {
            name: name.to_owned(),
            stamp,
            value: value.clone(),
        });
        Outcome::Written
    }
}

/// The grant a request names: its owner, stamp and token, which must all
/// match the holder's for the request to act on the lease.
struct Grant<'a>(&'a str, Stamp, LeaseToken);

/// A claim on a lease: what [`Op::Acquire`] and [`Op::AcquireInSession`]
/// ask, once checked.
pub(super) struct Claim<'a> {
    pub(super) name: &'a str,
    pub(super) owner: &'a str,
    pub(super) token: LeaseToken,
    pub(super) ttl_us: u64,
    pub(super) wait_ms: u64,
    pub(super) session: Option<SessionId>,
}
