//! Semaphores and read-write leases, checked in real time.
//!
//! A holder of a share acts on its resource only while its own
//! [`trexlock_lease::client::ClientCore`] says the share is valid with the
//! safety gap, exactly as a lease holder does. At no real instant may more
//! holders act on a semaphore than it has permits, nor anybody act beside
//! a writer of a read-write lease. And nobody overtakes a queued writer: a
//! reader whose request was sent after a writer was told it is queued must
//! not be granted a new share before that writer (the table's stamps order
//! grants; a reader answered with a share it already held was not let in,
//! it renewed).

use std::collections::BTreeMap;
use trexlock_lease::command::Mode;
use trexlock_lease::{ClientId, Stamp};

/// The semaphore clients share, and its permits.
pub(crate) const SEMAPHORE: &str = "pool";
/// The semaphore's permits.
pub(crate) const PERMITS: u32 = 2;
/// The read-write lease clients share.
pub(crate) const READ_WRITE: &str = "doc";

/// One action on a shared resource: who, in which mode, when (real ns).
#[derive(Clone, Copy, Debug)]
struct Action {
    stamp: Stamp,
    client: ClientId,
    mode: Mode,
    start: u64,
    end: u64,
}

/// What holders of shares did, and when writers were queued and granted.
#[derive(Clone, Debug, Default)]
pub struct ShareChecker {
    running: BTreeMap<String, Vec<Action>>,
    /// Per request: (mode, real ns it was first sent).
    sent: BTreeMap<(ClientId, u64), (Mode, u64)>,
    /// Writers told they are queued: real ns they learnt it.
    queued: BTreeMap<(ClientId, u64), u64>,
    /// Granted readers: (sent at, stamp).
    readers: Vec<(u64, Stamp)>,
    /// Granted writers that had been queued: (queued at, stamp).
    writers: Vec<(u64, Stamp)>,
    /// Every grant each client was told of: a client that stopped
    /// believing in a share the table still counts asks again as new,
    /// and is answered with that old grant (a renewal, not a new reader).
    told: std::collections::BTreeSet<(ClientId, Stamp)>,
    pub(crate) actions: u64,
}

impl ShareChecker {
    /// A request for a share was sent for the first time.
    pub fn on_sent(&mut self, client: ClientId, request: u64, mode: Mode, now: u64) {
        self.sent.entry((client, request)).or_insert((mode, now));
    }

    /// The client waiting on `request` learnt it is queued.
    pub fn on_queued(&mut self, client: ClientId, request: u64, now: u64) {
        if let Some((Mode::Write, _)) = self.sent.get(&(client, request)) {
            self.queued.entry((client, request)).or_insert(now);
        }
    }

    /// The client waiting on `request` was granted `stamp`.
    pub fn on_granted(&mut self, client: ClientId, request: u64, stamp: Stamp) -> Vec<String> {
        let renewal = !self.told.insert((client, stamp));
        let Some(&(mode, sent_at)) = self.sent.get(&(client, request)) else {
            return Vec::new();
        };
        if renewal {
            return Vec::new();
        }
        match mode {
            Mode::Read => self.readers.push((sent_at, stamp)),
            Mode::Write => match self.queued.get(&(client, request)) {
                Some(&queued_at) => self.writers.push((queued_at, stamp)),
                None => return Vec::new(),
            },
            Mode::Permit { .. } => return Vec::new(),
        }
        let mut found = Vec::new();
        for &(queued_at, writer) in &self.writers {
            for &(sent_at, reader) in &self.readers {
                if sent_at > queued_at && reader < writer {
                    found.push(format!(
                        "lease {READ_WRITE}: a reader sent at {sent_at} ns was granted stamp {reader} before the writer queued at {queued_at} ns (stamp {writer})"
                    ));
                }
            }
        }
        found
    }

    /// Records an action on the shared `name` during real `[start, end)`.
    pub fn on_action(
        &mut self,
        name: &str,
        stamp: Stamp,
        client: ClientId,
        mode: Mode,
        start: u64,
        end: u64,
    ) -> Vec<String> {
        self.actions += 1;
        let running = self.running.entry(name.to_owned()).or_default();
        running.retain(|a| a.end > start);
        let new = Action {
            stamp,
            client,
            mode,
            start,
            end,
        };
        running.push(new);
        // The most actions at once that include this one happen at the
        // start of one of them within its interval.
        let mut found = Vec::new();
        for at in running
            .iter()
            .map(|a| a.start.max(start))
            .filter(|t| *t < end)
        {
            let mut at_once: Vec<&Action> = running
                .iter()
                .filter(|a| a.start <= at && at < a.end)
                .collect();
            at_once.sort_by_key(|a| a.stamp);
            at_once.dedup_by_key(|a| a.stamp);
            let broken = match mode {
                Mode::Permit { permits } => at_once.len() > permits as usize,
                Mode::Read | Mode::Write => {
                    at_once.len() > 1 && at_once.iter().any(|a| a.mode == Mode::Write)
                }
            };
            if broken {
                let who: Vec<String> = at_once
                    .iter()
                    .map(|a| format!("client {} ({:?}, stamp {})", a.client.0, a.mode, a.stamp))
                    .collect();
                found.push(format!(
                    "{name}: at {at} ns {} acted at once",
                    who.join(", ")
                ));
                break;
            }
        }
        found
    }
}
