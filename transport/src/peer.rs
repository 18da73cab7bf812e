//! Peer links. Each direction between two nodes is its own TCP connection:
//! node A's outgoing task dials B and only writes; B's accept loop reads that
//! connection and only reads. A reply from B travels on B's own connection
//! to A. This keeps each connection single-purpose (no request/response
//! pairing, no duplicate-connection tie-breaking) at the cost of two sockets
//! per pair of nodes.

use crate::codec::{FrameReader, encode_frame};
use crate::error::{CodecError, TransportError};
use crate::handshake::{self, Hello, Role};
use crate::stats::bump;
use crate::tls::BoxIo;
use crate::transport::Shared;
use bytes::BytesMut;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::hash::{BuildHasher, RandomState};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use trexlock_paxos::NodeId;

/// At most this many frames go into one write.
const BATCH_FRAMES: u64 = 1024;
/// A batch stops growing once it holds this many bytes.
const BATCH_BYTES: usize = 1 << 20;

/// The delay before reconnection attempt `attempt` (0-based): a cap that
/// doubles from `min` up to `max`, and a uniformly random delay between half
/// the cap and the cap, so that nodes restarting together do not reconnect
/// in lockstep.
pub(crate) fn backoff(min: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = min.saturating_mul(1u32 << attempt.min(20)).min(max);
    // std's RandomState is randomly keyed per instance: a free source of
    // jitter that needs no RNG dependency.
    let random = RandomState::new().hash_one(Instant::now());
    let unit = (random >> 11) as f64 / (1u64 << 53) as f64;
    cap / 2 + (cap / 2).mul_f64(unit)
}

/// Writes `first` and whatever else is already queued on `rx`, up to a
/// batch, with one write and one flush. Messages that cannot be encoded or
/// exceed `max_frame_bytes` are dropped, counted and logged; they never
/// break the connection.
pub(crate) async fn write_batch<W, T>(
    shared: &Shared,
    max_frame_bytes: usize,
    to: &(dyn std::fmt::Display + Sync),
    io: &mut W,
    out: &mut BytesMut,
    first: T,
    rx: &mut mpsc::Receiver<T>,
) -> std::io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    // One huge message must not pin its buffer for the life of the link.
    if out.capacity() > 4 * BATCH_BYTES {
        *out = BytesMut::new();
    }
    out.clear();
    let mut frames = 0;
    let mut next = Some(first);
    while let Some(message) = next.take() {
        match encode_frame(&message, max_frame_bytes, out) {
            Ok(()) => frames += 1,
            Err(error) => {
                bump(&shared.counters.dropped_unencodable, 1);
                warn!(%to, %error, "dropping an outgoing message that cannot be sent");
            }
        }
        if frames < BATCH_FRAMES && out.len() < BATCH_BYTES {
            next = rx.try_recv().ok();
        }
    }
    if frames > 0 {
        io.write_all(out).await?;
        io.flush().await?;
        bump(&shared.counters.frames_out, frames);
    }
    Ok(())
}

/// Writes out everything still queued, then closes the write side. Used on
/// graceful shutdown; the caller's grace period bounds how long it may take.
pub(crate) async fn flush_and_close<W, T>(
    shared: &Shared,
    max_frame_bytes: usize,
    to: &(dyn std::fmt::Display + Sync),
    io: &mut W,
    rx: &mut mpsc::Receiver<T>,
) where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let mut out = BytesMut::new();
    while let Ok(first) = rx.try_recv() {
        if write_batch(shared, max_frame_bytes, to, io, &mut out, first, rx)
            .await
            .is_err()
        {
            return;
        }
    }
    let _ = io.shutdown().await;
}

/// Why a connected link ended.
enum Ended {
    /// The transport is stopping (or dropped): do not reconnect.
    Stopped,
    /// The connection failed: reconnect.
    Lost(String),
}

/// The outgoing task for one peer: dials, handshakes, writes queued
/// messages in batches, and on any failure reconnects with capped
/// exponential backoff. Messages queue (boundedly) while the link is down.
/// It ends when `stop` is cancelled: the transport stops, or the peer left
/// the membership.
pub(crate) async fn run_outgoing<M: Serialize>(
    shared: std::sync::Arc<Shared>,
    peer: NodeId,
    addr: SocketAddr,
    mut rx: mpsc::Receiver<M>,
    stop: CancellationToken,
) {
    let hello = Hello::new(shared.cluster_id.clone(), Role::Peer(shared.node));
    let mut attempt = 0u32;
    let mut was_connected = false;
    loop {
        let dialled = tokio::select! {
            _ = stop.cancelled() => return,
            dialled = handshake::dial(addr, shared.tls.as_ref(), &hello, Some(peer), shared.handshake_timeout) => dialled,
        };
        match dialled {
            Ok((conn, _)) => {
                attempt = 0;
                if was_connected {
                    bump(&shared.counters.reconnects, 1);
                }
                was_connected = true;
                info!(%peer, %addr, "peer link up");
                match pump(&shared, &stop, peer, conn, &mut rx).await {
                    Ended::Stopped => return,
                    Ended::Lost(reason) => {
                        warn!(%peer, %addr, %reason, "peer link lost; reconnecting")
                    }
                }
            }
            Err(error) => {
                bump(&shared.counters.connect_failures, 1);
                match error {
                    // A peer that is down is routine during restarts.
                    TransportError::Connect { .. } => {
                        debug!(%peer, %addr, %error, "cannot reach peer")
                    }
                    _ => warn!(%peer, %addr, %error, "peer link refused"),
                }
            }
        }
        let delay = backoff(shared.backoff_min, shared.backoff_max, attempt);
        attempt = attempt.saturating_add(1);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Moves messages from the queue to an established link until it fails or
/// the transport stops.
async fn pump<M: Serialize>(
    shared: &Shared,
    stop: &CancellationToken,
    peer: NodeId,
    conn: FrameReader<BoxIo>,
    rx: &mut mpsc::Receiver<M>,
) -> Ended {
    let (mut reader, mut writer) = conn.split();
    let mut out = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            _ = stop.cancelled() => {
                flush_and_close(shared, shared.max_frame_bytes, &peer, &mut writer, rx).await;
                return Ended::Stopped;
            }
            message = rx.recv() => match message {
                Some(message) => message,
                // Every sender is gone: the transport was dropped.
                None => return Ended::Stopped,
            },
            // The acceptor never writes after its hello, so anything here
            // (normally the end of the stream) means the link is gone.
            read = reader.next_raw() => return Ended::Lost(match read {
                Ok(None) => "closed by the peer".into(),
                Ok(Some(_)) => "the peer wrote on a one-way link".into(),
                Err(error) => error.to_string(),
            }),
        };
        let written = write_batch(
            shared,
            shared.max_frame_bytes,
            &peer,
            &mut writer,
            &mut out,
            first,
            rx,
        );
        if let Err(error) = written.await {
            return Ended::Lost(error.to_string());
        }
    }
}

/// Counts and logs a connection dropped for a read error: bad input is a
/// warning (someone sent garbage), a broken socket is routine.
pub(crate) fn report_read_error(
    shared: &Shared,
    who: Role,
    remote: SocketAddr,
    error: &CodecError,
) {
    if error.is_bad_input() {
        bump(&shared.counters.bad_frames, 1);
        warn!(%who, %remote, %error, "dropping connection: bad frame");
    } else {
        debug!(%who, %remote, %error, "connection failed");
    }
}

/// Reads an accepted peer connection and hands its messages to the node,
/// until the connection ends, a newer connection from the same peer
/// `replaces` it, or the transport stops.
pub(crate) async fn serve_incoming<M: DeserializeOwned>(
    shared: &Shared,
    peer: NodeId,
    remote: SocketAddr,
    mut reader: FrameReader<BoxIo>,
    inbound: &mpsc::Sender<(NodeId, M)>,
    replaced: CancellationToken,
) {
    reader.set_max_frame_bytes(shared.max_frame_bytes);
    loop {
        let read = tokio::select! {
            _ = shared.stopping.cancelled() => return,
            _ = replaced.cancelled() => {
                debug!(%peer, %remote, "connection superseded by a newer one from the same peer");
                return;
            }
            read = reader.next::<M>() => read,
        };
        match read {
            Ok(Some(message)) => {
                bump(&shared.counters.frames_in, 1);
                // Waiting here is the backpressure: a node that does not
                // keep up slows its peers' writers instead of buffering.
                if inbound.send((peer, message)).await.is_err() {
                    return;
                }
            }
            Ok(None) => {
                debug!(%peer, %remote, "peer closed its connection");
                return;
            }
            Err(error) => {
                report_read_error(shared, Role::Peer(peer), remote, &error);
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_half_the_cap_and_the_cap() {
        let (min, max) = (Duration::from_millis(50), Duration::from_secs(2));
        for attempt in 0..40 {
            let cap = (min * 2u32.saturating_pow(attempt.min(20))).min(max);
            let delay = backoff(min, max, attempt);
            assert!(
                delay >= cap / 2 && delay <= cap,
                "attempt {attempt}: {delay:?}"
            );
        }
    }
}
