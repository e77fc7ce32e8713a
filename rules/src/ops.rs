//! The engine's timers and its operator input (alarm acknowledge/resolve, maintenance,
//! drills, rule enable/disable), all of which arrive as journaled events.

use std::collections::HashSet;

use campusgw_model::Event;
use chrono::{DateTime, Utc};
use serde::Deserialize;

use crate::action::Action;
use crate::alarm::{AlarmChange, AlarmState};
use crate::engine::Engine;
use crate::rule::Scope;
use crate::state::{Hold, Timer, TimerKind};

#[derive(Deserialize)]
struct AlarmOp {
    alarm_id: String,
    #[serde(default)]
    by: String,
    #[serde(default)]
    note: String,
}

#[derive(Deserialize)]
struct MaintenanceOp {
    scope: String,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    by: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct DrillOp {
    building: String,
    #[serde(default)]
    until: Option<DateTime<Utc>>,
    #[serde(default)]
    by: String,
}

#[derive(Deserialize)]
struct RuleOp {
    rule: String,
}

impl Engine {
    pub(crate) fn add_timer(&mut self, deadline: DateTime<Utc>, what: TimerKind) -> u64 {
        let id = self.st.next_timer;
        self.st.next_timer += 1;
        self.st.timers.insert(id, Timer { deadline, what });
        self.queue.insert((deadline, id));
        id
    }

    pub(crate) fn cancel_timer(&mut self, id: u64) {
        if let Some(t) = self.st.timers.remove(&id) {
            self.queue.remove(&(t.deadline, id));
        }
    }

    /// Fires every timer due by `now`, in deadline order, and ends expired holds.
    pub(crate) fn fire_due(&mut self, now: DateTime<Utc>, out: &mut Vec<Action>) {
        while let Some(&(deadline, id)) = self.queue.first() {
            if deadline > now {
                break;
            }
            self.queue.pop_first();
            let Some(timer) = self.st.timers.remove(&id) else {
                continue;
            };
            self.fire(id, timer, out);
        }
        self.st.maintenance.retain(|_, h| h.until > now);
        self.st.drills.retain(|_, h| h.until > now);
    }

    fn fire(&mut self, id: u64, timer: Timer, out: &mut Vec<Action>) {
        let t = timer.deadline;
        match timer.what {
            TimerKind::Absence { rule, group, cause }
            | TimerKind::Debounce { rule, group, cause } => {
                if let Some(rs) = self.st.rules.get_mut(&rule)
                    && rs.timers.get(&group) == Some(&id)
                {
                    rs.timers.remove(&group);
                }
                let rules = self.rules().clone();
                let Some(r) = rules
                    .inner
                    .by_id
                    .get(&rule)
                    .and_then(|i| rules.inner.rules.get(*i))
                else {
                    return;
                };
                if !self.is_enabled(&rule) {
                    return;
                }
                let mut forwarded = HashSet::new();
                let mut cx = crate::engine::Cx {
                    seq: cause.seq,
                    ev: &cause,
                    t,
                    out,
                    forwarded: &mut forwarded,
                };
                self.act_timer(r, &group, &mut cx);
            }
            TimerKind::Escalate { alarm, step } => self.escalate(&alarm, step, t, out),
        }
    }

    fn escalate(&mut self, alarm: &str, step: u32, t: DateTime<Utc>, out: &mut Vec<Action>) {
        let Some(open) = self.st.alarms.get(alarm) else {
            return;
        };
        if open.alarm.state != AlarmState::Raised {
            return;
        }
        let rule_id = open.alarm.rule.clone();
        let steps = self.escalation_steps(&rule_id);
        let next = steps
            .get(step as usize)
            .map(|d| crate::engine::later(open.alarm.raised_at, *d));
        let notifier = self.escalation_notifier(&rule_id);
        let timer = next.map(|deadline| {
            self.add_timer(
                deadline,
                TimerKind::Escalate {
                    alarm: alarm.to_owned(),
                    step: step + 1,
                },
            )
        });
        let Some(open) = self.st.alarms.get_mut(alarm) else {
            return;
        };
        open.timer = timer;
        open.alarm.escalation_step = step;
        let a = open.alarm.clone();
        let _ = t;
        if let Some(notifier) = notifier {
            out.push(Action::Notify {
                rule: a.rule.clone(),
                cause_seq: a.source_seqs.first().copied().unwrap_or_default(),
                notifier,
                title: format!(
                    "{}unacknowledged (step {step}): {}",
                    if a.test { "[test] " } else { "" },
                    a.title
                ),
                text: format!(
                    "alarm {} raised at {} is still not acknowledged",
                    a.id,
                    a.raised_at.to_rfc3339()
                ),
                severity: a.severity,
            });
        }
        out.push(Action::Alarm(AlarmChange::Escalated(a)));
    }

    /// Operator input; a malformed payload is an evaluation error of rule `operator`.
    pub(crate) fn operator(
        &mut self,
        seq: u64,
        ev: &Event,
        t: DateTime<Utc>,
        out: &mut Vec<Action>,
    ) {
        let r = match ev.kind.as_str() {
            "alarm.acknowledge" => self.op_alarm(ev, t, true, out),
            "alarm.resolve" => self.op_alarm(ev, t, false, out),
            "maintenance.set" => parse::<MaintenanceOp>(ev).and_then(|op| {
                Scope::parse(&op.scope)?;
                let until = op.until.ok_or("maintenance.set needs until")?;
                self.st.maintenance.insert(
                    op.scope,
                    Hold {
                        until,
                        by: op.by,
                        reason: op.reason,
                        seq,
                    },
                );
                Ok(())
            }),
            "maintenance.clear" => parse::<MaintenanceOp>(ev).map(|op| {
                self.st.maintenance.remove(&op.scope);
            }),
            "drill.set" => parse::<DrillOp>(ev).and_then(|op| {
                let until = op.until.ok_or("drill.set needs until")?;
                self.st.drills.insert(
                    op.building,
                    Hold {
                        until,
                        by: op.by,
                        reason: String::new(),
                        seq,
                    },
                );
                Ok(())
            }),
            "drill.clear" => parse::<DrillOp>(ev).map(|op| {
                self.st.drills.remove(&op.building);
            }),
            "rule.enable" | "rule.disable" => parse::<RuleOp>(ev).and_then(|op| {
                let on = ev.kind.as_str() == "rule.enable";
                if self.set_enabled(&op.rule, on) {
                    Ok(())
                } else {
                    Err(format!("unknown rule {:?}", op.rule))
                }
            }),
            _ => Ok(()),
        };
        if let Err(m) = r {
            self.push_error("operator", seq, format!("{}: {m}", ev.kind));
        }
    }

    fn op_alarm(
        &mut self,
        ev: &Event,
        t: DateTime<Utc>,
        ack: bool,
        out: &mut Vec<Action>,
    ) -> Result<(), String> {
        let op = parse::<AlarmOp>(ev)?;
        if !self.st.alarms.contains_key(&op.alarm_id) {
            return Err(format!("no open alarm {:?}", op.alarm_id));
        }
        if !ack {
            self.close_alarm_by(&op.alarm_id, out);
            return Ok(());
        }
        let Some(open) = self.st.alarms.get_mut(&op.alarm_id) else {
            return Ok(());
        };
        // Acknowledging twice changes nothing: the first who took it stays on record.
        if open.alarm.state != AlarmState::Raised {
            return Ok(());
        }
        open.alarm.state = AlarmState::Acknowledged;
        open.alarm.acknowledged = Some((op.by, t, op.note));
        let timer = open.timer.take();
        out.push(Action::Alarm(AlarmChange::Acknowledged(open.alarm.clone())));
        if let Some(id) = timer {
            self.cancel_timer(id);
        }
        Ok(())
    }
}

fn parse<T: for<'de> Deserialize<'de>>(ev: &Event) -> Result<T, String> {
    T::deserialize(&ev.payload).map_err(|e| format!("bad payload: {e}"))
}
