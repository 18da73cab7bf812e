//! Feeds arbitrary bytes to a lease table the way a node's remote server
//! gets them: decoded as client frames under the client frame limit, each
//! lease request authorized for the connection's identity
//! (`remote::authorize`), admitted (`table::admit`) and, if both let it
//! through, applied (and so executed) as the leader would propose it. Whatever the bytes, nothing
//! may panic, admission must let through only what fits the table's
//! limits, the table must stay within its caps, and it may hold no more
//! than a fixed amount per request it executed beyond the bytes it was
//! sent (memory grows with what clients send, never by itself).
//!
//! The first input byte picks how far the leader's clock moves between
//! requests (so leases expire and sessions are forgotten), who is on the
//! other end (plain TCP, a client, an administrator or a node), whether a new
//! leader takes over now and then, and whether the rest is a stream of
//! length-prefixed frames, exactly as a connection delivers it, or of bare
//! postcard messages (each framed and decoded again, so the path is the
//! same; this lets the fuzzer reach deep table states sooner).
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use trexlock_lease::command::{Body, Command, Op, Outcome};
use trexlock_lease::remote::{self, ClientMessage};
use trexlock_lease::table::{
    self, LeaseTable, MAX_LEASES, MAX_REQUEST_BYTES, MAX_SESSIONS, MAX_VALUE_BYTES,
};
use trexlock_paxos::{Ballot, NodeId};
use trexlock_transport::codec::{FrameDecoder, encode_frame};
use trexlock_transport::{DEFAULT_MAX_CLIENT_FRAME_BYTES, Identity};

/// Bytes a command adds around its request (epoch, elapsed time, tags).
const COMMAND_OVERHEAD_BYTES: usize = 64;

/// Table bytes one executed request may add beyond its own encoding:
/// index entries, a session and its remembered outcome, a holder.
const TABLE_BYTES_PER_REQUEST: usize = 256;

/// Decodes frames as a connection does, up to the first bad one (which
/// would close the connection).
fn framed(stream: &[u8]) -> Vec<ClientMessage> {
    let mut decoder = FrameDecoder::new(DEFAULT_MAX_CLIENT_FRAME_BYTES);
    let mut buf = BytesMut::from(stream);
    let mut messages = Vec::new();
    while let Ok(Some(m)) = decoder.decode_eof(&mut buf) {
        messages.push(m);
    }
    messages
}

/// Bare postcard messages, each put in a frame and decoded as above.
fn bare(mut stream: &[u8]) -> Vec<ClientMessage> {
    let mut frames = BytesMut::new();
    while let Ok((message, rest)) = postcard::take_from_bytes::<ClientMessage>(stream) {
        stream = rest;
        if encode_frame(&message, DEFAULT_MAX_CLIENT_FRAME_BYTES, &mut frames).is_err() {
            break;
        }
    }
    framed(&frames)
}

/// Who is on the other end of the connection, as its certificate says.
fn identity(pick: u8) -> Option<Identity> {
    let cluster = "fuzz".to_owned();
    match pick % 4 {
        0 => None,
        1 => Some(Identity::Client {
            cluster,
            name: "alice".into(),
        }),
        2 => Some(Identity::Admin {
            cluster,
            name: "ops".into(),
        }),
        _ => Some(Identity::Node {
            cluster,
            node: NodeId(1),
        }),
    }
}

fn check_bounds(table: &LeaseTable, outcome: &Outcome) {
    assert!(table.len() <= MAX_LEASES, "{} leases", table.len());
    assert!(
        table.sessions_len() <= MAX_SESSIONS,
        "{} sessions",
        table.sessions_len()
    );
    if let Outcome::Granted { value: Some(v), .. } | Outcome::Holder { value: Some(v), .. } =
        outcome
    {
        assert!(v.len() <= MAX_VALUE_BYTES, "a value of {} bytes", v.len());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let step_us =
        [0, 1_000, 100_000, 5_000_000, 61_000_000, 601_000_000][usize::from(selector % 6)];
    let new_leaders = selector & 0x40 != 0;
    let identity = identity(selector >> 3);
    let messages = if selector & 0x80 == 0 {
        framed(stream)
    } else {
        bare(stream)
    };

    let mut table = LeaseTable::new();
    let mut epoch = Ballot {
        counter: 1,
        node: NodeId(1),
    };
    let mut elapsed_us = 0u64;
    let mut executed = 0usize;
    for (i, message) in messages.into_iter().enumerate() {
        let ClientMessage::Lease(request) = message else {
            continue;
        };
        elapsed_us = elapsed_us.saturating_add(step_us);
        if new_leaders && i % 7 == 6 {
            epoch.counter += 1;
            elapsed_us = 0;
        }
        let allowed = remote::authorize(identity.as_ref(), &request.op);
        if allowed.is_ok() && matches!(request.op, Op::ForceRelease { .. }) {
            assert!(
                matches!(identity, Some(Identity::Admin { .. })),
                "a forced release from {identity:?} was let through"
            );
        }
        let body = match allowed.and_then(|()| table::admit(&request)) {
            Ok(()) => {
                executed += 1;
                Body::Request(request)
            }
            // Refused before proposing: the log sees only time passing.
            Err(_) => Body::Tick,
        };
        let command = Command {
            epoch,
            elapsed_us,
            body,
        };
        assert!(
            command.encode().len() <= MAX_REQUEST_BYTES + COMMAND_OVERHEAD_BYTES,
            "admission let through a command of {} bytes",
            command.encode().len()
        );
        let applied = table.apply(&command);
        for response in &applied.responses {
            check_bounds(&table, &response.outcome);
        }
    }

    let snapshot = table.to_snapshot();
    assert!(
        snapshot.len() <= 2 * stream.len() + TABLE_BYTES_PER_REQUEST * executed + 64,
        "{} table bytes from {} input bytes and {executed} requests",
        snapshot.len(),
        stream.len()
    );
    let restored = LeaseTable::from_snapshot(&snapshot).expect("a snapshot restores");
    assert_eq!(restored, table, "a snapshot restores the same table");
});
