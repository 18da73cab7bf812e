//! Lease clients of the simulated cluster and the real-time check that
//! matters to them: at no instant do two holders act on the same lease.
//!
//! Each client keeps the shipped [`ClientCore`], which decides its request
//! ids and its deadlines: it holds a lease from the moment it SENT its
//! request until, on its own (drifting) clock, the core's deadline. While
//! it believes, it repeatedly checks `now + gap < deadline` and then acts
//! on a fenced resource for a short while; sometimes it is paused right
//! after the check (a GC pause, say), which the safety gap must cover.
//! Every action is an interval of real time; intervals of different
//! holders of one lease must never overlap.

use crate::SimOptions;
use crate::clock::Clock;
use std::collections::{BTreeMap, BTreeSet};
use trexlock_lease::client::ClientCore;
use trexlock_lease::{ClientId, DriftBound, LeaseToken, SessionId, Stamp};

/// TTL clients ask for.
pub(crate) const TTL_US: u64 = 300_000;
/// The TTL of some leases: longer than a change of leader takes, so that a
/// holder still believes while a new leader takes over.
pub(crate) const LONG_TTL_US: u64 = 2_000_000;
/// How long one action on the resource lasts, on the client's clock.
pub(crate) const ACTION_US: u64 = 2_000;
/// The lease names clients compete for.
pub(crate) const NAMES: [&str; 2] = ["alpha", "beta"];
/// The lock-delay some holders set on their grant.
pub(crate) const LOCK_DELAY_US: u64 = 150_000;

/// The request a client waits on.
pub(crate) struct Waiting {
    pub(crate) id: u64,
    /// Client clock, µs, of the last time it was sent.
    pub(crate) last_sent_local: u64,
    pub(crate) queued: bool,
}

/// A lease the client works under, and its plans for it.
pub(crate) struct Holding {
    pub(crate) name: String,
    pub(crate) stamp: Stamp,
    /// Renewals the client will still ask for; after them it lets the
    /// lease run out while acting to its very end (or releases it).
    pub(crate) renewals_left: u8,
    /// Whether it releases instead of letting the lease run out.
    pub(crate) release_when_done: bool,
    /// Whether it still means to set a lock-delay on this grant.
    pub(crate) wants_lock_delay: bool,
    /// The share held, for a semaphore or read-write lease.
    pub(crate) mode: Option<trexlock_lease::command::Mode>,
}

/// One application process using leases through its home node.
pub(crate) struct SimClient {
    pub(crate) core: ClientCore,
    /// The session's secret, which every request about its leases carries.
    pub(crate) token: LeaseToken,
    pub(crate) home: usize,
    pub(crate) clock: Clock,
    pub(crate) busy_until: u64,
    pub(crate) waiting: Option<Waiting>,
    pub(crate) holding: Option<Holding>,
    /// Binds its leases to a lease session (every other client).
    pub(crate) uses_sessions: bool,
    /// Its lease session, once opened.
    pub(crate) session: Option<SessionId>,
}

impl SimClient {
    pub(crate) fn new(c: usize, rng: &mut fastrand::Rng, opts: &SimOptions) -> SimClient {
        let id = ClientId(1_000 + c as u64);
        let core = ClientCore::new(id, format!("client-{c}"), DriftBound::DEFAULT)
            .with_sabotage(opts.sabotage.and_then(|s| s.runtime()));
        SimClient {
            core,
            token: LeaseToken(rng.u128(..)),
            home: rng.usize(0..opts.nodes),
            clock: Clock {
                offset: rng.u64(0..1_000 * 1_000_000),
                ppm: rng.i64(-opts.max_drift_ppm..=opts.max_drift_ppm),
            },
            busy_until: 0,
            waiting: None,
            holding: None,
            uses_sessions: c % 2 == 1,
            session: None,
        }
    }
}

/// What holders did, checked against real time.
#[derive(Clone, Debug, Default)]
pub struct LeaseChecker {
    /// Per lease, actions still running: (stamp, client, start, end).
    running: BTreeMap<String, Vec<(Stamp, ClientId, u64, u64)>>,
    /// Per lease, the highest stamp the resource has seen.
    resource: BTreeMap<String, Stamp>,
    pub(crate) actions: u64,
    /// Per grant, when its last action so far ends (real ns).
    last_end: BTreeMap<(String, Stamp), u64>,
    /// Grants whose holder was told its lock-delay (real ns) is set.
    lock_delays: BTreeMap<(String, Stamp), u64>,
    /// Grants that ended by expiry (as some node applied it).
    expired: BTreeSet<(String, Stamp)>,
    /// Largest clock rate error, parts per million.
    max_drift_ppm: i64,
}

impl LeaseChecker {
    /// A checker for clocks whose rate errs by at most `max_drift_ppm`.
    pub fn new(max_drift_ppm: i64) -> LeaseChecker {
        LeaseChecker {
            max_drift_ppm,
            ..LeaseChecker::default()
        }
    }

    /// Records an action on `name` during real `[start, end)`.
    pub fn on_action(
        &mut self,
        name: &str,
        stamp: Stamp,
        client: ClientId,
        start: u64,
        end: u64,
    ) -> Vec<String> {
        self.actions += 1;
        let mut found = Vec::new();
        let running = self.running.entry(name.to_owned()).or_default();
        running.retain(|(_, _, _, e)| *e > start);
        for (other_stamp, other, s, e) in running.iter() {
            if *other_stamp != stamp && *s < end && start < *e {
                found.push(format!(
                    "lease {name}: client {} (stamp {stamp}) acted during [{start}, {end}) ns while client {} (stamp {other_stamp}) acted during [{s}, {e}) ns",
                    client.0, other.0
                ));
            }
        }
        running.push((stamp, client, start, end));
        found.extend(self.check_lock_delays(name, stamp, client, start));
        let last = self.last_end.entry((name.to_owned(), stamp)).or_default();
        *last = (*last).max(end);
        let seen = self.resource.entry(name.to_owned()).or_default();
        if stamp < *seen {
            found.push(format!(
                "lease {name}: the resource saw stamp {stamp} after stamp {seen}"
            ));
        } else {
            *seen = stamp;
        }
        found
    }
}

/// Lock-delay, checked in real time: after a grant with a lock-delay
/// EXPIRED, no later holder of the name acts before the delay has passed
/// since that grant's last action (its deadline, and so the cluster's
/// expiry, came no earlier; the cluster then counts the delay on clocks
/// that run at least `1 - ρ` as fast as real time).
impl LeaseChecker {
    /// The holder of `stamp` was told its lock-delay is set.
    pub fn on_lock_delay(&mut self, name: &str, stamp: Stamp, delay_ns: u64) {
        self.lock_delays.insert((name.to_owned(), stamp), delay_ns);
    }

    /// A node applied the expiry of `stamp`.
    pub fn on_expired(&mut self, name: &str, stamp: Stamp) {
        self.expired.insert((name.to_owned(), stamp));
    }

    /// The lock-delays an action of `client` under `stamp` of `name`
    /// starting at real `start` ns would break (see [`LeaseChecker`]).
    pub fn check_lock_delays(
        &self,
        name: &str,
        stamp: Stamp,
        client: ClientId,
        start: u64,
    ) -> Vec<String> {
        let slack = 1.0 - 3.0 * self.max_drift_ppm as f64 / 1e6;
        let from = (name.to_owned(), Stamp::default());
        let to = (name.to_owned(), stamp);
        self.lock_delays
            .range(from..to)
            .filter(|(grant, _)| self.expired.contains(*grant))
            .filter_map(|((_, earlier), delay_ns)| {
                let end = *self.last_end.get(&(name.to_owned(), *earlier))?;
                let allowed = end + (*delay_ns as f64 * slack) as u64;
                (start < allowed).then(|| {
                    format!(
                        "lease {name}: client {} (stamp {stamp}) acted at {start} ns, within the lock-delay of stamp {earlier}, which expired after acting until {end} ns",
                        client.0
                    )
                })
            })
            .collect()
    }
}
