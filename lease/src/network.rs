//! How nodes reach each other. The runtime needs only [`Network`]; the
//! in-process implementation here runs a whole cluster inside one process
//! (tests, examples), and the TCP transport does the same across machines.

use crate::command::Request;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use trexlock_paxos::{Membership, Message, NodeId};

/// What nodes send each other.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerMessage {
    /// A consensus message.
    Paxos(Message),
    /// Client requests forwarded to the leader.
    Forward(Vec<Request>),
}

/// Best-effort, non-blocking delivery of [`PeerMessage`]s. Messages may be
/// lost, duplicated or reordered; the protocol tolerates all three. `send`
/// must never block the caller.
pub trait Network: Send + Sync + 'static {
    /// Sends `message` from `from` to `to`, or drops it.
    fn send(&self, from: NodeId, to: NodeId, message: PeerMessage);

    /// Told every tick which membership governs the node's next slot and
    /// which is the newest chosen, so that a network that must know its
    /// peers (the TCP transport) reaches the members of both and no one
    /// else. Cheap when nothing changed; does nothing by default.
    fn follow(&self, _governing: &Membership, _latest: &Membership) {}
}

/// Messages a node receives, with their sender.
pub type Inbox = mpsc::Receiver<(NodeId, PeerMessage)>;

/// Bounded so that a stalled node cannot make its peers buffer without
/// limit: when full, messages are dropped like on a lossy link.
const INBOX_CAPACITY: usize = 16 * 1024;

/// A network of channels inside one process, with links that tests can
/// cut and heal.
#[derive(Default)]
pub struct InProcessNetwork {
    inboxes: Mutex<BTreeMap<NodeId, mpsc::Sender<(NodeId, PeerMessage)>>>,
    cut: Mutex<BTreeSet<(NodeId, NodeId)>>,
}

impl InProcessNetwork {
    /// An empty network.
    pub fn new() -> Arc<InProcessNetwork> {
        Arc::new(InProcessNetwork::default())
    }

    /// Attaches `node` (replacing an earlier attachment, as after a
    /// restart) and returns its inbox.
    pub fn register(&self, node: NodeId) -> Inbox {
        let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
        self.inboxes.lock().expect("network lock").insert(node, tx);
        rx
    }

    /// Drops every message between `node` and anyone else, both ways.
    pub fn isolate(&self, node: NodeId) {
        let nodes: Vec<NodeId> = self
            .inboxes
            .lock()
            .expect("network lock")
            .keys()
            .copied()
            .collect();
        let mut cut = self.cut.lock().expect("network lock");
        for other in nodes.into_iter().filter(|n| *n != node) {
            cut.insert((node, other));
            cut.insert((other, node));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.cut.lock().expect("network lock").clear();
    }
}

impl Network for InProcessNetwork {
    fn send(&self, from: NodeId, to: NodeId, message: PeerMessage) {
        if self.cut.lock().expect("network lock").contains(&(from, to)) {
            return;
        }
        let tx = self.inboxes.lock().expect("network lock").get(&to).cloned();
        if let Some(tx) = tx {
            let _ = tx.try_send((from, message));
        }
    }
}
