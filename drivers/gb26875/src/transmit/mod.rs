//! campusgw as a UITD (用户信息传输装置) toward the city fire-monitoring centre
//! (城市消防远程监控中心): the transmitting side of GB/T 26875.3-2011 over TCP, used by the
//! gateway's `[[uplink]] kind = "gb26875"`.
//!
//! - [`UitdState`] (pure): numbers uploads (serial 1 on a fresh connection, incremented per
//!   frame the UITD initiates), stamps them with this UITD's source address and the
//!   centre's destination address, remembers the last status uploaded per system,
//!   component and for the UITD, and decides the answer to every frame from the centre:
//!   confirm (command 3) to a clock sync (type 90) or 查岗 (type 91), a response (command
//!   5) to status reads (types 61, 62, 68, 81, 85, 88), a deny (command 6) to anything
//!   else, to frames failing their checks and to frames for another address.
//! - [`CentreLink`] (tokio): one TCP connection to the first centre that answers (primary,
//!   then backups). A reader task answers the centre on its own and sends a heartbeat (an
//!   empty command 2, a vendor convention: PROTOCOLS §1) every `heartbeat`; a heartbeat
//!   left unconfirmed until the next one closes the link. [`CentreLink::upload`] writes a
//!   frame and waits `confirm_timeout` for its confirm; on silence or a deny it writes the
//!   *same bytes* again (GB/T 26875.3-2011 §6.5: same serial), `retries` times. All
//!   attempts denied: [`TransmitError::Denied`] (the centre's verdict on this content);
//!   otherwise [`TransmitError::NoConfirm`] and the link is closed, so the caller
//!   reconnects.
//!
//! Hand-written rather than a crate: no maintained Rust crate speaks the transmitting side
//! of GB/T 26875.3; the codec is this crate's own (fuzzed).

mod link;
mod state;

pub use link::{CentreLink, Receipt, TransmitError};
pub use state::{Handled, Inbound, UitdState, centre_frame};

use std::time::Duration;

use crate::codec::{Address, Version};

/// Who talks to whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// This UITD's address (the uploads' source address).
    pub uitd: Address,
    /// The centre's address (the uploads' destination address).
    pub centre: Address,
    /// Protocol version written in every frame (1.1 in the reference vectors).
    pub version: Version,
}

/// How the link connects, waits and retransmits.
#[derive(Debug, Clone)]
pub struct TransmitSettings {
    /// Centres as `host:port`, primary first.
    pub centres: Vec<String>,
    /// Addresses and version.
    pub identity: Identity,
    /// Wait for a confirm per attempt (GB/T 26875.3-2011 §6.5: at most 10 s).
    pub confirm_timeout: Duration,
    /// Retransmissions after the first attempt (§6.5 recommends 3).
    pub retries: u8,
    /// How long a TCP connect (with the name lookup) may take, per centre.
    pub connect_timeout: Duration,
    /// Heartbeat (empty upload) interval.
    pub heartbeat: Duration,
}

impl TransmitSettings {
    /// `centres` with the defaults: 10 s confirm timeout, 3 retries, 5 s connect timeout,
    /// 30 s heartbeat.
    pub fn new(centres: Vec<String>, identity: Identity) -> TransmitSettings {
        TransmitSettings {
            centres,
            identity,
            confirm_timeout: Duration::from_secs(10),
            retries: 3,
            connect_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(30),
        }
    }
}
