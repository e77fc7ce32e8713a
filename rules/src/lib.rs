//! The campusgw rules engine (DESIGN §1, §4 "Latency"; issue 11).
//!
//! It links systems: a confirmed fire unlocks the building's doors and starts the evacuation
//! broadcast; a panic button locks the school down and calls the police; a missed patrol
//! checkpoint raises an alarm. The engine is pure: it is handed committed events and the
//! current time and returns [`Action`]s (commands, alarm changes, forwards, notifications,
//! derived events). It does no I/O, reads no clock, and knows nothing of tokio or SQLite, so
//! every rule can be tested with tables and property tests; `gateway/src/rules` runs it.
//!
//! - Rule files are TOML ([`RuleSet::parse`], language in `docs/rules.md`); every problem is
//!   reported with file and line, and a set with problems is refused whole.
//! - Conditions are CEL (cel-spec) through `cel-interpreter`: a specified, side-effect free,
//!   non-Turing-complete expression language, so a rule cannot loop or do I/O.
//!   Conditions in its common subset (event fields, literals, `has()`, comparisons, `&&`,
//!   `||`, `!`) are evaluated on the event in place, with the interpreter's own semantics and
//!   the interpreter as fallback for everything else (`fastcel`).
//! - Rules are indexed by event kind (exact, `family.*` prefix, `*`): an event costs only the
//!   rules that can match it.
//! - Everything the engine remembers is in [`EngineState`] (serde), and every timestamp in it
//!   derives from event receive times, so a restored engine continues exactly as the
//!   uninterrupted one would, and replays give the same alarm ids (`"{rule}:{cause_seq}"`).
//! - A rule that fails on one event is skipped for that event and reported through
//!   [`Engine::take_eval_errors`]; no input makes the engine panic (property-tested).
//!
//! Interface changes are announced by commits starting `INTERFACE:` (see the repository's
//! rules interface note); additions so far: [`Engine::take_eval_errors`],
//! [`Engine::retry_policy`], [`Engine::is_enabled`], [`Engine::maintenance`],
//! [`Engine::drills`], [`Engine::rules`], [`RuleSet::empty`], [`Action::to_json`],
//! [`AlarmChange::event_kind`], and [`RuleInfo`]'s `line`, `retry` and `skipped`.

mod action;
mod alarm;
pub mod bench;
mod calendar;
mod compile;
mod engine;
mod fastcel;
mod lang;
mod ops;
mod rule;
mod state;

pub use action::{Action, EvalError, RetryPolicy};
pub use alarm::{Alarm, AlarmChange, AlarmState, Severity};
pub use calendar::{Calendar, Calendars};
pub use campusgw_model::{Command, Event};
pub use compile::{RuleEnv, RuleIssue, RuleSet, RuleSource};
pub use engine::Engine;
#[doc(hidden)]
pub use fastcel::fast_agrees_with_interpreter;
pub use rule::RuleInfo;

/// Checks a location scope as rules and `maintenance.set` take it (`all`, `campus:C`,
/// `building:B`, `floor:B/F`, `zone:B/F/Z`, `device:ID`); the error says what to write.
///
/// # Errors
/// A scope that does not parse.
pub fn check_scope(s: &str) -> Result<(), String> {
    rule::Scope::check(s)
}
pub use state::{EngineState, Hold};

#[cfg(test)]
mod tests {
    #[test]
    fn engine_and_rule_set_can_move_to_another_thread() {
        fn send<T: Send>() {}
        fn sync<T: Send + Sync>() {}
        send::<super::Engine>();
        sync::<super::RuleSet>();
        sync::<super::EngineState>();
    }
}
