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

/// Names one lease session: a TTL and one keep-alive shared by every
/// lease bound to it (see [`crate::table`]'s lease sessions). Not the
/// request-dedup [`ClientId`]: the table numbers lease sessions itself, in
/// the order it opens them, and never reuses a number.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

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

/// The secret that proves a request comes from a lease's holder (or from
/// the waiter that asked for it).
///
/// The client chooses it (at least 128 random bits from the operating
/// system's generator, never a predictable one) and sends it in its
/// [`Op::Acquire`]; the table keeps it with the holder and never answers it
/// back ([`HolderInfo`] carries owner and stamp, which anyone may read, but
/// not the token). Renew, release, write and cancel must present it, so
/// knowing a lease's owner and stamp is not enough to take it away.
/// Chosen by the client, not the table, so that the table stays
/// deterministic. `Debug` hides it, so logging a request does not leak it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LeaseToken(pub u128);

impl fmt::Debug for LeaseToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LeaseToken(..)")
    }
}

/// A client's request, as the leader receives it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The session asking.
    pub client: ClientId,
    /// Unique within the session; a retry reuses it.
    pub request: u64,
    /// Every request of this session below this id has been answered (or
    /// abandoned): the table forgets their outcomes and, from then on,
    /// answers any copy of them [`Outcome::AlreadyAnswered`] instead of
    /// executing it. Must never go down within a session.
    pub acked_below: u64,
    /// What is asked.
    pub op: Op,
}

/// The operations on the lease table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Take the lease `name` for `ttl_ms`. If another owner holds it, wait
    /// in line for up to `wait_ms` (0: do not wait). If `owner` already
    /// holds it with the same `token`, this renews it (never shortening
    /// it) and returns the same stamp (reentrant); the same owner with
    /// another token is another claimant.
    Acquire {
        /// Lease name.
        name: String,
        /// Who asks.
        owner: String,
        /// The secret the holder (or waiter) must present from now on.
        token: LeaseToken,
        /// Lease duration, in milliseconds.
        ttl_ms: u64,
        /// How long to wait in line, in milliseconds.
        wait_ms: u64,
    },
    /// Extend a held lease to `ttl_ms` from now, keeping its stamp; a
    /// renewal never ends the lease earlier than it would have ended.
    Renew {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
        /// The holder's secret.
        token: LeaseToken,
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
        /// The holder's secret.
        token: LeaseToken,
    },
    /// Take a lease away from whoever holds it, as an operator: the next
    /// waiter gets it. The table executes it for anyone; only an
    /// administrator may send it, and that is enforced before a request is
    /// proposed (the node's admission), not here: the table cannot know
    /// who sent a command.
    ForceRelease {
        /// Lease name.
        name: String,
    },
    /// Stop waiting for `name`.
    Cancel {
        /// Lease name.
        name: String,
        /// The waiter.
        owner: String,
        /// The secret the waiter sent with its acquire.
        token: LeaseToken,
    },
    /// Read who holds `name` (linearizable: it goes through the log).
    Read {
        /// Lease name.
        name: String,
    },
    /// Store a small value with the lease, fenced by the holder's stamp.
    /// The value lives as long as the lease: it is handed to the next
    /// holder in line, and dropped once nobody holds or waits for it.
    Write {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
        /// The holder's secret.
        token: LeaseToken,
        /// The value.
        value: Bytes,
    },
    /// List the held leases whose names start with `prefix`, in name
    /// order, after the name `after` (a continuation), at most `limit` of
    /// them (linearizable: it goes through the log).
    List {
        /// Names start with this (empty: every name).
        prefix: String,
        /// Only names after this one: the `next` of the previous page.
        after: Option<String>,
        /// Most entries in the answer, from 1 to
        /// [`crate::table::MAX_LIST_ENTRIES`].
        limit: u32,
    },
    /// Set the lock-delay of a held lease: if this grant EXPIRES (is not
    /// released), the name is not granted to anyone for `lock_delay_ms`
    /// afterwards. Fenced by the holder's stamp, like a write.
    SetLockDelay {
        /// Lease name.
        name: String,
        /// The holder.
        owner: String,
        /// The holder's stamp.
        stamp: Stamp,
        /// The holder's secret.
        token: LeaseToken,
        /// The delay, up to [`crate::table::MAX_LOCK_DELAY_MS`].
        lock_delay_ms: u64,
    },
    /// Take a share of the name `name`: one permit of a semaphore, or the
    /// read (shared) or write (exclusive) side of a read-write lease.
    /// Waiters are served first come, first served: a waiting writer
    /// holds back every reader behind it. The holder renews, releases and
    /// cancels with [`Op::Renew`], [`Op::Release`] and [`Op::Cancel`] as
    /// for a lease; acquiring again with the same owner, token and mode
    /// renews (reentrant). A name is one kind at a time (a lease, a
    /// semaphore of one size, or a read-write lease).
    AcquireShare {
        /// The semaphore's or read-write lease's name.
        name: String,
        /// Who asks.
        owner: String,
        /// The secret the holder (or waiter) must present from now on.
        token: LeaseToken,
        /// Duration, in milliseconds.
        ttl_ms: u64,
        /// How long to wait in line, in milliseconds.
        wait_ms: u64,
        /// Which share.
        mode: Mode,
    },
    /// Open a lease session of `ttl_ms`: it lasts while it is kept
    /// ([`Op::KeepSession`]), and every lease bound to it lasts as long as
    /// it does. Answered [`Outcome::SessionOpened`] with its id.
    OpenSession {
        /// Who opens it (every request about it must name the same).
        owner: String,
        /// The secret every request about it must present.
        token: LeaseToken,
        /// How long the session lasts after each keep, in milliseconds.
        ttl_ms: u64,
    },
    /// Extend the session to its TTL from now (never shortening it), and
    /// with it every lease bound to it: one request however many leases.
    KeepSession {
        /// The session.
        session: SessionId,
        /// Its owner.
        owner: String,
        /// Its secret.
        token: LeaseToken,
    },
    /// End the session now: every lease bound to it is released (its next
    /// waiter gets it).
    CloseSession {
        /// The session.
        session: SessionId,
        /// Its owner.
        owner: String,
        /// Its secret.
        token: LeaseToken,
    },
    /// As [`Op::Acquire`], bound to `session`: the lease lasts as long as
    /// the session (its TTL is the session's), is renewed by keeping the
    /// session, and ends when the session ends. `owner` and `token` must
    /// be the session's.
    AcquireInSession {
        /// Lease name.
        name: String,
        /// The session's owner.
        owner: String,
        /// The session's secret, which the lease's holder presents too.
        token: LeaseToken,
        /// The session to bind the lease to.
        session: SessionId,
        /// How long to wait in line, in milliseconds.
        wait_ms: u64,
    },
}

/// The share an [`Op::AcquireShare`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// One permit of a semaphore of `permits` permits (1 to
    /// [`crate::table::MAX_PERMITS`]): at most `permits` holders at once.
    Permit {
        /// The semaphore's size; every request for the name must agree.
        permits: u32,
    },
    /// The shared side of a read-write lease: any number of readers (up to
    /// [`crate::table::MAX_PERMITS`]) while no writer holds it.
    Read,
    /// The exclusive side of a read-write lease: nobody else holds it.
    Write,
}

impl Op {
    /// The lease the operation is about (for [`Op::List`], the prefix;
    /// empty for an operation on a lease session itself).
    pub fn name(&self) -> &str {
        match self {
            Op::OpenSession { .. } | Op::KeepSession { .. } | Op::CloseSession { .. } => "",
            Op::Acquire { name, .. }
            | Op::AcquireInSession { name, .. }
            | Op::Renew { name, .. }
            | Op::Release { name, .. }
            | Op::ForceRelease { name }
            | Op::Cancel { name, .. }
            | Op::Read { name }
            | Op::Write { name, .. }
            | Op::SetLockDelay { name, .. }
            | Op::AcquireShare { name, .. } => name,
            Op::List { prefix, .. } => prefix,
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
        // Sized first: a Vec grown from empty took several reallocations
        // and copies per command, on the leader's path for every request
        // (4% of its CPU under load), and an exact fit keeps the log,
        // which holds these bytes until compaction, from holding slack.
        let len = postcard::experimental::serialized_size(self).unwrap_or(0);
        let out = postcard::to_extend(self, Vec::with_capacity(len));
        Bytes::from(out.expect("serialising to a Vec cannot fail"))
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
    /// with it (if any). A retry answered from the table carries the
    /// lease's value as of the retry (none if that grant is over): the
    /// table does not keep a copy of the value per answer.
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
    /// The request was not executed, for the reason given: it is
    /// malformed, or the table is full (see [`Refusal`]).
    Refused(Refusal),
    /// The request's id is below what its session has acknowledged: it was
    /// answered (or abandoned) before, so this late copy is not executed
    /// again. An honest client never receives this for a call it still
    /// waits on.
    AlreadyAnswered,
    /// One page of held leases, in name order (the answer to
    /// [`Op::List`]).
    Listed {
        /// The held leases of this page.
        leases: Vec<ListedLease>,
        /// Where the next page starts (pass it as `after`); `None` when
        /// this page ends the list.
        next: Option<String>,
    },
    /// The lock-delay was set on the caller's grant.
    LockDelaySet,
    /// Nobody holds the lease, but its last holder's lease expired with a
    /// lock-delay that has not passed yet: it is granted to nobody before.
    Blocked {
        /// Milliseconds of the delay left, as the cluster counts.
        remaining_ms: u64,
    },
    /// No share could be granted now (every permit taken, or a writer
    /// holds or waits for the read-write lease) and the caller would not
    /// wait.
    Busy {
        /// How many hold a share.
        holders: u32,
        /// How many wait in line.
        waiters: u32,
    },
    /// The lease session is open, with this id (the answer to
    /// [`Op::OpenSession`]).
    SessionOpened {
        /// The session's id.
        session: SessionId,
    },
    /// The session (and every lease bound to it) was extended.
    SessionKept,
    /// The session ended, and every lease bound to it was released.
    SessionClosed,
    /// The session named is not open: it expired or was closed (its leases
    /// ended with it), or the owner or secret is not the session's.
    NoSession,
}

/// A held name, as [`Op::List`] reports it: a plain lease (bound to a
/// lease session or not), a semaphore or a read-write lease, with every
/// holder it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedLease {
    /// Lease name.
    pub name: String,
    /// Its holders, oldest grant first: one for a plain lease, up to
    /// [`crate::table::MAX_PERMITS`] for a semaphore or the readers of a
    /// read-write lease; never empty.
    pub holders: Vec<ListedHolder>,
    /// How many wait in line for it.
    pub waiters: u32,
}

/// One holder of a listed name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListedHolder {
    /// The holder.
    pub owner: String,
    /// Its stamp.
    pub stamp: Stamp,
    /// Milliseconds left, as the cluster counts (for a lease bound to a
    /// session, the session's).
    pub remaining_ms: u64,
    /// The share it holds: `None` for a plain lease, a permit of a
    /// semaphore (with the semaphore's size), or the read or write side of
    /// a read-write lease.
    pub mode: Option<Mode>,
    /// The lease session the lease is bound to, if any.
    pub session: Option<SessionId>,
}

/// Why the table, or the node admitting a request for it, refused it. The
/// limits are the `MAX_*` constants of [`crate::table`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum Refusal {
    /// The lease name is empty.
    #[error("lease name is empty")]
    EmptyName,
    /// The lease name is longer than [`crate::table::MAX_NAME_BYTES`].
    #[error("lease name is longer than {} bytes", crate::table::MAX_NAME_BYTES)]
    NameTooLong,
    /// The owner is empty.
    #[error("owner is empty")]
    EmptyOwner,
    /// The owner is longer than [`crate::table::MAX_OWNER_BYTES`].
    #[error("owner is longer than {} bytes", crate::table::MAX_OWNER_BYTES)]
    OwnerTooLong,
    /// The TTL is zero or longer than [`crate::table::MAX_TTL_MS`].
    #[error("ttl must be between 1 ms and {} ms", crate::table::MAX_TTL_MS)]
    TtlOutOfRange,
    /// The wait is longer than [`crate::table::MAX_WAIT_MS`].
    #[error("wait must be at most {} ms", crate::table::MAX_WAIT_MS)]
    WaitTooLong,
    /// The value is larger than [`crate::table::MAX_VALUE_BYTES`].
    #[error("value is larger than {} bytes", crate::table::MAX_VALUE_BYTES)]
    ValueTooLarge,
    /// The encoded request is larger than [`crate::table::MAX_REQUEST_BYTES`].
    #[error("request is larger than {} bytes", crate::table::MAX_REQUEST_BYTES)]
    RequestTooLarge,
    /// Acquiring a free name would track more than
    /// [`crate::table::MAX_LEASES`] leases.
    #[error("the table tracks {} leases already", crate::table::MAX_LEASES)]
    TooManyLeases,
    /// The lease has [`crate::table::MAX_WAITERS_PER_LEASE`] waiters already.
    #[error(
        "{} waiters wait for this lease already",
        crate::table::MAX_WAITERS_PER_LEASE
    )]
    TooManyWaiters,
    /// [`crate::table::MAX_WAITERS`] waiters wait in all lines already.
    #[error("{} waiters wait for leases already", crate::table::MAX_WAITERS)]
    TooManyWaitersInAll,
    /// A new session would make more than [`crate::table::MAX_SESSIONS`].
    #[error("the table remembers {} sessions already", crate::table::MAX_SESSIONS)]
    TooManySessions,
    /// The session has [`crate::table::MAX_OUTCOMES_PER_SESSION`]
    /// unacknowledged requests already.
    #[error(
        "the session has {} unacknowledged requests already",
        crate::table::MAX_OUTCOMES_PER_SESSION
    )]
    TooManyPendingRequests,
    /// The table remembers [`crate::table::MAX_REMEMBERED_OUTCOMES`]
    /// unacknowledged outcomes of all sessions already.
    #[error(
        "the table remembers {} unacknowledged outcomes already",
        crate::table::MAX_REMEMBERED_OUTCOMES
    )]
    TooManyPendingRequestsInAll,
    /// Storing the value would take the table's values over
    /// [`crate::table::MAX_TOTAL_VALUE_BYTES`].
    #[error(
        "the table's values would exceed {} bytes",
        crate::table::MAX_TOTAL_VALUE_BYTES
    )]
    ValueSpaceFull,
    /// The sender may not ask for this: a forced release comes only from a
    /// connection with an administrator's certificate
    /// (`trexlock://<cluster>/admin/<name>`) or from a client in a node's
    /// own process (see [`crate::remote::authorize`]).
    #[error(
        "only an administrator's certificate (trexlock://<cluster>/admin/<name>) or a client in a node's own process may force a release"
    )]
    NotPermitted,
    /// The request names an owner that the client's certificate does not
    /// speak for: the owner must be the certificate's name or start with
    /// `<name>/` (see [`crate::remote::authorize`]).
    #[error(
        "the owner is not one the client's certificate may act for (its name, or a name starting with `<name>/`)"
    )]
    OwnerNotCertified,
    /// A list's limit is zero or above [`crate::table::MAX_LIST_ENTRIES`].
    #[error("list limit must be between 1 and {}", crate::table::MAX_LIST_ENTRIES)]
    ListLimitOutOfRange,
    /// A lock-delay over [`crate::table::MAX_LOCK_DELAY_MS`].
    #[error("lock delay must be at most {} ms", crate::table::MAX_LOCK_DELAY_MS)]
    LockDelayTooLong,
    /// A semaphore of zero permits or more than
    /// [`crate::table::MAX_PERMITS`].
    #[error("permits must be between 1 and {}", crate::table::MAX_PERMITS)]
    PermitsOutOfRange,
    /// The name is in use as another kind: a lease, a semaphore of
    /// another size, or a read-write lease (or the request does not apply
    /// to its kind, such as a lock-delay or a value on a shared name).
    #[error(
        "the name is in use as another kind (a lease, a semaphore of another size, or a read-write lease)"
    )]
    KindMismatch,
    /// The caller holds the name in the other mode: upgrades and
    /// downgrades are not offered, so a queued writer can never be
    /// overtaken by one. Release first.
    #[error(
        "the caller holds this name in another mode; release it first (no upgrade or downgrade)"
    )]
    OtherModeHeld,
    /// [`crate::table::MAX_SHARE_HOLDERS`] shares are held in all already.
    #[error("{} shares are held already", crate::table::MAX_SHARE_HOLDERS)]
    TooManyShareHolders,
    /// Opening a session would make more than
    /// [`crate::table::MAX_LEASE_SESSIONS`] open lease sessions.
    #[error(
        "the table has {} lease sessions open already",
        crate::table::MAX_LEASE_SESSIONS
    )]
    TooManyLeaseSessions,
    /// The session holds [`crate::table::MAX_LEASES_PER_SESSION`] leases
    /// already.
    #[error(
        "the session holds {} leases already",
        crate::table::MAX_LEASES_PER_SESSION
    )]
    TooManyLeasesInSession,
    /// The lease is bound to a session: it lasts as long as the session,
    /// so keep the session ([`Op::KeepSession`]) instead of renewing it.
    #[error("the lease is bound to a session: keep the session instead of renewing the lease")]
    LeaseInSession,
    /// The node asked was removed from the cluster's membership: its table
    /// ends at its removal, so it serves no client. Ask a member (a remote
    /// client given other servers moves on to them by itself).
    #[error(
        "this node was removed from the cluster's membership and serves no client; ask a member (trexlock member list names them)"
    )]
    Removed,
}

impl Refusal {
    /// A short snake_case name of the reason, stable across releases: the
    /// `reason` label of the refused-requests metric.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::EmptyName => "empty_name",
            Refusal::NameTooLong => "name_too_long",
            Refusal::EmptyOwner => "empty_owner",
            Refusal::OwnerTooLong => "owner_too_long",
            Refusal::TtlOutOfRange => "ttl_out_of_range",
            Refusal::WaitTooLong => "wait_too_long",
            Refusal::ValueTooLarge => "value_too_large",
            Refusal::RequestTooLarge => "request_too_large",
            Refusal::TooManyLeases => "too_many_leases",
            Refusal::TooManyWaiters => "too_many_waiters",
            Refusal::TooManyWaitersInAll => "too_many_waiters_in_all",
            Refusal::TooManySessions => "too_many_sessions",
            Refusal::TooManyPendingRequests => "too_many_pending_requests",
            Refusal::TooManyPendingRequestsInAll => "too_many_pending_requests_in_all",
            Refusal::ValueSpaceFull => "value_space_full",
            Refusal::NotPermitted => "not_permitted",
            Refusal::OwnerNotCertified => "owner_not_certified",
            Refusal::ListLimitOutOfRange => "list_limit_out_of_range",
            Refusal::LockDelayTooLong => "lock_delay_too_long",
            Refusal::PermitsOutOfRange => "permits_out_of_range",
            Refusal::KindMismatch => "kind_mismatch",
            Refusal::OtherModeHeld => "other_mode_held",
            Refusal::TooManyShareHolders => "too_many_share_holders",
            Refusal::TooManyLeaseSessions => "too_many_lease_sessions",
            Refusal::TooManyLeasesInSession => "too_many_leases_in_session",
            Refusal::LeaseInSession => "lease_in_session",
            Refusal::Removed => "removed",
        }
    }

    /// True when the request itself is malformed (sending it again never
    /// helps); false when the table is full (it may succeed later) or the
    /// sender may not ask for it.
    pub fn is_invalid(self) -> bool {
        matches!(
            self,
            Refusal::EmptyName
                | Refusal::NameTooLong
                | Refusal::EmptyOwner
                | Refusal::OwnerTooLong
                | Refusal::TtlOutOfRange
                | Refusal::WaitTooLong
                | Refusal::ValueTooLarge
                | Refusal::RequestTooLarge
                | Refusal::ListLimitOutOfRange
                | Refusal::LockDelayTooLong
                | Refusal::PermitsOutOfRange
                | Refusal::LeaseInSession
        )
    }
}
