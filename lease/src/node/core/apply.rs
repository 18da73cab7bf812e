//! What the node does with chosen values, snapshots and leadership: the
//! table is applied in slot order, and the leader keeps the table's time.

use super::{Effect, NodeCore};
use crate::command::{Body, Command};
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::table::{Event, LeaseTable};
use crate::time::LeaderClock;
use trexlock_paxos::{Leadership, SNAPSHOT_FRAME_ROOM, Slot, Snapshot, Value};

/// How many phases of the snapshot period members are spread over.
const SNAPSHOT_PHASES: u64 = 8;

impl NodeCore {
    /// Loads a snapshot the replica handed over, then applies chosen values.
    pub(super) fn install_and_apply(
        &mut self,
        install: Option<Snapshot>,
        chosen: Vec<(Slot, Value)>,
    ) -> Result<(), NodeError> {
        if let Some(snapshot) = install {
            self.table =
                LeaseTable::from_snapshot(&snapshot.data).map_err(|e| NodeError::Undecodable {
                    slot: snapshot.slot,
                    what: "snapshot",
                    reason: e.to_string(),
                })?;
            #[cfg(feature = "sabotage")]
            {
                self.table = std::mem::take(&mut self.table).with_sabotage(self.cfg.sabotage);
            }
            self.applied = snapshot.slot;
            self.metrics.table_sizes(&self.table);
            self.note_snapshot(snapshot.data.len());
            self.effects.push(Effect::Installed {
                slot: snapshot.slot,
            });
            let mut out = Vec::new();
            self.watches.installed(snapshot.slot, &mut out);
            self.push_watch_deliveries(out);
        }
        for (slot, value) in chosen {
            self.apply(slot, value)?;
        }
        Ok(())
    }

    fn apply(&mut self, slot: Slot, value: Value) -> Result<(), NodeError> {
        let mut results = Vec::with_capacity(value.commands().len());
        for bytes in value.commands() {
            let command = Command::decode(bytes).map_err(|e| NodeError::Undecodable {
                slot,
                what: "command",
                reason: e.to_string(),
            })?;
            let applied = self.table.apply(&command);
            Metrics::add(&self.metrics.commands_applied, 1);
            for event in &applied.events {
                self.count(event);
            }
            for response in &applied.responses {
                self.answer(response.client, response.request, &response.outcome);
            }
            results.push(applied);
        }
        self.applied = slot;
        Metrics::add(&self.metrics.slots_applied, 1);
        self.metrics.table_sizes(&self.table);
        let mut out = Vec::new();
        let events = results.iter().flat_map(|r| &r.events);
        let skip = sabotaged!(self, WatchSkipsEvent);
        self.watches.record(slot, events, skip, &mut out);
        self.effects.push(Effect::Applied {
            slot,
            value,
            results,
        });
        self.push_watch_deliveries(out);
        if self.snapshot_due(slot) {
            // Encoded after room for the replica's frame, so that a large
            // table is not copied again to be framed.
            let buf = self.table.to_snapshot_after(SNAPSHOT_FRAME_ROOM);
            self.note_snapshot(buf.len() - SNAPSHOT_FRAME_ROOM);
            let ready = self
                .replica
                .snapshot_taken_in(slot, buf, SNAPSHOT_FRAME_ROOM)?;
            self.perform(ready)?;
        }
        Ok(())
    }

    /// Whether this node snapshots after applying `slot`: once every
    /// [`crate::NodeConfig::snapshot_every`] slots, at a phase set by its node id.
    /// Encoding a large table stalls a node's event loop (about 150 ms at a
    /// million leases); at one phase for all, every member stalls at the
    /// same slot, and a leader whose followers are all silent for longer
    /// than an election timeout steps down. Staggered, members whose ids
    /// differ modulo [`SNAPSHOT_PHASES`] never stall at the same slot, and
    /// the others keep a quorum. A period shorter than that many slots has
    /// one phase for all.
    pub(super) fn snapshot_due(&self, slot: Slot) -> bool {
        let every = self.cfg.snapshot_every;
        // Divided first, so that no period, however long, overflows.
        let phase = every / SNAPSHOT_PHASES * (u64::from(self.cfg.node.0) % SNAPSHOT_PHASES);
        slot.wrapping_add(phase).is_multiple_of(every)
    }

    fn note_snapshot(&self, bytes: usize) {
        Metrics::set(&self.metrics.snapshot_bytes, bytes as u64);
        Metrics::set(&self.metrics.leases, self.table.len() as u64);
    }

    fn count(&self, event: &Event) {
        let m = &self.metrics;
        match event {
            Event::Granted { .. } => Metrics::add(&m.acquisitions, 1),
            Event::Expired { name, stamp } => {
                tracing::debug!(node = %self.cfg.node, lease = %name, %stamp, "lease expired");
                Metrics::add(&m.expiries, 1);
            }
            Event::Renewed { .. } => Metrics::add(&m.renewals, 1),
            Event::Released { .. } => Metrics::add(&m.releases, 1),
            Event::SessionEnded { session, expired } => {
                tracing::debug!(node = %self.cfg.node, %session, expired, "lease session ended");
            }
            Event::Written { .. } => {}
        }
    }

    pub(super) fn on_leadership(&mut self, change: Leadership) {
        Metrics::add(&self.metrics.leader_changes, 1);
        match change {
            Leadership::Elected { ballot } => {
                tracing::info!(node = %self.cfg.node, %ballot, "elected leader");
                // The epoch starts now: commands count time from this
                // moment, so table time stands still across the change
                // and no outstanding lease loses any of its remaining time.
                let takeover_us = if sabotaged!(self, NoTakeoverExtension) {
                    0
                } else {
                    self.now_us()
                };
                self.leader_clock = Some(LeaderClock::new(ballot, takeover_us));
                self.tick_proposed_for = None;
                // Opens the epoch in the table.
                self.stamp_and_queue(Body::Tick);
                let keys: Vec<_> = self.pending.keys().copied().collect();
                for key in keys {
                    self.route(key);
                }
            }
            Leadership::Lost => {
                tracing::info!(node = %self.cfg.node, "lost leadership");
                self.leader_clock = None;
                self.metrics.set_peer_lag([]);
            }
        }
    }

    /// The leader proposes a bare tick when a lease someone waits for runs
    /// out by its clock, or a session is due to be forgotten: expiry is
    /// decided by a command in the log, and an idle cluster still sheds
    /// the sessions its clients left behind.
    pub(super) fn tick_if_a_lease_is_due(&mut self) {
        let Some(clock) = self.leader_clock else {
            return;
        };
        let due = [
            self.table.next_deadline_us(),
            self.table.next_session_expiry_us(),
        ];
        let Some(deadline) = due.into_iter().flatten().min() else {
            return;
        };
        if self.tick_proposed_for.is_some_and(|t| t >= deadline) {
            return;
        }
        if clock
            .local_time_for(&self.table, deadline)
            .is_some_and(|local| local <= self.now_us())
        {
            self.tick_proposed_for = Some(deadline);
            self.stamp_and_queue(Body::Tick);
        }
    }
}
