//! The hikvision_isapi driver against the simulated controller on 127.0.0.1:0, with the
//! SDK's in-memory host. Every wait is on a condition with a generous deadline.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use bytes::Bytes;
use campusgw_hikvision::HikvisionConfig;
use campusgw_hikvision::sim::{IsapiSim, Misbehaviour, SimConfig, access_xml, part};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceHealth, DeviceId, Driver,
    DriverConfig, Event, FieldPath, Location, Target,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

struct Rig {
    sim: IsapiSim,
    host: TestHost,
    _dir: tempfile::TempDir,
}

async fn rig(password: &str, extra: &str) -> Rig {
    let sim = IsapiSim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{password}\n")).unwrap();
    private(&pw);
    let text = format!(
        r#"
        host = "{}"
        user = "admin"
        password_file = "{}"
        request_timeout = "2s"
        {extra}
        [[doors]]
        n = 1
        device = "door_1"
        location = {{ campus = "main", building = "A", point = "east-entrance" }}
        [[doors]]
        n = 2
        device = "door_2"
        escape_route = false
        "#,
        sim.base_url(),
        pw.display()
    );
    let cfg: HikvisionConfig = toml::from_str(&text).unwrap();
    assert!(cfg.validate(&FieldPath::root()).is_empty());
    let host = TestHost::new("acs_a", "hikvision_isapi");
    let bcx = BuildContext {
        device: DeviceId::new("acs_a").unwrap(),
        location: Location::from_path("main/A").unwrap(),
        data_dir: dir.path().to_owned(),
    };
    let driver = cfg.build(&bcx).unwrap();
    tokio::spawn(driver.run(host.context()));
    Rig {
        sim,
        host,
        _dir: dir,
    }
}

fn private(p: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

async fn connected(r: &Rig, streams: u64) {
    r.sim
        .wait_until(WAIT, |s| {
            s.streams_opened() >= streams && s.streams_connected() >= 1
        })
        .await;
}

fn door_cmd(kind: &str, args: serde_json::Value) -> Command {
    Command::new(
        CommandKind::new(kind).unwrap(),
        Target::Device(DeviceId::new("door_1").unwrap()),
        args,
        "test",
    )
}

fn of_kind<'a>(evs: &'a [Event], kind: &str) -> Vec<&'a Event> {
    evs.iter().filter(|e| e.kind.as_str() == kind).collect()
}

#[tokio::test]
async fn access_and_door_events_are_journaled_with_person_card_door_and_direction() {
    let r = rig("sim-password", "").await;
    connected(&r, 1).await;
    r.sim.access(5, 1, 1, "S1001", "0012345");
    r.sim.access(5, 0x4c, 1, "S1002", "");
    r.sim.access(5, 0x1b, 2, "", "");
    r.sim.access(5, 0x1c, 1, "", "");
    r.sim.access(5, 0x19, 1, "", "");
    r.sim.access(5, 0x1a, 1, "", "");
    r.sim.heartbeat();
    r.host.wait_until(WAIT, |evs| evs.len() >= 6).await;
    let evs = r.host.events();
    let kinds: Vec<&str> = evs.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "access.granted",
            "access.denied",
            "door.forced",
            "door.held_open",
            "door.opened",
            "door.closed"
        ]
    );
    let g = &evs[0];
    assert_eq!(g.source.device.as_str(), "door_1");
    assert_eq!(g.location.point.as_deref(), Some("east-entrance"));
    assert_eq!(g.payload["person_id"], "S1001");
    assert_eq!(g.payload["card_no"], "0012345");
    assert_eq!(g.payload["door"], 1);
    assert_eq!(g.payload["direction"], "in");
    assert_eq!(g.payload["verify_mode"], "cardOrFace");
    assert!(g.origin_ref.as_deref().unwrap().starts_with("acs:1:"));
    // door_2 has no location of its own: it takes the controller's.
    assert_eq!(evs[2].source.device.as_str(), "door_2");
    assert_eq!(evs[2].location.building.as_deref(), Some("A"));
    r.host
        .wait_for_health(WAIT, |h| *h == DeviceHealth::Online)
        .await;
}

#[tokio::test]
async fn a_wrong_password_is_a_device_fault_event_and_the_driver_keeps_retrying() {
    let r = rig("not-the-password", "").await;
    let ev = r.host.wait_for_kind("device.fault", WAIT).await;
    assert_eq!(ev.payload["reason"], "authentication_failed");
    r.host
        .wait_for_health(WAIT, |h| matches!(h, DeviceHealth::Offline(_)))
        .await;
    let before = r.sim.auth_failures();
    r.sim.wait_until(WAIT, |s| s.auth_failures() > before).await;
    // Fixed on the device: the stream comes up without a restart of the driver.
    r.sim.set_password("not-the-password");
    connected(&r, 1).await;
    assert_eq!(
        of_kind(&r.host.events(), "device.fault").len(),
        1,
        "once per change"
    );
}

#[tokio::test]
async fn door_commands_set_the_door_and_report_the_controllers_status() {
    let r = rig("sim-password", "").await;
    for (kind, want) in [
        ("door.lock", "alwaysClose"),
        ("door.hold_open", "alwaysOpen"),
        ("door.release", "resume"),
    ] {
        let res = r
            .host
            .command(door_cmd(kind, json!({})), "door_1", WAIT)
            .await;
        assert_eq!(
            res.status,
            CommandStatus::Succeeded,
            "{kind}: {}",
            res.detail
        );
        assert_eq!(r.sim.door_state(1).as_deref(), Some(want), "{kind}");
    }
    let egress = door_cmd("door.unlock", json!({"egress": true}));
    let res = r.host.command(egress, "door_1", WAIT).await;
    assert_eq!(res.status, CommandStatus::Succeeded);
    assert_eq!(r.sim.door_state(1).as_deref(), Some("alwaysOpen"));
    let other = door_cmd("broadcast.play", json!({}));
    let res = r.host.command(other, "door_1", WAIT).await;
    assert_eq!(res.status, CommandStatus::Unsupported);
    r.sim.misbehave(Misbehaviour {
        fail_status: Some(4),
        ..Misbehaviour::default()
    });
    let res = r
        .host
        .command(door_cmd("door.lock", json!({})), "door_1", WAIT)
        .await;
    assert_eq!(res.status, CommandStatus::Failed, "{}", res.detail);
    assert!(res.detail.contains("statusCode 4"), "{}", res.detail);
}

#[tokio::test]
async fn a_timed_unlock_resumes_by_itself_unless_a_later_command_overtook_it() {
    let r = rig("sim-password", "").await;
    let res = r
        .host
        .command(
            door_cmd("door.unlock", json!({"seconds": 1})),
            "door_1",
            WAIT,
        )
        .await;
    assert_eq!(res.status, CommandStatus::Succeeded);
    assert_eq!(r.sim.door_state(1).as_deref(), Some("alwaysOpen"));
    r.sim
        .wait_until(WAIT, |s| s.door_state(1).as_deref() == Some("resume"))
        .await;
    // A lockdown during a timed unlock must not be undone by the timer.
    r.host
        .command(
            door_cmd("door.unlock", json!({"seconds": 1})),
            "door_1",
            WAIT,
        )
        .await;
    let res = r
        .host
        .command(door_cmd("door.lock", json!({})), "door_1", WAIT)
        .await;
    assert_eq!(res.status, CommandStatus::Succeeded);
    // Wait past the timer: a fresh timed unlock on door 2 fires after it.
    r.host
        .command(
            Command::new(
                CommandKind::new("door.unlock").unwrap(),
                Target::Device(DeviceId::new("door_2").unwrap()),
                json!({"seconds": 2}),
                "test",
            ),
            "door_2",
            WAIT,
        )
        .await;
    r.sim
        .wait_until(WAIT, |s| s.door_state(2).as_deref() == Some("resume"))
        .await;
    assert_eq!(r.sim.door_state(1).as_deref(), Some("alwaysClose"));
}

#[tokio::test]
async fn a_controller_that_disconnects_mid_command_reports_failed_never_success() {
    let r = rig("sim-password", "").await;
    r.sim.misbehave(Misbehaviour {
        drop_mid_command: true,
        ..Misbehaviour::default()
    });
    let res = r
        .host
        .command(door_cmd("door.lock", json!({})), "door_1", WAIT)
        .await;
    assert_eq!(res.status, CommandStatus::Failed, "{}", res.detail);
    // The controller did lock: only its answer was lost. Still no false success.
    assert_eq!(r.sim.door_state(1).as_deref(), Some("alwaysClose"));
    r.sim.misbehave(Misbehaviour {
        slow_commands: Some(Duration::from_secs(5)),
        ..Misbehaviour::default()
    });
    let res = r
        .host
        .command(door_cmd("door.release", json!({})), "door_1", WAIT)
        .await;
    assert_eq!(res.status, CommandStatus::Failed, "timeout: {}", res.detail);
}

#[tokio::test]
async fn after_a_reboot_the_stream_reconnects_and_a_restarted_serial_is_a_new_event() {
    let r = rig("sim-password", "").await;
    connected(&r, 1).await;
    let first = r
        .sim
        .access_at("2026-12-02T10:00:00+08:00", 5, 1, 1, "S1", "");
    r.host.wait_until(WAIT, |e| e.len() == 1).await;
    r.sim.reboot();
    connected(&r, 2).await;
    let again = r
        .sim
        .access_at("2026-12-02T10:03:00+08:00", 5, 1, 1, "S2", "");
    assert_eq!(first, again, "the serial restarted");
    r.host.wait_until(WAIT, |e| e.len() == 2).await;
    let evs = r.host.events();
    assert_eq!(evs[1].payload["person_id"], "S2");
    assert_ne!(evs[0].origin_ref, evs[1].origin_ref);
    // The same event sent twice (a replay: same serial, same time) is still one event.
    let replay = access_xml("2026-12-02T10:03:00+08:00", 5, 1, 1, 1, "S2", "", again);
    r.sim.raw(part("application/xml", &replay));
    r.sim
        .access_at("2026-12-02T10:04:00+08:00", 5, 1, 1, "S3", "");
    r.host.wait_until(WAIT, |e| e.len() == 3).await;
    assert_eq!(r.host.events()[2].payload["person_id"], "S3");
}

#[tokio::test]
async fn garbage_bombs_and_oversized_parts_are_refused_and_the_next_event_still_arrives() {
    let r = rig("sim-password", "max_part_bytes = 4096").await;
    connected(&r, 1).await;
    r.sim.raw(part("application/xml", "<not<xml"));
    r.sim.raw(part(
        "application/xml",
        "<?xml version=\"1.0\"?><!DOCTYPE x [<!ENTITY a \"aaaaaaaaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><EventNotificationAlert><eventType>&b;</eventType></EventNotificationAlert>",
    ));
    r.sim.raw(part("application/json", "{\"eventType\": "));
    r.sim.raw(part("application/xml", &"x".repeat(10_000)));
    r.sim.raw(Bytes::from_static(
        b"--MIME_boundary\r\nno header here\r\n\r\n",
    ));
    r.sim.access(5, 1, 1, "S9", "");
    let ev = r.host.wait_for_kind("access.granted", WAIT).await;
    assert_eq!(ev.payload["person_id"], "S9");
    assert_eq!(r.host.events().len(), 1, "nothing else became an event");
    assert_eq!(r.sim.streams_opened(), 1, "resynchronised, not reconnected");
}

#[tokio::test]
async fn a_device_clock_off_by_more_than_the_limit_raises_clock_skew() {
    let sim_offset = chrono::Duration::seconds(600);
    let r = rig(
        "sim-password",
        "max_clock_skew = \"30s\"\nclock_check_interval = \"1s\"",
    )
    .await;
    r.sim.set_clock_offset(sim_offset);
    let ev = r.host.wait_for_kind("device.clock_skew", WAIT).await;
    let skew = ev.payload["skew_seconds"].as_f64().unwrap();
    assert!((590.0..610.0).contains(&skew), "{skew}");
}

#[tokio::test]
async fn a_silent_stream_is_reconnected_after_the_heartbeat_timeout() {
    let r = rig("sim-password", "heartbeat_timeout = \"1s\"").await;
    connected(&r, 1).await;
    r.sim.wait_until(WAIT, |s| s.streams_opened() >= 2).await;
    r.host
        .wait_for_health(WAIT, |h| matches!(h, DeviceHealth::Offline(_)))
        .await;
}

#[test]
fn a_password_file_others_can_read_is_refused_at_build() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg: HikvisionConfig = toml::from_str(&format!(
        "host = \"https://10.0.0.5\"\nuser = \"u\"\npassword_file = \"{}\"",
        pw.display()
    ))
    .unwrap();
    let bcx = BuildContext {
        device: DeviceId::new("acs").unwrap(),
        location: Location::default(),
        data_dir: dir.path().to_owned(),
    };
    let err = cfg.build(&bcx).unwrap_err().to_string();
    assert!(err.contains("chmod 0640"), "{err}");
}

#[tokio::test]
async fn the_stream_outlives_the_request_timeout() {
    let r = rig("sim-password", "").await; // request_timeout = "2s"
    connected(&r, 1).await;
    // Heartbeats for longer than request_timeout: the stream must stay the same one.
    let until = tokio::time::Instant::now() + Duration::from_secs(4);
    while tokio::time::Instant::now() < until {
        r.sim.heartbeat();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.sim.access(5, 1, 1, "S7", "");
    r.host.wait_for_kind("access.granted", WAIT).await;
    assert_eq!(r.sim.streams_opened(), 1, "the stream was cut and reopened");
}
