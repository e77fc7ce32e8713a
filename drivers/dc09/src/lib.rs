//! SIA DC-09 (alarm transmission over IP) codec for campusgw: pure, no I/O, no clock reads
//! ("now" is always a parameter), never panics on any input (fuzzed by `fuzz/dc09_decode`
//! and the proptests in this crate).
//!
//! Wire format (PROTOCOLS §2; pysiaalarm, fioletoven/dc09, dc09_spt):
//! ```text
//! <LF> CRC LEN "ID" SEQ [R rcvr] [L prefix] [#acct] [data] [x-data]... [_HH:MM:SS,MM-DD-YYYY] <CR>
//! \nDA47003C"SIA-DCS"0002R0L0#1234[#1234|Nri1/FA003]_10:15:30,09-01-2025\r
//! ```
//! - CRC: CRC-16/ARC, LEN: byte count; both 4 uppercase hex digits over the body (from the
//!   opening `"` to before `<CR>`) — [`frame`].
//! - IDs `SIA-DCS`, `ADM-CID`, `NULL`, `ACK`, `NAK`, `DUH`, `RSP`; `*` marks encryption.
//! - Data: ADM-CID `QEEE GG ZZZ`, SIA DCS `Nri1/FA003`, extended `[X..]` blocks — [`data`].
//! - Encryption: AES-128/192/256-CBC, zero IV, padded `pad|rest`, uppercase hex — [`crypto`].
//! - Timestamp and the receiver's time window — [`time`].
//! - Contact ID / SIA codes → event kinds and classes — [`mapping`].
//!
//! Besides the pure codec, the crate holds the `driver = "dc09"` receiver ([`Dc09Config`],
//! [`Dc09Driver`]: TCP and UDP, ACK only after the journal commit) and [`sim`], a panel
//! and an alarm receiving centre for tests and `campusgw demo`. Only those use tokio.
//!
//! Decoding is in two steps so a receiver can choose the key by the account sent in clear:
//! [`Frame::decode`] checks the envelope and reads the header, [`Frame::open`] decrypts and
//! reads the body. Every decoded message encodes back to the same bytes
//! ([`Message::encode_with`], with [`FixedPad`] holding the decoded pad).

mod config;
pub mod crypto;
pub mod data;
mod driver;
mod error;
pub mod frame;
pub mod inspect;
pub mod mapping;
mod settings;
pub mod sim;
pub mod time;
pub mod transmit;

pub use config::{
    AccountEntry, Dc09Config, UnknownAccountPolicy, UnknownCodePolicy, UserEntry, ZoneEntry,
};
pub use driver::{AccountProfile, Bound, Dc09Driver};

pub use crypto::{FixedPad, Key, KeyEncoding, PadSource};
pub use data::{CidData, CidEvent, Data, ExtData, Qualifier, SiaData, SiaElement};
pub use error::Dc09Error;
pub use frame::{Account, Frame, Message, MessageId, Opened, Sequence, crc16, decode};
pub use time::{TimeWindow, Timestamp};

#[cfg(test)]
mod tests;
