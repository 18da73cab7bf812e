//! Every journal implementation in the project passes the conformance
//! suite: memory, redb, the append-only log, and the application-owned
//! example.

#[path = "../../examples/app_owned_journal.rs"]
mod app_owned_journal;

use app_owned_journal::AppJournal;
use std::sync::{Arc, Mutex};
use trexlock_journal::testing::conformance;
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalState, JournalWrite, LogJournal, MemJournal,
    RedbJournal,
};
use trexlock_paxos::NodeId;

fn identity() -> JournalIdentity {
    JournalIdentity::new("conformance", NodeId(1))
}

/// A handle onto a [`MemJournal`] that outlives the handle, standing in for
/// the disk so that reopening can be checked.
struct SharedMem(Arc<Mutex<MemJournal>>);

impl Journal for SharedMem {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        self.0.lock().expect("no test panics holding it").load()
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        self.0
            .lock()
            .expect("no test panics holding it")
            .persist(write)
    }
}

#[test]
fn mem_journal_conforms() {
    conformance(|| {
        let storage = Arc::new(Mutex::new(MemJournal::new()));
        move || Ok(SharedMem(storage.clone()))
    });
}

#[test]
fn redb_journal_conforms() {
    conformance(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        move || RedbJournal::open(dir.path().join("journal.redb"), identity())
    });
}

#[test]
fn log_journal_conforms() {
    conformance(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        move || LogJournal::open(dir.path().join("journal.log"), identity())
    });
}

#[test]
fn app_owned_journal_conforms() {
    conformance(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        move || {
            let path = dir.path().join("app.redb");
            let db = redb::Database::create(&path).map_err(|e| JournalError::Storage {
                path: path.clone(),
                source: Box::new(e),
            })?;
            AppJournal::open(Arc::new(db), &path, &identity())
        }
    });
}

/// A journal with one deliberate bug, to show that the suite catches it.
struct Buggy {
    storage: Arc<Mutex<JournalState>>,
    /// Applies the truncation before the entries of the same write.
    truncate_first: bool,
    /// Sets the truncation mark to the latest request, even a lower one.
    lower_truncation: bool,
}

impl Journal for Buggy {
    fn load(&mut self) -> Result<JournalState, JournalError> {
        Ok(self
            .storage
            .lock()
            .expect("no test panics holding it")
            .clone())
    }

    fn persist(&mut self, write: &JournalWrite) -> Result<(), JournalError> {
        let mut state = self.storage.lock().expect("no test panics holding it");
        let rest = JournalWrite {
            entries: Vec::new(),
            ..write.clone()
        };
        if self.truncate_first {
            state.apply(&rest);
            for (slot, entry) in &write.entries {
                state.entries.insert(*slot, entry.clone());
            }
        } else {
            state.apply(write);
        }
        if let (true, Some(upto)) = (self.lower_truncation, write.truncate) {
            state.truncated = upto;
        }
        Ok(())
    }
}

fn buggy(
    truncate_first: bool,
    lower_truncation: bool,
) -> impl FnMut() -> Result<Buggy, JournalError> {
    let storage = Arc::new(Mutex::new(JournalState::default()));
    move || {
        Ok(Buggy {
            storage: storage.clone(),
            truncate_first,
            lower_truncation,
        })
    }
}

#[test]
#[should_panic(expected = "everything_survives_close_and_reopen")]
fn a_journal_that_forgets_on_reopen_fails_conformance() {
    conformance(|| || Ok(MemJournal::new()));
}

#[test]
#[should_panic(expected = "a_merged_write_equals_its_parts_in_order")]
fn a_journal_that_truncates_before_writing_entries_fails_conformance() {
    conformance(|| buggy(true, false));
}

#[test]
#[should_panic(expected = "snapshot_and_truncation_delete_exactly_the_covered_entries")]
fn a_journal_that_lowers_its_truncation_mark_fails_conformance() {
    conformance(|| buggy(false, true));
}

#[test]
fn app_owned_journal_example_runs_to_completion() {
    app_owned_journal::main().expect("the example succeeds");
}
