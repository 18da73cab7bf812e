//! The watches a TCP node serves to its remote clients: each connection's
//! watch ids mapped to the node's watchers, within a per-connection limit,
//! and dropped when the connection closes.

use super::{NodeReply, NodeTransport};
use crate::node::{Call, NodeHandle};
use crate::watch::{
    Delivered, MAX_WATCHES_PER_CONNECTION, WatchDelivery, WatchError, WatchId, WatchRequest,
    WatchSink,
};
use std::collections::HashMap;
use std::time::Duration;
use trexlock_transport::{ClientId as ConnectionId, SendError};

/// How often the watches of closed connections are dropped. A closed
/// connection's watcher is dropped sooner if an event comes for it.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// The node's watchers, by connection and the client's id for each.
#[derive(Default)]
pub(super) struct ServedWatches {
    by_connection: HashMap<ConnectionId, HashMap<u64, WatchId>>,
}

impl ServedWatches {
    /// Starts watch `watch` of connection `conn` at the node (or answers
    /// at once that the connection has its limit of watches). False once
    /// the node has stopped.
    pub(super) async fn start(
        &mut self,
        node: &NodeHandle,
        transport: &NodeTransport,
        conn: ConnectionId,
        watch: u64,
        request: WatchRequest,
    ) -> bool {
        let watches = self.by_connection.entry(conn).or_default();
        let id = match watches.get(&watch) {
            Some(id) => *id,
            None if watches.len() >= MAX_WATCHES_PER_CONNECTION => {
                let ended = WatchDelivery::Ended(WatchError::TooManyWatchers);
                let _ = transport.reply(
                    conn,
                    NodeReply::Watch {
                        watch,
                        delivery: ended,
                    },
                );
                return true;
            }
            None => WatchId::fresh(),
        };
        watches.insert(watch, id);
        let transport = transport.clone();
        let sink = WatchSink::Remote(Box::new(move |delivery| {
            match transport.reply(conn, NodeReply::Watch { watch, delivery }) {
                Ok(()) => Delivered::Yes,
                Err(SendError::QueueFull) => Delivered::Full,
                Err(_) => Delivered::Gone,
            }
        }));
        node.calls
            .send(Call::Watch { id, request, sink })
            .await
            .is_ok()
    }

    /// Ends watch `watch` of connection `conn`. False once the node has
    /// stopped.
    pub(super) async fn stop(&mut self, node: &NodeHandle, conn: ConnectionId, watch: u64) -> bool {
        let Some(watches) = self.by_connection.get_mut(&conn) else {
            return true;
        };
        let Some(id) = watches.remove(&watch) else {
            return true;
        };
        if watches.is_empty() {
            self.by_connection.remove(&conn);
        }
        node.calls.send(Call::Unwatch { id }).await.is_ok()
    }

    /// Drops the watches of connections that have closed.
    pub(super) async fn sweep(&mut self, node: &NodeHandle, transport: &NodeTransport) {
        let closed: Vec<ConnectionId> = self
            .by_connection
            .keys()
            .filter(|conn| transport.client_identity(**conn).is_none())
            .copied()
            .collect();
        for conn in closed {
            for id in self
                .by_connection
                .remove(&conn)
                .into_iter()
                .flat_map(|w| w.into_values())
            {
                let _ = node.calls.send(Call::Unwatch { id }).await;
            }
        }
    }
}
