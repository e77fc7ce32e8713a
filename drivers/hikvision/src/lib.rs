//! Hikvision ISAPI access-controller driver for campusgw (`driver = "hikvision_isapi"`).
//!
//! The gateway is the HTTP client of each controller: it holds the controller's
//! `alertStream` open and journals its access events, and it sends door commands through
//! `RemoteControl/door/<n>`. Each door is a device of its own, with its own location, so a
//! command to a scope (`building:A`) reaches exactly the doors there.
//!
//! - [`digest`]: HTTP Digest auth (RFC 7616: MD5, SHA-256, `qop=auth`), client and server.
//! - [`multipart`]: the alertStream splitter, pure and bounded.
//! - [`alert`]: parts → alerts → events (the mapping table and the `origin_ref` rule).
//! - [`HikvisionConfig`] / [`HikvisionDriver`]: the driver; [`command`]: door commands.
//! - [`sim`]: a simulated controller with Digest auth, alertStream, doors and misbehaviour.
//!
//! Invariants: TLS certificates are always verified (plain http only to loopback or when
//! opted in); a door command is `Succeeded` only on the controller's `statusCode` 1 read in
//! full; no part from the LAN can make the driver allocate more than `max_part_bytes` per
//! part, expand an entity, or panic.

pub mod alert;
mod client;
pub mod command;
mod config;
pub mod digest;
mod driver;
pub mod multipart;
pub mod sim;

pub use client::{IsapiClient, IsapiError};
pub use config::{ALL_DOORS, DoorEntry, HikvisionConfig, KIND};
pub use driver::{ALERT_STREAM, HikvisionDriver, SYSTEM_TIME, Settings};
