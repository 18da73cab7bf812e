//! Candidate and leader: phase 1 over every unchosen slot, then pipelined
//! phase 2 with batching, heartbeats, retransmission and quorum checks.

use super::admission::MAX_RECOVERY_SLOTS;
use super::{CommandQueue, Leadership, Refusal, Replica, Role};
use crate::membership::{CONFIG_DELAY, Membership};
use crate::message::Message;
use crate::types::{
    Ballot, LogEntry, MAX_SLOT, MESSAGE_OVERHEAD_BYTES, NodeId, Slot, Value, command_bytes,
    split_by_bytes,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

/// One part of a promise, as received (see [`Message::Promise`]).
#[derive(Clone, Debug)]
pub(crate) struct PromisePart {
    pub(crate) ballot: Ballot,
    pub(crate) committed: Slot,
    pub(crate) truncated: Slot,
    pub(crate) entries: Vec<(Slot, LogEntry)>,
    pub(crate) first: Slot,
    pub(crate) through: Slot,
}

/// A reported vote, and whether its reporter knew it chosen.
type Vote = (bool, LogEntry);

/// Whether `vote` should replace `held` as the value to re-propose for a
/// slot: a value known chosen wins, then the vote of the highest ballot.
fn better(held: Option<&Vote>, vote: &Vote) -> bool {
    match held {
        None => true,
        Some((was_chosen, held)) => !was_chosen && (vote.0 || vote.1.ballot > held.ballot),
    }
}

/// What one member's promise has told a candidate so far.
#[derive(Clone, Debug)]
pub(crate) struct PromiseInfo {
    /// The votes reported, from the candidate's first unchosen slot on.
    votes: BTreeMap<Slot, Vote>,
    /// The first slot no part has reported on yet: parts are taken in
    /// slot order, so every slot below it (from the candidate's first
    /// unchosen one) is reported on.
    next: Slot,
    /// Parts have reported on every slot: the promise counts.
    complete: bool,
    /// Parts that arrived before the one reporting on `next` (the network
    /// reorders them), by their first slot, taken in once their turn
    /// comes: a long promise sent again in full on every retry could
    /// otherwise lose its order each time and never complete before the
    /// election timed out. At most [`MAX_EARLY_PARTS`].
    early: BTreeMap<Slot, PromisePart>,
}

/// Out-of-order promise parts a candidate keeps per member: enough for the
/// reordering of one round of parts, and a bound on what a peer's parts
/// can hold in memory (each within `max_message_bytes`).
const MAX_EARLY_PARTS: usize = 8;

impl PromiseInfo {
    /// Takes one part in: its votes, each known chosen if at or below the
    /// commit index the part was sent with (a later part may know more;
    /// each vote keeps what its own part knew). A part that starts past a
    /// slot not yet reported on waits in `early` for its turn; past
    /// [`MAX_EARLY_PARTS`] it is dropped and the candidate asks again.
    fn take(&mut self, from: Slot, part: PromisePart, partial_counts: bool) {
        if self.complete {
            return;
        }
        if part.first > self.next {
            if self.early.len() < MAX_EARLY_PARTS {
                self.early.insert(part.first, part);
            }
            return;
        }
        self.take_in_turn(from, part, partial_counts);
        while !self.complete {
            let Some(entry) = self.early.first_entry() else {
                break;
            };
            if *entry.key() > self.next {
                break;
            }
            let part = entry.remove();
            self.take_in_turn(from, part, partial_counts);
        }
        if self.complete {
            self.early.clear();
        }
    }

    /// Takes a part whose first slot is at or below `next` in.
    fn take_in_turn(&mut self, from: Slot, part: PromisePart, partial_counts: bool) {
        for (slot, entry) in part.entries.into_iter().filter(|(s, _)| *s >= from) {
            let vote = (slot <= part.committed, entry);
            if better(self.votes.get(&slot), &vote) {
                self.votes.insert(slot, vote);
            }
        }
        self.next = self.next.max(part.through.saturating_add(1));
        self.complete = part.through >= MAX_SLOT || partial_counts;
    }
}

/// A replica running phase 1 for its own ballot.
#[derive(Clone, Debug)]
pub(crate) struct Candidate {
    pub(crate) ballot: Ballot,
    /// First slot not known chosen when the election started.
    from: Slot,
    promises: BTreeMap<NodeId, PromiseInfo>,
    prepare_sent_at: Duration,
    pub(crate) queue: CommandQueue,
}

/// A slot proposed by the leader and not yet chosen.
#[derive(Clone, Debug)]
pub(super) struct InFlight {
    pub(super) value: Value,
    acks: BTreeSet<NodeId>,
    sent_at: Duration,
}

/// A replica that won phase 1 and proposes in its ballot.
#[derive(Clone, Debug)]
pub(crate) struct Leader {
    pub(crate) ballot: Ballot,
    next_slot: Slot,
    pub(super) in_flight: BTreeMap<Slot, InFlight>,
    pub(crate) queue: CommandQueue,
    /// Who promised this ballot: before proposing at a slot, they must
    /// meet every majority of the membership governing it.
    promisers: BTreeSet<NodeId>,
    /// The membership governing the first unchosen slot at election.
    elected_with: Membership,
    /// Values phase 1 found for slots up to `recover_until`, proposed
    /// again as the window reaches them (a gap gets a no-op).
    pub(super) recovered: BTreeMap<Slot, Value>,
    recover_until: Slot,
    /// Membership changes waiting for a slot, each a whole membership.
    pub(super) changes: VecDeque<Membership>,
    /// The highest slot each peer is known to hold.
    pub(super) progress: BTreeMap<NodeId, Slot>,
    /// The highest commit index each peer reported, in a CommitAck or a
    /// vote.
    pub(super) commit_acked: BTreeMap<NodeId, Slot>,
    /// Proposals made during this step, sent as one Accept per peer.
    unsent: Vec<(Slot, Value)>,
    announced: Slot,
    last_heartbeat: Duration,
    elected_at: Duration,
    pub(super) last_heard: BTreeMap<NodeId, Duration>,
}

/// What a leader may do at its next slot.
enum NextSlot {
    Propose,
    /// The window or the configuration delay is full.
    Wait,
    /// Its promisers do not meet the majorities of the membership there:
    /// phase 1 again, with a new ballot.
    Reelect,
    /// It is no voter there: it hands over.
    StepDown,
}

impl Replica {
    /// Starts phase 1 with a ballot above every ballot seen. When the
    /// ballot space above them is exhausted (admission keeps peers from
    /// getting there), it stays a follower rather than reuse a ballot.
    ///
    /// A node that may not campaign, or whose last campaign failed, also
    /// probes a peer: the members may all have moved on without it (see
    /// `seek_cluster`).
    pub(super) fn start_election(&mut self, now: Duration) {
        if !self.may_campaign() {
            self.step_down(now);
            self.reset_election_deadline(now);
            self.seek_cluster();
            return;
        }
        if matches!(self.role, Role::Candidate(_)) {
            self.seek_cluster();
        }
        let reuse = sabotaged!(self, ReuseOwnBallot)
            && self.promised.node == self.cfg.node
            && self.promised.counter > 0
            && matches!(self.role, Role::Follower);
        let next = if reuse {
            Some(self.promised)
        } else {
            self.promised.max(self.max_seen).next_for(self.cfg.node)
        };
        let Some(ballot) = next else {
            self.reset_election_deadline(now);
            return;
        };
        // Cannot fail: the new ballot is above the promise.
        let _ = self.set_promised(ballot);
        let queue = match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Candidate(c) => c.queue,
            Role::Leader(l) => {
                self.out.leadership = Some(Leadership::Lost);
                l.queue
            }
            Role::Follower => CommandQueue::new(),
        };
        let from = self.committed + 1;
        let own = PromiseInfo {
            votes: self
                .log
                .range(from..)
                .map(|(s, e)| (*s, (*s <= self.committed, e.clone())))
                .collect(),
            next: MAX_SLOT + 1,
            complete: true,
            early: BTreeMap::new(),
        };
        let mut promises = BTreeMap::new();
        promises.insert(self.cfg.node, own);
        self.role = Role::Candidate(Candidate {
            ballot,
            from,
            promises,
            prepare_sent_at: now,
            queue,
        });
        self.known_leader.hint = None;
        self.known_leader.ballot = None;
        self.known_leader.heard_at = None;
        self.reset_election_deadline(now);
        self.broadcast(&Message::Prepare { ballot, from });
        if self.governing(from).membership.is_quorum([&self.cfg.node]) {
            self.become_leader(now);
        }
    }

    /// Retries phase 1: a new ballot after the election timeout, and resends
    /// to silent peers in between (messages may have been lost).
    pub(super) fn candidate_tick(&mut self, now: Duration) {
        if now >= self.election_deadline {
            self.start_election(now);
            return;
        }
        let retry = self.cfg.heartbeat_interval * 2;
        let peers = self.peers();
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        if now < c.prepare_sent_at + retry {
            return;
        }
        c.prepare_sent_at = now;
        let (ballot, from) = (c.ballot, c.from);
        let silent: Vec<NodeId> = peers
            .into_iter()
            .filter(|p| !c.promises.get(p).is_some_and(|info| info.complete))
            .collect();
        for peer in silent {
            self.send(peer, Message::Prepare { ballot, from });
        }
    }

    /// Collects a promise, part by part; with a quorum of whole promises,
    /// becomes leader. A promise from a peer that compacted slots we still
    /// need, or that knows chosen slots more than [`MAX_RECOVERY_SLOTS`]
    /// past our first unchosen one, means we are too far behind to lead: we
    /// fall back to follower and catch up from that peer. A promise
    /// reporting votes that far ahead while knowing none of them chosen is
    /// refused: leading on it would mean proposing that many slots at once.
    ///
    /// A promise counts only once its parts have reported on every slot
    /// from our first unchosen one on: a vote in a part still missing could
    /// be a chosen value, which we must re-propose.
    pub(super) fn on_promise(&mut self, now: Duration, from: NodeId, part: PromisePart) {
        let electorate = match &self.role {
            Role::Candidate(c) => self.governing(c.from).membership.clone(),
            _ => return,
        };
        let partial_counts = sabotaged!(self, CountPartialPromise);
        let Role::Candidate(c) = &mut self.role else {
            return;
        };
        if c.ballot != part.ballot {
            return;
        }
        let (committed, truncated) = (part.committed, part.truncated);
        let horizon = c.from.saturating_add(MAX_RECOVERY_SLOTS);
        let last = part.entries.last().map_or(0, |(s, _)| *s);
        if last > horizon && committed < c.from {
            let refusal = Refusal::RecoveryTooLong {
                from: c.from,
                last,
                span: MAX_RECOVERY_SLOTS,
            };
            self.refuse(refusal);
            return;
        }
        if truncated >= c.from || last > horizon {
            self.step_down(now);
            self.known_leader.committed = self.known_leader.committed.max(committed);
            self.request_catchup(now, from);
            return;
        }
        let start = c.from;
        c.promises
            .entry(from)
            .or_insert(PromiseInfo {
                votes: BTreeMap::new(),
                next: start,
                complete: false,
                early: BTreeMap::new(),
            })
            .take(start, part, partial_counts);
        let whole: Vec<NodeId> = c
            .promises
            .iter()
            .filter(|(_, p)| p.complete)
            .map(|(n, _)| *n)
            .collect();
        // A majority of the membership governing the first unchosen slot,
        // meeting every majority of those governing the slots it may
        // propose before it learns more (one change at a time makes the
        // second part follow from the first; it is checked all the same).
        let horizon = c.from.saturating_add(CONFIG_DELAY);
        let covered = self
            .members
            .history
            .governing_from(c.from)
            .take_while(|e| e.effective <= horizon)
            .all(|e| e.membership.is_met_by(whole.iter()));
        if electorate.is_quorum(whole.iter()) && covered {
            self.become_leader(now);
        }
    }

    /// Phase 1 complete: re-propose, in our ballot, every slot from the
    /// first unchosen one up to the highest vote any promise reported. Each
    /// slot gets the value known chosen, else the highest-ballot vote, else
    /// a no-op. They are proposed as the window reaches them, each only
    /// once the membership governing it is known (see `fill_window`).
    fn become_leader(&mut self, now: Duration) {
        let Role::Candidate(c) = std::mem::replace(&mut self.role, Role::Follower) else {
            return;
        };
        let mut picked: BTreeMap<Slot, Vote> = BTreeMap::new();
        for info in c.promises.values().filter(|p| p.complete) {
            for (slot, vote) in info.votes.range(c.from..) {
                if better(picked.get(slot), vote) {
                    picked.insert(*slot, vote.clone());
                }
            }
        }
        let last = picked.keys().next_back().copied().unwrap_or(c.from - 1);
        let promisers: BTreeSet<NodeId> = c
            .promises
            .iter()
            .filter(|(_, p)| p.complete)
            .map(|(n, _)| *n)
            .collect();
        // Heard from are those that promised, not every peer: a change
        // right after the election counts these as reachable, and a voter
        // that never answered (cut off, or relearning and unable to
        // promise) is not (a leader elected by three of five once removed
        // itself at once, counting the two voters cut off from it as
        // reachable, and left the four that stayed no majority to make).
        let last_heard = promisers
            .iter()
            .filter(|n| **n != self.cfg.node)
            .map(|n| (*n, now))
            .collect();
        let leader = Leader {
            ballot: c.ballot,
            next_slot: c.from,
            in_flight: BTreeMap::new(),
            queue: c.queue,
            promisers,
            elected_with: self.governing(c.from).membership.clone(),
            recovered: picked.into_iter().map(|(s, (_, e))| (s, e.value)).collect(),
            recover_until: last,
            changes: VecDeque::new(),
            progress: BTreeMap::new(),
            commit_acked: BTreeMap::new(),
            unsent: Vec::new(),
            announced: 0,
            last_heartbeat: now,
            elected_at: now,
            last_heard,
        };
        self.role = Role::Leader(Box::new(leader));
        self.known_leader.hint = Some(self.cfg.node);
        self.out.leadership = Some(Leadership::Elected { ballot: c.ballot });
        self.fill_window(now);
        self.send_heartbeats(now);
    }

    /// Votes for our own proposal (persisted in this step's write, so it is
    /// durable before the Accept leaves) and queues it for the peers.
    fn propose_in_slot(&mut self, leader: &mut Leader, now: Duration, slot: Slot, value: Value) {
        let entry = LogEntry {
            ballot: leader.ballot,
            value: value.clone(),
        };
        self.out.write.entries.push((slot, entry.clone()));
        self.log.insert(slot, entry);
        let mut acks = BTreeSet::new();
        acks.insert(self.cfg.node);
        leader.in_flight.insert(
            slot,
            InFlight {
                value: value.clone(),
                acks,
                sent_at: now,
            },
        );
        leader.unsent.push((slot, value));
        leader.next_slot = slot + 1;
    }

    /// Fills the window: recovered values first, then a membership
    /// change, then queued commands (at most `max_batch` commands and
    /// `max_batch_bytes` bytes per slot; every queued command fits a slot
    /// alone: `propose` refuses others), then, while a chosen membership
    /// is not yet in effect, no-ops that bring it into effect.
    ///
    /// A sole voter's own vote chooses a slot (its node applies nothing
    /// before that vote is synced), so a full window empties at once: it
    /// fills again here, or no answer from a peer would ever come to make
    /// room, and a change would wait for client traffic to take effect.
    pub(super) fn fill_window(&mut self, now: Duration) {
        loop {
            let before = self.committed;
            if !self.fill_once(now) {
                return;
            }
            self.advance_commit(now);
            if self.committed == before {
                return;
            }
        }
    }

    /// Proposes while the window has room; false when the leader left
    /// its role (to campaign again or to hand over).
    fn fill_once(&mut self, now: Duration) -> bool {
        loop {
            match self.next_slot_rule() {
                NextSlot::Propose => {}
                NextSlot::Wait => return true,
                NextSlot::Reelect => {
                    self.start_election(now);
                    return false;
                }
                NextSlot::StepDown => {
                    self.step_down(now);
                    return false;
                }
            }
            let pending_until = self.members.history.latest().effective;
            let Role::Leader(mut leader) = std::mem::replace(&mut self.role, Role::Follower) else {
                return false;
            };
            let slot = leader.next_slot;
            let value = self.next_value(&mut leader, slot, pending_until);
            let proposed = value.is_some();
            if let Some(value) = value {
                self.propose_in_slot(&mut leader, now, slot, value);
            }
            self.role = Role::Leader(leader);
            if !proposed {
                return true;
            }
        }
    }

    fn next_value(&self, leader: &mut Leader, slot: Slot, pending_until: Slot) -> Option<Value> {
        if slot <= leader.recover_until {
            return Some(leader.recovered.remove(&slot).unwrap_or(Value::Noop));
        }
        if !leader.changes.is_empty() {
            // A change waits until every slot before it is chosen. Any slot
            // still open may yet be chosen with a change another leader
            // proposed there in a lower ballot (its vote can be missing
            // from our phase-1 quorum and found by the next leader's), and
            // two changes would then be in flight at once (5-node
            // `--reconfig` seed 8383: a promotion at slot 351, proposed by a
            // leader cut off from the others, was chosen after a removal
            // at 357). Once the slots before it are chosen, the change
            // check has seen every value they hold.
            if slot != self.committed.saturating_add(1) && !sabotaged!(self, ConcurrentChanges) {
                return None;
            }
            return leader.changes.pop_front().map(Value::Reconfig);
        }
        if !leader.queue.is_empty() {
            let mut bytes = 0usize;
            let n = leader
                .queue
                .iter()
                .take(self.cfg.max_batch)
                .take_while(|c| {
                    bytes = bytes.saturating_add(command_bytes(c));
                    bytes <= self.cfg.max_batch_bytes
                })
                .count()
                .max(1);
            return Some(Value::Batch(leader.queue.drain(..n).collect()));
        }
        (slot < pending_until).then_some(Value::Noop)
    }

    /// Whether the leader may propose at its next slot (see the
    /// `membership` module for why each rule keeps a slot safe).
    fn next_slot_rule(&self) -> NextSlot {
        let Role::Leader(leader) = &self.role else {
            return NextSlot::Wait;
        };
        let slot = leader.next_slot;
        if leader.in_flight.len() >= self.cfg.window
            || slot > self.committed.saturating_add(CONFIG_DELAY)
        {
            return NextSlot::Wait;
        }
        let governing = &self.governing(slot).membership;
        let drained = leader.in_flight.is_empty();
        if !governing.voters.contains(&self.cfg.node) {
            // It hands over once a majority of the voters that follow know
            // every slot it led chosen (its heartbeats tell them), so they
            // can elect a leader among themselves without it.
            let told: Vec<NodeId> = leader
                .progress
                .iter()
                .filter(|(_, at)| **at >= self.committed)
                .map(|(n, _)| *n)
                .collect();
            return if drained && governing.is_quorum(told.iter()) {
                NextSlot::StepDown
            } else {
                NextSlot::Wait
            };
        }
        if !governing.is_met_by(leader.promisers.iter()) {
            return if drained {
                NextSlot::Reelect
            } else {
                NextSlot::Wait
            };
        }
        NextSlot::Propose
    }

    /// Counts votes for our proposals, and notes how far the voter has
    /// learned, as a CommitAck would tell.
    pub(super) fn on_accepted(
        &mut self,
        now: Duration,
        from: NodeId,
        ballot: Ballot,
        slots: &[Slot],
        committed: Slot,
    ) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        if leader.ballot != ballot {
            return;
        }
        leader.last_heard.insert(from, now);
        let at = leader.progress.entry(from).or_default();
        *at = (*at).max(committed).max(slots.last().copied().unwrap_or(0));
        let acked = leader.commit_acked.entry(from).or_default();
        *acked = (*acked).max(committed);
        for slot in slots {
            if let Some(f) = leader.in_flight.get_mut(slot) {
                f.acks.insert(from);
            }
        }
        self.advance_commit(now);
        self.fill_window(now);
    }

    /// A follower answered a heartbeat.
    pub(super) fn on_commit_ack(
        &mut self,
        now: Duration,
        from: NodeId,
        ballot: Ballot,
        committed: Slot,
    ) {
        if let Role::Leader(leader) = &mut self.role
            && leader.ballot == ballot
        {
            leader.last_heard.insert(from, now);
            let at = leader.progress.entry(from).or_default();
            *at = (*at).max(committed);
            let acked = leader.commit_acked.entry(from).or_default();
            *acked = (*acked).max(committed);
            self.fill_window(now);
        }
    }

    /// While leading: how many slots each peer that answered is behind
    /// this replica's commit index, as of its last answer (see
    /// [`Replica::peer_progress`]). Empty on a follower. Read-only, for
    /// monitoring.
    pub fn peer_lag(&self) -> Vec<(NodeId, Slot)> {
        self.peer_progress()
            .into_iter()
            .map(|(peer, at)| (peer, self.committed.saturating_sub(at)))
            .collect()
    }

    /// Advances the commit index over the contiguous prefix of slots voted
    /// for in our ballot by a majority of the membership governing each.
    fn advance_commit(&mut self, _now: Duration) {
        loop {
            let Role::Leader(leader) = &self.role else {
                return;
            };
            let next = self.committed + 1;
            let Some(f) = leader.in_flight.get(&next) else {
                break;
            };
            let electorate = if sabotaged!(self, OldConfigQuorum) {
                &leader.elected_with
            } else {
                &self.governing(next).membership
            };
            let chosen = if sabotaged!(self, MinorityQuorum) {
                let votes = f.acks.iter().filter(|n| electorate.voters.contains(n));
                votes.count() >= (electorate.voters.len() / 2).max(1)
            } else {
                electorate.is_quorum(f.acks.iter())
            };
            if !chosen {
                break;
            }
            if let Role::Leader(leader) = &mut self.role {
                leader.in_flight.remove(&next);
            }
            self.committed = next;
            self.sync_configs();
        }
    }

    /// Heartbeats, retransmission of proposals that peers have not voted
    /// for, and stepping down when no quorum has answered for an election
    /// timeout (so a leader cut off from the majority stops leading).
    pub(super) fn leader_tick(&mut self, now: Duration) {
        let timeout = self.cfg.election_timeout;
        let retry = self.cfg.heartbeat_interval * 2;
        let peers = self.peers();
        let electorate = self.membership_in_effect().clone();
        let me = self.cfg.node;
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let heard: Vec<NodeId> = electorate
            .voters
            .iter()
            .copied()
            .filter(|v| *v == me || leader.last_heard.get(v).is_some_and(|t| now < *t + timeout))
            .collect();
        if !electorate.is_quorum(heard.iter()) && now >= leader.elected_at + timeout {
            self.step_down(now);
            return;
        }
        let ballot = leader.ballot;
        let committed = self.committed;
        let mut resend: BTreeMap<NodeId, Vec<(Slot, Value)>> = BTreeMap::new();
        for (slot, f) in leader.in_flight.iter_mut() {
            if now < f.sent_at + retry {
                continue;
            }
            f.sent_at = now;
            for peer in peers.iter().filter(|p| !f.acks.contains(p)) {
                resend
                    .entry(*peer)
                    .or_default()
                    .push((*slot, f.value.clone()));
            }
        }
        let due = now >= leader.last_heartbeat + self.cfg.heartbeat_interval;
        let budget = self.accept_budget();
        for (peer, entries) in resend {
            for entries in split_by_bytes(entries, budget, Value::entry_bytes) {
                let message = Message::Accept {
                    ballot,
                    committed,
                    entries,
                };
                self.send(peer, message);
            }
        }
        if due {
            self.send_heartbeats(now);
        }
    }

    fn send_heartbeats(&mut self, now: Duration) {
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        leader.last_heartbeat = now;
        leader.announced = self.committed;
        let message = Message::Commit {
            ballot: leader.ballot,
            committed: self.committed,
        };
        self.broadcast(&message);
    }

    /// Room for entries in one Accept.
    fn accept_budget(&self) -> usize {
        self.cfg
            .max_message_bytes
            .saturating_sub(MESSAGE_OVERHEAD_BYTES)
    }

    /// Sends this step's proposals to every peer, in as few Accepts as
    /// [`crate::Config::max_message_bytes`] allows, or, when there are none
    /// but the commit index moved, a Commit so followers apply promptly.
    pub(super) fn flush_leader_messages(&mut self) {
        let budget = self.accept_budget();
        let Role::Leader(leader) = &mut self.role else {
            return;
        };
        let ballot = leader.ballot;
        let committed = self.committed;
        let messages: Vec<Message> = if !leader.unsent.is_empty() {
            let unsent = std::mem::take(&mut leader.unsent);
            split_by_bytes(unsent, budget, Value::entry_bytes)
                .into_iter()
                .map(|entries| Message::Accept {
                    ballot,
                    committed,
                    entries,
                })
                .collect()
        } else if leader.announced < committed {
            vec![Message::Commit { ballot, committed }]
        } else {
            return;
        };
        leader.announced = committed;
        for message in &messages {
            self.broadcast(message);
        }
    }
}
