//! # trexlock-sim
//!
//! A deterministic simulator for trexlock that runs the shipped code: each
//! node is the real [`trexlock_lease::NodeCore`] (the Paxos replica, the
//! lease table, routing, retries and the durability pipeline) and each
//! lease client the real [`trexlock_lease::client::ClientCore`]; the
//! simulator only delivers inputs and performs effects. One seed fixes
//! everything: message loss, duplication, delay and reordering; partitions
//! (two-sided, one-way, a minority leader); journal writes that complete
//! after a varying latency, one at a time; crashes that lose the write in
//! flight and everything not yet synced, sometimes the whole disk; long
//! pauses; per-node and per-client clocks with offset and rate drift.
//!
//! After every step it checks that at most one value is chosen per slot
//! (counting only votes that are durable in some journal, from a majority
//! of the membership governing the slot: memberships change by values
//! chosen in the log), that every commit index a node announces covers
//! only such chosen slots, that a leader proposes at a slot only with
//! promises meeting every majority of the membership governing it, that
//! membership changes come one at a time, that no ballot elects two
//! leaders, that every node
//! applies exactly the chosen values in slot order, that no promise goes
//! backwards, that snapshots of one slot are identical, that stamps grow,
//! that no request is executed twice and every answer a client gets is the
//! log's, that no two holders act on a lease at the same real instant, and
//! that a list never shows a holder older than a grant acknowledged before
//! the list was sent, that after a grant with a lock-delay expires no
//! holder acts on its name before the delay has passed, that no more
//! holders act on a semaphore than it has permits and nobody beside a
//! writer of a read-write lease, that no reader overtakes a queued
//! writer, that a lease session that ended on a node leaves no lease
//! bound to it there, and that every watcher receives exactly the log's
//! events after its position, in order, across disconnects and resumes.
//! After the faults stop, a new request must be applied on every node
//! within a bound, and every acknowledged command must be in every history.
#![deny(missing_docs)]

pub mod checker;
mod cli;
mod clock;
pub mod leases;
pub mod lists;
mod machine;
pub mod shares;
pub mod watches;
mod world;

pub use cli::main_with_args;
pub use world::{Outcome, World};

use std::time::Duration;

/// A deliberately broken rule, in the Paxos core or in the node runtime
/// and client, to prove the checks catch it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// A broken consensus core.
    Core(trexlock_paxos::Sabotage),
    /// A broken node runtime or client.
    Runtime(trexlock_lease::Sabotage),
}

impl Sabotage {
    /// The core's part, if any.
    pub fn core(self) -> Option<trexlock_paxos::Sabotage> {
        match self {
            Sabotage::Core(s) => Some(s),
            Sabotage::Runtime(_) => None,
        }
    }

    /// The runtime's part, if any.
    pub fn runtime(self) -> Option<trexlock_lease::Sabotage> {
        match self {
            Sabotage::Runtime(s) => Some(s),
            Sabotage::Core(_) => None,
        }
    }
}

/// Settings of a simulation run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimOptions {
    /// Cluster size.
    pub nodes: usize,
    /// How long faults are injected (simulated time).
    pub fault_time: Duration,
    /// After the faults stop, a new command must be applied everywhere
    /// within this simulated time.
    pub liveness_bound: Duration,
    /// Largest clock rate error of a node, in parts per million.
    pub max_drift_ppm: i64,
    /// A deliberately broken core, runtime or client, to prove the checks
    /// catch it.
    pub sabotage: Option<Sabotage>,
    /// Lease clients (each on its own drifting clock, homed on a node).
    pub clients: usize,
    /// Some crashes also wipe the node's journal.
    pub disk_loss: bool,
    /// The gap a holder keeps between its lease's end and its last check.
    pub safety_gap: Duration,
    /// Longest pause of a holder right after it checked its lease (the
    /// safety gap must cover it).
    pub max_check_pause: Duration,
    /// Change the membership during the run: grow, shrink, replace,
    /// remove the leader.
    pub reconfig: bool,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            nodes: 3,
            fault_time: Duration::from_secs(3),
            liveness_bound: Duration::from_secs(10),
            max_drift_ppm: 1_000,
            sabotage: None,
            clients: 4,
            disk_loss: true,
            safety_gap: Duration::from_millis(25),
            max_check_pause: Duration::from_millis(20),
            reconfig: false,
        }
    }
}

/// Runs one seed.
pub fn simulate(seed: u64, opts: SimOptions) -> Outcome {
    World::new(seed, opts).run()
}

/// Runs `count` seeds from `first` on all cores, returning outcomes in
/// seed order (so output does not depend on scheduling).
pub fn simulate_many(first: u64, count: u64, opts: SimOptions) -> Vec<(u64, Outcome)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let mut results: Vec<(u64, Outcome)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (first + t..first + count)
                        .step_by(threads as usize)
                        .map(|seed| (seed, simulate(seed, opts)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation thread panicked"))
            .collect()
    });
    results.sort_by_key(|(seed, _)| *seed);
    results
}

/// Parses a sabotage name as `simulate --help` lists it.
pub fn parse_sabotage(name: &str) -> Option<Sabotage> {
    use trexlock_lease::Sabotage as R;
    use trexlock_paxos::Sabotage as C;
    Some(match name {
        "promise-not-persisted" => Sabotage::Core(C::PromiseNotPersisted),
        "accept-lower-ballot" => Sabotage::Core(C::AcceptLowerBallot),
        "minority-quorum" => Sabotage::Core(C::MinorityQuorum),
        "forget-votes-in-promise" => Sabotage::Core(C::ForgetVotesInPromise),
        "count-partial-promise" => Sabotage::Core(C::CountPartialPromise),
        "vote-after-disk-loss" => Sabotage::Core(C::VoteAfterDiskLoss),
        "commit-ignores-ballot" => Sabotage::Core(C::CommitIgnoresBallot),
        "old-config-quorum" => Sabotage::Core(C::OldConfigQuorum),
        "concurrent-changes" => Sabotage::Core(C::ConcurrentChanges),
        "unchecked-snapshot-chunks" => Sabotage::Core(C::UncheckedSnapshotChunks),
        "reuse-own-ballot" => Sabotage::Core(C::ReuseOwnBallot),
        "early-accepted" => Sabotage::Runtime(R::EarlyAccepted),
        "leader-unsynced-vote" => Sabotage::Runtime(R::LeaderUnsyncedVote),
        "deadline-from-reply" => Sabotage::Runtime(R::DeadlineFromReply),
        "no-takeover-extension" => Sabotage::Runtime(R::NoTakeoverExtension),
        "list-from-local-table" => Sabotage::Runtime(R::ListFromLocalTable),
        "lock-delay-dropped" => Sabotage::Runtime(R::LockDelayDropped),
        "semaphore-off-by-one" => Sabotage::Runtime(R::SemaphoreOffByOne),
        "reader-slips-past-writer" => Sabotage::Runtime(R::ReaderSlipsPastWriter),
        "session-lease-from-acquire" => Sabotage::Runtime(R::SessionLeaseFromAcquire),
        "watch-skips-event" => Sabotage::Runtime(R::WatchSkipsEvent),
        _ => return None,
    })
}
