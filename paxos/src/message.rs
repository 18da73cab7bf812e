//! The messages replicas exchange. Every message is idempotent: delivering
//! it twice, late, or not at all never breaks safety.

use crate::types::{Ballot, LogEntry, NodeId, Slot, Value};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A message with its sender and addressee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node.
    pub from: NodeId,
    /// The node the message is for.
    pub to: NodeId,
    /// The payload.
    pub message: Message,
}

/// The protocol's message set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Phase 1a: a candidate asks for a promise covering every slot from
    /// `from` on (its first slot not known to be chosen).
    Prepare {
        /// The candidate's new ballot.
        ballot: Ballot,
        /// The first slot the promise must report on.
        from: Slot,
    },
    /// Phase 1b: the acceptor promised `ballot` and reports every vote it
    /// holds from the requested slot on. Votes at slots up to `committed`
    /// are known chosen.
    ///
    /// A promise whose votes do not fit in one message
    /// ([`crate::Config::max_message_bytes`]) comes in parts: each reports
    /// every vote in its slot range `first..=through`, the ranges follow
    /// one another from the requested slot, and the last one runs through
    /// [`crate::MAX_SLOT`]. A candidate counts the promise only once it
    /// holds parts covering every slot from its first unchosen one on.
    Promise {
        /// The ballot promised.
        ballot: Ballot,
        /// The acceptor's highest slot known chosen (contiguously).
        committed: Slot,
        /// Slots up to here were compacted away and cannot be reported.
        truncated: Slot,
        /// The acceptor's votes in `first..=through`, in slot order.
        entries: Vec<(Slot, LogEntry)>,
        /// The first slot this part reports on.
        first: Slot,
        /// The last slot this part reports on ([`crate::MAX_SLOT`]: the
        /// promise's last part).
        through: Slot,
    },
    /// Phase 2a: the leader asks acceptors to accept values for slots.
    Accept {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index, piggybacked so followers learn it.
        committed: Slot,
        /// The proposals, in increasing slot order.
        entries: Vec<(Slot, Value)>,
    },
    /// Phase 2b: the acceptor accepted these slots in `ballot`.
    Accepted {
        /// The ballot the slots were accepted in.
        ballot: Ballot,
        /// The accepted slots.
        slots: Vec<Slot>,
        /// The acceptor's commit index once it learned the Accept's: what
        /// a [`Message::CommitAck`] would say, so that a leader under load
        /// learns it from the votes.
        committed: Slot,
    },
    /// The leader's commit index. Doubles as the leader heartbeat. A
    /// follower whose vote at a slot carries this exact ballot knows that
    /// slot is chosen.
    Commit {
        /// The leader's ballot.
        ballot: Ballot,
        /// Every slot up to here is chosen.
        committed: Slot,
    },
    /// A follower's answer to [`Message::Commit`]: it is alive and this is
    /// how far it has learned. Lets the leader detect that it lost its
    /// quorum. A follower that may vote answers every Commit that moves
    /// its commit index nowhere (a heartbeat, in a quiet cluster), and one
    /// that only announces newly chosen slots at most once per half
    /// heartbeat interval: under load its votes ([`Message::Accepted`])
    /// carry the same index, and once load stops, its answer to the next
    /// heartbeat does.
    CommitAck {
        /// The ballot of the heartbeat being answered.
        ballot: Ballot,
        /// The follower's commit index.
        committed: Slot,
    },
    /// A refusal: the sender has promised a higher ballot than the one in
    /// the message it refuses. Ends duels fast.
    Nack {
        /// The refused ballot.
        ballot: Ballot,
        /// The higher ballot the sender has promised.
        promised: Ballot,
    },
    /// A node that is behind asks for chosen values from `from` on.
    CatchupRequest {
        /// The first slot the requester lacks.
        from: Slot,
    },
    /// Chosen values, from the requested slot on. When the requested slots
    /// were compacted away the answer is a [`Message::SnapshotChunk`]
    /// instead.
    CatchupResponse {
        /// Chosen values, contiguous, from the requested slot on.
        entries: Vec<(Slot, Value)>,
    },
    /// A node assembling a snapshot asks for the part from `offset` on.
    SnapshotRequest {
        /// The slot of the snapshot being assembled.
        slot: Slot,
        /// How many of its bytes the requester holds.
        offset: u64,
    },
    /// One piece of the sender's snapshot, at most
    /// [`crate::Config::snapshot_chunk_bytes`] long, so that a snapshot of
    /// any size reaches a lagging node in messages under the frame limit.
    /// The receiver installs it only once every byte arrived in order and
    /// the whole matches `total_len` and `checksum`.
    SnapshotChunk {
        /// The last slot the snapshot covers.
        slot: Slot,
        /// The whole snapshot's length, in bytes.
        total_len: u64,
        /// CRC-32 (IEEE) of the whole snapshot.
        checksum: u32,
        /// Where `data` starts within the snapshot.
        offset: u64,
        /// The bytes from `offset` on.
        data: Bytes,
    },
    /// Sent by a replica that starts with an empty journal: before it may
    /// vote, it must learn what every other member has promised and voted
    /// for (see `Replica` docs on rejoining).
    Probe,
    /// The answer to [`Message::Probe`].
    ProbeReply {
        /// The highest ballot the sender has promised.
        promised: Ballot,
        /// The highest slot the sender holds a vote or a chosen value for.
        last_slot: Slot,
    },
    /// A leader tells a node it removed that it is needed no more and
    /// must stop: a majority of the membership in effect knows every slot
    /// the node voted on. Sent only to a node outside every membership
    /// the leader may still act on, never as a heartbeat, so a node that
    /// was added back stays up while its log still replays its removal.
    Release {
        /// The leader's ballot.
        ballot: Ballot,
        /// The leader's commit index: at or past the slot before the
        /// membership that removed the node.
        committed: Slot,
    },
}

impl Message {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Prepare { .. } => "prepare",
            Message::Promise { .. } => "promise",
            Message::Accept { .. } => "accept",
            Message::Accepted { .. } => "accepted",
            Message::Commit { .. } => "commit",
            Message::CommitAck { .. } => "commit_ack",
            Message::Nack { .. } => "nack",
            Message::CatchupRequest { .. } => "catchup_request",
            Message::CatchupResponse { .. } => "catchup_response",
            Message::SnapshotRequest { .. } => "snapshot_request",
            Message::SnapshotChunk { .. } => "snapshot_chunk",
            Message::Probe => "probe",
            Message::ProbeReply { .. } => "probe_reply",
            Message::Release { .. } => "release",
        }
    }
}
