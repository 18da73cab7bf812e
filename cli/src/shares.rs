//! `trexlock acquire NAME --permits N | --read | --write`: a permit of a
//! semaphore or a share of a read-write lease instead of a lease.

use trexlock_lease::Mode;

/// The share the flags ask for, if any (clap keeps them exclusive).
pub fn mode(permits: Option<u32>, read: bool, write: bool) -> Option<Mode> {
    match (permits, read, write) {
        (Some(permits), _, _) => Some(Mode::Permit { permits }),
        (None, true, _) => Some(Mode::Read),
        (None, false, true) => Some(Mode::Write),
        (None, false, false) => None,
    }
}
