//! Counterexamples as people read them: per step, the node or client that
//! acted, the input it got, and every effect its core produced.

use crate::model::{Action, LeaseModel};
use crate::world::{State, describe_packet, local};
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
    let startup = actions
        .iter()
        .take_while(|a| **a == Action::Startup)
        .count();
    let mut skip = 0;
    if startup < actions.len() {
        for _ in 0..startup {
            if let Some(next) = model.next_state(&state, Action::Startup) {
                state = next;
            }
        }
        skip = startup;
        let _ = writeln!(
            out,
            "{:>3}. t={} fault-free startup done in {startup} steps: {state:?}",
            startup, state.now
        );
    }
    for (n, action) in actions.iter().enumerate().skip(skip) {
        let what = describe_action(&state, action);
        let Some(next) = model.next_state(&state, action.clone()) else {
            let _ = writeln!(out, "{:>3}. {what}: not possible", n + 1);
            break;
        };
        state = next;
        let _ = writeln!(out, "{:>3}. t={} {what}", n + 1, state.now);
        for note in &state.notes {
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
        Action::Startup => {
            if let Some(i) = state.nodes.iter().position(|n| n.writing.is_some()) {
                describe_action(state, &Action::Sync(i))
            } else if !state.network.is_empty() {
                describe_action(state, &Action::Deliver(0))
            } else {
                "time advances one step and every node ticks (or the startup ends)".into()
            }
        }
    }
}
