//! `trexlock list [PREFIX]`: the held names and all their holders, page
//! by page.

use std::io::Write;
use trexlock_lease::{LeaseClient, ListedHolder, ListedLease, Mode};

/// Prints every held name that starts with `prefix`, one line per holder
/// (`NAME owner=… stamp=… remaining_ms=… waiters=…`, then `mode=read`,
/// `mode=write` or `mode=permit/N` for a share and `session=ID` for a
/// lease bound to a lease session), reading `page` names per request so
/// that memory stays bounded however many there are. Each page is a
/// linearizable read of its own.
///
/// # Errors
/// The first failed read, as text.
pub async fn print(client: &LeaseClient, prefix: &str, page: u32) -> Result<(), String> {
    let mut after: Option<String> = None;
    let mut out = std::io::stdout().lock();
    loop {
        let listed = client
            .list_page(prefix, after.as_deref(), page)
            .await
            .map_err(|e| e.to_string())?;
        for lease in &listed.leases {
            for holder in &lease.holders {
                writeln!(out, "{}", line(lease, holder)).map_err(|e| e.to_string())?;
            }
        }
        match listed.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

fn line(lease: &ListedLease, h: &ListedHolder) -> String {
    let mut line = format!(
        "{} owner={} stamp={} remaining_ms={} waiters={}",
        lease.name, h.owner, h.stamp, h.remaining_ms, lease.waiters
    );
    match h.mode {
        Some(Mode::Permit { permits }) => line.push_str(&format!(" mode=permit/{permits}")),
        Some(Mode::Read) => line.push_str(" mode=read"),
        Some(Mode::Write) => line.push_str(" mode=write"),
        None => {}
    }
    if let Some(session) = h.session {
        line.push_str(&format!(" session={session}"));
    }
    line
}
