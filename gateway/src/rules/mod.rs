//! The rules runner: runs the pure engine (`campusgw-rules`) over the journal and carries
//! out what it decides.
//!
//! # Loop
//! Committed events come through a [`Tail`] (never skips). Each batch goes through
//! `Engine::on_event`; timers through `Engine::on_time` at `Engine::next_deadline` (a
//! deadline restored after a restart is the original one, so an absence timer armed before
//! a crash fires at its own time, or at once if that passed while the gateway was down).
//!
//! # Exactly once, across SIGKILL
//! What a step decided is written by [`Journal::rules_step`] in ONE transaction: the
//! derived events (`alarm.*` with the alarm as payload and the alarm's class and location;
//! `Emit`ted events), the cursor (last seq consumed), the engine state, the alarm rows
//! and the action rows (`pending`). Only after that commit are actions carried out; each
//! outcome is written back (`done`, `retrying`, `gave_up`, ...). So after a crash the
//! engine restarts from a state matching its cursor: the events it consumed are never
//! consumed again (no second alarm, no second action row) and none is missed. A command
//! that was in flight at the crash is still `pending` and is sent again at start (a door
//! unlock is idempotent at the device; the row and its attempts say so).
//! Steps that decided nothing (most events) are persisted at most once a second: a crash
//! replays them, and replaying deterministic input that produced nothing produces nothing.
//!
//! # Actions
//! - `Command`: through the [`CommandRouter`] (results journaled as `command.result`),
//!   retried with the rule's policy (attempts, doubling back-off); the last failure marks
//!   the row `gave_up` and, if the policy says so, journals `rule.action_failed` (class
//!   `security`, payload: rule, action, attempts, results) for an alarm rule to raise.
//! - `Alarm`: journaled as `alarm.raised|updated|escalated|acknowledged|resolved` and
//!   projected into `alarms`; [`AlarmStore::subscribe`] announces it.
//! - `Notify`: through the named notifier ([`crate::notify`]), retried like commands.
//! - `Forward`: logged as a `forward` row with status `queued` (see the report in the
//!   commit: the uplink feed does not read it yet).
//! - `Emit`: journaled, source = the gateway, driver `rules`.
//!
//! # Reload
//! The rules directory is checked every `reload_poll` (file names, sizes, mtimes) and on
//! SIGHUP. A set with problems is refused: every problem is logged with file and line,
//! `campusgw_rules_reload_failures_total` counts it, and the old set keeps running.
//!
//! # Evaluation errors
//! A rule that cannot be evaluated on an event is skipped for that event by the engine;
//! the runner counts it (`campusgw_rule_eval_errors_total{rule}`) and logs it at most
//! once a minute per rule.

pub mod config;
mod exec;
mod load;
mod runner;

pub use load::{LoadError, load_rule_set, read_sources};
pub use runner::{RulesRunner, RunnerError};

use crate::alarms::AlarmStore;
use crate::commands::CommandRouter;
use crate::journal::{Journal, Tail};

/// The consumer name of the rules runner in `rules_state`.
pub const CONSUMER: &str = "rules";

/// Builds the runner from the config's `[rules]` section and spawns it supervised: if it
/// fails or panics it is started again after a back-off (it resumes from its stored
/// cursor), until `shutdown`.
///
/// # Errors
/// A notifier that cannot be built (its HTTP client).
pub fn spawn(
    section: &config::RulesSection,
    uplinks: &[crate::config::UplinkConfig],
    cx: SpawnContext,
) -> Result<tokio::task::JoinHandle<()>, crate::notify::NotifyError> {
    let mut notifiers = std::collections::BTreeMap::new();
    for n in &section.notifiers {
        let timeout = std::time::Duration::from_secs(10);
        notifiers.insert(
            n.name.clone(),
            crate::notify::Notifier::new(n.clone(), timeout)?,
        );
    }
    let env = rule_env(section, uplinks);
    let runner = std::sync::Arc::new(RulesRunner {
        journal: cx.journal,
        store: cx.store,
        router: cx.router,
        gateway: cx.gateway,
        dir: section.dir.clone(),
        env,
        notifiers,
        command_timeout: section.command_timeout.0,
        reload_poll: section.reload_poll.0,
        start_after: cx.start_after,
        shutdown: cx.shutdown.clone(),
    });
    Ok(tokio::spawn(supervise(runner, cx.shutdown)))
}

/// The environment rules are checked in (also used by the console to list them).
pub fn rule_env(
    section: &config::RulesSection,
    uplinks: &[crate::config::UplinkConfig],
) -> campusgw_rules::RuleEnv {
    campusgw_rules::RuleEnv {
        timezone: section.tz().unwrap_or(chrono_tz::Asia::Shanghai),
        calendars: campusgw_rules::Calendars::default(),
        known_uplinks: uplinks.iter().map(|u| u.name.clone()).collect(),
        known_notifiers: section.notifiers.iter().map(|n| n.name.clone()).collect(),
    }
}

/// What [`spawn`] needs from the gateway.
pub struct SpawnContext {
    /// The journal.
    pub journal: Journal,
    /// The alarm board.
    pub store: AlarmStore,
    /// Command routing.
    pub router: std::sync::Arc<CommandRouter>,
    /// The gateway id.
    pub gateway: campusgw_sdk::DeviceId,
    /// The journal's last seq when the gateway started (see [`RulesRunner::start_after`]).
    pub start_after: u64,
    /// Stops the runner.
    pub shutdown: tokio_util::sync::CancellationToken,
}

async fn supervise(
    runner: std::sync::Arc<RulesRunner>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut backoff = campusgw_sdk::driver::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    loop {
        let r = runner.clone();
        let outcome = tokio::spawn(async move { r.run().await }).await;
        if shutdown.is_cancelled() {
            return;
        }
        let reason = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => format!("panicked: {e}"),
        };
        metrics::counter!("campusgw_rules_runner_restarts_total").increment(1);
        tracing::error!(reason = %reason, "rules runner stopped; restarting it (it resumes from its cursor)");
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
