//! The runner's loop (module doc of [`super`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusgw_rules::{Action, Alarm, AlarmChange, Engine, EngineState, RuleEnv, RuleSet};
use campusgw_sdk::{DeviceId, Event, Kind};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::exec::{Executor, Job};
use super::load::{LoadError, fingerprint, load_rule_set};
use super::{AlarmStore, CONSUMER, CommandRouter, Journal, Tail};
use crate::journal::JournalError;
use crate::journal::rules::{ActionRow, AlarmRow, RulesStep};
use crate::notify::Notifier;

/// Events taken from the tail per engine step.
const BATCH: usize = 512;
/// A step that decided nothing is persisted at most this often (module doc).
const QUIET_PERSIST: Duration = Duration::from_secs(1);
/// Evaluation errors of one rule are logged at most this often.
const EVAL_LOG_EVERY: Duration = Duration::from_secs(60);

/// Why the runner stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The journal failed (closed, unreadable).
    #[error("rules runner: {0}")]
    Journal(#[from] JournalError),
    /// The stored engine state does not decode.
    #[error("rules runner: stored engine state is unreadable: {0}")]
    State(serde_json::Error),
}

/// Everything the runner needs, built once by `app.rs`.
pub struct RulesRunner {
    /// The journal.
    pub journal: Journal,
    /// The alarm board to announce changes on.
    pub store: AlarmStore,
    /// Command routing.
    pub router: Arc<CommandRouter>,
    /// The gateway id (source of derived events).
    pub gateway: DeviceId,
    /// The rules directory.
    pub dir: PathBuf,
    /// What rule sets are checked against.
    pub env: RuleEnv,
    /// Notifiers by name.
    pub notifiers: BTreeMap<String, Notifier>,
    /// Per attempt of a command.
    pub command_timeout: Duration,
    /// Directory poll interval.
    pub reload_poll: Duration,
    /// The seq to start after when no cursor is stored (the journal's last seq when the
    /// gateway started: rules act on what arrives from now, never on old history).
    pub start_after: u64,
    /// Stops the runner.
    pub shutdown: CancellationToken,
}

struct Loop {
    engine: Engine,
    tail: Tail,
    exec: Arc<Executor>,
    dirty: bool,
    persisted: Instant,
    eval_logged: HashMap<String, Instant>,
    fingerprint: Vec<(PathBuf, u64, Option<std::time::SystemTime>)>,
}

/// One engine step being assembled.
#[derive(Default)]
struct Step {
    rows: RulesStep,
    /// Jobs to start after commit, by index into `rows.actions`.
    jobs: Vec<(usize, super::exec::Work, serde_json::Value)>,
    alarms: Vec<String>,
}

impl RulesRunner {
    /// Runs until shutdown.
    ///
    /// # Errors
    /// [`RunnerError`] when the journal fails; the caller restarts the runner (it resumes
    /// from its stored cursor).
    pub async fn run(&self) -> Result<(), RunnerError> {
        // Taken before reading the files, so a change while they are read is seen next poll.
        let seen = fingerprint(&self.dir);
        let rules = self.initial_rules();
        let reader = self.journal.rules_reader()?;
        let (cursor, engine) = match reader.state(CONSUMER)? {
            Some((c, s)) => {
                let st: EngineState = serde_json::from_str(&s).map_err(RunnerError::State)?;
                (c, Engine::restore(rules, st))
            }
            None => (self.start_after, Engine::new(rules)),
        };
        tracing::info!(
            cursor,
            rules = engine.rules().rules().count(),
            "rules runner started"
        );
        let exec = Arc::new(Executor {
            journal: self.journal.clone(),
            router: self.router.clone(),
            notifiers: self.notifiers.clone(),
            gateway: self.gateway.clone(),
            timeout: self.command_timeout,
            shutdown: self.shutdown.clone(),
        });
        for a in reader.open_actions()? {
            if let Some(job) = Job::from_stored(&a, engine.retry_policy(&a.rule)) {
                tracing::info!(action = a.id, rule = %a.rule, "resuming a rule action left open");
                exec.spawn(job);
            }
        }
        let mut lp = Loop {
            engine,
            tail: Tail::new(&self.journal, cursor)?,
            exec,
            dirty: false,
            persisted: Instant::now(),
            eval_logged: HashMap::new(),
            fingerprint: seen,
        };
        let result = self.run_loop(&mut lp).await;
        if lp.dirty {
            let _ = self.persist(&mut lp, Step::default()).await;
        }
        result
    }

    fn initial_rules(&self) -> RuleSet {
        match load_rule_set(&self.dir, &self.env) {
            Ok(set) => set,
            Err(e) => {
                // Alarms are still received, journaled and uplinked; only linkage waits.
                report_refused(&e);
                RuleSet::empty()
            }
        }
    }

    async fn run_loop(&self, lp: &mut Loop) -> Result<(), RunnerError> {
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut poll = tokio::time::interval(self.reload_poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut quiet = tokio::time::interval(QUIET_PERSIST);
        loop {
            let timer = sleep_until(lp.engine.next_deadline());
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Ok(()),
                batch = lp.tail.next_batch(BATCH) => {
                    let batch = match batch {
                        Ok(b) => b,
                        Err(JournalError::Closed) => return Ok(()),
                        Err(e) => return Err(e.into()),
                    };
                    self.on_events(lp, batch).await?;
                }
                () = timer => self.on_time(lp).await?,
                _ = poll.tick() => self.maybe_reload(lp, false),
                () = hangup(&mut hup) => self.maybe_reload(lp, true),
                _ = quiet.tick() => {
                    if lp.dirty && lp.persisted.elapsed() >= QUIET_PERSIST {
                        self.persist(lp, Step::default()).await?;
                    }
                }
            }
        }
    }

    async fn on_events(
        &self,
        lp: &mut Loop,
        batch: Vec<(u64, Arc<Event>)>,
    ) -> Result<(), RunnerError> {
        let mut step = Step::default();
        for (seq, ev) in batch {
            let handed = Utc::now();
            let started = Instant::now();
            let actions = lp.engine.on_event(seq, &ev, handed);
            if actions.iter().any(|a| matches!(a, Action::Command { .. })) {
                // Stage timings of linkage (`campusgw bench linkage` prints them).
                let waited = (handed - ev.received_at).to_std().unwrap_or_default();
                metrics::histogram!("campusgw_linkage_stage_seconds", "stage" => "to_engine")
                    .record(waited.as_secs_f64());
                metrics::histogram!("campusgw_linkage_stage_seconds", "stage" => "engine")
                    .record(started.elapsed().as_secs_f64());
            }
            self.add_actions(lp, &mut step, &format!("{seq}"), actions);
        }
        self.count_eval_errors(lp);
        self.finish(lp, step).await
    }

    async fn on_time(&self, lp: &mut Loop) -> Result<(), RunnerError> {
        let now = Utc::now();
        let actions = lp.engine.on_time(now);
        let mut step = Step::default();
        self.add_actions(
            lp,
            &mut step,
            &format!("t{}", now.timestamp_micros()),
            actions,
        );
        lp.dirty = true;
        self.finish(lp, step).await
    }

    /// Persists at once when the step decided something, else marks the state dirty.
    async fn finish(&self, lp: &mut Loop, step: Step) -> Result<(), RunnerError> {
        if step.rows.events.is_empty() && step.rows.actions.is_empty() {
            lp.dirty = true;
            return Ok(());
        }
        self.persist(lp, step).await
    }

    fn add_actions(&self, lp: &Loop, step: &mut Step, key: &str, actions: Vec<Action>) {
        for (i, a) in actions.into_iter().enumerate() {
            let key = format!("{key}:{i}");
            match a {
                Action::Alarm(change) => self.add_alarm(step, &change),
                Action::Emit {
                    rule,
                    cause_seq,
                    event,
                } => {
                    let mut e = Event::stamp(event, &self.gateway, "rules", &Default::default());
                    if let serde_json::Value::Object(m) = &mut e.payload {
                        m.entry("rule").or_insert(rule.into());
                        m.entry("cause_seq").or_insert(cause_seq.into());
                    }
                    step.rows.events.push(e);
                }
                other => self.add_logged(lp, step, key, other),
            }
        }
    }

    fn add_alarm(&self, step: &mut Step, change: &AlarmChange) {
        let alarm = change.alarm();
        let kind = change.event_kind();
        let body = serde_json::to_value(alarm).unwrap_or_default();
        let e = Event::stamp(
            campusgw_sdk::NewEvent::new(Kind::from_static(kind), alarm.class).payload(body.clone()),
            &self.gateway,
            "rules",
            &alarm.location,
        );
        step.rows
            .alarms
            .push(alarm_row(alarm, kind, &body, step.rows.events.len()));
        step.rows.events.push(e);
        step.alarms.push(alarm.id.clone());
    }

    fn add_logged(&self, lp: &Loop, step: &mut Step, key: String, a: Action) {
        let json = a.to_json();
        let (kind, cause_seq) = match &a {
            Action::Command { cause_seq, .. } => ("command", *cause_seq),
            Action::Notify { cause_seq, .. } => ("notify", *cause_seq),
            Action::Forward { cause_seq, .. } => ("forward", *cause_seq),
            _ => return,
        };
        let rule = a.rule().to_owned();
        let alarm = alarm_of(&lp.engine, step, &rule, cause_seq);
        let status = if kind == "forward" {
            "queued"
        } else {
            "pending"
        };
        if kind != "forward"
            && let Ok(work) = serde_json::from_value::<super::exec::Work>(json.clone())
        {
            step.jobs
                .push((step.rows.actions.len(), work, json.clone()));
        }
        step.rows.actions.push(ActionRow {
            key,
            rule,
            cause_seq,
            alarm,
            kind: kind.into(),
            action: json.to_string(),
            status: status.into(),
        });
    }

    /// Commits the step with the cursor and state, then announces alarms and starts jobs:
    /// nothing runs before the step that decided it is durable (module doc, "Latency").
    async fn persist(&self, lp: &mut Loop, mut step: Step) -> Result<(), RunnerError> {
        step.rows.consumer = CONSUMER.into();
        step.rows.cursor = Some(lp.tail.position());
        let state = serde_json::to_string(&lp.engine.state()).map_err(RunnerError::State)?;
        step.rows.state = Some(state);
        let mut later = Vec::new();
        for (i, work, action) in step.jobs {
            let Some(row) = step.rows.actions.get(i) else {
                continue;
            };
            later.push((
                i,
                Job {
                    id: 0,
                    rule: row.rule.clone(),
                    cause_seq: row.cause_seq,
                    work,
                    action,
                    policy: lp.engine.retry_policy(&row.rule),
                    attempts: 0,
                    outcomes: Vec::new(),
                },
            ));
        }
        let started = Instant::now();
        let receipt = self.journal.rules_step(step.rows).await?;
        metrics::histogram!("campusgw_linkage_stage_seconds", "stage" => "step_commit")
            .record(started.elapsed().as_secs_f64());
        lp.dirty = false;
        lp.persisted = Instant::now();
        for id in &step.alarms {
            self.store.announce(id);
        }
        for (i, mut job) in later {
            if let Some(id) = receipt.action_ids.get(i) {
                job.id = *id;
                lp.exec.spawn(job);
            }
        }
        Ok(())
    }

    fn count_eval_errors(&self, lp: &mut Loop) {
        for e in lp.engine.take_eval_errors() {
            metrics::counter!("campusgw_rule_eval_errors_total", "rule" => e.rule.clone())
                .increment(1);
            let due = lp
                .eval_logged
                .get(&e.rule)
                .is_none_or(|t| t.elapsed() >= EVAL_LOG_EVERY);
            if due {
                tracing::warn!(rule = %e.rule, seq = e.seq, error = %e.message, "rule could not be evaluated on an event; skipped for it (logged at most once a minute per rule)");
                lp.eval_logged.insert(e.rule, Instant::now());
            }
        }
    }

    fn maybe_reload(&self, lp: &mut Loop, forced: bool) {
        let now = fingerprint(&self.dir);
        if !forced && now == lp.fingerprint {
            return;
        }
        lp.fingerprint = now;
        match load_rule_set(&self.dir, &self.env) {
            Ok(set) => {
                let n = set.rules().count();
                lp.engine.reload(set);
                metrics::counter!("campusgw_rules_reloads_total").increment(1);
                tracing::info!(rules = n, dir = %self.dir.display(), "rule set reloaded");
            }
            Err(e) => report_refused(&e),
        }
    }
}

fn report_refused(e: &LoadError) {
    metrics::counter!("campusgw_rules_reload_failures_total").increment(1);
    match e {
        LoadError::Invalid(issues) => {
            for i in issues {
                tracing::error!(file = %i.file.display(), line = i.line, rule = i.rule.as_deref().unwrap_or(""), problem = %i.message, "rule set refused; the previous set keeps running");
            }
        }
        other => {
            tracing::error!(error = %other, "rule set refused; the previous set keeps running")
        }
    }
}

/// The alarm an action belongs to: raised in this step or open in the engine, of the same
/// rule, with the cause among its source events.
fn alarm_of(engine: &Engine, step: &Step, rule: &str, cause: u64) -> Option<String> {
    let direct = format!("{rule}:{cause}");
    if step.alarms.contains(&direct) || engine.alarms().any(|a| a.id == direct) {
        return Some(direct);
    }
    engine
        .alarms()
        .find(|a| a.rule == rule && a.source_seqs.contains(&cause))
        .map(|a| a.id.clone())
}

fn alarm_row(a: &Alarm, change: &str, body: &serde_json::Value, event_index: usize) -> AlarmRow {
    let state = serde_json::to_value(a.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    AlarmRow {
        id: a.id.clone(),
        rule: a.rule.clone(),
        severity: a.severity.as_str().into(),
        state,
        class: a.class,
        building: a.location.building.clone(),
        floor: a.location.floor.clone(),
        zone: a.location.zone.clone(),
        title: a.title.clone(),
        raised_at: a.raised_at.timestamp_micros(),
        change: change.trim_start_matches("alarm.").into(),
        body: body.to_string(),
        event_index,
    }
}

/// Sleeps until `deadline` (wall clock), or forever without one.
async fn sleep_until(deadline: Option<DateTime<Utc>>) {
    match deadline {
        Some(d) => {
            let wait = (d - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

async fn hangup(s: &mut Option<tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending().await,
    }
}
