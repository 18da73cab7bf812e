//! Counterexamples as people read them: per step, the node or client that
//! acted, the input it got, and every effect its core produced.

use crate::describe::describe_packet;
use crate::model::{Action, LeaseModel};
use crate::stages::Stage;
use crate::world::{State, local};
use stateright::Model;
use std::fmt::Write as _;

/// Replays `actions` from the model's initial state and describes each
/// step: who acted, on what input, and what the cores did in answer.
pub fn explain(model: &LeaseModel, actions: &[Action]) -> String {
    let model = model.clone().traced();
    let mut state = model.init_states().remove(0);
    let mut out = String::new();
    let _ = writeln!(out, "start: {state:?}");
    // The startup is deterministic and fault-free: shown step by step only
    // when the counterexample ends inside it.
    let (startup, started) = startup(&model, &state, actions);
    let mut skip = 0;
    if startup < actions.len() {
        state = started;
        state.notes.clear();
        skip = startup;
        let _ = writeln!(
            out,
            "{startup:>3}. t={} fault-free startup done: {state:?}",
            state.now
        );
    }
    let mut stage = None;
    for (n, action) in actions.iter().enumerate().skip(skip) {
        let Some(next) = model.next_state(&state, action.clone()) else {
            let what = describe_action(&state, action);
            let _ = writeln!(out, "{:>3}. {what}: not possible", n + 1);
            break;
        };
        let what = if *action == Action::Prefix {
            // The stage that performed the event: the one running after
            // it, or the last one if the event ended the prefix.
            let index = next.prefix.unwrap_or(model.stages.len() - 1);
            if stage != Some(index) {
                stage = Some(index);
                let _ = writeln!(out, "     [prefix: {}]", model.stages[index].describe());
            }
            if next.prefix.is_none() {
                "the prefix is over".into()
            } else {
                describe_prefix_event(&state, model.stages[index])
            }
        } else {
            if stage.take().is_some() {
                let _ = writeln!(out, "     [exhaustive search from here]");
            }
            describe_action(&state, action)
        };
        state = next;
        let _ = writeln!(out, "{:>3}. t={} {what}", n + 1, state.now);
        for note in collapse_noops(&state.notes) {
            let _ = writeln!(out, "     {note}");
        }
    }
    for (property, what) in state.ghost.violations() {
        let _ = writeln!(out, "broken: {}: {what}", property.name());
    }
    let believers = state.believers();
    if believers.len() > 1 {
        let _ = writeln!(
            out,
            "broken: clients {believers:?} all believe they hold the lease at t={}",
            state.now
        );
    }
    out
}

/// The notes of one step, a node's run of applied no-ops (slots a leader
/// filled before a membership change takes effect) as one line.
fn collapse_noops(notes: &[String]) -> Vec<String> {
    let noop = |note: &str| -> Option<(String, u64)> {
        let (who, rest) = note.split_once(" applies slot ")?;
        let slot = rest.strip_suffix(": noop")?.parse().ok()?;
        Some((who.to_owned(), slot))
    };
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(String, u64, u64)> = None;
    let end = |out: &mut Vec<String>, run: &mut Option<(String, u64, u64)>| {
        if let Some((who, first, last)) = run.take() {
            out.push(if first == last {
                format!("{who} applies slot {first}: noop")
            } else {
                format!("{who} applies slots {first} to {last}: noops")
            });
        }
    };
    for note in notes {
        match (noop(note), run.as_mut()) {
            (Some((who, slot)), Some((w, _, last))) if *w == who && slot == *last + 1 => {
                *last = slot;
            }
            (Some((who, slot)), _) => {
                end(&mut out, &mut run);
                run = Some((who, slot, slot));
            }
            (None, _) => {
                end(&mut out, &mut run);
                out.push(note.clone());
            }
        }
    }
    end(&mut out, &mut run);
    out
}

/// How many of `actions` the startup takes, and the state it ends in.
fn startup(model: &LeaseModel, init: &State, actions: &[Action]) -> (usize, State) {
    let mut steps = 0;
    let mut state = init.clone();
    while actions.get(steps) == Some(&Action::Prefix) {
        let mut next = state.clone();
        model.prefix_step(&mut next);
        if next.prefix != Some(0) {
            break;
        }
        state = next;
        steps += 1;
    }
    (steps, state)
}

fn describe_action(state: &State, action: &Action) -> String {
    let node = |i: &usize| state.nodes[*i].id;
    match action {
        Action::Deliver(i) => format!("deliver {}", describe_packet(&state.network[*i].1)),
        Action::Drop(i) => format!("lose {}", describe_packet(&state.network[*i].1)),
        Action::Duplicate(i) => format!("duplicate {}", describe_packet(&state.network[*i].1)),
        Action::Sync(i) => {
            let id = state.nodes[*i].writing.as_ref().map_or(0, |(id, _)| *id);
            format!("{}'s journal write {id} is durable", node(i))
        }
        Action::Tick(i) => format!(
            "{} ticks (local {:?})",
            node(i),
            local(*i, false, state.now)
        ),
        Action::Crash {
            node: i,
            write_survives,
            disk_lost,
        } => format!(
            "{} crashes{}{} and restarts from its journal",
            node(i),
            if *write_survives {
                " (its write in flight reached the disk)"
            } else {
                ""
            },
            if *disk_lost {
                " and loses its disk"
            } else {
                ""
            }
        ),
        Action::ClientStart(c) => format!("client {c} starts its next operation"),
        Action::ClientResend(c) => format!("client {c} resends its request to another node"),
        Action::Advance => "time advances one step".into(),
        Action::Prefix => "the next event of the prefix".into(),
    }
}

/// What one event of a prefix stage does, seen from the state before it.
fn describe_prefix_event(state: &State, stage: Stage) -> String {
    match stage {
        Stage::Request(..)
        | Stage::List(..)
        | Stage::Cut(_)
        | Stage::Crash(_)
        | Stage::Watch(_)
        | Stage::AddLearner(_)
        | Stage::Remove(_)
        | Stage::Restart(_) => stage.describe(),
        Stage::Pass if state.nodes.iter().all(|n| n.ticked >= state.now) => {
            describe_action(state, &Action::Advance)
        }
        Stage::Elect
        | Stage::Settle
        | Stage::UntilElection
        | Stage::Pass
        | Stage::SettleUntilChanged => {
            if let Some(i) = state.nodes.iter().position(|n| n.writing.is_some()) {
                describe_action(state, &Action::Sync(i))
            } else if let Some(i) = state
                .network
                .iter()
                .position(|(_, p)| !state.crosses_cut(p))
            {
                describe_action(state, &Action::Deliver(i))
            } else if stage == Stage::Elect {
                "time advances one step and every node ticks".into()
            } else if state.nodes.iter().all(|n| n.ticked >= state.now) {
                describe_action(state, &Action::Advance)
            } else {
                "every node ticks".into()
            }
        }
    }
}
