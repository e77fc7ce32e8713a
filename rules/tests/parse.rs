//! Rule files: every problem at once, each with its file and line; the shipped pack.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::path::PathBuf;

use campusgw_rules::{Engine, RuleEnv, RuleIssue, RuleSet, RuleSource};
use common::{brief, env, ev, pack_sources};
use serde_json::json;

fn issues(files: &[(&str, &str)], env: &RuleEnv) -> Vec<RuleIssue> {
    let sources: Vec<RuleSource> = files
        .iter()
        .map(|(f, t)| RuleSource {
            file: PathBuf::from(f),
            text: (*t).to_owned(),
        })
        .collect();
    RuleSet::parse(&sources, env).expect_err("the set should be refused")
}

const BAD: &str = r#"[[rule]]
id = "a"
trigger = { kinds = ["Fire.alarm"] }
condition = "event.payload.x >"
[[rule.actions]]
type = "forward"
uplink = "polise"

[[rule]]
id = "b"
trigger = { kinds = ["fire.alarm"] }
schedule = { during = ["school_hourz"] }
pattern = { type = "confirm", devices = 1, within = "60 parsecs" }
[[rule.actions]]
type = "command"
command = "door.unlock"
target = "house:{event.location.building}"
[[rule.actions]]
type = "alarm"
severity = "catastrophic"
title = "{event.location.room}"
"#;

#[test]
fn every_problem_of_every_rule_is_reported_with_file_and_line() {
    let found = issues(
        &[
            ("bad.toml", BAD),
            (
                "other.toml",
                "[[rule]]\nid = \"c\"\ntrigger = { kinds = [\"x.y\"] }\nactions = 3\n",
            ),
        ],
        &env(),
    );
    let lines: Vec<(String, usize, Option<&str>)> = found
        .iter()
        .map(|i| (i.file.display().to_string(), i.line, i.rule.as_deref()))
        .collect();
    let text: Vec<String> = found.iter().map(ToString::to_string).collect();
    let has = |file: &str, line: usize, needle: &str| {
        assert!(
            found.iter().any(|i| i.file == std::path::Path::new(file)
                && i.line == line
                && i.message.contains(needle)),
            "no {file}:{line} {needle:?} in {text:#?}"
        );
    };
    has("bad.toml", 3, "bad kind \"Fire.alarm\"");
    has("bad.toml", 4, "CEL");
    has("bad.toml", 5, "unknown uplink \"polise\"");
    has("bad.toml", 12, "unknown calendar \"school_hourz\"");
    has("bad.toml", 13, "devices >= 2");
    has("bad.toml", 13, "bad duration \"60 parsecs\"");
    has("bad.toml", 14, "bad command target");
    has("bad.toml", 18, "unknown severity");
    has("bad.toml", 18, "unknown location level \"room\"");
    has("other.toml", 4, "invalid type: integer");
    assert!(lines.iter().all(|(_, l, _)| *l > 0));
    assert_eq!(
        text.iter().filter(|t| t.starts_with("bad.toml:")).count(),
        9,
        "{text:#?}"
    );
}

#[test]
fn a_toml_syntax_error_names_its_line_and_other_files_are_still_checked() {
    let found = issues(
        &[
            (
                "syntax.toml",
                "[[rule]]\nid = \"a\"\ntrigger = { kinds = [\"fire.alarm\"\n",
            ),
            (
                "dup.toml",
                "[[rule]]\nid = \"x\"\ntrigger = { kinds = [\"a.b\"] }\n[[rule.actions]]\ntype = \"alarm\"\nseverity = \"info\"\n[[rule]]\nid = \"x\"\ntrigger = { kinds = [\"a.b\"] }\n[[rule.actions]]\ntype = \"alarm\"\nseverity = \"info\"\n",
            ),
        ],
        &env(),
    );
    assert!(
        found
            .iter()
            .any(|i| i.file == std::path::Path::new("syntax.toml") && i.line == 3),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|i| i.file == std::path::Path::new("dup.toml")
                && i.line == 8
                && i.message.contains("duplicate rule id")),
        "{found:#?}"
    );
}

#[test]
fn a_rule_that_would_trigger_itself_is_refused() {
    let found = issues(
        &[(
            "loop.toml",
            "[[rule]]\nid = \"l\"\ntrigger = { kinds = [\"fire.*\"] }\n[[rule.actions]]\ntype = \"emit\"\nkind = \"fire.confirmed\"\nclass = \"life_safety\"\n",
        )],
        &env(),
    );
    assert!(found[0].message.contains("loop"), "{found:#?}");
    assert_eq!(found[0].line, 4);
}

#[test]
fn the_pack_is_valid_without_a_police_uplink_and_lists_the_skipped_forwards() {
    let bare = RuleEnv::default();
    let set = RuleSet::parse(&pack_sources(), &bare).expect("the pack parses with no uplinks");
    let panic = set.rules().find(|r| r.id == "panic_lockdown").unwrap();
    assert_eq!(panic.skipped, ["forward:police"]);
    let mut e = Engine::new(set);
    let out = e.on_event(
        1,
        &ev(1, "panic.alarm", "btn", "main/A/1", 0, json!({})),
        common::at(0),
    );
    // A button with no zone in its location: no camera scope to ask. A second button (one
    // alarm per campus) with a zone gets its cameras asked.
    assert_eq!(
        brief(&out),
        ["command door.lock all", "raised panic_lockdown:1"]
    );
    let out = e.on_event(
        2,
        &ev(2, "panic.alarm", "btn2", "main/A/1/guard", 10, json!({})),
        common::at(10),
    );
    assert_eq!(
        brief(&out),
        [
            "command door.lock all",
            "command camera.snapshot zone:A/1/guard",
            "updated panic_lockdown:1"
        ]
    );
}

#[test]
fn the_pack_raises_a_critical_alarm_when_an_evacuation_broadcast_reaches_no_speaker() {
    let set = RuleSet::parse(&pack_sources(), &env()).expect("pack");
    let mut e = Engine::new(set);
    let unreachable = ev(
        1,
        "broadcast.unreachable",
        "pa_a_1f",
        "main/A/1",
        0,
        json!({"message": "evacuation", "speakers": 2}),
    );
    let out = e.on_event(1, &unreachable, unreachable.received_at);
    assert_eq!(brief(&out), ["raised broadcast_unreachable:1"]);
}

#[test]
fn the_pack_raises_an_alarm_while_an_uplink_cannot_deliver_and_resolves_it_when_it_can() {
    let set = RuleSet::parse(&pack_sources(), &env()).expect("pack");
    let mut e = Engine::new(set);
    let down = ev(
        1,
        "uplink.down",
        "gw",
        "main",
        0,
        json!({"uplink": "police", "reason": "timeout", "detail": "no receiver answered"}),
    );
    assert_eq!(
        brief(&e.on_event(1, &down, down.received_at)),
        ["raised uplink_down:1"]
    );
    let up = ev(
        2,
        "uplink.up",
        "gw",
        "main",
        30,
        json!({"uplink": "police", "detail": "delivering again"}),
    );
    assert_eq!(
        brief(&e.on_event(2, &up, up.received_at)),
        ["resolved uplink_down:1"]
    );
}

#[test]
fn the_pack_raises_a_critical_alarm_while_alarms_wait_for_an_uplink_and_resolves_it_when_delivered()
{
    let set = RuleSet::parse(&pack_sources(), &env()).expect("pack");
    let mut e = Engine::new(set);
    let delayed = ev(
        1,
        "uplink.alarm_delayed",
        "gw",
        "main",
        0,
        json!({"uplink": "county", "seq": 7, "class": "life_safety", "age_seconds": 31.0, "threshold_seconds": 30.0}),
    );
    assert_eq!(
        brief(&e.on_event(1, &delayed, delayed.received_at)),
        ["raised uplink_alarm_delayed:1"]
    );
    let a = e.alarms().next().expect("open alarm");
    assert_eq!(a.severity, campusgw_rules::Severity::Critical);
    assert!(a.title.contains("county"), "{}", a.title);
    let cleared = ev(
        2,
        "uplink.alarm_delay_cleared",
        "gw",
        "main",
        40,
        json!({"uplink": "county"}),
    );
    assert_eq!(
        brief(&e.on_event(2, &cleared, cleared.received_at)),
        ["resolved uplink_alarm_delayed:1"]
    );
}

#[test]
fn the_pack_links_a_confirmed_fire_to_doors_broadcast_the_zone_cameras_and_a_critical_alarm() {
    let set = RuleSet::parse(&pack_sources(), &env()).expect("pack");
    assert!(set.rules().count() >= 9);
    let mut e = Engine::new(set);
    let first = ev(
        1,
        "fire.alarm",
        "uitd",
        "main/A/1/z1",
        0,
        json!({"component_address": "1-7"}),
    );
    let out = e.on_event(1, &first, first.received_at);
    assert_eq!(brief(&out), ["raised fire_alarm_unconfirmed:1"]);
    let second = ev(
        2,
        "fire.alarm",
        "uitd",
        "main/A/1/z1",
        20,
        json!({"component_address": "1-9"}),
    );
    let out = e.on_event(2, &second, second.received_at);
    assert_eq!(
        brief(&out),
        [
            "command door.unlock building:A",
            "command broadcast.play building:A",
            "command camera.snapshot zone:A/1/z1",
            "raised fire_confirmed:2",
            "notify duty",
            "updated fire_alarm_unconfirmed:1",
        ]
    );
    assert_eq!(e.retry_policy("fire_confirmed").attempts, 5);
    // The panel resets: the unconfirmed alarm clears itself, the confirmed one stays for people.
    let reset = ev(
        3,
        "fire.reset",
        "uitd",
        "main/A/1/z1",
        100,
        json!({"component_address": "1-7"}),
    );
    assert_eq!(
        brief(&e.on_event(3, &reset, reset.received_at)),
        ["resolved fire_alarm_unconfirmed:1"]
    );
    assert_eq!(
        e.alarms().map(|a| a.id.as_str()).collect::<Vec<_>>(),
        ["fire_confirmed:2"]
    );
}

#[test]
fn the_pack_raises_intrusion_only_outside_school_hours_and_device_offline_after_five_minutes() {
    let set = RuleSet::parse(&pack_sources(), &env()).expect("pack");
    let mut e = Engine::new(set);
    let day = ev(1, "intrusion.alarm", "ids", "main/A/1/z1", 0, json!({}));
    assert!(e.on_event(1, &day, day.received_at).is_empty());
    let night = ev(
        2,
        "intrusion.alarm",
        "ids",
        "main/A/1/z1",
        14 * 3_600,
        json!({}),
    );
    assert_eq!(
        brief(&e.on_event(2, &night, night.received_at)),
        [
            "command camera.snapshot zone:A/1/z1",
            "raised intrusion_after_hours:2",
            "forward police 2"
        ]
    );
    let mut e = Engine::new(e.rules().clone());
    let off = ev(3, "device.offline", "cam7", "main/B", 15 * 3_600, json!({}));
    assert!(e.on_event(3, &off, off.received_at).is_empty());
    assert_eq!(
        brief(&e.on_time(common::at(15 * 3_600 + 301))),
        ["raised device_offline:3"]
    );
    for kind in ["storage.critical", "door.forced", "door.held_open"] {
        let mut e = Engine::new(e.rules().clone());
        let x = ev(4, kind, "gw", "main/A", 16 * 3_600, json!({}));
        assert_eq!(brief(&e.on_event(4, &x, x.received_at)).len(), 1, "{kind}");
    }
}

#[test]
fn a_rule_raising_alarms_on_alarm_events_is_refused() {
    let found = issues(
        &[(
            "loop.toml",
            "[[rule]]\nid = \"l\"\ntrigger = { kinds = [\"*\"] }\n[[rule.actions]]\ntype = \"alarm\"\nseverity = \"info\"\n",
        )],
        &env(),
    );
    assert!(found[0].message.contains("alarm.raised"), "{found:#?}");
}
