//! `trexlock watch PREFIX [--from POSITION] [--json]`: one line per event.

use serde_json::{Value, json};
use std::io::Write;
use trexlock_lease::table::Event;
use trexlock_lease::{LeaseClient, WatchEvent, WatchPosition};

/// Prints every event on the leases whose names start with `prefix`, from
/// now or after `from`, until `count` events were printed (if given) or the
/// watch ends; the error that ends it names where to resume.
///
/// # Errors
/// The error that ended the watch, as text.
pub async fn run(
    client: &LeaseClient,
    prefix: &str,
    from: Option<WatchPosition>,
    json: bool,
    count: Option<u64>,
) -> Result<(), String> {
    let mut watch = match from {
        Some(from) => client.watch_from(prefix, from).await,
        None => client.watch(prefix).await,
    }
    .map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let mut printed = 0;
    while count.is_none_or(|c| printed < c) {
        let event = match watch.next().await {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(format!("{e} (last position seen: {})", watch.position())),
            None => return Ok(()),
        };
        let line = if json {
            as_json(&event).to_string()
        } else {
            as_text(&event)
        };
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
        out.flush().map_err(|e| e.to_string())?;
        printed += 1;
    }
    Ok(())
}

/// `POSITION KIND NAME key=value…`.
pub fn as_text(e: &WatchEvent) -> String {
    let p = e.position;
    match &e.event {
        Event::Granted {
            name,
            stamp,
            owner,
            waited,
        } => format!("{p} granted {name} owner={owner} stamp={stamp} waited={waited}"),
        Event::Renewed { name, stamp } => format!("{p} renewed {name} stamp={stamp}"),
        Event::Released { name, stamp } => format!("{p} released {name} stamp={stamp}"),
        Event::Expired { name, stamp } => format!("{p} expired {name} stamp={stamp}"),
        Event::Written { name, stamp, value } => {
            format!("{p} written {name} stamp={stamp} bytes={}", value.len())
        }
        Event::SessionEnded { session, expired } => {
            format!("{p} session-ended {session} expired={expired}")
        }
    }
}

/// One JSON object per event: position (as text, and slot and index), kind,
/// name, stamp and the kind's own fields (a written value as UTF-8 when it
/// is, else its length only).
pub fn as_json(e: &WatchEvent) -> Value {
    let (kind, name, stamp) = match &e.event {
        Event::Granted { name, stamp, .. } => ("granted", name, stamp),
        Event::Renewed { name, stamp } => ("renewed", name, stamp),
        Event::Released { name, stamp } => ("released", name, stamp),
        Event::Expired { name, stamp } => ("expired", name, stamp),
        Event::Written { name, stamp, .. } => ("written", name, stamp),
        Event::SessionEnded { session, expired } => {
            return json!({
                "position": e.position.to_string(),
                "slot": e.position.slot,
                "index": e.position.event,
                "kind": "session_ended",
                "session": session.0,
                "expired": expired,
            });
        }
    };
    let mut object = json!({
        "position": e.position.to_string(),
        "slot": e.position.slot,
        "index": e.position.event,
        "kind": kind,
        "name": name,
        "stamp": stamp.0,
    });
    match &e.event {
        Event::Granted { owner, waited, .. } => {
            object["owner"] = json!(owner);
            object["waited"] = json!(waited);
        }
        Event::Written { value, .. } => {
            object["bytes"] = json!(value.len());
            if let Ok(text) = std::str::from_utf8(value) {
                object["value"] = json!(text);
            }
        }
        _ => {}
    }
    object
}
