//! RTP (RFC 3550) packets for G.711 audio: header writing for the senders, parsing for the
//! simulators (and the fuzz target).
//!
//! ```text
//!  0                   1                   2                   3
//!  V=2|P|X| CC  |M|     PT      |       sequence number         |
//!  |                           timestamp                          |
//!  |                             SSRC                             |
//! ```
//! RFC 3550 §5.1: 12 bytes, big-endian. One packet carries 20 ms of 8 kHz G.711, i.e.
//! [`SAMPLES_PER_PACKET`] bytes, and the timestamp advances by the same number (RFC 3551 §4.5:
//! the G.711 clock rate is 8000 Hz, one octet per sample).

use std::time::Duration;

/// RFC 3550 §5.1: the fixed header length.
pub const HEADER_LEN: usize = 12;
/// 20 ms at 8 kHz (RFC 3551 §4.5, default ptime 20 for PCMU/PCMA).
pub const SAMPLES_PER_PACKET: usize = 160;
/// The packet interval matching [`SAMPLES_PER_PACKET`].
pub const PACKET_INTERVAL: Duration = Duration::from_millis(20);

/// The G.711 payload types of RFC 3551 Table 4.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    /// µ-law, static payload type 0.
    Pcmu,
    /// A-law, static payload type 8 (what Chinese installations mostly use).
    Pcma,
}

impl Codec {
    /// The static payload type number.
    pub fn payload_type(self) -> u8 {
        match self {
            Codec::Pcmu => 0,
            Codec::Pcma => 8,
        }
    }

    /// The codec of a static payload type.
    pub fn from_payload_type(pt: u8) -> Option<Codec> {
        match pt {
            0 => Some(Codec::Pcmu),
            8 => Some(Codec::Pcma),
            _ => None,
        }
    }

    /// The SDP encoding name.
    pub fn sdp_name(self) -> &'static str {
        match self {
            Codec::Pcmu => "PCMU",
            Codec::Pcma => "PCMA",
        }
    }
}

/// One sender's stream state: SSRC, next sequence number and timestamp.
#[derive(Debug, Clone)]
pub struct RtpStream {
    ssrc: u32,
    seq: u16,
    timestamp: u32,
    payload_type: u8,
    marker: bool,
}

impl RtpStream {
    /// A stream with random SSRC, initial sequence number and timestamp (RFC 3550 §5.1
    /// asks for random initial values).
    pub fn new(codec: Codec) -> RtpStream {
        RtpStream {
            ssrc: rand::random(),
            seq: rand::random(),
            timestamp: rand::random(),
            payload_type: codec.payload_type(),
            marker: true,
        }
    }

    /// This stream's SSRC.
    pub fn ssrc(&self) -> u32 {
        self.ssrc
    }

    /// Writes the next packet (header + payload) into `out` and advances the stream by one
    /// packet interval. `skipped` packet intervals that were not sent (a stall) advance the
    /// timestamp but not the sequence number, as RFC 3550 §5.1 prescribes for silence.
    pub fn packet(&mut self, payload: &[u8], skipped: u32, out: &mut Vec<u8>) {
        self.timestamp = self
            .timestamp
            .wrapping_add(skipped.wrapping_mul(SAMPLES_PER_PACKET as u32));
        out.clear();
        out.push(0x80);
        out.push(self.payload_type | if self.marker { 0x80 } else { 0 });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.timestamp.to_be_bytes());
        out.extend_from_slice(&self.ssrc.to_be_bytes());
        out.extend_from_slice(payload);
        self.marker = false;
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(SAMPLES_PER_PACKET as u32);
    }
}

/// A parsed RTP header and the payload it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtpPacket<'a> {
    /// The marker bit.
    pub marker: bool,
    /// Payload type.
    pub payload_type: u8,
    /// Sequence number.
    pub seq: u16,
    /// Timestamp.
    pub timestamp: u32,
    /// Synchronisation source.
    pub ssrc: u32,
    /// The payload (after CSRCs and any header extension, without padding).
    pub payload: &'a [u8],
}

/// Why bytes are not an RTP packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RtpError {
    /// Shorter than its header says.
    #[error("truncated rtp packet ({0} bytes)")]
    Truncated(usize),
    /// Version is not 2.
    #[error("rtp version {0}, want 2")]
    Version(u8),
    /// The padding count is larger than the payload.
    #[error("bad rtp padding")]
    Padding,
}

/// Parses one RTP packet. Never panics.
///
/// # Errors
/// [`RtpError`] for anything not a version 2 RTP packet of consistent length.
pub fn parse(b: &[u8]) -> Result<RtpPacket<'_>, RtpError> {
    let head = b.get(..HEADER_LEN).ok_or(RtpError::Truncated(b.len()))?;
    let version = head[0] >> 6;
    if version != 2 {
        return Err(RtpError::Version(version));
    }
    let csrcs = usize::from(head[0] & 0x0F);
    let mut at = HEADER_LEN + 4 * csrcs;
    if head[0] & 0x10 != 0 {
        // RFC 3550 §5.3.1: profile (16 bits), length in 32-bit words (16 bits), then words.
        let words = b.get(at + 2..at + 4).ok_or(RtpError::Truncated(b.len()))?;
        at += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = b.len();
    if head[0] & 0x20 != 0 {
        let pad = usize::from(*b.last().ok_or(RtpError::Truncated(0))?);
        end = end.checked_sub(pad).ok_or(RtpError::Padding)?;
    }
    let payload = b.get(at..end).ok_or(if end < at {
        RtpError::Padding
    } else {
        RtpError::Truncated(b.len())
    })?;
    Ok(RtpPacket {
        marker: head[1] & 0x80 != 0,
        payload_type: head[1] & 0x7F,
        seq: u16::from_be_bytes([head[2], head[3]]),
        timestamp: u32::from_be_bytes([head[4], head[5], head[6], head[7]]),
        ssrc: u32::from_be_bytes([head[8], head[9], head[10], head[11]]),
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_packets_advance_sequence_by_one_and_timestamp_by_160() {
        let mut s = RtpStream::new(Codec::Pcma);
        let mut buf = Vec::new();
        s.packet(&[0xD5; 160], 0, &mut buf);
        let a = parse(&buf).unwrap().clone();
        let (a_seq, a_ts, a_m) = (a.seq, a.timestamp, a.marker);
        assert_eq!(buf.len(), HEADER_LEN + 160);
        s.packet(&[0xD5; 160], 0, &mut buf);
        let b = parse(&buf).unwrap();
        assert_eq!(b.seq, a_seq.wrapping_add(1));
        assert_eq!(b.timestamp, a_ts.wrapping_add(160));
        assert_eq!((a_m, b.marker), (true, false));
        assert_eq!(b.payload_type, 8);
        assert_eq!(b.ssrc, s.ssrc());
        s.packet(&[0xD5; 160], 2, &mut buf);
        let c = parse(&buf).unwrap();
        assert_eq!(c.seq, a_seq.wrapping_add(2));
        assert_eq!(c.timestamp, a_ts.wrapping_add(160 * 4));
    }

    #[test]
    fn the_parser_refuses_short_or_wrong_version_packets_and_strips_padding() {
        assert_eq!(parse(&[0x80; 5]), Err(RtpError::Truncated(5)));
        assert_eq!(parse(&[0x40; 12]), Err(RtpError::Version(1)));
        let mut p = vec![0xA0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 9, 9, 0, 2];
        assert_eq!(parse(&p).unwrap().payload, &[9, 9]);
        p[15] = 200;
        assert_eq!(parse(&p), Err(RtpError::Padding));
        // a header extension longer than the packet
        assert!(parse(&[0x90, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 9]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics_and_payloads_stay_inside_the_packet(b in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(p) = parse(&b) {
                proptest::prop_assert!(p.payload.len() + HEADER_LEN <= b.len());
            }
        }
    }
}
