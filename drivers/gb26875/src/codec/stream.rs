//! Streaming frame decoder: bytes from a socket in, frames and check failures out.

use bytes::{Buf, BytesMut};

use super::{Frame, FrameError, HEADER_LEN, Header, MAX_ADU_LEN, OVERHEAD, START};

/// Cuts a byte stream into frames (a [`tokio_util::codec::Decoder`]).
///
/// - Bytes before the next `@@` are skipped and counted ([`FrameDecoder::skipped`]).
/// - A frame split across reads is held until complete; several frames in one read come
///   out one by one.
/// - A frame failing its checks yields `Err(FrameError)` as an *item* (not a decoder error),
///   with its header when readable, and decoding continues: after a bad checksum or
///   command byte the whole frame is dropped (its framing was sound); after a bad length or
///   end marker only its first `@` is, so a real frame hidden inside (or one right after a
///   stray `@`) is still found.
/// - The buffer it needs is bounded: nothing is held beyond one maximal frame
///   ([`super::MAX_FRAME_LEN`]) waiting for completion.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    skipped: u64,
}

impl FrameDecoder {
    /// A fresh decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Bytes discarded so far while looking for `@@`.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Takes the next frame or check failure out of `buf`; `None` until more bytes arrive.
    pub fn next_item(&mut self, buf: &mut BytesMut) -> Option<Result<Frame, FrameError>> {
        self.sync(buf);
        let header = Header::parse(buf)?;
        let n = usize::from(header.adu_length);
        if n > MAX_ADU_LEN {
            buf.advance(1);
            return Some(Err(FrameError::LengthTooLarge { header }));
        }
        if buf.len() < OVERHEAD + n {
            return None;
        }
        let result = Frame::check_body(header, &buf[..OVERHEAD + n]);
        let consumed = match &result {
            Err(FrameError::BadEnd { .. }) => 1,
            _ => OVERHEAD + n,
        };
        buf.advance(consumed);
        Some(result)
    }

    /// Drops bytes up to the next `@@`; keeps a trailing `@` that may start one.
    fn sync(&mut self, buf: &mut BytesMut) {
        let at = buf.windows(2).position(|w| w == START);
        let drop = match at {
            Some(i) => i,
            None if buf.last() == Some(&START[0]) => buf.len() - 1,
            None => buf.len(),
        };
        if drop > 0 {
            self.skipped = self.skipped.saturating_add(drop as u64);
            buf.advance(drop);
        }
        debug_assert!(buf.len() < HEADER_LEN || buf.starts_with(&START));
    }
}

impl tokio_util::codec::Decoder for FrameDecoder {
    type Item = Result<Frame, FrameError>;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        Ok(self.next_item(buf))
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Self::Item>, Self::Error> {
        let item = self.next_item(buf);
        if item.is_none() {
            // A truncated frame at end of stream is dropped: the sender will retransmit it.
            self.skipped = self.skipped.saturating_add(buf.len() as u64);
            buf.clear();
        }
        Ok(item)
    }
}

impl tokio_util::codec::Encoder<&Frame> for FrameDecoder {
    type Error = std::io::Error;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        let bytes = frame
            .encode()
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        dst.extend_from_slice(&bytes);
        Ok(())
    }
}
