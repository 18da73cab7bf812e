//! The durability pipeline. Messages wait for the journal sync that covers
//! their step (group commit, one sync in flight) before they leave.
//! Chosen values do not wait (in a cluster of more than one node): a value
//! is chosen only once a quorum holds it durably, so applying it, and
//! answering the client, needs nothing from this node's disk. The commit
//! index that usually rides along in the same write is a hint
//! ([`trexlock_paxos::JournalState::committed`]): losing it costs a
//! catch-up, never an acknowledged command. Waiting for it would put one
//! more sync on every request's path. For the same reason a write that
//! holds nothing but a new commit index gets no sync of its own: it rides
//! along with the next write that holds votes, a promise or a snapshot, or
//! is flushed by itself once the node has been quiet for
//! [`HINT_FLUSH_AFTER`] (and at shutdown). Otherwise every slot would cost
//! every node two syncs, the second one delaying the next slot's votes.
//!
//! The leader's Accepts and Commits leave without waiting for its own sync,
//! so its disk and its followers' disks work at the same time (as in
//! Raft, where the leader appends to its log in parallel with replication).
//! An Accept (phase 2a) carries a proposal, not the leader's vote; what must
//! not happen is the core counting the leader's own, not yet durable, vote
//! towards a quorum. The replica counts it as soon as it proposes, so the
//! node holds back every `Accepted` for a slot until the leader's vote for
//! that slot is synced: a slot is then chosen only with the leader's vote
//! and a follower's vote both on disk. A step that raised the promise
//! sends nothing early.

use super::{Effect, NodeCore};
use crate::error::NodeError;
use crate::network::PeerMessage;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use trexlock_paxos::{
    Envelope, JournalWrite, Leadership, Message, NodeId, Ready, Slot, Snapshot, Value,
};

/// How long a commit index may wait for a write to ride along with before
/// it is synced by itself.
const HINT_FLUSH_AFTER: Duration = Duration::from_millis(200);

/// Effects of one step, held until the journal write they follow is synced
/// (`install` and `chosen` only on a single-node cluster, where this node's
/// write IS the quorum).
#[derive(Clone, Debug)]
struct Held {
    after_write: u64,
    messages: Vec<Envelope>,
    install: Option<Snapshot>,
    chosen: Vec<(Slot, Value)>,
    leadership: Option<Leadership>,
}

/// The journal writes of one node and the effects that wait for them.
#[derive(Clone, Debug)]
pub(super) struct Pipeline {
    next_write: JournalWrite,
    /// `next_write` holds more than a commit index, so it must be synced
    /// as soon as the journal is free (and it has id `assigned`).
    next_durable: bool,
    /// Since when `next_write` has held only a commit index.
    hint_since: Option<Duration>,
    /// Id of the newest write that needs a sync (in flight or in
    /// `next_write`); held effects wait for it.
    assigned: u64,
    synced: u64,
    in_flight: bool,
    held: VecDeque<Held>,
    /// At the leader: for each slot whose own vote is not yet synced, the
    /// write that holds it.
    vote_writes: BTreeMap<Slot, u64>,
    /// `Accepted`s held back until the leader's own votes for their slots
    /// are synced: (write to wait for, sender, message).
    deferred: Vec<(u64, NodeId, Message)>,
    /// The leader's Accepts and Commits of this round, sent together at its
    /// end (see [`NodeCore::flush_outbox`]).
    outbox: Vec<Envelope>,
    /// More than one member: chosen values are durable elsewhere too, so
    /// they are applied without waiting for this node's writes.
    replicated: bool,
}

impl Pipeline {
    pub(super) fn new(replicated: bool) -> Pipeline {
        Pipeline {
            next_write: JournalWrite::default(),
            next_durable: false,
            hint_since: None,
            assigned: 0,
            synced: 0,
            in_flight: false,
            held: VecDeque::new(),
            vote_writes: BTreeMap::new(),
            deferred: Vec::new(),
            outbox: Vec::new(),
            replicated,
        }
    }

    pub(super) fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// The write an `Accepted` for `slots` must wait for before the leader
    /// may count it: the newest unsynced write holding its own vote for one
    /// of them.
    fn vote_wait(&self, slots: &[Slot]) -> Option<u64> {
        slots
            .iter()
            .filter_map(|slot| self.vote_writes.get(slot))
            .max()
            .copied()
            .filter(|id| *id > self.synced)
    }
}

/// True when `write` holds nothing but the commit index, a hint that no
/// message and no answer depends on.
fn only_commit_index(write: &JournalWrite) -> bool {
    write.promised.is_none()
        && write.entries.is_empty()
        && write.snapshot.is_none()
        && write.truncate.is_none()
}

impl NodeCore {
    /// A peer's consensus message; an `Accepted` that would count before
    /// the leader's own vote is durable waits for it.
    pub(super) fn on_paxos(&mut self, from: NodeId, message: Message) -> Result<(), NodeError> {
        if let Message::Accepted { slots, .. } = &message
            && !sabotaged!(self, LeaderUnsyncedVote)
            && let Some(wait) = self.pipeline.vote_wait(slots)
        {
            self.pipeline.deferred.push((wait, from, message));
            return Ok(());
        }
        let envelope = Envelope {
            from,
            to: self.cfg.node,
            message,
        };
        let ready = self.replica.handle(self.now, envelope)?;
        self.perform(ready)
    }

    /// Queues a step's effects behind the journal write they depend on.
    pub(super) fn perform(&mut self, ready: Ready) -> Result<(), NodeError> {
        let leading = self.replica.is_leader();
        let p = &mut self.pipeline;
        let promising = ready.write.promised.is_some();
        if !ready.write.is_empty() {
            if !only_commit_index(&ready.write) {
                if !p.next_durable {
                    p.assigned += 1;
                    p.next_durable = true;
                }
            } else if p.next_write.is_empty() {
                p.hint_since = Some(self.now);
            }
            if p.replicated && leading {
                for (slot, _) in &ready.write.entries {
                    p.vote_writes.insert(*slot, p.assigned);
                }
            }
            p.next_write.merge(ready.write);
        }
        let mut messages = ready.messages;
        if p.replicated && !promising && leading {
            // Proposals and commit notices need no vote of ours on disk
            // (see the module comment): send them now.
            let (early, later): (Vec<_>, Vec<_>) = messages.into_iter().partition(|env| {
                matches!(env.message, Message::Accept { .. } | Message::Commit { .. })
            });
            p.outbox.extend(early);
            messages = later;
        } else if p.replicated && sabotaged!(self, EarlyAccepted) {
            let (early, later): (Vec<_>, Vec<_>) = messages
                .into_iter()
                .partition(|env| matches!(env.message, Message::Accepted { .. }));
            self.pipeline.outbox.extend(early);
            messages = later;
        }
        let p = &mut self.pipeline;
        let (install, chosen, now_install, now_chosen) = if p.replicated {
            (None, Vec::new(), ready.install, ready.chosen)
        } else {
            (ready.install, ready.chosen, None, Vec::new())
        };
        let nothing_else = messages.is_empty()
            && install.is_none()
            && chosen.is_empty()
            && ready.leadership.is_none();
        if !nothing_else {
            p.held.push_back(Held {
                after_write: p.assigned,
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
        let p = &mut self.pipeline;
        if p.in_flight || !p.next_durable {
            return;
        }
        p.in_flight = true;
        p.next_durable = false;
        p.hint_since = None;
        let write = std::mem::take(&mut p.next_write);
        let id = p.assigned;
        self.effects.push(Effect::Persist { id, write });
    }

    /// Syncs a commit index that has waited alone for long enough (or at
    /// once with `force`), so a quiet node's journal catches up with it.
    pub(super) fn flush_hint(&mut self, force: bool) {
        let p = &mut self.pipeline;
        if p.in_flight || p.next_durable || p.next_write.is_empty() {
            return;
        }
        if !force
            && p.hint_since
                .is_some_and(|t| self.now.saturating_sub(t) < HINT_FLUSH_AFTER)
        {
            return;
        }
        p.assigned += 1;
        p.next_durable = true;
        self.submit_write();
    }

    pub(super) fn on_synced(&mut self, id: u64) -> Result<(), NodeError> {
        let p = &mut self.pipeline;
        p.synced = id;
        p.in_flight = false;
        p.vote_writes.retain(|_, write| *write > id);
        self.submit_write();
        self.release()?;
        if self
            .pipeline
            .deferred
            .iter()
            .any(|(write, ..)| *write <= id)
        {
            let (now, later) = std::mem::take(&mut self.pipeline.deferred)
                .into_iter()
                .partition(|(write, ..)| *write <= id);
            self.pipeline.deferred = later;
            for (_, from, message) in now {
                self.on_paxos(from, message)?;
            }
        }
        Ok(())
    }

    /// Performs every held effect whose write is durable, in order.
    fn release(&mut self) -> Result<(), NodeError> {
        while self
            .pipeline
            .held
            .front()
            .is_some_and(|h| h.after_write <= self.pipeline.synced)
        {
            let Some(held) = self.pipeline.held.pop_front() else {
                break;
            };
            for env in held.messages {
                self.send(env.to, PeerMessage::Paxos(env.message));
            }
            if let Some(change) = held.leadership {
                self.on_leadership(change);
            }
            self.install_and_apply(held.install, held.chosen)?;
        }
        Ok(())
    }

    /// Sends the round's early messages. A Commit only announces the
    /// commit index (and that the leader lives); a later Accept or Commit
    /// to the same peer in the same round carries a commit index at least
    /// as high, so the earlier Commit is left out. Under load this saves a
    /// Commit and its CommitAck per slot and per follower.
    pub(super) fn flush_outbox(&mut self) {
        if self.pipeline.outbox.is_empty() {
            return;
        }
        let outbox = std::mem::take(&mut self.pipeline.outbox);
        let mut announced: Vec<NodeId> = Vec::new();
        let mut keep = vec![true; outbox.len()];
        for (i, env) in outbox.iter().enumerate().rev() {
            let commit = matches!(env.message, Message::Commit { .. });
            if commit && announced.contains(&env.to) {
                keep[i] = false;
            } else if !announced.contains(&env.to) {
                announced.push(env.to);
            }
        }
        for (env, keep) in outbox.into_iter().zip(keep) {
            if keep {
                self.send(env.to, PeerMessage::Paxos(env.message));
            }
        }
    }
}
