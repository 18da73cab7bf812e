//! Interned strings: every holder and waiter with the same owner shares one
//! allocation of its name, so a million leases held by ten thousand owners
//! keep ten thousand owner strings, not a million.

use std::collections::HashSet;
use std::sync::Arc;

/// A shared, immutable string (an owner or a lease name).
pub(super) type Shared = Arc<str>;

/// The owner strings in use. A cache, not state: which strings it still
/// holds after their last user is gone is not observable, so two tables
/// compare equal whatever their interners hold.
#[derive(Clone, Debug, Default)]
pub(super) struct Owners {
    set: HashSet<Shared>,
    /// Entries in use at the last sweep; the next sweep comes once the set
    /// has doubled since, so sweeping costs O(1) per interned owner and the
    /// set never holds more than about twice the owners in use.
    live_at_sweep: usize,
}

/// Owners beyond which the interner starts sweeping out unused entries.
const SWEEP_FLOOR: usize = 1024;

impl Owners {
    /// The shared copy of `owner`, made if none is in use.
    pub(super) fn intern(&mut self, owner: &str) -> Shared {
        if let Some(shared) = self.set.get(owner) {
            return shared.clone();
        }
        if self.set.len() >= SWEEP_FLOOR.max(2 * self.live_at_sweep) {
            // An entry only the interner holds is used by no holder or
            // waiter any more.
            self.set.retain(|s| Arc::strong_count(s) > 1);
            self.live_at_sweep = self.set.len();
        }
        let shared: Shared = Arc::from(owner);
        self.set.insert(shared.clone());
        shared
    }
}

impl PartialEq for Owners {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Owners {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_is_stored_once_however_many_leases_it_holds() {
        let mut owners = Owners::default();
        let a = owners.intern("worker-7");
        let b = owners.intern("worker-7");
        assert!(Arc::ptr_eq(&a, &b));
    }

    #[test]
    fn owners_nobody_uses_any_more_are_swept_out() {
        let mut owners = Owners::default();
        for i in 0..100_000 {
            let _ = owners.intern(&format!("owner-{i}"));
        }
        assert!(owners.set.len() <= 2 * SWEEP_FLOOR, "{}", owners.set.len());
    }
}
