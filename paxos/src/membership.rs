//! Membership: who votes, who only learns, and where they live, as
//! replicated state.
//!
//! # The method: a configuration chosen in the log, in effect α slots later
//!
//! A [`Membership`] (voters, learners, their addresses) changes only by a
//! [`crate::Value::Reconfig`] chosen in the log, carrying the whole new
//! membership. A membership chosen at slot `s` **governs every slot from
//! `s + CONFIG_DELAY` on** (Lamport's α, with α = [`CONFIG_DELAY`]), until
//! the next one takes over. "Governs slot t" means: a value is chosen at
//! `t` when a majority of *that* membership's voters accepted it in one
//! ballot, and a leader proposes at `t` only with phase-1 promises that
//! meet every such majority. Learners receive everything and vote for
//! nothing that counts.
//!
//! Why this is safe:
//!
//! - **Everyone agrees on the membership of every slot.** The membership
//!   governing `t` depends only on the values chosen at slots up to
//!   `t - α`, and those are the same on every replica. Where a replica does
//!   not know them yet, it does not act on `t`: a leader proposes at `t`
//!   only once it knows every slot up to `t - α` chosen (its window never
//!   reaches past `committed + α`), so slots already in flight when a
//!   change is chosen stay under the membership they were proposed in.
//! - **Each slot is ordinary Paxos in one fixed membership.** For a fixed
//!   slot the voters never change, so the classic argument holds per slot:
//!   a leader's phase-1 set meets every majority that could have chosen a
//!   value there, so it finds that value and proposes it again.
//! - **Prepare/Promise across memberships.** A candidate whose first
//!   unchosen slot is `c + 1` asks the voters of every membership it knows
//!   (the one governing `c + 1`, a chosen one still waiting to take effect,
//!   and learners, whose promises are harmless) and wins with a majority of
//!   the membership governing `c + 1`. Before it proposes at any slot `t`,
//!   it checks that its promisers meet every majority of the membership
//!   governing `t` (`|P ∩ V| ≥ |V| - majority(V) + 1`). When a change taking
//!   effect later breaks that, it runs phase 1 again with a new ballot.
//! - **One voter change at a time.** A leader refuses a change while
//!   another is proposed or chosen but not yet in effect, proposes it only
//!   once every slot before it is chosen (an open slot may still be
//!   chosen with a change a leader of a lower ballot proposed there), and
//!   each change adds or removes one voter. Two memberships that differ by one voter
//!   have intersecting majorities (Raft's single-server argument), so a
//!   promise majority of the governing membership also covers the one
//!   change waiting to take effect: a change costs no new election, and
//!   the simulator checks the rule (`--sabotage concurrent-changes`).
//! - **Durable like everything else.** Changes are log values, so they are
//!   journaled and replayed like commands; a snapshot carries the
//!   membership history as of its slot (the replica frames it around the
//!   application's data), so compaction forgets nothing a replica needs.
//!
//! The delay is made short in practice: once a change is chosen, an idle
//! leader fills the slots up to its effective slot with no-ops.

use crate::types::{NodeId, Slot};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// α: a membership chosen at slot `s` governs slots from `s + CONFIG_DELAY`
/// on. It also caps a leader's pipeline: no proposal beyond its commit
/// index plus this. A protocol constant, the same on every node.
pub const CONFIG_DELAY: Slot = 256;

/// Most voters a membership may have.
pub const MAX_VOTERS: usize = 9;

/// Most members (voters and learners) a membership may have.
pub const MAX_MEMBERS: usize = 16;

/// Longest address a member may carry, in bytes.
pub const MAX_ADDRESS_BYTES: usize = 256;

/// Who votes, who learns, and where each member can be reached.
///
/// ```
/// use trexlock_paxos::{Change, Membership, NodeId};
///
/// let three = Membership::of_voters([NodeId(1), NodeId(2), NodeId(3)]);
/// let four = three
///     .apply(&Change::AddLearner { node: NodeId(4), address: "10.0.0.4:7000".into() })
///     .unwrap()
///     .apply(&Change::Promote { node: NodeId(4) })
///     .unwrap();
/// assert_eq!(four.majority(), 3);
/// assert!(three.apply(&Change::Promote { node: NodeId(9) }).is_err());
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Membership {
    /// Members whose votes count; every quorum is a majority of them.
    pub voters: BTreeSet<NodeId>,
    /// Members that receive the log but whose votes never count.
    pub learners: BTreeSet<NodeId>,
    /// Where members are reached (opaque to the protocol; the node layer
    /// dials them). A member may have none (its address is configured
    /// elsewhere, as for the bootstrap members).
    pub addresses: BTreeMap<NodeId, String>,
}

/// One step of a membership change. Replacing a node is three of them:
/// add the new one, promote it, remove the old one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A new member that receives the log and does not vote.
    AddLearner {
        /// Its id, never used in this cluster before (or removed since).
        node: NodeId,
        /// Where it listens.
        address: String,
    },
    /// A learner becomes a voter.
    Promote {
        /// The learner.
        node: NodeId,
    },
    /// A voter or learner leaves.
    Remove {
        /// The member.
        node: NodeId,
    },
}

/// Why a membership change was refused. Nothing was proposed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// Only the leader proposes changes.
    #[error("not the leader (leader hint: {leader:?})")]
    NotLeader {
        /// The leader this replica believes in, if any.
        leader: Option<NodeId>,
    },
    /// Another change is proposed or chosen and not yet in effect: one
    /// change at a time.
    #[error("another membership change is under way (in effect from slot {effective})")]
    ChangePending {
        /// The slot from which the pending change governs (0 while it is
        /// still being proposed).
        effective: Slot,
    },
    /// The node is already a member.
    #[error("{0} is already a member")]
    AlreadyMember(NodeId),
    /// Only a learner can be promoted.
    #[error("{0} is not a learner")]
    NotALearner(NodeId),
    /// The node is not a member.
    #[error("{0} is not a member")]
    NotAMember(NodeId),
    /// A learner is promoted only once it has caught up with the log.
    #[error("learner {node} has slots up to {at}, the leader {committed}: not caught up")]
    LearnerBehind {
        /// The learner.
        node: NodeId,
        /// The highest slot it acknowledged.
        at: Slot,
        /// The leader's commit index.
        committed: Slot,
    },
    /// After the change, the voters this leader hears from would not form
    /// a majority: the cluster would stop.
    #[error(
        "the change would leave {reachable} reachable voters where {needed} are needed for a majority"
    )]
    WouldLoseQuorum {
        /// Voters of the new membership heard recently (this one included).
        reachable: usize,
        /// The new membership's majority.
        needed: usize,
    },
    /// A replicated cluster keeps at least two voters (with one, a slot
    /// would be chosen by a vote not yet on disk).
    #[error("a replicated cluster keeps at least two voters")]
    TooFewVoters,
    /// The membership would exceed [`MAX_VOTERS`] or [`MAX_MEMBERS`].
    #[error("at most {MAX_VOTERS} voters and {MAX_MEMBERS} members")]
    TooManyMembers,
    /// An address longer than [`MAX_ADDRESS_BYTES`], or empty.
    #[error("an address must have 1 to {MAX_ADDRESS_BYTES} bytes")]
    BadAddress,
    /// The replica is stopped.
    #[error("replica stopped")]
    Stopped,
}

impl Membership {
    /// A membership of voters only, without addresses.
    pub fn of_voters(voters: impl IntoIterator<Item = NodeId>) -> Membership {
        Membership {
            voters: voters.into_iter().collect(),
            ..Membership::default()
        }
    }

    /// How many voters form a majority.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// True for voters and learners.
    pub fn contains(&self, node: NodeId) -> bool {
        self.voters.contains(&node) || self.learners.contains(&node)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// True when `acks` holds a majority of the voters.
    pub fn is_quorum<'a>(&self, acks: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let n = acks.into_iter().filter(|n| self.voters.contains(n)).count();
        n >= self.majority()
    }

    /// True when `promisers` meets every majority of the voters, the
    /// condition for a phase-1 set to cover a slot this membership governs.
    pub fn is_met_by<'a>(&self, promisers: impl IntoIterator<Item = &'a NodeId>) -> bool {
        let n = promisers
            .into_iter()
            .filter(|n| self.voters.contains(n))
            .count();
        n + self.majority() > self.voters.len()
    }

    /// The membership after `change`, or why the change does not apply.
    ///
    /// # Errors
    /// A [`ChangeError`] naming what is wrong with the change.
    pub fn apply(&self, change: &Change) -> Result<Membership, ChangeError> {
        let mut next = self.clone();
        match change {
            Change::AddLearner { node, address } => {
                if self.contains(*node) {
                    return Err(ChangeError::AlreadyMember(*node));
                }
                if address.is_empty() || address.len() > MAX_ADDRESS_BYTES {
                    return Err(ChangeError::BadAddress);
                }
                next.learners.insert(*node);
                next.addresses.insert(*node, address.clone());
            }
            Change::Promote { node } => {
                if !next.learners.remove(node) {
                    return Err(ChangeError::NotALearner(*node));
                }
                next.voters.insert(*node);
            }
            Change::Remove { node } => {
                if !self.contains(*node) {
                    return Err(ChangeError::NotAMember(*node));
                }
                next.voters.remove(node);
                next.learners.remove(node);
                next.addresses.remove(node);
            }
        }
        next.check()?;
        Ok(next)
    }

    /// Checks the bounds every membership keeps (also applied to
    /// memberships received from peers).
    ///
    /// # Errors
    /// [`ChangeError::TooManyMembers`], [`ChangeError::TooFewVoters`] (no
    /// voter at all) or [`ChangeError::BadAddress`].
    pub fn check(&self) -> Result<(), ChangeError> {
        if self.voters.len() > MAX_VOTERS
            || self.voters.len() + self.learners.len() > MAX_MEMBERS
            || self.addresses.len() > MAX_MEMBERS
        {
            return Err(ChangeError::TooManyMembers);
        }
        if self.voters.is_empty() {
            return Err(ChangeError::TooFewVoters);
        }
        if !self.voters.is_disjoint(&self.learners) {
            return Err(ChangeError::AlreadyMember(
                *self
                    .voters
                    .intersection(&self.learners)
                    .next()
                    .unwrap_or(&NodeId(0)),
            ));
        }
        let bad_address = |a: &String| a.is_empty() || a.len() > MAX_ADDRESS_BYTES;
        if self
            .addresses
            .iter()
            .any(|(n, a)| !self.contains(*n) || bad_address(a))
        {
            return Err(ChangeError::BadAddress);
        }
        Ok(())
    }

    /// An upper bound of its encoded size, for message size estimates.
    pub(crate) fn encoded_bytes(&self) -> usize {
        let ids = (self.voters.len() + self.learners.len() + self.addresses.len()) * 4;
        self.addresses
            .values()
            .fold(ids + 16, |n, a| n.saturating_add(a.len() + 10))
    }
}

/// One membership in a replica's history: chosen at `chosen_at` (0 for
/// the bootstrap one), governing from `effective` on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Epoch {
    pub(crate) chosen_at: Slot,
    pub(crate) effective: Slot,
    pub(crate) membership: Membership,
}

/// The memberships a replica knows, by the first slot each governs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct History {
    epochs: BTreeMap<Slot, Epoch>,
    /// The first membership is a joining node's list of members to reach,
    /// not the cluster's bootstrap membership: good enough to find the
    /// cluster, never written into a snapshot.
    assumed: bool,
}

impl History {
    /// A history holding only the bootstrap membership, governing from
    /// slot 1 (`assumed` for a joining node, which does not know it).
    pub(crate) fn bootstrap(membership: Membership, assumed: bool) -> History {
        let epoch = Epoch {
            chosen_at: 0,
            effective: 1,
            membership,
        };
        History {
            epochs: BTreeMap::from([(1, epoch)]),
            assumed,
        }
    }

    pub(crate) fn from_epochs(epochs: Vec<Epoch>) -> Option<History> {
        let epochs: BTreeMap<Slot, Epoch> = epochs.into_iter().map(|e| (e.effective, e)).collect();
        (!epochs.is_empty()).then_some(History {
            epochs,
            assumed: false,
        })
    }

    /// The membership governing slot `t` (the earliest known one when `t`
    /// precedes all of them: such slots are chosen and never acted on).
    pub(crate) fn governing(&self, t: Slot) -> &Epoch {
        self.epochs
            .range(..=t)
            .next_back()
            .or_else(|| self.epochs.first_key_value())
            .map(|(_, e)| e)
            .expect("a history is never empty")
    }

    /// The newest membership chosen (perhaps not yet in effect).
    pub(crate) fn latest(&self) -> &Epoch {
        self.epochs
            .last_key_value()
            .map(|(_, e)| e)
            .expect("a history is never empty")
    }

    /// Every membership governing some slot from `t` on.
    pub(crate) fn governing_from(&self, t: Slot) -> impl Iterator<Item = &Epoch> {
        let first = self.governing(t).effective;
        self.epochs.range(first..).map(|(_, e)| e)
    }

    /// True when `node` is in any membership known.
    pub(crate) fn knows(&self, node: NodeId) -> bool {
        self.epochs.values().any(|e| e.membership.contains(node))
    }

    /// Records a membership chosen at `slot`.
    pub(crate) fn record(&mut self, slot: Slot, membership: Membership) {
        let effective = slot.saturating_add(CONFIG_DELAY);
        let epoch = Epoch {
            chosen_at: slot,
            effective,
            membership,
        };
        self.epochs.insert(effective, epoch);
    }

    /// Forgets memberships that govern no slot after `committed` (keeping
    /// the one that governs `committed + 1`).
    /// Forgets memberships that govern no slot after `slot` (keeping the
    /// one that governs `slot + 1`).
    pub(crate) fn prune(&mut self, slot: Slot) {
        let keep_from = self.governing(slot.saturating_add(1)).effective;
        self.epochs = self.epochs.split_off(&keep_from);
    }

    /// The history as of slot `slot` (memberships chosen up to it), for a
    /// snapshot covering that slot; `None` while the membership governing
    /// the next slot is only assumed.
    pub(crate) fn as_of(&self, slot: Slot) -> Option<Vec<Epoch>> {
        let keep_from = self.governing(slot.saturating_add(1)).effective;
        if self.assumed && keep_from == 1 {
            return None;
        }
        let epochs = self
            .epochs
            .range(keep_from..)
            .map(|(_, e)| e)
            .filter(|e| e.chosen_at <= slot)
            .cloned()
            .collect();
        Some(epochs)
    }
}

/// Marks snapshot data framed by the replica (membership history, then the
/// application's data). Data without it is an application snapshot from a
/// build without membership changes.
const FRAME_MAGIC: &[u8; 8] = b"TXMEMB01";

/// The frame's layout, as written: the history, then the application's
/// data as a byte string.
#[derive(Serialize)]
struct Frame<'a> {
    epochs: &'a [Epoch],
    #[serde(with = "serde_bytes_slice")]
    data: &'a [u8],
}

/// The same layout as read: the data is borrowed from the framed bytes,
/// so that unframing a snapshot of tens of megabytes copies none of it.
#[derive(Deserialize)]
struct FrameRef<'a> {
    epochs: Vec<Epoch>,
    #[serde(borrow)]
    data: &'a [u8],
}

/// Serializes a byte slice as a byte string (postcard: a length, then the
/// bytes), as `Bytes` is, rather than as a sequence of numbers.
mod serde_bytes_slice {
    pub(super) fn serialize<S: serde::Serializer>(data: &&[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(data)
    }
}

/// The snapshot data a replica stores and sends: its membership history
/// as of the snapshot's slot around the application's data. The data is
/// copied once, into a buffer of the final size.
pub(crate) fn frame(epochs: &[Epoch], data: &[u8]) -> Bytes {
    let frame = Frame { epochs, data };
    // Sizing counts bytes without writing them; encoding plain data into a
    // Vec cannot fail.
    let len = postcard::serialize_with_flavor(&frame, postcard::ser_flavors::Size::default())
        .unwrap_or(0);
    let mut out = Vec::with_capacity(FRAME_MAGIC.len() + len);
    out.extend_from_slice(FRAME_MAGIC);
    match postcard::to_extend(&frame, out) {
        Ok(out) => Bytes::from(out),
        Err(_) => Bytes::from_static(FRAME_MAGIC),
    }
}

/// Room an application may leave in front of its snapshot data for the
/// frame (see [`crate::Replica::snapshot_taken_in`]): the frame's head
/// holds the membership history, each member's id and address, so a
/// typical cluster's takes a few hundred bytes. A head that does not fit
/// (up to [`MAX_MEMBERS`] members with addresses of [`MAX_ADDRESS_BYTES`]
/// each, in several memberships) makes the replica copy the data into a
/// new buffer behind it, as [`crate::Replica::snapshot_taken`] does.
pub const SNAPSHOT_FRAME_ROOM: usize = 4096;

/// [`frame`] of `buf[start..]`, the same bytes: written in place, into
/// `buf[..start]`, when the frame's head (the magic, the history and the
/// data's length) fits there, so that the data is not copied; copied as
/// `frame` copies it when it does not.
pub(crate) fn frame_in(epochs: &[Epoch], mut buf: Vec<u8>, start: usize) -> Bytes {
    let start = start.min(buf.len());
    let data_len = (buf.len() - start) as u64;
    // The frame's fields in order, the data's length as postcard writes a
    // byte string's: a varint.
    match postcard::to_extend(&(epochs, data_len), FRAME_MAGIC.to_vec()) {
        Ok(head) if head.len() <= start => {
            let from = start - head.len();
            buf[from..start].copy_from_slice(&head);
            Bytes::from(buf).slice(from..)
        }
        _ => frame(epochs, &buf[start..]),
    }
}

/// Splits framed snapshot data into the history and the application's
/// data (a view of `data`, not a copy); `Ok(None)` for unframed (older)
/// data; `Err` for a frame that does not decode or holds an invalid
/// membership.
pub(crate) fn unframe(data: &Bytes) -> Result<Option<(History, Bytes)>, String> {
    let Some(body) = data.strip_prefix(FRAME_MAGIC.as_slice()) else {
        return Ok(None);
    };
    let frame: FrameRef<'_> =
        postcard::from_bytes(body).map_err(|e| format!("snapshot frame: {e}"))?;
    if let Some(bad) = frame.epochs.iter().find(|e| e.membership.check().is_err()) {
        return Err(format!(
            "snapshot frame: membership effective at {} is invalid",
            bad.effective
        ));
    }
    let app = data.slice_ref(frame.data);
    let history = History::from_epochs(frame.epochs).ok_or("snapshot frame: no membership")?;
    Ok(Some((history, app)))
}

#[cfg(test)]
mod frame_tests {
    use super::*;

    fn epochs() -> Vec<Epoch> {
        vec![Epoch {
            chosen_at: 3,
            effective: 3 + crate::CONFIG_DELAY,
            membership: Membership::of_voters([NodeId(1), NodeId(2), NodeId(3)]),
        }]
    }

    #[test]
    fn a_frame_has_the_layout_earlier_builds_wrote_and_read() {
        // What every earlier build wrote: the magic, then a postcard
        // struct of the history and the data as owned bytes.
        #[derive(Serialize)]
        struct Owned {
            epochs: Vec<Epoch>,
            data: Bytes,
        }
        let data = Bytes::from((0..=255u8).cycle().take(700).collect::<Vec<_>>());
        let mut earlier = FRAME_MAGIC.to_vec();
        earlier.extend(
            postcard::to_allocvec(&Owned {
                epochs: epochs(),
                data: data.clone(),
            })
            .unwrap(),
        );
        assert_eq!(frame(&epochs(), &data).as_ref(), earlier.as_slice());
        let (_, unframed) = unframe(&Bytes::from(earlier)).unwrap().unwrap();
        assert_eq!(unframed, data);
    }

    #[test]
    fn a_frame_written_in_place_is_the_frame_and_holds_the_data_where_it_was() {
        let data: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
        let mut buf = vec![0xee; SNAPSHOT_FRAME_ROOM];
        buf.extend_from_slice(&data);
        let at = buf.as_ptr() as usize + SNAPSHOT_FRAME_ROOM;
        let framed = frame_in(&epochs(), buf, SNAPSHOT_FRAME_ROOM);
        assert_eq!(framed, frame(&epochs(), &data));
        let (_, unframed) = unframe(&framed).unwrap().unwrap();
        assert_eq!(unframed.as_ptr() as usize, at, "the data was not moved");
    }

    #[test]
    fn a_frame_without_room_in_front_is_copied_and_the_same() {
        let data = vec![7u8; 300];
        for room in [0, 3, 12] {
            let mut buf = vec![0; room];
            buf.extend_from_slice(&data);
            let framed = frame_in(&epochs(), buf, room);
            assert_eq!(framed, frame(&epochs(), &data), "room {room}");
        }
    }

    #[test]
    fn unframed_data_is_a_view_of_the_frame_not_a_copy() {
        let data = Bytes::from(vec![9u8; 1000]);
        let framed = frame(&epochs(), &data);
        let (_, unframed) = unframe(&framed).unwrap().unwrap();
        assert_eq!(unframed, data);
        assert!(
            framed.as_ptr_range().contains(&unframed.as_ptr()),
            "the snapshot's data was copied out of its frame"
        );
    }
}
