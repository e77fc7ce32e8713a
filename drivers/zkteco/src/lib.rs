//! ZKTeco Security PUSH access-controller driver for campusgw (`driver = "zkteco_push"`).
//!
//! The gateway is the HTTP server the controllers call (PUSH: every request is the
//! controller's): they handshake on `/iclock/cdata`, upload `rtlog` (access events) and
//! `rtstate` (door state) lines, poll `/iclock/getrequest` for `C:<id>:CONTROL DEVICE ...`
//! commands and report each result on `/iclock/devicecmd`. Each door is a device of its own,
//! with its own location, escape-route flag and presence boundary, so a command to a scope
//! (`building:A`) reaches exactly the doors there, across vendors.
//!
//! - [`proto`]: the wire format, pure and bounded (hand-written: plain text lines, no crate
//!   parses them).
//! - [`map`]: records → events (the event-code table and the `origin_ref` rule).
//! - [`ZktecoConfig`] / [`ZktecoDriver`]: the server and the command queues.
//! - [`sim`]: a simulated controller that registers, uploads, polls, executes door commands
//!   and misbehaves.
//!
//! Invariants: an upload is answered `OK` only after its events are committed to the journal;
//! a command is `Succeeded` only on `Return=0` from the controller for every protocol command
//! it became; an unknown serial gets 403 and no commands; no body from the LAN can make the
//! server read more than `max_body_bytes` or panic.

mod config;
mod driver;
pub mod map;
pub mod proto;
pub mod sim;

pub use config::{
    ControllerEntry, DEFAULT_MAX_CONNECTIONS, DoorEntry, KIND, MAX_DOOR, ZktecoConfig,
    check_boundary,
};
pub use driver::{
    Controller, PER_POLL, READ_TIMEOUT, Settings, UNKNOWN_EVENT_EVERY, ZktecoDriver, plan,
};
