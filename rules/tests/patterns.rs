//! Table tests, one group per pattern and per part of the alarm lifecycle.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

/// (device, location, seconds after t0) of one fire alarm.
type Alarm3 = (&'static str, &'static str, i64);

use campusgw_rules::{Action, AlarmState, Engine};
use common::{at, brief, ev, set};
use serde_json::json;

const CONFIRM: &str = r#"
[[rule]]
id = "fire"
trigger = { kinds = ["fire.*"] }
pattern = { type = "confirm", devices = 2, within = "60s" }
group_by = "zone"
[[rule.actions]]
type = "command"
command = "door.unlock"
target = "building:{event.location.building}"
[[rule.actions]]
type = "alarm"
severity = "critical"
"#;

fn run(engine: &mut Engine, events: &[campusgw_model::Event]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| brief(&engine.on_event(e.seq, e, e.received_at)))
        .collect()
}

#[test]
fn two_detectors_in_one_zone_within_the_window_confirm_a_fire() {
    let mut e = Engine::new(set(CONFIRM));
    let out = run(
        &mut e,
        &[
            ev(1, "fire.alarm", "panel", "main/A/1/z1/d1", 0, json!({})),
            ev(2, "fire.alarm", "panel", "main/A/1/z1/d2", 30, json!({})),
        ],
    );
    assert_eq!(out, ["command door.unlock building:A", "raised fire:2"]);
}

#[test]
fn confirmation_needs_distinct_detectors_the_same_zone_and_the_window() {
    let cases: &[(&str, &[Alarm3])] = &[
        (
            "one detector repeating",
            &[
                ("panel", "main/A/1/z1/d1", 0),
                ("panel", "main/A/1/z1/d1", 5),
            ],
        ),
        (
            "two zones",
            &[
                ("panel", "main/A/1/z1/d1", 0),
                ("panel", "main/A/1/z2/d2", 5),
            ],
        ),
        (
            "outside 60 s",
            &[
                ("panel", "main/A/1/z1/d1", 0),
                ("panel", "main/A/1/z1/d2", 61),
            ],
        ),
    ];
    for (name, evs) in cases {
        let mut e = Engine::new(set(CONFIRM));
        let events: Vec<_> = evs
            .iter()
            .enumerate()
            .map(|(i, (d, l, s))| ev(i as u64 + 1, "fire.alarm", d, l, *s, json!({})))
            .collect();
        assert!(run(&mut e, &events).is_empty(), "{name}");
    }
}

#[test]
fn gb26875_components_behind_one_transmitter_are_distinct_witnesses() {
    let mut e = Engine::new(set(CONFIRM));
    let out = run(
        &mut e,
        &[
            ev(
                1,
                "fire.alarm",
                "uitd",
                "main/A/1/z1",
                0,
                json!({"component_address": "1-1"}),
            ),
            ev(
                2,
                "fire.alarm",
                "uitd",
                "main/A/1/z1",
                1,
                json!({"component_address": "1-1"}),
            ),
            ev(
                3,
                "fire.alarm",
                "uitd",
                "main/A/1/z1",
                2,
                json!({"component_address": "1-2"}),
            ),
        ],
    );
    assert_eq!(out, ["command door.unlock building:A", "raised fire:3"]);
}

#[test]
fn count_fires_on_the_nth_event_of_a_group_within_the_window_and_starts_over() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "denied"
trigger = { kinds = ["access.denied"] }
pattern = { type = "count", count = 3, within = "60s" }
group_by = "payload.card"
[[rule.actions]]
type = "emit"
kind = "access.suspicious"
class = "security"
payload = { card = "{event.payload.card}" }
"#));
    let card = |seq, c: &str, s| {
        ev(
            seq,
            "access.denied",
            "reader",
            "main/A",
            s,
            json!({"card": c}),
        )
    };
    let out = run(
        &mut e,
        &[
            card(1, "x", 0),
            card(2, "y", 1),
            card(3, "x", 2),
            card(4, "x", 3),
            card(5, "x", 4),
            card(6, "x", 100),
        ],
    );
    assert_eq!(out, ["emit access.suspicious"]);
    let mut e = Engine::new(e.rules().clone());
    let actions = e.on_event(1, &card(1, "z", 0), at(0));
    assert!(actions.is_empty());
    let _ = e.on_event(2, &card(2, "z", 1), at(1));
    let actions = e.on_event(3, &card(3, "z", 2), at(2));
    let Some(Action::Emit {
        event, cause_seq, ..
    }) = actions.first()
    else {
        panic!("{actions:?}")
    };
    assert_eq!((*cause_seq, &event.payload), (3, &json!({"card": "z"})));
}

const OFFLINE: &str = r#"
[[rule]]
id = "offline"
trigger = { kinds = ["device.online"] }
pattern = { type = "absence", within = "5m", arm = { kinds = ["device.offline"] } }
[[rule.actions]]
type = "alarm"
severity = "major"
resolve_on = ["device.online"]
"#;

#[test]
fn absence_fires_at_the_original_deadline_when_the_expected_event_never_comes() {
    let mut e = Engine::new(set(OFFLINE));
    assert!(
        run(
            &mut e,
            &[ev(1, "device.offline", "cam1", "main/A", 0, json!({}))]
        )
        .is_empty()
    );
    assert_eq!(e.next_deadline(), Some(at(300)));
    // A second offline while armed keeps the first deadline.
    assert!(
        run(
            &mut e,
            &[ev(2, "device.offline", "cam1", "main/A", 100, json!({}))]
        )
        .is_empty()
    );
    assert!(e.on_time(at(299)).is_empty());
    assert_eq!(brief(&e.on_time(at(301))), ["raised offline:1"]);
    assert_eq!(e.alarms().next().map(|a| a.raised_at), Some(at(300)));
    // It comes back: the alarm resolves itself.
    let out = run(
        &mut e,
        &[ev(3, "device.online", "cam1", "main/A", 400, json!({}))],
    );
    assert_eq!(out, ["resolved offline:1"]);
    assert_eq!(e.alarms().count(), 0);
}

#[test]
fn absence_is_cancelled_by_the_expected_event_in_time() {
    let mut e = Engine::new(set(OFFLINE));
    run(
        &mut e,
        &[
            ev(1, "device.offline", "cam1", "main/A", 0, json!({})),
            ev(2, "device.online", "cam1", "main/A", 60, json!({})),
        ],
    );
    assert!(e.on_time(at(1_000)).is_empty());
    assert_eq!(e.next_deadline(), None);
}

#[test]
fn a_timer_due_before_an_event_fires_before_that_event_is_evaluated() {
    let mut e = Engine::new(set(OFFLINE));
    run(
        &mut e,
        &[ev(1, "device.offline", "cam1", "main/A", 0, json!({}))],
    );
    // The runner was slow: the online at 301 s is handed over before any on_time call.
    let out = run(
        &mut e,
        &[ev(2, "device.online", "cam1", "main/A", 301, json!({}))],
    );
    assert_eq!(out, ["raised offline:1", "resolved offline:1"]);
}

#[test]
fn absence_without_arm_watches_the_time_since_the_last_expected_event() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "patrol"
trigger = { kinds = ["patrol.checkpoint"] }
pattern = { type = "absence", within = "2h" }
group_by = "payload.checkpoint"
[[rule.actions]]
type = "alarm"
severity = "major"
title = "checkpoint {event.payload.checkpoint} missed"
"#));
    let cp = |seq, c: &str, s| {
        ev(
            seq,
            "patrol.checkpoint",
            "guard1",
            "main/A",
            s,
            json!({"checkpoint": c}),
        )
    };
    run(
        &mut e,
        &[cp(1, "gate", 0), cp(2, "lab", 0), cp(3, "gate", 3_600)],
    );
    let out = e.on_time(at(7_201));
    assert_eq!(brief(&out), ["raised patrol:2"]);
    assert_eq!(
        e.alarms().next().map(|a| a.title.as_str()),
        Some("checkpoint lab missed")
    );
    assert_eq!(brief(&e.on_time(at(10_801))), ["raised patrol:3"]);
}

#[test]
fn sequence_fires_on_b_only_after_a_in_the_same_group_within_the_window() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "tailgate"
trigger = { kinds = ["door.held_open"] }
pattern = { type = "sequence", within = "30s", first = { kinds = ["access.granted"] } }
[[rule.actions]]
type = "alarm"
severity = "minor"
"#));
    let out = run(
        &mut e,
        &[
            ev(1, "door.held_open", "door1", "main/A", 0, json!({})),
            ev(2, "access.granted", "door1", "main/A", 10, json!({})),
            ev(3, "door.held_open", "door2", "main/A", 20, json!({})),
            ev(4, "door.held_open", "door1", "main/A", 50, json!({})),
            ev(5, "access.granted", "door1", "main/A", 100, json!({})),
            ev(6, "door.held_open", "door1", "main/A", 120, json!({})),
        ],
    );
    assert_eq!(out, ["raised tailgate:6"]);
}

#[test]
fn debounce_acts_once_on_the_last_event_after_the_group_is_quiet() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "motion"
trigger = { kinds = ["video.motion"] }
debounce = "10s"
[[rule.actions]]
type = "command"
command = "camera.snapshot"
target = "device:{event.source.device}"
"#));
    let m = |seq, s| ev(seq, "video.motion", "cam1", "main/A", s, json!({}));
    assert!(run(&mut e, &[m(1, 0), m(2, 5), m(3, 9)]).is_empty());
    assert!(e.on_time(at(18)).is_empty());
    let out = e.on_time(at(19));
    assert_eq!(brief(&out), ["command camera.snapshot device:cam1"]);
    let Some(Action::Command { cause_seq, .. }) = out.first() else {
        panic!()
    };
    assert_eq!(*cause_seq, 3);
}

#[test]
fn suppression_ignores_a_group_for_a_while_after_it_acted() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "forced"
trigger = { kinds = ["door.forced"] }
suppress = "5m"
[[rule.actions]]
type = "notify"
notifier = "duty"
title = "forced {event.source.device}"
"#));
    let f = |seq, d: &str, s| ev(seq, "door.forced", d, "main/A", s, json!({}));
    let out = run(
        &mut e,
        &[
            f(1, "d1", 0),
            f(2, "d1", 60),
            f(3, "d2", 60),
            f(4, "d1", 301),
        ],
    );
    assert_eq!(out, ["notify duty", "notify duty", "notify duty"]);
}

#[test]
fn schedules_follow_named_calendars_in_shanghai_time() {
    let rules = set(r#"
[[calendar]]
name = "holidays"
dates = ["2026-12-02"]

[[rule]]
id = "after_hours"
trigger = { kinds = ["intrusion.alarm"] }
schedule = { except = ["school_hours"] }
[[rule.actions]]
type = "alarm"
severity = "critical"
"#);
    // at(0) is Tuesday 10:00 local; +12 h is 22:00; +24 h is a holiday morning.
    for (secs, fires) in [
        (0, false),
        (12 * 3_600, true),
        (24 * 3_600, true),
        (4 * 86_400, true),
    ] {
        let mut e = Engine::new(rules.clone());
        let out = e.on_event(
            1,
            &ev(1, "intrusion.alarm", "p", "main/A", secs, json!({})),
            at(secs),
        );
        assert_eq!(!out.is_empty(), fires, "at +{secs}s");
    }
}

#[test]
fn cel_conditions_select_events_and_a_failing_one_is_reported_without_stopping_others() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "hot"
trigger = { kinds = ["sensor.reading"] }
condition = "event.payload.celsius > 60.0"
[[rule.actions]]
type = "alarm"
severity = "major"

[[rule]]
id = "broken"
trigger = { kinds = ["sensor.reading"] }
condition = "event.payload.nothing_here > 1"
[[rule.actions]]
type = "alarm"
severity = "minor"
"#));
    let r = |seq, c: f64| {
        ev(
            seq,
            "sensor.reading",
            "t1",
            "main/A",
            0,
            json!({"celsius": c}),
        )
    };
    assert!(run(&mut e, &[r(1, 20.0)]).is_empty());
    assert_eq!(run(&mut e, &[r(2, 80.0)]), ["raised hot:2"]);
    let errors = e.take_eval_errors();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|x| x.rule == "broken"), "{errors:?}");
    assert_eq!(errors[1].seq, 2);
    assert!(e.take_eval_errors().is_empty());
}

#[test]
fn rules_of_other_kinds_are_not_evaluated() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "broken"
trigger = { kinds = ["sensor.*"] }
condition = "event.payload.nothing_here > 1"
[[rule.actions]]
type = "alarm"
severity = "minor"
"#));
    run(
        &mut e,
        &[
            ev(1, "fire.alarm", "p", "main/A", 0, json!({})),
            ev(2, "sensorx.reading", "p", "main/A", 0, json!({})),
        ],
    );
    assert!(e.take_eval_errors().is_empty());
    run(
        &mut e,
        &[ev(3, "sensor.reading", "p", "main/A", 0, json!({}))],
    );
    assert_eq!(e.take_eval_errors().len(), 1);
}

#[test]
fn a_template_the_event_cannot_fill_skips_that_action_and_is_reported() {
    let mut e = Engine::new(set(CONFIRM));
    let out = run(
        &mut e,
        &[
            ev(1, "fire.alarm", "p", "main", 0, json!({})),
            ev(2, "fire.alarm", "q", "main", 1, json!({})),
        ],
    );
    assert_eq!(out, ["raised fire:2"]);
    let errors = e.take_eval_errors();
    assert!(
        errors[0].message.contains("location.building"),
        "{errors:?}"
    );
}

const LIFECYCLE: &str = r#"
[[rule]]
id = "panic"
trigger = { kinds = ["panic.alarm"] }
group_by = "campus"
[[rule.actions]]
type = "alarm"
severity = "critical"
title = "panic at {event.location}"
escalate = ["1m", "3m"]
escalate_notifier = "duty"
[[rule.actions]]
type = "forward"
uplink = "police"
[[rule.actions]]
type = "command"
command = "door.lock"
target = "all"
"#;

fn op(seq: u64, kind: &str, secs: i64, payload: serde_json::Value) -> campusgw_model::Event {
    ev(seq, kind, "gateway", "", secs, payload)
}

#[test]
fn an_unacknowledged_alarm_escalates_step_by_step_and_acknowledging_stops_it() {
    let mut e = Engine::new(set(LIFECYCLE));
    let out = run(
        &mut e,
        &[ev(1, "panic.alarm", "btn", "main/A/1", 0, json!({}))],
    );
    assert_eq!(
        out,
        [
            "raised panic:1",
            "forward police 1",
            "command door.lock all"
        ]
    );
    // A second press updates the same alarm.
    let out = run(
        &mut e,
        &[ev(2, "panic.alarm", "btn2", "main/B/1", 10, json!({}))],
    );
    assert_eq!(
        out,
        [
            "updated panic:1",
            "forward police 2",
            "command door.lock all"
        ]
    );
    assert_eq!(
        brief(&e.on_time(at(61))),
        ["notify duty", "escalated panic:1"]
    );
    assert_eq!(e.alarms().next().map(|a| a.escalation_step), Some(1));
    let out = run(
        &mut e,
        &[op(
            3,
            "alarm.acknowledge",
            100,
            json!({"alarm_id": "panic:1", "by": "alice", "note": "on it"}),
        )],
    );
    assert_eq!(out, ["acknowledged panic:1"]);
    assert!(e.on_time(at(1_000)).is_empty());
    let a = e.alarms().next().unwrap();
    assert_eq!(a.state, AlarmState::Acknowledged);
    assert_eq!(
        a.acknowledged,
        Some(("alice".into(), at(100), "on it".into()))
    );
    assert_eq!(a.source_seqs, [1, 2]);
    let out = run(
        &mut e,
        &[op(
            4,
            "alarm.resolve",
            200,
            json!({"alarm_id": "panic:1", "by": "alice", "note": "drill"}),
        )],
    );
    assert_eq!(out, ["resolved panic:1"]);
    assert_eq!(e.alarms().count(), 0);
    // Resolving again is reported, not acted on.
    assert!(
        run(
            &mut e,
            &[op(
                5,
                "alarm.resolve",
                201,
                json!({"alarm_id": "panic:1", "by": "x"})
            )]
        )
        .is_empty()
    );
    assert_eq!(e.take_eval_errors()[0].rule, "operator");
}

#[test]
fn maintenance_holds_commands_and_forwards_and_marks_alarms_test_until_it_expires() {
    let mut e = Engine::new(set(LIFECYCLE));
    run(
        &mut e,
        &[op(
            1,
            "maintenance.set",
            0,
            json!({"scope": "building:A", "until": at(600), "by": "bob", "reason": "detector swap"}),
        )],
    );
    assert_eq!(e.maintenance().count(), 1);
    let out = e.on_event(
        2,
        &ev(2, "panic.alarm", "btn", "main/A/1", 10, json!({})),
        at(10),
    );
    assert_eq!(brief(&out), ["raised panic:2"]);
    let Action::Alarm(change) = &out[0] else {
        panic!()
    };
    assert!(change.alarm().test);
    // Another building is live.
    let out = run(
        &mut e,
        &[ev(3, "panic.alarm", "btn", "main/B/1", 20, json!({}))],
    );
    assert_eq!(
        out,
        [
            "updated panic:2",
            "forward police 3",
            "command door.lock all"
        ]
    );
    // After expiry building A is live again.
    e.on_time(at(601));
    assert_eq!(e.maintenance().count(), 0);
    let out = run(
        &mut e,
        &[ev(4, "panic.alarm", "btn", "main/A/1", 700, json!({}))],
    );
    assert_eq!(
        out,
        [
            "updated panic:2",
            "forward police 4",
            "command door.lock all"
        ]
    );
}

#[test]
fn a_drill_runs_doors_and_broadcast_but_calls_no_police() {
    let mut e = Engine::new(set(LIFECYCLE));
    run(
        &mut e,
        &[op(
            1,
            "drill.set",
            0,
            json!({"building": "A", "until": at(3_600), "by": "principal"}),
        )],
    );
    let out = e.on_event(
        2,
        &ev(2, "panic.alarm", "btn", "main/A/1", 10, json!({})),
        at(10),
    );
    assert_eq!(brief(&out), ["raised panic:2", "command door.lock all"]);
    let Action::Alarm(change) = &out[0] else {
        panic!()
    };
    assert!(change.alarm().test);
    run(
        &mut e,
        &[op(
            3,
            "drill.clear",
            20,
            json!({"building": "A", "by": "principal"}),
        )],
    );
    assert_eq!(e.drills().count(), 0);
}

#[test]
fn operators_disable_and_enable_rules_through_events() {
    let mut e = Engine::new(set(LIFECYCLE));
    run(
        &mut e,
        &[op(
            1,
            "rule.disable",
            0,
            json!({"rule": "panic", "by": "admin"}),
        )],
    );
    assert!(!e.is_enabled("panic"));
    assert!(
        run(
            &mut e,
            &[ev(2, "panic.alarm", "btn", "main/A/1", 10, json!({}))]
        )
        .is_empty()
    );
    run(
        &mut e,
        &[op(
            3,
            "rule.enable",
            20,
            json!({"rule": "panic", "by": "admin"}),
        )],
    );
    assert!(
        !run(
            &mut e,
            &[ev(4, "panic.alarm", "btn", "main/A/1", 30, json!({}))]
        )
        .is_empty()
    );
    assert!(!e.set_enabled("no_such_rule", false));
}

#[test]
fn reload_keeps_the_state_of_rules_whose_id_stays_and_drops_the_rest() {
    let mut e = Engine::new(set(&format!("{CONFIRM}\n{OFFLINE}")));
    run(
        &mut e,
        &[
            ev(1, "fire.alarm", "panel", "main/A/1/z1/d1", 0, json!({})),
            ev(2, "device.offline", "cam", "main/A", 0, json!({})),
        ],
    );
    // The fire rule stays (its actions change), the offline rule goes.
    e.reload(set(&CONFIRM.replace("door.unlock", "door.release")));
    assert_eq!(
        e.next_deadline(),
        None,
        "the removed rule's timer went with it"
    );
    let out = run(
        &mut e,
        &[ev(
            3,
            "fire.alarm",
            "panel",
            "main/A/1/z1/d2",
            10,
            json!({}),
        )],
    );
    assert_eq!(out, ["command door.release building:A", "raised fire:3"]);
}

#[test]
fn scoped_rules_see_only_events_in_their_scope_whatever_the_index_skips() {
    let mut e = Engine::new(set(r#"
[[rule]]
id = "in_a"
trigger = { kinds = ["door.forced"], scopes = ["building:A"] }
[[rule.actions]]
type = "alarm"
severity = "minor"
[[rule]]
id = "in_b_zone_or_dev"
trigger = { kinds = ["door.*"], scopes = ["zone:B/1/z1", "device:d9"] }
[[rule.actions]]
type = "alarm"
severity = "minor"
[[rule]]
id = "campus"
trigger = { kinds = ["door.forced"], scopes = ["campus:main"] }
[[rule.actions]]
type = "alarm"
severity = "minor"
"#));
    let f = |seq, d: &str, l: &str| ev(seq, "door.forced", d, l, 0, json!({}));
    let out = run(
        &mut e,
        &[
            f(1, "d1", "main/A/1/z1"),
            f(2, "d2", "main/B/1/z1"),
            f(3, "d9", "other"),
            f(4, "d3", "main/B/2/z1"),
        ],
    );
    assert_eq!(
        out,
        [
            "raised in_a:1",
            "raised campus:1",
            "raised in_b_zone_or_dev:2",
            "raised campus:2",
            "raised in_b_zone_or_dev:3",
            "raised campus:4"
        ]
    );
}

#[test]
fn events_stamped_at_the_ends_of_time_do_not_panic_the_timers() {
    let rules = set(&format!("{OFFLINE}\n{LIFECYCLE}"));
    for t in [
        chrono::DateTime::<chrono::Utc>::MAX_UTC,
        chrono::DateTime::<chrono::Utc>::MIN_UTC,
    ] {
        let mut e = Engine::new(rules.clone());
        for (seq, kind) in [(1, "device.offline"), (2, "panic.alarm")] {
            let mut x = ev(seq, kind, "d", "main/A/1", 0, json!({}));
            x.received_at = t;
            e.on_event(seq, &x, t);
        }
        assert!(e.next_deadline().is_some());
        e.on_time(t);
        assert!(e.alarms().any(|a| a.rule == "panic"));
    }
}
