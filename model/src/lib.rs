//! # trexlock-model
//!
//! Exhaustive model checking of the cores trexlock ships, with the
//! [`stateright`] checker. Each node is the real
//! [`trexlock_lease::NodeCore`] (and so the real Paxos
//! [`trexlock_paxos::Replica`] and [`trexlock_lease::table::LeaseTable`]),
//! each lease client the real [`trexlock_lease::client::ClientCore`]; the
//! model only delivers inputs and performs effects, as the simulator does,
//! and the checker visits every order of those steps up to its bounds:
//!
//! - a network that reorders every message, and (within budgets) loses or
//!   duplicates one;
//! - journal writes that become durable as steps of their own, and crashes
//!   that keep only what was synced (or, within a budget, lose the disk);
//! - real time in steps of 100 ms that the checker advances; every clock
//!   has its own offset and runs at one end of the drift bound or the
//!   other, and each node handles a tick whenever the checker lets it;
//! - clients that acquire, renew and release one lease, resend a request
//!   to another node, and, since nothing makes them act, pause anywhere;
//!   in a [`Scenario`], clients that follow a script instead (semaphores,
//!   read-write leases, lock-delays, lease sessions), a watcher, and an
//!   operator who asks the leader for membership changes.
//!
//! After a bounded window of faults the network becomes timely (time only
//! advances once every message is delivered and every write synced), so
//! that liveness can be checked as an eventually-property.
//!
//! Every path starts with a fixed prefix: a fault-free startup until the
//! first leader has taken over, then, for a [`Scenario`], a few ordinary
//! events (a request, a partition, a crash, time passing) that bring the
//! cluster to a situation the search could not reach within its bounds on
//! its own; the search is exhaustive from there.
//!
//! ```
//! use trexlock_model::{Bounds, check};
//!
//! // The smallest run: three nodes, no client, no fault, two steps of time.
//! let bounds = Bounds { commands: 0, crashes: 0, time_steps: 2, fault_steps: 1, max_depth: None, ..Bounds::default() };
//! let report = check(&bounds, None);
//! assert!(report.counterexamples.is_empty());
//! assert!(report.states > 1);
//! ```
#![deny(missing_docs)]

mod clients;
mod describe;
mod ghost;
mod model;
mod primitives;
mod scenario;
mod stages;
mod trace;
mod world;

pub use model::{Action, LeaseModel};
pub use scenario::Scenario;
pub use trace::explain;
pub use trexlock_sim::{Sabotage, parse_sabotage};
pub use world::State;

use stateright::{Checker, HasDiscoveries, Model};
use std::time::{Duration, Instant};

/// The properties checked in every reachable state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Property {
    /// At most one value is chosen (held durably by a quorum in one
    /// ballot) per slot.
    OneValuePerSlot,
    /// Nodes apply only chosen values, each slot once, in slot order.
    ApplyChosenInOrder,
    /// No node's promise goes back, across restarts.
    PromisesNeverGoBack,
    /// A promise or a vote is durable before a message announces it.
    DurableBeforeAnnounced,
    /// An answer a client received is the log's, for a command a quorum
    /// holds durably.
    NoAcknowledgedCommandLost,
    /// No two clients believe they hold the lease at the same step.
    OneHolderAtATime,
    /// Each node sees the stamps of a lease's grants grow.
    StampsGrow,
    /// No request is executed twice, whatever its duplicates and retries.
    NoRequestExecutedTwice,
    /// No node stops on an error, and none has two journal writes in
    /// flight.
    NoNodeStops,
    /// A list never shows a lease held with a stamp below one whose grant
    /// was acknowledged before the list was sent.
    ListsAreLinearizable,
    /// After a grant with a lock-delay expired, no holder acts on the
    /// name before the delay has passed.
    LockDelayHonoured,
    /// No more holders act on a semaphore than it has permits, and nobody
    /// beside a writer of a read-write lease.
    SharesWithinTheirLimits,
    /// No reader sent after a writer was queued is granted before it.
    NoReaderOvertakesAQueuedWriter,
    /// Every watcher receives exactly the log's events after its
    /// position, in order.
    WatchersGetTheLog,
    /// No ballot elects two leaders.
    OneLeaderPerBallot,
    /// Membership changes are chosen one at a time, each in effect before
    /// the next, each changing one voter.
    OneMembershipChangeAtATime,
    /// Snapshots of one slot are identical on every node.
    SnapshotsAgree,
    /// Once faults stop, every command a client started is answered.
    EveryCommandAnswered,
}

impl Property {
    /// Every property, in the order they are reported.
    pub const ALL: [Property; 18] = [
        Property::OneValuePerSlot,
        Property::ApplyChosenInOrder,
        Property::PromisesNeverGoBack,
        Property::DurableBeforeAnnounced,
        Property::NoAcknowledgedCommandLost,
        Property::OneHolderAtATime,
        Property::StampsGrow,
        Property::NoRequestExecutedTwice,
        Property::NoNodeStops,
        Property::ListsAreLinearizable,
        Property::LockDelayHonoured,
        Property::SharesWithinTheirLimits,
        Property::NoReaderOvertakesAQueuedWriter,
        Property::WatchersGetTheLog,
        Property::OneLeaderPerBallot,
        Property::OneMembershipChangeAtATime,
        Property::SnapshotsAgree,
        Property::EveryCommandAnswered,
    ];

    /// The name the checker reports the property under.
    pub fn name(self) -> &'static str {
        match self {
            Property::OneValuePerSlot => "one value per slot",
            Property::ApplyChosenInOrder => "nodes apply only chosen values, in order",
            Property::PromisesNeverGoBack => "promises never go back",
            Property::DurableBeforeAnnounced => {
                "promises and votes are durable before they are announced"
            }
            Property::NoAcknowledgedCommandLost => "no acknowledged command lost",
            Property::OneHolderAtATime => "no two holders believe they hold one lease",
            Property::StampsGrow => "stamps grow per lease",
            Property::NoRequestExecutedTwice => "no request executed twice",
            Property::NoNodeStops => "no node stops",
            Property::ListsAreLinearizable => {
                "lists show no holder older than an acknowledged grant"
            }
            Property::LockDelayHonoured => {
                "no holder acts within the lock-delay of an expired grant"
            }
            Property::SharesWithinTheirLimits => {
                "no more share holders than permits, nobody beside a writer"
            }
            Property::NoReaderOvertakesAQueuedWriter => "no reader overtakes a queued writer",
            Property::WatchersGetTheLog => "every watcher receives the log's events in order",
            Property::OneLeaderPerBallot => "no ballot elects two leaders",
            Property::OneMembershipChangeAtATime => "one membership change at a time",
            Property::SnapshotsAgree => "snapshots of one slot agree",
            Property::EveryCommandAnswered => "every command is answered once faults stop",
        }
    }
}

/// How far the checker explores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounds {
    /// Cluster size.
    pub nodes: usize,
    /// Lease clients.
    pub clients: usize,
    /// Operations the clients start in all (shared out in turn); a
    /// scenario whose clients follow a script starts its scripts instead.
    pub commands: usize,
    /// Crashes (each followed by a restart whenever the checker likes).
    pub crashes: usize,
    /// Of those crashes, how many also lose the node's disk.
    pub disk_losses: usize,
    /// Messages the network may lose.
    pub drops: usize,
    /// Messages the network may deliver twice.
    pub duplicates: usize,
    /// Requests clients may send again to another node during the faults.
    pub resends: usize,
    /// Steps of real time after the cluster has elected its first leader.
    pub time_steps: u32,
    /// Of those, the first steps during which faults happen and messages
    /// may take any time; after them the network is timely.
    pub fault_steps: u32,
    /// A deliberately broken rule, to prove a property can fail.
    pub sabotage: Option<Sabotage>,
    /// Most steps in one path after the prefix (`None`: no limit but
    /// the others).
    pub max_depth: Option<usize>,
    /// Search depth-first: reaches deep counterexamples sooner, but the
    /// first one found is not the shortest.
    pub depth_first: bool,
    /// A fixed prefix of ordinary events the search starts after (`None`:
    /// right after the first leader took over).
    pub scenario: Option<Scenario>,
    /// The TTL clients ask for, in milliseconds (a step is 100 ms).
    pub ttl_ms: u64,
    /// Bytes of commands one slot holds (`None`: the library's defaults);
    /// a message then holds one full slot, so that a promise of several
    /// votes comes in parts, one vote each.
    pub slot_bytes: Option<usize>,
}

impl Default for Bounds {
    /// The bounds CI checks: 3 nodes, 2 clients with 2 commands, one
    /// crash, one resend, 4 steps of time of which 2 with faults, and
    /// paths of at most 6 steps after the startup.
    fn default() -> Self {
        Bounds {
            nodes: 3,
            clients: 2,
            commands: 2,
            crashes: 1,
            disk_losses: 0,
            drops: 0,
            duplicates: 0,
            resends: 1,
            time_steps: 4,
            fault_steps: 2,
            sabotage: None,
            max_depth: Some(6),
            depth_first: false,
            scenario: None,
            ttl_ms: 300,
            slot_bytes: None,
        }
    }
}

/// What one run of the checker found.
#[derive(Debug)]
pub struct Report {
    /// Steps of the deterministic prefix at the head of every path.
    pub prefix_steps: usize,
    /// Distinct states visited.
    pub states: usize,
    /// States generated, duplicates included.
    pub generated: usize,
    /// The deepest state reached, counting the initial state as 1 (with a
    /// depth bound: the states past it, generated but not checked).
    pub max_depth: usize,
    /// How long it took.
    pub elapsed: Duration,
    /// Per broken property, the first path found that breaks it, as the
    /// actions taken from the initial state (breadth-first: a shortest
    /// one, give or take a step when several threads search).
    pub counterexamples: Vec<(Property, Vec<Action>)>,
}

/// Checks `bounds` on `threads` threads (all cores when `None`), stopping
/// at the first counterexample: breadth-first (the default), a shortest
/// one (on several threads the levels overlap a little, so a path may
/// carry an idle step).
pub fn check(bounds: &Bounds, threads: Option<usize>) -> Report {
    let model = LeaseModel::new(*bounds);
    let threads =
        threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let start = Instant::now();
    let prefix_steps = model.prefix_steps;
    let mut builder = model
        .checker()
        .threads(threads)
        .finish_when(HasDiscoveries::AnyFailures);
    if let Some(depth) = bounds.max_depth {
        // The checker counts the initial state as depth 1 and checks no
        // state at the target depth: paths of `depth` steps after the
        // prefix end in states of depth `prefix + depth + 1`.
        builder = builder.target_max_depth(prefix_steps + depth + 2);
    }
    if bounds.depth_first {
        report(builder.spawn_dfs().join(), prefix_steps, start)
    } else {
        report(builder.spawn_bfs().join(), prefix_steps, start)
    }
}

/// As [`check`], deepening the search one step at a time up to
/// `bounds.max_depth` and stopping at the first depth where a safety
/// property breaks: its counterexample is a shortest one. (A single
/// breadth-first run stops once it has found one, but it reports the last
/// path it found before it noticed, which can be longer.) The report's
/// states and time are the last run's.
pub fn check_shortest(bounds: &Bounds, threads: Option<usize>) -> Report {
    let deepest = bounds.max_depth.unwrap_or(usize::MAX);
    let mut depth = 0;
    loop {
        let bounds = Bounds {
            max_depth: Some(depth),
            ..*bounds
        };
        let report = check(&bounds, threads);
        let broken = report
            .counterexamples
            .iter()
            .any(|(p, _)| *p != Property::EveryCommandAnswered);
        if broken || depth >= deepest {
            return report;
        }
        depth += 1;
    }
}

fn report(checker: impl Checker<LeaseModel>, prefix_steps: usize, start: Instant) -> Report {
    let elapsed = start.elapsed();
    let discoveries = checker.discoveries();
    let counterexamples = Property::ALL
        .iter()
        .filter_map(|p| {
            discoveries
                .get(p.name())
                .map(|path| (*p, path.clone().into_actions()))
        })
        .collect();
    Report {
        prefix_steps,
        states: checker.unique_state_count(),
        generated: checker.state_count(),
        max_depth: checker.max_depth(),
        elapsed,
        counterexamples,
    }
}
