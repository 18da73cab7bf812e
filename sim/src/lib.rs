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
mod clock;
pub mod leases;
pub mod lists;
mod machine;
pub mod shares;
pub mod watches;
mod world;

pub use world::{Outcome, World};

use std::io::Write;
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

const USAGE: &str = "usage: simulate --seeds N [--first S] [--nodes 1..9] [--sabotage NAME]
                [--drift-ppm P] [--safety-gap-ms G] [--check-pause-ms C] [--reconfig]
                [--verbose]
  --reconfig        change the membership during runs (grow, shrink, replace,
                    remove the leader)
  --drift-ppm       largest clock rate error of nodes and clients (default 1000,
                    the configured bound; above it leases may break)
  --safety-gap-ms   gap holders keep before their deadline (default 25)
  --check-pause-ms  longest pause right after a holder's check (default 20)
  sabotage names (core): promise-not-persisted, accept-lower-ballot, minority-quorum,
                  forget-votes-in-promise, count-partial-promise, commit-ignores-ballot,
                  vote-after-disk-loss, unchecked-snapshot-chunks, reuse-own-ballot,
                  old-config-quorum, concurrent-changes (these two with --reconfig)
  sabotage names (runtime and client): early-accepted, leader-unsynced-vote,
                  deadline-from-reply, no-takeover-extension, list-from-local-table,
                  lock-delay-dropped, semaphore-off-by-one, reader-slips-past-writer,
                  session-lease-from-acquire, watch-skips-event";

/// Parses a sabotage name as printed in the usage text.
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

/// The `simulate` command line. Prints each violation with its seed and a
/// last line `simulated N seeds: V violations`; exits non-zero on any.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> std::process::ExitCode {
    let mut seeds = None;
    let mut first = 0u64;
    let mut opts = SimOptions::default();
    let mut verbose = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let parsed: Result<(), String> = (|| {
            match arg.as_str() {
                "--seeds" => {
                    seeds = Some(
                        value("--seeds")?
                            .parse()
                            .map_err(|e| format!("--seeds: {e}"))?,
                    )
                }
                "--first" => {
                    first = value("--first")?
                        .parse()
                        .map_err(|e| format!("--first: {e}"))?
                }
                "--nodes" => {
                    opts.nodes = value("--nodes")?
                        .parse()
                        .map_err(|e| format!("--nodes: {e}"))?;
                    if !(1..=9).contains(&opts.nodes) {
                        return Err("--nodes must be between 1 and 9".into());
                    }
                }
                "--sabotage" => {
                    let name = value("--sabotage")?;
                    opts.sabotage =
                        Some(parse_sabotage(&name).ok_or(format!("unknown sabotage {name}"))?);
                }
                "--drift-ppm" => {
                    opts.max_drift_ppm = value("--drift-ppm")?
                        .parse()
                        .map_err(|e| format!("--drift-ppm: {e}"))?;
                    if !(0..100_000).contains(&opts.max_drift_ppm) {
                        return Err("--drift-ppm must be below 100000".into());
                    }
                }
                "--safety-gap-ms" => {
                    let ms: u64 = value("--safety-gap-ms")?
                        .parse()
                        .map_err(|e| format!("--safety-gap-ms: {e}"))?;
                    opts.safety_gap = Duration::from_millis(ms);
                }
                "--check-pause-ms" => {
                    let ms: u64 = value("--check-pause-ms")?
                        .parse()
                        .map_err(|e| format!("--check-pause-ms: {e}"))?;
                    opts.max_check_pause = Duration::from_millis(ms);
                }
                "--verbose" => verbose = true,
                "--reconfig" => opts.reconfig = true,
                "--help" | "-h" => return Err(String::new()),
                other => return Err(format!("unknown argument {other}")),
            }
            Ok(())
        })();
        if let Err(e) = parsed {
            if !e.is_empty() {
                eprintln!("simulate: {e}");
            }
            eprintln!("{USAGE}");
            return std::process::ExitCode::from(2);
        }
    }
    let Some(count) = seeds else {
        eprintln!("{USAGE}");
        return std::process::ExitCode::from(2);
    };
    let outcomes = simulate_many(first, count, opts);
    let mut out = std::io::stdout().lock();
    let mut violations = 0usize;
    for (seed, outcome) in &outcomes {
        violations += outcome.violations.len();
        for v in &outcome.violations {
            let _ = writeln!(out, "seed {seed}: VIOLATION: {v}");
        }
        if verbose {
            let _ = writeln!(
                out,
                "seed {seed}: chosen {} acknowledged {} crashes {} clean_stops {} lost_writes {} disk_losses {} partitions {} pauses {} elections {} lease_grants {} lease_actions {} share_actions {} resends {} snapshot_installs {} largest_install_bytes {} lists {} changes {} removals {} sessions_ended {}",
                outcome.chosen,
                outcome.acknowledged,
                outcome.crashes,
                outcome.clean_stops,
                outcome.lost_writes,
                outcome.disk_losses,
                outcome.partitions,
                outcome.pauses,
                outcome.elections,
                outcome.lease_grants,
                outcome.lease_actions,
                outcome.share_actions,
                outcome.resends,
                outcome.snapshot_installs,
                outcome.largest_install_bytes,
                outcome.lists,
                outcome.changes,
                outcome.removals,
                outcome.sessions_ended
            );
        }
    }
    let watched = |f: fn(&Outcome) -> u64| outcomes.iter().map(|(_, o)| f(o)).sum::<u64>();
    let _ = writeln!(
        out,
        "watches: {} events checked against the log, {} resumes, {} refused as compacted",
        watched(|o| o.watch_events),
        watched(|o| o.watch_resumes),
        watched(|o| o.watch_compactions)
    );
    let _ = writeln!(out, "simulated {count} seeds: {violations} violations");
    if violations == 0 {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}
