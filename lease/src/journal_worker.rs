//! Runs the journal on a dedicated thread so syncs never block the async
//! runtime, with at most one sync in flight: whatever the node produces
//! meanwhile is merged into the next one (group commit). A node whose
//! runtime is its own may instead sync a write on the calling thread
//! ([`JournalWorker::persist_here`]), saving the two thread hand-offs.

use crate::error::NodeError;
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use trexlock_paxos::{Journal, JournalError, JournalState, JournalWrite};

pub(crate) struct JournalWorker {
    /// Shared by the thread and [`JournalWorker::persist_here`]; the node
    /// has at most one write outstanding, so the two never wait on each
    /// other and writes stay in order.
    journal: Arc<Mutex<Box<dyn Journal>>>,
    requests: Option<std_mpsc::Sender<(u64, JournalWrite)>>,
    /// Each write's id, result, and how long the journal took to make it
    /// durable.
    pub(crate) done: mpsc::UnboundedReceiver<(u64, Result<(), JournalError>, Duration)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JournalWorker {
    /// Loads the journal's state, then serves syncs on its own thread.
    pub(crate) fn start(
        mut journal: Box<dyn Journal>,
        name: String,
    ) -> Result<(JournalWorker, JournalState), NodeError> {
        let state = journal.load()?;
        let journal = Arc::new(Mutex::new(journal));
        let shared = Arc::clone(&journal);
        let (req_tx, req_rx) = std_mpsc::channel::<(u64, JournalWrite)>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                for (id, write) in req_rx {
                    let Some((result, took)) = persist(&shared, &write) else {
                        break;
                    };
                    let failed = result.is_err();
                    if done_tx.send((id, result, took)).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(NodeError::JournalThreadSpawn)?;
        Ok((
            JournalWorker {
                journal,
                requests: Some(req_tx),
                done: done_rx,
                thread: Some(thread),
            },
            state,
        ))
    }

    /// Makes `write` durable on the calling thread, blocking it for the
    /// sync; `None` if the journal thread panicked inside the journal.
    /// Only while no write is queued for the thread.
    pub(crate) fn persist_here(
        &self,
        write: &JournalWrite,
    ) -> Option<(Result<(), JournalError>, Duration)> {
        persist(&self.journal, write)
    }

    pub(crate) fn submit(&self, id: u64, write: JournalWrite) {
        if let Some(tx) = &self.requests {
            let _ = tx.send((id, write));
        }
    }

    /// Finishes queued syncs and closes the journal.
    pub(crate) fn close(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One write made durable, and how long that took; `None` if a panic
/// inside the journal left it in an unknown state.
fn persist(
    journal: &Mutex<Box<dyn Journal>>,
    write: &JournalWrite,
) -> Option<(Result<(), JournalError>, Duration)> {
    let mut journal = journal.lock().ok()?;
    let started = Instant::now();
    let result = journal.persist(write);
    Some((result, started.elapsed()))
}

impl Drop for JournalWorker {
    fn drop(&mut self) {
        self.close();
    }
}
