//! The DC-09 frame: envelope, header, plain or encrypted body; decoding and encoding.
//!
//! ```text
//! <LF> CRC LEN "ID" SEQ [R rcvr] [L prefix] [#acct] [data] [x-data]... [_timestamp] <CR>
//! ```
//! CRC-16/ARC and LEN (4 uppercase hex digits each) cover the bytes from the opening `"`
//! to the last byte before `<CR>` (PROTOCOLS §2, R6, R7). In an encrypted message (`"*ID"`)
//! everything after the data block's `[` is the uppercase hex of the AES-CBC ciphertext
//! (see [`crate::crypto`]), with no closing bracket.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::Dc09Error;
use crate::crypto::{self, FixedPad, Key, PadSource};
use crate::data::{Data, ExtData};
use crate::time::{TIMESTAMP_LEN, Timestamp};

/// The largest body a LEN field counts (`0LLL`: three hex digits after a zero, 0x0FFF).
pub const MAX_BODY_LEN: usize = 0x0FFF;
/// `<LF>` + CRC + LEN + body + `<CR>` at most.
pub const MAX_FRAME_LEN: usize = 1 + 4 + 4 + MAX_BODY_LEN + 1;

/// CRC-16/ARC: polynomial 0x8005 reflected, init 0, no final xor (PROTOCOLS §2; check value
/// 0xBB3D on "123456789").
pub const CRC16_ARC: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_ARC);

/// CRC-16/ARC of a message body.
pub fn crc16(body: &[u8]) -> u16 {
    CRC16_ARC.checksum(body)
}

/// The quoted ID token (PROTOCOLS §2, R6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum MessageId {
    /// `SIA-DCS`: SIA DCS event data.
    #[serde(rename = "SIA-DCS")]
    SiaDcs,
    /// `ADM-CID`: Ademco Contact ID event data.
    #[serde(rename = "ADM-CID")]
    AdmCid,
    /// `NULL`: supervision (link test).
    #[serde(rename = "NULL")]
    Null,
    /// `ACK`: the receiver accepted the message with this sequence number.
    #[serde(rename = "ACK")]
    Ack,
    /// `NAK`: the receiver rejected a message (CRC, format, time); carries its clock.
    #[serde(rename = "NAK")]
    Nak,
    /// `DUH`: the receiver understood the frame but cannot handle its content.
    #[serde(rename = "DUH")]
    Duh,
    /// `RSP`: the answer to extended data that asks for one (key change `[K...]`).
    #[serde(rename = "RSP")]
    Rsp,
}

impl MessageId {
    /// Every ID.
    pub const ALL: [MessageId; 7] = [
        MessageId::SiaDcs,
        MessageId::AdmCid,
        MessageId::Null,
        MessageId::Ack,
        MessageId::Nak,
        MessageId::Duh,
        MessageId::Rsp,
    ];

    /// The token between the quotes, without `*`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageId::SiaDcs => "SIA-DCS",
            MessageId::AdmCid => "ADM-CID",
            MessageId::Null => "NULL",
            MessageId::Ack => "ACK",
            MessageId::Nak => "NAK",
            MessageId::Duh => "DUH",
            MessageId::Rsp => "RSP",
        }
    }

    /// The ID for a token (without `*`).
    pub fn from_token(s: &str) -> Option<MessageId> {
        MessageId::ALL.into_iter().find(|id| id.as_str() == s)
    }

    /// Whether a receiver sends it (ACK, NAK, DUH, RSP) rather than a transmitter.
    pub fn is_reply(self) -> bool {
        matches!(
            self,
            MessageId::Ack | MessageId::Nak | MessageId::Duh | MessageId::Rsp
        )
    }
}

/// The sequence number, 0000-9999 (decimal; NAK uses 0000).
///
/// Received leniently: four uppercase hex digits (`000A`, as dc09_spt 0.0.4 writes its
/// `{:04X}` numbers) are accepted and kept in that form, so the ACK echoes the number
/// exactly as the panel wrote it (the panel matches its ACK by that text). The number plays
/// no part in duplicate detection ([`Message::content_key`]), so reading `0010` as ten in
/// either base changes nothing. We never write the hex form ourselves except to echo it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sequence {
    n: u16,
    /// Written with hex digits A-F (a non-conforming sender); echoed the same way.
    hex: bool,
}

impl Serialize for Sequence {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.n)
    }
}

impl std::fmt::Display for Sequence {
    /// The four digits as on the wire.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.hex {
            write!(f, "{:04X}", self.n)
        } else {
            write!(f, "{:04}", self.n)
        }
    }
}

impl Sequence {
    /// The highest sequence number.
    pub const MAX: u16 = 9999;

    /// 0000: the NAK's number, and where a transmitter starts ([`Sequence::next`] is 0001).
    pub const ZERO: Sequence = Sequence { n: 0, hex: false };

    /// `None` above 9999.
    pub fn new(n: u16) -> Option<Sequence> {
        (n <= Self::MAX).then_some(Sequence { n, hex: false })
    }

    /// Reads the four characters of the header: decimal `0000`-`9999`, or (leniently)
    /// uppercase hex with at least one of `A`-`F`; `None` for anything else.
    pub fn parse(digits: &str) -> Option<Sequence> {
        if digits.len() != 4 {
            return None;
        }
        if digits.bytes().all(|b| b.is_ascii_digit()) {
            return digits.parse().ok().and_then(Sequence::new);
        }
        let upper_hex = digits
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b));
        let n = u16::from_str_radix(digits, 16).ok().filter(|_| upper_hex)?;
        Some(Sequence { n, hex: true })
    }

    /// The number (for a hex-written one, its hex value).
    pub fn value(self) -> u16 {
        self.n
    }

    /// Whether it was written in hex (`000A`), which DC-09 does not allow but is accepted.
    pub fn is_hex(self) -> bool {
        self.hex
    }

    /// The next number a transmitter uses: 1-9999, wrapping to 1 (0 is the NAK's).
    pub fn next(self) -> Sequence {
        let n = if self.n >= Self::MAX { 1 } else { self.n + 1 };
        Sequence { n, hex: false }
    }
}

/// The account field of the header.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "snake_case")]
pub enum Account {
    /// `#1234`: the panel's account, 3-16 hex digits (kept as written).
    Number(String),
    /// `A0`: the NAK's placeholder (`"NAK"0000R0L0A0[]`, R6, R7).
    Placeholder(String),
    /// No account field.
    Absent,
}

impl Account {
    /// `#` and the account number, for a transmitter's message.
    ///
    /// # Errors
    /// [`Dc09Error::Account`] unless it is 3-16 hex digits.
    pub fn number(acct: &str) -> Result<Account, Dc09Error> {
        if is_hex_account(acct) {
            Ok(Account::Number(acct.to_owned()))
        } else {
            Err(Dc09Error::Account(acct.to_owned()))
        }
    }

    /// The account number, for a `#` account.
    pub fn as_number(&self) -> Option<&str> {
        match self {
            Account::Number(a) => Some(a),
            _ => None,
        }
    }
}

/// Whether `s` is a DC-09 account number: 3-16 hex digits.
pub fn is_hex_account(s: &str) -> bool {
    (3..=16).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn is_hex_field(s: &str) -> bool {
    (1..=6).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// One DC-09 message, decoded (or to be encoded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    /// The ID token.
    pub id: MessageId,
    /// Whether the ID carries `*`: the body after `[` is encrypted.
    pub encrypted: bool,
    /// The sequence number.
    pub sequence: Sequence,
    /// `R`: the receiver number, 1-6 hex digits, as written.
    pub receiver: Option<String>,
    /// `L`: the line prefix, 1-6 hex digits, as written.
    pub prefix: Option<String>,
    /// The account field.
    pub account: Account,
    /// The data block.
    pub data: Data,
    /// Extended data blocks, in order.
    pub extended: Vec<ExtData>,
    /// `_HH:MM:SS,MM-DD-YYYY`, UTC.
    pub timestamp: Option<Timestamp>,
}

/// A decoded frame whose body may still be encrypted: read the header (the account picks
/// the key), then [`Frame::open`] it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    message: Message,
    sealed: Option<String>,
}

/// A fully decoded message, with the pad its sender used when it was encrypted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    /// The message.
    pub message: Message,
    /// The pad of an encrypted message (re-encode with [`FixedPad`] to get the same bytes).
    pub pad: Option<Vec<u8>>,
}

impl Frame {
    /// Decodes one frame: `<LF>CRC LEN body<CR>`, or with any of LF, CRC+LEN and CR left
    /// out (as the fixture file and `campusgw decode` take it). CRC and LEN, when present,
    /// are checked.
    ///
    /// # Errors
    /// A [`Dc09Error`] naming the first thing found wrong. Never panics.
    pub fn decode(input: &[u8]) -> Result<Frame, Dc09Error> {
        if input.len() > MAX_FRAME_LEN {
            return Err(Dc09Error::TooLong {
                len: input.len(),
                max: MAX_FRAME_LEN,
            });
        }
        let input = input.strip_prefix(b"\n").unwrap_or(input);
        let input = input.strip_suffix(b"\r").unwrap_or(input);
        let body = if input.first() == Some(&b'"') {
            input
        } else {
            check_envelope(input)?
        };
        let body = std::str::from_utf8(body)
            .ok()
            .filter(|s| s.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .ok_or_else(|| Dc09Error::Body("a message body is printable ASCII".into()))?;
        parse_body(body)
    }

    /// The message; its data, extended data and timestamp are empty while it is sealed.
    pub fn header(&self) -> &Message {
        &self.message
    }

    /// Whether the body is still encrypted.
    pub fn is_sealed(&self) -> bool {
        self.sealed.is_some()
    }

    /// Decrypts (when sealed) and returns the message.
    ///
    /// # Errors
    /// [`Dc09Error::KeyRequired`] for a sealed frame without `key`; [`Dc09Error::Decrypt`]
    /// for a wrong key; body errors as for a plain frame.
    pub fn open(self, key: Option<&Key>) -> Result<Opened, Dc09Error> {
        let Some(hex) = self.sealed else {
            return Ok(Opened {
                message: self.message,
                pad: None,
            });
        };
        let key = key.ok_or_else(|| Dc09Error::KeyRequired {
            account: self
                .message
                .account
                .as_number()
                .unwrap_or_default()
                .to_owned(),
        })?;
        let (pad, rest) = crypto::open(key, hex.as_bytes())?;
        let rest =
            String::from_utf8(rest).map_err(|_| Dc09Error::Decrypt("plaintext is not ASCII"))?;
        let mut message = self.message;
        parse_rest(&rest, &mut message)?;
        Ok(Opened {
            message,
            pad: Some(pad),
        })
    }
}

/// Decodes and opens a frame in one step (see [`Frame::decode`], [`Frame::open`]).
///
/// # Errors
/// As those two.
pub fn decode(input: &[u8], key: Option<&Key>) -> Result<Opened, Dc09Error> {
    Frame::decode(input)?.open(key)
}

fn check_envelope(input: &[u8]) -> Result<&[u8], Dc09Error> {
    let hex4 = |b: Option<&[u8]>| {
        let b = b.filter(|b| b.iter().all(u8::is_ascii_hexdigit))?;
        u16::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok()
    };
    let crc =
        hex4(input.get(0..4)).ok_or(Dc09Error::Envelope("no 4-hex-digit CRC before the body"))?;
    let len =
        hex4(input.get(4..8)).ok_or(Dc09Error::Envelope("no 4-hex-digit LEN after the CRC"))?;
    let body = input.get(8..).unwrap_or_default();
    if usize::from(len) != body.len() {
        return Err(Dc09Error::Length {
            stated: usize::from(len),
            actual: body.len(),
        });
    }
    let computed = crc16(body);
    if computed != crc {
        return Err(Dc09Error::Crc {
            stated: crc,
            computed,
        });
    }
    Ok(body)
}

/// Splits `s` after the longest prefix of bytes satisfying `f`, at most `max` of them.
fn take_while(s: &str, max: usize, f: impl Fn(u8) -> bool) -> (&str, &str) {
    let n = s.bytes().take(max).take_while(|b| f(*b)).count();
    (
        s.get(..n).unwrap_or_default(),
        s.get(n..).unwrap_or_default(),
    )
}

fn parse_body(body: &str) -> Result<Frame, Dc09Error> {
    let rest = body
        .strip_prefix('"')
        .ok_or_else(|| Dc09Error::Id(String::new()))?;
    let (token, rest) = rest
        .split_once('"')
        .ok_or_else(|| Dc09Error::Id(rest.chars().take(10).collect()))?;
    let (encrypted, bare) = match token.strip_prefix('*') {
        Some(t) => (true, t),
        None => (false, token),
    };
    let id = MessageId::from_token(bare)
        .ok_or_else(|| Dc09Error::Id(token.chars().take(10).collect()))?;
    let (seq, rest) = take_while(rest, 4, |b| b.is_ascii_hexdigit());
    let sequence = Sequence::parse(seq).ok_or_else(|| Dc09Error::Sequence(seq.to_owned()))?;
    let (receiver, rest) = hex_field(rest, 'R', "receiver")?;
    let (mut prefix, rest) = hex_field(rest, 'L', "prefix")?;
    let (mut account, rest) = match rest.strip_prefix('#') {
        Some(after) => {
            let (acct, rest) = after.split_once('[').unwrap_or((after, ""));
            if !is_hex_account(acct) {
                return Err(Dc09Error::Account(acct.chars().take(20).collect()));
            }
            (Account::Number(acct.to_owned()), rest)
        }
        None => match rest.strip_prefix('A') {
            Some(after) => {
                let (v, rest) = take_while(after, 16, |b| b.is_ascii_hexdigit());
                (
                    Account::Placeholder(v.to_owned()),
                    rest.strip_prefix('[').ok_or_else(no_data)?,
                )
            }
            None => (Account::Absent, rest.strip_prefix('[').ok_or_else(no_data)?),
        },
    };
    // The NAK is written `L0A0`: the `A0` account placeholder reads as more prefix digits,
    // so split it off (R6 and R7 both send this form).
    if id == MessageId::Nak
        && account == Account::Absent
        && let Some((p, a)) = prefix
            .as_deref()
            .and_then(|p| p.split_once('A'))
            .filter(|(p, _)| !p.is_empty())
    {
        account = Account::Placeholder(a.to_owned());
        prefix = Some(p.to_owned());
    }
    let mut message = Message {
        id,
        encrypted,
        sequence,
        receiver,
        prefix,
        account,
        data: Data::Empty,
        extended: Vec::new(),
        timestamp: None,
    };
    if encrypted {
        return Ok(Frame {
            message,
            sealed: Some(rest.to_owned()),
        });
    }
    parse_rest(rest, &mut message)?;
    Ok(Frame {
        message,
        sealed: None,
    })
}

fn no_data() -> Dc09Error {
    Dc09Error::Body("no data block '[' after the header".into())
}

fn hex_field<'a>(
    s: &'a str,
    letter: char,
    field: &'static str,
) -> Result<(Option<String>, &'a str), Dc09Error> {
    let Some(after) = s.strip_prefix(letter) else {
        return Ok((None, s));
    };
    let (v, rest) = take_while(after, 7, |b| b.is_ascii_hexdigit());
    if !is_hex_field(v) {
        return Err(Dc09Error::Field {
            field,
            value: v.to_owned(),
        });
    }
    Ok((Some(v.to_owned()), rest))
}

/// Parses what follows the data block's `[`: `data]`, `[x-data]`..., `_timestamp`.
fn parse_rest(rest: &str, m: &mut Message) -> Result<(), Dc09Error> {
    let (data, mut rest) = rest
        .split_once(']')
        .ok_or_else(|| Dc09Error::Body("data block has no ']'".into()))?;
    if data.contains('[') {
        return Err(Dc09Error::Body("'[' inside the data block".into()));
    }
    m.data = Data::parse(data, m.id == MessageId::AdmCid, m.id == MessageId::SiaDcs)?;
    while let Some(after) = rest.strip_prefix('[') {
        let (x, r) = after
            .split_once(']')
            .ok_or_else(|| Dc09Error::Body("extended data has no ']'".into()))?;
        if x.contains('[') {
            return Err(Dc09Error::Body("'[' inside extended data".into()));
        }
        m.extended.push(ExtData::parse(x)?);
        rest = r;
    }
    if let Some(ts) = rest.strip_prefix('_') {
        m.timestamp = Some(Timestamp::parse(ts)?);
    } else if !rest.is_empty() {
        return Err(Dc09Error::Body(format!(
            "unexpected {:?} after the data blocks",
            rest.chars().take(20).collect::<String>()
        )));
    }
    Ok(())
}

impl Message {
    /// A message with no receiver, line prefix `0`, empty data, no timestamp, in clear.
    pub fn new(id: MessageId, sequence: Sequence, account: Account) -> Message {
        Message {
            id,
            encrypted: false,
            sequence,
            receiver: None,
            prefix: Some("0".to_owned()),
            account,
            data: Data::Empty,
            extended: Vec::new(),
            timestamp: None,
        }
    }

    /// The `ACK` a receiver sends for `request`: same sequence, receiver, prefix and
    /// account, empty data, our timestamp; encrypted when the request was (R6).
    pub fn ack(request: &Message, now: DateTime<Utc>) -> Message {
        Message::reply(MessageId::Ack, request, request.encrypted, now)
    }

    /// The `DUH` for a message we cannot handle (unknown code); always in clear (R6).
    pub fn duh(request: &Message, now: DateTime<Utc>) -> Message {
        Message::reply(MessageId::Duh, request, false, now)
    }

    /// The `RSP` to extended data that asks for an answer; encrypted like the request.
    pub fn rsp(request: &Message, now: DateTime<Utc>) -> Message {
        Message::reply(MessageId::Rsp, request, request.encrypted, now)
    }

    /// The `NAK`: `"NAK"0000R0L0A0[]_<our clock>`, in clear; the sender corrects its clock
    /// from the timestamp (R6, R7, R8).
    pub fn nak(now: DateTime<Utc>) -> Message {
        Message {
            receiver: Some("0".to_owned()),
            timestamp: Some(Timestamp::new(now)),
            ..Message::new(
                MessageId::Nak,
                Sequence::ZERO,
                Account::Placeholder("0".to_owned()),
            )
        }
    }

    fn reply(id: MessageId, request: &Message, encrypted: bool, now: DateTime<Utc>) -> Message {
        Message {
            id,
            encrypted,
            sequence: request.sequence,
            receiver: request.receiver.clone(),
            prefix: request.prefix.clone(),
            account: request.account.clone(),
            data: Data::Empty,
            extended: Vec::new(),
            timestamp: Some(Timestamp::new(now)),
        }
    }

    /// What identifies the message's content for duplicate detection (ADR 0003): the
    /// account, the ID and the data and extended data blocks, as written. Not the sequence
    /// number (panels restart it) and not the timestamp (a retransmission after a NAK is
    /// restamped). The receiver keys events on this within the journal's window.
    ///
    /// # Errors
    /// [`Dc09Error::Encode`] when a field cannot be written.
    pub fn content_key(&self) -> Result<String, Dc09Error> {
        let acct = match &self.account {
            Account::Number(a) => a.to_ascii_uppercase(),
            Account::Placeholder(a) => format!("A{a}"),
            Account::Absent => String::new(),
        };
        let mut key = format!("{acct}:{}:[{}]", self.id.as_str(), self.data.to_wire()?);
        for x in &self.extended {
            key.push_str(&x.to_wire()?);
        }
        Ok(key)
    }

    /// The full frame `<LF>CRC LEN body<CR>` of a message in clear.
    ///
    /// # Errors
    /// [`Dc09Error::KeyRequired`] for an encrypted message (use [`Message::encode_with`]);
    /// [`Dc09Error::Encode`] for fields that cannot be written; [`Dc09Error::TooLong`].
    pub fn encode(&self) -> Result<Vec<u8>, Dc09Error> {
        if self.encrypted {
            return Err(Dc09Error::KeyRequired {
                account: self.account.as_number().unwrap_or_default().to_owned(),
            });
        }
        self.encode_with(None, &mut FixedPad(Vec::new()))
    }

    /// The full frame, encrypting with `key` and pad bytes from `pad` when
    /// [`Message::encrypted`] is set (`key` is ignored otherwise).
    ///
    /// # Errors
    /// As [`Message::encode`]; [`Dc09Error::KeyRequired`] when encrypted and `key` is `None`.
    pub fn encode_with(
        &self,
        key: Option<&Key>,
        pad: &mut dyn PadSource,
    ) -> Result<Vec<u8>, Dc09Error> {
        let body = self.encode_body(key, pad)?;
        let mut out = format!("\n{:04X}{:04X}", crc16(body.as_bytes()), body.len()).into_bytes();
        out.extend_from_slice(body.as_bytes());
        out.push(b'\r');
        Ok(out)
    }

    /// The body alone, from the opening `"` to before `<CR>` (what CRC and LEN cover).
    ///
    /// # Errors
    /// As [`Message::encode_with`].
    pub fn encode_body(
        &self,
        key: Option<&Key>,
        pad: &mut dyn PadSource,
    ) -> Result<String, Dc09Error> {
        let mut s = String::with_capacity(64);
        s.push('"');
        if self.encrypted {
            s.push('*');
        }
        s.push_str(self.id.as_str());
        s.push('"');
        s.push_str(&self.sequence.to_string());
        for (letter, field, name) in [
            ('R', &self.receiver, "receiver"),
            ('L', &self.prefix, "prefix"),
        ] {
            if let Some(v) = field {
                if !is_hex_field(v) {
                    return Err(Dc09Error::Encode(format!(
                        "{name} {v:?} is not 1-6 hex digits"
                    )));
                }
                s.push(letter);
                s.push_str(v);
            }
        }
        match &self.account {
            Account::Number(a) if is_hex_account(a) => s.push_str(&format!("#{a}")),
            Account::Placeholder(a)
                if a.len() <= 16 && a.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                s.push_str(&format!("A{a}"))
            }
            Account::Absent => {}
            other => {
                return Err(Dc09Error::Encode(format!(
                    "account {other:?} is not hex digits"
                )));
            }
        }
        s.push('[');
        let mut rest = self.data.to_wire()?;
        rest.push(']');
        for x in &self.extended {
            rest.push_str(&x.to_wire()?);
        }
        if let Some(ts) = self.timestamp {
            rest.push('_');
            rest.push_str(&ts.to_string());
            debug_assert_eq!(ts.to_string().len(), TIMESTAMP_LEN);
        }
        if self.encrypted {
            let key = key.ok_or_else(|| Dc09Error::KeyRequired {
                account: self.account.as_number().unwrap_or_default().to_owned(),
            })?;
            s.push_str(&crypto::seal(key, rest.as_bytes(), pad)?);
        } else {
            s.push_str(&rest);
        }
        if s.len() > MAX_BODY_LEN {
            return Err(Dc09Error::TooLong {
                len: s.len(),
                max: MAX_BODY_LEN,
            });
        }
        Ok(s)
    }
}
