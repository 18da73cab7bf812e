//! Snapshot transfer in chunks. A snapshot can be far larger than one
//! message may be (a million leases make a table of tens of megabytes), so
//! a replica that must install one fetches it piece by piece, each piece
//! within [`crate::Config::max_message_bytes`].
//!
//! The receiver assembles one snapshot at a time, identified by its slot,
//! its length and its checksum as the first chunk announced them, and takes
//! a chunk only when it answers the request outstanding to its sender and
//! continues exactly where the bytes held end. It never reserves more than
//! the bytes that arrived, refuses a snapshot announced larger than
//! [`crate::Config::max_snapshot_bytes`], and installs the whole only when
//! its length and CRC-32 match what was announced. The sender keeps no
//! state per receiver: each request names the snapshot and the offset it
//! wants, and a sender whose snapshot has moved on answers with the first
//! chunk of its newer one, which starts a new assembly.

use super::{Refusal, Replica, Role};
use crate::message::Message;
use crate::types::{NodeId, Slot, Snapshot};
use bytes::Bytes;
use std::time::Duration;

/// One chunk as received.
pub(super) struct Chunk {
    pub(super) slot: Slot,
    pub(super) total_len: u64,
    pub(super) checksum: u32,
    pub(super) offset: u64,
    pub(super) data: Bytes,
}

/// A snapshot being received: the bytes so far, in order.
#[derive(Clone, Debug)]
pub(super) struct Assembly {
    slot: Slot,
    total_len: u64,
    checksum: u32,
    data: Vec<u8>,
}

impl Assembly {
    fn held(&self) -> u64 {
        self.data.len() as u64
    }

    fn continues(&self, chunk: &Chunk) -> bool {
        (self.slot, self.total_len, self.checksum) == (chunk.slot, chunk.total_len, chunk.checksum)
    }
}

impl Replica {
    /// The request for the rest of the snapshot being assembled, if one is
    /// and it is still worth installing; a stale assembly is dropped.
    pub(super) fn continue_assembly(&mut self) -> Option<Message> {
        match &self.catchup.assembly {
            Some(a) if a.slot > self.committed => Some(Message::SnapshotRequest {
                slot: a.slot,
                offset: a.held(),
            }),
            _ => {
                self.catchup.assembly = None;
                None
            }
        }
    }

    /// A peer assembling our snapshot asks for its bytes from `offset` on.
    /// When our snapshot is no longer the one it assembles, it gets the
    /// first chunk of ours.
    pub(super) fn on_snapshot_request(&mut self, peer: NodeId, slot: Slot, offset: u64) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let same = snapshot.slot == slot && offset < snapshot.data.len() as u64;
        self.send_snapshot_chunk(peer, if same { offset } else { 0 });
    }

    /// Sends `peer` the chunk of our snapshot that starts at `offset`.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId, offset: u64) {
        let Some(snapshot) = &self.snapshot else {
            return;
        };
        let (slot, data) = (snapshot.slot, snapshot.data.clone());
        let checksum = match self.snapshot_checksum {
            Some((s, crc)) if s == slot => crc,
            _ => {
                let crc = crc32fast::hash(&data);
                self.snapshot_checksum = Some((slot, crc));
                crc
            }
        };
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let end = start.saturating_add(self.cfg.chunk_bytes()).min(data.len());
        self.send(
            peer,
            Message::SnapshotChunk {
                slot,
                total_len: data.len() as u64,
                checksum,
                offset: start as u64,
                data: data.slice(start..end),
            },
        );
    }

    /// Takes a chunk that answers our outstanding request: appends it,
    /// asks for the next one, and installs the snapshot once it is whole
    /// and matches its checksum.
    pub(super) fn on_snapshot_chunk(&mut self, now: Duration, peer: NodeId, chunk: Chunk) {
        if matches!(self.role, Role::Leader(_)) {
            return;
        }
        if let Err(refusal) = self.check_chunk(peer, &chunk) {
            self.refuse(refusal);
            return;
        }
        if chunk.slot <= self.committed {
            // We got there another way; nothing to install.
            self.catchup.assembly = None;
            return;
        }
        // A candidate this far behind cannot lead (as in catch-up).
        self.step_down(now);
        if chunk.offset == 0
            && !self
                .catchup
                .assembly
                .as_ref()
                .is_some_and(|a| a.continues(&chunk))
        {
            self.catchup.assembly = Some(Assembly {
                slot: chunk.slot,
                total_len: chunk.total_len,
                checksum: chunk.checksum,
                data: Vec::new(),
            });
        }
        let Some(assembly) = self.catchup.assembly.as_mut() else {
            return;
        };
        assembly.data.extend_from_slice(&chunk.data);
        self.catchup.sent_at = None;
        if assembly.held() < assembly.total_len {
            self.request_catchup(now, peer);
            return;
        }
        let Some(whole) = self.catchup.assembly.take() else {
            return;
        };
        if crc32fast::hash(&whole.data) != whole.checksum
            && !sabotaged!(self, UncheckedSnapshotChunks)
        {
            self.refuse(Refusal::SnapshotChecksum { slot: whole.slot });
            return;
        }
        self.catchup.asked = None;
        self.install_snapshot(Snapshot {
            slot: whole.slot,
            data: Bytes::from(whole.data),
        });
        if self.committed < self.known_leader.committed {
            self.request_catchup(now, peer);
        }
    }

    fn check_chunk(&self, peer: NodeId, chunk: &Chunk) -> Result<(), Refusal> {
        if self.catchup.asked.is_none_or(|(asked, _)| asked != peer) {
            return Err(Refusal::UnaskedCatchup { from: peer });
        }
        let known = self.snapshot_horizon();
        if chunk.slot > known {
            return Err(Refusal::SnapshotAhead {
                slot: chunk.slot,
                known,
            });
        }
        if chunk.total_len > self.cfg.max_snapshot_bytes {
            return Err(Refusal::SnapshotTooLarge {
                total_len: chunk.total_len,
                max: self.cfg.max_snapshot_bytes,
            });
        }
        let expected = match &self.catchup.assembly {
            Some(a) if a.continues(chunk) => a.held(),
            _ => 0,
        };
        let end = chunk.offset.checked_add(chunk.data.len() as u64);
        let in_order = chunk.offset == expected || sabotaged!(self, UncheckedSnapshotChunks);
        let fits = end.is_some_and(|end| end <= chunk.total_len);
        let progresses = !chunk.data.is_empty() || chunk.total_len == 0;
        if !(in_order && fits && progresses) {
            return Err(Refusal::SnapshotChunkOutOfOrder {
                offset: chunk.offset,
                expected,
            });
        }
        Ok(())
    }
}
