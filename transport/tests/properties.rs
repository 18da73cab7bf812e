//! Property tests of the wire format: handshake and message frames round
//! trip, decoding is independent of how the stream is chunked, cut streams
//! are reported as truncated, and no input makes the decoder panic.

mod common;

use bytes::BytesMut;
use common::Msg;
use proptest::prelude::*;
use trexlock_paxos::NodeId;
use trexlock_transport::codec::{FrameDecoder, decode_frames, encode_frame};
use trexlock_transport::{CodecError, Hello, HelloReply, PROTOCOL_VERSION, Refusal, Role};

const MAX: usize = 1 << 16;

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        any::<u16>().prop_map(|n| Role::Peer(NodeId(n))),
        any::<u64>().prop_map(Role::Client),
    ]
}

fn hello() -> impl Strategy<Value = Hello> {
    (any::<u32>(), ".{0,40}", role()).prop_map(|(protocol_version, cluster_id, role)| Hello {
        protocol_version,
        cluster_id,
        role,
    })
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        (any::<u32>(), any::<u32>())
            .prop_map(|(supported, offered)| Refusal::IncompatibleVersion { supported, offered }),
        (".{0,20}", ".{0,20}")
            .prop_map(|(expected, offered)| Refusal::WrongCluster { expected, offered }),
        any::<u16>().prop_map(|n| Refusal::UnknownNode(NodeId(n))),
        Just(Refusal::MalformedHello),
        (role(), ".{0,40}").prop_map(|(claimed, certificate)| Refusal::NotCertified {
            claimed,
            certificate
        }),
        any::<u16>().prop_map(|n| Refusal::DuplicatePeer(NodeId(n))),
        (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(open, limit, per_address)| {
            Refusal::TooManyConnections {
                open,
                limit,
                per_address,
            }
        }),
    ]
}

fn reply() -> impl Strategy<Value = HelloReply> {
    prop_oneof![
        hello().prop_map(HelloReply::Accepted),
        refusal().prop_map(HelloReply::Refused),
    ]
}

fn msg() -> impl Strategy<Value = Msg> {
    prop_oneof![
        any::<u64>().prop_map(Msg::Ping),
        ".{0,64}".prop_map(Msg::Text),
        proptest::collection::vec(any::<u8>(), 0..512).prop_map(Msg::Blob),
    ]
}

fn encode_all<T: serde::Serialize>(messages: &[T]) -> (BytesMut, Vec<usize>) {
    let mut buf = BytesMut::new();
    let mut boundaries = vec![0];
    for m in messages {
        encode_frame(m, MAX, &mut buf).unwrap();
        boundaries.push(buf.len());
    }
    (buf, boundaries)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_hello_round_trips(h in hello()) {
        let (buf, _) = encode_all(std::slice::from_ref(&h));
        prop_assert_eq!(decode_frames::<Hello>(&buf, MAX).unwrap(), vec![h]);
    }

    #[test]
    fn any_hello_reply_round_trips(r in reply()) {
        let (buf, _) = encode_all(std::slice::from_ref(&r));
        prop_assert_eq!(decode_frames::<HelloReply>(&buf, MAX).unwrap(), vec![r]);
    }

    #[test]
    fn a_hello_is_judged_by_its_version_first(h in hello()) {
        let payload = postcard::to_stdvec(&h).unwrap();
        let decoded = Hello::decode(&payload);
        if h.protocol_version == PROTOCOL_VERSION {
            prop_assert_eq!(decoded, Ok(h));
        } else {
            prop_assert_eq!(decoded, Err(Refusal::IncompatibleVersion {
                supported: PROTOCOL_VERSION,
                offered: h.protocol_version,
            }));
        }
    }

    #[test]
    fn message_streams_decode_the_same_however_they_are_chunked(
        messages in proptest::collection::vec(msg(), 0..20),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..10),
    ) {
        let (stream, _) = encode_all(&messages);
        let mut cuts: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        cuts.push(0);
        cuts.push(stream.len());
        cuts.sort_unstable();
        let mut decoder = FrameDecoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for pair in cuts.windows(2) {
            buf.extend_from_slice(&stream[pair[0]..pair[1]]);
            while let Some(m) = decoder.decode::<Msg>(&mut buf).unwrap() {
                got.push(m);
            }
        }
        prop_assert!(decoder.decode_eof::<Msg>(&mut buf).unwrap().is_none());
        prop_assert_eq!(got, messages);
    }

    #[test]
    fn a_stream_cut_inside_a_frame_is_truncated(
        messages in proptest::collection::vec(msg(), 1..10),
        cut in any::<prop::sample::Index>(),
    ) {
        let (stream, boundaries) = encode_all(&messages);
        let cut = cut.index(stream.len());
        let result = decode_frames::<Msg>(&stream[..cut], MAX);
        match boundaries.iter().position(|&b| b == cut) {
            Some(complete) => prop_assert_eq!(result.unwrap(), messages[..complete].to_vec()),
            None => prop_assert!(matches!(result, Err(CodecError::Truncated))),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_frames::<Msg>(&bytes, MAX);
        let _ = decode_frames::<Hello>(&bytes, MAX);
        let _ = decode_frames::<HelloReply>(&bytes, MAX);
        let _ = Hello::decode(&bytes);
    }

    #[test]
    fn frames_with_a_valid_length_and_arbitrary_payload_never_panic_the_decoder(
        payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
    ) {
        let mut stream = Vec::new();
        for p in &payloads {
            stream.extend_from_slice(&(p.len() as u32).to_be_bytes());
            stream.extend_from_slice(p);
        }
        let _ = decode_frames::<Msg>(&stream, MAX);
        let _ = decode_frames::<HelloReply>(&stream, MAX);
    }
}
