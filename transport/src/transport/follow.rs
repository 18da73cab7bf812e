//! Following the membership: the per-peer link tasks, started for a peer
//! that joins and stopped for one that leaves.

use super::{Shared, Transport, lock};
use crate::peer::run_outgoing;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;
use trexlock_paxos::NodeId;

/// The link task of one peer: its queue, where it dials, and how to stop
/// it when the peer leaves the membership.
pub(super) struct Outgoing<M> {
    addr: SocketAddr,
    pub(super) queue: mpsc::Sender<M>,
    stop: CancellationToken,
}

impl<M: Serialize + Send + 'static> Outgoing<M> {
    /// Starts the link task that dials `peer` at `addr`.
    pub(super) fn start(shared: &Arc<Shared>, peer: NodeId, addr: SocketAddr) -> Outgoing<M> {
        let (queue, rx) = mpsc::channel(shared.queue_capacity);
        let stop = shared.stopping.child_token();
        shared.spawn(run_outgoing(shared.clone(), peer, addr, rx, stop.clone()));
        Outgoing { addr, queue, stop }
    }
}

impl<M, Req, Resp> Transport<M, Req, Resp>
where
    M: Serialize + DeserializeOwned + Send + 'static,
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
{
    /// Makes `peers` the peers this node admits and dials: a new peer's
    /// link starts, a peer no longer listed has its links closed and its
    /// queued messages dropped, and a peer whose address changed is
    /// dialled at the new one. The node calls it when it follows a new
    /// membership; this node's own id is ignored.
    pub fn set_peers(&self, peers: BTreeMap<NodeId, SocketAddr>) {
        let shared = &self.inner.shared;
        let mut peers = peers;
        peers.remove(&shared.node);
        let mut outgoing = lock(&self.inner.outgoing);
        let gone: Vec<NodeId> = outgoing
            .iter()
            .filter(|(id, link)| peers.get(id) != Some(&link.addr))
            .map(|(id, _)| *id)
            .collect();
        for peer in gone {
            if let Some(link) = outgoing.remove(&peer) {
                link.stop.cancel();
                info!(%peer, addr = %link.addr, "peer left the membership (or moved): link closed");
            }
            if !peers.contains_key(&peer)
                && let Some(live) = lock(&shared.incoming).remove(&peer)
            {
                live.replaced.cancel();
            }
        }
        *lock(&shared.peers) = peers.clone();
        for (peer, addr) in peers {
            if let std::collections::btree_map::Entry::Vacant(slot) = outgoing.entry(peer) {
                info!(%peer, %addr, "peer joined the membership: dialling it");
                slot.insert(Outgoing::start(shared, peer, addr));
            }
        }
    }
}
