//! Scenario presets: a fixed, fault-free or partitioned prefix of steps
//! that brings the cluster to a situation some protocol rules exist for (a
//! leader cut off mid-proposal, a voter that lost its disk, a lease
//! outliving its leader), after which the checker searches exhaustively.
//!
//! A prefix is made only of ordinary events (a client's request, a
//! partition, a crash, time passing with every node ticking and every
//! message arriving in order); it never performs a sabotaged rule's
//! violation itself, and the same prefix without a sabotage keeps every
//! property (the tests check both).

use crate::clients::Plan;
use crate::stages::{Stage, Who};
use trexlock_lease::command::Mode;

/// The chunks snapshots travel in, in [`Scenario::FollowerBehindASnapshot`]:
/// a snapshot of one lease takes a few.
const SNAPSHOT_CHUNK_BYTES: usize = 64;
/// The lock-delay a holder sets in [`Scenario::LockDelayOnAnExpiringLease`].
const LOCK_DELAY_MS: u64 = 300;
/// The TTL its waiter asks for: it counts from the send of its request,
/// so it lasts past the expiry and the delay after it.
const WAITER_TTL_MS: u64 = 1_000;

/// A named situation the search starts from, instead of right after the
/// first leader took over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scenario {
    /// Client 0's acquire reaches the leader, which logs its proposal and
    /// sends its Accepts; the leader is then cut off from its peers (its
    /// Accepts still in flight) and time passes until a follower's
    /// election is due.
    LeaderCutOffMidProposal,
    /// One follower is cut off while the leader and the other follower
    /// choose client 0's acquire; that other follower then crashes and
    /// loses its disk, the partition moves to the leader, and time passes
    /// until an election is due.
    VoterLosesItsDisk,
    /// Client 0 holds the lease and client 1 waits for it in line when
    /// the leader is cut off; time passes until an election is due.
    LeaderCutOffWhileALeaseIsHeld,
    /// One follower is cut off while the leader and the other follower
    /// choose client 0's acquire; client 1's acquire reaches the leader,
    /// which logs it and sends its Accepts; the cut moves to the leader
    /// (its Accepts still in flight), and time passes until an election
    /// is due.
    LeaderCutOffWithAFollowerBehind,
    /// Client 0 holds the lease; a follower is cut off while client 1
    /// queues for it and client 0 releases it to client 1; client 0 then
    /// asks the follower that was cut off which leases are held.
    ListFromAFollowerBehind,
    /// Client 0 holds the lease and sets a lock-delay on it, then lets it
    /// run out; client 1 waits for it in line, for a longer TTL.
    LockDelayOnAnExpiringLease,
    /// Client 0 holds the one permit of a semaphore; client 1 is about to
    /// ask for one too.
    SemaphoreOfOnePermit,
    /// Client 0 reads under a read-write lease and client 1, a writer,
    /// was told it waits in line; a step of time later client 2, a
    /// reader, is about to ask (clients 0 and 2 release when done).
    ReaderBehindAQueuedWriter,
    /// Client 0 opens a lease session and, two steps of time later,
    /// acquires the lease bound to it, keeping the session no more;
    /// client 1 waits for the lease in line.
    LeaseBoundToAnUnkeptSession,
    /// A watcher watches the leader while client 0 acquires and renews the
    /// lease and client 1 waits for it; client 0 is about to release it,
    /// in slot 5 (the release and the grant to client 1: two events), and
    /// client 1 to release it after (an event the watcher receives after
    /// those).
    WatcherOfTheLeader,
    /// The leader is asked to add a learner (node 4, which never runs),
    /// and at once another (node 5).
    TwoChangesAtOnce,
    /// The leader crashes and restarts from its journal (its promise is
    /// its own ballot); time passes until an election is due.
    LeaderRestarts,
    /// The voter that stays is cut off, and the leader is asked to remove
    /// the follower with the highest id; once it knows the change chosen
    /// (with the votes of the follower it removes) and has proposed the
    /// no-ops up to the slot the change governs from (its window is wide
    /// enough), client 0's acquire reaches it, for the first slot the new
    /// membership governs.
    LeaderRemovesAVoter,
    /// A follower is cut off while client 0's acquire is chosen, in the
    /// slot after which the others snapshot their table and compact their
    /// logs (snapshots of a few small chunks); the cut moves to the other
    /// follower and client 1's acquire reaches the leader, whose Accept
    /// tells the follower behind how far behind it is.
    FollowerBehindASnapshot,
}

impl Scenario {
    /// Every preset.
    pub const ALL: [Scenario; 14] = [
        Scenario::LeaderCutOffMidProposal,
        Scenario::VoterLosesItsDisk,
        Scenario::LeaderCutOffWhileALeaseIsHeld,
        Scenario::LeaderCutOffWithAFollowerBehind,
        Scenario::ListFromAFollowerBehind,
        Scenario::LockDelayOnAnExpiringLease,
        Scenario::SemaphoreOfOnePermit,
        Scenario::ReaderBehindAQueuedWriter,
        Scenario::LeaseBoundToAnUnkeptSession,
        Scenario::WatcherOfTheLeader,
        Scenario::TwoChangesAtOnce,
        Scenario::LeaderRestarts,
        Scenario::LeaderRemovesAVoter,
        Scenario::FollowerBehindASnapshot,
    ];

    /// The name the command line knows it by.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::LeaderCutOffMidProposal => "leader-cut-off-mid-proposal",
            Scenario::VoterLosesItsDisk => "voter-loses-its-disk",
            Scenario::LeaderCutOffWhileALeaseIsHeld => "leader-cut-off-while-a-lease-is-held",
            Scenario::LeaderCutOffWithAFollowerBehind => "leader-cut-off-with-a-follower-behind",
            Scenario::ListFromAFollowerBehind => "list-from-a-follower-behind",
            Scenario::LockDelayOnAnExpiringLease => "lock-delay-on-an-expiring-lease",
            Scenario::SemaphoreOfOnePermit => "semaphore-of-one-permit",
            Scenario::ReaderBehindAQueuedWriter => "reader-behind-a-queued-writer",
            Scenario::LeaseBoundToAnUnkeptSession => "lease-bound-to-an-unkept-session",
            Scenario::WatcherOfTheLeader => "watcher-of-the-leader",
            Scenario::TwoChangesAtOnce => "two-changes-at-once",
            Scenario::LeaderRestarts => "leader-restarts",
            Scenario::LeaderRemovesAVoter => "leader-removes-a-voter",
            Scenario::FollowerBehindASnapshot => "follower-behind-a-snapshot",
        }
    }

    /// The preset called `name`, if any.
    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }

    /// What each client does, in order (empty: the default workload of
    /// acquiring, renewing and releasing the lease).
    pub(crate) fn scripts(self) -> Vec<Vec<Plan>> {
        use Plan::*;
        match self {
            Scenario::LockDelayOnAnExpiringLease => vec![
                vec![Acquire, SetLockDelay(LOCK_DELAY_MS)],
                vec![AcquireFor(WAITER_TTL_MS)],
            ],
            Scenario::SemaphoreOfOnePermit => {
                let permit = Share(Mode::Permit { permits: 1 });
                vec![vec![permit], vec![permit]]
            }
            Scenario::ReaderBehindAQueuedWriter => vec![
                vec![Share(Mode::Read), Release],
                vec![Share(Mode::Write)],
                vec![Share(Mode::Read), Release],
            ],
            Scenario::LeaseBoundToAnUnkeptSession => {
                vec![vec![OpenSession, AcquireInSession], vec![Acquire]]
            }
            Scenario::WatcherOfTheLeader => {
                vec![vec![Acquire, Renew, Release], vec![Acquire, Release]]
            }
            _ => Vec::new(),
        }
    }

    /// Whether clients set lock-delays (holders' actions are then checked
    /// against them).
    pub(crate) fn sets_lock_delays(self) -> bool {
        self == Scenario::LockDelayOnAnExpiringLease
    }

    /// The leader's window (most slots in flight), when the scenario needs
    /// one wider than the library's default.
    pub(crate) fn window(self) -> Option<usize> {
        (self == Scenario::LeaderRemovesAVoter)
            .then_some(trexlock_paxos::CONFIG_DELAY as usize + 64)
    }

    /// How the nodes compact, when the scenario needs them to: a snapshot
    /// every this many slots, no slot kept behind it, and chunks of this
    /// many bytes.
    pub(crate) fn compaction(self) -> Option<(u64, usize)> {
        (self == Scenario::FollowerBehindASnapshot).then_some((2, SNAPSHOT_CHUNK_BYTES))
    }

    /// The stages after the startup.
    pub(crate) fn stages(self) -> Vec<Stage> {
        use Stage::*;
        match self {
            Scenario::FollowerBehindASnapshot => vec![
                Cut(Who::Follower),
                Request(0, Who::Leader),
                Settle,
                Cut(Who::Voter),
                Request(1, Who::Leader),
            ],
            Scenario::TwoChangesAtOnce => vec![AddLearner(4), AddLearner(5)],
            Scenario::LeaderRestarts => vec![Restart(Who::Leader), UntilElection],
            Scenario::LeaderRemovesAVoter => vec![
                Cut(Who::Voter),
                Remove(Who::Follower),
                SettleUntilChanged,
                Request(0, Who::Leader),
            ],
            Scenario::LeaderCutOffMidProposal => {
                vec![
                    Request(0, Who::Leader),
                    Cut(Who::Leader),
                    Settle,
                    UntilElection,
                ]
            }
            Scenario::VoterLosesItsDisk => vec![
                Cut(Who::Follower),
                Request(0, Who::Leader),
                Settle,
                Crash(Who::Voter),
                Cut(Who::Leader),
                UntilElection,
            ],
            Scenario::LeaderCutOffWhileALeaseIsHeld => vec![
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Voter),
                Settle,
                Cut(Who::Leader),
                UntilElection,
            ],
            Scenario::ListFromAFollowerBehind => vec![
                Request(0, Who::Leader),
                Settle,
                Cut(Who::Follower),
                Request(1, Who::Leader),
                Settle,
                Request(0, Who::Leader),
                Settle,
                List(0, Who::CutOff),
            ],
            Scenario::LockDelayOnAnExpiringLease => vec![
                Request(0, Who::Leader),
                Settle,
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Leader),
                Settle,
            ],
            Scenario::SemaphoreOfOnePermit => vec![Request(0, Who::Leader), Settle],
            Scenario::ReaderBehindAQueuedWriter => vec![
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Leader),
                Settle,
                Pass,
            ],
            Scenario::LeaseBoundToAnUnkeptSession => vec![
                Request(0, Who::Leader),
                Settle,
                Pass,
                Pass,
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Leader),
                Settle,
            ],
            Scenario::WatcherOfTheLeader => vec![
                Watch(Who::Leader),
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Leader),
                Settle,
                Request(0, Who::Leader),
                Settle,
            ],
            Scenario::LeaderCutOffWithAFollowerBehind => vec![
                Cut(Who::Follower),
                Request(0, Who::Leader),
                Settle,
                Request(1, Who::Leader),
                Cut(Who::Leader),
                Settle,
                UntilElection,
            ],
        }
    }
}
