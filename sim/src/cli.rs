//! The `simulate` command line: runs a range of seeds and reports every
//! violation with its seed.

use crate::{Outcome, Sabotage, SimOptions, parse_sabotage, simulate_many};
use clap::Parser;
use clap::builder::RangedU64ValueParser;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

const SABOTAGES: &str = "\
Sabotage names (core): promise-not-persisted, accept-lower-ballot, minority-quorum,
  forget-votes-in-promise, count-partial-promise, commit-ignores-ballot,
  vote-after-disk-loss, unchecked-snapshot-chunks, reuse-own-ballot,
  old-config-quorum, concurrent-changes (these two with --reconfig)
Sabotage names (runtime and client): early-accepted, leader-unsynced-vote,
  deadline-from-reply, no-takeover-extension, list-from-local-table,
  lock-delay-dropped, semaphore-off-by-one, reader-slips-past-writer,
  session-lease-from-acquire, watch-skips-event";

/// Runs the deterministic simulator over a range of seeds.
#[derive(Parser)]
#[command(name = "simulate", after_help = SABOTAGES)]
struct Args {
    /// How many seeds to run.
    #[arg(long)]
    seeds: u64,
    /// The first seed.
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Nodes in the cluster (1 to 9).
    #[arg(long, default_value_t = SimOptions::default().nodes,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=9))]
    nodes: usize,
    /// Run with this rule deliberately broken (names below).
    #[arg(long, value_parser = sabotage)]
    sabotage: Option<Sabotage>,
    /// Largest clock rate error of nodes and clients, in parts per million
    /// (the configured bound; above it leases may break).
    #[arg(long, default_value_t = SimOptions::default().max_drift_ppm,
          value_parser = clap::value_parser!(i64).range(0..100_000))]
    drift_ppm: i64,
    /// Gap holders keep before their deadline, in milliseconds.
    #[arg(long, default_value_t = millis(SimOptions::default().safety_gap))]
    safety_gap_ms: u64,
    /// Longest pause right after a holder's check, in milliseconds.
    #[arg(long, default_value_t = millis(SimOptions::default().max_check_pause))]
    check_pause_ms: u64,
    /// Change the membership during runs (grow, shrink, replace, remove the
    /// leader).
    #[arg(long)]
    reconfig: bool,
    /// Print each seed's counts.
    #[arg(long)]
    verbose: bool,
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn sabotage(name: &str) -> Result<Sabotage, String> {
    parse_sabotage(name).ok_or_else(|| format!("unknown sabotage {name}"))
}

/// The `simulate` command line (`args` without the program's name).
/// Prints each violation with its seed and a last line `simulated N seeds:
/// V violations`; exits non-zero on any, and with 2 on a bad argument.
pub fn main_with_args(args: impl IntoIterator<Item = String>) -> ExitCode {
    let args = match Args::try_parse_from(std::iter::once("simulate".to_owned()).chain(args)) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let opts = SimOptions {
        nodes: args.nodes,
        sabotage: args.sabotage,
        max_drift_ppm: args.drift_ppm,
        safety_gap: Duration::from_millis(args.safety_gap_ms),
        max_check_pause: Duration::from_millis(args.check_pause_ms),
        reconfig: args.reconfig,
        ..SimOptions::default()
    };
    let outcomes = simulate_many(args.first, args.seeds, opts);
    let violations = report(&outcomes, args.verbose);
    if violations == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Prints every violation (and with `verbose` each seed's counts), then
/// the totals; returns how many violations there were.
fn report(outcomes: &[(u64, Outcome)], verbose: bool) -> usize {
    let mut out = std::io::stdout().lock();
    let mut violations = 0usize;
    for (seed, outcome) in outcomes {
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
    let _ = writeln!(
        out,
        "simulated {} seeds: {violations} violations",
        outcomes.len()
    );
    violations
}
