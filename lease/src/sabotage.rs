//! Known-wrong variants of the node runtime and the client (feature
//! `sabotage` only), so that the simulator can prove its checks catch
//! each one.

/// A deliberately broken runtime or client rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sabotage {
    /// A follower's `Accepted` leaves before its vote is synced.
    EarlyAccepted,
    /// The leader counts followers' `Accepted`s before its own vote for
    /// the slot is durable.
    LeaderUnsyncedVote,
    /// The client counts the holder's deadline from the reply instead of
    /// from the moment it sent the request.
    DeadlineFromReply,
    /// A new leader counts its epoch from its own start instead of its
    /// takeover, so outstanding leases lose remaining time.
    NoTakeoverExtension,
    /// A node answers a list from its own table at once instead of
    /// through the log (a tempting shortcut for a read): a lagging
    /// follower or a deposed leader answers stale holders.
    ListFromLocalTable,
    /// A node proposes every lock-delay as zero: the table acknowledges
    /// it but never blocks, so an expired lease is granted again at once.
    LockDelayDropped,
    /// The table grants a semaphore one permit more than it has.
    SemaphoreOffByOne,
    /// The table grants a reader at once while a writer waits in line
    /// (beside the readers holding), so writers starve.
    ReaderSlipsPastWriter,
    /// The client counts a lease bound to a session from the send of its
    /// acquire plus the session's TTL, instead of taking the session's
    /// deadline (the newest acknowledged keep): the holder believes past
    /// the moment the table ends the session.
    SessionLeaseFromAcquire,
}
