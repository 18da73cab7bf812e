//! Steps, packets, journal writes and log values as people read them,
//! for the counterexamples the checker prints.

use crate::world::Packet;
use trexlock_lease::PeerMessage;
use trexlock_lease::command::Op;
use trexlock_paxos::{JournalWrite, Message};

pub(crate) fn describe_write(write: &JournalWrite) -> String {
    let mut parts = Vec::new();
    if let Some(p) = write.promised {
        parts.push(format!("promise {p}"));
    }
    let ballots: std::collections::BTreeSet<_> =
        write.entries.iter().map(|(_, e)| e.ballot).collect();
    match ballots.iter().next() {
        Some(ballot) if ballots.len() == 1 && write.entries.len() > 1 => {
            let entries: Vec<_> = write
                .entries
                .iter()
                .map(|(slot, e)| (*slot, e.value.clone()))
                .collect();
            parts.push(format!("votes in {ballot}: {}", describe_entries(&entries)));
        }
        _ => {
            for (slot, entry) in &write.entries {
                parts.push(format!(
                    "vote slot {slot} in {}: {}",
                    entry.ballot,
                    describe_value(&entry.value)
                ));
            }
        }
    }
    if let Some(committed) = write.committed {
        parts.push(format!("committed {committed}"));
    }
    if let Some(s) = &write.snapshot {
        parts.push(format!("snapshot at {}", s.slot));
    }
    parts.join(", ")
}

pub(crate) fn describe_value(value: &trexlock_paxos::Value) -> String {
    use trexlock_lease::command::{Body, Command};
    if let trexlock_paxos::Value::Reconfig(m) = value {
        let ids = |set: &std::collections::BTreeSet<trexlock_paxos::NodeId>| {
            set.iter()
                .map(|n| n.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        return format!(
            "membership voters {{{}}} learners {{{}}}",
            ids(&m.voters),
            ids(&m.learners)
        );
    }
    let commands: Vec<String> = value
        .commands()
        .iter()
        .map(|bytes| match Command::decode(bytes) {
            Ok(Command {
                body: Body::Request(r),
                ..
            }) => {
                format!("s{}#{} {}", r.client.0, r.request, describe_op(&r.op))
            }
            Ok(Command {
                body, elapsed_us, ..
            }) => format!("{body:?}@{}ms", elapsed_us / 1000),
            Err(_) => "undecodable".into(),
        })
        .collect();
    if commands.is_empty() {
        "noop".into()
    } else {
        commands.join("; ")
    }
}

fn describe_op(op: &Op) -> String {
    match op {
        Op::Acquire { name, .. } => format!("acquire {name}"),
        Op::Renew { name, stamp, .. } => format!("renew {name} {stamp}"),
        Op::Release { name, stamp, .. } => format!("release {name} {stamp}"),
        Op::AcquireShare { name, mode, .. } => format!("acquire {mode:?} of {name}"),
        Op::SetLockDelay {
            name,
            stamp,
            lock_delay_ms,
            ..
        } => format!("set a lock-delay of {lock_delay_ms} ms on {name} {stamp}"),
        Op::OpenSession { ttl_ms, .. } => format!("open a session of {ttl_ms} ms"),
        Op::AcquireInSession { name, session, .. } => {
            format!("acquire {name} in session {session}")
        }
        other => format!("{other:?}"),
    }
}

/// Slots and values, a run of no-ops (a leader filling the slots before
/// a membership change takes effect) as one range.
fn describe_entries(entries: &[(trexlock_paxos::Slot, trexlock_paxos::Value)]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut noops: Option<(u64, u64)> = None;
    let flush = |parts: &mut Vec<String>, noops: &mut Option<(u64, u64)>| match noops.take() {
        Some((a, b)) if a == b => parts.push(format!("{a}=noop")),
        Some((a, b)) => parts.push(format!("{a}..={b}=noop")),
        None => {}
    };
    for (slot, value) in entries {
        if matches!(value, trexlock_paxos::Value::Noop) {
            noops = Some(noops.map_or((*slot, *slot), |(a, _)| (a, *slot)));
            continue;
        }
        flush(&mut parts, &mut noops);
        parts.push(format!("{slot}={}", describe_value(value)));
    }
    flush(&mut parts, &mut noops);
    parts.join(", ")
}

pub(crate) fn describe_peer(message: &PeerMessage) -> String {
    match message {
        PeerMessage::Forward(requests) => {
            let ids: Vec<String> = requests
                .iter()
                .map(|r| format!("s{}#{}", r.client.0, r.request))
                .collect();
            format!("Forward[{}]", ids.join(","))
        }
        PeerMessage::Paxos(m) => describe_message(m),
    }
}

fn describe_message(message: &Message) -> String {
    match message {
        Message::Accept {
            ballot,
            committed,
            entries,
        } => {
            format!(
                "Accept {ballot} committed {committed} [{}]",
                describe_entries(entries)
            )
        }
        Message::Promise {
            ballot,
            committed,
            entries,
            ..
        } => {
            let slots: Vec<String> = entries
                .iter()
                .map(|(s, e)| format!("{s}@{}", e.ballot))
                .collect();
            format!(
                "Promise {ballot} committed {committed} votes [{}]",
                slots.join(", ")
            )
        }
        Message::Accepted {
            ballot,
            slots,
            committed,
        } => match (slots.first(), slots.last()) {
            (Some(first), Some(last)) if slots.len() > 2 => {
                format!("Accepted {ballot} slots {first}..={last} committed {committed}")
            }
            _ => format!("Accepted {ballot} slots {slots:?} committed {committed}"),
        },
        Message::CatchupResponse { entries } => {
            let first = entries.first().map_or(0, |(s, _)| *s);
            format!("CatchupResponse {} values from {first}", entries.len())
        }
        other => format!("{other:?}"),
    }
}

pub(crate) fn describe_packet(packet: &Packet) -> String {
    match packet {
        Packet::Peer { from, to, message } => {
            format!("n{} -> n{}: {}", from + 1, to + 1, describe_peer(message))
        }
        Packet::Request { node, request } => format!(
            "s{} -> n{}: #{} {}",
            request.client.0,
            node + 1,
            request.request,
            describe_op(&request.op)
        ),
        Packet::Answer {
            node,
            client,
            request,
            outcome,
        } => {
            format!("n{} -> client {client}: #{request} {outcome:?}", node + 1)
        }
    }
}
