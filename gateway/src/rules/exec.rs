//! Carrying out logged actions (commands, notifications) with the rule's retry policy, and
//! writing each outcome back to `rule_actions`.
//!
//! A command to a scope (`building:A`) reaches several devices; a retry goes only to the
//! devices whose last result was `failed` (a door that already opened is not sent the
//! command again, a device that refused it is not asked again). The row's `result` holds
//! the latest [`CommandResult`] of every device, so a restart resumes with the same devices.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use campusgw_rules::RetryPolicy;
use campusgw_sdk::command::{CommandResult, CommandStatus};
use campusgw_sdk::{
    Class, Command, CommandKind, DeviceId, Event, Kind, Location, NewEvent, Target,
};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{CONSUMER, CommandRouter, Journal};
use crate::journal::rules::{ActionUpdate, RulesStep, StoredAction};
use crate::notify::{Message, Notifier};

/// Journaled when a rule's action gave up (class `security`).
pub const RULE_ACTION_FAILED: &str = "rule.action_failed";

/// What an action row asks for, as stored (`Action::to_json`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub(super) enum Work {
    /// A command.
    Command {
        kind: CommandKind,
        target: Target,
        #[serde(default)]
        args: serde_json::Value,
    },
    /// A notification.
    Notify {
        notifier: String,
        title: String,
        #[serde(default)]
        text: String,
        #[serde(default)]
        severity: serde_json::Value,
    },
}

/// One action to carry out.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub id: i64,
    pub rule: String,
    pub cause_seq: u64,
    pub work: Work,
    pub action: serde_json::Value,
    pub policy: RetryPolicy,
    pub attempts: u32,
    /// The latest result of each device of a command so far (empty before the first attempt).
    pub outcomes: Vec<CommandResult>,
}

impl Job {
    /// A job for a stored row, if it is one the executor carries out.
    pub fn from_stored(a: &StoredAction, policy: RetryPolicy) -> Option<Job> {
        let work = Work::deserialize(&a.action).ok()?;
        // A command's stored result is the per-device list; anything else starts afresh.
        let outcomes = a
            .result
            .as_ref()
            .and_then(|r| Vec::<CommandResult>::deserialize(r).ok())
            .unwrap_or_default();
        Some(Job {
            id: a.id,
            rule: a.rule.clone(),
            cause_seq: a.cause_seq,
            work,
            action: a.action.clone(),
            policy,
            attempts: a.attempts,
            outcomes,
        })
    }
}

/// Runs jobs, each in its own task, so a slow device never holds up the engine.
pub(super) struct Executor {
    pub journal: Journal,
    pub router: Arc<CommandRouter>,
    pub notifiers: BTreeMap<String, Notifier>,
    pub gateway: DeviceId,
    pub timeout: Duration,
    pub shutdown: CancellationToken,
}

enum Outcome {
    Done(serde_json::Value),
    /// Worth another attempt.
    Failed(serde_json::Value),
    /// Another attempt cannot help (the device said no, no such notifier).
    Refused(serde_json::Value),
}

impl Executor {
    pub fn spawn(self: &Arc<Self>, job: Job) {
        let me = self.clone();
        tokio::spawn(async move { me.run(job).await });
    }

    /// Attempts until done or given up.
    async fn run(&self, mut job: Job) {
        loop {
            job.attempts += 1;
            let started = std::time::Instant::now();
            let outcome = self.attempt(&mut job).await;
            if job.attempts == 1 && job.work.is_command() {
                metrics::histogram!("campusgw_linkage_stage_seconds", "stage" => "command")
                    .record(started.elapsed().as_secs_f64());
            }
            let last = job.attempts >= job.policy.attempts.max(1);
            let (status, result, give_up) = match outcome {
                Outcome::Done(r) => ("done", r, false),
                Outcome::Refused(r) => ("gave_up", r, true),
                Outcome::Failed(r) if last => ("gave_up", r, true),
                Outcome::Failed(r) => ("retrying", r, false),
            };
            metrics::counter!("campusgw_rule_actions_total", "status" => status).increment(1);
            if give_up {
                tracing::error!(rule = %job.rule, action = job.id, attempts = job.attempts, %result, "rule action gave up");
            }
            if !self.record(&job, status, &result, give_up).await {
                return;
            }
            if status != "retrying" {
                return;
            }
            let shift = job.attempts.saturating_sub(1).min(16);
            let wait = Duration::from_millis(job.policy.backoff_ms.saturating_mul(1 << shift));
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                // Left `retrying`: resumed at the next start.
                () = self.shutdown.cancelled() => return,
            }
        }
    }

    async fn attempt(&self, job: &mut Job) -> Outcome {
        match &job.work {
            Work::Command { kind, target, args } => {
                let by = format!("rule:{}", job.rule);
                let retry: Vec<DeviceId> = job
                    .outcomes
                    .iter()
                    .filter(|r| r.status == CommandStatus::Failed)
                    .map(|r| r.device.clone())
                    .collect();
                let results = if job.outcomes.is_empty() || retry.is_empty() {
                    let c = Command::new(kind.clone(), target.clone(), args.clone(), &by);
                    self.router.execute(c, self.timeout).await
                } else {
                    // Only the devices that failed last time, each addressed directly.
                    let sends = retry.into_iter().map(|d| {
                        let c = Command::new(kind.clone(), Target::Device(d), args.clone(), &by);
                        self.router.execute(c, self.timeout)
                    });
                    futures_util::future::join_all(sends)
                        .await
                        .into_iter()
                        .flatten()
                        .collect()
                };
                merge_outcomes(&mut job.outcomes, results);
                command_outcome(&job.outcomes)
            }
            Work::Notify {
                notifier,
                title,
                text,
                severity,
            } => {
                let Some(n) = self.notifiers.get(notifier) else {
                    return Outcome::Refused(
                        serde_json::json!({ "error": format!("no notifier {notifier:?}") }),
                    );
                };
                let m = Message {
                    title,
                    text,
                    severity: severity.as_str().unwrap_or("info"),
                    rule: &job.rule,
                    cause_seq: job.cause_seq,
                    gateway: self.gateway.as_str(),
                };
                match n.send(&m).await {
                    Ok(()) => Outcome::Done(serde_json::json!({ "delivered": true })),
                    Err(e) => Outcome::Failed(serde_json::json!({ "error": e.to_string() })),
                }
            }
        }
    }

    /// Writes the outcome (and, on give-up, `rule.action_failed`); returns false when the
    /// journal is gone (the row stays open and is resumed at the next start).
    async fn record(
        &self,
        job: &Job,
        status: &str,
        result: &serde_json::Value,
        give_up: bool,
    ) -> bool {
        let mut events = Vec::new();
        if give_up && job.policy.alarm_on_give_up {
            let payload = serde_json::json!({
                "rule": job.rule, "action_id": job.id, "cause_seq": job.cause_seq,
                "action": job.action, "attempts": job.attempts, "result": result,
                "what": job.work.describe(),
            });
            events.push(Event::stamp(
                NewEvent::new(Kind::from_static(RULE_ACTION_FAILED), Class::Security)
                    .payload(payload),
                &self.gateway,
                "rules",
                &Location::default(),
            ));
        }
        let step = RulesStep {
            consumer: CONSUMER.into(),
            events,
            updates: vec![ActionUpdate {
                id: job.id,
                status: status.into(),
                attempts: job.attempts,
                result: Some(result.to_string()),
            }],
            ..RulesStep::default()
        };
        match self.journal.rules_step(step).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, action = job.id, "rule action outcome not recorded");
                false
            }
        }
    }
}

impl Work {
    /// Whether this is a device command (its first attempt is the linkage stage `command`).
    pub fn is_command(&self) -> bool {
        matches!(self, Work::Command { .. })
    }

    /// What the action does, for people: `door.unlock to building:A`, `notify duty`.
    fn describe(&self) -> String {
        match self {
            Work::Command { kind, target, .. } => {
                let to = match target {
                    Target::Device(d) => format!("device:{d}"),
                    Target::Scope(s) => s.clone(),
                };
                format!("{kind} to {to}")
            }
            Work::Notify { notifier, .. } => format!("notify {notifier}"),
        }
    }
}

/// Replaces each device's result with its newer one; devices not retried keep theirs.
fn merge_outcomes(outcomes: &mut Vec<CommandResult>, newer: Vec<CommandResult>) {
    for r in newer {
        match outcomes.iter_mut().find(|o| o.device == r.device) {
            Some(o) => *o = r,
            None => outcomes.push(r),
        }
    }
}

/// The verdict over every device's latest result. Devices that take no commands of this
/// kind (`Unsupported`: the detectors of a building that was told to unlock its doors) do
/// not count, unless no device could take it at all.
fn command_outcome(results: &[CommandResult]) -> Outcome {
    let json = serde_json::to_value(results).unwrap_or_default();
    let able: Vec<&CommandResult> = results
        .iter()
        .filter(|r| r.status != CommandStatus::Unsupported)
        .collect();
    if able.is_empty() && !results.is_empty() {
        return Outcome::Refused(json);
    }
    if able.iter().all(|r| r.status == CommandStatus::Succeeded) {
        return Outcome::Done(json);
    }
    if able.iter().any(|r| r.status == CommandStatus::Failed) {
        return Outcome::Failed(json);
    }
    Outcome::Refused(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(device: &str, status: CommandStatus) -> CommandResult {
        CommandResult {
            command_id: uuid::Uuid::nil(),
            device: DeviceId::new(device).expect("valid id"),
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn devices_that_take_no_such_command_do_not_fail_a_scope_command_unless_none_can() {
        use CommandStatus::{Failed, Rejected, Succeeded, Unsupported};
        let verdict = |rs: &[(&str, CommandStatus)]| {
            let rs: Vec<_> = rs.iter().map(|(d, s)| result(d, *s)).collect();
            match command_outcome(&rs) {
                Outcome::Done(_) => "done",
                Outcome::Failed(_) => "failed",
                Outcome::Refused(_) => "refused",
            }
        };
        assert_eq!(
            verdict(&[("door-1", Succeeded), ("smoke-1", Unsupported)]),
            "done"
        );
        assert_eq!(
            verdict(&[("door-1", Failed), ("smoke-1", Unsupported)]),
            "failed"
        );
        assert_eq!(
            verdict(&[("door-1", Rejected), ("smoke-1", Unsupported)]),
            "refused"
        );
        assert_eq!(
            verdict(&[("smoke-1", Unsupported), ("smoke-2", Unsupported)]),
            "refused"
        );
        assert_eq!(
            verdict(&[("door-1", Succeeded), ("door-2", Rejected)]),
            "refused"
        );
    }
}
