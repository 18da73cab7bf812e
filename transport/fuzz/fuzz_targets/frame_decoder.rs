//! Feeds arbitrary bytes to the frame decoder, as a connection would, for
//! every message type the transport decodes. Beyond "never panics, never
//! allocates past the frame limit", it checks that decoding in chunks (as
//! bytes trickle in from a socket) gives exactly the result of decoding the
//! whole stream at once.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use trexlock_transport::codec::{FrameDecoder, decode_frames};
use trexlock_transport::{Hello, HelloReply};

/// Small enough that the length check triggers often.
const MAX_FRAME: usize = 4096;

fn chunked<M: DeserializeOwned>(stream: &[u8], chunk: usize) -> Result<Vec<M>, String> {
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut messages = Vec::new();
    for piece in stream.chunks(chunk) {
        buf.extend_from_slice(piece);
        while let Some(m) = decoder.decode(&mut buf).map_err(|e| e.to_string())? {
            messages.push(m);
        }
    }
    while let Some(m) = decoder.decode_eof(&mut buf).map_err(|e| e.to_string())? {
        messages.push(m);
    }
    Ok(messages)
}

fn check<M: DeserializeOwned + PartialEq + Debug>(stream: &[u8], chunk: usize) {
    let whole = decode_frames::<M>(stream, MAX_FRAME).map_err(|e| e.to_string());
    let pieces = chunked::<M>(stream, chunk);
    assert_eq!(whole, pieces, "chunk size {chunk}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(selector % 32) + 1;
    match selector / 32 % 4 {
        0 => check::<Hello>(stream, chunk),
        1 => check::<HelloReply>(stream, chunk),
        2 => check::<trexlock_paxos::Envelope>(stream, chunk),
        _ => {
            let _ = Hello::decode(stream);
        }
    }
});
