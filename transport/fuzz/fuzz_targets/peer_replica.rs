//! Feeds arbitrary bytes, decoded as a peer connection decodes them, to a
//! Paxos replica that has a leader and a log, as the node does: each
//! decoded message is handled in turn, with ticks in between. Whatever the
//! bytes, the replica must neither panic nor stop (a message it cannot use
//! is refused, never an error), and nothing it sends may exceed its
//! configured message limit.
//!
//! The first input byte picks the replica (the leader or a follower), the
//! sender the transport's handshake would have named, and whether frames
//! hold bare messages (as the node's peer frames carry them) or whole
//! envelopes (so routing fields are fuzzed too).
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::time::Duration;
use trexlock_paxos::{
    Ballot, Config, Envelope, JournalState, LogEntry, MAX_SLOT, Message, NodeId, Ready, Replica,
    Value,
};
use trexlock_transport::codec::FrameDecoder;

/// Small enough that the length check triggers often.
const MAX_FRAME: usize = 64 * 1024;

const MEMBERS: [NodeId; 3] = [NodeId(1), NodeId(2), NodeId(3)];

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn config(node: NodeId) -> Config {
    let mut cfg = Config::new(node, MEMBERS.to_vec());
    cfg.max_batch_bytes = 4096;
    cfg.max_message_bytes = 16 * 1024;
    cfg
}

/// Slots 1..=6 voted in ballot 2 of n1, 1..=4 known chosen.
fn journal() -> JournalState {
    let ballot = Ballot { counter: 2, node: NodeId(1) };
    let entries: BTreeMap<u64, LogEntry> = (1..=6u64)
        .map(|s| {
            let value = Value::Batch(vec![Bytes::from(format!("cmd{s}"))]);
            (s, LogEntry { ballot, value })
        })
        .collect();
    JournalState { promised: ballot, entries, committed: 4, ..Default::default() }
}

fn check(ready: &Ready, cfg: &Config) {
    for envelope in &ready.messages {
        if let Message::Accept { entries, .. } | Message::CatchupResponse { entries, .. } =
            &envelope.message
        {
            let bytes: usize = entries.iter().map(|(_, v)| v.entry_bytes()).sum();
            assert!(bytes <= cfg.max_message_bytes, "{bytes} bytes in one message");
        }
    }
}

/// n1 elected in ballot 3 with n2's promise, a command proposed.
fn leader() -> Replica {
    let mut r = Replica::new(config(NodeId(1)), journal(), Duration::ZERO).expect("valid");
    let ready = r.tick(ms(10_000)).expect("tick");
    let ballot = ready
        .messages
        .iter()
        .find_map(|e| match e.message {
            Message::Prepare { ballot, .. } => Some(ballot),
            _ => None,
        })
        .expect("a prepare");
    let promise = Message::Promise {
        ballot,
        committed: 4,
        truncated: 0,
        entries: vec![],
        first: 1,
        through: MAX_SLOT,
    };
    let envelope = Envelope { from: NodeId(2), to: NodeId(1), message: promise };
    let _ = r.handle(ms(10_001), envelope).expect("promise");
    assert!(r.is_leader());
    let _ = r.propose(ms(10_002), vec![Bytes::from_static(b"queued")]).expect("propose");
    r
}

/// n2 following n1's ballot 2.
fn follower() -> Replica {
    let mut r = Replica::new(config(NodeId(2)), journal(), Duration::ZERO).expect("valid");
    let ballot = Ballot { counter: 2, node: NodeId(1) };
    let commit = Message::Commit { ballot, committed: 5 };
    let envelope = Envelope { from: NodeId(1), to: NodeId(2), message: commit };
    let _ = r.handle(ms(10_001), envelope).expect("commit");
    r
}

/// Decodes frames as a connection does, up to the first bad one.
fn frames<M: DeserializeOwned>(stream: &[u8]) -> Vec<M> {
    let mut decoder = FrameDecoder::new(MAX_FRAME);
    let mut buf = BytesMut::from(stream);
    let mut messages = Vec::new();
    while let Ok(Some(m)) = decoder.decode_eof(&mut buf) {
        messages.push(m);
    }
    messages
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let mut replica = if selector & 1 == 0 { leader() } else { follower() };
    let me = replica.id();
    let cfg = replica.config().clone();
    let from = [NodeId(1), NodeId(2), NodeId(3), NodeId(0), NodeId(9)][usize::from(selector >> 1) % 5];
    let envelopes: Vec<Envelope> = if selector & 0x80 == 0 {
        frames::<Message>(stream)
            .into_iter()
            .map(|message| Envelope { from, to: me, message })
            .collect()
    } else {
        frames::<Envelope>(stream)
    };
    let mut now = ms(10_010);
    for envelope in envelopes {
        let ready = replica.handle(now, envelope).expect("no message stops a replica");
        check(&ready, &cfg);
        now += ms(7);
        let ready = replica.tick(now).expect("no tick stops a replica");
        check(&ready, &cfg);
    }
    for _ in 0..3 {
        now += ms(400);
        let ready = replica.tick(now).expect("no tick stops a replica");
        check(&ready, &cfg);
    }
});
