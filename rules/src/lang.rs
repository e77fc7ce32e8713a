//! The rule file format as serde reads it (TOML). `compile` turns these into checked rules;
//! `docs/rules.md` documents every field.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// A `[[calendar]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CalendarToml {
    pub name: String,
    #[serde(default)]
    pub weekdays: Vec<String>,
    #[serde(default)]
    pub dates: Option<Vec<String>>,
    #[serde(default)]
    pub hours: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
}

/// A `[[rule]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RuleToml {
    pub id: Spanned<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    pub trigger: Spanned<TriggerToml>,
    #[serde(default)]
    pub condition: Option<Spanned<String>>,
    #[serde(default)]
    pub group_by: Option<Spanned<String>>,
    #[serde(default)]
    pub schedule: Option<Spanned<ScheduleToml>>,
    #[serde(default)]
    pub pattern: Option<Spanned<PatternToml>>,
    #[serde(default)]
    pub debounce: Option<Spanned<String>>,
    #[serde(default)]
    pub suppress: Option<Spanned<String>>,
    #[serde(default)]
    pub retry: Option<Spanned<RetryToml>>,
    #[serde(default)]
    pub actions: Vec<Spanned<ActionToml>>,
}

fn yes() -> bool {
    true
}

/// What an event must be to concern a rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TriggerToml {
    pub kinds: Vec<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    #[serde(default)]
    pub payload: BTreeMap<String, toml::Value>,
}

/// When a rule is active.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleToml {
    #[serde(default)]
    pub during: Vec<String>,
    #[serde(default)]
    pub except: Vec<String>,
}

/// A temporal pattern.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PatternToml {
    #[serde(rename = "type")]
    pub kind: String,
    pub within: String,
    #[serde(default)]
    pub count: Option<u32>,
    #[serde(default)]
    pub devices: Option<u32>,
    #[serde(default)]
    pub arm: Option<TriggerToml>,
    #[serde(default)]
    pub first: Option<TriggerToml>,
}

/// How commands are retried.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetryToml {
    #[serde(default)]
    pub attempts: Option<u32>,
    #[serde(default)]
    pub backoff: Option<String>,
    #[serde(default)]
    pub alarm_on_give_up: Option<bool>,
}

/// One `[[rule.actions]]` entry, by `type`.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ActionToml {
    Command(CommandToml),
    Alarm(AlarmToml),
    Forward(ForwardToml),
    Notify(NotifyToml),
    Emit(EmitToml),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandToml {
    pub command: String,
    pub target: String,
    #[serde(default)]
    pub args: Option<toml::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlarmToml {
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub escalate: Vec<String>,
    #[serde(default)]
    pub escalate_notifier: Option<String>,
    #[serde(default)]
    pub resolve_on: Vec<String>,
    #[serde(default)]
    pub rule: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ForwardToml {
    pub uplink: String,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NotifyToml {
    pub notifier: String,
    pub title: String,
    #[serde(default)]
    pub text: String,
    #[serde(default)]
    pub severity: Option<String>,
    #[serde(default)]
    pub optional: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EmitToml {
    pub kind: String,
    pub class: String,
    #[serde(default)]
    pub payload: Option<toml::Value>,
}

/// Parses `500ms`, `60s`, `5m`, `2h`, `1d` (a whole number and a unit).
pub(crate) fn parse_duration(s: &str) -> Result<chrono::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let bad = || format!("bad duration {s:?} (write a whole number and ms, s, m, h or d: \"60s\")");
    let n: i64 = num.parse().map_err(|_| bad())?;
    let ms = match unit {
        "ms" => n,
        "s" => n.saturating_mul(1_000),
        "m" => n.saturating_mul(60_000),
        "h" => n.saturating_mul(3_600_000),
        "d" => n.saturating_mul(86_400_000),
        _ => return Err(bad()),
    };
    // A month bounds every window and timer, so deadline arithmetic can never overflow.
    if ms <= 0 || ms > 31 * 86_400_000 {
        return Err(format!(
            "duration {s:?} must be more than 0 and at most 31d"
        ));
    }
    Ok(chrono::Duration::milliseconds(ms))
}
