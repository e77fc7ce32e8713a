//! DL/T 645-2007 frames: pure, no I/O, never panics (fuzzed by `fuzz/fuzz_targets/dlt645_parse.rs`).
//!
//! Wire format (DL/T 645-2007 §4 "帧格式"):
//!
//! ```text
//! [FE ..]  68  A0 A1 A2 A3 A4 A5  68  C  L  DATA[L]  CS  16
//! ```
//! - zero to four `FE` wake-up bytes may precede a frame in either direction;
//! - the address is 12 BCD digits, **low byte first**; `999999999999` is the broadcast
//!   address (no answer), `AAAAAAAAAAAA` the wildcard a single meter on a bus answers;
//! - `C` is the control code: D7 direction (1 = answer from the meter), D6 abnormal answer,
//!   D5 following frames, D4..D0 the function;
//! - every data byte travels with `0x33` added (mod 256); [`Frame::data`] holds the value
//!   with the offset removed;
//! - `CS` is the sum mod 256 of every byte from the first `68` through the last data byte.
//!
//! [`Decoder`] is a streaming decoder for a half-duplex bus: it skips wake-up bytes and
//! garbage, resynchronises after a frame that fails its end byte or checksum (dropping only
//! the start byte, so a real frame hidden inside a torn one is still found), and keeps an
//! unfinished frame until more bytes arrive. Telling echo and other meters' answers apart
//! is the caller's business ([`Frame::is_answer`], the address): the decoder only frames.
//!
//! Written by hand: no maintained Rust crate implements DL/T 645 (the format is a few
//! dozen lines; the work is in the rejection rules, which are ours).

use std::fmt;
use std::str::FromStr;

/// DL/T 645-2007 §4: each frame starts (and its header ends) with `68H`.
pub const START: u8 = 0x68;
/// DL/T 645-2007 §4: each frame ends with `16H`.
pub const END: u8 = 0x16;
/// DL/T 645-2007 §4.2: wake-up bytes sent before a frame.
pub const PREAMBLE: u8 = 0xFE;
/// DL/T 645-2007 §4.2: data bytes are sent with `33H` added.
pub const OFFSET: u8 = 0x33;
/// Bytes of a frame besides its data: `68`, 6 address, `68`, C, L, CS, `16`.
pub const OVERHEAD: usize = 12;
/// The longest data field the length byte allows.
pub const MAX_DATA: usize = 255;

/// A meter's communication address, kept in wire order (low byte first).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub [u8; 6]);

impl Address {
    /// DL/T 645-2007 §4.1.2: `999999999999` addresses every meter (broadcast, no answer).
    pub const BROADCAST: Address = Address([0x99; 6]);
    /// DL/T 645-2007 §4.1.2: `AAAAAAAAAAAA` is answered by the (single) meter on the bus.
    pub const WILDCARD: Address = Address([0xAA; 6]);

    /// Whether every byte is two BCD digits (a real meter address).
    pub fn is_bcd(&self) -> bool {
        self.0.iter().all(|b| b >> 4 <= 9 && b & 0x0F <= 9)
    }
}

impl fmt::Display for Address {
    /// As printed on the meter's name plate: most significant digits first.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().rev() {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl FromStr for Address {
    type Err = String;

    /// Parses 1 to 12 decimal digits as printed on the meter (most significant first;
    /// shorter addresses are padded with zeros, DL/T 645-2007 §4.1.2), or the wildcard
    /// `AAAAAAAAAAAA`.
    fn from_str(s: &str) -> Result<Address, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("AAAAAAAAAAAA") {
            return Ok(Address::WILDCARD);
        }
        if s.is_empty() || s.len() > 12 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "meter address {s:?} is not 1-12 decimal digits (as on the name plate, e.g. \"000102030425\") or \"AAAAAAAAAAAA\""
            ));
        }
        let padded = format!("{s:0>12}");
        let digits = padded.as_bytes();
        let mut out = [0u8; 6];
        for (i, byte) in out.iter_mut().enumerate() {
            // wire byte i holds digits 10-2i and 11-2i (counting from the left)
            let hi = digits[10 - 2 * i] - b'0';
            let lo = digits[11 - 2 * i] - b'0';
            *byte = (hi << 4) | lo;
        }
        Ok(Address(out))
    }
}

/// A function code (D4..D0 of the control code), DL/T 645-2007 §4.1.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `08H` broadcast time sync.
    BroadcastTime,
    /// `11H` read data.
    ReadData,
    /// `12H` read following data.
    ReadFollowing,
    /// `13H` read communication address.
    ReadAddress,
    /// Any other function (write, freeze, ...), not used by this driver.
    Other(u8),
}

impl Function {
    /// The five-bit code.
    pub fn code(self) -> u8 {
        match self {
            Function::BroadcastTime => 0x08,
            Function::ReadData => 0x11,
            Function::ReadFollowing => 0x12,
            Function::ReadAddress => 0x13,
            Function::Other(c) => c & 0x1F,
        }
    }

    fn from_code(c: u8) -> Function {
        match c & 0x1F {
            0x08 => Function::BroadcastTime,
            0x11 => Function::ReadData,
            0x12 => Function::ReadFollowing,
            0x13 => Function::ReadAddress,
            other => Function::Other(other),
        }
    }
}

/// The control code byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control(pub u8);

impl Control {
    /// A request from the master.
    pub fn request(f: Function) -> Control {
        Control(f.code())
    }
    /// A normal answer from a meter (`91H` for read data).
    pub fn answer(f: Function) -> Control {
        Control(0x80 | f.code())
    }
    /// An abnormal answer (`D1H` for read data).
    pub fn error(f: Function) -> Control {
        Control(0xC0 | f.code())
    }
    /// D7: sent by a meter.
    pub fn from_meter(self) -> bool {
        self.0 & 0x80 != 0
    }
    /// D6: the meter reports an error.
    pub fn abnormal(self) -> bool {
        self.0 & 0x40 != 0
    }
    /// D5: more frames follow (`B1H`).
    pub fn following(self) -> bool {
        self.0 & 0x20 != 0
    }
    /// D4..D0.
    pub fn function(self) -> Function {
        Function::from_code(self.0)
    }
}

/// The error byte of an abnormal answer, DL/T 645-2007 §5 (错误信息字 ERR), bit by bit.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ErrorFlags(pub u8);

impl ErrorFlags {
    const NAMES: [&'static str; 8] = [
        "other error",
        "no requested data",
        "password wrong or not authorised",
        "baud rate cannot be changed",
        "too many year time zones",
        "too many day time segments",
        "too many tariffs",
        "reserved bit 7",
    ];

    /// The meter does not have the data identifier asked for (bit 1).
    pub fn no_data(self) -> bool {
        self.0 & 0x02 != 0
    }

    /// The names of the bits set, lowest first.
    pub fn names(self) -> Vec<&'static str> {
        (0..8)
            .filter(|i| self.0 & (1 << i) != 0)
            .map(|i| Self::NAMES[i])
            .collect()
    }
}

impl fmt::Display for ErrorFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = self.names();
        if names.is_empty() {
            write!(f, "error byte {:#04x}", self.0)
        } else {
            write!(f, "{} ({:#04x})", names.join(", "), self.0)
        }
    }
}

impl fmt::Debug for ErrorFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ErrorFlags({self})")
    }
}

/// One frame, data without the `33H` offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The meter's address.
    pub address: Address,
    /// The control code.
    pub control: Control,
    /// The data field, offset removed.
    pub data: Vec<u8>,
}

/// What a meter's answer to a read says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadAnswer {
    /// `91H`/`B1H`: the identifier echoed and its value bytes (low byte first).
    Data {
        /// The data identifier.
        id: u32,
        /// The value bytes.
        value: Vec<u8>,
        /// `B1H`: more frames follow (only the first is read).
        following: bool,
    },
    /// `D1H`: the error byte.
    Error(ErrorFlags),
}

/// Why bytes were not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Reject {
    /// Bytes before a start byte that are neither frames nor wake-up bytes.
    #[error("{0} bytes of garbage")]
    Garbage(usize),
    /// A frame whose end byte is not `16H`.
    #[error("frame does not end with 16h")]
    BadEnd,
    /// A frame whose checksum does not match.
    #[error("checksum {found:#04x}, expected {expected:#04x}")]
    Checksum {
        /// The byte in the frame.
        found: u8,
        /// The sum of the frame.
        expected: u8,
    },
    /// The bytes ended in the middle of a frame.
    #[error("truncated frame ({0} bytes)")]
    Truncated(usize),
}

impl Reject {
    /// A short label for counters and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Reject::Garbage(_) => "garbage",
            Reject::BadEnd => "bad_end",
            Reject::Checksum { .. } => "checksum",
            Reject::Truncated(_) => "truncated",
        }
    }
}

/// Why a frame is not a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The data field is shorter than the function needs.
    #[error("answer data too short ({0} bytes)")]
    Short(usize),
    /// The frame is not an answer of that function.
    #[error("control code {0:#04x} is not an answer to this request")]
    Unexpected(u8),
}

/// The checksum of `bytes` (DL/T 645-2007 §4.1.7: arithmetic sum mod 256).
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b))
}

impl Frame {
    /// A frame to `address` with `control` and `data` (offset not yet applied).
    pub fn new(address: Address, control: Control, data: Vec<u8>) -> Frame {
        Frame {
            address,
            control,
            data,
        }
    }

    /// `11H` read data of identifier `id` (DI3..DI0 as one number, e.g. `0x0001_0000`).
    pub fn read_data(address: Address, id: u32) -> Frame {
        Frame::new(
            address,
            Control::request(Function::ReadData),
            id.to_le_bytes().to_vec(),
        )
    }

    /// `13H` read address, to the wildcard.
    pub fn read_address() -> Frame {
        Frame::new(
            Address::WILDCARD,
            Control::request(Function::ReadAddress),
            Vec::new(),
        )
    }

    /// `08H` broadcast time: `[ss, mm, hh, DD, MM, YY]` as BCD, seconds first.
    pub fn broadcast_time(ss_mm_hh_dd_mm_yy: [u8; 6]) -> Frame {
        Frame::new(
            Address::BROADCAST,
            Control::request(Function::BroadcastTime),
            ss_mm_hh_dd_mm_yy.iter().map(|v| to_bcd_byte(*v)).collect(),
        )
    }

    /// The wire bytes, with `preamble` wake-up bytes in front.
    ///
    /// # Panics
    /// Never for data up to [`MAX_DATA`] bytes; longer data is cut to that length (the
    /// length byte cannot say more), which no caller in this crate produces.
    pub fn encode(&self, preamble: usize) -> Vec<u8> {
        let data = &self.data[..self.data.len().min(MAX_DATA)];
        let mut out = Vec::with_capacity(preamble + OVERHEAD + data.len());
        out.resize(preamble, PREAMBLE);
        let at = out.len();
        out.push(START);
        out.extend_from_slice(&self.address.0);
        out.push(START);
        out.push(self.control.0);
        out.push(u8::try_from(data.len()).unwrap_or(u8::MAX));
        out.extend(data.iter().map(|b| b.wrapping_add(OFFSET)));
        let cs = checksum(&out[at..]);
        out.push(cs);
        out.push(END);
        out
    }

    /// Decodes exactly one frame (wake-up bytes in front allowed, nothing after).
    ///
    /// # Errors
    /// [`Reject`] when the bytes are not one well-formed frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, Reject> {
        let mut d = Decoder::new();
        d.push(bytes);
        let first = d.next_frame();
        let rest = d.finish();
        match (first, rest) {
            (Some(Ok(f)), None) => Ok(f),
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Some(e)) | (None, Some(e)) => Err(e),
            (None, None) => Err(Reject::Truncated(0)),
        }
    }

    /// Whether this frame is a meter's answer (normal or abnormal) to function `f`.
    pub fn is_answer(&self, f: Function) -> bool {
        self.control.from_meter() && self.control.function() == f
    }

    /// The answer to a `11H` read.
    ///
    /// # Errors
    /// [`AnswerError`] when the frame is not a read answer or is too short.
    pub fn read_answer(&self) -> Result<ReadAnswer, AnswerError> {
        if !self.is_answer(Function::ReadData) {
            return Err(AnswerError::Unexpected(self.control.0));
        }
        if self.control.abnormal() {
            let err = self
                .data
                .first()
                .ok_or(AnswerError::Short(self.data.len()))?;
            return Ok(ReadAnswer::Error(ErrorFlags(*err)));
        }
        let (id, value) = match self.data.split_first_chunk::<4>() {
            Some((id, value)) => (u32::from_le_bytes(*id), value.to_vec()),
            None => return Err(AnswerError::Short(self.data.len())),
        };
        Ok(ReadAnswer::Data {
            id,
            value,
            following: self.control.following(),
        })
    }

    /// The address a `93H` answer carries.
    ///
    /// # Errors
    /// [`AnswerError`] when the frame is not a read-address answer or is too short.
    pub fn address_answer(&self) -> Result<Address, AnswerError> {
        if !self.is_answer(Function::ReadAddress) || self.control.abnormal() {
            return Err(AnswerError::Unexpected(self.control.0));
        }
        self.data
            .first_chunk::<6>()
            .map(|a| Address(*a))
            .ok_or(AnswerError::Short(self.data.len()))
    }
}

/// A decimal 0-99 as one BCD byte (values above 99 are taken mod 100).
pub fn to_bcd_byte(v: u8) -> u8 {
    let v = v % 100;
    ((v / 10) << 4) | (v % 10)
}

/// Whether `b` starts with a whole frame whose end byte and checksum are right.
fn is_complete_frame(b: &[u8]) -> bool {
    let Some(&len) = b.get(9) else { return false };
    let total = OVERHEAD + usize::from(len);
    b.len() >= total
        && b[0] == START
        && b[7] == START
        && b[total - 1] == END
        && b[total - 2] == checksum(&b[..total - 2])
}

/// A streaming frame decoder for one direction of a bus. See the module doc.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
}

/// More bytes than this waiting without a frame means the stream is garbage: the oldest
/// are dropped so a babbling device cannot make the decoder grow.
const MAX_BUFFER: usize = 4 * (OVERHEAD + MAX_DATA);

impl Decoder {
    /// An empty decoder.
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > MAX_BUFFER {
            let cut = self.buf.len() - MAX_BUFFER;
            self.buf.drain(..cut);
        }
    }

    /// Forgets every byte held.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// Bytes held that are not yet a frame.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next frame or rejection, `None` when more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Result<Frame, Reject>> {
        let skipped = self.skip_to_start();
        if skipped > 0 {
            return Some(Err(Reject::Garbage(skipped)));
        }
        if self.buf.len() < 10 {
            return None;
        }
        if self.buf.get(7) != Some(&START) {
            // not a header: this 68 was noise
            self.buf.drain(..1);
            return Some(Err(Reject::Garbage(1)));
        }
        let len = usize::from(*self.buf.get(9)?);
        let total = OVERHEAD + len;
        if self.buf.len() < total {
            // A torn frame's length byte may reach over the next (complete) frame: if one
            // is already here, the torn bytes before it are given up rather than waited on.
            let later = (1..self.buf.len())
                .filter(|&j| self.buf[j] == START)
                .find(|&j| is_complete_frame(&self.buf[j..]));
            let j = later?;
            self.buf.drain(..j);
            return Some(Err(Reject::Truncated(j)));
        }
        let frame = &self.buf[..total];
        let expected = checksum(&frame[..total - 2]);
        let verdict = if frame[total - 1] != END {
            Err(Reject::BadEnd)
        } else if frame[total - 2] != expected {
            Err(Reject::Checksum {
                found: frame[total - 2],
                expected,
            })
        } else {
            let mut address = [0u8; 6];
            address.copy_from_slice(&frame[1..7]);
            Ok(Frame {
                address: Address(address),
                control: Control(frame[8]),
                data: frame[10..10 + len]
                    .iter()
                    .map(|b| b.wrapping_sub(OFFSET))
                    .collect(),
            })
        };
        // a bad frame gives up only its start byte: a real frame may begin inside it
        let consumed = if verdict.is_ok() { total } else { 1 };
        self.buf.drain(..consumed);
        Some(verdict)
    }

    /// At the end of an answer's time: what is left is a truncated frame or garbage.
    pub fn finish(&mut self) -> Option<Reject> {
        let skipped = self.skip_to_start();
        let left = self.buf.len();
        self.buf.clear();
        match (skipped, left) {
            (0, 0) => None,
            (n, 0) => Some(Reject::Garbage(n)),
            (_, n) => Some(Reject::Truncated(n)),
        }
    }

    /// Drops bytes before the next `68`; returns how many of them were not wake-up bytes.
    fn skip_to_start(&mut self) -> usize {
        let at = self
            .buf
            .iter()
            .position(|b| *b == START)
            .unwrap_or(self.buf.len());
        let garbage = self.buf[..at].iter().filter(|b| **b != PREAMBLE).count();
        self.buf.drain(..at);
        garbage
    }
}

#[cfg(test)]
mod tests;
