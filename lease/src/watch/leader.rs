//! An election's leader changes, built on a watch of its lease.

use super::{Watch, WatchError, WatchPosition};
use crate::client::LeaseClient;
use crate::command::Stamp;
use crate::table::Event;
use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

/// A change of an election's leader, at the log position it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaderChange {
    /// A campaigner became leader.
    Elected {
        /// The new leader (its lease's owner).
        owner: String,
        /// Its leadership's fencing token.
        stamp: Stamp,
        /// Where in the log.
        position: WatchPosition,
    },
    /// The leader proclaimed a value.
    Proclaimed {
        /// The leader's stamp.
        stamp: Stamp,
        /// What it proclaimed.
        value: Bytes,
        /// Where in the log.
        position: WatchPosition,
    },
    /// Nobody leads: the leader resigned or its lease ran out.
    Vacant {
        /// The stamp of the leadership that ended.
        stamp: Stamp,
        /// Where in the log.
        position: WatchPosition,
    },
}

/// Every leader change of one election, in log order (see
/// [`crate::Election::changes`]). A [`futures_core::Stream`]; ends after
/// the error that ends its watch.
#[derive(Debug)]
pub struct LeaderChanges {
    watch: Watch,
    name: String,
}

impl LeaderChanges {
    pub(crate) async fn open(
        client: &LeaseClient,
        name: &str,
        after: Option<WatchPosition>,
    ) -> Result<LeaderChanges, WatchError> {
        let watch = match after {
            Some(after) => client.watch_from(name, after).await?,
            None => client.watch(name).await?,
        };
        Ok(LeaderChanges {
            watch,
            name: name.to_owned(),
        })
    }

    /// The position of the last event seen: resume from here with
    /// [`crate::Election::changes_from`].
    pub fn position(&self) -> WatchPosition {
        self.watch.position()
    }

    /// The next change; `None` once the watch has ended.
    pub async fn next(&mut self) -> Option<Result<LeaderChange, WatchError>> {
        std::future::poll_fn(|cx| self.poll_change(cx)).await
    }

    fn poll_change(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<LeaderChange, WatchError>>> {
        loop {
            let event = match ready!(self.watch.poll_event(cx)) {
                Some(Ok(event)) => event,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => return Poll::Ready(None),
            };
            if let Some(change) = change_of(&self.name, event.position, event.event) {
                return Poll::Ready(Some(Ok(change)));
            }
        }
    }
}

/// The leader change an event of the election's lease means, if any: a
/// renewal changes nothing, and the watch's prefix also matches longer
/// names, which are other leases.
fn change_of(name: &str, position: WatchPosition, event: Event) -> Option<LeaderChange> {
    if event.name() != Some(name) {
        return None;
    }
    match event {
        Event::Granted { owner, stamp, .. } => Some(LeaderChange::Elected {
            owner,
            stamp,
            position,
        }),
        Event::Written { stamp, value, .. } => Some(LeaderChange::Proclaimed {
            stamp,
            value,
            position,
        }),
        Event::Released { stamp, .. } | Event::Expired { stamp, .. } => {
            Some(LeaderChange::Vacant { stamp, position })
        }
        Event::Renewed { .. } | Event::SessionEnded { .. } => None,
    }
}

impl futures_core::Stream for LeaderChanges {
    type Item = Result<LeaderChange, WatchError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().poll_change(cx)
    }
}
