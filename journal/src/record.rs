//! What every journal engine of this crate stores, and how: the metadata
//! keys, the postcard encoding of records, and the checks an existing
//! journal must pass before it is used.

use crate::tables::JournalIdentity;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::path::Path;
use trexlock_paxos::{Ballot, JournalError, LogEntry, Slot, Snapshot};

/// The on-disk format this build reads and writes. Recorded when a journal
/// is created; a journal recording any other version is refused rather than
/// misread. Version 2: a [`crate::RedbJournal`]'s newest writes may be in
/// its write-ahead log, which a version 1 build would not read.
pub const FORMAT_VERSION: u32 = 2;

pub(crate) const FORMAT_VERSION_KEY: &str = "format_version";
pub(crate) const CLUSTER_ID_KEY: &str = "cluster_id";
pub(crate) const NODE_ID_KEY: &str = "node_id";
pub(crate) const PROMISED_KEY: &str = "promised";
pub(crate) const COMMITTED_KEY: &str = "committed";
pub(crate) const TRUNCATED_KEY: &str = "truncated";
/// The slot of the snapshot in the snapshot table, so that deciding
/// whether a new snapshot replaces it needs no read of the old one (tens
/// of megabytes for a large table). A journal written before this key
/// existed lacks it until its next snapshot: the old one is read instead.
pub(crate) const SNAPSHOT_SLOT_KEY: &str = "snapshot_slot";
/// The number of the newest commit, for the acknowledgement mark; written
/// by the engines that keep a mark, absent (0) otherwise.
pub(crate) const SEQUENCE_KEY: &str = "sequence";

/// The metadata of a new journal for `identity`.
pub(crate) fn initial_meta(
    path: &Path,
    identity: &JournalIdentity,
) -> Result<[(&'static str, Vec<u8>); 6], JournalError> {
    Ok([
        (FORMAT_VERSION_KEY, encode(path, &FORMAT_VERSION)?),
        (CLUSTER_ID_KEY, encode(path, &identity.cluster_id)?),
        (NODE_ID_KEY, encode(path, &identity.node_id)?),
        (PROMISED_KEY, encode(path, &Ballot::ZERO)?),
        (COMMITTED_KEY, encode(path, &0u64)?),
        (TRUNCATED_KEY, encode(path, &0u64)?),
    ])
}

/// Checks that an existing journal has this build's format version and
/// belongs to `identity`; `read` fetches a metadata record. The version is
/// checked first: a newer format may have moved the owner fields, and
/// misreading them would blame the wrong thing.
pub(crate) fn check_existing(
    path: &Path,
    identity: &JournalIdentity,
    mut read: impl FnMut(&str) -> Result<Vec<u8>, JournalError>,
) -> Result<(), JournalError> {
    check_version(
        path,
        decode(path, &read(FORMAT_VERSION_KEY)?, FORMAT_VERSION_KEY)?,
        FORMAT_VERSION,
    )?;
    let recorded = JournalIdentity {
        cluster_id: decode(path, &read(CLUSTER_ID_KEY)?, CLUSTER_ID_KEY)?,
        node_id: decode(path, &read(NODE_ID_KEY)?, NODE_ID_KEY)?,
    };
    check_owner(path, &recorded, identity)
}

/// A journal recording format version `found` is read only by a build
/// that writes `supported`.
pub(crate) fn check_version(path: &Path, found: u32, supported: u32) -> Result<(), JournalError> {
    if found == supported {
        Ok(())
    } else {
        Err(JournalError::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported,
        })
    }
}

/// A journal recorded as `recorded`'s is only ever opened by that node.
pub(crate) fn check_owner(
    path: &Path,
    recorded: &JournalIdentity,
    expected: &JournalIdentity,
) -> Result<(), JournalError> {
    if recorded == expected {
        Ok(())
    } else {
        Err(JournalError::WrongOwner {
            path: path.to_path_buf(),
            found: recorded.to_string(),
            expected: expected.to_string(),
        })
    }
}

/// The number of the commit after `sequence`. Only a damaged or forged
/// journal can record the last number there is.
pub(crate) fn next_sequence(path: &Path, sequence: u64) -> Result<u64, JournalError> {
    sequence.checked_add(1).ok_or_else(|| {
        corrupt(
            path,
            format!("it records commit {sequence}, the last number there is"),
        )
    })
}

/// A failure to read, write or encode for the journal at `path`: not
/// damage to the file.
pub(crate) fn storage(
    path: &Path,
    e: impl std::error::Error + Send + Sync + 'static,
) -> JournalError {
    JournalError::Storage {
        path: path.to_path_buf(),
        source: Box::new(e),
    }
}

pub(crate) fn corrupt(path: &Path, reason: String) -> JournalError {
    JournalError::Corrupt {
        path: path.to_path_buf(),
        reason,
    }
}

pub(crate) fn encode<T: Serialize + ?Sized>(
    path: &Path,
    value: &T,
) -> Result<Vec<u8>, JournalError> {
    postcard::to_allocvec(value).map_err(|e| storage(path, e))
}

pub(crate) fn decode<T: DeserializeOwned>(
    path: &Path,
    bytes: &[u8],
    what: &str,
) -> Result<T, JournalError> {
    match postcard::take_from_bytes(bytes) {
        Ok((value, [])) => Ok(value),
        Ok((_, rest)) => Err(corrupt(
            path,
            format!("{what}: {} bytes left over after the record", rest.len()),
        )),
        Err(e) => Err(corrupt(path, format!("{what} cannot be decoded: {e}"))),
    }
}

/// A [`trexlock_paxos::JournalWrite`] as recorded, borrowed for encoding.
#[derive(Serialize)]
pub(crate) struct WriteRef<'a> {
    pub(crate) promised: &'a Option<Ballot>,
    pub(crate) entries: &'a [(Slot, LogEntry)],
    pub(crate) committed: &'a Option<Slot>,
    pub(crate) snapshot: &'a Option<Snapshot>,
    pub(crate) truncate: &'a Option<Slot>,
}

/// A [`trexlock_paxos::JournalWrite`] as recorded, decoded.
#[derive(Deserialize)]
pub(crate) struct WriteOwned {
    pub(crate) promised: Option<Ballot>,
    pub(crate) entries: Vec<(Slot, LogEntry)>,
    pub(crate) committed: Option<Slot>,
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) truncate: Option<Slot>,
}
