//! Byte limits: no slot holds more than `max_batch_bytes` of commands, no
//! Accept or catch-up response the replica builds exceeds
//! `max_message_bytes`, and the size estimate bounds the real encoding.

use super::*;
use crate::types::{COMMAND_OVERHEAD_BYTES, ENTRY_OVERHEAD_BYTES, MESSAGE_OVERHEAD_BYTES};

/// N1 elected leader of a new cluster under `cfg`.
fn leader(cfg: Config) -> Replica {
    let mut r = Replica::new(cfg, JournalState::default(), T0).unwrap();
    for peer in [N2, N3] {
        let reply = Message::ProbeReply {
            promised: Ballot::ZERO,
            last_slot: 0,
        };
        let _ = r.handle(T0, env(peer, N1, reply)).unwrap();
    }
    let ready = r.tick(ms(10_000)).unwrap();
    let Message::Prepare { ballot, .. } = ready.messages[0].message else {
        panic!("expected a prepare");
    };
    let promise = Message::Promise {
        ballot,
        committed: 0,
        truncated: 0,
        first: 1,
        through: MAX_SLOT,
        entries: vec![],
    };
    let _ = r.handle(ms(10_001), env(N2, N1, promise)).unwrap();
    assert!(r.is_leader());
    r
}

fn small_limits() -> Config {
    let mut cfg = config(N1);
    cfg.max_batch_bytes = 1000;
    cfg.max_message_bytes = 1000 + ENTRY_OVERHEAD_BYTES + MESSAGE_OVERHEAD_BYTES + 500;
    cfg
}

/// The real encoded size of a message, with the wrapper and frame prefix
/// the estimate leaves room for.
fn encoded(envelope: &Envelope) -> usize {
    postcard::to_allocvec(envelope).unwrap().len()
}

fn estimated(message: &Message) -> usize {
    let entries = match message {
        Message::Accept { entries, .. } | Message::CatchupResponse { entries, .. } => entries,
        _ => return 0,
    };
    MESSAGE_OVERHEAD_BYTES + entries.iter().map(|(_, v)| v.entry_bytes()).sum::<usize>()
}

#[test]
fn a_command_larger_than_a_slot_is_refused_and_none_of_its_call_is_taken() {
    let mut r = leader(small_limits());
    let fits = Bytes::from(vec![1u8; 1000 - COMMAND_OVERHEAD_BYTES]);
    let too_big = Bytes::from(vec![2u8; 1000 - COMMAND_OVERHEAD_BYTES + 1]);
    let err = r
        .propose(ms(10_002), vec![fits.clone(), too_big])
        .unwrap_err();
    assert_eq!(
        err,
        ProposeError::CommandTooLarge {
            index: 1,
            bytes: 1001,
            limit: 1000
        }
    );
    let ready = r.propose(ms(10_003), vec![fits.clone()]).unwrap();
    assert_eq!(
        ready.write.entries,
        vec![(
            1,
            LogEntry {
                ballot: b(1, N1),
                value: Value::Batch(vec![fits])
            }
        )],
        "the refused call left nothing queued"
    );
}

proptest! {
    #[test]
    fn slots_respect_the_byte_limit_and_accepts_the_message_limit_however_much_is_proposed(
        sizes in proptest::collection::vec(0usize..990, 1..200),
    ) {
        let cfg = small_limits();
        let mut r = leader(cfg.clone());
        let commands: Vec<Bytes> = sizes.iter().map(|n| Bytes::from(vec![7u8; *n])).collect();
        let ready = r.propose(ms(10_002), commands.clone()).unwrap();
        let mut packed = Vec::new();
        for (_, entry) in &ready.write.entries {
            let cmds = entry.value.commands();
            let bytes: usize = cmds.iter().map(crate::types::command_bytes).sum();
            prop_assert!(bytes <= cfg.max_batch_bytes && cmds.len() <= cfg.max_batch);
            packed.extend(cmds.iter().cloned());
        }
        prop_assert_eq!(&packed[..], &commands[..packed.len()], "in order, none lost");
        let accepts = ready
            .messages
            .iter()
            .filter(|e| matches!(e.message, Message::Accept { .. }))
            .count();
        prop_assert!(accepts >= 2, "one Accept or more per peer");
        for envelope in &ready.messages {
            prop_assert!(estimated(&envelope.message) <= cfg.max_message_bytes);
            if matches!(envelope.message, Message::Accept { .. }) {
                // One byte of wrapper and four of frame prefix are within the margin.
                prop_assert!(encoded(envelope) + 5 <= estimated(&envelope.message));
            }
        }
        // Retransmissions are split the same way.
        let ready = r.tick(ms(20_000)).unwrap();
        for envelope in &ready.messages {
            prop_assert!(estimated(&envelope.message) <= cfg.max_message_bytes);
        }
    }
}

#[test]
fn a_catch_up_response_stays_within_the_message_limit() {
    let mut cfg = small_limits();
    cfg.window = 1000;
    let mut r = leader(cfg.clone());
    let commands: Vec<Bytes> = (0..40).map(|_| Bytes::from(vec![3u8; 900])).collect();
    let ready = r.propose(ms(10_002), commands).unwrap();
    let slots: Vec<Slot> = ready.write.entries.iter().map(|(s, _)| *s).collect();
    assert_eq!(slots.len(), 40, "one 900-byte command per slot");
    let accepted = Message::Accepted {
        ballot: b(1, N1),
        slots,
        committed: 0,
    };
    let _ = r.handle(ms(10_003), env(N2, N1, accepted)).unwrap();
    assert_eq!(r.committed(), 40);
    let ready = r
        .handle(ms(10_004), env(N3, N1, Message::CatchupRequest { from: 1 }))
        .unwrap();
    let Message::CatchupResponse { entries, .. } = only_message(&ready) else {
        panic!("expected a catch-up response");
    };
    assert_eq!(
        entries.len(),
        1,
        "only one slot of 900 bytes fits in 1.6 KB"
    );
    assert!(estimated(only_message(&ready)) <= cfg.max_message_bytes);
    assert!(encoded(&ready.messages[0]) <= cfg.max_message_bytes);
}

#[test]
fn byte_limits_under_which_a_full_slot_would_not_fit_a_message_are_refused() {
    let mut cfg = config(N1);
    cfg.max_message_bytes = cfg.max_batch_bytes;
    assert!(matches!(
        cfg.validate(),
        Err(ConfigError::ByteLimits { .. })
    ));
    cfg.max_batch_bytes = 0;
    assert!(matches!(
        cfg.validate(),
        Err(ConfigError::ByteLimits { .. })
    ));
    let defaults = config(N1);
    assert_eq!(defaults.max_batch_bytes, 1024 * 1024);
    assert_eq!(defaults.max_message_bytes, 4 * 1024 * 1024);
    assert_eq!(defaults.validate(), Ok(()));
}

#[test]
fn a_promise_too_large_for_one_message_comes_in_parts_that_report_on_every_slot() {
    let votes: BTreeMap<Slot, LogEntry> = (1..=40u64)
        .map(|s| {
            let value = Value::Batch(vec![Bytes::from(vec![s as u8; 900])]);
            (
                s,
                LogEntry {
                    ballot: b(1, N1),
                    value,
                },
            )
        })
        .collect();
    let state = JournalState {
        promised: b(1, N1),
        entries: votes.clone(),
        committed: 10,
        ..Default::default()
    };
    let mut cfg = small_limits();
    cfg.node = N2;
    let mut r = Replica::new(cfg.clone(), state, T0).unwrap();
    let prepare = Message::Prepare {
        ballot: b(2, N3),
        from: 3,
    };
    let ready = r.handle(ms(1), env(N3, N2, prepare)).unwrap();
    assert!(ready.messages.len() >= 10, "{} parts", ready.messages.len());
    let mut next = 3;
    let mut reported = Vec::new();
    for envelope in &ready.messages {
        assert!(
            encoded(envelope) <= cfg.max_message_bytes,
            "{} bytes",
            encoded(envelope)
        );
        let Message::Promise {
            entries,
            first,
            through,
            committed,
            ..
        } = &envelope.message
        else {
            panic!("only promises: {envelope:?}");
        };
        assert_eq!((*first, *committed), (next, 10), "parts follow one another");
        assert!(entries.iter().all(|(s, _)| (*first..=*through).contains(s)));
        reported.extend(entries.iter().cloned());
        next = through + 1;
    }
    assert_eq!(
        next,
        MAX_SLOT + 1,
        "the last part runs through the last slot"
    );
    let expected: Vec<(Slot, LogEntry)> = votes.range(3..).map(|(s, e)| (*s, e.clone())).collect();
    assert_eq!(
        reported, expected,
        "every vote from the requested slot on, once"
    );
}
