//! Canteen card terminals for campusgw (`driver = "canteen"`): offline authorisation and
//! an exactly-once sale ledger.
//!
//! No canteen POS / campus-card terminal protocol is publicly documented (see the README),
//! so terminals speak our own: JSON over HTTPS with a per-terminal bearer token, written
//! up in `docs/canteen-protocol.md`. The gateway holds the card list (accounts, cards by
//! ISO/IEC 14443 UID or printed number, balances in integer cents, daily and per-meal
//! limits, lost cards, meal periods) and decides every sale on the spot, whether or not the
//! card platform is reachable.
//!
//! - [`proto`]: the wire format, pure and bounded (serde does the JSON; the checks are ours).
//! - [`ledger`]: the card list and the sale ledger (SQLite), the authorisation rules,
//!   card-list changes and the conflicts they reveal, the day report.
//! - [`CanteenConfig`] / [`CanteenDriver`]: the terminal server.
//! - [`sim`]: lunch-rush terminals that retry and send duplicates, and misbehave;
//!   [`sim::platform`]: a card platform that goes down, answers slowly, changes cards.
//!
//! Invariants: a sale is answered `approved` only after its decision is committed to the
//! ledger **and** its `canteen.sale` event to the journal; every resend of a (terminal,
//! txn) gets the first answer and is counted once (ledger primary key, journal lifetime
//! `origin_ref`); money is integer cents; no body from the LAN can make the server read
//! more than [`proto::MAX_BODY`] or panic; tokens are stored only as SHA-256 and never
//! logged.

mod config;
mod driver;
pub mod ledger;
pub mod proto;
pub mod sim;
pub mod sync;

pub use config::{
    CanteenConfig, DEFAULT_MAX_AMOUNT_CENTS, DEFAULT_MAX_CONNECTIONS, KIND, MealEntry,
    TerminalEntry,
};
pub use driver::{
    CanteenDriver, Clock, FLUSH_EVERY, READ_TIMEOUT, Settings, TerminalAuth, conflict_event,
    load_tls, sale_event, system_clock,
};
