//! `campusgw rules check` and `campusgw rules test`: exit codes, every problem with file and
//! line, and the dry run's JSON lines, over the shipped pack and hand-written files.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Output;

mod cli_support;
use cli_support::{campusgw, write};

fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/pack")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn rules_check_accepts_the_shipped_pack_and_notes_the_skipped_police_forward() {
    let out = campusgw()
        .args(["rules", "check"])
        .arg(pack())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("ok (13 rules in 3 files)"), "{stdout}");
    assert!(
        stdout.contains("rule \"panic_lockdown\": note: forward:police left out"),
        "{stdout}"
    );
    // With a police uplink there is nothing to note.
    let out = campusgw()
        .args(["rules", "check", "--uplink", "police"])
        .arg(pack())
        .output()
        .unwrap();
    assert!(
        !text(&out).0.contains("forward:police left out"),
        "{}",
        text(&out).0
    );
}

#[test]
fn rules_check_lists_every_problem_as_file_line_message_and_exits_one() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "a.toml",
        "[[rule]]\nid = \"a\"\ntrigger = { kinds = [\"fire.alarm\"] }\n[[rule.actions]]\ntype = \"forward\"\nuplink = \"county\"\n",
    );
    write(
        dir.path(),
        "b.toml",
        "[[rule]]\nid = \"b\"\ntrigger = { kinds = [\"fire.alarm\"] }\ncondition = \"event.kind ==\"\n[[rule.actions]]\ntype = \"alarm\"\nseverity = \"loud\"\n",
    );
    write(dir.path(), "notes.txt", "not a rule file");
    let out = campusgw()
        .args(["rules", "check"])
        .arg(dir.path())
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("has 3 problems"), "{stderr}");
    let a = dir.path().join("a.toml");
    let b = dir.path().join("b.toml");
    for needle in [
        format!("{}:4: rule \"a\": unknown uplink \"county\"", a.display()),
        format!(
            "{}:4: rule \"b\": condition does not parse as CEL",
            b.display()
        ),
        format!("{}:5: rule \"b\": unknown severity \"loud\"", b.display()),
    ] {
        assert!(stderr.contains(&needle), "no {needle:?} in {stderr}");
    }
    // The uplink named on the command line makes a.toml valid.
    let out = campusgw()
        .args(["rules", "check", "--uplink", "county"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(text(&out).1.contains("has 2 problems"), "{}", text(&out).1);
}

#[test]
fn rules_test_prints_the_linkage_of_a_confirmed_fire_as_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "fire.jsonl",
        concat!(
            "# two detectors of zone z1, 20 s apart\n",
            r#"{"kind":"fire.alarm","device":"uitd1","location":"main/A/1/z1/d1","at":"2026-12-01T02:00:00Z","seq":1}"#,
            "\n",
            r#"{"kind":"fire.alarm","device":"uitd1","location":"main/A/1/z1/d2","at":"2026-12-01T02:00:20Z","seq":2}"#,
            "\n",
        ),
    );
    let out = campusgw()
        .args(["rules", "test", "--rules"])
        .arg(pack())
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let command = lines
        .iter()
        .find(|l| l["action"] == "command" && l["kind"] == "door.unlock")
        .expect(&stdout);
    assert_eq!(
        command["target"],
        serde_json::json!({"scope": "building:A"})
    );
    assert_eq!(command["cause_seq"], 2);
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "command" && l["kind"] == "broadcast.play"),
        "{stdout}"
    );
    let raised = lines
        .iter()
        .find(|l| l["change"] == "alarm.raised" && l["alarm"]["rule"] == "fire_confirmed")
        .expect(&stdout);
    assert_eq!(raised["alarm"]["id"], "fire_confirmed:2");
    assert_eq!(raised["alarm"]["severity"], "critical");
}

#[test]
fn rules_test_at_moves_the_events_in_time_and_advance_fires_pending_timers() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "night.jsonl",
        concat!(
            r#"{"kind":"intrusion.alarm","device":"ids","location":"main/A/1/z1","at":"2026-12-01T02:00:00Z"}"#,
            "\n",
            r#"{"kind":"device.offline","device":"cam3","location":"main/B","at":"2026-12-01T02:00:01Z"}"#,
            "\n",
        ),
    );
    let run = |extra: &[&str]| {
        let out = campusgw()
            .args(["rules", "test", "--rules"])
            .arg(pack())
            .arg("--events")
            .arg(&events)
            .args(extra)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{:?}", text(&out));
        text(&out).0
    };
    // 10:00 in Shanghai on a Tuesday: school hours, no intrusion alarm; offline not yet 5 min.
    let day = run(&[]);
    assert!(day.trim().is_empty(), "{day}");
    // 23:00 in Shanghai: the intrusion raises; advancing 10 minutes raises the offline device.
    let night = run(&["--at", "2026-12-01T15:00:00Z", "--advance", "10m"]);
    assert!(
        night.contains("\"rule\":\"intrusion_after_hours\""),
        "{night}"
    );
    let offline = night
        .lines()
        .find(|l| l.contains("device_offline"))
        .expect(&night);
    assert!(
        offline.contains("\"at\":\"2026-12-01T15:05:01Z\""),
        "{offline}"
    );
}

#[test]
fn rules_test_names_the_line_of_an_unreadable_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = write(
        dir.path(),
        "bad.jsonl",
        "{\"kind\":\"fire.alarm\"}\n{\"kind\":\"Fire\"}\n",
    );
    let out = campusgw()
        .args(["rules", "test", "--rules"])
        .arg(pack())
        .arg("--events")
        .arg(&events)
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(text(&out).1.contains("bad.jsonl:2:"), "{:?}", text(&out));
}
