//! The campusgw rules engine (DESIGN §1, §4 "Latency").
//!
//! It links systems: a fire alarm unlocks the building's doors and starts the evacuation
//! broadcast; a panic button locks down and calls the police. The engine is pure: it is
//! handed committed events and the current time and returns actions (commands, derived
//! events, alarm state changes). It does no I/O and knows nothing of tokio or SQLite, so
//! every rule can be tested with tables and property tests.
//!
//! Status: the contract only. The rule language, evaluation, timers and the alarm state
//! machine arrive with the rules issue; the gateway already feeds this crate from the
//! journal's commit stream.

pub use campusgw_model::{Command, Event};
