//! What clients ask of the lease table and what it answers. These travel
//! inside Paxos values, so they are serialised with postcard, whose wire
//! format is stable and documented.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use trexlock_paxos::Ballot;

/// Identifies one client session (one `LeaseClient`). Chosen at random by
/// the client; used with [`Request::request`] to answer a retried request
/// from the table instead of executing it twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ClientId(pub u64);

/// A fencing token. Every grant gets a stamp strictly greater than every
/// stamp granted before it (for any lease name); a renewal keeps the stamp.
/// A protected resource that remembers the highest stamp it has seen and
/// refuses lower ones cannot be written by a holder whose lease was lost.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Stamp(pub u64);

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A client's request, as the leader receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The session asking.
    pub client: ClientId,
    /// Unique within the session; a retry reuses it.
    pub request: u64,
    /// Every request of this session below this id has been answered; the
    /// table may forget their outcomes.
    pub acked_below: u64,
    /// What is asked.
    pub op: Op,
}

/// The operations on the lease table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Take the lease `name` for `ttl_ms`. If another owner holds it, wait
    /// in line for up to `wait_ms` (0: do not wait). If `owner` already
    /// holds it, this renews it and returns the same stamp (reentrant).
    Acquire {
        /// Lease name.
        name: String,
        /// Who asks (reentrancy is by owner).
        owner: String,
        /// Lease duration, in milliseconds.
        ttl_ms: u64,
        /// How long to wait in line, in milliseconds.
        wait_ms: u64,
    },
    /// Extend a held lease by `ttl_ms` from now, keeping its stamp.
    Renew {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
        /// New duration, in milliseconds.
        ttl_ms: u64,
    },
    /// Give a held lease up; the next waiter gets it.
    Release {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
    },
    /// Stop waiting for `name`.
    Cancel {
        /// Lease name.
        name: String,
        /// The waiter.
        owner: String,
    },
    /// Read who holds `name` (linearizable: it goes through the log).
    Read {
        /// Lease name.
        name: String,
    },
    /// Store a small value with the lease, fenced by the holder's stamp.
    Write {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
        /// The value.
        value: Bytes,
    },
}

impl Op {
    /// The lease the operation is about.
    pub fn name(&self) -> &str {
        match self {
            Op::Acquire { name, .. }
            | Op::Renew { name, .. }
            | Op::Release { name, .. }
            | Op::Cancel { name, .. }
            | Op::Read { name }
            | Op::Write { name, .. } => name,
        }
    }
}

/// A command in the replicated log: a request or a bare time signal,
/// stamped by the leader that proposed it with its epoch (its ballot) and
/// the time elapsed on its own monotonic clock since it took over.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The proposing leader's ballot.
    pub epoch: Ballot,
    /// Microseconds since that leader took over, on its clock.
    pub elapsed_us: u64,
    /// What to do.
    pub body: Body,
}

/// The payload of a [`Command`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Body {
    /// A client request.
    Request(Request),
    /// Only moves time forward (expiring leases and serving waiters).
    Tick,
}

impl Command {
    /// Encodes for a Paxos value.
    pub fn encode(&self) -> Bytes {
        Bytes::from(postcard::to_stdvec(self).expect("serialising to a Vec cannot fail"))
    }

    /// Decodes a command.
    ///
    /// # Errors
    /// The bytes are not a command of this format.
    pub fn decode(bytes: &[u8]) -> Result<Command, postcard::Error> {
        postcard::from_bytes(bytes)
    }
}

/// Who holds a lease, as of the command that read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HolderInfo {
    /// The holder.
    pub owner: String,
    /// Its stamp.
    pub stamp: Stamp,
    /// Milliseconds left, as the cluster counts (never less than the
    /// holder itself believes).
    pub remaining_ms: u64,
}

/// The table's answer to a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The lease is the caller's, with this stamp, and the value stored
    /// with it (if any).
    Granted {
        /// Fencing token.
        stamp: Stamp,
        /// The lease's fenced value.
        value: Option<Bytes>,
    },
    /// The caller waits in line; a later `Granted` or `TimedOut` follows.
    Queued,
    /// Another owner holds the lease.
    Held(HolderInfo),
    /// The lease was extended.
    Renewed,
    /// The lease was given up.
    Released,
    /// The caller no longer waits.
    Cancelled,
    /// The caller does not hold the lease (expired, released or taken):
    /// its stamp is stale. `current` is the present holder.
    NotHolder {
        /// The present holder, if any.
        current: Option<HolderInfo>,
    },
    /// The present holder and fenced value of a lease.
    Holder {
        /// The holder, if any.
        holder: Option<HolderInfo>,
        /// The fenced value, if any.
        value: Option<Bytes>,
    },
    /// The fenced value was stored.
    Written,
    /// The caller's wait ran out before the lease came free.
    TimedOut,
    /// The request was malformed (empty name, zero TTL...).
    Invalid(String),
}
