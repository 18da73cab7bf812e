//! The watches a TCP node serves to its remote clients: each connection's
//! watch ids mapped to the node's watchers, within a per-connection limit,
//! and dropped when the connection closes.
//!
//! A watcher is never left to stall in silence: the message that ends a
//! watch (`Lagged` with where to resume, `Compacted`, ...) must reach the
//! client even when the connection's queue is full, which is exactly when
//! a watcher lags. Such an ending is owed: kept (one per watch, so at most
//! [`MAX_WATCHES_PER_CONNECTION`] per connection) and sent again every
//! [`OWED_RETRY`] until the queue takes it or the connection closes (a
//! closed connection's client resumes by itself on its next one).

use super::{NodeReply, NodeTransport};
use crate::node::{Call, NodeHandle};
use crate::watch::{
    Delivered, MAX_WATCHES_PER_CONNECTION, WatchDelivery, WatchError, WatchId, WatchRequest,
    WatchSink,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use trexlock_transport::{ClientId as ConnectionId, SendError};

/// How often the watches of closed connections are dropped. A closed
/// connection's watcher is dropped sooner if an event comes for it.
pub(super) const SWEEP_INTERVAL: Duration = Duration::from_secs(5);

/// How often owed endings are offered again to a full connection queue.
pub(super) const OWED_RETRY: Duration = Duration::from_millis(20);

/// The node's watchers, by connection and the client's id for each.
#[derive(Default)]
pub(super) struct ServedWatches {
    by_connection: HashMap<ConnectionId, HashMap<u64, WatchId>>,
    owed: Owed,
}

/// Watch endings a full connection queue refused, by connection and watch.
#[derive(Clone, Default)]
struct Owed(Arc<Mutex<HashMap<(ConnectionId, u64), WatchError>>>);

impl Owed {
    /// Keeps `error` as the ending of watch `watch` of `conn`, unless the
    /// connection already owes its limit of endings (a client that keeps
    /// asking for watches it does not read): its watch requests then go
    /// unanswered, which its own timeout reports.
    fn keep(&self, conn: ConnectionId, watch: u64, error: WatchError) {
        let mut owed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let of_conn = owed.keys().filter(|(c, _)| *c == conn).count();
        if of_conn < MAX_WATCHES_PER_CONNECTION || owed.contains_key(&(conn, watch)) {
            owed.insert((conn, watch), error);
        }
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Offers every owed ending through `reply` again; keeps those refused
    /// for a full queue.
    fn send(&self, reply: impl Fn(ConnectionId, NodeReply) -> Result<(), SendError>) {
        let mut owed = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        owed.retain(|(conn, watch), error| {
            let delivery = WatchDelivery::Ended(error.clone());
            let watch = *watch;
            matches!(
                reply(*conn, NodeReply::Watch { watch, delivery }),
                Err(SendError::QueueFull)
            )
        });
    }
}

/// Queues `delivery` for watch `watch` on `conn`. An ending that finds the
/// queue full is owed (and counts as delivered: it will be); a start that
/// does is owed as `Lagged` from the position asked for, since the node
/// drops a watcher whose start it could not deliver.
fn send(
    reply: impl Fn(ConnectionId, NodeReply) -> Result<(), SendError>,
    owed: &Owed,
    conn: ConnectionId,
    watch: u64,
    delivery: WatchDelivery,
) -> Delivered {
    let ending = match &delivery {
        WatchDelivery::Ended(error) => Some((error.clone(), Delivered::Yes)),
        WatchDelivery::Started { after } => {
            let lagged = WatchError::Lagged {
                resume_from: *after,
            };
            Some((lagged, Delivered::Full))
        }
        WatchDelivery::Events(_) => None,
    };
    match reply(conn, NodeReply::Watch { watch, delivery }) {
        Ok(()) => Delivered::Yes,
        Err(SendError::QueueFull) => match ending {
            Some((error, delivered)) => {
                owed.keep(conn, watch, error);
                delivered
            }
            None => Delivered::Full,
        },
        Err(_) => Delivered::Gone,
    }
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
                send(|c, r| transport.reply(c, r), &self.owed, conn, watch, ended);
                return true;
            }
            None => WatchId::fresh(),
        };
        watches.insert(watch, id);
        let (transport, owed) = (transport.clone(), self.owed.clone());
        let sink = WatchSink::Remote(Box::new(move |delivery| {
            send(|c, r| transport.reply(c, r), &owed, conn, watch, delivery)
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

    /// True while some ending waits for room on its connection.
    pub(super) fn owes(&self) -> bool {
        self.owed.len() > 0
    }

    /// Offers every owed ending to its connection again; keeps those its
    /// queue is still too full for, drops those of closed connections.
    pub(super) fn send_owed(&mut self, transport: &NodeTransport) {
        self.owed.send(|c, r| transport.reply(c, r));
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::WatchPosition;
    use std::cell::RefCell;

    /// A connection queue with room for `room` more messages.
    struct Queue {
        room: RefCell<usize>,
        sent: RefCell<Vec<NodeReply>>,
    }

    impl Queue {
        fn full() -> Queue {
            Queue {
                room: RefCell::new(0),
                sent: RefCell::default(),
            }
        }

        fn reply(&self, _: ConnectionId, reply: NodeReply) -> Result<(), SendError> {
            let mut room = self.room.borrow_mut();
            if *room == 0 {
                return Err(SendError::QueueFull);
            }
            *room -= 1;
            self.sent.borrow_mut().push(reply);
            Ok(())
        }

        /// Makes room for one message, offers `owed` again: what was sent.
        fn drain(&self, owed: &Owed) -> Vec<NodeReply> {
            *self.room.borrow_mut() = 1;
            owed.send(|c, r| self.reply(c, r));
            self.sent.take()
        }
    }

    fn ended_with(watch: u64, error: WatchError) -> NodeReply {
        NodeReply::Watch {
            watch,
            delivery: WatchDelivery::Ended(error),
        }
    }

    fn lagged(slot: u64) -> WatchError {
        WatchError::Lagged {
            resume_from: WatchPosition::after_slot(slot),
        }
    }

    #[test]
    fn an_ending_a_full_queue_refuses_is_owed_and_sent_once_there_is_room() {
        let queue = Queue::full();
        let owed = Owed::default();
        let conn = ConnectionId(1);
        let ended = WatchDelivery::Ended(lagged(7));
        let events = WatchDelivery::Events(Vec::new());
        let reply = |c, r| queue.reply(c, r);
        assert_eq!(send(reply, &owed, conn, 3, events), Delivered::Full);
        assert_eq!(send(reply, &owed, conn, 3, ended), Delivered::Yes);
        owed.send(reply);
        assert_eq!(owed.len(), 1, "still no room: still owed");
        assert_eq!(queue.drain(&owed), [ended_with(3, lagged(7))]);
        assert_eq!(owed.len(), 0);
    }

    #[test]
    fn a_start_a_full_queue_refuses_is_owed_as_lagged_from_the_position_asked_for() {
        let queue = Queue::full();
        let owed = Owed::default();
        let started = WatchDelivery::Started {
            after: WatchPosition::after_slot(5),
        };
        let reply = |c, r| queue.reply(c, r);
        // The node drops the watcher: the client must hear where to resume.
        assert_eq!(
            send(reply, &owed, ConnectionId(1), 4, started),
            Delivered::Full
        );
        assert_eq!(queue.drain(&owed), [ended_with(4, lagged(5))]);
    }

    #[test]
    fn a_connection_owes_at_most_one_ending_per_watch_it_may_hold() {
        let owed = Owed::default();
        for watch in 0..(MAX_WATCHES_PER_CONNECTION as u64 * 2) {
            owed.keep(ConnectionId(1), watch, lagged(1));
            owed.keep(ConnectionId(1), 0, lagged(2));
        }
        assert_eq!(owed.len(), MAX_WATCHES_PER_CONNECTION);
    }
}
