//! Runs the journal on a dedicated thread so syncs never block the async
//! runtime, with at most one sync in flight: whatever the node produces
//! meanwhile is merged into the next one (group commit).

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use trexlock_paxos::{Journal, JournalError, JournalState, JournalWrite};

pub(crate) struct JournalWorker {
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
    ) -> Result<(JournalWorker, JournalState), JournalError> {
        let state = journal.load()?;
        let (req_tx, req_rx) = std_mpsc::channel::<(u64, JournalWrite)>();
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                for (id, write) in req_rx {
                    let started = Instant::now();
                    let result = journal.persist(&write);
                    let took = started.elapsed();
                    let failed = result.is_err();
                    if done_tx.send((id, result, took)).is_err() || failed {
                        break;
                    }
                }
            })
            .expect("spawning the journal thread");
        Ok((
            JournalWorker {
                requests: Some(req_tx),
                done: done_rx,
                thread: Some(thread),
            },
            state,
        ))
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

impl Drop for JournalWorker {
    fn drop(&mut self) {
        self.close();
    }
}
