//! What the engine asks the runner to do, and the evaluation errors it hands back.

use campusgw_model::{CommandKind, NewEvent, Target};
use serde::{Deserialize, Serialize};

use crate::alarm::{AlarmChange, Severity};

/// One thing to do, produced by a rule for the event with journal seq `cause_seq` (for a timer,
/// the event that armed it). Returned in the order the runner must carry them out.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a command to a device or a location scope. Retries follow the rule's
    /// [`RetryPolicy`](crate::RetryPolicy) (`Engine::retry_policy`).
    Command {
        /// Rule id.
        rule: String,
        /// The event that caused it.
        cause_seq: u64,
        /// What to do.
        kind: CommandKind,
        /// For whom.
        target: Target,
        /// Kind-specific arguments, templates already filled in.
        args: serde_json::Value,
    },
    /// An alarm changed: journal it as `alarm.*`.
    Alarm(AlarmChange),
    /// Send event `cause_seq` to that uplink (at most once per event and uplink).
    Forward {
        /// Rule id.
        rule: String,
        /// The event to forward.
        cause_seq: u64,
        /// Uplink name from the config.
        uplink: String,
    },
    /// Tell people through a notifier (webhook, WeChat Work, DingTalk).
    Notify {
        /// Rule id.
        rule: String,
        /// The event that caused it.
        cause_seq: u64,
        /// Notifier name from the config.
        notifier: String,
        /// Heading.
        title: String,
        /// Body.
        text: String,
        /// How urgent.
        severity: Severity,
    },
    /// Journal a derived event.
    Emit {
        /// Rule id.
        rule: String,
        /// The event that caused it.
        cause_seq: u64,
        /// The event; the runner stamps it with the gateway as source.
        event: NewEvent,
    },
}

impl Action {
    /// The action as one JSON object (for `campusgw rules test` and logs):
    /// `{"action":"command","rule":...}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::json;
        match self {
            Action::Command {
                rule,
                cause_seq,
                kind,
                target,
                args,
            } => json!({"action": "command", "rule": rule, "cause_seq": cause_seq,
                        "kind": kind, "target": target, "args": args}),
            Action::Alarm(change) => json!({"action": "alarm", "change": change.event_kind(),
                        "alarm": change.alarm()}),
            Action::Forward {
                rule,
                cause_seq,
                uplink,
            } => {
                json!({"action": "forward", "rule": rule, "cause_seq": cause_seq, "uplink": uplink})
            }
            Action::Notify {
                rule,
                cause_seq,
                notifier,
                title,
                text,
                severity,
            } => json!({"action": "notify", "rule": rule, "cause_seq": cause_seq,
                        "notifier": notifier, "title": title, "text": text, "severity": severity}),
            Action::Emit {
                rule,
                cause_seq,
                event,
            } => json!({"action": "emit", "rule": rule, "cause_seq": cause_seq,
                        "kind": event.kind, "class": event.class, "location": event.location,
                        "payload": event.payload}),
        }
    }

    /// The rule that produced it (for alarm changes, the alarm's rule).
    pub fn rule(&self) -> &str {
        match self {
            Action::Command { rule, .. }
            | Action::Forward { rule, .. }
            | Action::Notify { rule, .. }
            | Action::Emit { rule, .. } => rule,
            Action::Alarm(change) => &change.alarm().rule,
        }
    }
}

/// A rule that could not be evaluated on one event (a CEL condition that failed, a template
/// naming a field the event lacks, an operator event with a bad payload). The engine skips
/// that rule for that event and goes on; the runner logs these rate-limited and counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EvalError {
    /// Rule id (`"operator"` for a malformed operator event).
    pub rule: String,
    /// The event's journal seq.
    pub seq: u64,
    /// What went wrong.
    pub message: String,
}

/// How the runner retries a rule's commands that fail (device unreachable, timeout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry, in milliseconds; doubled each time.
    pub backoff_ms: u64,
    /// Raise an alarm (severity of the rule's own, or major) when the last attempt fails.
    pub alarm_on_give_up: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff_ms: 1_000,
            alarm_on_give_up: true,
        }
    }
}
