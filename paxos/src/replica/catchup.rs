//! Catch-up: a replica that is behind fetches chosen values (or a snapshot
//! when they were compacted away) from a peer that has them.

use super::admission::MAX_SNAPSHOT_LEAD;
use super::{Refusal, Replica, Role};
use crate::message::Message;
use crate::types::{
    ENTRY_OVERHEAD_BYTES, LogEntry, MESSAGE_OVERHEAD_BYTES, NodeId, Slot, Snapshot, Value,
    split_by_bytes,
};
use std::time::Duration;

impl Replica {
    /// Asks `peer` for what follows our commit index, at most once per two
    /// heartbeat intervals so a slow peer is not flooded.
    pub(super) fn request_catchup(&mut self, now: Duration, peer: NodeId) {
        if peer == self.cfg.node {
            return;
        }
        let retry = self.cfg.heartbeat_interval * 2;
        if self.catchup_sent_at.is_some_and(|t| now < t + retry) {
            return;
        }
        self.catchup_sent_at = Some(now);
        let from = self.committed + 1;
        self.catchup_asked = Some((peer, from));
        self.send(peer, Message::CatchupRequest { from });
    }

    /// Any replica answers with the chosen values it has from `from` on,
    /// preceded by its snapshot when those slots were compacted: at most
    /// [`crate::Config::catchup_batch`] values, and only as many as fit in
    /// [`crate::Config::max_message_bytes`] (at least one; the requester
    /// asks again for the rest).
    pub(super) fn on_catchup_request(&mut self, peer: NodeId, from: Slot) {
        if from > self.committed {
            return;
        }
        let (snapshot, start) = if from <= self.truncated {
            match &self.snapshot {
                Some(s) => (Some(s.clone()), s.slot + 1),
                None => return,
            }
        } else {
            (None, from)
        };
        let batch = self.cfg.catchup_batch as u64;
        let end = self.committed.min(start.saturating_add(batch - 1));
        let entries: Vec<(Slot, Value)> = if start <= end {
            self.log
                .range(start..=end)
                .map(|(s, e)| (*s, e.value.clone()))
                .collect()
        } else {
            Vec::new()
        };
        let snapshot_bytes = snapshot
            .as_ref()
            .map_or(0, |s| s.data.len().saturating_add(ENTRY_OVERHEAD_BYTES));
        let budget = self
            .cfg
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES)
            .saturating_sub(snapshot_bytes);
        let mut groups = split_by_bytes(entries, budget, Value::entry_bytes).into_iter();
        let mut entries = groups.next().unwrap_or_default();
        if snapshot.is_some() && budget < entries.iter().map(|(_, v)| v.entry_bytes()).sum() {
            // The snapshot fills the message: it goes alone.
            entries.clear();
        }
        self.send(peer, Message::CatchupResponse { snapshot, entries });
    }

    /// Installs a newer snapshot and appends contiguous chosen values.
    /// Only followers learn this way: a leader or candidate learns through
    /// its own quorum, which keeps the ballot check in `learn_commit` sound.
    /// Only the answer to the outstanding request is taken, and only when
    /// its snapshot is not beyond any commit index heard and none of its
    /// values contradicts one known chosen here.
    pub(super) fn on_catchup_response(
        &mut self,
        now: Duration,
        peer: NodeId,
        snapshot: Option<Snapshot>,
        entries: Vec<(Slot, Value)>,
    ) {
        if !matches!(self.role, Role::Follower) {
            return;
        }
        if let Err(refusal) = self.check_catchup_response(peer, snapshot.as_ref(), &entries) {
            self.refuse(refusal);
            return;
        }
        self.catchup_sent_at = None;
        self.catchup_asked = None;
        if let Some(snapshot) = snapshot.filter(|s| s.slot > self.committed) {
            // Admission checked that the frame decodes.
            let history = crate::membership::unframe(&snapshot.data)
                .ok()
                .flatten()
                .map(|(history, _)| history);
            self.install_history(history, snapshot.slot);
            self.committed = snapshot.slot;
            self.delivered = snapshot.slot;
            self.install_pending = true;
            self.out.write.snapshot = Some(snapshot.clone());
            self.snapshot = Some(snapshot);
            self.truncate(self.committed);
        }
        for (slot, value) in entries {
            if slot <= self.committed {
                continue;
            }
            if slot != self.committed + 1 {
                break;
            }
            // The value is chosen: it replaces whatever vote we held. Keeping
            // the old vote's ballot is safe, since any leader that later
            // reads this entry as the highest vote will propose the chosen
            // value, which is the only safe value for this slot.
            let ballot = self
                .log
                .get(&slot)
                .map_or_else(Default::default, |e| e.ballot);
            let entry = LogEntry { ballot, value };
            self.out.write.entries.push((slot, entry.clone()));
            self.log.insert(slot, entry);
            self.committed = slot;
        }
        if self.committed < self.leader_committed {
            self.request_catchup(now, peer);
        }
    }

    fn check_catchup_response(
        &self,
        peer: NodeId,
        snapshot: Option<&Snapshot>,
        entries: &[(Slot, Value)],
    ) -> Result<(), Refusal> {
        let answers_request = match (self.catchup_asked, snapshot, entries.first()) {
            (Some((asked, _)), Some(_), _) => asked == peer,
            (Some((asked, from)), None, Some((first, _))) => asked == peer && *first == from,
            _ => false,
        };
        if !answers_request {
            return Err(Refusal::UnaskedCatchup { from: peer });
        }
        // The sender's commit index may have moved on since it was last
        // heard; a window's worth of slack covers the usual lag. The jump
        // from our own commit index is bounded too, since commit indexes
        // heard come from peers as well: a forger needs 2^31 answered
        // requests to push a replica to the top of the slot space.
        let known = self
            .leader_committed
            .max(self.committed)
            .saturating_add(self.cfg.window as u64)
            .min(self.committed.saturating_add(MAX_SNAPSHOT_LEAD));
        if let Some(s) = snapshot.filter(|s| s.slot > known) {
            return Err(Refusal::SnapshotAhead {
                slot: s.slot,
                known,
            });
        }
        if snapshot.is_some_and(|s| s.slot > self.committed) {
            // Installing it replaces everything held up to its slot.
            return Ok(());
        }
        for (slot, value) in entries.iter().take_while(|(s, _)| *s <= self.committed) {
            if self.log.get(slot).is_some_and(|e| e.value != *value) {
                return Err(Refusal::ChosenValueConflict { slot: *slot });
            }
        }
        Ok(())
    }
}
