//! Property tests: no event makes the engine panic, and an engine restored from a snapshot
//! taken at any point continues exactly as the uninterrupted one.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use campusgw_rules::{Engine, EngineState, RuleSet};
use common::{at, ev, pack_sources};
use proptest::prelude::*;
use serde_json::{Value, json};

const EXTRA: &str = r#"
[[rule]]
id = "hot"
trigger = { kinds = ["sensor.*"] }
condition = "event.payload.v > 50 && event.location.building == 'A'"
pattern = { type = "count", count = 2, within = "30s" }
[[rule.actions]]
type = "alarm"
severity = "minor"
title = "{event.payload.v} at {event.location.zone}"
escalate = ["20s"]
[[rule.actions]]
type = "emit"
kind = "derived.hot"
class = "operations"
payload = { v = "{event.payload.v}" }

[[rule]]
id = "seq"
trigger = { kinds = ["door.held_open"] }
pattern = { type = "sequence", within = "40s", first = { kinds = ["access.granted"] } }
debounce = "5s"
suppress = "20s"
[[rule.actions]]
type = "command"
command = "camera.snapshot"
target = "device:{event.source.device}"
"#;

fn rules() -> RuleSet {
    let mut sources = pack_sources();
    sources.push(campusgw_rules::RuleSource {
        file: "extra.toml".into(),
        text: EXTRA.into(),
    });
    RuleSet::parse(&sources, &common::env()).expect("rules")
}

const KINDS: &[&str] = &[
    "fire.alarm",
    "fire.reset",
    "panic.alarm",
    "intrusion.alarm",
    "door.forced",
    "door.held_open",
    "door.closed",
    "access.granted",
    "patrol.checkpoint",
    "device.offline",
    "device.online",
    "storage.critical",
    "storage.recovered",
    "sensor.reading",
    "alarm.acknowledge",
    "alarm.resolve",
    "maintenance.set",
    "maintenance.clear",
    "drill.set",
    "drill.clear",
    "rule.enable",
    "rule.disable",
];

fn payload() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        (0i64..100).prop_map(|n| json!(n)),
        "[a-z_:0-9]{0,8}".prop_map(Value::String),
        (1u64..40).prop_map(|s| json!(format!("panic_lockdown:{s}"))),
    ];
    let keys = prop_oneof![
        Just("v".to_owned()),
        Just("alarm_id".to_owned()),
        Just("scope".to_owned()),
        Just("until".to_owned()),
        Just("building".to_owned()),
        Just("rule".to_owned()),
        Just("checkpoint".to_owned()),
        Just("component_address".to_owned()),
        "[a-z]{1,3}".prop_map(|s| s),
    ];
    let value = leaf.prop_recursive(2, 8, 4, |inner| {
        prop::collection::vec(inner, 0..3).prop_map(Value::Array)
    });
    prop_oneof![
        prop::collection::btree_map(keys, value, 0..5)
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        Just(json!({"scope": "building:A", "until": "2026-12-01T02:10:00Z", "by": "x"})),
        Just(json!({"building": "A", "until": "2026-12-01T02:10:00Z", "by": "x"})),
        Just(json!({"rule": "panic_lockdown", "by": "x"})),
        (1u64..40).prop_map(
            |s| json!({"alarm_id": format!("panic_lockdown:{s}"), "by": "x", "note": ""})
        ),
    ]
}

#[derive(Debug, Clone)]
enum Step {
    Event {
        kind: usize,
        device: u8,
        loc: u8,
        dt: i64,
        payload: Value,
    },
    Tick(i64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        4 => (0..KINDS.len(), 0u8..4, 0u8..6, 0i64..40, payload())
            .prop_map(|(kind, device, loc, dt, payload)| Step::Event { kind, device, loc, dt, payload }),
        1 => (0i64..400).prop_map(Step::Tick),
    ];
    prop::collection::vec(step, 1..60)
}

const LOCS: &[&str] = &[
    "main/A/1/z1",
    "main/A/1/z1/d1",
    "main/A/1/z2/d2",
    "main/B",
    "",
    "main/A/2/z1/d3",
];

/// Runs steps from `from` on, returning every action as JSON (and eval errors in order).
fn drive(e: &mut Engine, steps: &[Step], clock: &mut i64, seq: &mut u64) -> Vec<Value> {
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Event {
                kind,
                device,
                loc,
                dt,
                payload,
            } => {
                *clock += dt;
                *seq += 1;
                let kind = KINDS[*kind];
                let device = if kind.contains('.')
                    && ["alarm", "maintenance", "drill", "rule"]
                        .contains(&kind.split('.').next().unwrap())
                {
                    "gateway".to_owned()
                } else {
                    format!("dev{device}")
                };
                let event = ev(
                    *seq,
                    kind,
                    &device,
                    LOCS[*loc as usize],
                    *clock,
                    payload.clone(),
                );
                out.extend(
                    e.on_event(*seq, &event, at(*clock))
                        .iter()
                        .map(|a| a.to_json()),
                );
            }
            Step::Tick(dt) => {
                *clock += dt;
                out.extend(e.on_time(at(*clock)).iter().map(|a| a.to_json()));
            }
        }
        out.extend(
            e.take_eval_errors()
                .iter()
                .map(|x| json!({"error": x.rule, "seq": x.seq})),
        );
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_events_or_payloads_makes_the_engine_panic(steps in steps()) {
        let mut e = Engine::new(rules());
        let (mut clock, mut seq) = (0, 0);
        drive(&mut e, &steps, &mut clock, &mut seq);
        let text = serde_json::to_string(&e.state()).unwrap();
        let back: EngineState = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, e.state());
    }

    #[test]
    fn an_engine_restored_from_a_snapshot_acts_exactly_as_the_uninterrupted_one(
        steps in steps(), cut in any::<prop::sample::Index>()
    ) {
        let rules = rules();
        let k = cut.index(steps.len() + 1);
        let mut whole = Engine::new(rules.clone());
        let (mut clock, mut seq) = (0, 0);
        let expected = drive(&mut whole, &steps, &mut clock, &mut seq);

        let mut first = Engine::new(rules.clone());
        let (mut clock, mut seq) = (0, 0);
        let mut got = drive(&mut first, &steps[..k], &mut clock, &mut seq);
        let snapshot = serde_json::to_vec(&first.state()).unwrap();
        drop(first);
        let mut restored = Engine::restore(rules, serde_json::from_slice(&snapshot).unwrap());
        got.extend(drive(&mut restored, &steps[k..], &mut clock, &mut seq));
        prop_assert_eq!(got, expected);
        prop_assert_eq!(restored.state(), whole.state());
    }
}
