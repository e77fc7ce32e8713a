//! GB/T 26875.3-2011 wire format: frames, application data units, streaming decoder.
//!
//! Pure: no I/O, no clocks, never panics on any input (fuzzed by `fuzz/gb26875_decode` and
//! the proptests in this crate).
//!
//! A frame (PROTOCOLS §1.1, every multi-byte integer little-endian):
//! ```text
//! offset len field
//!  0      2  start '@@' (40 40)
//!  2      2  service serial number (业务流水号), u16 LE
//!  4      2  protocol version (协议版本号): major (fixed 1), user version
//!  6      6  time label (时间标签): ss mm hh DD MM YY (YY = year - 2000), binary, local time (CST)
//! 12      6  source address (源地址), 48-bit LE
//! 18      6  destination address (目的地址), 48-bit LE
//! 24      2  ADU length (应用数据单元长度), u16 LE, <= 1024, the ADU only
//! 26      1  command byte (命令字节)
//! 27      n  application data unit (应用数据单元)
//! 27+n    1  checksum (校验和): sum(bytes[2..27+n]) mod 256
//! 28+n    2  end '##' (23 23)
//! ```
//! [`Frame`] is one frame with its ADU still as bytes; [`Adu`] decodes the ADU (type flag,
//! object count, objects). [`FrameDecoder`] cuts a byte stream into frames, resynchronising
//! on the next `@@` after garbage, and reports check failures as [`FrameError`] items that
//! carry the header (so the caller can answer deny, command 6) without stopping.

mod adu;
pub mod names;
mod stream;

pub use adu::{
    Adu, AduError, AnalogValue, ComponentAddress, ComponentConfig, ComponentRef, ComponentStatus,
    DESCRIPTION_LEN, Description, OperationRecord, RecordQuery, SystemConfig, SystemOperation,
    SystemRef, SystemStatus, SystemTime, SystemVersion, Text, TypeFlag, UitdOperation, UitdStatus,
};
pub use stream::FrameDecoder;

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate, TimeZone, Timelike, Utc};
use serde::Serialize;

/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): a frame starts with two `@` (0x40) bytes.
pub const START: [u8; 2] = *b"@@";
/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): a frame ends with two `#` (0x23) bytes.
pub const END: [u8; 2] = *b"##";
/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): the fixed part before the ADU (start to command byte).
pub const HEADER_LEN: usize = 27;
/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): header + checksum + end marker; a frame is `OVERHEAD + n` bytes.
pub const OVERHEAD: usize = 30;
/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): the ADU is at most 1024 bytes.
pub const MAX_ADU_LEN: usize = 1024;
/// The longest possible frame.
pub const MAX_FRAME_LEN: usize = OVERHEAD + MAX_ADU_LEN;
/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): the largest address (48 bits).
pub const MAX_ADDRESS: u64 = (1 << 48) - 1;
/// China Standard Time, UTC+8: GB/T 26875.3 time labels are local time (PROTOCOLS §1.3).
pub const CST_OFFSET_SECONDS: i32 = 8 * 3600;

/// A 48-bit device address (源地址 / 目的地址).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Address(u64);

impl Address {
    /// An address; `None` above 48 bits.
    pub fn new(value: u64) -> Option<Address> {
        (value <= MAX_ADDRESS).then_some(Address(value))
    }

    /// The numeric value.
    pub fn value(self) -> u64 {
        self.0
    }

    fn from_le(b: &[u8; 6]) -> Address {
        let mut v = [0u8; 8];
        v[..6].copy_from_slice(b);
        Address(u64::from_le_bytes(v))
    }

    fn to_le(self) -> [u8; 6] {
        let v = self.0.to_le_bytes();
        [v[0], v[1], v[2], v[3], v[4], v[5]]
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Protocol version (协议版本号): two separate bytes, not one u16.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Version {
    /// Major version, fixed 1 (主版本号).
    pub major: u8,
    /// User version (用户版本号).
    pub user: u8,
}

impl Version {
    /// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): major 1; the worked examples use user version 1.
    pub const V1_1: Version = Version { major: 1, user: 1 };
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.user)
    }
}

/// A time label (时间标签): six binary bytes `ss mm hh DD MM YY`, local time (CST).
///
/// Kept as the raw bytes so that any frame re-encodes identically; [`TimeLabel::to_utc`]
/// interprets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TimeLabel {
    /// Second, 0-59.
    pub second: u8,
    /// Minute, 0-59.
    pub minute: u8,
    /// Hour, 0-23.
    pub hour: u8,
    /// Day of month, 1-31.
    pub day: u8,
    /// Month, 1-12.
    pub month: u8,
    /// Year minus 2000.
    pub year: u8,
}

impl TimeLabel {
    /// The time label for a UTC instant, in CST. Years outside 2000-2255 saturate.
    pub fn from_utc(t: DateTime<Utc>) -> TimeLabel {
        let cst = FixedOffset::east_opt(CST_OFFSET_SECONDS).expect("UTC+8 is a valid offset");
        let local = t.with_timezone(&cst);
        let year = u8::try_from((local.year() - 2000).clamp(0, 255)).unwrap_or(0);
        let b = |v: u32| u8::try_from(v).unwrap_or(0);
        TimeLabel {
            second: b(local.second().min(59)),
            minute: b(local.minute()),
            hour: b(local.hour()),
            day: b(local.day()),
            month: b(local.month()),
            year,
        }
    }

    /// The instant this label names, reading it as CST; `None` if it is not a valid date.
    pub fn to_utc(self) -> Option<DateTime<Utc>> {
        let cst = FixedOffset::east_opt(CST_OFFSET_SECONDS)?;
        let naive = NaiveDate::from_ymd_opt(
            2000 + i32::from(self.year),
            u32::from(self.month),
            u32::from(self.day),
        )?
        .and_hms_opt(
            u32::from(self.hour),
            u32::from(self.minute),
            u32::from(self.second),
        )?;
        cst.from_local_datetime(&naive)
            .single()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The six wire bytes.
    pub fn to_bytes(self) -> [u8; 6] {
        [
            self.second,
            self.minute,
            self.hour,
            self.day,
            self.month,
            self.year,
        ]
    }

    /// From the six wire bytes.
    pub fn from_bytes(b: [u8; 6]) -> TimeLabel {
        TimeLabel {
            second: b[0],
            minute: b[1],
            hour: b[2],
            day: b[3],
            month: b[4],
            year: b[5],
        }
    }

    /// `YYMMDDhhmmss` as 12 hex digits of the raw bytes: stable text for origin refs.
    pub fn compact(self) -> String {
        format!(
            "{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

impl std::fmt::Display for TimeLabel {
    /// `2012-09-26T09:58:32+08:00`, or the raw bytes when the date is invalid.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.to_utc() {
            Some(_) => write!(
                f,
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+08:00",
                2000 + u16::from(self.year),
                self.month,
                self.day,
                self.hour,
                self.minute,
                self.second
            ),
            None => write!(f, "invalid:{}", self.compact()),
        }
    }
}

impl Serialize for TimeLabel {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The command byte (命令字节), GB/T 26875.3-2011 (PROTOCOLS §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandByte {
    /// 1 控制命令: centre → UITD control (clock sync, duty check, initialise).
    Control,
    /// 2 发送数据: upload of states and records (empty ADU = heartbeat by convention).
    SendData,
    /// 3 确认: positive answer to control or upload.
    Confirm,
    /// 4 请求: centre → UITD query.
    Request,
    /// 5 应答: answer to a query.
    Response,
    /// 6 否认: negative answer (check failed).
    Deny,
    /// 128-255 用户自定义.
    UserDefined(u8),
}

impl CommandByte {
    /// The byte; `None` for reserved values (0, 7-127), which are check errors.
    pub fn from_u8(b: u8) -> Option<CommandByte> {
        Some(match b {
            1 => CommandByte::Control,
            2 => CommandByte::SendData,
            3 => CommandByte::Confirm,
            4 => CommandByte::Request,
            5 => CommandByte::Response,
            6 => CommandByte::Deny,
            128..=255 => CommandByte::UserDefined(b),
            _ => return None,
        })
    }

    /// The wire value.
    pub fn as_u8(self) -> u8 {
        match self {
            CommandByte::Control => 1,
            CommandByte::SendData => 2,
            CommandByte::Confirm => 3,
            CommandByte::Request => 4,
            CommandByte::Response => 5,
            CommandByte::Deny => 6,
            CommandByte::UserDefined(b) => b,
        }
    }
}

/// The fixed fields of a frame, readable as soon as its first 27 bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Header {
    /// Service serial number (业务流水号).
    pub serial: u16,
    /// Protocol version.
    pub version: Version,
    /// When the frame was sent (sender's clock).
    pub time: TimeLabel,
    /// Sender.
    pub source: Address,
    /// Addressee.
    pub destination: Address,
    /// Declared ADU length.
    pub adu_length: u16,
    /// The raw command byte.
    pub command: u8,
}

impl Header {
    /// Parses the first [`HEADER_LEN`] bytes; `None` if short or without `@@`.
    pub fn parse(b: &[u8]) -> Option<Header> {
        let h: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        if h[..2] != START {
            return None;
        }
        let six = |at: usize| -> [u8; 6] {
            [h[at], h[at + 1], h[at + 2], h[at + 3], h[at + 4], h[at + 5]]
        };
        Some(Header {
            serial: u16::from_le_bytes([h[2], h[3]]),
            version: Version {
                major: h[4],
                user: h[5],
            },
            time: TimeLabel::from_bytes(six(6)),
            source: Address::from_le(&six(12)),
            destination: Address::from_le(&six(18)),
            adu_length: u16::from_le_bytes([h[24], h[25]]),
            command: h[26],
        })
    }
}

/// A frame failed its checks (GB/T 26875.3-2011 check errors, PROTOCOLS §1: answer deny, command 6).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Fewer bytes than the smallest frame.
    #[error("frame too short: {len} bytes, at least 30 needed")]
    TooShort {
        /// Bytes given.
        len: usize,
    },
    /// The first two bytes are not `@@`.
    #[error("frame does not start with '@@'")]
    BadStart,
    /// The declared ADU length exceeds 1024.
    #[error("adu length {} exceeds 1024 (serial {})", .header.adu_length, .header.serial)]
    LengthTooLarge {
        /// The header as read.
        header: Header,
    },
    /// The bytes given are not exactly one frame of the declared length.
    #[error("frame is {actual} bytes but its header declares {expected} (serial {})", .header.serial)]
    LengthMismatch {
        /// The header as read.
        header: Header,
        /// 30 + declared ADU length.
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The two bytes after the checksum are not `##`.
    #[error("frame does not end with '##' (serial {})", .header.serial)]
    BadEnd {
        /// The header as read.
        header: Header,
    },
    /// The checksum does not match.
    #[error("checksum {actual:#04x} does not match computed {expected:#04x} (serial {})", .header.serial)]
    BadChecksum {
        /// The header as read.
        header: Header,
        /// What the bytes sum to.
        expected: u8,
        /// What the frame carries.
        actual: u8,
    },
    /// A reserved command byte (0, 7-127).
    #[error("reserved command byte {} (serial {})", .header.command, .header.serial)]
    UnknownCommand {
        /// The header as read.
        header: Header,
    },
}

impl FrameError {
    /// The header, when enough of the frame was read to know it.
    pub fn header(&self) -> Option<&Header> {
        match self {
            FrameError::TooShort { .. } | FrameError::BadStart => None,
            FrameError::LengthTooLarge { header }
            | FrameError::LengthMismatch { header, .. }
            | FrameError::BadEnd { header }
            | FrameError::BadChecksum { header, .. }
            | FrameError::UnknownCommand { header } => Some(header),
        }
    }

    /// The serial number to echo in a deny, when it could be read.
    pub fn serial(&self) -> Option<u16> {
        self.header().map(|h| h.serial)
    }

    /// A short stable label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            FrameError::TooShort { .. } => "too_short",
            FrameError::BadStart => "bad_start",
            FrameError::LengthTooLarge { .. } => "length_too_large",
            FrameError::LengthMismatch { .. } => "length_mismatch",
            FrameError::BadEnd { .. } => "bad_end",
            FrameError::BadChecksum { .. } => "bad_checksum",
            FrameError::UnknownCommand { .. } => "unknown_command",
        }
    }
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// The ADU is longer than 1024 bytes.
    #[error("adu of {0} bytes exceeds 1024")]
    AduTooLong(usize),
    /// More than 255 information objects.
    #[error("{0} information objects exceed the count byte (255)")]
    TooManyObjects(usize),
}

/// One frame; the ADU stays as bytes until [`Frame::adu`] decodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Service serial number (业务流水号).
    pub serial: u16,
    /// Protocol version.
    pub version: Version,
    /// When the frame was sent (sender's clock, CST).
    pub time: TimeLabel,
    /// Sender.
    pub source: Address,
    /// Addressee.
    pub destination: Address,
    /// What the frame does.
    pub command: CommandByte,
    /// The application data unit, possibly empty (confirm, deny, heartbeat).
    pub data: Vec<u8>,
}

/// GB/T 26875.3-2011 frame format (PROTOCOLS §1.1): the checksum is the byte sum of everything between the start
/// marker and the checksum itself, modulo 256.
pub fn checksum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |acc, b| acc.wrapping_add(*b))
}

impl Frame {
    /// Decodes exactly one frame.
    ///
    /// # Errors
    /// [`FrameError`] for every check the standard names: markers, length, checksum,
    /// command byte.
    pub fn decode(b: &[u8]) -> Result<Frame, FrameError> {
        if b.len() < OVERHEAD {
            return Err(FrameError::TooShort { len: b.len() });
        }
        let header = Header::parse(b).ok_or(FrameError::BadStart)?;
        let n = usize::from(header.adu_length);
        if n > MAX_ADU_LEN {
            return Err(FrameError::LengthTooLarge { header });
        }
        if b.len() != OVERHEAD + n {
            return Err(FrameError::LengthMismatch {
                header,
                expected: OVERHEAD + n,
                actual: b.len(),
            });
        }
        Self::check_body(header, b)
    }

    /// Checks end marker, checksum and command of a complete frame `b` (length known good).
    fn check_body(header: Header, b: &[u8]) -> Result<Frame, FrameError> {
        let n = usize::from(header.adu_length);
        if b.get(28 + n..30 + n) != Some(&END[..]) {
            return Err(FrameError::BadEnd { header });
        }
        let expected = checksum(b.get(2..27 + n).unwrap_or_default());
        let actual = b.get(27 + n).copied().unwrap_or_default();
        if expected != actual {
            return Err(FrameError::BadChecksum {
                header,
                expected,
                actual,
            });
        }
        let command =
            CommandByte::from_u8(header.command).ok_or(FrameError::UnknownCommand { header })?;
        Ok(Frame {
            serial: header.serial,
            version: header.version,
            time: header.time,
            source: header.source,
            destination: header.destination,
            command,
            data: b.get(27..27 + n).unwrap_or_default().to_vec(),
        })
    }

    /// Encodes the frame, computing length and checksum.
    ///
    /// # Errors
    /// [`EncodeError::AduTooLong`] when the ADU exceeds 1024 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let n = self.data.len();
        let len = u16::try_from(n)
            .ok()
            .filter(|_| n <= MAX_ADU_LEN)
            .ok_or(EncodeError::AduTooLong(n))?;
        let mut out = Vec::with_capacity(OVERHEAD + n);
        out.extend_from_slice(&START);
        out.extend_from_slice(&self.serial.to_le_bytes());
        out.extend_from_slice(&[self.version.major, self.version.user]);
        out.extend_from_slice(&self.time.to_bytes());
        out.extend_from_slice(&self.source.to_le());
        out.extend_from_slice(&self.destination.to_le());
        out.extend_from_slice(&len.to_le_bytes());
        out.push(self.command.as_u8());
        out.extend_from_slice(&self.data);
        out.push(checksum(&out[2..]));
        out.extend_from_slice(&END);
        Ok(out)
    }

    /// Decodes the ADU; `Ok(None)` when it is empty (confirm, deny, heartbeat).
    ///
    /// # Errors
    /// [`AduError`] when the ADU does not match its type's layout.
    pub fn adu(&self) -> Result<Option<Adu>, AduError> {
        if self.data.is_empty() {
            Ok(None)
        } else {
            Adu::decode(&self.data).map(Some)
        }
    }

    /// The answer to this frame: serial echoed, source and destination swapped, empty ADU
    /// (GB/T 26875.3-2011, PROTOCOLS §1.3: confirm 3 / deny 6), stamped `time`.
    pub fn reply(&self, command: CommandByte, time: TimeLabel) -> Frame {
        Frame {
            serial: self.serial,
            version: self.version,
            time,
            source: self.destination,
            destination: self.source,
            command,
            data: Vec::new(),
        }
    }

    /// A deny (command 6) answering a frame that failed its checks, from its header.
    pub fn deny_for(header: &Header, time: TimeLabel) -> Frame {
        Frame {
            serial: header.serial,
            version: header.version,
            time,
            source: header.destination,
            destination: header.source,
            command: CommandByte::Deny,
            data: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests;
