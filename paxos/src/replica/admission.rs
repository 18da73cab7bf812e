//! Admission: the checks every peer message passes before any handler
//! reads it. A message that fails them is dropped and reported as a
//! [`Refusal`]; it never changes the replica's state and never stops it, so
//! no sequence of forged, corrupt or stale messages can panic a replica,
//! overflow its arithmetic or wedge its elections.
//!
//! What a peer can still do is limited by what the protocol trusts it with:
//! a member that sends well-formed messages in its own name is believed
//! (Paxos does not tolerate lying members; peer authentication keeps
//! strangers out). The checks here make sure that such trust is only ever
//! extended to messages the protocol could have produced.

use super::Replica;
use super::members::Standing;
use crate::message::{Envelope, Message};
use crate::types::{Ballot, LogEntry, MAX_SLOT, NodeId, Slot, Value};
use std::time::Duration;

/// Why a peer message was dropped without effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The message is addressed to another node.
    #[error("addressed to {0}, not to this node")]
    NotForThisNode(NodeId),
    /// The sender claims to be this node.
    #[error("the sender claims to be this node")]
    FromItself,
    /// The sender is not a member of the cluster.
    #[error("sender {0} is not a member")]
    SenderNotAMember(NodeId),
    /// A membership carried in a value or a snapshot breaks the bounds
    /// every membership keeps (see `Membership::check`).
    #[error("{kind}: a membership at slot {slot} is invalid")]
    BadMembership {
        /// The message kind.
        kind: &'static str,
        /// Where it was carried.
        slot: Slot,
    },
    /// A ballot whose counter cannot be exceeded: promising it would end
    /// every later election.
    #[error("{kind}: ballot {ballot} has a counter that cannot be exceeded")]
    UnusableBallot {
        /// The message kind.
        kind: &'static str,
        /// The offending ballot.
        ballot: Ballot,
    },
    /// A ballot owned by a node that is not a member.
    #[error("{kind}: ballot {ballot} is owned by a non-member")]
    BallotOfNonMember {
        /// The message kind.
        kind: &'static str,
        /// The offending ballot.
        ballot: Ballot,
    },
    /// A Prepare, Accept or Commit comes only from the node whose ballot it
    /// carries.
    #[error("{kind} in ballot {ballot} came from {from}, not from the ballot's owner")]
    NotFromBallotOwner {
        /// The message kind.
        kind: &'static str,
        /// The ballot carried.
        ballot: Ballot,
        /// The sender.
        from: NodeId,
    },
    /// A Promise, Accepted, CommitAck or Nack answers a ballot of this
    /// node; this one names another node's ballot.
    #[error("{kind} answers ballot {ballot}, which this node did not create")]
    NotThisNodesBallot {
        /// The message kind.
        kind: &'static str,
        /// The ballot answered.
        ballot: Ballot,
    },
    /// A slot or commit index outside what the protocol uses (slot 0, or
    /// above [`MAX_SLOT`]; a first missing slot may be `MAX_SLOT + 1`).
    #[error("{kind}: slot {slot} is out of range (0 or above {MAX_SLOT})")]
    SlotOutOfRange {
        /// The message kind.
        kind: &'static str,
        /// The offending slot.
        slot: Slot,
    },
    /// Slots of one message are not in increasing order (or, for a
    /// catch-up response, not contiguous).
    #[error("{kind}: slots out of order at {slot}")]
    SlotsOutOfOrder {
        /// The message kind.
        kind: &'static str,
        /// The first slot out of order.
        slot: Slot,
    },
    /// A NACK whose promised ballot is not above the ballot it refuses.
    #[error("nack of {ballot} claims the promise {promised}, which is not higher")]
    NackNotHigher {
        /// The refused ballot.
        ballot: Ballot,
        /// The claimed promise.
        promised: Ballot,
    },
    /// A catch-up response that answers no request outstanding to its
    /// sender (a duplicate, a late answer, or one never asked for).
    #[error("catch-up response from {from} answers no outstanding request")]
    UnaskedCatchup {
        /// The sender.
        from: NodeId,
    },
    /// A snapshot beyond the highest commit index any leader or promise has
    /// reported here, by more than a window of slots.
    #[error(
        "snapshot at slot {slot} is ahead of the highest commit index heard plus a window, {known}"
    )]
    SnapshotAhead {
        /// The snapshot's slot.
        slot: Slot,
        /// The highest commit index heard, plus the window.
        known: Slot,
    },
    /// A snapshot announced larger than [`crate::Config::max_snapshot_bytes`].
    #[error("snapshot of {total_len} bytes is larger than the limit of {max} bytes")]
    SnapshotTooLarge {
        /// The announced length.
        total_len: u64,
        /// The configured limit.
        max: u64,
    },
    /// A snapshot chunk that does not continue the snapshot being
    /// assembled (a duplicate, a reordered or a stale chunk, or one that
    /// runs past the announced length).
    #[error("snapshot chunk at offset {offset} does not continue the {expected} bytes held")]
    SnapshotChunkOutOfOrder {
        /// Where the chunk starts.
        offset: u64,
        /// How many bytes of the snapshot are held.
        expected: u64,
    },
    /// An assembled snapshot whose bytes do not match the checksum
    /// announced with it: it is dropped, never installed.
    #[error("snapshot at slot {slot} does not match its checksum")]
    SnapshotChecksum {
        /// The snapshot's slot.
        slot: Slot,
    },
    /// A catch-up value for a slot this replica knows chosen with another
    /// value. Two values chosen for one slot would mean the sender's journal
    /// is corrupt or reset; believing it could only spread the damage.
    #[error("catch-up value for slot {slot} differs from the value chosen here")]
    ChosenValueConflict {
        /// The slot in question.
        slot: Slot,
    },
    /// An Accept for a slot so far past this replica's commit index that no
    /// leader could have proposed it yet unless this replica lags; a lagging
    /// replica catches up before it votes that far ahead.
    #[error(
        "accept for slot {slot}, beyond {horizon}, the highest slot this replica votes for now"
    )]
    AcceptTooFarAhead {
        /// The slot proposed.
        slot: Slot,
        /// This replica's commit index plus the recovery span and window.
        horizon: Slot,
    },
    /// A promise part carrying a vote outside the slot range it reports on.
    #[error("promise part for slots {first}..={through} carries a vote at slot {slot}")]
    VoteOutsidePart {
        /// The vote's slot.
        slot: Slot,
        /// The part's first slot.
        first: Slot,
        /// The part's last slot.
        through: Slot,
    },
    /// A ballot whose counter is further ahead of every ballot this replica
    /// has seen from its peers than honest elections could have taken it
    /// in the time since (see `Replica::ballot_limit`).
    #[error(
        "{kind}: ballot {ballot} is beyond {limit}, the highest counter honest elections can have reached"
    )]
    BallotTooFarAhead {
        /// The message kind.
        kind: &'static str,
        /// The offending ballot.
        ballot: Ballot,
        /// The highest counter admitted now.
        limit: u64,
    },
    /// A promise reporting votes so far past the candidate's first unchosen
    /// slot that leading would mean proposing that many slots at once,
    /// while the sender knows none of them chosen (so catching up from it
    /// would not help either).
    #[error("promise reports a vote at slot {last}, more than {span} slots past {from}")]
    RecoveryTooLong {
        /// The candidate's first unchosen slot.
        from: Slot,
        /// The highest slot reported.
        last: Slot,
        /// The most slots a leader re-proposes when elected.
        span: u64,
    },
}

/// The most slots a new leader re-proposes at once. Beyond it, a candidate
/// that lags a peer's chosen prefix catches up first (see
/// `Replica::on_promise`).
pub(super) const MAX_RECOVERY_SLOTS: u64 = 1 << 16;

/// The most slots one snapshot may move a replica's commit index. A real
/// lag is far shorter; a bound keeps forged snapshots from walking a
/// replica to the top of the slot space (see `check_catchup_response`).
pub(super) const MAX_SNAPSHOT_LEAD: u64 = 1 << 32;

/// How far past the highest ballot counter seen from a peer a new ballot
/// may be at once, before time can explain more (see
/// `Replica::ballot_limit`).
pub(super) const MAX_BALLOT_LEAD: u64 = 64;

impl Replica {
    /// The highest ballot counter this replica admits from a peer now, or
    /// `None` while it rejoins (it must learn the cluster's ballots from
    /// the members' probe replies, whatever they are).
    ///
    /// Honest replicas only ever campaign one counter past the highest
    /// ballot they have seen, and each at most once per election timeout
    /// (its election deadline is at least that far off). So in the time
    /// since this replica last saw a higher counter from a peer, honest
    /// elections anywhere can have raised the highest counter by at most
    /// one per member per election timeout, plus the lead a peer may have
    /// had over what it showed us. The limit allows
    /// [`MAX_BALLOT_LEAD`] plus twice that growth (for clock rates and
    /// rounding). A member that jumps further, towards the top of the
    /// ballot space where no election could follow it, is refused.
    ///
    /// Why refusing is safe: a refused message is dropped, exactly as if
    /// the network had lost it, and Paxos is safe under any loss. What it
    /// can cost is liveness, and only for a replica that has not heard the
    /// cluster for long while the cluster held elections continuously: the
    /// limit grows twice as fast as honest counters can, so such a replica
    /// admits the cluster's ballots again after at most half the time it
    /// was away (a cluster that was not electing all that time is back
    /// within the lead at once). A member that lies can raise the counter
    /// by at most [`MAX_BALLOT_LEAD`] per admitted message: some 2^58
    /// messages to exhaust the ballot space.
    pub(super) fn ballot_limit(&self, now: Duration) -> Option<u64> {
        if self.rejoin.is_some() {
            return None;
        }
        let (counter, since) = self.ballot_anchor;
        let timeouts = now.saturating_sub(since).as_nanos() / self.cfg.election_timeout.as_nanos();
        let growth = u64::try_from(timeouts)
            .unwrap_or(u64::MAX)
            .saturating_mul(2 * self.cfg.members.len() as u64);
        Some(
            counter
                .saturating_add(MAX_BALLOT_LEAD)
                .saturating_add(growth),
        )
    }

    /// Remembers the highest ballot counter a peer has shown, and when it
    /// first did, for [`Replica::ballot_limit`].
    pub(super) fn note_peer_ballots(&mut self, now: Duration, message: &Message) {
        let highest = match message {
            Message::Prepare { ballot, .. }
            | Message::Accept { ballot, .. }
            | Message::Commit { ballot, .. } => ballot.counter,
            Message::Nack { promised, .. } | Message::ProbeReply { promised, .. } => {
                promised.counter
            }
            _ => return,
        };
        if highest > self.ballot_anchor.0 {
            self.ballot_anchor = (highest, now);
        }
    }

    /// The highest slot this replica votes for now. A leader proposes at
    /// most [`MAX_RECOVERY_SLOTS`] re-proposals and then a window past its
    /// commit index, so an honest replica that is not lagging never sees
    /// an Accept beyond this; and because votes never lie beyond it, a
    /// replica's own promise never spans more than that when it campaigns.
    pub(super) fn vote_horizon(&self) -> Slot {
        self.committed
            .saturating_add(MAX_RECOVERY_SLOTS)
            .saturating_add(self.cfg.window as u64)
    }
}

fn slot_in_range(kind: &'static str, slot: Slot) -> Result<(), Refusal> {
    if (1..=MAX_SLOT).contains(&slot) {
        Ok(())
    } else {
        Err(Refusal::SlotOutOfRange { kind, slot })
    }
}

/// The first slot a replica lacks (its commit index plus one).
fn first_missing_in_range(kind: &'static str, slot: Slot) -> Result<(), Refusal> {
    if (1..=MAX_SLOT + 1).contains(&slot) {
        Ok(())
    } else {
        Err(Refusal::SlotOutOfRange { kind, slot })
    }
}

/// A commit index or truncation point: 0 ("nothing") is allowed.
fn index_in_range(kind: &'static str, slot: Slot) -> Result<(), Refusal> {
    if slot <= MAX_SLOT {
        Ok(())
    } else {
        Err(Refusal::SlotOutOfRange { kind, slot })
    }
}

fn memberships_valid<'a>(
    kind: &'static str,
    mut values: impl Iterator<Item = (Slot, &'a Value)>,
) -> Result<(), Refusal> {
    match values.find(|(_, v)| matches!(v, Value::Reconfig(m) if m.check().is_err())) {
        Some((slot, _)) => Err(Refusal::BadMembership { kind, slot }),
        None => Ok(()),
    }
}

fn increasing(
    kind: &'static str,
    slots: impl IntoIterator<Item = Slot>,
    contiguous: bool,
) -> Result<(), Refusal> {
    let mut previous: Option<Slot> = None;
    for slot in slots {
        slot_in_range(kind, slot)?;
        if let Some(p) = previous {
            let in_order = if contiguous { slot == p + 1 } else { slot > p };
            if !in_order {
                return Err(Refusal::SlotsOutOfOrder { kind, slot });
            }
        }
        previous = Some(slot);
    }
    Ok(())
}

impl Replica {
    /// Checks everything about `envelope` that does not depend on the
    /// replica's role: addressing, ballots and slot numbers. Handlers check
    /// what depends on their state (an outstanding catch-up request, a
    /// candidate's first slot) and refuse through [`Replica::refuse`].
    pub(super) fn admit(&self, now: Duration, envelope: &Envelope) -> Result<(), Refusal> {
        let me = self.cfg.node;
        let from = envelope.from;
        if envelope.to != me {
            return Err(Refusal::NotForThisNode(envelope.to));
        }
        if from == me {
            return Err(Refusal::FromItself);
        }
        let message = &envelope.message;
        let ballots = Ballots {
            replica: self,
            message,
            me,
            from,
            kind: message.kind(),
            limit: self.ballot_limit(now),
        };
        if !ballots.admitted(from) {
            return Err(Refusal::SenderNotAMember(from));
        }
        ballots.check_fields()
    }

    /// Drops a message: counts it and reports why in this step's
    /// [`super::Ready::refused`].
    pub(super) fn refuse(&mut self, refusal: Refusal) {
        self.refused = self.refused.saturating_add(1);
        self.out.refused = Some(refusal);
    }
}

/// What one message's ballots and slots are checked against: the sender,
/// this node, and how far ahead a ballot may be.
struct Ballots<'r> {
    replica: &'r Replica,
    message: &'r Message,
    me: NodeId,
    from: NodeId,
    kind: &'static str,
    limit: Option<u64>,
}

impl Ballots<'_> {
    /// Whether `node` may have a part in this message.
    ///
    /// Members change at runtime, so a node may hear from a member it has
    /// not learned of yet (a new leader, or the peer it catches up from):
    /// what lets it follow and learn is taken from any node it does not
    /// know removed. What engages it (a promise, or counting a vote or an
    /// answer for its own ballot) needs a member it knows. Snapshot
    /// transfer is catch-up too: a member that fell behind while the leader
    /// changed may have to install a snapshot from a leader that joined
    /// after the last membership it knows.
    fn admitted(&self, node: NodeId) -> bool {
        match self.replica.standing(node) {
            Standing::Member => true,
            Standing::Unknown => matches!(
                self.message,
                Message::Accept { .. }
                    | Message::Commit { .. }
                    | Message::CatchupRequest { .. }
                    | Message::CatchupResponse { .. }
                    | Message::SnapshotRequest { .. }
                    | Message::SnapshotChunk { .. }
                    | Message::Probe
                    | Message::ProbeReply { .. }
                    | Message::Nack { .. }
                    | Message::Release { .. }
            ),
            // A removed node may still ask, so that it learns its removal.
            Standing::Removed => {
                matches!(
                    self.message,
                    Message::CatchupRequest { .. } | Message::Probe
                )
            }
        }
    }

    /// A ballot anyone may name: usable, of a node admitted, and not
    /// beyond the limit.
    fn usable(&self, ballot: Ballot) -> Result<(), Refusal> {
        let kind = self.kind;
        if !ballot.is_usable() {
            Err(Refusal::UnusableBallot { kind, ballot })
        } else if ballot != Ballot::ZERO && !self.admitted(ballot.node) {
            Err(Refusal::BallotOfNonMember { kind, ballot })
        } else if self.limit.is_some_and(|limit| ballot.counter > limit) {
            Err(Refusal::BallotTooFarAhead {
                kind,
                ballot,
                limit: self.limit.unwrap_or(u64::MAX),
            })
        } else {
            Ok(())
        }
    }

    /// A usable ballot of the sender's own.
    fn owned_by_sender(&self, ballot: Ballot) -> Result<(), Refusal> {
        self.usable(ballot)?;
        if ballot.node == self.from {
            Ok(())
        } else {
            Err(Refusal::NotFromBallotOwner {
                kind: self.kind,
                ballot,
                from: self.from,
            })
        }
    }

    /// A usable ballot of this node's own.
    fn mine(&self, ballot: Ballot) -> Result<(), Refusal> {
        self.usable(ballot)?;
        if ballot.node == self.me {
            Ok(())
        } else {
            Err(Refusal::NotThisNodesBallot {
                kind: self.kind,
                ballot,
            })
        }
    }

    /// Checks the message's ballots, slots and memberships, field by
    /// field.
    fn check_fields(&self) -> Result<(), Refusal> {
        let kind = self.kind;
        match self.message {
            Message::Prepare { ballot, from: slot } => {
                self.owned_by_sender(*ballot)?;
                first_missing_in_range(kind, *slot)
            }
            Message::Promise {
                ballot,
                committed,
                truncated,
                entries,
                first,
                through,
            } => {
                self.mine(*ballot)?;
                index_in_range(kind, *committed)?;
                index_in_range(kind, *truncated)?;
                first_missing_in_range(kind, *first)?;
                index_in_range(kind, *through)?;
                self.check_votes(entries, *first, *through)
            }
            Message::Accept {
                ballot,
                committed,
                entries,
            } => {
                self.owned_by_sender(*ballot)?;
                index_in_range(kind, *committed)?;
                increasing(kind, entries.iter().map(|(s, _)| *s), false)?;
                memberships_valid(kind, entries.iter().map(|(s, v)| (*s, v)))
            }
            Message::Accepted {
                ballot,
                slots,
                committed,
            } => {
                self.mine(*ballot)?;
                index_in_range(kind, *committed)?;
                increasing(kind, slots.iter().copied(), false)
            }
            Message::Commit { ballot, committed } | Message::Release { ballot, committed } => {
                self.owned_by_sender(*ballot)?;
                index_in_range(kind, *committed)
            }
            Message::CommitAck { ballot, committed } => {
                self.mine(*ballot)?;
                index_in_range(kind, *committed)
            }
            Message::Nack { ballot, promised } => {
                self.mine(*ballot)?;
                self.usable(*promised)?;
                if promised > ballot {
                    Ok(())
                } else {
                    Err(Refusal::NackNotHigher {
                        ballot: *ballot,
                        promised: *promised,
                    })
                }
            }
            Message::CatchupRequest { from: slot } => first_missing_in_range(kind, *slot),
            Message::CatchupResponse { entries } => {
                increasing(kind, entries.iter().map(|(s, _)| *s), true)?;
                memberships_valid(kind, entries.iter().map(|(s, v)| (*s, v)))
            }
            Message::SnapshotRequest { slot, .. } | Message::SnapshotChunk { slot, .. } => {
                slot_in_range(kind, *slot)
            }
            Message::Probe => Ok(()),
            Message::ProbeReply {
                promised,
                last_slot,
            } => {
                self.usable(*promised)?;
                index_in_range(kind, *last_slot)
            }
        }
    }

    /// A promise's votes: in increasing slots, within the part of the log
    /// it answers for (`first..=through`), each in a usable ballot.
    fn check_votes(
        &self,
        entries: &[(Slot, LogEntry)],
        first: Slot,
        through: Slot,
    ) -> Result<(), Refusal> {
        let kind = self.kind;
        increasing(kind, entries.iter().map(|(s, _)| *s), false)?;
        memberships_valid(kind, entries.iter().map(|(s, e)| (*s, &e.value)))?;
        let outside = entries
            .iter()
            .map(|(s, _)| *s)
            .find(|s| !(first..=through).contains(s));
        if let Some(slot) = outside {
            return Err(Refusal::VoteOutsidePart {
                slot,
                first,
                through,
            });
        }
        entries
            .iter()
            .try_for_each(|(_, entry)| self.usable(entry.ballot))
    }
}
