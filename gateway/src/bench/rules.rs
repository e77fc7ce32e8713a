//! `campusgw bench rules`: events/s through the pure rules engine on one thread.
//!
//! The generator and the loop live in the engine's crate ([`campusgw_rules::bench`]), so the
//! figure can be iterated on without building the gateway
//! (`cargo run --release -p campusgw-rules --example bench`); this prints its report. Packs:
//! `campus` (default; a realistic set over 20 buildings where a typical event is looked at by
//! a few rules) and `dense` (the first generator, where most rules of a kind act on most
//! events of it), both in issue 11's 70/20/10 rule mix and the demo's kind mix of events.

use campusgw_rules::bench::Pack;

/// Runs the benchmark and prints its figures; returns the exit code.
///
/// # Errors
/// A generated rule set that does not parse (a bug in the generator).
pub fn run(rules: usize, events: u64, pack: Pack) -> anyhow::Result<i32> {
    let report = campusgw_rules::bench::run(pack, rules, events)?;
    println!("{report}");
    Ok(0)
}
