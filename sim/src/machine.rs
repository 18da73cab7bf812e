//! The simulator's state machine: the sequence of values it applied, which
//! is exactly what the safety checks compare across nodes.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use trexlock_paxos::{Slot, Snapshot, Value};

/// Applied history of one node. `values[i]` is slot `i + 1`.
#[derive(Clone, Debug, Default)]
pub struct History {
    values: Vec<Value>,
}

const NOOP: u32 = u32::MAX;

impl History {
    /// The last applied slot.
    pub fn last_slot(&self) -> Slot {
        self.values.len() as Slot
    }

    /// The value applied at `slot`.
    pub fn get(&self, slot: Slot) -> Option<&Value> {
        usize::try_from(slot)
            .ok()?
            .checked_sub(1)
            .and_then(|i| self.values.get(i))
    }

    /// Applies the next slot's value.
    pub fn apply(&mut self, value: Value) {
        self.values.push(value);
    }

    /// Encodes the whole history as a snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut buf = BytesMut::new();
        for value in &self.values {
            match value {
                Value::Noop => buf.put_u32(NOOP),
                Value::Batch(cmds) => {
                    buf.put_u32(cmds.len() as u32);
                    for cmd in cmds {
                        buf.put_u32(cmd.len() as u32);
                        buf.put_slice(cmd);
                    }
                }
            }
        }
        Snapshot {
            slot: self.last_slot(),
            data: buf.freeze(),
        }
    }

    /// Decodes a snapshot made by [`History::snapshot`].
    pub fn from_snapshot(snapshot: &Snapshot) -> Result<History, String> {
        let mut data = snapshot.data.clone();
        let mut values = Vec::new();
        let take_u32 = |d: &mut Bytes| -> Result<u32, String> {
            if d.remaining() < 4 {
                return Err("snapshot truncated".into());
            }
            Ok(d.get_u32())
        };
        while data.has_remaining() {
            let n = take_u32(&mut data)?;
            if n == NOOP {
                values.push(Value::Noop);
                continue;
            }
            let mut cmds = Vec::with_capacity(n as usize);
            for _ in 0..n {
                let len = take_u32(&mut data)? as usize;
                if data.remaining() < len {
                    return Err("snapshot truncated".into());
                }
                cmds.push(data.split_to(len));
            }
            values.push(Value::Batch(cmds));
        }
        if values.len() as Slot != snapshot.slot {
            return Err(format!(
                "snapshot claims slot {} but holds {} values",
                snapshot.slot,
                values.len()
            ));
        }
        Ok(History { values })
    }

    /// Every (slot, value) applied, in order.
    pub fn iter(&self) -> impl Iterator<Item = (Slot, &Value)> {
        self.values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as Slot + 1, v))
    }
}

/// A node's snapshot: its applied history (for the checker) and its lease
/// table, side by side.
pub fn joint_snapshot(history: &History, table: &trexlock_lease::LeaseTable) -> Snapshot {
    let h = history.snapshot();
    let t = table.to_snapshot();
    let mut buf = BytesMut::with_capacity(8 + h.data.len() + t.len());
    buf.put_u64(h.data.len() as u64);
    buf.put_slice(&h.data);
    buf.put_slice(&t);
    Snapshot {
        slot: h.slot,
        data: buf.freeze(),
    }
}

/// Splits a snapshot made by [`joint_snapshot`].
pub fn split_snapshot(
    snapshot: &Snapshot,
) -> Result<(History, trexlock_lease::LeaseTable), String> {
    let mut data = snapshot.data.clone();
    if data.remaining() < 8 {
        return Err("snapshot truncated".into());
    }
    let len = usize::try_from(data.get_u64()).map_err(|e| e.to_string())?;
    if data.remaining() < len {
        return Err("snapshot truncated".into());
    }
    let history = History::from_snapshot(&Snapshot {
        slot: snapshot.slot,
        data: data.split_to(len),
    })?;
    let table = trexlock_lease::LeaseTable::from_snapshot(&data).map_err(|e| e.to_string())?;
    Ok((history, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_noops_and_batches() {
        let mut h = History::default();
        h.apply(Value::Noop);
        h.apply(Value::Batch(vec![Bytes::from_static(b"a"), Bytes::new()]));
        let back = History::from_snapshot(&h.snapshot()).unwrap();
        assert_eq!(back.values, h.values);
    }

    #[test]
    fn truncated_snapshot_is_refused() {
        let mut h = History::default();
        h.apply(Value::Batch(vec![Bytes::from_static(b"abc")]));
        let mut snap = h.snapshot();
        snap.data = snap.data.slice(..snap.data.len() - 1);
        assert!(History::from_snapshot(&snap).is_err());
    }
}
