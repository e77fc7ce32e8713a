//! The engine's state in its persisted form (`Engine::state` / `Engine::restore`).
//!
//! Compact JSON: per rule and group only what its pattern needs (window hits, the time of a
//! sequence's first event, pending timer ids, the last time it acted), the pending timers with
//! their original deadlines, open alarms, maintenance and drills, and operator overrides of
//! `enabled`. Maps are ordered, so the same history serializes to the same bytes.

use std::collections::BTreeMap;

use campusgw_model::Event;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::alarm::Alarm;

/// Everything the engine needs to continue after a restart exactly as if it had not stopped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EngineState {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) rules: BTreeMap<String, RuleState>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) timers: BTreeMap<u64, Timer>,
    #[serde(default)]
    pub(crate) next_timer: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) alarms: BTreeMap<String, OpenAlarm>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) maintenance: BTreeMap<String, Hold>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) drills: BTreeMap<String, Hold>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) overrides: BTreeMap<String, bool>,
}

/// Per-rule pattern state, by group key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct RuleState {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub windows: BTreeMap<String, Vec<Hit>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub firsts: BTreeMap<String, DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub timers: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fired: BTreeMap<String, DateTime<Utc>>,
}

impl RuleState {
    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
            && self.firsts.is_empty()
            && self.timers.is_empty()
            && self.fired.is_empty()
    }
}

/// One event in a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Hit {
    pub t: DateTime<Utc>,
    pub seq: u64,
    pub device: String,
}

/// A pending timer, with its original deadline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Timer {
    pub deadline: DateTime<Utc>,
    pub what: TimerKind,
}

/// What a timer does when it fires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TimerKind {
    /// The expected event did not come: the rule acts, caused by the arming event.
    Absence {
        rule: String,
        group: String,
        cause: Box<Event>,
    },
    /// The group was quiet for the debounce time: the rule acts on the last event.
    Debounce {
        rule: String,
        group: String,
        cause: Box<Event>,
    },
    /// An alarm still unacknowledged at escalation step `step`.
    Escalate { alarm: String, step: u32 },
}

/// An open alarm and what the engine needs to manage it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct OpenAlarm {
    pub alarm: Alarm,
    pub group: String,
    pub devices: Vec<String>,
    #[serde(default)]
    pub timer: Option<u64>,
}

/// Maintenance of a scope or a drill in a building: until when, set by whom, why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// When it ends by itself.
    pub until: DateTime<Utc>,
    /// Who set it.
    pub by: String,
    /// Why (empty for drills).
    #[serde(default)]
    pub reason: String,
    /// Journal seq of the event that set it (the audit trail).
    pub seq: u64,
}
