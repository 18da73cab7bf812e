//! How time is measured, and why it is safe.
//!
//! Three clocks are involved, none of them synchronised:
//!
//! - the **holder's** monotonic clock: it counts its lease from the moment
//!   it SENT the request, which is before the cluster granted it;
//! - the **leader's** monotonic clock: it stamps each command with the time
//!   elapsed since it took over;
//! - the **table's** time, which only advances by those stamps (see
//!   [`crate::table`]) and stands still across a change of leader.
//!
//! A lease granted with TTL `t` is regranted only when a command stamped at
//! least `t` after the grant (on leader clocks, never counting the gap
//! between leaders) is applied. If every clock's rate is within `ρ` of real
//! time, that is at least `t / (1 + ρ)` real time after the grant, and so
//! after the holder sent its request. The holder believes for `d` of its own
//! time, at most `d / (1 - ρ)` real time. Choosing
//! `d = t · (1 - ρ) / (1 + ρ)` makes the holder stop believing before anyone
//! else can be granted the lease: safety needs only the rate bound `ρ`
//! ([`DriftBound`]), not synchronised wall clocks. A process pause after the
//! holder checks its lease is not covered by any clock; that is what the
//! safety gap of `expire_time_with_safety_gap` is for: check with a gap at
//! least as long as the longest pause plus the work you do before checking
//! again.

use crate::table::LeaseTable;
use serde::{Deserialize, Serialize};
use trexlock_paxos::Ballot;

/// The largest rate error any node's monotonic clock may have, in parts per
/// million. Safety of every lease depends on it holding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftBound {
    ppm: u32,
}

impl DriftBound {
    /// The bound used when none is configured: 1000 ppm (0.1 %), ten times
    /// a typical quartz oscillator's error and twice NTP's maximum slew.
    pub const DEFAULT: DriftBound = DriftBound { ppm: 1_000 };

    /// A bound of `ppm` parts per million.
    ///
    /// # Errors
    /// Bounds of 10 % (100 000 ppm) or more are refused: leases would lose
    /// most of their length.
    pub fn from_ppm(ppm: u32) -> Result<DriftBound, String> {
        if ppm >= 100_000 {
            return Err(format!("drift bound {ppm} ppm is 10 % or more"));
        }
        Ok(DriftBound { ppm })
    }

    /// Parts per million.
    pub fn ppm(self) -> u32 {
        self.ppm
    }

    /// How long, on its own clock, a holder may believe a lease of
    /// `ttl_us` that it requested: `ttl · (1 - ρ) / (1 + ρ)`.
    pub fn holder_belief_us(self, ttl_us: u64) -> u64 {
        let ppm = u128::from(self.ppm);
        let num = u128::from(ttl_us) * (1_000_000 - ppm);
        u64::try_from(num / (1_000_000 + ppm)).unwrap_or(u64::MAX)
    }
}

impl Default for DriftBound {
    fn default() -> Self {
        DriftBound::DEFAULT
    }
}

/// The leader's side of table time: its epoch and the local moment it
/// took over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderClock {
    epoch: Ballot,
    takeover_us: u64,
}

impl LeaderClock {
    /// A leader elected in `epoch` that took over at local time
    /// `takeover_us` (its monotonic clock, in microseconds).
    pub fn new(epoch: Ballot, takeover_us: u64) -> LeaderClock {
        LeaderClock { epoch, takeover_us }
    }

    /// The epoch.
    pub fn epoch(&self) -> Ballot {
        self.epoch
    }

    /// The stamp for a command proposed at local time `now_us`.
    pub fn stamp(&self, now_us: u64) -> (Ballot, u64) {
        (self.epoch, now_us.saturating_sub(self.takeover_us))
    }

    /// The local time at which the table will have reached `table_us`
    /// (once a command stamped then is applied), provided the table has
    /// entered this leader's epoch.
    pub fn local_time_for(&self, table: &LeaseTable, table_us: u64) -> Option<u64> {
        if table.epoch() != self.epoch {
            return None;
        }
        let since_base = table_us.saturating_sub(table.epoch_base_us());
        Some(self.takeover_us.saturating_add(since_base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_holder_stops_believing_before_a_fast_leader_can_regrant(
            ttl_us in 1u64..10_000_000_000, ppm in 0u32..99_999,
        ) {
            let bound = DriftBound::from_ppm(ppm).unwrap();
            let rho = f64::from(ppm) / 1e6;
            // Worst case: holder clock slow by ρ, leader clock fast by ρ.
            let holder_real = bound.holder_belief_us(ttl_us) as f64 / (1.0 - rho);
            let regrant_real = ttl_us as f64 / (1.0 + rho);
            prop_assert!(holder_real <= regrant_real * (1.0 + 1e-12) + 1.0);
        }
    }

    #[test]
    fn drift_bounds_of_ten_percent_or_more_are_refused() {
        assert!(DriftBound::from_ppm(100_000).is_err());
        assert_eq!(DriftBound::from_ppm(0).unwrap().holder_belief_us(5), 5);
    }
}
