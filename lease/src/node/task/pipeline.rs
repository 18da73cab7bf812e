//! The durability pipeline of the node task. Messages wait
//! for the journal sync that covers their step (group commit, one sync in
//! flight) before they leave. Chosen values do not wait (in a cluster of
//! more than one node): a value is chosen only once a quorum holds it
//! durably, so applying it, and answering the client, needs nothing from
//! this node's disk. The commit index that usually rides along in the same
//! write is a hint ([`trexlock_paxos::JournalState::committed`]): losing it
//! costs a catch-up, never an acknowledged command. Waiting for it would
//! put one more sync on every request's path. For the same reason a write
//! that holds nothing but a new commit index gets no sync of its own: it
//! rides along with the next write that holds votes, a promise or a
//! snapshot, or is flushed by itself once the node has been quiet for
//! [`HINT_FLUSH_AFTER`] (and at shutdown). Otherwise every slot would cost
//! every node two syncs, the second one delaying the next slot's votes.
//!
//! The leader's Accepts and Commits leave without waiting for its own sync,
//! so its disk and its followers' disks work at the same time (as in
//! Raft, where the leader appends to its log in parallel with replication).
//! An Accept (phase 2a) carries a proposal, not the leader's vote; what must
//! not happen is the core counting the leader's own, not yet durable, vote
//! towards a quorum. The core counts it as soon as it proposes, so the node
//! holds back every `Accepted` for a slot until the leader's vote for that
//! slot is synced: a slot is then chosen only with the leader's vote and a
//! follower's vote both on disk, exactly as before. A step that raised the
//! promise sends nothing early.

use super::{Held, NodeTask};
use crate::error::NodeError;
use crate::metrics::Metrics;
use crate::network::PeerMessage;
use std::time::Duration;
use tokio::time::Instant;
use trexlock_paxos::{JournalWrite, Message, Ready};

/// How long a commit index may wait for a write to ride along with before
/// it is synced by itself.
const HINT_FLUSH_AFTER: Duration = Duration::from_millis(200);

/// True when `write` holds nothing but the commit index, a hint that no
/// message and no answer depends on.
fn only_commit_index(write: &JournalWrite) -> bool {
    write.promised.is_none()
        && write.entries.is_empty()
        && write.snapshot.is_none()
        && write.truncate.is_none()
}

impl NodeTask {
    /// Queues a step's effects behind the journal write they depend on.
    pub(super) fn perform(&mut self, ready: Ready) -> Result<(), NodeError> {
        let promising = ready.write.promised.is_some();
        if !ready.write.is_empty() {
            if !only_commit_index(&ready.write) {
                if !self.next_durable {
                    self.assigned += 1;
                    self.next_durable = true;
                }
            } else if self.next_write.is_empty() {
                self.hint_since = Some(Instant::now());
            }
            if self.replicated && self.replica.is_leader() {
                for (slot, _) in &ready.write.entries {
                    self.vote_writes.insert(*slot, self.assigned);
                }
            }
            self.next_write.merge(ready.write);
        }
        let mut messages = ready.messages;
        if self.replicated && !promising && self.replica.is_leader() {
            // Proposals and commit notices need no vote of ours on disk
            // (see the module comment): send them now.
            let (early, later): (Vec<_>, Vec<_>) = messages.into_iter().partition(|env| {
                matches!(env.message, Message::Accept { .. } | Message::Commit { .. })
            });
            self.outbox.extend(early);
            messages = later;
        }
        let (install, chosen, now_install, now_chosen) = if self.replicated {
            (None, Vec::new(), ready.install, ready.chosen)
        } else {
            (ready.install, ready.chosen, None, Vec::new())
        };
        let nothing_else = messages.is_empty()
            && install.is_none()
            && chosen.is_empty()
            && ready.leadership.is_none();
        if !nothing_else {
            self.held.push_back(Held {
                after_write: self.assigned,
                messages,
                install,
                chosen,
                leadership: ready.leadership,
            });
        }
        self.submit_write();
        self.release()?;
        // Chosen values come out of the core in slot order, and in a
        // replicated cluster none is ever held, so applying them here keeps
        // that order.
        self.install_and_apply(now_install, now_chosen)
    }

    fn submit_write(&mut self) {
        if self.in_flight || !self.next_durable {
            return;
        }
        self.in_flight = true;
        self.next_durable = false;
        self.hint_since = None;
        let write = std::mem::take(&mut self.next_write);
        self.worker.submit(self.assigned, write);
    }

    /// Syncs a commit index that has waited alone for long enough (or at
    /// once with `force`), so a quiet node's journal catches up with it.
    pub(super) fn flush_hint(&mut self, force: bool) {
        if self.in_flight || self.next_durable || self.next_write.is_empty() {
            return;
        }
        if !force
            && self
                .hint_since
                .is_some_and(|t| t.elapsed() < HINT_FLUSH_AFTER)
        {
            return;
        }
        self.assigned += 1;
        self.next_durable = true;
        self.submit_write();
    }

    pub(super) fn on_synced(&mut self, id: u64) -> Result<(), NodeError> {
        Metrics::add(&self.metrics.journal_syncs, 1);
        self.synced = id;
        self.in_flight = false;
        self.vote_writes.retain(|_, write| *write > id);
        self.submit_write();
        self.release()?;
        if self.deferred.iter().any(|(write, ..)| *write <= id) {
            let (now, later) = std::mem::take(&mut self.deferred)
                .into_iter()
                .partition(|(write, ..)| *write <= id);
            self.deferred = later;
            for (_, from, message) in now {
                self.handle_paxos(from, message)?;
            }
        }
        Ok(())
    }

    /// Performs every held effect whose write is durable, in order.
    fn release(&mut self) -> Result<(), NodeError> {
        while self
            .held
            .front()
            .is_some_and(|h| h.after_write <= self.synced)
        {
            let held = self.held.pop_front().expect("checked");
            for env in held.messages {
                self.network
                    .send(self.cfg.node, env.to, PeerMessage::Paxos(env.message));
            }
            if let Some(change) = held.leadership {
                self.on_leadership(change);
            }
            self.install_and_apply(held.install, held.chosen)?;
        }
        Ok(())
    }
}
