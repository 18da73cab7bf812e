//! The journal's tables inside any redb database, so that the journal can
//! live in its own file ([`crate::RedbJournal`]) or next to an application's
//! own tables and commit together with them.

use crate::record::{
    self, COMMITTED_KEY, PROMISED_KEY, SEQUENCE_KEY, SNAPSHOT_SLOT_KEY, TRUNCATED_KEY,
};
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
    WriteTransaction,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};
use trexlock_paxos::{JournalError, JournalState, JournalWrite, LogEntry, NodeId, Slot, Snapshot};

/// Whose journal this is. Recorded when the journal is created and checked
/// on every open, so that a node never adopts another node's promises and
/// votes (a copied or misconfigured data directory).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct JournalIdentity {
    /// The cluster the node belongs to.
    pub cluster_id: String,
    /// The node within that cluster.
    pub node_id: NodeId,
}

impl JournalIdentity {
    /// The identity of node `node_id` in cluster `cluster_id`.
    pub fn new(cluster_id: impl Into<String>, node_id: NodeId) -> Self {
        Self {
            cluster_id: cluster_id.into(),
            node_id,
        }
    }
}

impl fmt::Display for JournalIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cluster {:?} node {}", self.cluster_id, self.node_id)
    }
}

/// The three tables that hold one replica's journal, under a name prefix,
/// in any redb database.
///
/// Every method works inside a transaction the caller owns, so a caller can
/// make journal writes and its own writes durable in one commit. Every
/// error names `path`, the database's location.
///
/// Layout (all values postcard-encoded): `{prefix}meta` maps
/// `format_version`, `cluster_id`, `node_id`, `promised`, `committed`,
/// `truncated`, `snapshot_slot` (the held snapshot's slot, so that a new
/// snapshot is weighed without reading the old one) and (in a
/// [`crate::RedbJournal`]) `sequence` to their values; `{prefix}snapshot`
/// holds at most one [`Snapshot`] under the key `()`; `{prefix}entries`
/// maps each slot to its [`LogEntry`].
#[derive(Clone, Debug)]
pub struct JournalTables {
    meta: String,
    snapshot: String,
    entries: String,
    path: PathBuf,
}

impl JournalTables {
    /// The tables named `{prefix}meta`, `{prefix}snapshot` and
    /// `{prefix}entries` of the database at `path`.
    pub fn new(prefix: &str, path: impl Into<PathBuf>) -> Self {
        Self {
            meta: format!("{prefix}meta"),
            snapshot: format!("{prefix}snapshot"),
            entries: format!("{prefix}entries"),
            path: path.into(),
        }
    }

    /// The database location named in every error.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The name of the table holding the metadata; its presence marks a
    /// database as holding this journal.
    pub(crate) fn meta_table_name(&self) -> &str {
        &self.meta
    }

    fn meta_def(&self) -> TableDefinition<'_, &'static str, &'static [u8]> {
        TableDefinition::new(&self.meta)
    }

    fn snapshot_def(&self) -> TableDefinition<'_, (), &'static [u8]> {
        TableDefinition::new(&self.snapshot)
    }

    fn entries_def(&self) -> TableDefinition<'_, Slot, &'static [u8]> {
        TableDefinition::new(&self.entries)
    }

    /// Creates the journal for `identity` in `txn` if the database holds
    /// none yet; otherwise checks that the one it holds has this build's
    /// format version and belongs to `identity`.
    ///
    /// The caller commits `txn`; until then a new journal does not exist.
    pub fn create_or_check(
        &self,
        txn: &WriteTransaction,
        identity: &JournalIdentity,
    ) -> Result<(), JournalError> {
        let mut meta = txn
            .open_table(self.meta_def())
            .map_err(|e| self.redb_error(e))?;
        if meta.is_empty().map_err(|e| self.redb_error(e))? {
            for (key, value) in record::initial_meta(&self.path, identity)? {
                meta.insert(key, value.as_slice())
                    .map_err(|e| self.redb_error(e))?;
            }
            txn.open_table(self.snapshot_def())
                .map_err(|e| self.redb_error(e))?;
            txn.open_table(self.entries_def())
                .map_err(|e| self.redb_error(e))?;
            return Ok(());
        }
        record::check_existing(&self.path, identity, |key| {
            match meta.get(key).map_err(|e| self.redb_error(e))? {
                Some(bytes) => Ok(bytes.value().to_vec()),
                None => Err(self.missing(key)),
            }
        })
    }

    /// Reads the whole journal as of `txn`.
    pub fn load(&self, txn: &ReadTransaction) -> Result<JournalState, JournalError> {
        let meta = txn
            .open_table(self.meta_def())
            .map_err(|e| self.redb_error(e))?;
        let snapshots = txn
            .open_table(self.snapshot_def())
            .map_err(|e| self.redb_error(e))?;
        let table = txn
            .open_table(self.entries_def())
            .map_err(|e| self.redb_error(e))?;
        let snapshot = match snapshots.get(()).map_err(|e| self.redb_error(e))? {
            Some(bytes) => Some(self.decode::<Snapshot>(bytes.value(), "snapshot")?),
            None => None,
        };
        self.check_snapshot_slot(&meta, snapshot.as_ref())?;
        let mut entries = std::collections::BTreeMap::new();
        for row in table.iter().map_err(|e| self.redb_error(e))? {
            let (slot, bytes) = row.map_err(|e| self.redb_error(e))?;
            let slot = slot.value();
            let entry: LogEntry = self.decode(bytes.value(), &format!("entry for slot {slot}"))?;
            entries.insert(slot, entry);
        }
        Ok(JournalState {
            promised: self.read_meta(&meta, PROMISED_KEY)?,
            committed: self.read_meta(&meta, COMMITTED_KEY)?,
            snapshot,
            truncated: self.read_meta(&meta, TRUNCATED_KEY)?,
            entries,
        })
    }

    /// Stages `write` in `txn` with the semantics of
    /// [`JournalState::apply`]: promise, entries, commit index, snapshot,
    /// then truncation. Nothing is durable until the caller commits `txn`.
    pub fn write(&self, txn: &WriteTransaction, write: &JournalWrite) -> Result<(), JournalError> {
        let mut meta = txn
            .open_table(self.meta_def())
            .map_err(|e| self.redb_error(e))?;
        if let Some(ballot) = write.promised {
            self.write_meta(&mut meta, PROMISED_KEY, &ballot)?;
        }
        let mut entries = txn
            .open_table(self.entries_def())
            .map_err(|e| self.redb_error(e))?;
        // Entries below the truncation point are covered by the snapshot:
        // ignoring them keeps a merged write equal to its parts.
        let truncated: Slot = self.read_meta(&meta, TRUNCATED_KEY)?;
        for (slot, entry) in write.entries.iter().filter(|(s, _)| *s > truncated) {
            entries
                .insert(slot, self.encode(entry)?.as_slice())
                .map_err(|e| self.redb_error(e))?;
        }
        if let Some(committed) = write.committed {
            self.write_meta(&mut meta, COMMITTED_KEY, &committed)?;
        }
        if let Some(snapshot) = &write.snapshot {
            // An older snapshot never replaces a newer one.
            if self
                .snapshot_slot(txn, &meta)?
                .is_none_or(|slot| slot <= snapshot.slot)
            {
                self.insert_snapshot(txn, snapshot)?;
                self.write_meta(&mut meta, SNAPSHOT_SLOT_KEY, &snapshot.slot)?;
            }
        }
        if let Some(upto) = write.truncate {
            entries
                .retain_in(..=upto, |_, _| false)
                .map_err(|e| self.redb_error(e))?;
            if upto > truncated {
                self.write_meta(&mut meta, TRUNCATED_KEY, &upto)?;
            }
        }
        Ok(())
    }

    /// The slot of the snapshot the journal holds, if it holds one.
    fn snapshot_slot(
        &self,
        txn: &WriteTransaction,
        meta: &redb::Table<'_, &'static str, &'static [u8]>,
    ) -> Result<Option<Slot>, JournalError> {
        if let Some(slot) = self.read_optional_meta(meta, SNAPSHOT_SLOT_KEY)? {
            return Ok(Some(slot));
        }
        let snapshots = txn
            .open_table(self.snapshot_def())
            .map_err(|e| self.redb_error(e))?;
        let current = snapshots.get(()).map_err(|e| self.redb_error(e))?;
        current
            .map(|bytes| self.decode::<Snapshot>(bytes.value(), "snapshot"))
            .transpose()
            .map(|s| s.map(|s| s.slot))
    }

    /// Refuses as corrupt a journal whose recorded snapshot slot is not the
    /// slot of the snapshot it holds: a damaged record would otherwise
    /// decide, at the next snapshot, whether that snapshot is kept.
    fn check_snapshot_slot(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        snapshot: Option<&Snapshot>,
    ) -> Result<(), JournalError> {
        let Some(recorded) = self.read_optional_meta::<Slot>(meta, SNAPSHOT_SLOT_KEY)? else {
            return Ok(());
        };
        match snapshot {
            Some(s) if s.slot == recorded => Ok(()),
            held => Err(record::corrupt(
                &self.path,
                format!(
                    "{SNAPSHOT_SLOT_KEY} records slot {recorded} but the snapshot held is {:?}",
                    held.map(|s| s.slot)
                ),
            )),
        }
    }

    /// Stores `snapshot`, encoded straight into the space redb reserves for
    /// it: a snapshot is the largest value a journal writes, and encoding
    /// it into a buffer first would hold it in memory once more.
    fn insert_snapshot(
        &self,
        txn: &WriteTransaction,
        snapshot: &Snapshot,
    ) -> Result<(), JournalError> {
        let storage = |e| record::storage(&self.path, e);
        let len = postcard::serialize_with_flavor(snapshot, postcard::ser_flavors::Size::default())
            .map_err(storage)?;
        // Emptied by deleting the table, which frees the old snapshot's
        // pages unread; replacing the value in place reads them back.
        txn.delete_table(self.snapshot_def())
            .map_err(|e| self.redb_error(e))?;
        let mut snapshots = txn
            .open_table(self.snapshot_def())
            .map_err(|e| self.redb_error(e))?;
        let mut value = snapshots
            .insert_reserve((), len)
            .map_err(|e| self.redb_error(e))?;
        postcard::to_slice(snapshot, value.as_mut()).map_err(storage)?;
        Ok(())
    }

    /// The number of the newest commit recorded by
    /// [`JournalTables::set_sequence`] as of `txn`, 0 if none.
    pub(crate) fn sequence(&self, txn: &WriteTransaction) -> Result<u64, JournalError> {
        let meta = txn
            .open_table(self.meta_def())
            .map_err(|e| self.redb_error(e))?;
        Ok(self.read_optional_meta(&meta, SEQUENCE_KEY)?.unwrap_or(0))
    }

    /// Records in `txn` that it is commit number `sequence`.
    pub(crate) fn set_sequence(
        &self,
        txn: &WriteTransaction,
        sequence: u64,
    ) -> Result<(), JournalError> {
        let mut meta = txn
            .open_table(self.meta_def())
            .map_err(|e| self.redb_error(e))?;
        self.write_meta(&mut meta, SEQUENCE_KEY, &sequence)
    }

    /// Names the database in a redb failure, classifying it: damage to the
    /// file is [`JournalError::Corrupt`], anything else
    /// [`JournalError::Storage`].
    pub fn redb_error(&self, error: impl Into<redb::Error>) -> JournalError {
        let error = error.into();
        let reason = match &error {
            redb::Error::Corrupted(reason) => reason.clone(),
            // A table of ours with other key or value types: the database
            // holds someone else's data under our names.
            redb::Error::TableTypeMismatch { .. }
            | redb::Error::TypeDefinitionChanged { .. }
            | redb::Error::TableIsMultimap(_) => format!("not a trexlock journal: {error}"),
            redb::Error::TableDoesNotExist(table) => {
                format!("table {table} is missing")
            }
            redb::Error::UpgradeRequired(_) => {
                format!("written by an older redb this build cannot read: {error}")
            }
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
                format!("the file is shorter than its contents: {io}")
            }
            // How redb reports a file that is not a redb database at all.
            redb::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => io.to_string(),
            _ => {
                return JournalError::Storage {
                    path: self.path.clone(),
                    source: Box::new(error),
                };
            }
        };
        self.corrupt(reason)
    }

    fn corrupt(&self, reason: String) -> JournalError {
        record::corrupt(&self.path, reason)
    }

    fn missing(&self, key: &str) -> JournalError {
        self.corrupt(format!(
            "metadata has no {key} in table {}",
            self.meta_def().name()
        ))
    }

    fn encode<T: Serialize + ?Sized>(&self, value: &T) -> Result<Vec<u8>, JournalError> {
        record::encode(&self.path, value)
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8], what: &str) -> Result<T, JournalError> {
        record::decode(&self.path, bytes, what)
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<T, JournalError> {
        self.read_optional_meta(meta, key)?
            .ok_or_else(|| self.missing(key))
    }

    /// The value under `key`, or `None` for a key the journal may lack.
    fn read_optional_meta<T: DeserializeOwned>(
        &self,
        meta: &impl ReadableTable<&'static str, &'static [u8]>,
        key: &str,
    ) -> Result<Option<T>, JournalError> {
        match meta.get(key).map_err(|e| self.redb_error(e))? {
            Some(bytes) => self.decode(bytes.value(), key).map(Some),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        meta: &mut redb::Table<'_, &'static str, &'static [u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), JournalError> {
        meta.insert(key, self.encode(value)?.as_slice())
            .map_err(|e| self.redb_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn snapshot(slot: Slot) -> Snapshot {
        Snapshot {
            slot,
            data: vec![7; 16].into(),
        }
    }

    #[test]
    fn the_recorded_snapshot_slot_is_optional_and_checked_against_the_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("app.redb");
        let db = Database::create(&path).expect("database");
        let tables = JournalTables::new("journal_", &path);
        let commit = |f: &dyn Fn(&WriteTransaction)| {
            let txn = db.begin_write().expect("write transaction");
            f(&txn);
            txn.commit().expect("commit");
        };
        let write_snapshot = |slot| {
            commit(&|txn| {
                let write = JournalWrite {
                    snapshot: Some(snapshot(slot)),
                    ..JournalWrite::default()
                };
                tables.write(txn, &write).expect("write");
            });
        };
        let held = || {
            let txn = db.begin_read().expect("read transaction");
            tables.load(&txn).expect("load").snapshot.map(|s| s.slot)
        };
        commit(&|txn| {
            tables
                .create_or_check(txn, &JournalIdentity::new("c", NodeId(1)))
                .expect("create");
        });
        write_snapshot(20);
        // As a journal written before the key existed holds it.
        commit(&|txn| {
            let mut meta = txn.open_table(tables.meta_def()).expect("meta");
            meta.remove(SNAPSHOT_SLOT_KEY).expect("remove");
        });
        write_snapshot(15);
        assert_eq!(held(), Some(20));
        write_snapshot(30);
        assert_eq!(held(), Some(30));
        // A recorded slot that disagrees with the snapshot is damage.
        commit(&|txn| {
            let mut meta = txn.open_table(tables.meta_def()).expect("meta");
            let damaged = postcard::to_allocvec(&31u64).expect("encode");
            meta.insert(SNAPSHOT_SLOT_KEY, damaged.as_slice())
                .expect("insert");
        });
        let txn = db.begin_read().expect("read transaction");
        let refused = tables.load(&txn);
        assert!(
            matches!(refused, Err(JournalError::Corrupt { .. })),
            "{refused:?}"
        );
    }
}
