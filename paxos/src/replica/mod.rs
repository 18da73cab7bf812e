//! The replica: acceptor, learner and (when elected) leader in one pure
//! state machine.
//!
//! Each call ([`Replica::handle`], [`Replica::propose`], [`Replica::tick`],
//! [`Replica::snapshot_taken`]) returns a [`Ready`]: everything the step
//! produced. The caller persists `ready.write` with ONE journal sync, then
//! sends `ready.messages`, then applies `ready.install` and `ready.chosen`.

mod acceptor;
mod admission;
mod catchup;
mod leader;
mod members;
mod rejoin;
#[cfg(test)]
mod tests;
mod transfer;

use crate::config::Config;
#[cfg(test)]
use crate::config::ConfigError;
use crate::error::{PaxosError, ProposeError};
use crate::journal::{JournalState, JournalWrite};
use crate::membership::{History, Membership};
use crate::message::{Envelope, Message};
use crate::types::{Ballot, LogEntry, NodeId, Slot, Snapshot, Value};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

pub use admission::Refusal;
pub(crate) use leader::{Candidate, Leader, PromisePart};

/// What one step produced. Perform it in field order: **persist `write`
/// (one sync) before sending any of `messages`**, then apply `install` and
/// `chosen` to the state machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "a step's effects must be persisted, sent and applied"]
pub struct Ready {
    /// Durable effects of the step; empty when nothing changed.
    pub write: JournalWrite,
    /// Messages to send once `write` is durable.
    pub messages: Vec<Envelope>,
    /// A snapshot the state machine must load before applying `chosen`.
    pub install: Option<Snapshot>,
    /// Newly chosen values in slot order, each exactly once per replica
    /// lifetime (a restarted replica delivers again from its snapshot).
    pub chosen: Vec<(Slot, Value)>,
    /// Set when this replica became leader or stopped being leader.
    pub leadership: Option<Leadership>,
    /// Commands this replica had queued but never proposed before it lost
    /// leadership. They were not chosen; the caller may forward them.
    pub unproposed: Vec<Bytes>,
    /// Set when the handled message was dropped unread, with the reason
    /// (for the caller's logs and metrics; nothing else needs doing).
    pub refused: Option<Refusal>,
}

impl Ready {
    /// True when the step produced nothing at all.
    pub fn is_empty(&self) -> bool {
        self.write.is_empty()
            && self.messages.is_empty()
            && self.install.is_none()
            && self.chosen.is_empty()
            && self.leadership.is_none()
            && self.unproposed.is_empty()
            && self.refused.is_none()
    }
}

/// A change of leadership at this replica.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Leadership {
    /// This replica now leads in `ballot`. Every value chosen before this
    /// moment is delivered before any value it proposes.
    Elected {
        /// The ballot it leads in.
        ballot: Ballot,
    },
    /// This replica no longer leads.
    Lost,
}

#[derive(Clone, Debug)]
pub(crate) enum Role {
    Follower,
    Candidate(Candidate),
    Leader(Box<Leader>),
}

/// One multi-Paxos replica. Pure: it reads no clock (time is passed in as
/// `now`, a monotonic duration since any fixed origin), performs no I/O and
/// draws randomness only from a generator seeded by [`Config::seed`].
///
/// `Clone` copies the whole state, the election randomness included, so
/// that a model checker can branch from any point; `Debug` shows every
/// field, so that it can tell two states apart.
#[derive(Clone, Debug)]
pub struct Replica {
    cfg: Config,
    rng: fastrand::Rng,
    promised: Ballot,
    log: BTreeMap<Slot, LogEntry>,
    truncated: Slot,
    snapshot: Option<Snapshot>,
    committed: Slot,
    persisted_committed: Slot,
    delivered: Slot,
    install_pending: bool,
    role: Role,
    /// Highest ballot seen anywhere; new ballots go above it.
    max_seen: Ballot,
    /// The highest ballot counter a peer has shown, and when it first did
    /// (see `Replica::ballot_limit`).
    ballot_anchor: (u64, Duration),
    /// What this replica knows of the leader it follows.
    known_leader: acceptor::KnownLeader,
    election_deadline: Duration,
    /// The catch-up under way, if any.
    catchup: catchup::Catchup,
    /// The checksum of our own snapshot, as served to peers: (slot, CRC).
    snapshot_checksum: Option<(Slot, u32)>,
    /// Peer messages dropped by admission checks so far.
    refused: u64,
    /// Set while this replica started empty and may not vote yet.
    rejoin: Option<rejoin::Rejoin>,
    /// The memberships chosen, and this node's place in them.
    members: members::Members,
    stopped: bool,
    out: Ready,
}

impl Replica {
    /// Starts a replica from the state its journal recovered.
    ///
    /// # Errors
    /// [`PaxosError::Config`] for bad settings, and
    /// [`PaxosError::InconsistentJournal`] when `state` contradicts itself.
    pub fn new(cfg: Config, state: JournalState, now: Duration) -> Result<Self, PaxosError> {
        cfg.validate()?;
        check_recovered(&state)?;
        let delivered = state.snapshot.as_ref().map_or(0, |s| s.slot);
        let bootstrap = Membership::of_voters(cfg.members.iter().copied());
        let joining = !cfg.members.contains(&cfg.node);
        let history = match &state.snapshot {
            Some(s) => members::snapshot_history(s)?
                .unwrap_or_else(|| History::bootstrap(bootstrap.clone(), joining)),
            None => History::bootstrap(bootstrap, joining),
        };
        // A node outside the bootstrap members joins as a learner: it
        // never voted under its id, so an empty journal hides nothing.
        let empty = state == JournalState::default()
            && cfg.members.len() > 1
            && cfg.members.contains(&cfg.node);
        #[cfg(feature = "sabotage")]
        let empty = empty && cfg.sabotage != Some(crate::config::Sabotage::VoteAfterDiskLoss);
        let rejoin = empty.then(rejoin::Rejoin::new);
        let mut replica = Replica {
            rng: fastrand::Rng::with_seed(cfg.seed),
            promised: state.promised,
            log: state.entries,
            truncated: state.truncated,
            install_pending: state.snapshot.is_some(),
            snapshot: state.snapshot,
            committed: state.committed,
            persisted_committed: state.committed,
            delivered,
            role: Role::Follower,
            max_seen: state.promised,
            ballot_anchor: (state.promised.counter, now),
            known_leader: acceptor::KnownLeader {
                committed: state.committed,
                ..Default::default()
            },
            election_deadline: now,
            catchup: catchup::Catchup::default(),
            snapshot_checksum: None,
            refused: 0,
            rejoin,
            members: members::Members::new(history, delivered, cfg.node),
            stopped: false,
            out: Ready::default(),
            cfg,
        };
        replica.sync_configs();
        replica.reset_election_deadline(now);
        Ok(replica)
    }

    /// This replica's id.
    pub fn id(&self) -> NodeId {
        self.cfg.node
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The highest ballot promised.
    pub fn promised(&self) -> Ballot {
        self.promised
    }

    /// Every slot up to here is known chosen.
    pub fn committed(&self) -> Slot {
        self.committed
    }

    /// The highest commit index a leader has announced to this replica
    /// (its own on the leader): how far this replica has to go to catch up.
    pub fn leader_committed(&self) -> Slot {
        self.known_leader.committed.max(self.committed)
    }

    /// True while this replica leads.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }

    /// The leader this replica believes in (itself when leading).
    pub fn leader(&self) -> Option<NodeId> {
        match self.role {
            Role::Leader(_) => Some(self.cfg.node),
            _ => self.known_leader.hint,
        }
    }

    /// The leader this replica has heard from within an election timeout
    /// before `now` (itself when leading); `None` while the last one it
    /// knew is silent or an election runs. For monitoring: readiness
    /// probes and "no leader" errors.
    pub fn live_leader(&self, now: Duration) -> Option<NodeId> {
        match self.role {
            Role::Leader(_) => Some(self.cfg.node),
            _ if self.heard_leader_recently(now) => self.known_leader.hint,
            _ => None,
        }
    }

    /// The vote held for `slot`, if any.
    pub fn entry(&self, slot: Slot) -> Option<&LogEntry> {
        self.log.get(&slot)
    }

    /// True while this replica started from an empty journal and may not
    /// vote yet (see the `rejoin` rules in the crate docs).
    pub fn is_learner(&self) -> bool {
        self.rejoin.is_some()
    }

    /// How many peer messages this replica dropped as malformed, forged,
    /// stale or unasked for (each reported in its step's
    /// [`Ready::refused`]).
    pub fn refused_messages(&self) -> u64 {
        self.refused
    }

    /// True once an error stopped this replica.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Handles one message from a peer. No message can stop, panic or
    /// wedge the replica: one that fails the admission checks (addressing,
    /// membership, ballots that cannot be exceeded or are not the sender's,
    /// slots out of range, answers nobody asked for) is dropped and
    /// reported in [`Ready::refused`].
    ///
    /// # Errors
    /// A [`PaxosError`] stops the replica; none is caused by the message's
    /// content.
    pub fn handle(&mut self, now: Duration, envelope: Envelope) -> Result<Ready, PaxosError> {
        self.guard()?;
        if let Err(refusal) = self.admit(now, &envelope) {
            self.refuse(refusal);
            return self.finish(Ok(()));
        }
        self.note_peer_ballots(now, &envelope.message);
        let result = self.dispatch(now, envelope.from, envelope.message);
        self.maybe_finish_rejoin(now);
        self.finish(result)
    }

    /// Hands an admitted message to its handler.
    fn dispatch(
        &mut self,
        now: Duration,
        from: NodeId,
        message: Message,
    ) -> Result<(), PaxosError> {
        match message {
            Message::Prepare { ballot, from: slot } => self.on_prepare(now, from, ballot, slot),
            Message::Promise {
                ballot,
                committed,
                truncated,
                entries,
                first,
                through,
            } => {
                let part = PromisePart {
                    ballot,
                    committed,
                    truncated,
                    entries,
                    first,
                    through,
                };
                self.on_promise(now, from, part);
            }
            Message::Accept {
                ballot,
                committed,
                entries,
            } => return self.on_accept(now, from, ballot, committed, entries),
            Message::Accepted {
                ballot,
                slots,
                committed,
            } => self.on_accepted(now, from, ballot, &slots, committed),
            Message::Commit { ballot, committed } => self.on_commit(now, from, ballot, committed),
            Message::CommitAck { ballot, committed } => {
                self.on_commit_ack(now, from, ballot, committed)
            }
            Message::Release { ballot, committed } => self.note_release(ballot, committed),
            Message::Nack { ballot, promised } => self.on_nack(now, ballot, promised),
            Message::CatchupRequest { from: slot } => self.on_catchup_request(from, slot),
            Message::CatchupResponse { entries } => self.on_catchup_response(now, from, entries),
            Message::SnapshotRequest { slot, offset } => {
                self.on_snapshot_request(from, slot, offset)
            }
            Message::SnapshotChunk {
                slot,
                total_len,
                checksum,
                offset,
                data,
            } => {
                let chunk = transfer::Chunk {
                    slot,
                    total_len,
                    checksum,
                    offset,
                    data,
                };
                self.on_snapshot_chunk(now, from, chunk);
            }
            Message::Probe => self.on_probe(from),
            Message::ProbeReply {
                promised,
                last_slot,
            } => self.on_probe_reply(now, from, promised, last_slot),
        }
        Ok(())
    }

    /// Proposes client commands. A leader assigns them to slots (batched
    /// by count and bytes, within its window); a candidate holds them until
    /// elected. Either takes all the commands or none.
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a follower, with its leader hint;
    /// [`ProposeError::CommandTooLarge`] when a command would not fit in a
    /// slot ([`Config::max_batch_bytes`]).
    pub fn propose(&mut self, now: Duration, commands: Vec<Bytes>) -> Result<Ready, ProposeError> {
        if self.stopped {
            return Err(ProposeError::Stopped);
        }
        let limit = self.cfg.max_batch_bytes;
        if let Some((index, bytes)) = commands
            .iter()
            .map(crate::types::command_bytes)
            .enumerate()
            .find(|(_, bytes)| *bytes > limit)
        {
            return Err(ProposeError::CommandTooLarge {
                index,
                bytes,
                limit,
            });
        }
        match &mut self.role {
            Role::Follower => {
                return Err(ProposeError::NotLeader {
                    leader: self.known_leader.hint,
                });
            }
            Role::Candidate(c) => c.queue.extend(commands),
            Role::Leader(l) => {
                l.queue.extend(commands);
                self.fill_window(now);
            }
        }
        self.finish(Ok(())).map_err(|_| ProposeError::Stopped)
    }

    /// Advances time: heartbeats, retransmissions, elections, catch-up.
    ///
    /// # Errors
    /// A [`PaxosError`] stops the replica.
    pub fn tick(&mut self, now: Duration) -> Result<Ready, PaxosError> {
        self.guard()?;
        if self.rejoin.is_some() {
            self.rejoin_tick(now);
            self.maybe_finish_rejoin(now);
            return self.finish(Ok(()));
        }
        match self.role {
            Role::Follower => {
                if now >= self.election_deadline {
                    self.start_election(now);
                } else if let Some(leader) = self.live_leader_behind(now) {
                    self.request_catchup(now, leader);
                }
            }
            Role::Candidate(_) => self.candidate_tick(now),
            Role::Leader(_) => self.leader_tick(now),
        }
        self.finish(Ok(()))
    }

    /// Tells the replica that the state machine saved `snapshot` (covering
    /// every slot up to `snapshot.slot`). The snapshot is persisted and
    /// entries older than [`Config::keep_after_snapshot`] slots before it
    /// are deleted; peers that need them get the snapshot instead.
    ///
    /// # Errors
    /// [`PaxosError::SnapshotBeyondCommitted`] if the snapshot covers a slot
    /// not yet delivered.
    pub fn snapshot_taken(&mut self, snapshot: Snapshot) -> Result<Ready, PaxosError> {
        self.keep_taken(snapshot.slot, Taken::Data(snapshot.data))
    }

    /// [`Replica::snapshot_taken`] for data the application encoded into
    /// `buf[start..]`, leaving `buf[..start]` to the replica: with at least
    /// [`crate::SNAPSHOT_FRAME_ROOM`] bytes there, the replica writes its
    /// frame (the membership history) in front of the data instead of
    /// copying the data into a new buffer, which for a large table is a
    /// pause of its own. The bytes persisted and sent are the same.
    ///
    /// ```
    /// use std::time::Duration;
    /// use trexlock_paxos::{Config, JournalState, NodeId, PaxosError, Replica, SNAPSHOT_FRAME_ROOM};
    ///
    /// let config = Config::new(NodeId(1), vec![NodeId(1), NodeId(2), NodeId(3)]);
    /// let mut replica = Replica::new(config, JournalState::default(), Duration::ZERO).unwrap();
    /// let mut buf = vec![0; SNAPSHOT_FRAME_ROOM];
    /// buf.extend_from_slice(b"the application's state as of slot 5");
    /// // Nothing is delivered yet, so no snapshot may claim slot 5.
    /// let refused = replica.snapshot_taken_in(5, buf, SNAPSHOT_FRAME_ROOM);
    /// assert!(matches!(refused, Err(PaxosError::SnapshotBeyondCommitted { slot: 5, .. })));
    /// ```
    ///
    /// # Errors
    /// As [`Replica::snapshot_taken`].
    pub fn snapshot_taken_in(
        &mut self,
        slot: Slot,
        buf: Vec<u8>,
        start: usize,
    ) -> Result<Ready, PaxosError> {
        self.keep_taken(slot, Taken::In { buf, start })
    }

    fn keep_taken(&mut self, slot: Slot, data: Taken) -> Result<Ready, PaxosError> {
        self.guard()?;
        if slot > self.delivered {
            return Err(PaxosError::SnapshotBeyondCommitted {
                slot,
                committed: self.delivered,
            });
        }
        if self.snapshot.as_ref().is_some_and(|s| s.slot >= slot) {
            return Ok(Ready::default());
        }
        let upto = slot.saturating_sub(self.cfg.keep_after_snapshot);
        let Some(snapshot) = self.framed(slot, data) else {
            // A joining node that has not yet learned which membership
            // governs past this slot cannot describe it: no snapshot yet.
            return Ok(Ready::default());
        };
        self.out.write.snapshot = Some(snapshot.clone());
        self.snapshot = Some(snapshot);
        if upto > self.truncated {
            self.truncate(upto);
        }
        self.finish(Ok(()))
    }

    fn guard(&self) -> Result<(), PaxosError> {
        if self.stopped {
            Err(PaxosError::Stopped)
        } else {
            Ok(())
        }
    }

    fn truncate(&mut self, upto: Slot) {
        self.truncated = upto;
        self.log = self.log.split_off(&(upto + 1));
        self.out.write.truncate = Some(upto);
    }

    fn send(&mut self, to: NodeId, message: Message) {
        self.out.messages.push(Envelope {
            from: self.cfg.node,
            to,
            message,
        });
    }

    fn broadcast(&mut self, message: &Message) {
        for peer in self.peers() {
            self.send(peer, message.clone());
        }
    }

    fn set_promised(&mut self, ballot: Ballot) -> Result<(), PaxosError> {
        if ballot < self.promised {
            return Err(PaxosError::PromiseRegression {
                from: self.promised,
                to: ballot,
            });
        }
        if ballot > self.promised {
            self.promised = ballot;
            if !sabotaged!(self, PromiseNotPersisted) {
                self.out.write.promised = Some(ballot);
            }
        }
        self.max_seen = self.max_seen.max(ballot);
        Ok(())
    }

    fn reset_election_deadline(&mut self, now: Duration) {
        let base = self.cfg.election_timeout;
        let nanos = u64::try_from(base.as_nanos()).unwrap_or(u64::MAX);
        let extra = Duration::from_nanos(self.rng.u64(0..=nanos));
        self.election_deadline = now + base + extra;
    }

    /// The leader to catch up from: one heard within an election timeout
    /// that announced slots this replica lacks. A silent leader is not
    /// asked: it may be down, or relearning after a disk loss with nothing
    /// to serve, and asking it every retry would crowd out the peer that
    /// `seek_cluster` finds ahead (a promoted voter that missed its
    /// promotion once asked a wiped former leader for good, and the
    /// cluster waited for its vote).
    fn live_leader_behind(&self, now: Duration) -> Option<NodeId> {
        let behind = self.committed < self.known_leader.committed;
        self.known_leader
            .hint
            .filter(|_| behind && self.heard_leader_recently(now))
    }

    fn heard_leader_recently(&self, now: Duration) -> bool {
        self.known_leader
            .heard_at
            .is_some_and(|t| now < t + self.cfg.election_timeout)
    }

    /// Leaves any leader or candidate role, handing back unproposed commands.
    fn step_down(&mut self, now: Duration) {
        match std::mem::replace(&mut self.role, Role::Follower) {
            Role::Follower => return,
            Role::Candidate(c) => self.out.unproposed.extend(c.queue),
            Role::Leader(l) => {
                self.out.unproposed.extend(l.queue);
                self.out.leadership = Some(Leadership::Lost);
            }
        }
        self.known_leader.hint = None;
        self.reset_election_deadline(now);
    }

    /// Completes a step: flushes buffered proposals, announces commits,
    /// delivers chosen values and records the commit index.
    fn finish(&mut self, result: Result<(), PaxosError>) -> Result<Ready, PaxosError> {
        if let Err(e) = result {
            self.stopped = true;
            self.out = Ready::default();
            return Err(e);
        }
        self.flush_leader_messages();
        if self.install_pending {
            self.install_pending = false;
            self.out.install = self.snapshot.as_ref().map(members::application_snapshot);
        }
        self.sync_configs();
        while self.delivered < self.committed {
            self.delivered += 1;
            let value = self
                .log
                .get(&self.delivered)
                .map_or(Value::Noop, |e| e.value.clone());
            self.out.chosen.push((self.delivered, value));
        }
        if self.committed != self.persisted_committed {
            self.persisted_committed = self.committed;
            self.out.write.committed = Some(self.committed);
        }
        if let Some(rejoin) = &mut self.rejoin {
            rejoin.deferred.merge(std::mem::take(&mut self.out.write));
        }
        Ok(std::mem::take(&mut self.out))
    }
}

/// Checks the invariants a recovered journal state must satisfy.
fn check_recovered(state: &JournalState) -> Result<(), PaxosError> {
    let bad = |why: String| Err(PaxosError::InconsistentJournal(why));
    if let Some((slot, _)) = state
        .entries
        .iter()
        .find(|(_, e)| e.ballot > state.promised)
    {
        return bad(format!(
            "slot {slot} holds a vote above the promised ballot {}",
            state.promised
        ));
    }
    if state
        .entries
        .keys()
        .next()
        .is_some_and(|s| *s <= state.truncated)
    {
        return bad(format!(
            "entries at or below truncated slot {}",
            state.truncated
        ));
    }
    let snap_slot = state.snapshot.as_ref().map_or(0, |s| s.slot);
    if snap_slot < state.truncated {
        return bad(format!(
            "entries up to {} deleted but snapshot covers only {snap_slot}",
            state.truncated
        ));
    }
    if state.committed < snap_slot {
        return bad(format!(
            "commit index {} is below snapshot slot {snap_slot}",
            state.committed
        ));
    }
    if let Some(missing) =
        (snap_slot + 1..=state.committed).find(|s| !state.entries.contains_key(s))
    {
        return bad(format!(
            "slot {missing} is below the commit index {} but has no entry",
            state.committed
        ));
    }
    Ok(())
}

/// Client commands waiting for a slot.
pub(crate) type CommandQueue = VecDeque<Bytes>;

/// Snapshot data the application took, as it hands it over.
enum Taken {
    /// The data alone, to be copied into the frame.
    Data(Bytes),
    /// The data at `buf[start..]`, with room for the frame in front.
    In { buf: Vec<u8>, start: usize },
}
