//! Granting, queueing, renewing and releasing plain leases, and handing a
//! lease that came free to the next one in line.

use super::execute::Claim;
use super::line::Line;
use super::owners::Shared;
use super::{
    Applied, Event, Holder, LeaseTable, MAX_LEASES, MAX_WAITERS, MAX_WAITERS_PER_LEASE, Response,
    SESSION_IDLE_US, Waiter,
};
use crate::command::{ClientId, LeaseToken, Outcome, Refusal, Request, SessionId, Stamp};
use std::collections::VecDeque;

impl LeaseTable {
    /// Grants, renews (reentrant), queues or refuses a claim on a lease.
    pub(super) fn acquire(
        &mut self,
        req: &Request,
        claim: Claim<'_>,
        out: &mut Applied,
    ) -> Outcome {
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
    pub(super) fn bound_to_session(&self, name: &str) -> bool {
        self.leases
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| h.session.is_some())
    }

    /// Puts `waiter` in line for the held lease `name`, first answering
    /// (and dropping) the waiters whose wait ran out, so that they never
    /// take up room in the line.
    pub(super) fn queue(&mut self, name: &str, waiter: Waiter, out: &mut Applied) -> Outcome {
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
    pub(super) fn answer_waiter(
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
    pub(super) fn release(&mut self, name: &str, out: &mut Applied) -> Outcome {
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

    pub(super) fn holds(&self, name: &str, owner: &str, stamp: Stamp, token: LeaseToken) -> bool {
        self.leases
            .get(name)
            .and_then(|l| l.holder.as_ref())
            .is_some_and(|h| &*h.owner == owner && h.stamp == stamp && h.token == token)
    }

    pub(super) fn not_holder(&self, name: &str) -> Outcome {
        Outcome::NotHolder {
            current: self.leases.get(name).and_then(|l| self.info(l)),
        }
    }

    /// Makes `owner` the holder of the free lease `name`, with a fresh stamp.
    pub(super) fn grant(
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
    pub(super) fn own_expiry(&self, ttl_us: u64, session: Option<SessionId>) -> u64 {
        match session {
            Some(_) => u64::MAX,
            None => self.now.saturating_add(ttl_us),
        }
    }

    /// Moves the holder's expiry to `until` unless it already ends later:
    /// the cluster never takes back time it promised a holder.
    pub(super) fn extend(&mut self, name: &str, until: u64) {
        self.update(name, |l| {
            if let Some(h) = l.holder.as_mut() {
                h.expires_at = h.expires_at.max(until);
            }
        });
    }

    /// The lease came free: hand it to the first waiter still willing to
    /// wait (validity is checked again now, at grant time).
    pub(super) fn grant_next(&mut self, name: &str, out: &mut Applied) {
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
