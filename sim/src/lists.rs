//! Lists of held leases, checked for linearizability against what clients
//! were told: once a grant of stamp S on a name is acknowledged to its
//! client, a list sent afterwards (in real time) is ordered after that
//! grant in the log, so it may show the name free (expired, released) or
//! held with stamp S or higher, but never held with a lower stamp (a name
//! is one kind at a time and stamps only grow, so this holds for every
//! holder of a semaphore or read-write lease listed under a name that was
//! a plain lease's when the grant was acknowledged). Shared
//! by the simulator and the model checker (`trexlock-model`).

use std::collections::BTreeMap;
use trexlock_lease::{ClientId, ListedLease, Stamp};

/// What clients were told, and what each list in flight must respect.
#[derive(Clone, Debug, Default)]
pub struct ListChecker {
    /// Per name, the highest stamp a client has received a grant of.
    acknowledged: BTreeMap<String, Stamp>,
    /// Per list request in flight, `acknowledged` as of its first send.
    floors: BTreeMap<(ClientId, u64), BTreeMap<String, Stamp>>,
    /// Lists answered.
    pub(crate) answered: u64,
}

impl ListChecker {
    /// A client received a grant of `stamp` on `name`.
    pub fn on_granted(&mut self, name: &str, stamp: Stamp) {
        let highest = self.acknowledged.entry(name.to_owned()).or_default();
        *highest = (*highest).max(stamp);
    }

    /// A client sent list request `request` for the first time.
    pub fn on_sent(&mut self, client: ClientId, request: u64) {
        self.floors
            .insert((client, request), self.acknowledged.clone());
    }

    /// The list request was answered with `leases`: the violations found
    /// (a name listed with a stamp below one acknowledged before the list
    /// was sent).
    pub fn on_listed(
        &mut self,
        client: ClientId,
        request: u64,
        leases: &[ListedLease],
    ) -> Vec<String> {
        let Some(floor) = self.floors.remove(&(client, request)) else {
            return Vec::new();
        };
        self.answered += 1;
        leases
            .iter()
            .flat_map(|l| l.holders.iter().map(move |h| (&l.name, h.stamp)))
            .filter_map(|(name, stamp)| {
                let acked = floor.get(name)?;
                (stamp < *acked).then(|| {
                    format!(
                        "session {} listed {name} held with stamp {stamp} after a grant of stamp {acked} was acknowledged",
                        client.0
                    )
                })
            })
            .collect()
    }
}
