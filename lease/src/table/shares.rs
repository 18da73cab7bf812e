//! Semaphores and read-write leases: names that several holders share.
//!
//! One line serves both. A semaphore of `n` permits grants up to `n`
//! holders at once; a read-write lease grants any number of readers (up
//! to [`MAX_PERMITS`]) while no writer holds it, or one writer alone. Each
//! holder gets its own stamp (the table's one counter, so stamps grow per
//! name across permits) and renews, releases and expires on its own.
//!
//! Waiters are served strictly first come, first served: a request is
//! granted at once only when nobody waits and its share fits beside the
//! holders; otherwise it queues, and the line's head is granted as soon
//! as it fits. So a waiting writer holds back every reader that comes
//! after it (no writer starvation), and nobody overtakes anybody.
//! Upgrades and downgrades are not offered: a holder asking for the other
//! mode is refused ([`Refusal::OtherModeHeld`]), so a queued writer can
//! never be slipped past (Curator's RW-lock bugs 276 and 621).
//!
//! A share line exists only while someone holds or waits; its next
//! deadline (a holder's expiry or a waiter's give-up) is indexed, every
//! command settles the lines that are due and the leader proposes a tick
//! then. The table stays bounded: share names count toward
//! [`super::MAX_LEASES`], waiters toward the waiter caps, and holders are
//! at most [`MAX_PERMITS`] per name and [`MAX_SHARE_HOLDERS`] in all. A
//! plain lease is not made any larger: share lines live in a map of their
//! own.

use super::owners::Shared;
use super::{
    Applied, Event, Holder, LeaseTable, MAX_LEASES, MAX_WAITERS, MAX_WAITERS_PER_LEASE,
    SESSION_IDLE_US, Waiter,
};
use crate::command::{
    LeaseToken, ListedHolder, ListedLease, Mode, Op, Outcome, Refusal, Request, Stamp,
};
use std::collections::VecDeque;

mod snapshot;

/// Most permits of a semaphore, and most readers of a read-write lease.
pub const MAX_PERMITS: u32 = 64;
/// Most shares (permits and read or write holds) held in all names.
pub const MAX_SHARE_HOLDERS: usize = 100_000;

/// What a shared name is: every request for it must agree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Semaphore(u32),
    ReadWrite,
}

impl Kind {
    fn of(mode: Mode) -> Kind {
        match mode {
            Mode::Permit { permits } => Kind::Semaphore(permits),
            Mode::Read | Mode::Write => Kind::ReadWrite,
        }
    }
}

/// The holders of one shared name and its line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ShareLine {
    kind: Kind,
    holders: Vec<(Holder, Mode)>,
    waiters: VecDeque<(Waiter, Mode)>,
}

impl ShareLine {
    fn is_idle(&self) -> bool {
        self.holders.is_empty() && self.waiters.is_empty()
    }

    /// Whether a share of `mode` may be held beside the current holders;
    /// `extra` more permits than the semaphore has (0 unless sabotaged).
    fn fits(&self, mode: Mode, extra: usize) -> bool {
        match self.kind {
            Kind::Semaphore(permits) => self.holders.len() < permits as usize + extra,
            Kind::ReadWrite if mode == Mode::Write => self.holders.is_empty(),
            Kind::ReadWrite => {
                self.holders.len() < MAX_PERMITS as usize
                    && self.holders.iter().all(|(_, m)| *m != Mode::Write)
            }
        }
    }

    /// The next table time at which the line changes by itself: a
    /// holder's expiry, or just after a waiter's give-up.
    fn due(&self) -> Option<u64> {
        let expiries = self.holders.iter().map(|(h, _)| h.expires_at);
        let give_ups = self
            .waiters
            .iter()
            .map(|(w, _)| w.give_up_at.saturating_add(1));
        expiries.chain(give_ups).min()
    }

    /// The line as a list reports it at table time `now`: every holder,
    /// oldest grant first; `None` while nobody holds a share.
    pub(super) fn listed(&self, name: &str, now: u64) -> Option<ListedLease> {
        if self.holders.is_empty() {
            return None;
        }
        let holders = self
            .holders
            .iter()
            .map(|(h, mode)| ListedHolder {
                owner: h.owner.to_string(),
                stamp: h.stamp,
                remaining_ms: h.expires_at.saturating_sub(now) / 1000,
                mode: Some(*mode),
                session: None,
            })
            .collect();
        Some(ListedLease {
            name: name.to_owned(),
            holders,
            waiters: u32::try_from(self.waiters.len()).unwrap_or(u32::MAX),
        })
    }

    fn holder_of(&self, owner: &str, token: LeaseToken) -> Option<usize> {
        self.holders
            .iter()
            .position(|(h, _)| &*h.owner == owner && h.token == token)
    }
}

/// What an acquire finds of the line it asks to join.
struct Found {
    kind: Kind,
    /// The caller's own share: its position, stamp and mode.
    held: Option<(usize, Stamp, Mode)>,
    waiting: bool,
    holders: usize,
    waiters: usize,
    /// Nobody waits (or the caller may skip the line) and the share fits.
    free: bool,
}

/// A claim on a share, once checked: who asks, in which mode, for how
/// long.
struct ShareClaim<'a> {
    name: &'a str,
    owner: &'a str,
    token: LeaseToken,
    ttl_us: u64,
    mode: Mode,
}

/// What the table's indexes record about a line.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Marks {
    due: Option<u64>,
    holders: usize,
    waiters: usize,
}

fn marks(line: Option<&ShareLine>) -> Marks {
    line.map_or(Marks::default(), |l| Marks {
        due: l.due(),
        holders: l.holders.len(),
        waiters: l.waiters.len(),
    })
}

impl LeaseTable {
    /// True when `name` is a semaphore or a read-write lease now.
    pub(super) fn is_shared(&self, name: &str) -> bool {
        self.shares.contains_key(name)
    }

    /// How many shares are held in all names.
    pub fn share_holders_len(&self) -> usize {
        self.share_holders
    }

    /// The earliest table time at which a share line changes by itself.
    pub(super) fn next_share_due_us(&self) -> Option<u64> {
        self.share_due.first().map(|(at, _)| *at)
    }

    /// Changes the line of `name` (made of `kind` if absent) through
    /// `change`, then brings the indexes and counters in step and drops
    /// the line once nobody holds or waits. Every change of a line goes
    /// through here.
    fn update_share<R>(
        &mut self,
        name: &str,
        kind: Kind,
        change: impl FnOnce(&mut ShareLine) -> R,
    ) -> R {
        let key = self
            .shares
            .get_key_value(name)
            .map_or_else(|| Shared::from(name), |(key, _)| key.clone());
        let before = marks(self.shares.get(name));
        let line = self.shares.entry(key.clone()).or_insert_with(|| ShareLine {
            kind,
            holders: Vec::new(),
            waiters: VecDeque::new(),
        });
        let result = change(line);
        let after = if line.is_idle() {
            self.shares.remove(name);
            Marks::default()
        } else {
            marks(Some(line))
        };
        if before.due != after.due {
            if let Some(at) = before.due {
                self.share_due.remove(&(at, key.clone()));
            }
            if let Some(at) = after.due {
                self.share_due.insert((at, key));
            }
        }
        self.share_holders = self
            .share_holders
            .saturating_sub(before.holders)
            .saturating_add(after.holders);
        self.waiters = self
            .waiters
            .saturating_sub(before.waiters)
            .saturating_add(after.waiters);
        result
    }

    /// Settles every line that is due: expired holders go, waiters whose
    /// wait ran out are answered, and the line's head is served. Each due
    /// line is served once per command, so a line whose due time stays
    /// behind the clock can never hold up the table (and with it every
    /// replica applying the same command).
    pub(super) fn settle_shares(&mut self, out: &mut Applied) {
        let now = self.now;
        let due: Vec<Shared> = self
            .share_due
            .iter()
            .take_while(|(at, _)| *at <= now)
            .map(|(_, name)| name.clone())
            .collect();
        for name in due {
            self.serve_share(&name, out);
        }
    }

    /// Brings the line of `name` up to now and grants its head while it
    /// fits.
    fn serve_share(&mut self, name: &str, out: &mut Applied) {
        let Some(kind) = self.shares.get(name).map(|l| l.kind) else {
            return;
        };
        let now = self.now;
        let extra = usize::from(sabotaged!(self, SemaphoreOffByOne));
        let mut stamp = self.next_stamp;
        let (expired, gone, granted) = self.update_share(name, kind, |line| {
            let (expired, live): (Vec<_>, Vec<_>) = std::mem::take(&mut line.holders)
                .into_iter()
                .partition(|(h, _)| h.expires_at <= now);
            line.holders = live;
            // Anywhere in the line, not only at its head: the line is due
            // at every waiter's give-up (see `due`).
            let (gone, waiting): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut line.waiters)
                .into_iter()
                .partition(|(w, _)| w.give_up_at < now);
            line.waiters = waiting;
            let mut granted = Vec::new();
            while let Some((_, mode)) = line.waiters.front() {
                if !line.fits(*mode, extra) {
                    break;
                }
                let mode = *mode;
                let Some((w, _)) = line.waiters.pop_front() else {
                    break;
                };
                stamp += 1;
                granted.push((w.client, w.request, Stamp(stamp), w.owner.to_string()));
                line.holders.push((
                    Holder {
                        owner: w.owner,
                        token: w.token,
                        stamp: Stamp(stamp),
                        expires_at: now.saturating_add(w.ttl_us),
                        session: None,
                    },
                    mode,
                ));
            }
            (expired, gone, granted)
        });
        self.next_stamp = stamp;
        for (h, _) in expired {
            out.events.push(Event::Expired {
                name: name.to_owned(),
                stamp: h.stamp,
            });
        }
        for (w, _) in gone {
            self.answer_waiter(w.client, w.request, Outcome::TimedOut, out);
        }
        for (client, request, stamp, owner) in granted {
            let outcome = Outcome::Granted { stamp, value: None };
            self.answer_waiter(client, request, outcome, out);
            out.events.push(Event::Granted {
                name: name.to_owned(),
                stamp,
                waited: true,
                owner,
            });
        }
    }

    /// Executes [`Op::AcquireShare`].
    pub(super) fn acquire_share(&mut self, req: &Request, out: &mut Applied) -> Outcome {
        let Op::AcquireShare {
            name,
            owner,
            token,
            ttl_ms,
            wait_ms,
            mode,
        } = &req.op
        else {
            return Outcome::Refused(Refusal::KindMismatch);
        };
        let kind = Kind::of(*mode);
        if self.leases.contains_key(name.as_str()) || self.is_blocked(name) {
            return Outcome::Refused(Refusal::KindMismatch);
        }
        let ttl_us = ttl_ms.saturating_mul(1000);
        let now = self.now;
        let extra = usize::from(sabotaged!(self, SemaphoreOffByOne));
        let slips = sabotaged!(self, ReaderSlipsPastWriter) && *mode == Mode::Read;
        let found = self.shares.get(name.as_str()).map(|l| Found {
            kind: l.kind,
            held: l
                .holder_of(owner, *token)
                .map(|i| (i, l.holders[i].0.stamp, l.holders[i].1)),
            waiting: l
                .waiters
                .iter()
                .any(|(w, _)| &*w.owner == owner.as_str() && w.token == *token),
            holders: l.holders.len(),
            waiters: l.waiters.len(),
            free: (l.waiters.is_empty() || slips) && l.fits(*mode, extra),
        });
        let (holders, waiters, free) = match found {
            Some(f) if f.kind != kind => return Outcome::Refused(Refusal::KindMismatch),
            Some(Found {
                held: Some((_, _, held_mode)),
                ..
            }) if held_mode != *mode => return Outcome::Refused(Refusal::OtherModeHeld),
            Some(Found {
                held: Some((i, stamp, _)),
                ..
            }) => {
                self.update_share(name, kind, |l| {
                    let h = &mut l.holders[i].0;
                    h.expires_at = h.expires_at.max(now.saturating_add(ttl_us));
                });
                out.renewed(name, stamp);
                return Outcome::Granted { stamp, value: None };
            }
            Some(Found { waiting: true, .. }) => return Outcome::Queued,
            Some(f) => (f.holders, f.waiters, f.free),
            None if self.len() + self.blocked_len() >= MAX_LEASES => {
                return Outcome::Refused(Refusal::TooManyLeases);
            }
            None => (0, 0, true),
        };
        let claim = ShareClaim {
            name,
            owner,
            token: *token,
            ttl_us,
            mode: *mode,
        };
        if free {
            return self.grant_share(&claim, out);
        }
        if *wait_ms == 0 {
            return Outcome::Busy {
                holders: holders as u32,
                waiters: waiters as u32,
            };
        }
        if waiters >= MAX_WAITERS_PER_LEASE {
            return Outcome::Refused(Refusal::TooManyWaiters);
        }
        if self.waiters >= MAX_WAITERS {
            return Outcome::Refused(Refusal::TooManyWaitersInAll);
        }
        self.queue_for_share(req, &claim, *wait_ms)
    }

    /// Grants `claim` a share of its line, which has room for it.
    fn grant_share(&mut self, claim: &ShareClaim<'_>, out: &mut Applied) -> Outcome {
        if self.share_holders >= MAX_SHARE_HOLDERS {
            return Outcome::Refused(Refusal::TooManyShareHolders);
        }
        self.next_stamp += 1;
        let stamp = Stamp(self.next_stamp);
        let holder = Holder {
            owner: self.owners.intern(claim.owner),
            token: claim.token,
            stamp,
            expires_at: self.now.saturating_add(claim.ttl_us),
            session: None,
        };
        let mode = claim.mode;
        self.update_share(claim.name, Kind::of(mode), |l| {
            l.holders.push((holder, mode))
        });
        out.events.push(Event::Granted {
            name: claim.name.to_owned(),
            stamp,
            waited: false,
            owner: claim.owner.to_owned(),
        });
        Outcome::Granted { stamp, value: None }
    }

    /// Puts `claim` (the request `req`) in its line for up to `wait_ms`;
    /// the line has room for it.
    fn queue_for_share(&mut self, req: &Request, claim: &ShareClaim<'_>, wait_ms: u64) -> Outcome {
        let give_up_at = self.now.saturating_add(wait_ms.saturating_mul(1000));
        let waiter = Waiter {
            owner: self.owners.intern(claim.owner),
            token: claim.token,
            client: req.client,
            request: req.request,
            ttl_us: claim.ttl_us,
            give_up_at,
            session: None,
        };
        let mode = claim.mode;
        self.update_share(claim.name, Kind::of(mode), |l| {
            l.waiters.push_back((waiter, mode))
        });
        // Its answer may come as late as the end of its wait: the session
        // (and so its mark and that answer) must outlive it.
        self.touch_session(req.client, give_up_at.saturating_add(SESSION_IDLE_US));
        Outcome::Queued
    }

    /// Executes an operation on a name that is shared now: renew, release
    /// and cancel act on the caller's share, a forced release ends every
    /// share; the rest do not apply to a shared name.
    pub(super) fn execute_on_share(&mut self, op: &Op, out: &mut Applied) -> Outcome {
        let name = op.name();
        let Some(kind) = self.shares.get(name).map(|l| l.kind) else {
            return Outcome::NotHolder { current: None };
        };
        let now = self.now;
        let mine = |l: &ShareLine, owner: &str, stamp: Stamp, token| {
            l.holders
                .iter()
                .position(|(h, _)| &*h.owner == owner && h.stamp == stamp && h.token == token)
        };
        match op {
            Op::Renew {
                owner,
                stamp,
                token,
                ttl_ms,
                ..
            } => {
                let until = now.saturating_add(ttl_ms.saturating_mul(1000));
                let renewed = self.update_share(name, kind, |l| {
                    let i = mine(l, owner, *stamp, *token)?;
                    let h = &mut l.holders[i].0;
                    h.expires_at = h.expires_at.max(until);
                    Some(())
                });
                if renewed.is_none() {
                    return Outcome::NotHolder { current: None };
                }
                out.renewed(name, *stamp)
            }
            Op::Release {
                owner,
                stamp,
                token,
                ..
            } => {
                let released = self.update_share(name, kind, |l| {
                    let i = mine(l, owner, *stamp, *token)?;
                    Some(l.holders.remove(i))
                });
                if released.is_none() {
                    return Outcome::NotHolder { current: None };
                }
                out.released(name, *stamp);
                self.serve_share(name, out);
                Outcome::Released
            }
            Op::ForceRelease { .. } => {
                let ended = self.update_share(name, kind, |l| std::mem::take(&mut l.holders));
                if ended.is_empty() {
                    return Outcome::NotHolder { current: None };
                }
                for (h, _) in &ended {
                    out.released(name, h.stamp);
                }
                self.serve_share(name, out);
                Outcome::Released
            }
            Op::Cancel { owner, token, .. } => {
                self.update_share(name, kind, |l| {
                    l.waiters
                        .retain(|(w, _)| !(&*w.owner == owner.as_str() && w.token == *token));
                });
                // Leaving may let the ones behind fit (a reader behind a
                // writer that gave up).
                self.serve_share(name, out);
                Outcome::Cancelled
            }
            _ => Outcome::Refused(Refusal::KindMismatch),
        }
    }
}

/// The limits of an [`Op::AcquireShare`] beyond those every acquire has:
/// a semaphore of 1 to [`MAX_PERMITS`] permits.
pub(super) fn validate(op: &Op) -> Result<(), Refusal> {
    if let Op::AcquireShare {
        mode: Mode::Permit { permits },
        ..
    } = op
        && !(1..=MAX_PERMITS).contains(permits)
    {
        return Err(Refusal::PermitsOutOfRange);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
