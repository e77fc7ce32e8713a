//! The engine: committed events and the passing of time in, actions out.
//!
//! Time: an event is evaluated at its gateway receive time (`received_at`, never later than
//! the `now` passed in), and every window, timer and alarm timestamp derives from those times,
//! so replaying the same journal gives the same actions and alarm ids whenever it is replayed.
//! Timers due before an event's receive time fire before that event is evaluated. The runner
//! calls [`Engine::on_time`] only when it has no committed event left to hand over, so a timer
//! never fires ahead of an event that arrived before its deadline.
//!
//! Operator input arrives as events (class `operations`): `alarm.acknowledge`,
//! `alarm.resolve`, `maintenance.set|clear`, `drill.set|clear`, `rule.enable|disable`.
//!
//! Maintenance (a device, zone or building): events are still evaluated and alarms raised,
//! marked `test`; commands and forwards are held. Drill (a building): commands run as for the
//! real thing (doors, evacuation broadcast), forwards are held (no police), alarms are `test`.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;

use campusgw_model::{Class, DeviceId, Event, NewEvent, Target};
use chrono::{DateTime, Utc};

use crate::action::{Action, EvalError, RetryPolicy};
use crate::alarm::{Alarm, AlarmChange, AlarmState, Severity};
use crate::compile::{Role, RuleSet};
use crate::rule::{ActionSpec, Pattern, Rule, Schedule, Scope};
use crate::state::{EngineState, Hit, Hold, OpenAlarm, TimerKind};

/// At most this many evaluation errors are kept between two `take_eval_errors` calls; the rest
/// are counted in [`Engine::dropped_eval_errors`], so a broken rule cannot grow memory.
const MAX_EVAL_ERRORS: usize = 1_000;

/// An alarm lists at most this many source events (the first ones and the latest) and devices.
const MAX_SOURCE_SEQS: usize = 32;

/// The rules engine. Single-threaded and pure: no I/O, no clock reads.
pub struct Engine {
    rules: RuleSet,
    pub(crate) st: EngineState,
    /// Deadlines of `st.timers`, ordered; rebuilt on restore.
    pub(crate) queue: std::collections::BTreeSet<(DateTime<Utc>, u64)>,
    /// Whether each rule (by index) is enabled: file setting, then operator override.
    enabled: Vec<bool>,
    /// Open alarm id by (rule, group): at most one each; rebuilt on restore.
    by_group: HashMap<String, HashMap<String, String>>,
    cel: cel_interpreter::Context<'static>,
    errors: Vec<EvalError>,
    dropped_errors: u64,
    scratch: Vec<(usize, Role)>,
    /// The zone offset (seconds east of UTC) of the last UTC second a schedule was read at.
    offset: std::cell::Cell<(i64, i32)>,
}

/// How a hold changes what a rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Live,
    Maintenance,
    Drill,
}

impl Engine {
    /// An engine with no history.
    pub fn new(rules: RuleSet) -> Engine {
        Engine::restore(rules, EngineState::default())
    }

    /// An engine continuing from a saved state (after a restart). State of rules no longer in
    /// `rules` is dropped.
    pub fn restore(rules: RuleSet, state: EngineState) -> Engine {
        let mut e = Engine {
            rules: RuleSet::empty(),
            st: state,
            queue: Default::default(),
            by_group: HashMap::new(),
            enabled: Vec::new(),
            cel: cel_interpreter::Context::default(),
            errors: Vec::new(),
            dropped_errors: 0,
            scratch: Vec::new(),
            offset: std::cell::Cell::new((i64::MIN, 0)),
        };
        e.queue =
            e.st.timers
                .iter()
                .map(|(id, t)| (t.deadline, *id))
                .collect();
        for (id, o) in &e.st.alarms {
            e.by_group
                .entry(o.alarm.rule.clone())
                .or_default()
                .insert(o.group.clone(), id.clone());
        }
        e.reload(rules);
        e
    }

    /// Hot reload: the new rules take effect for the next event. Windows, timers and
    /// suppression of rules whose id stays are kept; open alarms are kept whatever their rule.
    pub fn reload(&mut self, rules: RuleSet) {
        let known = &rules.inner.by_id;
        self.st.rules.retain(|id, _| known.contains_key(id));
        self.st.overrides.retain(|id, _| known.contains_key(id));
        let dead: Vec<u64> = self
            .st
            .timers
            .iter()
            .filter(|(_, t)| match &t.what {
                TimerKind::Absence { rule, .. } | TimerKind::Debounce { rule, .. } => {
                    !known.contains_key(rule)
                }
                TimerKind::Escalate { .. } => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.cancel_timer(id);
        }
        self.rules = rules;
        // The new set may read schedules in another zone.
        self.offset.set((i64::MIN, 0));
        self.refresh_enabled();
    }

    fn refresh_enabled(&mut self) {
        let overrides = &self.st.overrides;
        self.enabled = self
            .rules
            .inner
            .infos
            .iter()
            .map(|i| overrides.get(&i.id).copied().unwrap_or(i.enabled))
            .collect();
    }

    /// The pattern state of a rule, created on first use (without cloning its id each time).
    fn rule_state(&mut self, id: &str) -> &mut crate::state::RuleState {
        if !self.st.rules.contains_key(id) {
            self.st.rules.insert(id.to_owned(), Default::default());
        }
        self.st
            .rules
            .get_mut(id)
            .expect("the rule state was inserted just above")
    }

    /// Enables or disables a rule (operator override of the file's `enabled`). Returns false
    /// for an unknown rule.
    pub fn set_enabled(&mut self, rule_id: &str, enabled: bool) -> bool {
        if !self.rules.inner.by_id.contains_key(rule_id) {
            return false;
        }
        self.st.overrides.insert(rule_id.to_owned(), enabled);
        self.refresh_enabled();
        true
    }

    /// Whether a rule is active now (file setting, then operator override).
    pub fn is_enabled(&self, rule_id: &str) -> bool {
        let file = self
            .rules
            .inner
            .by_id
            .get(rule_id)
            .and_then(|i| self.rules.inner.infos.get(*i))
            .is_some_and(|i| i.enabled);
        self.st.overrides.get(rule_id).copied().unwrap_or(file)
    }

    /// The rule set in use.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// How the runner retries commands of `rule_id` (the default for an unknown rule).
    pub fn retry_policy(&self, rule_id: &str) -> RetryPolicy {
        self.rule_by_id(rule_id)
            .map(|r| r.retry.clone())
            .unwrap_or_default()
    }

    /// One committed event. `seq` is its journal seq. Returns what to do, in order.
    pub fn on_event(&mut self, seq: u64, event: &Event, now: DateTime<Utc>) -> Vec<Action> {
        let t = event.received_at.min(now);
        let mut out = Vec::new();
        self.fire_due(t, &mut out);
        if event.class == Class::Operations {
            self.operator(seq, event, t, &mut out);
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        self.rules.inner.index.lookup(
            event.kind.as_str(),
            event.location.building.as_deref(),
            &mut scratch,
        );
        let rules = self.rules.clone();
        let mut cel_event = None;
        let mut forwarded = HashSet::new();
        for &(ri, role) in &scratch {
            let Some(rule) = rules.inner.rules.get(ri) else {
                continue;
            };
            if !self.enabled.get(ri).copied().unwrap_or(false) {
                continue;
            }
            let mut cx = Cx {
                seq,
                ev: event,
                t,
                out: &mut out,
                forwarded: &mut forwarded,
            };
            match role {
                Role::Trigger => self.on_trigger(rule, &mut cel_event, &mut cx),
                Role::Arm => self.on_arm(rule, &mut cx),
                Role::First => self.on_first(rule, &mut cx),
                Role::ResolveOn => self.auto_resolve(rule, &mut cx),
            }
        }
        self.scratch = scratch;
        out
    }

    /// Time passed: fires timers due by `now` (absence, debounce, escalation) and ends
    /// maintenance and drills that expired.
    pub fn on_time(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let mut out = Vec::new();
        self.fire_due(now, &mut out);
        out
    }

    /// The earliest time `on_time` has something to do.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        let timer = self.queue.first().map(|(d, _)| *d);
        let holds = self
            .st
            .maintenance
            .values()
            .chain(self.st.drills.values())
            .map(|h| h.until);
        timer.into_iter().chain(holds).min()
    }

    /// A snapshot of everything needed to continue after a restart.
    pub fn state(&self) -> EngineState {
        let mut st = self.st.clone();
        st.rules.retain(|_, r| !r.is_empty());
        st
    }

    /// The open (raised or acknowledged) alarms, by id.
    pub fn alarms(&self) -> impl Iterator<Item = &Alarm> {
        self.st.alarms.values().map(|o| &o.alarm)
    }

    /// Scopes in maintenance (`device:ID`, `zone:A/1/z2`, `building:A`) and who set it.
    pub fn maintenance(&self) -> impl Iterator<Item = (&str, &Hold)> {
        self.st.maintenance.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Buildings in drill mode and who set it.
    pub fn drills(&self) -> impl Iterator<Item = (&str, &Hold)> {
        self.st.drills.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Evaluation errors since the last call (rule, seq, message), oldest first.
    pub fn take_eval_errors(&mut self) -> Vec<EvalError> {
        std::mem::take(&mut self.errors)
    }

    /// Evaluation errors discarded because more than 1,000 piled up between two takes.
    pub fn dropped_eval_errors(&self) -> u64 {
        self.dropped_errors
    }

    pub(crate) fn push_error(&mut self, rule: &str, seq: u64, message: String) {
        if self.errors.len() < MAX_EVAL_ERRORS {
            self.errors.push(EvalError {
                rule: rule.to_owned(),
                seq,
                message,
            });
        } else {
            self.dropped_errors += 1;
        }
    }

    fn rule_by_id(&self, id: &str) -> Option<&Rule> {
        self.rules
            .inner
            .by_id
            .get(id)
            .and_then(|i| self.rules.inner.rules.get(*i))
    }
}

/// What one evaluation step works on.
pub(crate) struct Cx<'a> {
    pub seq: u64,
    pub ev: &'a Event,
    pub t: DateTime<Utc>,
    pub out: &'a mut Vec<Action>,
    pub forwarded: &'a mut HashSet<(String, u64)>,
}

impl Engine {
    fn on_trigger(
        &mut self,
        rule: &Rule,
        cel_event: &mut Option<cel_interpreter::Value>,
        cx: &mut Cx<'_>,
    ) {
        if !rule.trigger.matches(cx.ev) || !self.scheduled(rule.schedule.as_ref(), cx.t) {
            return;
        }
        if let Some(cond) = &rule.condition {
            match self.eval(cond, cx.ev, cel_event) {
                Ok(true) => {}
                Ok(false) => return,
                Err(m) => return self.push_error(&rule.id, cx.seq, m),
            }
        }
        let group = rule.group_by.key(cx.ev);
        let fire = self.advance_pattern(rule, &group, cx);
        if !fire {
            return;
        }
        if let Some(d) = rule.debounce {
            let deadline = later(cx.t, d);
            let rs = self.rule_state(&rule.id);
            if let Some(old) = rs.timers.remove(&group) {
                self.cancel_timer(old);
            }
            let what = TimerKind::Debounce {
                rule: rule.id.clone(),
                group: group.clone(),
                cause: Box::new(cx.ev.clone()),
            };
            let id = self.add_timer(deadline, what);
            self.rule_state(&rule.id).timers.insert(group, id);
            return;
        }
        let (seq, ev, t) = (cx.seq, cx.ev, cx.t);
        self.act(rule, &group, seq, ev, t, cx);
    }

    /// Feeds a matching event to the rule's pattern; true when the rule should act now.
    fn advance_pattern(&mut self, rule: &Rule, group: &str, cx: &Cx<'_>) -> bool {
        let t = cx.t;
        match &rule.pattern {
            Pattern::Each => true,
            Pattern::Count { n, within } => {
                let rs = self.rule_state(&rule.id);
                let hits = rs.windows.entry(group.to_owned()).or_default();
                hits.retain(|h| t - h.t < *within);
                hits.push(Hit {
                    t,
                    seq: cx.seq,
                    device: cx.ev.source.device.as_str().to_owned(),
                });
                let done = hits.len() >= *n;
                if done {
                    rs.windows.remove(group);
                }
                done
            }
            Pattern::Confirm { devices, within } => {
                let rs = self.rule_state(&rule.id);
                let hits = rs.windows.entry(group.to_owned()).or_default();
                let device = witness(cx.ev);
                // One hit per witness: a detector repeating itself is not a second witness.
                hits.retain(|h| t - h.t < *within && h.device != device);
                hits.push(Hit {
                    t,
                    seq: cx.seq,
                    device,
                });
                let done = hits.len() >= *devices;
                if done {
                    rs.windows.remove(group);
                }
                done
            }
            Pattern::Absence { within, arm } => {
                let rs = self.rule_state(&rule.id);
                if let Some(old) = rs.timers.remove(group) {
                    self.cancel_timer(old);
                }
                if arm.is_none() {
                    // Without an arming event each expected event restarts the watch.
                    let what = TimerKind::Absence {
                        rule: rule.id.clone(),
                        group: group.to_owned(),
                        cause: Box::new(cx.ev.clone()),
                    };
                    let id = self.add_timer(later(t, *within), what);
                    self.rule_state(&rule.id)
                        .timers
                        .insert(group.to_owned(), id);
                }
                false
            }
            Pattern::Sequence { within, .. } => {
                let rs = self.rule_state(&rule.id);
                match rs.firsts.get(group) {
                    Some(first) if t - *first <= *within => {
                        rs.firsts.remove(group);
                        true
                    }
                    _ => false,
                }
            }
        }
    }

    fn on_arm(&mut self, rule: &Rule, cx: &mut Cx<'_>) {
        let Pattern::Absence {
            within,
            arm: Some(arm),
        } = &rule.pattern
        else {
            return;
        };
        if !arm.matches(cx.ev) || !self.scheduled(rule.schedule.as_ref(), cx.t) {
            return;
        }
        let group = rule.group_by.key(cx.ev);
        let rs = self.rule_state(&rule.id);
        // A second arming event while armed keeps the first deadline: the watch is from the
        // first time the device went offline, not the last.
        if rs.timers.contains_key(&group) {
            return;
        }
        let what = TimerKind::Absence {
            rule: rule.id.clone(),
            group: group.clone(),
            cause: Box::new(cx.ev.clone()),
        };
        let id = self.add_timer(later(cx.t, *within), what);
        self.rule_state(&rule.id).timers.insert(group, id);
    }

    fn on_first(&mut self, rule: &Rule, cx: &mut Cx<'_>) {
        let Pattern::Sequence { first, .. } = &rule.pattern else {
            return;
        };
        if first.matches(cx.ev) {
            let group = rule.group_by.key(cx.ev);
            self.rule_state(&rule.id).firsts.insert(group, cx.t);
        }
    }

    /// A reset in the group of an open alarm of this rule resolves it (for a rule grouped by
    /// device: a reset from that device).
    fn auto_resolve(&mut self, rule: &Rule, cx: &mut Cx<'_>) {
        if !rule
            .resolve_on
            .iter()
            .any(|k| k.matches(cx.ev.kind.as_str()))
        {
            return;
        }
        let group = rule.group_by.key(cx.ev);
        if let Some(id) = self.open_in_group(&rule.id, &group) {
            self.close_alarm(&id, cx.seq, cx.out);
        }
    }

    fn scheduled(&self, schedule: Option<&Schedule>, t: DateTime<Utc>) -> bool {
        let Some(s) = schedule else { return true };
        let local = self.local(t);
        let cals = &self.rules.inner.calendars;
        (s.during.is_empty() || s.during.iter().any(|c| cals.contains(c, local)))
            && !s.except.iter().any(|c| cals.contains(c, local))
    }

    /// `t` on the wall clock of the rule set's zone. The zone's offset is looked up once per
    /// UTC second (zone transitions fall on whole seconds), not once per scheduled rule.
    fn local(&self, t: DateTime<Utc>) -> chrono::NaiveDateTime {
        use chrono::{Offset, TimeZone};
        let secs = t.timestamp();
        let (at, cached) = self.offset.get();
        let offset = if at == secs {
            cached
        } else {
            let o = self
                .rules
                .inner
                .timezone
                .offset_from_utc_datetime(&t.naive_utc())
                .fix()
                .local_minus_utc();
            self.offset.set((secs, o));
            o
        };
        t.naive_utc() + chrono::Duration::seconds(i64::from(offset))
    }

    fn eval(
        &self,
        cond: &crate::rule::Condition,
        ev: &Event,
        cel_event: &mut Option<cel_interpreter::Value>,
    ) -> Result<bool, String> {
        if let Some(v) = cond.fast.as_ref().and_then(|f| f.eval(ev)) {
            return match v {
                cel_interpreter::Value::Bool(b) => Ok(b),
                other => Err(format!("condition gave {other:?}, not a bool")),
            };
        }
        if cel_event.is_none() {
            *cel_event = Some(cel_view(ev)?);
        }
        let value = cel_event.clone().unwrap_or(cel_interpreter::Value::Null);
        let mut ctx = self.cel.new_inner_scope();
        ctx.add_variable_from_value("event", value);
        // The interpreter is a dependency: a panic inside it must not stop the other rules.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| cond.program.execute(&ctx)))
            .map_err(|_| "the condition's interpreter panicked".to_owned())?;
        match result {
            Ok(cel_interpreter::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(format!("condition gave {other:?}, not a bool")),
            Err(e) => Err(format!("condition failed: {e}")),
        }
    }
}

/// Who witnessed an event, for confirmation: the component (`location.point`, or the GB/T
/// 26875 `component_address` in the payload) behind the source device, else the device.
fn witness(ev: &Event) -> String {
    let device = ev.source.device.as_str();
    let component = ev.location.point.as_deref().map(str::to_owned).or_else(|| {
        ev.payload.get("component_address").map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    });
    match component {
        Some(c) => format!("{device}/{c}"),
        None => device.to_owned(),
    }
}

/// The event as CEL sees it: `event.kind`, `event.class`, `event.seq`, `event.device`,
/// `event.driver`, `event.location.building`, `event.payload.…`.
pub(crate) fn cel_view(ev: &Event) -> Result<cel_interpreter::Value, String> {
    use cel_interpreter::Value;
    let text = |s: &str| Value::String(std::sync::Arc::new(s.to_owned()));
    let mut location: HashMap<String, Value> = HashMap::new();
    let names = ["campus", "building", "floor", "zone", "point"];
    for (name, level) in names.iter().zip(ev.location.levels()) {
        if let Some(v) = level {
            location.insert((*name).to_owned(), text(v));
        }
    }
    let payload = cel_interpreter::to_value(&ev.payload)
        .map_err(|e| format!("payload not representable in CEL: {e}"))?;
    let mut m: HashMap<String, Value> = HashMap::with_capacity(7);
    m.insert("kind".into(), text(ev.kind.as_str()));
    m.insert("class".into(), text(ev.class.as_str()));
    m.insert(
        "seq".into(),
        Value::Int(i64::try_from(ev.seq).unwrap_or(i64::MAX)),
    );
    m.insert("device".into(), text(ev.source.device.as_str()));
    m.insert("driver".into(), text(&ev.source.driver));
    m.insert("location".into(), Value::Map(location.into()));
    m.insert("payload".into(), payload);
    Ok(Value::Map(m.into()))
}

impl Engine {
    /// Runs a rule's actions for `ev` (the trigger, or for a timer the event that armed it).
    fn act(
        &mut self,
        rule: &Rule,
        group: &str,
        seq: u64,
        ev: &Event,
        t: DateTime<Utc>,
        cx: &mut Cx<'_>,
    ) {
        if let Some(s) = rule.suppress {
            let rs = self.rule_state(&rule.id);
            if rs.fired.get(group).is_some_and(|last| t - *last < s) {
                return;
            }
            rs.fired.insert(group.to_owned(), t);
        }
        let mode = self.mode(ev, t);
        for spec in &rule.actions {
            if let Err(m) = self.act_one(rule, spec, group, seq, ev, t, mode, cx) {
                self.push_error(&rule.id, seq, m);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn act_one(
        &mut self,
        rule: &Rule,
        spec: &ActionSpec,
        group: &str,
        seq: u64,
        ev: &Event,
        t: DateTime<Utc>,
        mode: Mode,
        cx: &mut Cx<'_>,
    ) -> Result<(), String> {
        let id = rule.id.as_str();
        match spec {
            ActionSpec::Command { kind, target, args } => {
                if mode == Mode::Maintenance {
                    return Ok(());
                }
                let target = target.render(id, ev)?;
                let target = match target.strip_prefix("device:") {
                    Some(d) => Target::Device(DeviceId::new(d)?),
                    None => {
                        Scope::check(&target)?;
                        Target::Scope(target)
                    }
                };
                cx.out.push(Action::Command {
                    rule: id.to_owned(),
                    cause_seq: seq,
                    kind: kind.clone(),
                    target,
                    args: args.render(id, ev)?,
                });
            }
            ActionSpec::Raise {
                severity,
                title,
                escalate,
                ..
            } => {
                // An update keeps the alarm's first title: render it only for a new alarm,
                // or when rendering may fail (then the failure is reported, as always).
                let open = self
                    .by_group
                    .get(&rule.id)
                    .is_some_and(|m| m.contains_key(group));
                let title = if open && title.infallible() {
                    String::new()
                } else {
                    title.render(id, ev)?
                };
                self.raise(
                    rule,
                    group,
                    seq,
                    ev,
                    t,
                    *severity,
                    title,
                    escalate.first().copied(),
                    mode,
                    cx.out,
                );
            }
            ActionSpec::Resolve { rule: of } => {
                if let Some(a) = self.open_in_group(of, group) {
                    self.close_alarm(&a, seq, cx.out);
                }
            }
            ActionSpec::Forward { uplink } => {
                if mode == Mode::Live && cx.forwarded.insert((uplink.clone(), seq)) {
                    cx.out.push(Action::Forward {
                        rule: id.to_owned(),
                        cause_seq: seq,
                        uplink: uplink.clone(),
                    });
                }
            }
            ActionSpec::Notify {
                notifier,
                title,
                text,
                severity,
            } => {
                cx.out.push(Action::Notify {
                    rule: id.to_owned(),
                    cause_seq: seq,
                    notifier: notifier.clone(),
                    title: format!("{}{}", mode_prefix(mode), title.render(id, ev)?),
                    text: text.render(id, ev)?,
                    severity: *severity,
                });
            }
            ActionSpec::Emit {
                kind,
                class,
                payload,
            } => {
                let mut payload = payload.render(id, ev)?;
                if mode != Mode::Live
                    && let Some(o) = payload.as_object_mut()
                {
                    o.insert("test".into(), serde_json::Value::Bool(true));
                }
                let event = NewEvent::new(kind.clone(), *class)
                    .location(ev.location.clone())
                    .payload(payload);
                cx.out.push(Action::Emit {
                    rule: id.to_owned(),
                    cause_seq: seq,
                    event,
                });
            }
        }
        Ok(())
    }

    /// Whether `ev` falls under maintenance or a drill at `t`.
    fn mode(&self, ev: &Event, t: DateTime<Utc>) -> Mode {
        let device = ev.source.device.as_str();
        let in_maintenance = self.st.maintenance.iter().any(|(scope, h)| {
            h.until > t && Scope::parse(scope).is_ok_and(|s| s.covers(device, &ev.location))
        });
        if in_maintenance {
            return Mode::Maintenance;
        }
        let building = ev.location.building.as_deref();
        let in_drill = self
            .st
            .drills
            .iter()
            .any(|(b, h)| h.until > t && Some(b.as_str()) == building);
        if in_drill { Mode::Drill } else { Mode::Live }
    }

    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        rule: &Rule,
        group: &str,
        seq: u64,
        ev: &Event,
        t: DateTime<Utc>,
        severity: Severity,
        title: String,
        first_step: Option<chrono::Duration>,
        mode: Mode,
        out: &mut Vec<Action>,
    ) {
        let device = ev.source.device.as_str().to_owned();
        let open = self
            .by_group
            .get(&rule.id)
            .and_then(|m| m.get(group))
            .and_then(|id| self.st.alarms.get_mut(id));
        if let Some(o) = open {
            // Bounded: the first events and the latest, so a chattering device cannot grow
            // an alarm (and every change journaled for it) without end.
            if !o.alarm.source_seqs.contains(&seq) {
                if o.alarm.source_seqs.len() < MAX_SOURCE_SEQS {
                    o.alarm.source_seqs.push(seq);
                } else if let Some(last) = o.alarm.source_seqs.last_mut() {
                    *last = seq;
                }
            }
            if !o.devices.contains(&device) && o.devices.len() < MAX_SOURCE_SEQS {
                o.devices.push(device);
            }
            out.push(Action::Alarm(AlarmChange::Updated(o.alarm.clone())));
            return;
        }
        let alarm = Alarm {
            id: format!("{}:{seq}", rule.id),
            rule: rule.id.clone(),
            severity,
            title,
            class: ev.class,
            location: ev.location.clone(),
            source_seqs: vec![seq],
            state: AlarmState::Raised,
            raised_at: t,
            escalation_step: 0,
            acknowledged: None,
            test: mode != Mode::Live,
        };
        let timer = first_step.map(|d| {
            self.add_timer(
                later(t, d),
                TimerKind::Escalate {
                    alarm: alarm.id.clone(),
                    step: 1,
                },
            )
        });
        out.push(Action::Alarm(AlarmChange::Raised(alarm.clone())));
        self.by_group
            .entry(rule.id.clone())
            .or_default()
            .insert(group.to_owned(), alarm.id.clone());
        self.st.alarms.insert(
            alarm.id.clone(),
            OpenAlarm {
                alarm,
                group: group.to_owned(),
                devices: vec![device],
                timer,
            },
        );
    }

    /// The open alarm of `rule` in `group`, if any.
    fn open_in_group(&self, rule: &str, group: &str) -> Option<String> {
        self.by_group.get(rule)?.get(group).cloned()
    }

    /// A timer's rule acts, caused by the event the timer holds.
    pub(crate) fn act_timer(&mut self, rule: &Rule, group: &str, cx: &mut Cx<'_>) {
        let (seq, ev, t) = (cx.seq, cx.ev, cx.t);
        self.act(rule, group, seq, ev, t, cx);
    }

    /// The escalation steps of a rule's raise action (empty when it has none or is gone).
    pub(crate) fn escalation_steps(&self, rule_id: &str) -> Vec<chrono::Duration> {
        self.raise_spec(rule_id)
            .map(|(steps, _)| steps.clone())
            .unwrap_or_default()
    }

    /// The notifier told at each escalation step, if the rule names one.
    pub(crate) fn escalation_notifier(&self, rule_id: &str) -> Option<String> {
        self.raise_spec(rule_id).and_then(|(_, n)| n.clone())
    }

    fn raise_spec(&self, rule_id: &str) -> Option<(&Vec<chrono::Duration>, &Option<String>)> {
        self.rule_by_id(rule_id)?
            .actions
            .iter()
            .find_map(|a| match a {
                ActionSpec::Raise {
                    escalate,
                    escalate_notifier,
                    ..
                } => Some((escalate, escalate_notifier)),
                _ => None,
            })
    }

    /// Resolves an open alarm on an operator's word.
    pub(crate) fn close_alarm_by(&mut self, id: &str, out: &mut Vec<Action>) {
        self.close_alarm(id, 0, out);
    }

    /// Resolves an open alarm (rule action, device reset or operator).
    fn close_alarm(&mut self, id: &str, _seq: u64, out: &mut Vec<Action>) {
        if let Some(mut o) = self.st.alarms.remove(id) {
            if let Some(m) = self.by_group.get_mut(&o.alarm.rule) {
                m.remove(&o.group);
            }
            if let Some(t) = o.timer.take() {
                self.cancel_timer(t);
            }
            o.alarm.state = AlarmState::Resolved;
            out.push(Action::Alarm(AlarmChange::Resolved(o.alarm)));
        }
    }
}

fn mode_prefix(mode: Mode) -> &'static str {
    match mode {
        Mode::Live => "",
        Mode::Maintenance => "[maintenance] ",
        Mode::Drill => "[drill] ",
    }
}

/// `t + d`, saturating at the end of representable time: a device clock or a test file far
/// in the future must not make deadline arithmetic panic.
pub(crate) fn later(t: DateTime<Utc>, d: chrono::Duration) -> DateTime<Utc> {
    t.checked_add_signed(d).unwrap_or(DateTime::<Utc>::MAX_UTC)
}
