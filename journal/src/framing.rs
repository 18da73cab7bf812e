//! The record framing shared by the log journal and the redb journal's
//! write-ahead log, and the rule that tells a write cut short by a crash
//! from damage.
//!
//! A record is `[length u32 LE][CRC-32 of the payload u32 LE][frame check
//! u32 LE][payload]`. The frame check is the CRC-32 of the file's salt and
//! the first eight bytes, so that a damaged length is recognised rather
//! than trusted, and a client's value that happens to, or is made to,
//! contain the bytes of a record cannot pass for one. A file's unused rest
//! is zeros.

use crate::record::{encode, storage};
use serde::Serialize;
use std::path::Path;
use trexlock_paxos::JournalError;

/// The length, the payload's checksum and the frame check.
pub(crate) const FRAME: usize = 12;
/// No record is larger: a length beyond it is damage, not a request to
/// allocate.
pub(crate) const MAX_RECORD: usize = 1 << 30;

/// `record` encoded and framed under `salt`.
pub(crate) fn frame<T: Serialize + ?Sized>(
    path: &Path,
    salt: u32,
    record: &T,
) -> Result<Vec<u8>, JournalError> {
    let payload = encode(path, record)?;
    if payload.len() > MAX_RECORD {
        return Err(storage(
            path,
            std::io::Error::other(format!(
                "a record of {} bytes exceeds the largest the journal reads back ({MAX_RECORD})",
                payload.len()
            )),
        ));
    }
    let mut framed = Vec::with_capacity(FRAME + payload.len());
    framed.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    let check = frame_check(salt, &framed);
    framed.extend_from_slice(&check.to_le_bytes());
    framed.extend_from_slice(&payload);
    Ok(framed)
}

/// The payload of the record at `at` and where the next one starts, if a
/// whole record whose checks both pass under `salt` is there.
pub(crate) fn next_record(bytes: &[u8], at: usize, salt: u32) -> Option<(&[u8], usize)> {
    let len = checked_length(bytes, at, salt)?;
    let crc = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().ok()?);
    let start = at + FRAME;
    let payload = bytes.get(start..start.checked_add(len)?)?;
    (crc32fast::hash(payload) == crc).then_some((payload, start + len))
}

/// Why the unreadable record at `at`, with non-zero bytes up to `written`,
/// cannot be a write cut short by a crash, if it cannot. A write cut short
/// is the last write the file ever saw, so no record follows it, and if
/// its length is intact (its frame check passes) nothing was written past
/// the end that length gives.
pub(crate) fn torn_or_damaged(
    bytes: &[u8],
    at: usize,
    written: usize,
    salt: u32,
) -> Option<String> {
    if let Some(next) = (at + 1..written).find(|&p| next_record(bytes, p, salt).is_some()) {
        return Some(format!(
            "the record at byte {at} is unreadable and a whole record follows it at byte \
             {next}: damage, not a write cut short by a crash"
        ));
    }
    let torn_end = at + FRAME + checked_length(bytes, at, salt)?;
    (written > torn_end.next_multiple_of(16)).then(|| {
        format!(
            "the record at byte {at} is unreadable and {} bytes follow the end its length \
             gives: damage, not a write cut short by a crash",
            written - torn_end
        )
    })
}

/// The length of `bytes` without its trailing zeros, to the next multiple
/// of 16 (the file's unused rest is zeros).
pub(crate) fn written_len(bytes: &[u8]) -> usize {
    let (words, rest) = bytes.as_chunks::<16>();
    if rest.iter().any(|&b| b != 0) {
        return bytes.len();
    }
    words
        .iter()
        .rposition(|w| u128::from_ne_bytes(*w) != 0)
        .map_or(0, |i| (i + 1) * 16)
}

/// The payload length of the record at `at`, if its frame check passes
/// (its length is what was written) and the length is one a journal
/// writes.
fn checked_length(bytes: &[u8], at: usize, salt: u32) -> Option<usize> {
    let header = bytes.get(at..at.checked_add(FRAME)?)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let check = u32::from_le_bytes(header[8..].try_into().ok()?);
    (frame_check(salt, &header[..8]) == check && len > 0 && len <= MAX_RECORD).then_some(len)
}

/// The check of a frame's first eight bytes (its length and its payload's
/// checksum) under `salt`.
fn frame_check(salt: u32, length_and_crc: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(length_and_crc);
    hasher.finalize()
}
