//! The acceptor and learner side: answering prepares, accepts and commits.

use super::{Refusal, Replica, Role};
use crate::error::PaxosError;
use crate::message::Message;
use crate::types::{
    Ballot, LogEntry, MAX_SLOT, MESSAGE_OVERHEAD_BYTES, NodeId, Slot, Value, split_by_bytes,
};
use std::time::Duration;

/// What a replica knows of, and has told, the leader it follows (or, for
/// `hint` and `committed`, the candidates and peers it has heard).
#[derive(Clone, Debug, Default)]
pub(super) struct KnownLeader {
    /// The node believed to lead.
    pub(super) hint: Option<NodeId>,
    /// Ballot of the leader last heard from (followers only).
    pub(super) ballot: Option<Ballot>,
    /// When a leader was last heard from.
    pub(super) heard_at: Option<Duration>,
    /// Highest commit index a leader has told us about (or, while seeking
    /// the cluster, the last slot a peer reported holding).
    pub(super) committed: Slot,
    /// The ballot of the last Commit this replica answered with a
    /// CommitAck, and when.
    pub(super) answered: Option<(Ballot, Duration)>,
}

/// One part of a promise: the first and last slot it reports on, and its
/// votes.
type Part = (Slot, Slot, Vec<(Slot, LogEntry)>);

/// The parts of a promise reporting `votes` (every vote held from `start`
/// on, in slot order), each within `budget` estimated bytes: the slot range
/// each reports on (`first`, `through`) and its votes. The ranges follow
/// one another from `start`, and the last runs through [`MAX_SLOT`], so
/// together they report on every slot from `start` on, and a part reports
/// every vote in its range. A single vote larger than `budget` still gets a
/// part of its own (a slot cannot be split; the proposer's limits keep
/// honest votes within budget).
fn promise_parts(start: Slot, votes: Vec<(Slot, LogEntry)>, budget: usize) -> Vec<Part> {
    let groups = split_by_bytes(votes, budget, |e: &LogEntry| e.value.entry_bytes());
    let mut parts = Vec::with_capacity(groups.len().max(1));
    let mut first = start;
    let mut groups = groups.into_iter().peekable();
    loop {
        let entries = groups.next().unwrap_or_default();
        // The next part starts at its first vote; this one ends before it.
        let Some(next) = groups.peek().and_then(|g| g.first()).map(|(s, _)| *s) else {
            parts.push((first, MAX_SLOT, entries));
            return parts;
        };
        parts.push((first, next - 1, entries));
        first = next;
    }
}

impl Replica {
    /// Phase 1b. Grants a promise to a higher ballot unless a live leader
    /// was heard recently (so a node rejoining from a partition cannot
    /// depose a healthy leader), refuses a lower one with a NACK. A node
    /// whose promise could count for nothing (see `may_promise`) stays
    /// silent, but catches up from a candidate that knows more slots
    /// chosen: with the leader gone, candidates are the members that show
    /// themselves, and a voter that has yet to learn of its own promotion
    /// promises nothing until it does (a promoted voter that lagged behind
    /// its promotion once ignored every prepare, and the majority the
    /// candidates needed included it).
    pub(super) fn on_prepare(&mut self, now: Duration, from: NodeId, ballot: Ballot, slot: Slot) {
        if self.rejoin.is_some() || !self.may_promise() {
            let known = slot.saturating_sub(1);
            if known > self.committed && !self.heard_leader_recently(now) {
                self.known_leader.committed = self.known_leader.committed.max(known);
                self.request_catchup(now, from);
            }
            return;
        }
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Message::Nack { ballot, promised });
            return;
        }
        if ballot > self.promised {
            let sticky = match self.role {
                Role::Leader(_) => true,
                Role::Candidate(_) => false,
                Role::Follower => {
                    self.heard_leader_recently(now) && self.known_leader.hint != Some(from)
                }
            };
            if sticky {
                return;
            }
            self.observe_higher_ballot(now, ballot);
            // Cannot fail: `ballot > self.promised`.
            let _ = self.set_promised(ballot);
            self.reset_election_deadline(now);
        }
        let start = slot.max(self.truncated + 1);
        let votes = if sabotaged!(self, ForgetVotesInPromise) {
            Vec::new()
        } else {
            self.log
                .range(start..)
                .map(|(s, e)| (*s, e.clone()))
                .collect()
        };
        let budget = self
            .cfg
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES);
        let (committed, truncated) = (self.committed, self.truncated);
        for (first, through, entries) in promise_parts(start, votes, budget) {
            let message = Message::Promise {
                ballot,
                committed,
                truncated,
                entries,
                first,
                through,
            };
            self.send(from, message);
        }
    }

    /// Phase 2b. Votes for every proposal of a ballot at least as high as
    /// the promise, except proposals of another value for a slot already
    /// known chosen. An Accept reaching past the vote horizon is refused
    /// whole, before it can raise the promise: this replica lags (and
    /// catches up from the leader's heartbeats) or the Accept is forged.
    pub(super) fn on_accept(
        &mut self,
        now: Duration,
        from: NodeId,
        ballot: Ballot,
        committed: Slot,
        entries: Vec<(Slot, Value)>,
    ) -> Result<(), PaxosError> {
        if self.rejoin.is_some() {
            self.follow(now, ballot, committed);
            return Ok(());
        }
        if ballot < self.promised && !sabotaged!(self, AcceptLowerBallot) {
            let promised = self.promised;
            self.send(from, Message::Nack { ballot, promised });
            return Ok(());
        }
        let horizon = self.vote_horizon();
        if let Some((slot, _)) = entries.last().filter(|(s, _)| *s > horizon) {
            self.refuse(Refusal::AcceptTooFarAhead {
                slot: *slot,
                horizon,
            });
            return Ok(());
        }
        if ballot > self.promised {
            self.observe_higher_ballot(now, ballot);
            self.set_promised(ballot)?;
        }
        self.follow(now, ballot, committed);
        let mut slots = Vec::with_capacity(entries.len());
        for (slot, value) in entries {
            if slot <= self.committed {
                // Already chosen. Another value can only come from a leader
                // whose ballot is below the one that chose it (a higher one
                // would have recovered the chosen value), and such a ballot
                // can no longer gather a quorum; still, give it no vote. We
                // can learn a chosen value by catch-up without having
                // promised the ballot that chose it, so this is no error.
                if self.log.get(&slot).is_some_and(|e| e.value != value) {
                    continue;
                }
            } else {
                let entry = LogEntry { ballot, value };
                self.out.write.entries.push((slot, entry.clone()));
                self.log.insert(slot, entry);
            }
            slots.push(slot);
        }
        self.learn_commit(now, ballot, committed);
        let committed = self.committed;
        self.send(
            from,
            Message::Accepted {
                ballot,
                slots,
                committed,
            },
        );
        Ok(())
    }

    /// A leader's heartbeat and commit index. Answered unless it only
    /// announced newly chosen slots and this follower answered the same
    /// leader less than half a heartbeat interval ago: under load a leader
    /// announces every slot, and an answer to each would cost it a read
    /// and a step per slot and follower, while the follower's votes carry
    /// the same commit index. Half an interval, so that a periodic
    /// heartbeat skipped this way is followed by one that is answered
    /// whatever it moves: without votes, at most about one and a half
    /// heartbeat intervals pass between two answers (one, if every Commit
    /// were answered), well inside an election timeout.
    pub(super) fn on_commit(
        &mut self,
        now: Duration,
        from: NodeId,
        ballot: Ballot,
        committed: Slot,
    ) {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Message::Nack { ballot, promised });
            return;
        }
        self.observe_higher_ballot(now, ballot);
        self.follow(now, ballot, committed);
        let before = self.committed;
        self.learn_commit(now, ballot, committed);
        // A voter relearning after a disk loss cannot vote yet: it must
        // not look reachable to the leader, which would count it toward
        // the majority a membership change keeps (two relearning voters
        // of four left a shrunk cluster without a majority for good).
        if self.rejoin.is_some() {
            return;
        }
        let announced_only = self.committed > before;
        let answered_lately = self
            .known_leader
            .answered
            .is_some_and(|(b, at)| b == ballot && now < at + self.cfg.heartbeat_interval / 2);
        if announced_only && answered_lately {
            return;
        }
        self.known_leader.answered = Some((ballot, now));
        let committed = self.committed;
        self.send(from, Message::CommitAck { ballot, committed });
    }

    /// A refusal: someone promised a higher ballot than ours.
    pub(super) fn on_nack(&mut self, now: Duration, refused: Ballot, promised: Ballot) {
        self.max_seen = self.max_seen.max(promised);
        let mine = match &self.role {
            Role::Follower => return,
            Role::Candidate(c) => c.ballot,
            Role::Leader(l) => l.ballot,
        };
        if refused == mine && promised > mine {
            self.step_down(now);
        }
    }

    /// A leader or candidate that sees a higher ballot in use steps down.
    pub(super) fn observe_higher_ballot(&mut self, now: Duration, ballot: Ballot) {
        self.max_seen = self.max_seen.max(ballot);
        let mine = match &self.role {
            Role::Follower => return,
            Role::Candidate(c) => c.ballot,
            Role::Leader(l) => l.ballot,
        };
        if ballot > mine {
            self.step_down(now);
        }
    }

    /// Records that the leader of `ballot` is alive.
    fn follow(&mut self, now: Duration, ballot: Ballot, committed: Slot) {
        if !matches!(self.role, Role::Follower) {
            return;
        }
        self.known_leader.hint = Some(ballot.node);
        self.known_leader.ballot = Some(ballot);
        self.known_leader.heard_at = Some(now);
        self.known_leader.committed = self.known_leader.committed.max(committed);
        self.reset_election_deadline(now);
    }

    /// Marks slots chosen up to the leader's commit index, as far as our
    /// votes were cast in the leader's ballot (the leader proposes one value
    /// per slot per ballot, so such a vote holds the chosen value). Asks for
    /// catch-up at the first slot that cannot be learned this way.
    fn learn_commit(&mut self, now: Duration, ballot: Ballot, committed: Slot) {
        if !matches!(self.role, Role::Follower) {
            return;
        }
        while self.committed < committed {
            let next = self.committed + 1;
            match self.log.get(&next) {
                Some(e) if e.ballot == ballot || sabotaged!(self, CommitIgnoresBallot) => {
                    self.committed = next;
                }
                _ => break,
            }
        }
        if self.committed < committed {
            self.request_catchup(now, ballot.node);
        }
    }
}
