//! Ground truth for the primitives beside the lease: semaphores and
//! read-write leases, lock-delays and watches, judged by the simulator's
//! own real-time checkers ([`ShareChecker`], [`LeaseChecker`],
//! [`WatchChecker`]) so that the model and the simulator hold the cores
//! to one definition of each rule.
//!
//! [`ShareChecker`]: trexlock_sim::shares::ShareChecker
//! [`LeaseChecker`]: trexlock_sim::leases::LeaseChecker
//! [`WatchChecker`]: trexlock_sim::watches::WatchChecker

use crate::Property;
use crate::ghost::Ghost;
use trexlock_lease::command::Mode;
use trexlock_lease::table::{Applied, Event};
use trexlock_lease::watch::{WatchDelivery, WatchError, WatchId, WatchRequest};
use trexlock_lease::{ClientId, Stamp};
use trexlock_paxos::{NodeId, Slot};
use trexlock_sim::watches::WatchChecker;

/// An action lasts this long: holders act at an instant of the model.
const INSTANT_NS: u64 = 1;

impl Ghost {
    /// A request for a share was sent for the first time.
    pub(crate) fn share_sent(&mut self, client: ClientId, request: u64, mode: Mode, at: u64) {
        self.shares.on_sent(client, request, mode, at);
    }

    /// The client waiting on `request` learnt it is queued.
    pub(crate) fn share_queued(&mut self, client: ClientId, request: u64, at: u64) {
        self.shares.on_queued(client, request, at);
    }

    /// The client waiting on `request` for a share was granted `stamp`: no
    /// reader sent after a writer was queued is granted before it.
    pub(crate) fn share_granted(&mut self, client: ClientId, request: u64, stamp: Stamp) {
        if let Some(what) = self.shares.on_granted(client, request, stamp).pop() {
            self.violate(Property::NoReaderOvertakesAQueuedWriter, what);
        }
    }

    /// The holders of shares act at real instant `at`: no more of them
    /// than a semaphore has permits, nobody beside a writer.
    pub(crate) fn shares_act(&mut self, holders: &[(&str, Stamp, ClientId, Mode)], at: u64) {
        // The checker keeps actions while they last; these last an
        // instant, so a copy judges them and the ghost keeps nothing.
        let mut shares = self.shares.clone();
        for (name, stamp, client, mode) in holders {
            let found = shares.on_action(name, *stamp, *client, *mode, at, at + INSTANT_NS);
            if let Some(what) = found.into_iter().next() {
                self.violate(Property::SharesWithinTheirLimits, what);
            }
        }
    }

    /// The holder `client` of grant `stamp` of `name` acts at real instant
    /// `at` (step `now`): never within the lock-delay of an earlier grant
    /// that expired (checked only when the scenario sets lock-delays).
    pub(crate) fn lease_acts(
        &mut self,
        name: &str,
        stamp: Stamp,
        client: ClientId,
        now: u32,
        at: u64,
    ) {
        let Some(leases) = self.leases.as_mut() else {
            return;
        };
        if self.acted.insert(client, (stamp, now)) == Some((stamp, now)) {
            return;
        }
        let delays = leases.check_lock_delays(name, stamp, client, at);
        // Two holders at one instant are the model's own check
        // (`OneHolderAtATime`, from the believers): what else the lease
        // checker finds is the lock-delays it also reports.
        let _ = leases.on_action(name, stamp, client, at, at + INSTANT_NS);
        if let Some(what) = delays.into_iter().next() {
            self.violate(Property::LockDelayHonoured, what);
        }
    }

    /// The holder of grant `stamp` of the lease was told its lock-delay
    /// of `delay_ms` is set.
    pub(crate) fn lock_delay_set(&mut self, stamp: Stamp, delay_ms: u64) {
        if let Some(leases) = self.leases.as_mut() {
            leases.on_lock_delay(crate::world::NAME, stamp, delay_ms * 1_000_000);
        }
    }

    /// `node` applied `slot`, whose commands did `results`: expiries end
    /// grants for the lock-delay check, and every node must report the
    /// same events for a slot, the ones watchers are owed.
    pub(crate) fn events_applied(&mut self, node: NodeId, slot: Slot, results: &[Applied]) {
        let events: Vec<Event> = results.iter().flat_map(|a| a.events.clone()).collect();
        if let Some(leases) = self.leases.as_mut() {
            for event in &events {
                if let Event::Expired { name, stamp } = event {
                    leases.on_expired(name, *stamp);
                }
            }
        }
        if let Some(watches) = self.watches.as_mut()
            && let Some(what) = watches.on_applied(node, slot, events)
        {
            self.violate(Property::WatchersGetTheLog, what);
        }
    }

    /// Watcher `id` asks for every event from now on: the events of the
    /// slots applied from here are recorded for it.
    pub(crate) fn watch_requested(&mut self, id: WatchId) -> WatchRequest {
        self.watches.get_or_insert_with(WatchChecker::default);
        self.watchers.insert(id, None);
        WatchRequest {
            prefix: String::new(),
            after: None,
        }
    }

    /// A node delivered `delivery` to watcher `id` (over an ordered
    /// connection, so judged as it leaves): each event must be the log's
    /// next one after the watcher's position.
    pub(crate) fn on_watch(&mut self, id: WatchId, delivery: WatchDelivery) {
        let Some(cursor) = self.watchers.get(&id).copied() else {
            return;
        };
        match delivery {
            WatchDelivery::Started { after } => {
                self.watchers.insert(id, Some(after));
            }
            WatchDelivery::Events(events) => {
                let Some(mut cursor) = cursor else {
                    let what = format!("watch {} received an event before its start", id.0);
                    self.violate(Property::WatchersGetTheLog, what);
                    return;
                };
                let Some(watches) = self.watches.as_mut() else {
                    return;
                };
                for event in events {
                    let watcher = usize::try_from(id.0).unwrap_or(usize::MAX);
                    if let Some(what) = watches.on_delivered(watcher, cursor, "", &event) {
                        self.violate(Property::WatchersGetTheLog, what);
                        return;
                    }
                    cursor = event.position;
                }
                self.watchers.insert(id, Some(cursor));
            }
            WatchDelivery::Ended(WatchError::Compacted { .. }) => {
                self.watchers.remove(&id);
            }
            WatchDelivery::Ended(other) => {
                self.watchers.remove(&id);
                let what = format!("watch {}'s watch ended: {other}", id.0);
                self.violate(Property::WatchersGetTheLog, what);
            }
        }
    }
}
