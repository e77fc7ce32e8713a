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
//! - `Forward`: logged as a `forward` row with status `queued`; the named uplink's feed
//!   reads it, sends the event unless its own filter carries it anyway (`carried`), and
//!   marks it `delivered` (or `rejected`) on the destination's answer (`uplink/feed.rs`).
//! - `Emit`: journaled, source = the gateway, driver `rules`.
//!
//! # Latency
//! A command follows the commit of the event that caused it (the tail hands over only
//! committed events) and the commit of the step that decided it (its row, the cursor and
//! the engine state): so after a crash the event is either consumed with its command
//! already recorded, or not consumed and nothing was sent (invariant 10, "rules act once
//! per event"). Sending before the step's own fsync would save one commit but could send a
//! command twice after a crash, so it is not done; the step commit is made fast instead
//! (the writer's group commit). Stage timings:
//! `campusgw_linkage_stage_seconds{stage="to_engine"|"engine"|"step_commit"|"command"}`.
//!
//! # Supervision
//! A runner that stops with an error or panics is started again after a back-off (200 ms
//! doubling to 10 s); it resumes from its stored cursor. A runner that keeps failing
//! ([`RESTART_LIMIT`] failures within [`RESTART_WINDOW`], e.g. a stored state it cannot
//! read) is not restarted again: the supervisor reports the reason on the
//! [`RunnerFailure`] it returned, `/healthz` answers 503 with it and the gateway exits
//! non-zero, so the service manager restarts the whole process and someone is told.
//! Linkage that silently never runs is the failure this prevents.
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

/// Failures of the runner within [`RESTART_WINDOW`] after which it is not restarted.
pub const RESTART_LIMIT: usize = 5;
/// The window [`RESTART_LIMIT`] counts failures in.
pub const RESTART_WINDOW: std::time::Duration = std::time::Duration::from_secs(120);

/// Set (once) to why the runner was given up on; `None` while it runs.
pub type RunnerFailure = tokio::sync::watch::Receiver<Option<String>>;

/// Builds the runner from the config's `[rules]` section and spawns it supervised: if it
/// fails or panics it is started again after a back-off (it resumes from its stored
/// cursor), until `shutdown` or until it failed [`RESTART_LIMIT`] times within
/// [`RESTART_WINDOW`] (then the returned [`RunnerFailure`] says why).
///
/// # Errors
/// A notifier that cannot be built (its HTTP client).
pub fn spawn(
    section: &config::RulesSection,
    uplinks: &[crate::config::UplinkConfig],
    cx: SpawnContext,
) -> Result<(tokio::task::JoinHandle<()>, RunnerFailure), crate::notify::NotifyError> {
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
    let (fail_tx, failure) = tokio::sync::watch::channel(None);
    Ok((
        tokio::spawn(supervise(runner, cx.shutdown, fail_tx)),
        failure,
    ))
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
    failure: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut backoff = campusgw_sdk::driver::Backoff::new(
        std::time::Duration::from_millis(200),
        std::time::Duration::from_secs(10),
    );
    let mut recent = std::collections::VecDeque::new();
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
        let now = std::time::Instant::now();
        recent.push_back(now);
        while recent
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            recent.pop_front();
        }
        if recent.len() >= RESTART_LIMIT {
            let why = format!(
                "rules runner failed {} times within {}s, last: {reason}",
                recent.len(),
                RESTART_WINDOW.as_secs()
            );
            metrics::counter!("campusgw_rules_runner_given_up_total").increment(1);
            tracing::error!(reason = %why, "rules runner keeps failing; not restarting it: linkage is down, the gateway reports failing and exits");
            failure.send_replace(Some(why));
            return;
        }
        metrics::counter!("campusgw_rules_runner_restarts_total").increment(1);
        tracing::error!(reason = %reason, "rules runner stopped; restarting it (it resumes from its cursor)");
        tokio::select! {
            () = tokio::time::sleep(backoff.next_delay()) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
