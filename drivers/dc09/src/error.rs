//! Every way a DC-09 frame, key or timestamp can be bad.

/// Why a frame, a key or a message could not be decoded, encoded or accepted.
///
/// A receiver answers most of these with `NAK` (DC-09: bad CRC, length, format or
/// decryption) and [`Dc09Error::OutsideWindow`] with a `NAK` carrying its own clock.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dc09Error {
    /// The input is longer than a LEN field can describe.
    #[error("frame of {len} bytes is longer than the {max} bytes a LEN field can count")]
    TooLong {
        /// Bytes received.
        len: usize,
        /// The largest message body (LEN `0FFF`).
        max: usize,
    },
    /// The LF / CRC / LEN / CR envelope is malformed (missing or non-hex CRC or LEN).
    #[error("bad envelope: {0}")]
    Envelope(&'static str),
    /// The CRC field does not match the message body.
    #[error("crc mismatch: frame says {stated:04X}, body has {computed:04X}")]
    Crc {
        /// The CRC in the frame.
        stated: u16,
        /// CRC-16/ARC of the body.
        computed: u16,
    },
    /// The LEN field does not match the message body.
    #[error("length mismatch: frame says {stated}, body has {actual} bytes")]
    Length {
        /// The LEN in the frame.
        stated: usize,
        /// Bytes between the opening `"` and the `<CR>`.
        actual: usize,
    },
    /// The quoted ID token is missing or not one DC-09 defines.
    #[error("unknown or malformed message id {0:?}")]
    Id(String),
    /// The sequence number is not four decimal digits.
    #[error("bad sequence number {0:?} (expected 4 decimal digits)")]
    Sequence(String),
    /// The receiver (`R`) or line prefix (`L`) field is not 1-6 hex digits.
    #[error("bad {field} field {value:?} (expected 1-6 hex digits)")]
    Field {
        /// `receiver` or `prefix`.
        field: &'static str,
        /// What was found.
        value: String,
    },
    /// The account (`#`) is missing or not 3-16 hex digits.
    #[error("bad account {0:?} (expected # and 3-16 hex digits)")]
    Account(String),
    /// The data block, extended data or timestamp does not follow the format.
    #[error("bad message body: {0}")]
    Body(String),
    /// ADM-CID data is not `[#acct|QEEE GG ZZZ]`.
    #[error("bad contact id data {0:?} (expected QEEE GG ZZZ)")]
    ContactId(String),
    /// The timestamp is not `_HH:MM:SS,MM-DD-YYYY` or not a real date.
    #[error("bad timestamp {0:?} (expected _HH:MM:SS,MM-DD-YYYY)")]
    Timestamp(String),
    /// A timestamp outside the receiver's window (DC-09 replay protection).
    #[error(
        "timestamp {offset_seconds:+} s from our clock is outside the window (-{past} s, +{future} s)"
    )]
    OutsideWindow {
        /// Message time minus receiver time, in seconds.
        offset_seconds: i64,
        /// Seconds a message may lag.
        past: u32,
        /// Seconds a message may lead.
        future: u32,
    },
    /// A message that must carry a timestamp (encrypted, or checked by the window) has none.
    #[error("message has no timestamp")]
    MissingTimestamp,
    /// The message is encrypted and no key was given for its account.
    #[error("encrypted message for account {account:?} and no key")]
    KeyRequired {
        /// The account in clear in the header.
        account: String,
    },
    /// A key is not 16/24/32 characters of text or 32/48/64 hex digits.
    #[error("bad key: {0}")]
    Key(&'static str),
    /// The ciphertext is not whole hex blocks, or decrypts to no valid plaintext (wrong key).
    #[error("cannot decrypt: {0}")]
    Decrypt(&'static str),
    /// A value given to the encoder cannot be written (out of range, forbidden character).
    #[error("cannot encode: {0}")]
    Encode(String),
}
