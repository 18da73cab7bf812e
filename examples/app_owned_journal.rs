//! An application that keeps the Paxos journal inside its own redb
//! database, next to its own tables, so that applying a chosen command and
//! the application's own write commit in ONE transaction: after any crash
//! the application's data and its "applied up to" mark agree, and nothing
//! is applied twice or lost.
//!
//! Run it with `cargo run --example app_owned_journal`.

use bytes::Bytes;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use std::error::Error;
use std::path::Path;
use std::sync::Arc;
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalState, JournalTables, JournalWrite,
};
use trexlock_paxos::{Ballot, LogEntry, NodeId, Snapshot, Value};

/// The application's own table: stock level per item.
const STOCK: TableDefinition<&str, u64> = TableDefinition::new("shop.stock");
/// The application's own record of the last slot it applied. It commits
/// with the stock it describes, which is what makes replay exactly-once.
const APPLIED: TableDefinition<(), u64> = TableDefinition::new("shop.applied");

/// A [`Journal`] stored in tables prefixed `paxos.` of a database the
/// application shares with it.
///
/// Guarantees the journal contract (each persist is one immediately durable
/// redb transaction) and, through [`AppJournal::persist_with`], that a
/// journal write and the application's writes become durable together.
pub struct AppJournal {
    db: Arc<Database>,
    tables: JournalTables,
}

impl AppJournal {
    /// Opens (creating on first use) the journal of `identity` inside `db`,
    /// the database at `path` (named in errors).
    pub fn open(
        db: Arc<Database>,
        path: &Path,
        identity: &JournalIdentity,
    ) -> Result<Self, JournalError> {
        let tables = JournalTables::new("paxos.", path);
        let txn = db.begin_write().map_err(|e| tables.redb_error(e))?;
        tables.create_or_check(&txn, identity)?;
        txn.commit().map_err(|e| tables.redb_error(e))?;
        Ok(Self { db, tables })
    }

    /// Makes `write` and whatever `app` writes durable in one transaction:
    /// both or neither, synced before it returns.
    pub fn persist_with(
        &mut self,
        write: &JournalWrite,
        app: impl FnOnce(&WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), JournalError> {
        let mut txn = self
            .db
            .begin_write()
            .map_err(|e| self.tables.redb_error(e))?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.tables.redb_error(e))?;
        self.tables.write(&txn, write)?;
        app(&txn).map_err(|e| self.tables.redb_error(e))?;
        txn.commit().map_err(|e| self.tables.redb_error(e))
    }
}

impl Journal for AppJournal {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.tables.redb_error(e))?;
        self.tables.load(&txn)
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        self.persist_with(write, |_| Ok(()))
    }
}

/// Applies one command, `"<item> <delta>"`, to the stock table.
fn apply_command(stock: &mut redb::Table<&str, u64>, command: &[u8]) -> Result<(), redb::Error> {
    let text = String::from_utf8_lossy(command);
    let Some((item, delta)) = text.split_once(' ') else {
        return Ok(()); // A malformed command is a no-op on every replica alike.
    };
    let delta: i64 = delta.parse().unwrap_or(0);
    let level = stock.get(item)?.map_or(0, |v| v.value());
    stock.insert(item, level.saturating_add_signed(delta))?;
    Ok(())
}

fn open_shop(path: &Path) -> Result<(Arc<Database>, AppJournal), Box<dyn Error>> {
    let db = Arc::new(Database::create(path)?);
    let journal = AppJournal::open(db.clone(), path, &JournalIdentity::new("shop", NodeId(1)))?;
    Ok((db, journal))
}

fn stock_level(db: &Database, item: &str) -> Result<u64, Box<dyn Error>> {
    let txn = db.begin_read()?;
    let stock = txn.open_table(STOCK)?;
    Ok(stock.get(item)?.map_or(0, |v| v.value()))
}

/// Runs the walkthrough: vote, apply with the app's write in one commit,
/// snapshot and compact, restart, and check that everything came back.
pub fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("shop.redb");
    let (db, mut journal) = open_shop(&path)?;
    let ballot = Ballot {
        counter: 1,
        node: NodeId(1),
    };
    let commands = ["widgets 10", "gadgets 5", "widgets -3"];

    // 1. The replica votes for slot 1: a journal-only write, synced before
    //    the vote is sent.
    let vote = LogEntry {
        ballot,
        value: Value::Batch(commands.iter().map(|c| Bytes::from(*c)).collect()),
    };
    journal.persist(&JournalWrite {
        promised: Some(ballot),
        entries: vec![(1, vote.clone())],
        ..JournalWrite::default()
    })?;
    println!("voted for slot 1 in ballot {ballot}");

    // 2. Slot 1 is chosen: the commit index, the commands' effect on the
    //    stock and the app's applied mark commit in one transaction.
    journal.persist_with(
        &JournalWrite {
            committed: Some(1),
            ..JournalWrite::default()
        },
        |txn| {
            let mut stock = txn.open_table(STOCK)?;
            for command in vote.value.commands() {
                apply_command(&mut stock, command)?;
            }
            txn.open_table(APPLIED)?.insert((), 1)?;
            Ok(())
        },
    )?;
    println!(
        "applied slot 1 with the app's write: widgets = {}",
        stock_level(&db, "widgets")?
    );

    // 3. Compaction: the app's state is the snapshot, and the slots it
    //    covers are deleted.
    let data = format!(
        "widgets={} gadgets={}",
        stock_level(&db, "widgets")?,
        stock_level(&db, "gadgets")?
    );
    journal.persist(&JournalWrite {
        snapshot: Some(Snapshot {
            slot: 1,
            data: Bytes::from(data),
        }),
        truncate: Some(1),
        ..JournalWrite::default()
    })?;
    println!("snapshot at slot 1 taken; slot 1 compacted away");

    // 4. Restart: close everything and open the same database again.
    drop(journal);
    drop(db);
    let (db, mut journal) = open_shop(&path)?;
    let state = journal.load()?;
    let applied = {
        let txn = db.begin_read()?;
        let table = txn.open_table(APPLIED)?;
        table.get(())?.map_or(0, |v| v.value())
    };
    println!(
        "after restart: promised {}, committed {}, truncated {}, {} entries, app applied up to {applied}",
        state.promised,
        state.committed,
        state.truncated,
        state.entries.len()
    );
    let expected = (state.promised, state.committed, state.truncated, applied);
    if expected != (ballot, 1, 1, 1) || !state.entries.is_empty() {
        return Err(format!("unexpected state after restart: {state:?}").into());
    }
    if stock_level(&db, "widgets")? != 7 || stock_level(&db, "gadgets")? != 5 {
        return Err("the app's own writes did not survive the restart".into());
    }
    println!("ok: journal and application state came back together");
    Ok(())
}
