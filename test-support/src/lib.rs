//! What trexlock's tests and benches share to start real `trexlock`
//! nodes: loopback ports a node can still bind when it starts.
//!
//! ```
//! let port = trexlock_test_support::free_port().unwrap();
//! assert!((20_000..32_000).contains(&port));
//! assert_ne!(trexlock_test_support::free_port().unwrap(), port);
//! ```

#![deny(missing_docs)]

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::{Mutex, PoisonError};

/// The ports [`free_port`] picks from: below Linux's ephemeral range
/// (32768 and up by default).
pub const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A loopback port nobody listens on (as of now), in [`PORTS`], that no
/// other call in this process has returned.
///
/// Why not `bind(0)`: that port is an ephemeral one, and between the check
/// and the node's own bind (or while a node keeps its port across a
/// restart) any outgoing connection, a client's or a peer link's, of this
/// test or of one running beside it in another thread, may take it. Fails
/// only if a thousand random picks found every port taken.
pub fn free_port() -> std::io::Result<u16> {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(PoisonError::into_inner);
    for _ in 0..1000 {
        let port = fastrand::u16(PORTS);
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("no free port in {PORTS:?}"),
    ))
}

/// `127.0.0.1` on a [`free_port`]. Panics where that fails, as a test
/// would.
pub fn local_addr() -> SocketAddr {
    let port = free_port().unwrap_or_else(|e| panic!("{e}"));
    SocketAddr::from(([127, 0, 0, 1], port))
}
