//! Opens a log journal on arbitrary file contents, in three shapes: raw
//! bytes; records framed with valid checks around arbitrary payloads
//! (so the decoder and replay see what the checksums would otherwise keep
//! from them), some checks deliberately broken; and a journal the engine
//! wrote, with bytes flipped and its end cut off. See `common` for the
//! properties checked, beyond "never panics, never allocates past the
//! limits".
#![no_main]

mod common;

use common::{Open, check, edited, mark, written};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use std::sync::OnceLock;
use trexlock_journal::LogJournal;
use trexlock_paxos::NodeId;

const NAME: &str = "journal.log";
const MAGIC: &[u8; 8] = b"TRXLOG\r\n";

/// The header record as the log journal encodes it (format version 2).
#[derive(Serialize)]
enum Header {
    Header {
        version: u32,
        cluster_id: String,
        node_id: NodeId,
        state_follows: bool,
        salt: u32,
    },
}

fn open_log(
    path: &std::path::Path,
    identity: trexlock_journal::JournalIdentity,
) -> common::OpenResult {
    Ok(Box::new(LogJournal::open(path, identity)?))
}

/// `payload` framed as the log journal frames records, its payload
/// checksum or frame check broken if `ctl` says so.
fn frame(out: &mut Vec<u8>, salt: u32, payload: &[u8], ctl: u8) {
    let mut head = Vec::with_capacity(12);
    head.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32fast::hash(payload) ^ u32::from(ctl & 1);
    head.extend_from_slice(&crc.to_le_bytes());
    let mut check = crc32fast::Hasher::new();
    check.update(&salt.to_le_bytes());
    check.update(&head);
    head.extend_from_slice(&(check.finalize() ^ u32::from(ctl >> 1 & 1)).to_le_bytes());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
}

/// A header (state following if `flags` says so, salt from the input),
/// then each chunk `[ctl][len][payload]` as a record, after `ctl >> 2`
/// zero bytes.
fn framed(body: &[u8]) -> Vec<u8> {
    let Some((&flags, rest)) = body.split_first() else {
        return MAGIC.to_vec();
    };
    let (salt, mut rest) = rest.split_at(rest.len().min(4));
    let mut salt_bytes = [0u8; 4];
    salt_bytes[..salt.len()].copy_from_slice(salt);
    let salt = u32::from_le_bytes(salt_bytes);
    let header = postcard::to_allocvec(&Header::Header {
        version: 2,
        cluster_id: "fuzz".to_owned(),
        node_id: NodeId(1),
        state_follows: flags & 1 == 1,
        salt,
    })
    .expect("encode header");
    let mut file = MAGIC.to_vec();
    frame(&mut file, 0, &header, flags >> 1 & 3);
    while let [ctl, len, tail @ ..] = rest {
        let (payload, tail) = tail.split_at(usize::from(*len).min(tail.len()));
        file.resize(file.len() + usize::from(ctl >> 2), 0);
        frame(&mut file, salt, payload, *ctl);
        rest = tail;
    }
    file
}

fuzz_target!(|data: &[u8]| {
    static WRITTEN: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    let open: Open = open_log;
    let [shape, selector, body @ ..] = data else {
        return;
    };
    let (custom_mark, body) = mark(*selector, body);
    match shape % 3 {
        0 => check(open, NAME, body, custom_mark, true),
        1 => check(open, NAME, &framed(body), custom_mark, true),
        _ => {
            let (file, real_mark) = WRITTEN.get_or_init(|| written(open, NAME));
            let mark = custom_mark.or((selector % 2 == 0).then_some(real_mark.as_slice()));
            check(open, NAME, &edited(file, body), mark, true);
        }
    }
});
