//! The client's end of a watch: a stream of events.

use super::{
    WATCH_BUFFER_BATCHES, WatchDelivery, WatchError, WatchEvent, WatchId, WatchPosition,
    WatchRequest,
};
use crate::node::Call;
use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::sync::mpsc;

/// Where a node (or a remote link) delivers one watcher's events.
pub(crate) enum WatchSink {
    /// A [`Watch`] in this process: a bounded channel with one place kept
    /// free for the final [`WatchDelivery::Ended`], so that a watcher cut
    /// off for lagging always learns why.
    Channel(mpsc::Sender<WatchDelivery>),
    /// A remote client's connection: the delivery is queued on it.
    Remote(Box<dyn Fn(WatchDelivery) -> Delivered + Send + Sync>),
}

/// What became of one delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivered {
    /// It is in the watcher's buffer.
    Yes,
    /// The buffer is full: the watcher lags.
    Full,
    /// The watcher is gone.
    Gone,
}

impl WatchSink {
    /// Delivers without waiting. On a channel, events are refused once
    /// only the place kept for the end is left.
    pub(crate) fn send(&self, delivery: WatchDelivery) -> Delivered {
        let tx = match self {
            WatchSink::Channel(tx) => tx,
            WatchSink::Remote(deliver) => return deliver(delivery),
        };
        if tx.is_closed() {
            return Delivered::Gone;
        }
        let last = matches!(delivery, WatchDelivery::Ended(_));
        if !last && tx.capacity() <= 1 {
            return Delivered::Full;
        }
        match tx.try_send(delivery) {
            Ok(()) => Delivered::Yes,
            Err(mpsc::error::TrySendError::Full(_)) => Delivered::Full,
            Err(mpsc::error::TrySendError::Closed(_)) => Delivered::Gone,
        }
    }
}

/// A watch: the events after its position on the leases whose names start
/// with its prefix, in log order (see [`crate::watch`]). It implements
/// [`futures_core::Stream`]; [`Watch::next`] is the same without a
/// combinator crate. After an error it ends. Dropping it ends the watch at
/// the node.
///
/// ```
/// use std::time::Duration;
/// use trexlock_lease::{InProcessNetwork, Node, NodeConfig, table::Event};
/// use trexlock_paxos::{MemJournal, NodeId};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let network = InProcessNetwork::new();
/// let inbox = network.register(NodeId(1));
/// let config = NodeConfig::new(NodeId(1), vec![NodeId(1)]);
/// let node = Node::start(config, Box::new(MemJournal::new()), network, inbox).await?;
/// node.wait_for_leader(Duration::from_secs(5)).await;
/// let client = node.client("worker-1");
/// let mut watch = client.watch("jobs/").await?;
/// client.try_acquire("jobs/7", Duration::from_secs(10)).await?;
/// let seen = watch.next().await.expect("a watch ends only with an error")?;
/// assert!(matches!(seen.event, Event::Granted { ref owner, .. } if owner == "worker-1"));
/// // After a disconnect: client.watch_from("jobs/", seen.position) goes on after it.
/// # Ok(()) }
/// ```
pub struct Watch {
    id: WatchId,
    deliveries: mpsc::Receiver<WatchDelivery>,
    pending: VecDeque<WatchEvent>,
    calls: mpsc::Sender<Call>,
    position: WatchPosition,
    done: bool,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("id", &self.id)
            .field("position", &self.position)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// Registers a watch through `calls` (a node's or a remote link's) and
    /// waits up to `timeout` for the node to confirm it.
    pub(crate) async fn open(
        calls: mpsc::Sender<Call>,
        request: WatchRequest,
        timeout: Duration,
    ) -> Result<Watch, WatchError> {
        request.validate()?;
        let id = WatchId::fresh();
        let (tx, mut deliveries) = mpsc::channel(WATCH_BUFFER_BATCHES + 1);
        let sink = WatchSink::Channel(tx);
        calls
            .send(Call::Watch { id, request, sink })
            .await
            .map_err(|_| WatchError::Stopped)?;
        let mut watch = Watch {
            id,
            deliveries: mpsc::channel(1).1,
            pending: VecDeque::new(),
            calls,
            position: WatchPosition::default(),
            done: false,
        };
        let first = tokio::time::timeout(timeout, deliveries.recv()).await;
        watch.deliveries = deliveries;
        match first {
            Ok(Some(WatchDelivery::Started { after })) => {
                watch.position = after;
                Ok(watch)
            }
            Ok(Some(WatchDelivery::Ended(e))) => Err(e),
            Ok(Some(WatchDelivery::Events(_)) | None) => Err(WatchError::Stopped),
            Err(_) => Err(WatchError::Timeout),
        }
    }

    /// The position of the last event this watch yielded (where it
    /// started, before the first): resume from here after a disconnect.
    pub fn position(&self) -> WatchPosition {
        self.position
    }

    /// The next event; `None` once the watch has ended (after yielding the
    /// error that ended it).
    pub async fn next(&mut self) -> Option<Result<WatchEvent, WatchError>> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    pub(super) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<WatchEvent, WatchError>>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.position = event.position;
                return Poll::Ready(Some(Ok(event)));
            }
            if self.done {
                return Poll::Ready(None);
            }
            match ready!(self.deliveries.poll_recv(cx)) {
                Some(WatchDelivery::Events(events)) => self.pending.extend(events),
                // A remote link resumed the watch on another node.
                Some(WatchDelivery::Started { .. }) => {}
                Some(WatchDelivery::Ended(error)) => {
                    self.done = true;
                    return Poll::Ready(Some(Err(error)));
                }
                None => {
                    self.done = true;
                    return Poll::Ready(Some(Err(WatchError::Stopped)));
                }
            }
        }
    }
}

impl futures_core::Stream for Watch {
    type Item = Result<WatchEvent, WatchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.calls.try_send(Call::Unwatch { id: self.id });
    }
}
