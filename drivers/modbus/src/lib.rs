//! Modbus driver for campusgw: polls fire panels' I/O outputs, DI modules and meters, and
//! writes coils (sirens, relays) and holding registers.
//!
//! Three driver kinds share one core (register map, poller, command handling); only the
//! transport differs:
//!
//! | kind | config type | link |
//! |---|---|---|
//! | `modbus_tcp` | [`ModbusTcpConfig`] | Modbus TCP (MBAP header) to `address` |
//! | `modbus_rtu` | [`ModbusRtuConfig`] | RTU frames on a local serial port |
//! | `modbus_rtu_over_tcp` | [`ModbusRtuOverTcpConfig`] | RTU frames through a TCP serial server |
//!
//! What the driver reports (see [`driver`] for the exact invariants):
//! - a coil or discrete input with `on_kind` produces that kind on a rising edge and
//!   `off_kind` (if set) on a falling edge, class from the config, payload
//!   `{point, table, address, value}`. An input already on when the driver starts produces
//!   `on_kind`; one off produces nothing. Reconnecting does not re-announce an unchanged
//!   state;
//! - register points that moved by at least their `deadband` since last queued go out
//!   together as one `sensor.readings` event per poll cycle and class (`telemetry` unless
//!   configured), payload `{"points": {name: number}, "units"?, "raw"?, "coalesced"?}`
//!   (see `batch`); while the journal is behind, the newest value per point wins;
//! - commands `relay.set` and `register.write` (see [`command`]);
//! - health: `Online` after a clean poll, `Degraded` when the device answered an
//!   exception or cannot be polled at its rate, `Offline` on a transport fault (then reconnect with back-off).
//!
//! Wire format notes: addresses are zero-based PDU addresses; reads of adjacent points of
//! one table are coalesced up to the protocol limits (2000 bits / 125 registers) but gaps
//! are never bridged; 32-bit values use two registers with a configurable word order.
//!
//! [`sim`] is a misbehaving-on-demand Modbus TCP device for tests and demos.

mod batch;
pub mod codec;
pub mod command;
pub mod config;
pub mod driver;
pub mod error;
mod observe;
pub mod points;
pub mod sim;
mod transport;

pub use codec::{Table, ValueType, WordOrder};
pub use config::{HumanDuration, ModbusRtuConfig, ModbusRtuOverTcpConfig, ModbusTcpConfig, Parity};
pub use driver::ModbusDriver;
pub use error::ModbusError;
pub use points::PointConfig;
