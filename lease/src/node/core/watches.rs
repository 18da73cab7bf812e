//! The node core's watch inputs: watchers register, leave and lag here;
//! what they are owed comes from the slots the core applies (see
//! `apply.rs`) and leaves as [`Effect::Watch`].

use super::{Effect, NodeCore};
use crate::watch::{WatchDelivery, WatchId, WatchPosition, WatchRequest};

impl NodeCore {
    /// A watcher asks for the events matching `request` (see
    /// [`crate::watch`]). Its request is checked first; the answer comes as
    /// [`Effect::Watch`]: [`WatchDelivery::Started`] and the backlog from
    /// the history, or [`WatchDelivery::Ended`] with the reason it was
    /// refused.
    pub fn watch(&mut self, id: WatchId, request: WatchRequest) {
        let mut out = Vec::new();
        self.watches.watch(id, request, self.applied, &mut out);
        self.push_watch_deliveries(out);
    }

    /// Watcher `id` is gone: deliver nothing more to it.
    pub fn unwatch(&mut self, id: WatchId) {
        self.watches.unwatch(id);
    }

    /// Watcher `id`'s buffer was full for the delivery whose first event
    /// is at `first_undelivered`: it is cut off with
    /// [`crate::WatchError::Lagged`] (delivered as the last
    /// [`Effect::Watch`] for it).
    pub fn watch_lagged(&mut self, id: WatchId, first_undelivered: WatchPosition) {
        let mut out = Vec::new();
        self.watches.lagged(id, first_undelivered, &mut out);
        self.push_watch_deliveries(out);
    }

    /// How many watchers this node serves.
    pub fn watchers_len(&self) -> usize {
        self.watches.len()
    }

    pub(super) fn push_watch_deliveries(&mut self, out: Vec<(WatchId, WatchDelivery)>) {
        self.effects.extend(
            out.into_iter()
                .map(|(id, delivery)| Effect::Watch { id, delivery }),
        );
    }
}
