//! `RuleSet::parse`: rule files (TOML) in, a checked and indexed rule set out, or every
//! problem found, each with its file and line.
//!
//! Lines come from the TOML parser's spans: the document is parsed once into a spanned tree,
//! each `[[rule]]` table is deserialized on its own (so one bad rule does not hide the next),
//! and checks after deserialization point at the span of the field they concern.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use campusgw_model::{Class, CommandKind, DeviceId, Kind};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::action::RetryPolicy;
use crate::alarm::Severity;
use crate::calendar::{Calendar, Calendars, parse_date_range, parse_hours, parse_weekday};
use crate::lang::{
    ActionToml, AlarmToml, CalendarToml, PatternToml, RuleToml, TriggerToml, parse_duration,
};
use crate::rule::{
    ActionSpec, Condition, Filter, GroupBy, JsonTemplate, KindPattern, Pattern, Rule, RuleInfo,
    Schedule, Scope, Template,
};

/// One rule file's text; the caller reads the files (the engine does no I/O).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSource {
    /// Where it came from, for messages.
    pub file: PathBuf,
    /// Its contents.
    pub text: String,
}

/// One problem in a rule set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleIssue {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// The rule's id, when the problem is inside one.
    pub rule: Option<String>,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for RuleIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: ", self.file.display(), self.line)?;
        if let Some(rule) = &self.rule {
            write!(f, "rule {rule:?}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// What a rule set is checked against: the gateway's configuration around it.
#[derive(Debug, Clone)]
pub struct RuleEnv {
    /// The zone schedules are read in.
    pub timezone: chrono_tz::Tz,
    /// Calendars rules may name (rule files may add `[[calendar]]`s).
    pub calendars: Calendars,
    /// Uplink names `forward` may use.
    pub known_uplinks: Vec<String>,
    /// Notifier names `notify` and `escalate_notifier` may use.
    pub known_notifiers: Vec<String>,
}

impl Default for RuleEnv {
    fn default() -> Self {
        RuleEnv {
            timezone: chrono_tz::Asia::Shanghai,
            calendars: Calendars::default(),
            known_uplinks: Vec::new(),
            known_notifiers: Vec::new(),
        }
    }
}

/// What role a rule has for an event kind in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Trigger,
    Arm,
    First,
    ResolveOn,
}

/// Rules by the event kinds that concern them, so an event costs only the rules it can match.
#[derive(Debug, Default)]
pub(crate) struct KindIndex {
    exact: HashMap<String, Bucket>,
    prefix: HashMap<String, Bucket>,
    any: Bucket,
}

/// The rules under one kind pattern, split by the building their scopes pin (if every scope
/// of the filter names one), so an event in building A skips rules scoped to building B.
#[derive(Debug, Default)]
struct Bucket {
    anywhere: Vec<(usize, Role)>,
    by_building: HashMap<String, Vec<(usize, Role)>>,
}

impl Bucket {
    fn add(&mut self, entry: (usize, Role), buildings: Option<&[String]>) {
        let lists: Vec<&mut Vec<(usize, Role)>> = match buildings {
            None => vec![&mut self.anywhere],
            Some(bs) => {
                for b in bs {
                    let list = self.by_building.entry(b.clone()).or_default();
                    if !list.contains(&entry) {
                        list.push(entry);
                    }
                }
                Vec::new()
            }
        };
        for list in lists {
            if !list.contains(&entry) {
                list.push(entry);
            }
        }
    }

    fn collect(&self, building: Option<&str>, out: &mut Vec<(usize, Role)>) {
        out.extend_from_slice(&self.anywhere);
        if let Some(v) = building.and_then(|b| self.by_building.get(b)) {
            out.extend_from_slice(v);
        }
    }
}

/// The buildings a filter's scopes pin, or None when some scope does not pin one.
pub(crate) fn pinned_buildings(scopes: &[Scope]) -> Option<Vec<String>> {
    if scopes.is_empty() {
        return None;
    }
    scopes
        .iter()
        .map(|s| match s {
            Scope::Levels { first: 1, parts } => parts.first().cloned(),
            _ => None,
        })
        .collect()
}

impl KindIndex {
    fn add(&mut self, pattern: &KindPattern, entry: (usize, Role), buildings: Option<&[String]>) {
        let bucket = match pattern {
            KindPattern::Exact(k) => self.exact.entry(k.clone()).or_default(),
            KindPattern::Prefix(p) => self.prefix.entry(p.clone()).or_default(),
            KindPattern::Any => &mut self.any,
        };
        bucket.add(entry, buildings);
    }

    /// Every (rule, role) whose kinds and building scope may match, in rule order.
    pub fn lookup(&self, kind: &str, building: Option<&str>, out: &mut Vec<(usize, Role)>) {
        out.clear();
        if let Some(b) = self.exact.get(kind) {
            b.collect(building, out);
        }
        if !self.prefix.is_empty() {
            for (i, c) in kind.bytes().enumerate() {
                if c == b'.'
                    && let Some(b) = self.prefix.get(&kind[..=i])
                {
                    b.collect(building, out);
                }
            }
        }
        self.any.collect(building, out);
        out.sort_unstable_by_key(|(r, role)| (*r, *role as u8));
        out.dedup();
    }
}

#[derive(Debug)]
pub(crate) struct Compiled {
    pub rules: Vec<Rule>,
    pub infos: Vec<RuleInfo>,
    pub by_id: HashMap<String, usize>,
    pub index: KindIndex,
    pub calendars: Calendars,
    pub timezone: chrono_tz::Tz,
}

/// A checked, indexed rule set. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub(crate) inner: Arc<Compiled>,
}

impl RuleSet {
    /// Checks and compiles rule files.
    ///
    /// # Errors
    /// Every problem found, each with file and line; the set is refused as a whole.
    pub fn parse(sources: &[RuleSource], env: &RuleEnv) -> Result<RuleSet, Vec<RuleIssue>> {
        let mut issues = Vec::new();
        let mut docs = Vec::new();
        let srcs: Vec<Src<'_>> = sources.iter().map(Src::new).collect();
        for src in &srcs {
            match DeTable::parse(&src.text) {
                Ok(doc) => docs.push((src, doc)),
                Err(e) => issues.push(RuleIssue {
                    file: src.file.clone(),
                    line: src.line(e.span().map_or(0, |s| s.start)),
                    rule: None,
                    message: first_line(e.message()),
                }),
            }
        }
        let mut calendars = env.calendars.clone();
        let mut raw_rules = Vec::new();
        for (src, doc) in &docs {
            let mut cx = FileCx {
                src,
                issues: &mut issues,
            };
            for (key, value) in doc.get_ref().iter() {
                match key.get_ref().as_ref() {
                    "rule" => raw_rules.extend(
                        cx.tables::<RuleToml>(value, "rule")
                            .into_iter()
                            .map(|(r, l)| (*src, r, l)),
                    ),
                    "calendar" => {
                        for (c, line) in cx.tables::<CalendarToml>(value, "calendar") {
                            match compile_calendar(&c) {
                                Ok(cal) => calendars.insert(c.name.clone(), cal),
                                Err(m) => cx.issue(line, None, m),
                            }
                        }
                    }
                    other => {
                        let line = src.line(key.span().start);
                        cx.issue(line, None, format!("unknown top-level key {other:?} (a rule file holds [[rule]] and [[calendar]] tables)"));
                    }
                }
            }
        }
        let mut rules = Vec::new();
        let mut infos: Vec<RuleInfo> = Vec::new();
        let mut seen: HashMap<String, (PathBuf, usize)> = HashMap::new();
        let mut resolve_refs = Vec::new();
        for (src, raw, line) in raw_rules {
            let id = raw.id.get_ref().clone();
            let mut cx = RuleCx {
                src,
                rule: id.clone(),
                issues: &mut issues,
                env,
                calendars: &calendars,
            };
            if let Some((f, l)) = seen.get(&id) {
                let at = cx.line(raw.id.span().start);
                cx.issue(
                    at,
                    format!("duplicate rule id (first defined at {}:{l})", f.display()),
                );
                continue;
            }
            seen.insert(id.clone(), (src.file.clone(), line));
            if let Some(rule) = cx.rule(&raw, &mut resolve_refs) {
                infos.push(RuleInfo {
                    id: id.clone(),
                    description: raw.description.clone(),
                    enabled: raw.enabled,
                    file: src.file.clone(),
                    line,
                    retry: rule.retry.clone(),
                    skipped: rule.skipped.clone(),
                });
                rules.push(rule);
            }
        }
        for (file, line, rule, target) in resolve_refs {
            if !seen.contains_key(&target) {
                issues.push(RuleIssue {
                    file,
                    line,
                    rule: Some(rule),
                    message: format!("alarm resolve names unknown rule {target:?}"),
                });
            }
        }
        if !issues.is_empty() {
            issues.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
            return Err(issues);
        }
        let mut index = KindIndex::default();
        for (i, r) in rules.iter().enumerate() {
            let pins = pinned_buildings(&r.trigger.scopes);
            for k in &r.trigger.kinds {
                index.add(k, (i, Role::Trigger), pins.as_deref());
            }
            match &r.pattern {
                Pattern::Absence { arm: Some(f), .. } => {
                    let pins = pinned_buildings(&f.scopes);
                    for k in &f.kinds {
                        index.add(k, (i, Role::Arm), pins.as_deref());
                    }
                }
                Pattern::Sequence { first, .. } => {
                    let pins = pinned_buildings(&first.scopes);
                    for k in &first.kinds {
                        index.add(k, (i, Role::First), pins.as_deref());
                    }
                }
                _ => {}
            }
            for k in &r.resolve_on {
                index.add(k, (i, Role::ResolveOn), None);
            }
        }
        Ok(RuleSet {
            inner: Arc::new(Compiled {
                rules,
                by_id: infos
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (r.id.clone(), i))
                    .collect(),
                infos,
                index,
                calendars,
                timezone: env.timezone,
            }),
        })
    }

    /// The rules, in file order.
    pub fn rules(&self) -> impl Iterator<Item = &RuleInfo> {
        self.inner.infos.iter()
    }

    /// An empty rule set (no rules): what the engine runs before any are loaded.
    pub fn empty() -> RuleSet {
        RuleSet {
            inner: Arc::new(Compiled {
                rules: Vec::new(),
                infos: Vec::new(),
                by_id: HashMap::new(),
                index: KindIndex::default(),
                calendars: Calendars::default(),
                timezone: chrono_tz::Asia::Shanghai,
            }),
        }
    }
}

/// A rule file with the offsets of its line ends, so each issue's line is a binary search.
struct Src<'a> {
    source: &'a RuleSource,
    newlines: Vec<usize>,
}

impl<'a> Src<'a> {
    fn new(source: &'a RuleSource) -> Src<'a> {
        let newlines = source
            .text
            .bytes()
            .enumerate()
            .filter(|(_, b)| *b == b'\n')
            .map(|(i, _)| i)
            .collect();
        Src { source, newlines }
    }

    /// 1-based line of byte offset `at`.
    fn line(&self, at: usize) -> usize {
        self.newlines.partition_point(|&nl| nl < at) + 1
    }
}

impl std::ops::Deref for Src<'_> {
    type Target = RuleSource;
    fn deref(&self) -> &RuleSource {
        self.source
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

struct FileCx<'a, 'b> {
    src: &'a Src<'a>,
    issues: &'b mut Vec<RuleIssue>,
}

impl FileCx<'_, '_> {
    fn issue(&mut self, line: usize, rule: Option<String>, message: String) {
        self.issues.push(RuleIssue {
            file: self.src.file.clone(),
            line,
            rule,
            message,
        });
    }

    /// Deserializes each table of an array of tables on its own, reporting each failure.
    fn tables<T: for<'de> Deserialize<'de>>(
        &mut self,
        value: &Spanned<DeValue<'_>>,
        what: &str,
    ) -> Vec<(T, usize)> {
        let DeValue::Array(items) = value.get_ref() else {
            let line = self.src.line(value.span().start);
            self.issue(
                line,
                None,
                format!("{what} must be an array of tables: write [[{what}]]"),
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items.iter() {
            let line = self.src.line(item.span().start);
            let DeValue::Table(table) = item.get_ref() else {
                self.issue(
                    line,
                    None,
                    format!("each {what} must be a table: write [[{what}]]"),
                );
                continue;
            };
            let id = table.get("id").and_then(|v| match v.get_ref() {
                DeValue::String(s) => Some(s.to_string()),
                _ => None,
            });
            let de = toml::de::Deserializer::from(Spanned::new(item.span(), table.clone()));
            match T::deserialize(de) {
                Ok(t) => out.push((t, line)),
                Err(e) => {
                    let at = e.span().map_or(line, |s| self.src.line(s.start));
                    self.issue(at, id, first_line(e.message()));
                }
            }
        }
        out
    }
}

fn compile_calendar(c: &CalendarToml) -> Result<Calendar, String> {
    Ok(Calendar {
        weekdays: c
            .weekdays
            .iter()
            .map(|w| parse_weekday(w))
            .collect::<Result<_, _>>()?,
        dates: match &c.dates {
            None => None,
            Some(d) => Some(
                d.iter()
                    .map(|s| parse_date_range(s))
                    .collect::<Result<_, _>>()?,
            ),
        },
        hours: c
            .hours
            .iter()
            .map(|h| parse_hours(h))
            .collect::<Result<_, _>>()?,
        except: c.except.clone(),
    })
}

struct RuleCx<'a, 'b> {
    src: &'a Src<'a>,
    rule: String,
    issues: &'b mut Vec<RuleIssue>,
    env: &'a RuleEnv,
    calendars: &'a Calendars,
}

type ResolveRef = (PathBuf, usize, String, String);

impl RuleCx<'_, '_> {
    fn line(&self, at: usize) -> usize {
        self.src.line(at)
    }

    fn issue(&mut self, line: usize, message: String) {
        self.issues.push(RuleIssue {
            file: self.src.file.clone(),
            line,
            rule: Some(self.rule.clone()),
            message,
        });
    }

    /// Records `r`'s error at `line` and returns None.
    fn check<T>(&mut self, line: usize, r: Result<T, String>) -> Option<T> {
        r.map_err(|m| self.issue(line, m)).ok()
    }

    fn rule(&mut self, raw: &RuleToml, resolve_refs: &mut Vec<ResolveRef>) -> Option<Rule> {
        let before = self.issues.len();
        let id_line = self.line(raw.id.span().start);
        let id = raw.id.get_ref();
        let id_ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !id_ok {
            self.issue(
                id_line,
                format!("bad rule id {id:?} (1-64 of a-z, 0-9, '_', '-')"),
            );
        }
        let t_line = self.line(raw.trigger.span().start);
        let trigger = self.filter(raw.trigger.get_ref(), t_line, "trigger");
        let condition = raw.condition.as_ref().and_then(|c| {
            let line = self.line(c.span().start);
            self.check(line, compile_condition(c.get_ref()))
        });
        let pattern = match &raw.pattern {
            None => Some(Pattern::Each),
            Some(p) => {
                let line = self.line(p.span().start);
                self.pattern(p.get_ref(), line)
            }
        };
        let group_by = match &raw.group_by {
            Some(g) => {
                let line = self.line(g.span().start);
                self.check(line, GroupBy::parse(g.get_ref()))
            }
            None if matches!(pattern, Some(Pattern::Confirm { .. })) => Some(GroupBy::Location(4)),
            None => Some(GroupBy::Device),
        };
        let schedule = raw.schedule.as_ref().map(|s| {
            let line = self.line(s.span().start);
            let s = s.get_ref();
            for name in s.during.iter().chain(&s.except) {
                if !self.calendars.has(name) {
                    let known: Vec<&str> = self.calendars.names().collect();
                    self.issue(
                        line,
                        format!("unknown calendar {name:?} (known: {})", known.join(", ")),
                    );
                }
            }
            Schedule {
                during: s.during.clone(),
                except: s.except.clone(),
            }
        });
        let debounce = self.duration(raw.debounce.as_ref());
        let suppress = self.duration(raw.suppress.as_ref());
        if debounce.is_some() && matches!(pattern, Some(Pattern::Absence { .. })) {
            let line = self.line(raw.debounce.as_ref().map_or(0, |d| d.span().start));
            self.issue(
                line,
                "debounce does not apply to an absence pattern (the timer is the debounce)".into(),
            );
        }
        let retry = self.retry(raw);
        if raw.actions.is_empty() {
            self.issue(id_line, "a rule needs at least one [[rule.actions]]".into());
        }
        let mut actions = Vec::new();
        let mut resolve_on = Vec::new();
        let mut skipped = Vec::new();
        for a in &raw.actions {
            let line = self.line(a.span().start);
            if let Some(spec) = self.action(
                a.get_ref(),
                line,
                &mut resolve_on,
                &mut skipped,
                resolve_refs,
            ) {
                if let (ActionSpec::Emit { kind, .. }, Some(t)) = (&spec, &trigger)
                    && t.kinds.iter().any(|k| k.matches(kind.as_str()))
                {
                    self.issue(
                        line,
                        format!(
                            "the rule emits {kind}, which its own trigger matches: it would loop"
                        ),
                    );
                }
                // The runner journals alarm changes as `alarm.*` events, which come back
                // through the tail: a rule raising alarms on them would feed itself.
                if let (ActionSpec::Raise { .. }, Some(t)) = (&spec, &trigger)
                    && let Some(k) = ALARM_KINDS
                        .iter()
                        .find(|a| t.kinds.iter().any(|k| k.matches(a)))
                {
                    self.issue(
                        line,
                        format!("the rule raises alarms and its trigger matches {k}, which every alarm change is journaled as: it would loop"),
                    );
                }
                actions.push(spec);
            }
        }
        if self.issues.len() != before {
            return None;
        }
        Some(Rule {
            id: id.clone(),
            trigger: trigger?,
            condition,
            group_by: group_by?,
            schedule,
            pattern: pattern?,
            debounce,
            suppress,
            retry,
            actions,
            resolve_on,
            skipped,
        })
    }

    fn duration(&mut self, d: Option<&Spanned<String>>) -> Option<chrono::Duration> {
        let d = d?;
        let line = self.line(d.span().start);
        self.check(line, parse_duration(d.get_ref()))
    }

    fn filter(&mut self, t: &TriggerToml, line: usize, what: &str) -> Option<Filter> {
        let before = self.issues.len();
        if t.kinds.is_empty() {
            self.issue(
                line,
                format!(
                    "{what}.kinds is empty: name at least one kind (\"fire.alarm\", \"fire.*\")"
                ),
            );
        }
        let kinds: Vec<KindPattern> = t
            .kinds
            .iter()
            .filter_map(|k| self.check(line, KindPattern::parse(k)))
            .collect();
        let scopes: Vec<Scope> = t
            .scopes
            .iter()
            .filter_map(|s| self.check(line, Scope::parse(s)))
            .collect();
        for d in &t.devices {
            self.check(line, DeviceId::new(d.clone()));
        }
        let mut payload = Vec::new();
        for (key, v) in &t.payload {
            match serde_json::to_value(v) {
                Ok(json) => payload.push((key.split('.').map(str::to_owned).collect(), json)),
                Err(e) => self.issue(line, format!("{what}.payload.{key}: {e}")),
            }
        }
        (self.issues.len() == before).then(|| Filter {
            kinds,
            scopes,
            devices: t.devices.clone(),
            payload,
        })
    }

    fn pattern(&mut self, p: &PatternToml, line: usize) -> Option<Pattern> {
        let within = self.check(line, parse_duration(&p.within));
        let misplaced =
            |field: &str, ok: bool| (!ok).then(|| format!("pattern {:?} takes no {field}", p.kind));
        let (pattern, extra) = match p.kind.as_str() {
            "count" => {
                let n = p.count.unwrap_or(0);
                if n < 1 {
                    self.issue(line, "a count pattern needs count = N (N >= 1)".into());
                }
                (
                    within.map(|w| Pattern::Count {
                        n: n as usize,
                        within: w,
                    }),
                    [
                        misplaced("devices", p.devices.is_none()),
                        misplaced("arm", p.arm.is_none()),
                        misplaced("first", p.first.is_none()),
                    ],
                )
            }
            "confirm" => {
                let n = p.devices.unwrap_or(2);
                if n < 2 {
                    self.issue(
                        line,
                        "a confirm pattern needs devices >= 2 (distinct devices that must agree)"
                            .into(),
                    );
                }
                (
                    within.map(|w| Pattern::Confirm {
                        devices: n as usize,
                        within: w,
                    }),
                    [
                        misplaced("count", p.count.is_none()),
                        misplaced("arm", p.arm.is_none()),
                        misplaced("first", p.first.is_none()),
                    ],
                )
            }
            "absence" => {
                let arm = match &p.arm {
                    Some(a) => Some(self.filter(a, line, "pattern.arm")?),
                    None => None,
                };
                (
                    within.map(|w| Pattern::Absence { within: w, arm }),
                    [
                        misplaced("count", p.count.is_none()),
                        misplaced("devices", p.devices.is_none()),
                        misplaced("first", p.first.is_none()),
                    ],
                )
            }
            "sequence" => {
                let Some(first) = &p.first else {
                    self.issue(line, "a sequence pattern needs first = { kinds = [...] } (the event that must come before)".into());
                    return None;
                };
                let first = self.filter(first, line, "pattern.first")?;
                (
                    within.map(|w| Pattern::Sequence { first, within: w }),
                    [
                        misplaced("count", p.count.is_none()),
                        misplaced("devices", p.devices.is_none()),
                        misplaced("arm", p.arm.is_none()),
                    ],
                )
            }
            other => {
                self.issue(
                    line,
                    format!("unknown pattern type {other:?} (count, confirm, absence, sequence)"),
                );
                return None;
            }
        };
        for m in extra.into_iter().flatten() {
            self.issue(line, m);
        }
        pattern
    }

    fn retry(&mut self, raw: &RuleToml) -> RetryPolicy {
        let mut policy = RetryPolicy::default();
        if let Some(r) = &raw.retry {
            let line = self.line(r.span().start);
            let r = r.get_ref();
            if let Some(a) = r.attempts {
                if a == 0 || a > 20 {
                    self.issue(line, "retry.attempts must be 1-20".into());
                }
                policy.attempts = a;
            }
            if let Some(b) = &r.backoff
                && let Some(d) = self.check(line, parse_duration(b))
            {
                policy.backoff_ms = u64::try_from(d.num_milliseconds()).unwrap_or(1_000);
            }
            if let Some(g) = r.alarm_on_give_up {
                policy.alarm_on_give_up = g;
            }
        }
        policy
    }

    fn severity(&mut self, line: usize, s: Option<&String>) -> Option<Severity> {
        match s {
            None => {
                self.issue(
                    line,
                    "severity is required (critical, major, minor, info)".into(),
                );
                None
            }
            Some(s) => self.check(line, s.parse()),
        }
    }

    fn action(
        &mut self,
        a: &ActionToml,
        line: usize,
        resolve_on: &mut Vec<KindPattern>,
        skipped: &mut Vec<String>,
        resolve_refs: &mut Vec<ResolveRef>,
    ) -> Option<ActionSpec> {
        match a {
            ActionToml::Command(c) => {
                let kind = self.check(
                    line,
                    CommandKind::new(c.command.clone()).map_err(|e| e.to_string()),
                );
                let target_ok = c.target == "all"
                    || ["campus:", "building:", "floor:", "zone:", "device:"]
                        .iter()
                        .any(|p| c.target.starts_with(p));
                if !target_ok {
                    self.issue(line, format!("bad command target {:?} (write all, campus:.., building:.., floor:.., zone:.. or device:.., with {{event.…}} fields)", c.target));
                }
                let target = self.check(line, Template::parse(&c.target));
                let args = self.json(line, c.args.as_ref());
                Some(ActionSpec::Command {
                    kind: kind?,
                    target: target?,
                    args: args?,
                })
            }
            ActionToml::Alarm(al) => self.alarm(al, line, resolve_on, resolve_refs),
            ActionToml::Forward(f) => {
                if self.env.known_uplinks.contains(&f.uplink) {
                    Some(ActionSpec::Forward {
                        uplink: f.uplink.clone(),
                    })
                } else if f.optional {
                    skipped.push(format!("forward:{}", f.uplink));
                    None
                } else {
                    self.issue(line, format!("unknown uplink {:?} (configured: {}); add optional = true to skip it where it is not configured", f.uplink, self.env.known_uplinks.join(", ")));
                    None
                }
            }
            ActionToml::Notify(n) => {
                let severity = match &n.severity {
                    None => Some(Severity::Info),
                    Some(s) => self.check(line, s.parse()),
                };
                let title = self.check(line, Template::parse(&n.title));
                let text = self.check(line, Template::parse(&n.text));
                if !self.env.known_notifiers.contains(&n.notifier) {
                    if n.optional {
                        skipped.push(format!("notify:{}", n.notifier));
                        return None;
                    }
                    self.issue(line, format!("unknown notifier {:?} (configured: {}); add optional = true to skip it where it is not configured", n.notifier, self.env.known_notifiers.join(", ")));
                    return None;
                }
                Some(ActionSpec::Notify {
                    notifier: n.notifier.clone(),
                    title: title?,
                    text: text?,
                    severity: severity?,
                })
            }
            ActionToml::Emit(e) => {
                let kind = self.check(line, Kind::new(e.kind.clone()).map_err(|e| e.to_string()));
                let class = self.check(line, e.class.parse::<Class>());
                let payload = self.json(line, e.payload.as_ref());
                Some(ActionSpec::Emit {
                    kind: kind?,
                    class: class?,
                    payload: payload?,
                })
            }
        }
    }

    fn alarm(
        &mut self,
        al: &AlarmToml,
        line: usize,
        resolve_on: &mut Vec<KindPattern>,
        resolve_refs: &mut Vec<ResolveRef>,
    ) -> Option<ActionSpec> {
        match al.op.as_deref().unwrap_or("raise") {
            "raise" => {
                let severity = self.severity(line, al.severity.as_ref());
                let title = self.check(
                    line,
                    Template::parse(
                        al.title
                            .as_deref()
                            .unwrap_or("{rule.id} at {event.location}"),
                    ),
                );
                let escalate: Vec<_> = al
                    .escalate
                    .iter()
                    .filter_map(|d| self.check(line, parse_duration(d)))
                    .collect();
                if escalate.windows(2).any(|w| w[1] <= w[0]) {
                    self.issue(line, "escalate steps must grow (each is counted from the raise: [\"5m\", \"15m\"])".into());
                }
                if let Some(n) = &al.escalate_notifier
                    && !self.env.known_notifiers.contains(n)
                {
                    self.issue(line, format!("unknown notifier {n:?} in escalate_notifier"));
                }
                for k in &al.resolve_on {
                    if let Some(p) = self.check(line, KindPattern::parse(k)) {
                        resolve_on.push(p);
                    }
                }
                if al.rule.is_some() {
                    self.issue(line, "rule = \"...\" belongs to op = \"resolve\"".into());
                }
                Some(ActionSpec::Raise {
                    severity: severity?,
                    title: title?,
                    escalate,
                    escalate_notifier: al.escalate_notifier.clone(),
                })
            }
            "resolve" => {
                let rule = al.rule.clone().unwrap_or_else(|| self.rule.clone());
                if rule != self.rule {
                    resolve_refs.push((
                        self.src.file.clone(),
                        line,
                        self.rule.clone(),
                        rule.clone(),
                    ));
                }
                if al.severity.is_some()
                    || al.title.is_some()
                    || !al.escalate.is_empty()
                    || !al.resolve_on.is_empty()
                {
                    self.issue(line, "op = \"resolve\" takes only rule = \"...\" (which rule's open alarm in this group)".into());
                }
                Some(ActionSpec::Resolve { rule })
            }
            other => {
                self.issue(line, format!("unknown alarm op {other:?} (raise, resolve)"));
                None
            }
        }
    }

    fn json(&mut self, line: usize, v: Option<&toml::Value>) -> Option<JsonTemplate> {
        let json = match v {
            None => serde_json::Value::Object(Default::default()),
            Some(v) => self.check(line, serde_json::to_value(v).map_err(|e| e.to_string()))?,
        };
        self.check(line, JsonTemplate::parse(&json))
    }
}

/// The kinds the runner journals alarm changes as.
const ALARM_KINDS: [&str; 5] = [
    "alarm.raised",
    "alarm.updated",
    "alarm.escalated",
    "alarm.acknowledged",
    "alarm.resolved",
];

/// Compiles a CEL condition; it may use only the variable `event`.
fn compile_condition(src: &str) -> Result<Condition, String> {
    // cel-parser 0.10 (antlr4rust) panics on some malformed input ("a >") instead of
    // returning an error: contain it, so a typo in a rule file is a reported problem.
    let compiled = std::panic::catch_unwind(|| cel_interpreter::Program::compile(src))
        .map_err(|_| "condition does not parse as CEL (incomplete expression?)".to_owned())?;
    let program = compiled.map_err(|e| {
        format!(
            "condition does not parse as CEL: {}",
            first_line(&e.to_string())
        )
    })?;
    let refs = program.references();
    for v in refs.variables() {
        if v != "event" {
            return Err(format!(
                "condition uses unknown variable {v:?} (only `event` is defined)"
            ));
        }
    }
    // The same text parsed again for its AST (the program keeps its own private); a parser
    // panic here only means no fast path.
    let fast = std::panic::catch_unwind(|| cel_parser::Parser::default().parse(src))
        .ok()
        .and_then(Result::ok)
        .and_then(|ast| crate::fastcel::Fast::compile(&ast))
        .map(Arc::new);
    Ok(Condition {
        program: Arc::new(program),
        fast,
        source: src.to_owned(),
    })
}
