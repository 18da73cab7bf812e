//! Watches, checked against the log: every node applies the same commands,
//! so the events of each slot (as the table reports them) are the log's
//! own. A watcher must receive exactly the events of the log after its
//! position that match its prefix, in order, with none missing after a
//! resume; a node may refuse a position as compacted only when it really
//! no longer has every event after it.

use std::collections::BTreeMap;
use trexlock_lease::table::Event as LeaseEvent;
use trexlock_lease::watch::{WatchEvent, WatchPosition};
use trexlock_paxos::{NodeId, Slot};

/// The events of every slot applied anywhere, and the counts of a run.
#[derive(Clone, Debug, Default)]
pub struct WatchChecker {
    log: BTreeMap<Slot, Vec<LeaseEvent>>,
    /// Events delivered to watchers (each checked against the log).
    pub(crate) delivered: u64,
    /// Watches started again from a position.
    pub(crate) resumes: u64,
    /// Resumes refused as compacted (each checked).
    pub(crate) compacted: u64,
}

impl WatchChecker {
    /// Node `node` applied `slot`, whose commands produced `events`. Every
    /// node must produce the same events for a slot.
    pub fn on_applied(
        &mut self,
        node: NodeId,
        slot: Slot,
        events: Vec<LeaseEvent>,
    ) -> Option<String> {
        match self.log.get(&slot) {
            Some(known) if *known != events => Some(format!(
                "{node}: slot {slot} produced events {events:?}, another node's {known:?}"
            )),
            Some(_) => None,
            None => {
                self.log.insert(slot, events);
                None
            }
        }
    }

    /// The log's first event after `cursor` under `prefix`, if the log
    /// has one yet.
    fn next_after(&self, cursor: WatchPosition, prefix: &str) -> Option<WatchEvent> {
        self.log
            .range(cursor.slot..)
            .flat_map(|(slot, events)| {
                events.iter().enumerate().map(move |(i, e)| WatchEvent {
                    position: WatchPosition {
                        slot: *slot,
                        event: i as u32,
                    },
                    event: e.clone(),
                })
            })
            .find(|e| e.position > cursor && e.event.name().is_some_and(|n| n.starts_with(prefix)))
    }

    /// A watcher at `cursor` under `prefix` received `got`: it must be the
    /// log's next event for it.
    pub fn on_delivered(
        &mut self,
        watcher: usize,
        cursor: WatchPosition,
        prefix: &str,
        got: &WatchEvent,
    ) -> Option<String> {
        self.delivered += 1;
        let want = self.next_after(cursor, prefix);
        (want.as_ref() != Some(got)).then(|| {
            format!(
                "watcher {watcher} (prefix {prefix:?}) after {cursor} received {got:?}; the log's next event for it is {want:?}"
            )
        })
    }

    /// A node whose table was installed at `base` and which applied every
    /// slot after it up to `last`, keeping `kept` events, refused a watch
    /// from `requested` as compacted: true if it really lacked an event
    /// after `requested`. (The history's byte bound is never reached by
    /// the simulated workload's small values, so only the count is
    /// modelled.)
    pub(crate) fn compaction_is_real(
        &self,
        requested: WatchPosition,
        base: Slot,
        last: Slot,
        kept: usize,
    ) -> bool {
        if requested < WatchPosition::after_slot(base) {
            return true;
        }
        let after: usize = self
            .log
            .range(requested.slot..=last)
            .map(|(slot, events)| {
                (0..events.len())
                    .filter(|i| {
                        WatchPosition {
                            slot: *slot,
                            event: *i as u32,
                        } > requested
                    })
                    .count()
            })
            .sum();
        after > kept
    }
}
