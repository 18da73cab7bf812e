//! Identifiers and values shared by every part of the protocol.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Identifies one member of the cluster. Unique within a cluster and stable
/// across restarts: it is part of every ballot the node creates.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A position in the replicated log. Slot 0 is never used: the first
/// command is chosen in slot 1, so "committed up to 0" means "nothing".
/// Slots above [`MAX_SLOT`] are never used either.
pub type Slot = u64;

/// The highest slot a replica uses or accepts from a peer. A message naming
/// a higher slot or commit index is refused: no honest cluster gets there
/// (2^63 slots at a million per second take 290,000 years), and everything
/// at or below it leaves room for slot arithmetic that cannot overflow.
pub const MAX_SLOT: Slot = u64::MAX / 2;

/// A proposal number. Ballots are totally ordered by `(counter, node)`, and
/// because each node only creates ballots carrying its own id, two nodes can
/// never create the same ballot: ballots never repeat.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Ballot {
    /// Compared first.
    pub counter: u64,
    /// Breaks ties between nodes that picked the same counter.
    pub node: NodeId,
}

impl Ballot {
    /// The ballot every acceptor starts out having promised: lower than any
    /// ballot a node can create.
    pub const ZERO: Ballot = Ballot {
        counter: 0,
        node: NodeId(0),
    };

    /// The highest counter a usable ballot may carry. A ballot with counter
    /// `u64::MAX` could never be exceeded, so promising it would end every
    /// later election: replicas never create one and refuse one on receipt.
    pub const MAX_COUNTER: u64 = u64::MAX - 1;

    /// True when the ballot can be exceeded (its counter is at most
    /// [`Ballot::MAX_COUNTER`]), the condition for a replica to accept it
    /// from a peer.
    pub fn is_usable(self) -> bool {
        self.counter <= Ballot::MAX_COUNTER
    }

    /// A ballot owned by `node`, greater than `self`, with the next counter;
    /// `None` when that counter would exceed [`Ballot::MAX_COUNTER`].
    #[must_use]
    pub fn next_for(self, node: NodeId) -> Option<Ballot> {
        let counter = self
            .counter
            .checked_add(1)
            .filter(|c| *c <= Ballot::MAX_COUNTER)?;
        Some(Ballot { counter, node })
    }
}

impl fmt::Display for Ballot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.counter, self.node)
    }
}

/// What one slot holds once chosen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Value {
    /// A gap filler: a new leader proposes it for slots that no acceptor in
    /// its quorum had accepted anything for. Applications ignore it.
    Noop,
    /// A batch of opaque client commands, applied in order.
    Batch(Vec<Bytes>),
}

/// Bytes the size estimates add to each command's length: postcard
/// prefixes a byte string with its length as a varint, at most 10 bytes.
pub const COMMAND_OVERHEAD_BYTES: usize = 10;

/// Bytes the size estimates add for each log entry in a message beyond its
/// commands: the slot (a varint, at most 10 bytes), the value's tag and
/// command count (at most 11) and, in a Promise, the vote's ballot (at
/// most 13), rounded up.
pub const ENTRY_OVERHEAD_BYTES: usize = 40;

/// Bytes the size estimates add once per message: envelope, message tag,
/// ballot, slot numbers and entry count take at most 80 bytes encoded (a
/// Promise, with its commit index, truncation point and slot range); the
/// rest is room for a wrapper the node layer adds and the frame's length
/// prefix.
pub const MESSAGE_OVERHEAD_BYTES: usize = 128;

impl Value {
    /// The commands this value carries (none for [`Value::Noop`]).
    pub fn commands(&self) -> &[Bytes] {
        match self {
            Value::Noop => &[],
            Value::Batch(cmds) => cmds,
        }
    }

    /// An upper bound of the bytes this value adds to a message as one
    /// entry: [`ENTRY_OVERHEAD_BYTES`] plus each command's length and
    /// [`COMMAND_OVERHEAD_BYTES`].
    pub fn entry_bytes(&self) -> usize {
        self.commands().iter().fold(ENTRY_OVERHEAD_BYTES, |n, c| {
            n.saturating_add(command_bytes(c))
        })
    }
}

/// What one command costs against [`crate::Config::max_batch_bytes`]: its
/// length plus [`COMMAND_OVERHEAD_BYTES`].
pub fn command_bytes(command: &Bytes) -> usize {
    command.len().saturating_add(COMMAND_OVERHEAD_BYTES)
}

/// Splits entries, in order, into groups whose estimated size (see
/// [`Value::entry_bytes`]) fits `budget` bytes. An entry too large on its
/// own gets a group to itself: a slot's value cannot be split, and the
/// proposer's limits ([`crate::Config::validate`]) keep its own values
/// within budget.
pub(crate) fn split_by_bytes<T>(
    entries: Vec<(Slot, T)>,
    budget: usize,
    size: impl Fn(&T) -> usize,
) -> Vec<Vec<(Slot, T)>> {
    let mut groups: Vec<Vec<(Slot, T)>> = Vec::new();
    let mut used = 0usize;
    for entry in entries {
        let n = size(&entry.1);
        match groups.last_mut() {
            Some(group) if used.saturating_add(n) <= budget => {
                used += n;
                group.push(entry);
            }
            _ => {
                used = n;
                groups.push(vec![entry]);
            }
        }
    }
    groups
}

/// An acceptor's vote: it accepted `value` in `ballot` for some slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    /// The ballot in which the value was accepted.
    pub ballot: Ballot,
    /// The accepted value.
    pub value: Value,
}

/// A state machine snapshot: the application state after applying every
/// slot up to and including `slot`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The last slot the snapshot covers.
    pub slot: Slot,
    /// Opaque application state.
    pub data: Bytes,
}
