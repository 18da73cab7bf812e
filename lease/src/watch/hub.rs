//! The node core's side of watches: the bounded history of recent events,
//! the registered watchers, and which events each one is owed. Pure: the
//! node core calls it with what it applied, and hands its deliveries to
//! the shell as effects.

use super::{
    MAX_BATCH_EVENTS, MAX_BATCH_VALUE_BYTES, MAX_HISTORY_VALUE_BYTES, WatchDelivery, WatchError,
    WatchEvent, WatchId, WatchPosition, WatchRequest,
};
use crate::table::Event;
use std::collections::{BTreeMap, VecDeque};

/// One registered watcher.
#[derive(Clone, Debug)]
struct Watcher {
    prefix: String,
    /// The watcher has every matching event up to here.
    after: WatchPosition,
}

/// Recent events and the watchers they go to.
#[derive(Clone, Debug)]
pub(crate) struct WatchHub {
    /// The events after `floor`, oldest first, at most `capacity`, whose
    /// values take at most [`MAX_HISTORY_VALUE_BYTES`].
    history: VecDeque<WatchEvent>,
    capacity: usize,
    /// Bytes of the written values in `history`.
    history_bytes: usize,
    /// Every event after this position (up to the last applied slot) is
    /// in `history`; the ones at or before it are gone.
    floor: WatchPosition,
    watchers: BTreeMap<WatchId, Watcher>,
    max_watchers: usize,
}

/// Deliveries for the shell, in order.
pub(crate) type Deliveries = Vec<(WatchId, WatchDelivery)>;

impl WatchHub {
    pub(crate) fn new(capacity: usize, max_watchers: usize) -> WatchHub {
        WatchHub {
            history: VecDeque::new(),
            capacity,
            history_bytes: 0,
            floor: WatchPosition::after_slot(0),
            watchers: BTreeMap::new(),
            max_watchers,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Registers watcher `id` (replacing one of the same id), or ends it at
    /// once if its request is out of bounds, the node serves its limit of
    /// watchers, or its position is older than the history. `applied` is
    /// the node's last applied slot (a watch from now starts after it).
    pub(crate) fn watch(
        &mut self,
        id: WatchId,
        request: WatchRequest,
        applied: u64,
        out: &mut Deliveries,
    ) {
        self.watchers.remove(&id);
        let after = request.after.unwrap_or(WatchPosition::after_slot(applied));
        let refused = request.validate().err().or_else(|| {
            if self.watchers.len() >= self.max_watchers {
                Some(WatchError::TooManyWatchers)
            } else if after < self.floor {
                Some(WatchError::Compacted {
                    requested: after,
                    oldest: self.floor,
                })
            } else {
                None
            }
        });
        if let Some(error) = refused {
            out.push((id, WatchDelivery::Ended(error)));
            return;
        }
        out.push((id, WatchDelivery::Started { after }));
        let mut watcher = Watcher {
            prefix: request.prefix,
            after,
        };
        // The history is in position order: skip to the first event after
        // the watcher's position.
        let start = self.history.partition_point(|e| e.position <= after);
        let backlog = self.history.range(start..);
        deliver(id, &mut watcher, backlog, out);
        self.watchers.insert(id, watcher);
    }

    /// Forgets watcher `id` (its client left).
    pub(crate) fn unwatch(&mut self, id: WatchId) {
        self.watchers.remove(&id);
    }

    /// The shell could not deliver to watcher `id` the batch that starts at
    /// `first_undelivered`: its buffer is full. The watcher is cut off and
    /// told to resume after the last event before that batch.
    pub(crate) fn lagged(
        &mut self,
        id: WatchId,
        first_undelivered: WatchPosition,
        out: &mut Deliveries,
    ) {
        if self.watchers.remove(&id).is_none() {
            return;
        }
        let resume_from = before(first_undelivered);
        out.push((id, WatchDelivery::Ended(WatchError::Lagged { resume_from })));
    }

    /// The events of applied slot `slot`, in order: kept for resumes and
    /// delivered to the watchers whose prefix they match. `skip_one` is
    /// the `watch-skips-event` sabotage: the watchers miss one event.
    pub(crate) fn record<'a>(
        &mut self,
        slot: u64,
        events: impl Iterator<Item = &'a Event>,
        skip_one: bool,
        out: &mut Deliveries,
    ) {
        let first = self.history.len();
        for (index, event) in events.enumerate() {
            let position = WatchPosition {
                slot,
                event: u32::try_from(index).unwrap_or(u32::MAX - 1),
            };
            self.history_bytes += value_bytes(event);
            self.history.push_back(WatchEvent {
                position,
                event: event.clone(),
            });
        }
        if !self.watchers.is_empty() {
            let fresh: Vec<&WatchEvent> = self
                .history
                .range(first..)
                .enumerate()
                .filter(|(i, _)| !(skip_one && *i == 1 && slot.is_multiple_of(5)))
                .map(|(_, e)| e)
                .collect();
            for (id, watcher) in &mut self.watchers {
                deliver(*id, watcher, fresh.iter().copied(), out);
            }
        }
        while self.history.len() > self.capacity || self.history_bytes > MAX_HISTORY_VALUE_BYTES {
            let Some(gone) = self.history.pop_front() else {
                break;
            };
            self.history_bytes -= value_bytes(&gone.event);
            self.floor = gone.position;
        }
    }

    /// The node installed a snapshot of the table at `slot` instead of
    /// applying the slots up to it: it has no events for them. Watchers
    /// still owed events from before it end with
    /// [`WatchError::Compacted`].
    pub(crate) fn installed(&mut self, slot: u64, out: &mut Deliveries) {
        self.history.clear();
        self.history_bytes = 0;
        self.floor = self.floor.max(WatchPosition::after_slot(slot));
        let floor = self.floor;
        let behind: Vec<WatchId> = self
            .watchers
            .iter()
            .filter(|(_, w)| w.after < floor)
            .map(|(id, _)| *id)
            .collect();
        for id in behind {
            if let Some(w) = self.watchers.remove(&id) {
                let error = WatchError::Compacted {
                    requested: w.after,
                    oldest: floor,
                };
                out.push((id, WatchDelivery::Ended(error)));
            }
        }
    }
}

/// The position just before `p`: every event before `p` is at or before it.
fn before(p: WatchPosition) -> WatchPosition {
    match p.event.checked_sub(1) {
        Some(event) => WatchPosition {
            slot: p.slot,
            event,
        },
        None => WatchPosition::after_slot(p.slot.saturating_sub(1)),
    }
}

/// Sends `watcher` the events of `events` after its position that match
/// its prefix, in batches that fit a client frame.
fn deliver<'a>(
    id: WatchId,
    watcher: &mut Watcher,
    events: impl Iterator<Item = &'a WatchEvent>,
    out: &mut Deliveries,
) {
    let mut batch: Vec<WatchEvent> = Vec::new();
    let mut bytes = 0;
    for e in events {
        if e.position <= watcher.after
            || !e
                .event
                .name()
                .is_some_and(|n| n.starts_with(&watcher.prefix))
        {
            continue;
        }
        let size = value_bytes(&e.event);
        if batch.len() >= MAX_BATCH_EVENTS
            || (!batch.is_empty() && bytes + size > MAX_BATCH_VALUE_BYTES)
        {
            out.push((id, WatchDelivery::Events(std::mem::take(&mut batch))));
            bytes = 0;
        }
        watcher.after = e.position;
        bytes += size;
        batch.push(e.clone());
    }
    if !batch.is_empty() {
        out.push((id, WatchDelivery::Events(batch)));
    }
}

fn value_bytes(event: &Event) -> usize {
    match event {
        Event::Written { value, name, .. } => value.len() + name.len(),
        other => other.name().map_or(0, str::len),
    }
}
