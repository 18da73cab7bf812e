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
pub type Slot = u64;

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

    /// The smallest ballot owned by `node` that is greater than `self`.
    #[must_use]
    pub fn next_for(self, node: NodeId) -> Ballot {
        Ballot {
            counter: self.counter + 1,
            node,
        }
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

impl Value {
    /// The commands this value carries (none for [`Value::Noop`]).
    pub fn commands(&self) -> &[Bytes] {
        match self {
            Value::Noop => &[],
            Value::Batch(cmds) => cmds,
        }
    }
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
