//! What applying a command produces: the answers to route and the events
//! to publish.

use crate::command::{ClientId, Outcome, SessionId, Stamp};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// A reply for one request of one client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The session.
    pub client: ClientId,
    /// The request answered.
    pub request: u64,
    /// The answer.
    pub outcome: Outcome,
}

/// Something that happened to a lease, for metrics and watchers: what one
/// applied command changed, in the order it changed it. Holders' secrets
/// are never in an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A lease was granted (from a request or from the wait line).
    Granted {
        /// Lease name.
        name: String,
        /// Its stamp.
        stamp: Stamp,
        /// True when the grantee had waited in line.
        waited: bool,
        /// The new holder.
        owner: String,
    },
    /// A lease ran out without being released.
    Expired {
        /// Lease name.
        name: String,
        /// The stamp that expired.
        stamp: Stamp,
    },
    /// A lease was renewed (by a renew, or a reentrant acquire).
    Renewed {
        /// Lease name.
        name: String,
        /// The holder's stamp.
        stamp: Stamp,
    },
    /// A lease was released (by its holder, or forced by an operator).
    Released {
        /// Lease name.
        name: String,
        /// The stamp that was released.
        stamp: Stamp,
    },
    /// A lease session ended, and every lease bound to it with it (each
    /// of those leases is reported as expired or released before this).
    SessionEnded {
        /// The session.
        session: SessionId,
        /// True when it ran out; false when it was closed.
        expired: bool,
    },
    /// The holder stored a fenced value with the lease.
    Written {
        /// Lease name.
        name: String,
        /// The writer's stamp.
        stamp: Stamp,
        /// The value written.
        value: Bytes,
    },
}

impl Event {
    /// The lease the event is about; `None` for a lease session's end,
    /// which is about no one lease (its leases have events of their own),
    /// so no watch is sent it.
    pub fn name(&self) -> Option<&str> {
        match self {
            Event::Granted { name, .. }
            | Event::Expired { name, .. }
            | Event::Renewed { name, .. }
            | Event::Released { name, .. }
            | Event::Written { name, .. } => Some(name),
            Event::SessionEnded { .. } => None,
        }
    }
}

/// What applying one command produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Replies, to be routed to the sessions that asked.
    pub responses: Vec<Response>,
    /// Lease events.
    pub events: Vec<Event>,
}

impl Applied {
    /// Records that grant `stamp` of `name` was renewed; the answer to
    /// the renewal, for a plain lease and a share alike.
    pub(super) fn renewed(&mut self, name: &str, stamp: Stamp) -> Outcome {
        self.events.push(Event::Renewed {
            name: name.to_owned(),
            stamp,
        });
        Outcome::Renewed
    }

    /// Records that grant `stamp` of `name` was released.
    pub(super) fn released(&mut self, name: &str, stamp: Stamp) {
        self.events.push(Event::Released {
            name: name.to_owned(),
            stamp,
        });
    }
}
