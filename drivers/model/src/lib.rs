//! The campusgw event model (DESIGN §3): events, kinds, classes, locations and commands.
//!
//! A small crate with no async runtime, so that both the driver contract (`campusgw-sdk`,
//! which re-exports everything here under the same paths) and the pure rules engine
//! (`campusgw-rules`) can depend on it without pulling in tokio.
//!
//! Invariants this crate upholds:
//! - an [`Event`]'s JSON form is stable and versioned ([`EVENT_SCHEMA_VERSION`],
//!   `docs/event-schema.md`);
//! - [`Kind`] is always a dotted lowercase name and [`Class`] is a closed set ordered by
//!   priority, so no invalid event can be represented.

pub mod command;
pub mod event;
mod json;

pub use command::{Command, CommandKind, CommandResult, CommandStatus, Target};
pub use event::{
    Class, Dedup, DeviceId, EVENT_SCHEMA_VERSION, Event, EventId, Kind, KindError, Location,
    NewEvent, Source, kinds,
};
