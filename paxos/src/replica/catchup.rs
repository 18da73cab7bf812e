//! Catch-up: a replica that is behind fetches chosen values (or a snapshot
//! when they were compacted away) from a peer that has them.

use super::{Replica, Role};
use crate::error::PaxosError;
use crate::message::Message;
use crate::types::{LogEntry, NodeId, Slot, Snapshot, Value};
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
        self.send(peer, Message::CatchupRequest { from });
    }

    /// Any replica answers with the chosen values it has from `from` on,
    /// preceded by its snapshot when those slots were compacted.
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
        let entries = if start <= end {
            self.log
                .range(start..=end)
                .map(|(s, e)| (*s, e.value.clone()))
                .collect()
        } else {
            Vec::new()
        };
        self.send(peer, Message::CatchupResponse { snapshot, entries });
    }

    /// Installs a newer snapshot and appends contiguous chosen values.
    /// Only followers learn this way: a leader or candidate learns through
    /// its own quorum, which keeps the ballot check in `learn_commit` sound.
    pub(super) fn on_catchup_response(
        &mut self,
        now: Duration,
        peer: NodeId,
        snapshot: Option<Snapshot>,
        entries: Vec<(Slot, Value)>,
    ) -> Result<(), PaxosError> {
        if !matches!(self.role, Role::Follower) {
            return Ok(());
        }
        self.catchup_sent_at = None;
        if let Some(snapshot) = snapshot.filter(|s| s.slot > self.committed) {
            self.committed = snapshot.slot;
            self.delivered = snapshot.slot;
            self.install_pending = true;
            self.out.write.snapshot = Some(snapshot.clone());
            self.snapshot = Some(snapshot);
            self.truncate(self.committed);
        }
        for (slot, value) in entries {
            if slot <= self.committed {
                if self.log.get(&slot).is_some_and(|e| e.value != value) {
                    return Err(PaxosError::ChosenValueConflict { slot });
                }
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
        Ok(())
    }
}
