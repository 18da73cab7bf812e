//! `trexlock list [PREFIX]`: the held leases, page by page.

use std::io::Write;
use trexlock_lease::LeaseClient;

/// Prints every held lease whose name starts with `prefix`, one line each
/// (`NAME owner=… stamp=… remaining_ms=… waiters=…`), reading `page`
/// leases per request so that memory stays bounded however many there are.
/// Each page is a linearizable read of its own.
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
            let h = &lease.holder;
            writeln!(
                out,
                "{} owner={} stamp={} remaining_ms={} waiters={}",
                lease.name, h.owner, h.stamp, h.remaining_ms, lease.waiters
            )
            .map_err(|e| e.to_string())?;
        }
        match listed.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}
