//! Lease clients of the simulated cluster and the real-time check that
//! matters to them: at no instant do two holders act on the same lease.
//!
//! A client holds a lease from the moment it SENT its request until, on its
//! own (drifting) clock, `sent + DriftBound::holder_belief(ttl)`. While it
//! believes, it repeatedly checks `now + gap < end` and then acts on a
//! fenced resource for a short while; sometimes it is paused right after
//! the check (a GC pause, say), which the safety gap must cover. Every
//! action is an interval of real time; intervals of different holders of
//! one lease must never overlap.

use crate::clock::Clock;
use std::collections::BTreeMap;
use trexlock_lease::{ClientId, LeaseToken, Request, Stamp};

/// TTL clients ask for.
pub(crate) const TTL_US: u64 = 300_000;
/// How long one action on the resource lasts, on the client's clock.
pub(crate) const ACTION_US: u64 = 2_000;
/// The lease names clients compete for.
pub(crate) const NAMES: [&str; 2] = ["alpha", "beta"];

/// A request awaiting its answer.
pub(crate) struct Outstanding {
    pub(crate) request: Request,
    pub(crate) sent_local: u64,
    pub(crate) last_sent_local: u64,
    pub(crate) queued: bool,
}

/// A lease the client believes it holds.
pub(crate) struct Holding {
    pub(crate) name: String,
    pub(crate) stamp: Stamp,
    pub(crate) belief_end_local: u64,
    /// Renewals the client will still ask for; after them it lets the
    /// lease run out while acting to its very end (or releases it).
    pub(crate) renewals_left: u8,
    /// Whether it releases instead of letting the lease run out.
    pub(crate) release_when_done: bool,
}

/// One application process using leases through its home node.
pub(crate) struct SimClient {
    pub(crate) id: ClientId,
    pub(crate) owner: String,
    pub(crate) token: LeaseToken,
    pub(crate) home: usize,
    pub(crate) clock: Clock,
    pub(crate) busy_until: u64,
    pub(crate) next_request: u64,
    pub(crate) outstanding: Option<Outstanding>,
    pub(crate) holding: Option<Holding>,
}

impl SimClient {
    /// Builds the next request of this session.
    pub(crate) fn request(&mut self, op: trexlock_lease::command::Op) -> Request {
        self.next_request += 1;
        Request {
            client: self.id,
            request: self.next_request,
            acked_below: self.next_request,
            op,
        }
    }
}

/// What holders did, checked against real time.
#[derive(Default)]
pub(crate) struct LeaseChecker {
    /// Per lease, actions still running: (stamp, client, start, end).
    running: BTreeMap<String, Vec<(Stamp, ClientId, u64, u64)>>,
    /// Per lease, the highest stamp the resource has seen.
    resource: BTreeMap<String, Stamp>,
    pub(crate) actions: u64,
}

impl LeaseChecker {
    /// Records an action on `name` during real `[start, end)`.
    pub(crate) fn on_action(
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
