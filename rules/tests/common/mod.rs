//! Helpers shared by the rules crate's tests: events, times, rule sets.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use campusgw_model::{Class, DeviceId, EVENT_SCHEMA_VERSION, Event, Kind, Location, Source};
use campusgw_rules::{Action, AlarmChange, RuleEnv, RuleSet, RuleSource};
use chrono::{DateTime, Duration, TimeZone, Utc};

/// Tuesday 2026-12-01 10:00 in Shanghai: school hours.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0).unwrap()
}

pub fn at(secs: i64) -> DateTime<Utc> {
    t0() + Duration::seconds(secs)
}

pub fn class_of(kind: &str) -> Class {
    match kind.split('.').next().unwrap_or_default() {
        "fire" | "panic" | "intrusion" => Class::LifeSafety,
        "door" | "device" | "storage" => Class::Security,
        "alarm" | "maintenance" | "drill" | "rule" | "command" => Class::Operations,
        "patrol" | "access" => Class::Business,
        _ => Class::Telemetry,
    }
}

/// An event at `secs` after [`t0`], location a path such as `main/A/1/z1/p3`.
pub fn ev(
    seq: u64,
    kind: &str,
    device: &str,
    loc: &str,
    secs: i64,
    payload: serde_json::Value,
) -> Event {
    Event {
        schema: EVENT_SCHEMA_VERSION,
        id: uuid_from(seq),
        seq,
        occurred_at: None,
        received_at: at(secs),
        source: Source {
            device: DeviceId::new(device).unwrap(),
            driver: "test".into(),
        },
        kind: Kind::new(kind).unwrap(),
        class: class_of(kind),
        location: if loc.is_empty() {
            Location::default()
        } else {
            Location::from_path(loc).unwrap()
        },
        payload,
        origin_ref: None,
        dedup: Default::default(),
    }
}

fn uuid_from(seq: u64) -> uuid::Uuid {
    uuid::Uuid::from_u64_pair(0x0193_0000_0000_7000, seq)
}

pub fn env() -> RuleEnv {
    RuleEnv {
        known_uplinks: vec!["county".into(), "police".into()],
        known_notifiers: vec!["duty".into()],
        ..RuleEnv::default()
    }
}

pub fn set(toml: &str) -> RuleSet {
    match RuleSet::parse(
        &[RuleSource {
            file: PathBuf::from("test.toml"),
            text: toml.into(),
        }],
        &env(),
    ) {
        Ok(s) => s,
        Err(issues) => panic!("rule set refused: {issues:#?}"),
    }
}

/// The shipped pack, read from rules/pack.
pub fn pack_sources() -> Vec<RuleSource> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("pack");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| RuleSource {
            text: std::fs::read_to_string(&f).unwrap(),
            file: f,
        })
        .collect()
}

/// Short descriptions of actions, for table assertions: `command door.unlock building:A`,
/// `raised fire:2`, `forward police 2`, `notify duty`, `emit fire.confirmed`.
pub fn brief(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|a| match a {
            Action::Command { kind, target, .. } => {
                let t = match target {
                    campusgw_model::Target::Device(d) => format!("device:{d}"),
                    campusgw_model::Target::Scope(s) => s.clone(),
                };
                format!("command {kind} {t}")
            }
            Action::Alarm(c) => {
                let what = match c {
                    AlarmChange::Raised(_) => "raised",
                    AlarmChange::Updated(_) => "updated",
                    AlarmChange::Escalated(_) => "escalated",
                    AlarmChange::Acknowledged(_) => "acknowledged",
                    AlarmChange::Resolved(_) => "resolved",
                };
                format!("{what} {}", c.alarm().id)
            }
            Action::Forward {
                uplink, cause_seq, ..
            } => format!("forward {uplink} {cause_seq}"),
            Action::Notify { notifier, .. } => format!("notify {notifier}"),
            Action::Emit { event, .. } => format!("emit {}", event.kind),
        })
        .collect()
}
