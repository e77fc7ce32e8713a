//! Alarms: what a rule raises for people to act on, and their lifecycle
//! (raise → acknowledge → resolve, escalation while unacknowledged).
//!
//! An alarm's id is `"{rule}:{cause_seq}"`: deterministic, so replaying the same journal after
//! a crash produces the same ids and the runner can tell what it already did.

use std::fmt;
use std::str::FromStr;

use campusgw_model::{Class, Location};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How urgent an alarm or notification is, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Lives at risk now: fire, panic, intrusion.
    Critical,
    /// Needs someone soon: a forced door, a device offline.
    Major,
    /// Needs attention today.
    Minor,
    /// For the record.
    Info,
}

impl Severity {
    /// The snake_case name used in rule files and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Major => "major",
            Severity::Minor => "minor",
            Severity::Info => "info",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "critical" => Ok(Severity::Critical),
            "major" => Ok(Severity::Major),
            "minor" => Ok(Severity::Minor),
            "info" => Ok(Severity::Info),
            _ => Err(format!(
                "unknown severity {s:?} (expected critical, major, minor or info)"
            )),
        }
    }
}

/// Where an alarm is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlarmState {
    /// Raised and nobody has taken it yet: escalates on its rule's steps.
    Raised,
    /// Someone took it (who, when, note in [`Alarm::acknowledged`]).
    Acknowledged,
    /// Over: by an operator, by the rule, or by the device's reset.
    Resolved,
}

/// One alarm, as the console shows it and the county receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    /// `"{rule}:{cause_seq}"`.
    pub id: String,
    /// The rule that raised it.
    pub rule: String,
    /// How urgent.
    pub severity: Severity,
    /// One line for people.
    pub title: String,
    /// The class of the event that caused it (decides uplink priority of its changes).
    pub class: Class,
    /// Where.
    pub location: Location,
    /// Journal seqs of the events that raised and updated it, in order.
    pub source_seqs: Vec<u64>,
    /// Lifecycle state.
    pub state: AlarmState,
    /// Receive time of the event that raised it.
    pub raised_at: DateTime<Utc>,
    /// How many escalation steps have passed unacknowledged (0 = none yet).
    pub escalation_step: u32,
    /// Who acknowledged it, when, and their note.
    pub acknowledged: Option<(String, DateTime<Utc>, String)>,
    /// Raised under maintenance or a drill: the county is told it is a test.
    pub test: bool,
}

/// A change of an alarm, in the order it happened. The runner journals each as an event
/// (`alarm.raised`, `alarm.updated`, ...) with the alarm as payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "change", content = "alarm", rename_all = "snake_case")]
pub enum AlarmChange {
    /// A new alarm.
    Raised(Alarm),
    /// An open alarm of the same rule and group saw another event (`source_seqs` grew).
    Updated(Alarm),
    /// Still unacknowledged after an escalation step.
    Escalated(Alarm),
    /// An operator took it.
    Acknowledged(Alarm),
    /// It is over.
    Resolved(Alarm),
}

impl AlarmChange {
    /// The alarm after the change.
    pub fn alarm(&self) -> &Alarm {
        match self {
            AlarmChange::Raised(a)
            | AlarmChange::Updated(a)
            | AlarmChange::Escalated(a)
            | AlarmChange::Acknowledged(a)
            | AlarmChange::Resolved(a) => a,
        }
    }

    /// The event kind the runner journals it as: `alarm.raised`, `alarm.updated`, ...
    pub fn event_kind(&self) -> &'static str {
        match self {
            AlarmChange::Raised(_) => "alarm.raised",
            AlarmChange::Updated(_) => "alarm.updated",
            AlarmChange::Escalated(_) => "alarm.escalated",
            AlarmChange::Acknowledged(_) => "alarm.acknowledged",
            AlarmChange::Resolved(_) => "alarm.resolved",
        }
    }
}
