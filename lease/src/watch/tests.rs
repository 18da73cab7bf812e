//! The watch hub as a specification: what each watcher is owed.

use super::hub::{Deliveries, WatchHub};
use super::*;
use crate::command::Stamp;

fn granted(name: &str, stamp: u64) -> Event {
    Event::Granted {
        name: name.into(),
        stamp: Stamp(stamp),
        waited: false,
        owner: "o".into(),
    }
}

fn released(name: &str, stamp: u64) -> Event {
    Event::Released {
        name: name.into(),
        stamp: Stamp(stamp),
    }
}

fn at(slot: u64, event: u32) -> WatchPosition {
    WatchPosition { slot, event }
}

fn request(prefix: &str, after: Option<WatchPosition>) -> WatchRequest {
    WatchRequest {
        prefix: prefix.into(),
        after,
    }
}

/// The events delivered to `id`, with their positions.
fn events_of(out: &Deliveries, id: WatchId) -> Vec<(WatchPosition, String)> {
    out.iter()
        .filter(|(to, _)| *to == id)
        .flat_map(|(_, d)| match d {
            WatchDelivery::Events(events) => events.clone(),
            _ => Vec::new(),
        })
        .map(|e| (e.position, e.event.name().unwrap_or_default().to_owned()))
        .collect()
}

fn ended(out: &Deliveries, id: WatchId) -> Option<WatchError> {
    out.iter().find_map(|(to, d)| match d {
        WatchDelivery::Ended(e) if *to == id => Some(e.clone()),
        _ => None,
    })
}

#[test]
fn a_watcher_gets_every_event_under_its_prefix_in_log_order_with_its_position() {
    let mut hub = WatchHub::new(100, 10);
    let mut out = Vec::new();
    hub.watch(WatchId(1), request("jobs/", None), 0, &mut out);
    assert_eq!(
        out[0],
        (
            WatchId(1),
            WatchDelivery::Started {
                after: WatchPosition::after_slot(0)
            }
        )
    );
    let slot1 = [
        granted("jobs/a", 1),
        granted("other", 2),
        granted("jobs/b", 3),
    ];
    hub.record(1, slot1.iter(), false, &mut out);
    hub.record(2, [released("jobs/a", 1)].iter(), false, &mut out);
    assert_eq!(
        events_of(&out, WatchId(1)),
        [
            (at(1, 0), "jobs/a".to_owned()),
            (at(1, 2), "jobs/b".to_owned()),
            (at(2, 0), "jobs/a".to_owned())
        ]
    );
}

#[test]
fn a_resume_delivers_every_event_after_its_position_then_the_live_ones() {
    let mut hub = WatchHub::new(100, 10);
    let mut out = Vec::new();
    hub.record(
        1,
        [granted("a", 1), granted("b", 2)].iter(),
        false,
        &mut out,
    );
    hub.record(2, [released("a", 1)].iter(), false, &mut out);
    hub.watch(WatchId(7), request("", Some(at(1, 0))), 2, &mut out);
    hub.record(3, [granted("c", 3)].iter(), false, &mut out);
    assert_eq!(
        events_of(&out, WatchId(7)),
        [
            (at(1, 1), "b".to_owned()),
            (at(2, 0), "a".to_owned()),
            (at(3, 0), "c".to_owned())
        ]
    );
}

#[test]
fn a_resume_from_before_the_kept_history_is_refused_as_compacted() {
    let mut hub = WatchHub::new(2, 10);
    let mut out = Vec::new();
    for slot in 1..=3 {
        hub.record(slot, [granted("a", slot)].iter(), false, &mut out);
    }
    // Slot 1's event was evicted: a resume after slot 0 would skip it.
    hub.watch(
        WatchId(1),
        request("", Some(WatchPosition::after_slot(0))),
        3,
        &mut out,
    );
    assert_eq!(
        ended(&out, WatchId(1)),
        Some(WatchError::Compacted {
            requested: WatchPosition::after_slot(0),
            oldest: at(1, 0)
        })
    );
    // After slot 1 everything is still there.
    hub.watch(WatchId(2), request("", Some(at(1, 0))), 3, &mut out);
    assert_eq!(ended(&out, WatchId(2)), None);
    assert_eq!(events_of(&out, WatchId(2)).len(), 2);
}

#[test]
fn an_installed_snapshot_ends_the_watchers_owed_events_inside_it() {
    let mut hub = WatchHub::new(100, 10);
    let mut out = Vec::new();
    hub.watch(WatchId(1), request("", None), 4, &mut out);
    hub.watch(
        WatchId(2),
        request("", Some(WatchPosition::after_slot(20))),
        4,
        &mut out,
    );
    hub.installed(10, &mut out);
    assert_eq!(
        ended(&out, WatchId(1)),
        Some(WatchError::Compacted {
            requested: WatchPosition::after_slot(4),
            oldest: WatchPosition::after_slot(10)
        })
    );
    assert_eq!(
        ended(&out, WatchId(2)),
        None,
        "it wants only what comes later"
    );
    hub.record(21, [granted("a", 9)].iter(), false, &mut out);
    assert_eq!(events_of(&out, WatchId(2)), [(at(21, 0), "a".to_owned())]);
    assert_eq!(events_of(&out, WatchId(1)), []);
}

#[test]
fn a_lagging_watcher_is_cut_off_with_the_position_to_resume_from() {
    let mut hub = WatchHub::new(100, 10);
    let mut out = Vec::new();
    hub.watch(WatchId(1), request("", None), 0, &mut out);
    hub.record(1, [granted("a", 1)].iter(), false, &mut out);
    hub.record(2, [granted("b", 2)].iter(), false, &mut out);
    // The delivery of slot 2 did not fit: everything before it did.
    hub.lagged(WatchId(1), at(2, 0), &mut out);
    assert_eq!(
        ended(&out, WatchId(1)),
        Some(WatchError::Lagged {
            resume_from: WatchPosition::after_slot(1)
        })
    );
    let delivered = out.len();
    hub.record(3, [granted("c", 3)].iter(), false, &mut out);
    assert_eq!(
        out.len(),
        delivered,
        "nothing more goes to a cut-off watcher"
    );
}

#[test]
fn requests_out_of_bounds_are_refused_before_anything_is_registered() {
    let mut hub = WatchHub::new(100, 1);
    let mut out = Vec::new();
    let long = "x".repeat(MAX_WATCH_PREFIX_BYTES + 1);
    hub.watch(WatchId(1), request(&long, None), 0, &mut out);
    assert_eq!(ended(&out, WatchId(1)), Some(WatchError::PrefixTooLong));
    assert_eq!(hub.len(), 0);
    hub.watch(WatchId(2), request("", None), 0, &mut out);
    hub.watch(WatchId(3), request("", None), 0, &mut out);
    assert_eq!(ended(&out, WatchId(3)), Some(WatchError::TooManyWatchers));
    assert_eq!(hub.len(), 1);
}

#[test]
fn deliveries_are_split_to_fit_a_client_frame() {
    let mut hub = WatchHub::new(1000, 10);
    let mut out = Vec::new();
    hub.watch(WatchId(1), request("", None), 0, &mut out);
    let value = bytes::Bytes::from(vec![0u8; crate::table::MAX_VALUE_BYTES]);
    let writes: Vec<Event> = (0..10)
        .map(|i| Event::Written {
            name: format!("n{i}"),
            stamp: Stamp(1),
            value: value.clone(),
        })
        .chain((0..200).map(|i| granted(&format!("g{i}"), i)))
        .collect();
    hub.record(1, writes.iter(), false, &mut out);
    for (_, d) in &out {
        if let WatchDelivery::Events(events) = d {
            let bytes = postcard::to_stdvec(d).unwrap().len();
            assert!(events.len() <= MAX_BATCH_EVENTS);
            assert!(
                bytes < trexlock_transport::DEFAULT_MAX_CLIENT_FRAME_BYTES / 2,
                "{bytes}"
            );
        }
    }
    assert_eq!(events_of(&out, WatchId(1)).len(), 210);
}

#[test]
fn positions_read_as_slot_or_slot_dot_index() {
    assert_eq!("12".parse(), Ok(WatchPosition::after_slot(12)));
    assert_eq!("12.3".parse(), Ok(at(12, 3)));
    assert_eq!(WatchPosition::after_slot(12).to_string(), "12");
    assert_eq!(at(12, 3).to_string(), "12.3");
    assert!("12.x".parse::<WatchPosition>().is_err());
    assert!("".parse::<WatchPosition>().is_err());
}

#[test]
fn the_history_drops_its_oldest_events_beyond_its_bytes_of_values() {
    let mut hub = WatchHub::new(1_000_000, 10);
    let mut out = Vec::new();
    let value = bytes::Bytes::from(vec![0u8; crate::table::MAX_VALUE_BYTES]);
    let writes = MAX_HISTORY_VALUE_BYTES / crate::table::MAX_VALUE_BYTES + 1;
    for slot in 1..=writes as u64 {
        let write = Event::Written {
            name: "n".into(),
            stamp: Stamp(1),
            value: value.clone(),
        };
        hub.record(slot, [write].iter(), false, &mut out);
    }
    hub.watch(
        WatchId(1),
        request("", Some(WatchPosition::after_slot(0))),
        0,
        &mut out,
    );
    assert!(matches!(
        ended(&out, WatchId(1)),
        Some(WatchError::Compacted { .. })
    ));
    hub.watch(
        WatchId(2),
        request("", Some(WatchPosition::after_slot(2))),
        0,
        &mut out,
    );
    assert_eq!(ended(&out, WatchId(2)), None);
}
