//! Checked rules: what `RuleSet::parse` compiles rule files into, and the pure matching and
//! templating that the engine applies to each event.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use campusgw_model::{Class, CommandKind, Event, Kind, Location};
use chrono::Duration;

use crate::action::RetryPolicy;
use crate::alarm::Severity;

/// One checked rule.
#[derive(Debug, Clone)]
pub(crate) struct Rule {
    pub id: String,
    pub trigger: Filter,
    pub condition: Option<Condition>,
    pub group_by: GroupBy,
    pub schedule: Option<Schedule>,
    pub pattern: Pattern,
    pub debounce: Option<Duration>,
    pub suppress: Option<Duration>,
    pub retry: RetryPolicy,
    pub actions: Vec<ActionSpec>,
    /// Kinds that, from a device of an open alarm of this rule, resolve it.
    pub resolve_on: Vec<KindPattern>,
    /// Skipped optional forwards/notifies (their uplink or notifier is not configured).
    pub skipped: Vec<String>,
}

/// An event kind as a trigger names it: exact, `family.*` prefix, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KindPattern {
    Exact(String),
    /// The prefix including its final dot: `fire.` for `fire.*`.
    Prefix(String),
    Any,
}

impl KindPattern {
    pub fn parse(s: &str) -> Result<KindPattern, String> {
        if s == "*" {
            return Ok(KindPattern::Any);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            let ok = !prefix.is_empty()
                && prefix.split('.').all(|w| {
                    !w.is_empty()
                        && w.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                });
            return if ok {
                Ok(KindPattern::Prefix(format!("{prefix}.")))
            } else {
                Err(format!("bad kind glob {s:?} (write \"fire.*\" or \"*\")"))
            };
        }
        if Kind::is_valid(s) {
            Ok(KindPattern::Exact(s.to_owned()))
        } else {
            Err(format!(
                "bad kind {s:?}: expected dotted lowercase words like \"fire.alarm\", or a glob \"fire.*\""
            ))
        }
    }

    pub fn matches(&self, kind: &str) -> bool {
        match self {
            KindPattern::Exact(k) => k == kind,
            KindPattern::Prefix(p) => kind.starts_with(p.as_str()),
            KindPattern::Any => true,
        }
    }
}

/// A location scope: `all`, `campus:main`, `building:A`, `floor:A/3`, `zone:A/3/east`,
/// `device:ID` (the same syntax the gateway's command router resolves).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    All,
    /// Levels from `first` on (0 campus, 1 building) that must equal the location's.
    Levels {
        first: usize,
        parts: Vec<String>,
    },
    Device(String),
}

impl Scope {
    pub fn parse(s: &str) -> Result<Scope, String> {
        if s == "all" {
            return Ok(Scope::All);
        }
        let bad = || {
            format!(
                "bad scope {s:?} (write all, campus:C, building:B, floor:B/F, zone:B/F/Z or device:ID)"
            )
        };
        let (level, value) = s.split_once(':').ok_or_else(bad)?;
        if level == "device" {
            return if value.is_empty() {
                Err(bad())
            } else {
                Ok(Scope::Device(value.to_owned()))
            };
        }
        let (first, n) = match level {
            "campus" => (0, 1),
            "building" => (1, 1),
            "floor" => (1, 2),
            "zone" => (1, 3),
            _ => return Err(bad()),
        };
        let parts: Vec<String> = value.split('/').map(str::to_owned).collect();
        if parts.len() != n || parts.iter().any(String::is_empty) {
            return Err(bad());
        }
        Ok(Scope::Levels { first, parts })
    }

    /// Whether `s` parses, without building the scope (the engine checks every rendered
    /// command target this way).
    pub fn check(s: &str) -> Result<(), String> {
        if s == "all" {
            return Ok(());
        }
        let bad = || {
            format!(
                "bad scope {s:?} (write all, campus:C, building:B, floor:B/F, zone:B/F/Z or device:ID)"
            )
        };
        let (level, value) = s.split_once(':').ok_or_else(bad)?;
        let n = match level {
            "device" => return if value.is_empty() { Err(bad()) } else { Ok(()) },
            "campus" | "building" => 1,
            "floor" => 2,
            "zone" => 3,
            _ => return Err(bad()),
        };
        let mut parts = 0;
        for p in value.split('/') {
            if p.is_empty() {
                return Err(bad());
            }
            parts += 1;
        }
        if parts == n { Ok(()) } else { Err(bad()) }
    }

    pub fn covers(&self, device: &str, loc: &Location) -> bool {
        match self {
            Scope::All => true,
            Scope::Device(d) => d == device,
            Scope::Levels { first, parts } => {
                let levels = loc.levels();
                parts
                    .iter()
                    .enumerate()
                    .all(|(i, p)| levels.get(first + i).copied().flatten() == Some(p.as_str()))
            }
        }
    }
}

/// The part of a trigger checked without evaluating anything: kinds, scopes, devices, payload.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub kinds: Vec<KindPattern>,
    pub scopes: Vec<Scope>,
    pub devices: Vec<String>,
    pub payload: Vec<(Vec<String>, serde_json::Value)>,
}

impl Filter {
    pub fn matches(&self, ev: &Event) -> bool {
        let kind = ev.kind.as_str();
        let device = ev.source.device.as_str();
        self.kinds.iter().any(|k| k.matches(kind))
            && (self.scopes.is_empty()
                || self.scopes.iter().any(|s| s.covers(device, &ev.location)))
            && (self.devices.is_empty() || self.devices.iter().any(|d| d == device))
            && self
                .payload
                .iter()
                .all(|(path, want)| lookup(&ev.payload, path).is_some_and(|v| json_eq(v, want)))
    }
}

/// Follows a dotted path into a JSON value.
pub(crate) fn lookup<'a>(
    v: &'a serde_json::Value,
    path: &[String],
) -> Option<&'a serde_json::Value> {
    path.iter().try_fold(v, |v, key| v.get(key.as_str()))
}

/// Equality where 3 and 3.0 are equal (TOML integers against JSON floats).
fn json_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// A CEL condition, compiled once.
#[derive(Clone)]
pub(crate) struct Condition {
    pub program: Arc<cel_interpreter::Program>,
    /// The same condition in the fast subset, when it fits (`fastcel`).
    pub fast: Option<Arc<crate::fastcel::Fast>>,
    pub source: String,
}

impl std::fmt::Debug for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Condition({:?})", self.source)
    }
}

/// What events are grouped by, for windows, timers, suppression and open alarms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupBy {
    None,
    Device,
    /// The location down to level `n` (1 campus ... 4 zone).
    Location(usize),
    Payload(Vec<String>),
}

impl GroupBy {
    pub fn parse(s: &str) -> Result<GroupBy, String> {
        Ok(match s {
            "none" => GroupBy::None,
            "device" => GroupBy::Device,
            "campus" => GroupBy::Location(1),
            "building" => GroupBy::Location(2),
            "floor" => GroupBy::Location(3),
            "zone" => GroupBy::Location(4),
            _ => match s.strip_prefix("payload.") {
                Some(p) if !p.is_empty() => {
                    GroupBy::Payload(p.split('.').map(str::to_owned).collect())
                }
                _ => {
                    return Err(format!(
                        "bad group_by {s:?} (write none, device, campus, building, floor, zone or payload.KEY)"
                    ));
                }
            },
        })
    }

    /// The group key of an event.
    pub fn key(&self, ev: &Event) -> String {
        match self {
            GroupBy::None => String::new(),
            GroupBy::Device => ev.source.device.as_str().to_owned(),
            GroupBy::Location(n) => {
                let mut key = String::new();
                for level in ev.location.levels().iter().take(*n) {
                    key.push_str(level.unwrap_or("-"));
                    key.push('/');
                }
                key
            }
            GroupBy::Payload(path) => match lookup(&ev.payload, path) {
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            },
        }
    }
}

/// Named calendars a rule is active in (any of `during`; none of `except`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Schedule {
    pub during: Vec<String>,
    pub except: Vec<String>,
}

/// The temporal pattern a rule waits for before acting.
#[derive(Debug, Clone)]
pub(crate) enum Pattern {
    /// Every matching event.
    Each,
    /// `n` matching events in one group within the window.
    Count { n: usize, within: Duration },
    /// Matching events from `devices` distinct devices in one group within the window.
    Confirm { devices: usize, within: Duration },
    /// No matching event within `within` after an arming event (or after the previous
    /// matching event, without `arm`).
    Absence {
        within: Duration,
        arm: Option<Filter>,
    },
    /// A `first` event, then a matching one in the same group within the window.
    Sequence { first: Filter, within: Duration },
}

/// One checked action.
#[derive(Debug, Clone)]
pub(crate) enum ActionSpec {
    Command {
        kind: CommandKind,
        target: Template,
        args: JsonTemplate,
    },
    Raise {
        severity: Severity,
        title: Template,
        escalate: Vec<Duration>,
        escalate_notifier: Option<String>,
    },
    Resolve {
        rule: String,
    },
    Forward {
        uplink: String,
    },
    Notify {
        notifier: String,
        title: Template,
        text: Template,
        severity: Severity,
    },
    Emit {
        kind: Kind,
        class: Class,
        payload: JsonTemplate,
    },
}

/// A string with `{event.…}` fields.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Lit(String),
    Field(Field),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Kind,
    Class,
    Seq,
    Device,
    Rule,
    Location,
    Level(usize, &'static str),
    Payload(Vec<String>),
}

impl Template {
    /// Parses `"building:{event.location.building}"`. `{{` and `}}` are literal braces.
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            lit.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                lit.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!(
                    "unmatched '}}' in {s:?} (write '}}}}' for a brace)"
                ));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("unclosed '{{' in {s:?}"))?;
            if !lit.is_empty() {
                parts.push(Part::Lit(std::mem::take(&mut lit)));
            }
            parts.push(Part::Field(Field::parse(&tail[1..end])?));
            rest = &tail[end + 1..];
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Template { parts })
    }

    /// Whether rendering can never fail (no location level or payload field, which an event
    /// may lack).
    pub fn infallible(&self) -> bool {
        self.parts.iter().all(|p| {
            !matches!(
                p,
                Part::Field(Field::Level(..)) | Part::Field(Field::Payload(_))
            )
        })
    }

    /// Fills the fields in from `ev`.
    ///
    /// # Errors
    /// The field the event lacks (a location level or payload key).
    pub fn render(&self, rule: &str, ev: &Event) -> Result<String, String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Lit(s) => out.push_str(s),
                Part::Field(f) => f.render(rule, ev, &mut out)?,
            }
        }
        Ok(out)
    }
}

impl Field {
    fn parse(s: &str) -> Result<Field, String> {
        const LEVELS: [&str; 5] = ["campus", "building", "floor", "zone", "point"];
        let field = match s.trim() {
            "event.kind" => Field::Kind,
            "event.class" => Field::Class,
            "event.seq" => Field::Seq,
            "event.source.device" | "event.device" => Field::Device,
            "rule.id" => Field::Rule,
            "event.location" => Field::Location,
            other => {
                if let Some(level) = other.strip_prefix("event.location.") {
                    match LEVELS.iter().position(|l| *l == level) {
                        Some(i) => Field::Level(i, LEVELS[i]),
                        None => {
                            return Err(format!(
                                "unknown location level {level:?} in {{{s}}} (campus, building, floor, zone, point)"
                            ));
                        }
                    }
                } else if let Some(p) = other
                    .strip_prefix("event.payload.")
                    .filter(|p| !p.is_empty())
                {
                    Field::Payload(p.split('.').map(str::to_owned).collect())
                } else {
                    return Err(format!(
                        "unknown template field {{{s}}} (use event.kind, event.class, event.seq, event.source.device, event.location[.LEVEL], event.payload.KEY, rule.id)"
                    ));
                }
            }
        };
        Ok(field)
    }

    fn render(&self, rule: &str, ev: &Event, out: &mut String) -> Result<(), String> {
        match self {
            Field::Kind => out.push_str(ev.kind.as_str()),
            Field::Class => out.push_str(ev.class.as_str()),
            Field::Seq => {
                let _ = write!(out, "{}", ev.seq);
            }
            Field::Device => out.push_str(ev.source.device.as_str()),
            Field::Rule => out.push_str(rule),
            Field::Location => {
                let _ = write!(out, "{}", ev.location);
            }
            Field::Level(i, name) => match ev.location.levels().get(*i).copied().flatten() {
                Some(v) => out.push_str(v),
                None => return Err(format!("the event has no location.{name}")),
            },
            Field::Payload(path) => match lookup(&ev.payload, path) {
                Some(serde_json::Value::String(s)) => out.push_str(s),
                Some(v) => {
                    let _ = write!(out, "{v}");
                }
                None => return Err(format!("the event's payload has no {}", path.join("."))),
            },
        }
        Ok(())
    }
}

/// A JSON value whose strings may hold templates.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum JsonTemplate {
    Value(serde_json::Value),
    Str(Template),
    Array(Vec<JsonTemplate>),
    Object(Vec<(String, JsonTemplate)>),
}

impl JsonTemplate {
    pub fn parse(v: &serde_json::Value) -> Result<JsonTemplate, String> {
        Ok(match v {
            serde_json::Value::String(s) if s.contains(['{', '}']) => {
                JsonTemplate::Str(Template::parse(s)?)
            }
            serde_json::Value::Array(a) => JsonTemplate::Array(
                a.iter()
                    .map(JsonTemplate::parse)
                    .collect::<Result<_, _>>()?,
            ),
            serde_json::Value::Object(o) => JsonTemplate::Object(
                o.iter()
                    .map(|(k, v)| Ok((k.clone(), JsonTemplate::parse(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => JsonTemplate::Value(other.clone()),
        })
    }

    pub fn render(&self, rule: &str, ev: &Event) -> Result<serde_json::Value, String> {
        Ok(match self {
            JsonTemplate::Value(v) => v.clone(),
            JsonTemplate::Str(t) => serde_json::Value::String(t.render(rule, ev)?),
            JsonTemplate::Array(a) => serde_json::Value::Array(
                a.iter()
                    .map(|t| t.render(rule, ev))
                    .collect::<Result<_, _>>()?,
            ),
            JsonTemplate::Object(o) => serde_json::Value::Object(
                o.iter()
                    .map(|(k, t)| Ok((k.clone(), t.render(rule, ev)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// A rule as the runner and console list it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleInfo {
    /// Unique id.
    pub id: String,
    /// What it does, for people.
    pub description: String,
    /// Whether the file enables it (operators may override with `rule.enable`/`rule.disable`).
    pub enabled: bool,
    /// The file it came from.
    pub file: PathBuf,
    /// The line its `[[rule]]` starts on.
    pub line: usize,
    /// How its commands are retried.
    pub retry: RetryPolicy,
    /// Optional forwards and notifications left out because their uplink or notifier is not
    /// configured (`"forward:police"`).
    pub skipped: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checking_a_scope_agrees_with_parsing_it() {
        for s in [
            "all",
            "campus:main",
            "building:A",
            "floor:A/3",
            "zone:A/3/east",
            "device:d1",
            "device:",
            "zone:A/3",
            "zone:A//e",
            "floor:A/3/x",
            "building:",
            "room:A",
            "A",
            "building:A/1",
            "campus:",
            "zone:A/3/east/x",
            ":",
            "all:x",
        ] {
            assert_eq!(Scope::check(s).is_ok(), Scope::parse(s).is_ok(), "{s}");
            if let Err(m) = Scope::check(s) {
                assert_eq!(Err(m), Scope::parse(s).map(|_| ()), "{s}");
            }
        }
    }

    #[test]
    fn only_templates_without_level_or_payload_fields_are_infallible() {
        let t = |s: &str| Template::parse(s).unwrap();
        assert!(t("{rule.id} at {event.location}").infallible());
        assert!(t("{event.kind} {event.seq} {event.device}").infallible());
        assert!(!t("zone {event.location.zone}").infallible());
        assert!(!t("{event.payload.v}").infallible());
    }
}
