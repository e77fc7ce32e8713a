//! The onvif driver against simulated cameras on 127.0.0.1:0, with the SDK's in-memory
//! host. Every wait is on a condition with a generous deadline, never a bare sleep.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use campusgw_onvif::sim::{
    JpegMode, Misbehaviour, SimCamera, TOPIC_FIELD, TOPIC_MOTION, TOPIC_TAMPER,
};
use campusgw_onvif::{OnvifConfig, StatusBoard};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Class, Command, CommandKind, CommandStatus, DeviceHealth, DeviceId, Driver,
    DriverConfig, Event, FieldPath, Location, Target,
};
use chrono::TimeDelta;
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(30);
const USER: &str = "campusgw";
const PASSWORD: &str = "s3cret-Pa55";

struct Rig {
    host: TestHost,
    board: Arc<StatusBoard>,
    dir: tempfile::TempDir,
}

impl Rig {
    fn snapshots(&self) -> PathBuf {
        self.dir.path().join("snapshots")
    }
}

/// Cameras as (device id, sim); `extra` goes at the top of the driver table.
async fn start(cams: &[(&str, &SimCamera)], extra: &str) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    let mut text = format!("request_timeout = \"2s\"\npull_timeout = \"1s\"\n{extra}\n");
    if !extra.contains("subscription_lifetime") {
        text.insert_str(0, "subscription_lifetime = \"10s\"\n");
    }
    for (id, sim) in cams {
        text.push_str(&format!(
            "[[camera]]\ndevice = \"{id}\"\nlocation = \"main/A/1/{id}\"\nxaddr = \"{}\"\nuser = \"{USER}\"\npassword_file = \"{}\"\n",
            sim.xaddr(),
            pw.display()
        ));
    }
    let cfg: OnvifConfig = toml::from_str(&text).unwrap();
    assert_eq!(cfg.validate(&FieldPath::root()), vec![]);
    let bcx = BuildContext {
        device: DeviceId::new("cameras").unwrap(),
        location: Location::default(),
        data_dir: dir.path().to_owned(),
    };
    let driver = cfg.build(&bcx).unwrap();
    let board = driver.status();
    let host = TestHost::new("cameras", "onvif");
    tokio::spawn(driver.run(host.context()));
    Rig { host, board, dir }
}

async fn auth_sim() -> SimCamera {
    SimCamera::start(Some((USER, PASSWORD))).await.unwrap()
}

fn of_kind<'a>(evs: &'a [Event], kind: &str) -> Vec<&'a Event> {
    evs.iter().filter(|e| e.kind.as_str() == kind).collect()
}

/// Waits until the camera has a live subscription (its Initialized states were pulled).
async fn subscribed(rig: &Rig, sim: &SimCamera, camera: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let connected = rig
            .board
            .camera(camera)
            .is_some_and(|s| s.connected && s.subscriptions >= n);
        if connected && sim.live_subscriptions() == 1 && sim.counters().created >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{camera} not subscribed: {:?}",
            rig.board.camera(camera)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn camera_analytics_become_video_events_with_the_cameras_location() {
    let sim = auth_sim().await;
    let rig = start(&[("cam_gate", &sim)], "").await;
    subscribed(&rig, &sim, "cam_gate", 1).await;
    sim.set_property(TOPIC_MOTION, "IsMotion", true);
    sim.cross_line();
    sim.set_property(TOPIC_FIELD, "IsInside", true);
    sim.set_property(TOPIC_TAMPER, "IsTamper", true);
    rig.host.wait_for_kind("video.tamper", WAIT).await;
    rig.host
        .wait_until(WAIT, |e| of_kind(e, "video.intrusion").len() == 2)
        .await;
    let evs = rig.host.events();
    let motion = of_kind(&evs, "video.motion");
    assert_eq!(motion.len(), 1);
    assert_eq!(motion[0].class, Class::Operations);
    assert_eq!(motion[0].source.device.as_str(), "cam_gate");
    assert_eq!(motion[0].location.to_string(), "main/A/1/cam_gate");
    assert!(
        motion[0].occurred_at.is_some(),
        "the camera's UtcTime is kept"
    );
    for e in of_kind(&evs, "video.intrusion")
        .into_iter()
        .chain(of_kind(&evs, "video.tamper"))
    {
        assert_eq!(e.class, Class::Security, "{e:?}");
        assert_eq!(e.location.to_string(), "main/A/1/cam_gate");
    }
    // Initialized states at subscription time were state only.
    assert!(evs.iter().all(|e| e.payload.get("initial").is_none()));
}

#[tokio::test]
async fn a_redelivered_notification_is_a_duplicate_and_not_a_second_event() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    sim.cross_line();
    rig.host.wait_for_kind("video.intrusion", WAIT).await;
    sim.resend_last();
    // A later, different event proves the re-delivery was pulled before it.
    sim.set_property(TOPIC_MOTION, "IsMotion", true);
    rig.host.wait_for_kind("video.motion", WAIT).await;
    assert_eq!(of_kind(&rig.host.events(), "video.intrusion").len(), 1);
}

#[tokio::test]
async fn a_camera_that_reboots_mid_subscription_is_resubscribed_and_the_event_after_the_reboot_is_not_missed()
 {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    sim.set_property(TOPIC_MOTION, "IsMotion", true);
    rig.host.wait_for_kind("video.motion", WAIT).await;

    sim.reboot();
    // Tampered while the driver has no subscription: only the camera's state knows it.
    sim.set_property(TOPIC_TAMPER, "IsTamper", true);
    let tamper = rig.host.wait_for_kind("video.tamper", WAIT).await;
    assert_eq!(
        tamper.payload["initial"],
        serde_json::json!(true),
        "{tamper:?}"
    );
    assert!(
        sim.counters().created >= 2,
        "re-created: {:?}",
        sim.counters()
    );
    subscribed(&rig, &sim, "cam1", 2).await;
    // And a change after the new subscription is delivered as usual.
    sim.set_property(TOPIC_FIELD, "IsInside", true);
    rig.host.wait_for_kind("video.intrusion", WAIT).await;
    let evs = rig.host.events();
    assert_eq!(
        of_kind(&evs, "video.motion").len(),
        1,
        "motion still on is not a new event"
    );
    assert_eq!(of_kind(&evs, "video.tamper").len(), 1);
}

#[tokio::test]
async fn a_subscription_is_renewed_before_it_ends_and_unsubscribed_at_shutdown() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "subscription_lifetime = \"4s\"").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.counters().renewed < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            sim.counters()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Renewed in time: the first subscription never lapsed and was never re-created.
    assert_eq!(sim.counters().created, 1, "{:?}", sim.counters());
    rig.host.shutdown();
    while sim.counters().unsubscribed < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            sim.counters()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sim.live_subscriptions(), 0);
}

#[tokio::test]
async fn a_camera_clock_an_hour_off_raises_clock_skew_and_the_skew_dates_its_tokens() {
    let sim = auth_sim().await;
    sim.set_clock_offset(TimeDelta::hours(1));
    let rig = start(&[("cam1", &sim)], "clock_skew_limit = \"30s\"").await;
    let e = rig.host.wait_for_kind("device.clock_skew", WAIT).await;
    let skew = e.payload["skew_seconds"].as_i64().unwrap();
    assert!((3590..=3610).contains(&skew), "{skew}");
    // The simulator refuses tokens more than 10 s off its clock: these calls passed.
    let streams = rig.host.wait_for_kind("video.streams", WAIT).await;
    assert_eq!(streams.payload["streams"].as_array().unwrap().len(), 2);
    let uri = streams.payload["streams"][0]["uri"].as_str().unwrap();
    assert!(uri.starts_with("rtsp://127.0.0.1/Streaming/main"), "{uri}");
    subscribed(&rig, &sim, "cam1", 1).await;
}

fn snapshot_command(camera: &str) -> Command {
    Command::new(
        CommandKind::CAMERA_SNAPSHOT,
        Target::Device(DeviceId::new(camera).unwrap()),
        serde_json::Value::Null,
        "test",
    )
}

fn sha256_hex(p: &Path) -> String {
    Sha256::digest(std::fs::read(p).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn a_snapshot_is_stored_and_journaled_before_the_command_succeeds() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    let r = rig
        .host
        .command(snapshot_command("cam1"), "cam1", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{r:?}");
    let e = of_kind(&rig.host.events(), "video.snapshot")
        .first()
        .copied()
        .cloned()
        .expect("journaled");
    let file = e.payload["file"].as_str().unwrap();
    assert_eq!(r.detail, file);
    let path = rig.snapshots().join(file);
    assert_eq!(e.payload["sha256"].as_str().unwrap(), sha256_hex(&path));
    assert_eq!(
        e.payload["size"].as_u64().unwrap(),
        std::fs::metadata(&path).unwrap().len()
    );
    assert_eq!(e.payload["camera"], "cam1");
    assert_eq!(e.location.to_string(), "main/A/1/cam1");
}

#[tokio::test]
async fn a_truncated_huge_foreign_or_slow_snapshot_fails_the_command_with_its_reason() {
    let sim = auth_sim().await;
    let rig = start(
        &[("cam1", &sim)],
        "[snapshots]\nmax_image_bytes = 100000\ntimeout = \"1s\"",
    )
    .await;
    subscribed(&rig, &sim, "cam1", 1).await;
    for (mode, reason) in [
        (
            JpegMode::Slow(Duration::from_secs(60)),
            "no answer within 1s",
        ),
        (JpegMode::Truncated, "truncated jpeg"),
        (
            JpegMode::Huge(5_000_000),
            "larger than the 100000-byte limit",
        ),
        (JpegMode::NotJpeg, "not a jpeg"),
    ] {
        sim.jpeg(mode);
        let r = rig
            .host
            .command(snapshot_command("cam1"), "cam1", WAIT)
            .await;
        assert_eq!(r.status, CommandStatus::Failed, "{mode:?}");
        assert!(r.detail.contains(reason), "{mode:?}: {}", r.detail);
    }
    assert!(of_kind(&rig.host.events(), "video.snapshot").is_empty());
    assert_eq!(
        std::fs::read_dir(rig.snapshots()).unwrap().count(),
        0,
        "nothing stored"
    );
}

#[tokio::test]
async fn commands_other_than_snapshot_are_unsupported_and_unknown_cameras_rejected() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    let unlock = Command::new(
        CommandKind::new("door.unlock").unwrap(),
        Target::Device(DeviceId::new("cam1").unwrap()),
        serde_json::Value::Null,
        "test",
    );
    let r = rig.host.command(unlock, "cam1", WAIT).await;
    assert_eq!(r.status, CommandStatus::Unsupported);
    let r = rig
        .host
        .command(snapshot_command("cam9"), "cam9", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Rejected);
}

fn offline_with(h: &DeviceHealth, what: &str) -> bool {
    matches!(h, DeviceHealth::Offline(r) if r.contains(what))
}

#[tokio::test]
async fn faulting_bombing_garbage_and_slow_cameras_are_offline_with_their_reasons_and_a_good_camera_keeps_working()
 {
    let good = auth_sim().await;
    let faulty = auth_sim().await;
    faulty.misbehave(Misbehaviour::Fault);
    let bomb = auth_sim().await;
    bomb.misbehave(Misbehaviour::XmlBomb);
    let garbage = auth_sim().await;
    garbage.misbehave(Misbehaviour::Garbage);
    let slow = auth_sim().await;
    slow.misbehave(Misbehaviour::Slow(Duration::from_secs(60)));
    let rig = start(
        &[
            ("good", &good),
            ("faulty", &faulty),
            ("bomb", &bomb),
            ("garbage", &garbage),
            ("slow", &slow),
        ],
        "",
    )
    .await;
    for (camera, reason) in [
        (
            "faulty",
            "soap fault s:Sender / ter:Action: simulated failure",
        ),
        ("bomb", "document type declarations are refused"),
        ("garbage", "malformed xml"),
        ("slow", "no answer within"),
    ] {
        let cam = DeviceId::new(camera).unwrap();
        let host = rig.host.clone();
        tokio::time::timeout(WAIT, async move {
            while !host
                .health_reports()
                .iter()
                .any(|(d, h)| *d == cam && offline_with(h, reason))
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{camera}: {:?}", rig.host.health_reports()));
    }
    subscribed(&rig, &good, "good", 1).await;
    good.set_property(TOPIC_MOTION, "IsMotion", true);
    let e = rig.host.wait_for_kind("video.motion", WAIT).await;
    assert_eq!(e.source.device.as_str(), "good");
    let r = rig
        .host
        .command(snapshot_command("good"), "good", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{r:?}");
}

#[tokio::test]
async fn a_probe_answered_by_the_simulated_camera_gives_its_address_and_a_config_snippet() {
    let sim = auth_sim().await;
    let responder = sim.discovery_responder("Gate Camera").await.unwrap();
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let found = campusgw_onvif::discovery::probe_with(sock, responder, Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].xaddrs, vec![sim.xaddr()]);
    assert_eq!(found[0].name().as_deref(), Some("Gate Camera"));
    let snippet = campusgw_onvif::discovery::config_snippet(&found);
    assert!(
        snippet.contains(&format!("xaddr = \"{}\"", sim.xaddr())),
        "{snippet}"
    );
    assert!(
        snippet.contains("device = \"cam_gate_camera\""),
        "{snippet}"
    );
    // The snippet, completed, is a valid driver table.
    let table = snippet.replace("[[device.camera]]", "[[camera]]");
    let cfg: OnvifConfig = toml::from_str(&table).unwrap();
    assert_eq!(cfg.validate(&FieldPath::root()), vec![]);
}

#[tokio::test]
async fn a_wrong_password_is_reported_as_the_cameras_refusal() {
    let sim = SimCamera::start(Some((USER, "another password")))
        .await
        .unwrap();
    let rig = start(&[("cam1", &sim)], "").await;
    let h = rig
        .host
        .wait_for_health(WAIT, |h| offline_with(h, "ter:NotAuthorized"))
        .await;
    assert!(offline_with(&h, "Sender not Authorized"), "{h:?}");
    assert_eq!(sim.counters().created, 0);
}

#[tokio::test]
async fn the_cameras_event_properties_say_which_analytics_it_can_report() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    let status = rig.board.camera("cam1").unwrap();
    assert_eq!(
        status.analytics_topics,
        vec![
            "VideoSource/MotionAlarm",
            "RuleEngine/CellMotionDetector/Motion",
            "RuleEngine/TamperDetector/Tamper",
            "RuleEngine/FieldDetector/ObjectsInside",
            "RuleEngine/LineDetector/Crossed",
        ]
    );
    assert_eq!(status.streams.len(), 2);
    assert!(status.snapshot_uri.unwrap().ends_with("/snapshot.jpg"));
}

#[tokio::test]
async fn events_pulled_while_the_journal_cannot_write_are_kept_until_it_can() {
    let sim = auth_sim().await;
    let rig = start(&[("cam1", &sim)], "").await;
    subscribed(&rig, &sim, "cam1", 1).await;
    rig.host.fail_writes(Some("disk full"));
    sim.cross_line();
    // Pulled from the camera (its queue drained) while the journal refuses.
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.queued() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "never pulled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    rig.host.fail_writes(None);
    let e = rig.host.wait_for_kind("video.intrusion", WAIT).await;
    assert_eq!(e.source.device.as_str(), "cam1");
}
