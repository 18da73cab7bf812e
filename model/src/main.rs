//! `trexlock-model`: checks the shipped cores exhaustively within the
//! bounds given, and prints the states explored, the time taken and any
//! counterexample step by step.

use clap::Parser;
use std::process::ExitCode;
use trexlock_model::{
    Bounds, LeaseModel, Property, Scenario, check, check_shortest, explain, parse_sabotage,
};

/// Command-line bounds; every default is the CI run's.
#[derive(Parser, Debug)]
#[command(about = "Model-check the trexlock cores (stateright, breadth-first)")]
struct Args {
    /// Cluster size.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Lease clients.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Operations the clients start in all.
    #[arg(long, default_value_t = 2)]
    commands: usize,
    /// Crashes (each followed by a restart).
    #[arg(long, default_value_t = 1)]
    crashes: usize,
    /// Crashes that also lose the disk.
    #[arg(long, default_value_t = 0)]
    disk_losses: usize,
    /// Messages the network may lose.
    #[arg(long, default_value_t = 0)]
    drops: usize,
    /// Messages the network may duplicate.
    #[arg(long, default_value_t = 0)]
    duplicates: usize,
    /// Requests clients may resend to another node during the faults.
    #[arg(long, default_value_t = 1)]
    resends: usize,
    /// Steps of real time (100 ms each) after the first leader took over.
    #[arg(long, default_value_t = 4)]
    time: u32,
    /// Of those, steps with faults and unbounded message delays.
    #[arg(long, default_value_t = 2)]
    fault_time: u32,
    /// Most steps in one path after the prefix (0: no limit).
    #[arg(long, default_value_t = 6)]
    depth: usize,
    /// Checker threads (default: every core).
    #[arg(long)]
    threads: Option<usize>,
    /// Search depth-first (the first counterexample is not the shortest).
    #[arg(long)]
    dfs: bool,
    /// Deepen the search one step at a time up to --depth, stopping at the
    /// first depth with a counterexample: a shortest one.
    #[arg(long)]
    shortest: bool,
    /// A sabotage switch of the simulator, e.g. minority-quorum.
    #[arg(long)]
    sabotage: Option<String>,
    /// A scenario preset the search starts after, e.g.
    /// leader-cut-off-mid-proposal.
    #[arg(long)]
    scenario: Option<String>,
    /// Print the prefix (the startup and the scenario's stages) step by
    /// step, and stop.
    #[arg(long)]
    show_prefix: bool,
    /// The TTL clients ask for, in milliseconds (a time step is 100 ms).
    #[arg(long, default_value_t = 300)]
    ttl_ms: u64,
    /// Bytes of commands one slot holds (default: the library's); a
    /// message then holds one full slot.
    #[arg(long)]
    slot_bytes: Option<usize>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let sabotage = match args
        .sabotage
        .as_deref()
        .map(|name| (name, parse_sabotage(name)))
    {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((name, None)) => {
            eprintln!("trexlock-model: unknown sabotage {name}");
            return ExitCode::from(2);
        }
    };
    let scenario = match args
        .scenario
        .as_deref()
        .map(|name| (name, Scenario::parse(name)))
    {
        None => None,
        Some((_, Some(s))) => Some(s),
        Some((name, None)) => {
            let known: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
            eprintln!(
                "trexlock-model: unknown scenario {name} (known: {})",
                known.join(", ")
            );
            return ExitCode::from(2);
        }
    };
    let bounds = Bounds {
        nodes: args.nodes,
        clients: args.clients,
        commands: args.commands,
        crashes: args.crashes,
        disk_losses: args.disk_losses.min(args.crashes),
        drops: args.drops,
        duplicates: args.duplicates,
        resends: args.resends,
        time_steps: args.time,
        fault_steps: args.fault_time.min(args.time),
        sabotage,
        max_depth: (args.depth > 0).then_some(args.depth),
        depth_first: args.dfs,
        scenario,
        ttl_ms: args.ttl_ms,
        slot_bytes: args.slot_bytes,
    };
    println!("checking {bounds:?}");
    if args.show_prefix {
        let model = LeaseModel::new(bounds);
        let prefix = vec![trexlock_model::Action::Prefix; model.prefix_steps];
        print!("{}", explain(&model, &prefix));
        return ExitCode::SUCCESS;
    }
    let report = if args.shortest {
        check_shortest(&bounds, args.threads)
    } else {
        check(&bounds, args.threads)
    };
    println!(
        "states explored: {} unique ({} generated), max depth {} (prefix {}), time {:.1?}",
        report.states, report.generated, report.max_depth, report.prefix_steps, report.elapsed
    );
    if report.counterexamples.is_empty() {
        println!("0 counterexamples");
        return ExitCode::SUCCESS;
    }
    let model = LeaseModel::new(bounds);
    let safety_broken = report
        .counterexamples
        .iter()
        .any(|(p, _)| *p != Property::EveryCommandAnswered);
    for (property, actions) in &report.counterexamples {
        if safety_broken && *property == Property::EveryCommandAnswered {
            // A path that ends in a broken safety property ends there, and
            // so is reported as unfinished too.
            println!(
                "(\"{}\" also reported, on a path of {} steps)",
                property.name(),
                actions.len()
            );
            continue;
        }
        println!(
            "counterexample to \"{}\" in {} steps:",
            property.name(),
            actions.len()
        );
        print!("{}", explain(&model, actions));
    }
    ExitCode::FAILURE
}
