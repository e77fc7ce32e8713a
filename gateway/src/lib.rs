//! campusgw: the gateway process.
//!
//! Wiring (DESIGN §1): drivers emit events into the [`journal`]; committed events feed the
//! rules engine, the uplinks (each with its own cursor) and the console. The
//! [`supervisor`] runs drivers and restarts them; [`config`] parses and validates the one
//! TOML file; [`api`] serves health and metrics and mounts the [`console`]; [`cli`] is the `campusgw` command.

pub mod access;
pub mod alarms;
pub mod api;
pub mod app;
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod console;
pub mod demo;
pub mod fds;
pub mod health;
pub mod import;
pub mod journal;
pub mod notify;
pub mod presence;
pub mod registry;
pub mod rules;
pub mod rules_cli;
pub mod secrets;
pub mod supervisor;
pub mod uplink;
