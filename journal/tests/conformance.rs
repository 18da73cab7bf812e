//! Every journal implementation in the project passes the conformance
//! suite: memory, redb, and the application-owned example.

#[path = "../../examples/app_owned_journal.rs"]
mod app_owned_journal;

use app_owned_journal::AppJournal;
use std::sync::{Arc, Mutex};
use trexlock_journal::testing::conformance;
use trexlock_journal::{
    Journal, JournalError, JournalIdentity, JournalState, JournalWrite, MemJournal, RedbJournal,
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

#[test]
fn app_owned_journal_example_runs_to_completion() {
    app_owned_journal::main().expect("the example succeeds");
}
