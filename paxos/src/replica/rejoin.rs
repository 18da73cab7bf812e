//! Starting from an empty journal without breaking safety.
//!
//! A replica whose journal is empty cannot tell a brand-new cluster from
//! having lost its disk. If it had lost its disk, it forgot promises and
//! votes that other replicas counted on: voting again at once could let a
//! quorum that relies on its forgotten vote choose a second value for a
//! slot. So an empty replica starts as a **learner**: it neither promises,
//! votes nor campaigns. It asks every other member for its promise and the
//! highest slot it holds a vote for (`Probe`). It becomes a voter when
//!
//! - every member answered that it holds no vote (nothing can have been
//!   chosen: a new cluster), and it then promises the highest ballot
//!   reported, or
//! - it has heard a leader whose ballot is at least every promise reported,
//!   and it has caught up, as a learner, through the highest slot anyone
//!   reported. It then promises that ballot. Why that suffices: any
//!   candidate that counted one of its forgotten promises has promised its
//!   own ballot too, so that ballot is among the reported ones and ours is
//!   not below it; and any value chosen with one of its forgotten votes was
//!   also voted for by a member that reported that slot, so catching up
//!   through the highest reported slot teaches it every such value as
//!   chosen.
//!
//! "Every other member" means every other voter of the memberships this
//! replica knows to govern its next slots (the bootstrap voters until it
//! learns a chosen membership, which catch-up teaches it). The price: a
//! voter with an empty journal needs every other voter to answer once
//! before it votes. A node that joins under a new id skips all this (it
//! never voted, so it forgot nothing: see `Replica::new`), and so does a
//! node removed, wiped and added back as a learner: every slot it ever
//! voted for was chosen before its removal took effect (changes are one at
//! a time), and a chosen value stays chosen whatever it votes later.

use super::{Replica, Role};
use crate::message::Message;
use crate::types::{Ballot, NodeId, Slot};
use std::collections::BTreeMap;
use std::time::Duration;

/// What a learner has found out so far.
#[derive(Clone, Debug)]
pub(crate) struct Rejoin {
    replies: BTreeMap<NodeId, (Ballot, Slot)>,
    probe_sent_at: Option<Duration>,
    /// What it learned, written to the journal only when it becomes a
    /// voter: a learner that crashes must restart with an empty journal,
    /// and so as a learner again.
    pub(crate) deferred: crate::journal::JournalWrite,
}

impl Rejoin {
    pub(crate) fn new() -> Rejoin {
        Rejoin {
            replies: BTreeMap::new(),
            probe_sent_at: None,
            deferred: crate::journal::JournalWrite::default(),
        }
    }
}

impl Replica {
    /// Any replica answers a probe with its promise and highest slot (and
    /// a leader releases a removed node that is needed no more, after the
    /// reply: its ballot shows the node how far ballots have grown).
    pub(super) fn on_probe(&mut self, from: NodeId) {
        let last_slot = self
            .log
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(self.committed)
            .max(self.truncated);
        let promised = self.promised;
        self.send(
            from,
            Message::ProbeReply {
                promised,
                last_slot,
            },
        );
        self.release(from);
    }

    /// A learner counts the reply (see the module docs); any node that
    /// hears no leader, a learner included, catches up from a peer that is
    /// ahead (see `seek_cluster`).
    ///
    /// Of a member's replies the learner keeps the latest promise and the
    /// lowest last slot. Every reply came after the journal was lost, so
    /// any one of them reports every vote the learner may have forgotten:
    /// the lowest is as sound as the latest, and it does not move. Taking
    /// the latest made the learner chase a busy leader's newest proposal,
    /// which its commit index never reaches while requests keep coming (a
    /// node of a new cluster that missed the first round of answers stayed
    /// a learner for good, and with one more voter down no majority was
    /// left). A forged or corrupt high reply is outlived the same way.
    pub(super) fn on_probe_reply(
        &mut self,
        now: Duration,
        from: NodeId,
        promised: Ballot,
        last_slot: Slot,
    ) {
        self.max_seen = self.max_seen.max(promised);
        if let Some(rejoin) = &mut self.rejoin {
            let lowest = rejoin
                .replies
                .get(&from)
                .map_or(last_slot, |(_, s)| last_slot.min(*s));
            rejoin.replies.insert(from, (promised, lowest));
        }
        if !self.heard_leader_recently(now) && last_slot > self.committed {
            self.known_leader.committed = self.known_leader.committed.max(last_slot);
            self.request_catchup(now, from);
        }
    }

    /// A learner probes every other member every two heartbeats (see
    /// `on_probe_reply` for which of the replies it keeps). Any reply is
    /// sound to use, since every probe was sent after the journal was
    /// lost: a reply reflects every promise and vote the learner forgot.
    pub(super) fn rejoin_tick(&mut self, now: Duration) {
        let retry = self.cfg.heartbeat_interval * 2;
        let peers = self.peers();
        let Some(rejoin) = &mut self.rejoin else {
            return;
        };
        if rejoin.probe_sent_at.is_some_and(|t| now < t + retry) {
            return;
        }
        rejoin.probe_sent_at = Some(now);
        for peer in peers {
            self.send(peer, Message::Probe);
        }
        if let Some(leader) = self.live_leader_behind(now) {
            self.request_catchup(now, leader);
        }
    }

    /// Turns a learner into a voter once that is safe (see module docs).
    pub(super) fn maybe_finish_rejoin(&mut self, now: Duration) {
        let Some(rejoin) = &self.rejoin else {
            return;
        };
        let me = self.cfg.node;
        let all_answered = self
            .members
            .history
            .governing_from(self.committed.saturating_add(1))
            .flat_map(|e| e.membership.voters.iter())
            .all(|v| *v == me || rejoin.replies.contains_key(v));
        if !all_answered {
            return;
        }
        let promised = rejoin
            .replies
            .values()
            .map(|(b, _)| *b)
            .max()
            .unwrap_or_default();
        let last_slot = rejoin.replies.values().map(|(_, s)| *s).max().unwrap_or(0);
        // Nobody holds a vote: no value can have been chosen.
        let fresh_cluster = last_slot == 0;
        let caught_up = self
            .known_leader
            .ballot
            .is_some_and(|b| b >= promised && matches!(self.role, Role::Follower))
            && self.committed >= last_slot;
        if !(fresh_cluster || caught_up) {
            return;
        }
        let learned = self.rejoin.take().map(|r| r.deferred).unwrap_or_default();
        let mut write = learned;
        write.merge(std::mem::take(&mut self.out.write));
        self.out.write = write;
        // `(0, self)` is below every ballot a candidate uses (their counters
        // start at 1), so promising it constrains nothing; it only makes the
        // journal non-empty, so that a restart does not look like a lost disk.
        let marker = Ballot {
            counter: 0,
            node: self.cfg.node,
        };
        let ballot = self
            .known_leader
            .ballot
            .filter(|_| caught_up)
            .unwrap_or_default();
        // Cannot fail: a learner's promise is never above what it learned.
        let _ = self.set_promised(ballot.max(promised).max(marker).max(self.promised));
        self.reset_election_deadline(now);
    }
}
