//! Issue 16 in the console: a fire alarm takes the zone camera's snapshot (the ONVIF
//! simulator of drivers/onvif, over real SOAP/HTTP), the alarm lists it with the camera's
//! RTSP links, the JPEG is served byte-identical to what the camera sent, and only files
//! that a journaled `video.snapshot` names are served.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::time::Duration;

use campusgw::console::auth::Role;
use campusgw_onvif::sim::SimCamera;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use console_support::Rig;
use sha2::{Digest, Sha256};

const RULES: &str = r#"
[[rule]]
id = "fire_snapshots"
description = "Fire alarm: critical alarm and the zone's snapshots"
trigger = { kinds = ["fire.alarm"] }
[[rule.actions]]
type = "alarm"
severity = "critical"
title = "Fire alarm"
[[rule.actions]]
type = "command"
command = "camera.snapshot"
target = "zone:A/1/z0"
"#;

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

async fn rig_with_camera(cam: &SimCamera) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("school.toml"), RULES).unwrap();
    let pass = dir.path().join("cam.pass");
    std::fs::write(&pass, "sim-camera-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let extra = format!(
        r#"
[rules]
dir = "{rules}"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["z0"]
[[device]]
id = "cams"
driver = "onvif"
location = "main/A/1"
[[device.camera]]
device = "cam_gate"
location = "main/A/1/z0"
xaddr = "{xaddr}"
user = "tester"
password_file = "{pass}"
"#,
        rules = rules.display(),
        xaddr = cam.xaddr(),
        pass = pass.display(),
    );
    Rig::start_in(dir, &extra).await
}

async fn get_json(rig: &Rig, token: &str, path: &str) -> (u16, serde_json::Value) {
    let r = rig
        .http
        .get(rig.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// Polls `path` until `done` holds (generous deadline: loaded CI).
async fn poll(
    rig: &Rig,
    token: &str,
    path: &str,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get_json(rig, token, path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: last answer {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the camera session, raises a fire alarm in its zone and waits until the alarm
/// lists the snapshot: (fire event seq, alarm id, the alarm's media).
async fn fire_with_snapshot(
    rig: &Rig,
    cam: &SimCamera,
    viewer: &str,
) -> (u64, String, serde_json::Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while cam.live_subscriptions() < 1 || rig.journaled("video.streams").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the camera session did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let loc = Location {
        building: Some("A".into()),
        floor: Some("1".into()),
        zone: Some("z0".into()),
        ..Location::default()
    };
    let fire = Event::stamp(
        NewEvent::new(Kind::new("fire.alarm").unwrap(), Class::LifeSafety),
        &DeviceId::new("uitd_a").unwrap(),
        "test",
        &loc,
    );
    let fire_seq = rig.append(vec![fire]).await[0];
    let alarms = poll(rig, viewer, "/api/v1/alarms", "the fire alarm", |b| {
        b["alarms"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let id = alarms["alarms"][0]["id"].as_str().unwrap().to_owned();
    let media = poll(
        rig,
        viewer,
        &format!("/api/v1/alarms/{id}/snapshots"),
        "the alarm's snapshot",
        |b| b["snapshots"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    (fire_seq, id, media)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_alarm_shows_the_zone_cameras_snapshot_and_stream_links_and_serves_the_jpeg() {
    let cam = SimCamera::start(Some(("tester", "sim-camera-password")))
        .await
        .unwrap();
    let rig = rig_with_camera(&cam).await;
    let viewer = rig.token("wall", Role::Viewer).await;
    let (fire_seq, id, media) = fire_with_snapshot(&rig, &cam, &viewer).await;
    let snap = &media["snapshots"][0];
    assert_eq!(snap["camera"], "cam_gate");
    let expected = campusgw_onvif::snapshot::tiny_jpeg();
    assert_eq!(snap["sha256"], hex(&expected));
    assert_eq!(snap["size"], expected.len() as u64);
    let streams = media["streams"].as_array().unwrap();
    assert!(
        streams
            .iter()
            .any(|s| s["camera"] == "cam_gate" && s["uri"].as_str().unwrap().starts_with("rtsp://")),
        "stream links of the camera: {media}"
    );

    // The image, as the viewer role: byte-identical, a JPEG, kept by no cache.
    let url = snap["url"].as_str().unwrap().to_owned();
    let r = rig
        .http
        .get(rig.url(&url))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "image/jpeg");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("no-store")
    );
    assert_eq!(r.bytes().await.unwrap().as_ref(), expected.as_slice());

    // Anonymous: 401. A seq that is not a video.snapshot (the fire alarm itself): 404.
    let r = rig.http.get(rig.url(&url)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let (status, body) = get_json(&rig, &viewer, &format!("/api/v1/snapshots/{fire_seq}")).await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = get_json(&rig, &viewer, "/api/v1/snapshots/..%2F..%2Fgateway.toml").await;
    assert_eq!(status, 400, "a path in place of a seq");

    // The alarm page shows the thumbnail and the live-video link.
    let page = rig
        .http
        .get(rig.url(&format!("/alarms/{id}")))
        .bearer_auth(&viewer)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
        // The template escapes '/' in attributes (minijinja's HTML escaping).
        .replace("&#x2f;", "/");
    assert!(page.contains(&format!("<img src=\"{url}\"")), "{page}");
    assert!(page.contains("rtsp://"), "{page}");

    // A file pruned from disk is gone (410), not an error.
    let file = snap["file"].as_str().unwrap();
    std::fs::remove_file(rig.dir.path().join("snapshots").join(file)).unwrap();
    let (status, body) = get_json(&rig, &viewer, &url).await;
    assert_eq!(status, 410, "{body}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_video_snapshot_event_naming_a_path_outside_the_directory_is_not_served() {
    let cam = SimCamera::start(Some(("tester", "sim-camera-password")))
        .await
        .unwrap();
    let rig = rig_with_camera(&cam).await;
    let viewer = rig.token("wall", Role::Viewer).await;
    std::fs::write(rig.dir.path().join("secret.jpg"), b"not for you").unwrap();
    let mut seqs = Vec::new();
    for file in [
        "../secret.jpg",
        "/etc/passwd",
        ".hidden.jpg",
        "../gateway.toml",
    ] {
        let e = Event::stamp(
            NewEvent::new(Kind::new("video.snapshot").unwrap(), Class::Operations).payload(
                serde_json::json!({
                    "camera": "cam_gate", "file": file, "sha256": hex(b"not for you"),
                    "size": 11, "taken_at": "2026-12-03T10:00:00.000Z", "command_id": "x"
                }),
            ),
            &DeviceId::new("cam_gate").unwrap(),
            "onvif",
            &Location::default(),
        );
        seqs.push((file, rig.append(vec![e]).await[0]));
    }
    for (file, seq) in seqs {
        let (status, body) = get_json(&rig, &viewer, &format!("/api/v1/snapshots/{seq}")).await;
        assert_eq!(status, 404, "{file}: {body}");
    }
    rig.stop().await;
}

/// A real browser (chromium via playwright-core, tests/browser/snapshot.mjs) opens the
/// alarm page and the snapshot thumbnail loads: fetched with the session cookie and decoded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser_the_alarm_page_thumbnail_loads() {
    let repo = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let script = repo.join("tests/browser/snapshot.mjs");
    assert!(
        repo.join("tests/browser/node_modules/playwright-core")
            .exists()
            && std::path::Path::new("/usr/bin/chromium").exists(),
        "needs chromium and tests/browser/node_modules: run scripts/test --setup-only"
    );
    let cam = SimCamera::start(Some(("tester", "sim-camera-password")))
        .await
        .unwrap();
    let rig = rig_with_camera(&cam).await;
    let viewer = rig.token("wall", Role::Viewer).await;
    let (_, id, _) = fire_with_snapshot(&rig, &cam, &viewer).await;
    rig.user("guard", Role::Viewer).await;
    let out = tokio::time::timeout(
        Duration::from_secs(180),
        tokio::process::Command::new("node")
            .arg(&script)
            .arg(&rig.base)
            .arg("guard")
            .arg(console_support::PASSWORD)
            .arg(&id)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the browser script stalled")
    .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "browser script failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // tiny_jpeg() is 8x8: the browser decoded the very JPEG the camera sent.
    assert!(stdout.lines().any(|l| l == "img 8x8"), "{stdout}");
    assert!(stdout.lines().any(|l| l == "done"), "{stdout}");
    rig.stop().await;
}
