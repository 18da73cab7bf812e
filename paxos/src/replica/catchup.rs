//! Catch-up: a replica that is behind fetches chosen values (or a snapshot,
//! in chunks, when they were compacted away; see `transfer`) from a peer
//! that has them.

use super::admission::MAX_SNAPSHOT_LEAD;
use super::{Refusal, Replica, Role};
use crate::message::Message;
use crate::types::{
    LogEntry, MESSAGE_OVERHEAD_BYTES, NodeId, Slot, Snapshot, Value, split_by_bytes,
};
use std::time::Duration;

/// A catch-up in progress: what was asked of whom, and the snapshot being
/// received.
#[derive(Clone, Debug, Default)]
pub(super) struct Catchup {
    /// When the last request was sent.
    pub(super) sent_at: Option<Duration>,
    /// The peer last asked for catch-up and the first slot asked for; only
    /// its answer to that request is accepted.
    pub(super) asked: Option<(NodeId, Slot)>,
    /// A snapshot being received from a peer, chunk by chunk.
    pub(super) assembly: Option<super::transfer::Assembly>,
}

impl Replica {
    /// Probes every peer for how far its log goes. A node that hears no
    /// leader may have been left behind by every member: a voter removed
    /// while it was away (the members no longer send to it, nor take its
    /// prepares) or a learner that missed a change of leader. A reply from
    /// a peer that is ahead starts a catch-up from it, so the removed voter
    /// learns its removal; the leader's reply to a later probe releases it,
    /// and it stops. Every peer, not one: only the leader releases, and
    /// this node does not know which peer leads, so a probe to one peer at
    /// a time could miss the leader for many election timeouts in a row.
    pub(super) fn seek_cluster(&mut self) {
        for peer in self.peers() {
            self.send(peer, Message::Probe);
        }
    }

    /// Asks `peer` for what follows our commit index (or for the rest of
    /// the snapshot being assembled), at most once per two heartbeat
    /// intervals so a slow peer is not flooded.
    pub(super) fn request_catchup(&mut self, now: Duration, peer: NodeId) {
        if peer == self.cfg.node {
            return;
        }
        let retry = self.cfg.heartbeat_interval * 2;
        if self.catchup.sent_at.is_some_and(|t| now < t + retry) {
            return;
        }
        self.catchup.sent_at = Some(now);
        let from = self.committed + 1;
        self.catchup.asked = Some((peer, from));
        if let Some(message) = self.continue_assembly() {
            self.send(peer, message);
            return;
        }
        self.send(peer, Message::CatchupRequest { from });
    }

    /// Any replica answers with the chosen values it has from `from` on:
    /// at most [`crate::Config::catchup_batch`] values, and only as many as
    /// fit in [`crate::Config::max_message_bytes`] (at least one; the
    /// requester asks again for the rest). When those slots were compacted
    /// away it sends the first chunk of its snapshot instead.
    pub(super) fn on_catchup_request(&mut self, peer: NodeId, from: Slot) {
        if from > self.committed {
            return;
        }
        if from <= self.truncated {
            self.send_snapshot_chunk(peer, 0);
            return;
        }
        let batch = self.cfg.catchup_batch as u64;
        let end = self.committed.min(from.saturating_add(batch - 1));
        let entries: Vec<(Slot, Value)> = self
            .log
            .range(from..=end)
            .map(|(s, e)| (*s, e.value.clone()))
            .collect();
        let budget = self
            .cfg
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES);
        let entries = split_by_bytes(entries, budget, Value::entry_bytes)
            .into_iter()
            .next()
            .unwrap_or_default();
        self.send(peer, Message::CatchupResponse { entries });
    }

    /// Appends contiguous chosen values. Only followers learn this way: a
    /// leader learns through its own quorum, which keeps the ballot check
    /// in `learn_commit` sound, and a candidate that learns it is behind
    /// gives up its campaign first (a campaign from a slot known chosen
    /// cannot lead). Only the answer to the outstanding request is taken,
    /// and only when none of its values contradicts one known chosen here.
    pub(super) fn on_catchup_response(
        &mut self,
        now: Duration,
        peer: NodeId,
        entries: Vec<(Slot, Value)>,
    ) {
        if matches!(self.role, Role::Leader(_)) {
            return;
        }
        if let Err(refusal) = self.check_catchup_response(peer, &entries) {
            self.refuse(refusal);
            return;
        }
        self.step_down(now);
        self.catchup.sent_at = None;
        self.catchup.asked = None;
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
        if self.committed < self.known_leader.committed {
            self.request_catchup(now, peer);
        }
    }

    /// Replaces everything held up to `snapshot.slot` with the snapshot,
    /// which the state machine loads before applying anything after it.
    pub(super) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let history = match crate::membership::unframe(&snapshot.data) {
            Ok(framed) => framed.map(|(history, _)| history),
            Err(_) => {
                let slot = snapshot.slot;
                self.refuse(Refusal::BadMembership {
                    kind: "snapshot",
                    slot,
                });
                return;
            }
        };
        self.install_history(history, snapshot.slot);
        self.committed = snapshot.slot;
        self.delivered = snapshot.slot;
        self.install_pending = true;
        self.out.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        self.truncate(self.committed);
    }

    /// The highest snapshot slot a peer may bring us to: the sender's
    /// commit index may have moved on since it was last heard, and a
    /// window's worth of slack covers the usual lag. The jump from our own
    /// commit index is bounded too, since commit indexes heard come from
    /// peers as well: a forger needs 2^31 answered requests to push a
    /// replica to the top of the slot space.
    pub(super) fn snapshot_horizon(&self) -> Slot {
        self.known_leader
            .committed
            .max(self.committed)
            .saturating_add(self.cfg.window as u64)
            .min(self.committed.saturating_add(MAX_SNAPSHOT_LEAD))
    }

    fn check_catchup_response(
        &self,
        peer: NodeId,
        entries: &[(Slot, Value)],
    ) -> Result<(), Refusal> {
        let answers_request = match (self.catchup.asked, entries.first()) {
            (Some((asked, from)), Some((first, _))) => asked == peer && *first == from,
            _ => false,
        };
        if !answers_request {
            return Err(Refusal::UnaskedCatchup { from: peer });
        }
        for (slot, value) in entries.iter().take_while(|(s, _)| *s <= self.committed) {
            if self.log.get(slot).is_some_and(|e| e.value != *value) {
                return Err(Refusal::ChosenValueConflict { slot: *slot });
            }
        }
        Ok(())
    }
}
