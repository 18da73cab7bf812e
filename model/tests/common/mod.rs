//! What the model-checking tests share: running the checker and judging
//! what a sabotage breaks.
// Each test binary uses its own part of these.
#![allow(dead_code)]

use trexlock_model::{
    Bounds, LeaseModel, Property, Report, Sabotage, check, check_shortest, explain,
};

/// Checks `bounds` on two threads and prints what the search saw.
pub fn checked(bounds: Bounds) -> Report {
    let report = check(&bounds, Some(2));
    println!(
        "{:?} after {:?}: {} states ({} generated), depth {} (prefix {}), {:.1?}",
        bounds.sabotage,
        bounds.scenario,
        report.states,
        report.generated,
        report.max_depth,
        report.prefix_steps,
        report.elapsed
    );
    report
}

/// Panics with the path of the first counterexample `report` holds.
pub fn assert_none(bounds: Bounds, report: &Report) {
    if let Some((property, actions)) = report.counterexamples.first() {
        let model = LeaseModel::new(bounds);
        panic!(
            "\"{}\" broken:\n{}",
            property.name(),
            explain(&model, actions)
        );
    }
}

/// Runs `sabotage` and returns the shortest path that breaks a safety
/// property (liveness is not what a sabotage breaks), printed step by
/// step, and its length.
pub fn counterexample(sabotage: Sabotage, bounds: Bounds) -> (Property, usize) {
    let bounds = Bounds {
        sabotage: Some(sabotage),
        ..bounds
    };
    let report = checked(bounds);
    let found = report
        .counterexamples
        .iter()
        .find(|(p, _)| *p != Property::EveryCommandAnswered)
        .unwrap_or_else(|| panic!("{sabotage:?} broke no safety property within {bounds:?}"));
    println!(
        "shortest counterexample to \"{}\": {} steps ({} after the prefix)\n{}",
        found.0.name(),
        found.1.len(),
        found.1.len().saturating_sub(report.prefix_steps),
        explain(&LeaseModel::new(bounds), &found.1)
    );
    (found.0, found.1.len())
}

/// The sabotage breaks `property` within `bounds` (the shortest path that
/// does, found by deepening the search step by step, is printed), and the
/// same bounds without it keep every property: the property can fail, and
/// fails only for the broken rule.
pub fn caught_only_under(sabotage: Sabotage, bounds: Bounds, property: Property) {
    let sabotaged = Bounds {
        sabotage: Some(sabotage),
        ..bounds
    };
    let report = check_shortest(&sabotaged, Some(2));
    let found = report
        .counterexamples
        .iter()
        .find(|(p, _)| *p != Property::EveryCommandAnswered)
        .unwrap_or_else(|| panic!("{sabotage:?} broke no safety property within {bounds:?}"));
    let after = found.1.len().saturating_sub(report.prefix_steps);
    println!(
        "{sabotage:?}: shortest counterexample to \"{}\": {} steps ({after} after the prefix; that search: {} states, {:.1?})\n{}",
        found.0.name(),
        found.1.len(),
        report.states,
        report.elapsed,
        explain(&LeaseModel::new(sabotaged), &found.1)
    );
    let broken = found.0;
    assert_eq!(broken, property, "{sabotage:?} broke another property");
    // The whole bounds, sabotaged, as CI runs them, then without it.
    checked(sabotaged);
    let honest = Bounds {
        sabotage: None,
        ..bounds
    };
    assert_none(honest, &checked(honest));
}
