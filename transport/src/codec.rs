//! Frames on the wire: a 4-byte big-endian length (the layout of
//! tokio-util's `LengthDelimitedCodec`) followed by the postcard encoding of
//! one message.
//!
//! Decoding is strict: a payload must decode completely as the expected type
//! with no byte left over, so a frame of another message type is rejected
//! rather than half-read.

use crate::error::CodecError;
use bytes::{Buf, BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadHalf, WriteHalf};

/// The size of the length prefix in front of every frame.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// The largest `max_frame_bytes` the 4-byte length prefix can express.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

/// Decodes one frame payload (without its length prefix) as an `M`,
/// guaranteeing that the whole payload was consumed.
pub fn decode_payload<M: DeserializeOwned>(payload: &[u8]) -> Result<M, CodecError> {
    let (message, rest) = postcard::take_from_bytes(payload).map_err(CodecError::Malformed)?;
    if rest.is_empty() {
        Ok(message)
    } else {
        Err(CodecError::TrailingBytes { extra: rest.len() })
    }
}

/// Appends `message` to `dst` as one length-prefixed frame, or leaves `dst`
/// unchanged and fails if it cannot be encoded or exceeds `max_frame_bytes`.
/// The message is encoded once, straight into `dst`.
pub fn encode_frame<M: Serialize>(
    message: &M,
    max_frame_bytes: usize,
    dst: &mut BytesMut,
) -> Result<(), CodecError> {
    let start = dst.len();
    dst.put_u32(0);
    let encoded = postcard::serialize_with_flavor(message, Append(dst));
    let len = dst.len() - start - LENGTH_PREFIX_BYTES;
    let prefix = match encoded {
        Err(e) => Err(CodecError::Unencodable(e)),
        Ok(()) => u32::try_from(len)
            .ok()
            .filter(|_| len <= max_frame_bytes)
            .ok_or(CodecError::Oversized {
                max: max_frame_bytes,
            }),
    };
    match prefix {
        Ok(prefix) => {
            dst[start..start + LENGTH_PREFIX_BYTES].copy_from_slice(&prefix.to_be_bytes());
            Ok(())
        }
        Err(e) => {
            dst.truncate(start);
            Err(e)
        }
    }
}

/// A postcard output that appends to a frame buffer.
struct Append<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for Append<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Splits a byte stream into frames and decodes each, exactly as a
/// connection does: it refuses a frame longer than `max_frame_bytes` as soon
/// as its length prefix arrives, reports a stream that ends inside a frame
/// as [`CodecError::Truncated`], and never reserves memory for a declared
/// length: the buffer grows only with the bytes that actually arrive.
/// (tokio-util's `LengthDelimitedCodec` reserves the whole declared length
/// on reading the prefix, which lets a few stalled connections pin
/// gigabytes.)
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    /// A decoder that refuses frames longer than `max_frame_bytes`.
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// Changes the frame limit from the next frame on (the handshake uses a
    /// small one, the session after it the configured one).
    pub fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.max_frame_bytes = max_frame_bytes;
    }

    /// Removes and decodes the next complete frame from `buf`, or returns
    /// `None` (consuming nothing) if it is not complete yet.
    pub fn decode<M: DeserializeOwned>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<M>, CodecError> {
        self.next_payload(buf, false)?
            .map(|payload| decode_payload(&payload))
            .transpose()
    }

    /// Like [`FrameDecoder::decode`], for when the stream has ended: a
    /// partial frame left over is [`CodecError::Truncated`].
    pub fn decode_eof<M: DeserializeOwned>(
        &mut self,
        buf: &mut BytesMut,
    ) -> Result<Option<M>, CodecError> {
        self.next_payload(buf, true)?
            .map(|payload| decode_payload(&payload))
            .transpose()
    }

    /// The next complete frame's payload, undecoded.
    fn next_payload(
        &mut self,
        buf: &mut BytesMut,
        eof: bool,
    ) -> Result<Option<BytesMut>, CodecError> {
        if let Some(prefix) = buf.first_chunk::<LENGTH_PREFIX_BYTES>() {
            let len = u32::from_be_bytes(*prefix) as usize;
            if len > self.max_frame_bytes {
                return Err(CodecError::Oversized {
                    max: self.max_frame_bytes,
                });
            }
            if buf.len() - LENGTH_PREFIX_BYTES >= len {
                buf.advance(LENGTH_PREFIX_BYTES);
                return Ok(Some(buf.split_to(len)));
            }
        }
        if eof && !buf.is_empty() {
            Err(CodecError::Truncated)
        } else {
            Ok(None)
        }
    }
}

/// Decodes a complete byte stream into its messages, failing on the first
/// bad frame exactly as a connection would. This is the fuzzing entry point.
pub fn decode_frames<M: DeserializeOwned>(
    stream: &[u8],
    max_frame_bytes: usize,
) -> Result<Vec<M>, CodecError> {
    let mut decoder = FrameDecoder::new(max_frame_bytes);
    let mut buf = BytesMut::from(stream);
    let mut messages = Vec::new();
    while let Some(message) = decoder.decode_eof(&mut buf)? {
        messages.push(message);
    }
    Ok(messages)
}

/// How much a connection asks the socket for at least, per read.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Reads frames from a socket through a [`FrameDecoder`].
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R, max_frame_bytes: usize) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_frame_bytes),
        }
    }

    /// The next message, or `None` when the stream ends cleanly between
    /// frames. Cancel-safe: bytes already read stay buffered, so it can be
    /// used in `select!`.
    pub(crate) async fn next<M: DeserializeOwned>(&mut self) -> Result<Option<M>, CodecError> {
        self.next_raw()
            .await?
            .map(|payload| decode_payload(&payload))
            .transpose()
    }

    /// The next message if a whole frame of it is already buffered, else
    /// `None`; never reads the socket, so a reader that just got one
    /// message can take the rest of the same read without waiting again.
    pub(crate) fn next_buffered<M: DeserializeOwned>(&mut self) -> Result<Option<M>, CodecError> {
        self.decoder
            .next_payload(&mut self.buf, false)?
            .map(|payload| decode_payload(&payload))
            .transpose()
    }

    /// The next frame's payload, undecoded (cancel-safe like `next`).
    pub(crate) async fn next_raw(&mut self) -> Result<Option<BytesMut>, CodecError> {
        loop {
            if let Some(payload) = self.decoder.next_payload(&mut self.buf, false)? {
                return Ok(Some(payload));
            }
            // Room for a chunk per read, so that a batch of small frames
            // arrives in one read; a large frame grows the buffer as its
            // bytes arrive, never ahead of them.
            if self.buf.capacity() - self.buf.len() < READ_CHUNK_BYTES / 4 {
                self.buf.reserve(READ_CHUNK_BYTES);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return self.decoder.next_payload(&mut self.buf, true);
            }
        }
    }

    pub(crate) fn set_max_frame_bytes(&mut self, max_frame_bytes: usize) {
        self.decoder.set_max_frame_bytes(max_frame_bytes);
    }

    pub(crate) fn get_mut(&mut self) -> &mut R {
        &mut self.io
    }
}

impl<S: AsyncRead + AsyncWrite> FrameReader<S> {
    /// Splits the socket after the handshake: frames keep being read from
    /// the read half (bytes already buffered are kept), the write half is
    /// returned for the caller's writes.
    pub(crate) fn split(self) -> (FrameReader<ReadHalf<S>>, WriteHalf<S>) {
        let (read, write) = tokio::io::split(self.io);
        let reader = FrameReader {
            io: read,
            buf: self.buf,
            decoder: self.decoder,
        };
        (reader, write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_cut_right_after_a_length_prefix_is_truncated() {
        let mut frame = BytesMut::new();
        encode_frame(&7u32, 1024, &mut frame).unwrap();
        let cut = &frame[..LENGTH_PREFIX_BYTES];
        assert!(matches!(
            decode_frames::<u32>(cut, 1024),
            Err(CodecError::Truncated)
        ));
    }

    #[test]
    fn an_empty_stream_holds_no_messages() {
        assert!(decode_frames::<u32>(&[], 1024).unwrap().is_empty());
    }

    #[test]
    fn a_frame_over_the_limit_is_refused_on_both_sides() {
        let mut buf = BytesMut::new();
        let big = vec![0u8; 100];
        assert!(matches!(
            encode_frame(&big, 50, &mut buf),
            Err(CodecError::Oversized { max: 50 })
        ));
        assert!(buf.is_empty(), "a refused frame leaves nothing behind");
        encode_frame(&big, 1000, &mut buf).unwrap();
        assert!(matches!(
            decode_frames::<Vec<u8>>(&buf, 50),
            Err(CodecError::Oversized { max: 50 })
        ));
    }

    #[test]
    fn a_refused_frame_leaves_the_frames_before_it_intact() {
        let mut buf = BytesMut::new();
        encode_frame(&1u32, 50, &mut buf).unwrap();
        let before = buf.clone();
        assert!(matches!(
            encode_frame(&vec![0u8; 100], 50, &mut buf),
            Err(CodecError::Oversized { max: 50 })
        ));
        assert_eq!(buf, before);
        encode_frame(&2u32, 50, &mut buf).unwrap();
        assert_eq!(decode_frames::<u32>(&buf, 50).unwrap(), vec![1, 2]);
    }

    #[test]
    fn a_declared_frame_length_reserves_no_memory_before_its_bytes_arrive() {
        let mut decoder = FrameDecoder::new(16 << 20);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&((16u32 << 20) - 1).to_be_bytes());
        buf.extend_from_slice(&[0; 100]);
        assert!(decoder.decode::<Vec<u8>>(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 64 * 1024, "reserved {}", buf.capacity());
    }

    #[test]
    fn a_frame_split_anywhere_decodes_once_complete() {
        let mut frame = BytesMut::new();
        encode_frame(&vec![9u8; 300], 1024, &mut frame).unwrap();
        let mut decoder = FrameDecoder::new(1024);
        let mut buf = BytesMut::new();
        for (i, byte) in frame.iter().enumerate() {
            assert!(
                decoder.decode::<Vec<u8>>(&mut buf).unwrap().is_none(),
                "{i}"
            );
            buf.extend_from_slice(&[*byte]);
        }
        assert_eq!(
            decoder.decode::<Vec<u8>>(&mut buf).unwrap(),
            Some(vec![9; 300])
        );
        assert!(buf.is_empty());
    }

    #[test]
    fn a_payload_with_trailing_bytes_is_the_wrong_type() {
        let mut buf = BytesMut::new();
        encode_frame(&(1u8, 2u8), 1024, &mut buf).unwrap();
        assert!(matches!(
            decode_frames::<u8>(&buf, 1024),
            Err(CodecError::TrailingBytes { extra: 1 })
        ));
    }
}
