//! GB/T 26875.3-2011 monitoring-centre (监控中心) driver for campusgw.
//!
//! User information transmission devices (UITD, 用户信息传输装置) connect over TCP and
//! upload the state of the building's fire systems; campusgw listens, journals each upload
//! as events and only then confirms it (command 3). See the crate README for the config
//! reference and the event mapping table.
//!
//! - [`codec`]: the wire format, pure and fuzzed (frames, ADUs, streaming decoder).
//! - [`mapping`]: upload ADUs → [`campusgw_sdk::NewEvent`]s (the table is in its doc).
//! - [`Gb26875Config`] / [`Gb26875Driver`]: the `driver = "gb26875"` listener.
//! - [`sim`]: a scriptable, misbehaving UITD for tests and `campusgw demo`, and
//!   [`sim::centre`], a simulated city fire-monitoring centre.
//! - [`transmit`]: campusgw as a UITD toward the city centre (the gateway's
//!   `kind = "gb26875"` uplink).
//! - [`decode_hex_to_json`]: `campusgw decode gb26875 HEX`.
//!
//! Invariants: a frame is confirmed only after its events are durable; a frame failing its
//! checks is denied (command 6) and the connection kept; retransmissions are dropped by the
//! journal through each event's `origin_ref` ([`mapping`] explains its form).

pub mod codec;
mod config;
mod driver;
mod inspect;
pub mod mapping;
pub mod sim;
pub mod transmit;

pub use config::{
    ComponentEntry, ConfigDuration, DEFAULT_MAX_CONNECTIONS, Gb26875Config, UitdEntry,
    UnknownUitdPolicy,
};
pub use driver::Gb26875Driver;
pub use inspect::{InspectError, decode_hex_to_json, frame_to_json, parse_hex};
