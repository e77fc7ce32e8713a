//! The contract every campusgw driver and the gateway share.
//!
//! A driver turns what a device says into [`NewEvent`]s and hands them to its
//! [`DriverContext`]; the context returns only once the gateway's journal has committed
//! them with fsync ([`DriverContext::emit`]). Only then may the driver acknowledge the
//! device. Commands travel the other way: the gateway routes a [`Command`] to the driver
//! that owns the addressed device, and the driver answers with a [`CommandResult`].
//!
//! Invariants this crate upholds:
//! - an [`Event`]'s JSON form is stable and versioned ([`EVENT_SCHEMA_VERSION`],
//!   `docs/event-schema.md`);
//! - [`Kind`] is always a dotted lowercase name and [`Class`] is a closed set ordered by
//!   priority, so no invalid event can be represented;
//! - driver configuration is validated purely ([`DriverConfig::validate`]) before any I/O.
//!
//! The `testkit` module (cargo feature `testkit`, enabled from dev-dependencies only) gives
//! drivers an in-memory context so their tests need no gateway.

pub mod command;
pub mod config;
pub mod driver;
pub mod event;
pub mod log;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use command::{
    Command, CommandInbox, CommandKind, CommandRequest, CommandResult, CommandStatus, Target,
};
pub use config::{ConfigIssue, FieldPath, HumanDuration};
pub use driver::{
    Backoff, BoxFuture, BuildContext, BuildError, ContextParts, DeviceHealth, Driver, DriverConfig,
    DriverContext, DriverError, EmitError, EventSink, HealthSink, Receipt,
};
pub use event::{
    Class, Dedup, DeviceId, EVENT_SCHEMA_VERSION, Event, EventId, Kind, KindError, Location,
    NewEvent, Source,
};
