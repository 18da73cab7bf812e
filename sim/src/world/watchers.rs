//! Watchers on the nodes: they watch a prefix, disconnect, and resume from
//! the position of the last event they received on another node. Every
//! event they receive is checked against the log (see
//! [`crate::watches::WatchChecker`]). Each watch is served by the real
//! node core; the world only delivers, in order, as a connection would.

use super::{Event, MS, World};
use trexlock_lease::watch::{WatchDelivery, WatchError, WatchId, WatchPosition, WatchRequest};

/// The prefixes the watchers watch: everything, one lease, and a prefix
/// that matches one of the workload's names.
const PREFIXES: [&str; 3] = ["", "alpha", "b"];
/// Events a node keeps for resumes: small, so that resumes are refused as
/// compacted in some runs.
pub(super) const WATCH_HISTORY: usize = 48;

pub(crate) struct SimWatcher {
    prefix: &'static str,
    /// The node serving the watch, its incarnation then, and the watch id.
    serving: Option<(usize, u64, WatchId)>,
    /// The position of the last event received (where the watch started,
    /// before the first); `None` before any watch started.
    cursor: Option<WatchPosition>,
    /// No delivery to it may arrive before this (a connection keeps order).
    last_delivery: u64,
}

impl SimWatcher {
    pub(crate) fn all() -> Vec<SimWatcher> {
        PREFIXES
            .iter()
            .map(|prefix| SimWatcher {
                prefix,
                serving: None,
                cursor: None,
                last_delivery: 0,
            })
            .collect()
    }
}

impl World {
    /// A watcher wakes: it connects to a node if it has none (resuming
    /// after its position), or sometimes disconnects.
    pub(super) fn watcher_wake(&mut self, w: usize) {
        let next = self.rng.u64(50 * MS..300 * MS);
        self.schedule(next, Event::WatchWake(w));
        if let Some((node, incarnation, id)) = self.watchers[w].serving {
            let alive = self.nodes[node].core.is_some()
                && self.nodes[node].incarnation == incarnation
                && !self.nodes[node].stopping;
            if !alive {
                self.watchers[w].serving = None;
            } else if self.rng.f64() < 0.3 {
                self.watchers[w].serving = None;
                self.step(node, |core, _| {
                    core.unwatch(id);
                    Ok(())
                });
            }
            return;
        }
        let node = self.rng.usize(0..self.nodes.len());
        if !self.runnable(node) {
            return;
        }
        self.next_watch += 1;
        let id = WatchId(self.next_watch);
        let after = self.watchers[w].cursor;
        if after.is_some() {
            self.watches.resumes += 1;
        }
        self.watchers[w].serving = Some((node, self.nodes[node].incarnation, id));
        let request = WatchRequest {
            prefix: self.watchers[w].prefix.to_owned(),
            after,
        };
        self.step(node, |core, _| {
            core.watch(id, request);
            Ok(())
        });
    }

    /// Node `i` owes watch `id` `delivery`: it travels to the watcher in
    /// order. A refusal as compacted is checked against the node's own
    /// history now, as the node decided it.
    pub(super) fn watch_effect(&mut self, i: usize, id: WatchId, delivery: WatchDelivery) {
        let Some(w) = self
            .watchers
            .iter()
            .position(|w| w.serving.is_some_and(|(_, _, s)| s == id))
        else {
            return;
        };
        if let WatchDelivery::Ended(WatchError::Compacted { requested, .. }) = &delivery {
            self.watches.compacted += 1;
            let history = &self.nodes[i].history;
            let real = self.watches.compaction_is_real(
                *requested,
                history.base(),
                history.last_slot(),
                WATCH_HISTORY,
            );
            if !real {
                let node = self.nodes[i].id;
                self.checker.violations.push(format!(
                    "{node} refused watcher {w}'s resume after {requested} as compacted, yet it had every event after it"
                ));
            }
        }
        let at = (self.now + self.delay()).max(self.watchers[w].last_delivery);
        self.watchers[w].last_delivery = at;
        self.schedule_at(
            at,
            Event::WatchDeliver {
                watcher: w,
                id,
                delivery,
            },
        );
    }

    /// A delivery reaches watcher `w`; one for a watch it has left is
    /// dropped, as a closed connection would.
    pub(super) fn watch_delivered(&mut self, w: usize, id: WatchId, delivery: WatchDelivery) {
        if self.watchers[w]
            .serving
            .is_none_or(|(_, _, serving)| serving != id)
        {
            return;
        }
        let prefix = self.watchers[w].prefix;
        match delivery {
            WatchDelivery::Started { after } => {
                if let Some(cursor) = self.watchers[w].cursor.filter(|c| *c != after) {
                    self.checker.violations.push(format!(
                        "watcher {w} resumed after {cursor}, the node started it after {after}"
                    ));
                }
                self.watchers[w].cursor = Some(after);
            }
            WatchDelivery::Events(events) => {
                for event in events {
                    let Some(cursor) = self.watchers[w].cursor else {
                        self.checker
                            .violations
                            .push(format!("watcher {w} received an event before its start"));
                        return;
                    };
                    if let Some(v) = self.watches.on_delivered(w, cursor, prefix, &event) {
                        self.checker.violations.push(v);
                        return;
                    }
                    self.watchers[w].cursor = Some(event.position);
                }
            }
            WatchDelivery::Ended(WatchError::Compacted { .. }) => {
                // As a client would: read the state afresh and watch from now.
                self.watchers[w].serving = None;
                self.watchers[w].cursor = None;
            }
            WatchDelivery::Ended(other) => {
                self.checker
                    .violations
                    .push(format!("watcher {w}'s watch ended: {other}"));
                self.watchers[w].serving = None;
            }
        }
    }
}
