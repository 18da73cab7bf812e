//! What each simulated node applied: the sequence of chosen values since
//! its last snapshot install, which the safety checks compare across nodes.

use trexlock_paxos::{Slot, Value};

/// Applied history of one node: the values of slots `base + 1 ..` in
/// order. Slots up to `base` came in a snapshot and are not known here.
#[derive(Clone, Debug, Default)]
pub struct History {
    base: Slot,
    values: Vec<Value>,
}

impl History {
    /// The last applied slot.
    pub fn last_slot(&self) -> Slot {
        self.base + self.values.len() as Slot
    }

    /// Slots up to here were installed from a snapshot.
    pub fn base(&self) -> Slot {
        self.base
    }

    /// The value applied at `slot`, if this history saw it.
    pub fn get(&self, slot: Slot) -> Option<&Value> {
        let index = slot.checked_sub(self.base)?.checked_sub(1)?;
        self.values.get(usize::try_from(index).ok()?)
    }

    /// Applies the next slot's value.
    pub fn apply(&mut self, value: Value) {
        self.values.push(value);
    }

    /// A snapshot covering every slot up to `slot` replaced the state.
    pub fn install(&mut self, slot: Slot) {
        self.base = slot;
        self.values.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn slots_count_on_from_an_installed_snapshot() {
        let mut h = History::default();
        h.apply(Value::Noop);
        h.install(10);
        assert_eq!(h.last_slot(), 10);
        assert!(h.get(1).is_none() && h.get(10).is_none());
        h.apply(Value::Batch(vec![Bytes::from_static(b"a")]));
        assert_eq!(h.last_slot(), 11);
        assert_eq!(
            h.get(11),
            Some(&Value::Batch(vec![Bytes::from_static(b"a")]))
        );
    }
}
