//! Simulated monotonic clocks with an offset and a rate error.

/// `local = offset + real · (1 + ppm / 10⁶)`, in nanoseconds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    pub(crate) offset: u64,
    pub(crate) ppm: i64,
}

impl Clock {
    /// Local time at real time `real`.
    pub(crate) fn local(self, real: u64) -> u64 {
        let skew = i128::from(real) * i128::from(self.ppm) / 1_000_000;
        let local = i128::from(self.offset) + i128::from(real) + skew;
        u64::try_from(local.max(0)).unwrap_or(u64::MAX)
    }

    /// The earliest real time at which local time reaches `local`.
    pub(crate) fn real_at(self, local: u64) -> u64 {
        let since = i128::from(local) - i128::from(self.offset);
        let real = since * 1_000_000 / (1_000_000 + i128::from(self.ppm));
        let mut real = u64::try_from(real.max(0)).unwrap_or(u64::MAX);
        while self.local(real) < local {
            real += 1;
        }
        real
    }
}

#[cfg(test)]
mod tests {
    use super::Clock;

    #[test]
    fn real_at_inverts_local_for_fast_and_slow_clocks() {
        for ppm in [-50_000, -1_000, 0, 999, 50_000] {
            let clock = Clock {
                offset: 12_345,
                ppm,
            };
            for local in [20_000u64, 1_000_000, 987_654_321] {
                let real = clock.real_at(local);
                assert!(clock.local(real) >= local);
                assert!(real == 0 || clock.local(real - 1) < local);
            }
        }
    }
}
