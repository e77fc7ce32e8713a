//! DL/T 645-2007 electricity meter driver for campusgw (`driver = "dlt645"`): energy
//! monitoring (能耗监测) of a school's buildings from the meters on its RS-485 buses.
//!
//! One driver instance owns one bus (a local serial port or a serial server reached over
//! TCP) and polls the meters on it in turn:
//! - one request on the bus at a time, each under `request_timeout`; a meter that does not
//!   answer costs one timeout per cycle (its other points are skipped that cycle) and never
//!   stops the others;
//! - every frame received is checked ([`codec`]): garbage, torn frames, bad checksums,
//!   the bus echo of our own request and answers from another address are rejected with a
//!   counter and a rate-limited log line, and the bus is kept;
//! - the values of each meter that changed go out as one `sensor.readings` event per meter
//!   and cycle, attributed to the meter's own device id (a sub-device of the instance);
//! - optionally a broadcast time sync (`08H`) every `time_sync`.
//!
//! [`codec`] is pure (and fuzzed), [`ids`] is the one table of data identifiers with their
//! formats and sources, [`driver`] the poll loop (with `batch`, the readings waiting for the
//! journal, and [`observe`], counters, metrics and rate-limited logs), [`sim`] a bus of
//! misbehaving-on-demand meters behind a simulated serial server for tests and demos.

mod batch;
pub mod codec;
pub mod config;
pub mod driver;
pub mod ids;
pub mod observe;
pub mod sim;
mod transport;

pub use codec::{Address, Frame};
pub use config::{Dlt645Config, MeterConfig};
pub use driver::Dlt645Driver;
