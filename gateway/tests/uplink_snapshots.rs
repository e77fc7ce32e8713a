//! Issue 16: an MQTT uplink with `snapshots = "image"` sends the camera's JPEG inside the
//! `video.snapshot` event, through a real mosquitto, byte-identical (SHA-256 checked at the
//! subscriber); an image over `snapshot_max_bytes` goes as the reference with the reason;
//! the default sends the reference only.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use campusgw::console::snapshots::MediaDirs;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use sha2::{Digest, Sha256};
use uplink_support::{Broker, Rig, Subscriber, Tls, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A JPEG-framed body of `n` bytes with content that does not compress.
fn jpeg(n: usize, seed: u8) -> Vec<u8> {
    let mut b = vec![0xFF, 0xD8, 0xFF, 0xE0];
    let mut x = u32::from(seed) | 1;
    while b.len() < n - 2 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        b.push((x & 0xFF) as u8);
    }
    b.extend([0xFF, 0xD9]);
    b
}

/// Stores `body` as a camera would and journals its `video.snapshot`.
async fn snapshot(rig: &Rig, dir: &std::path::Path, name: &str, body: &[u8]) -> u64 {
    std::fs::write(dir.join(name), body).unwrap();
    let e = Event::stamp(
        NewEvent::new(Kind::from_static("video.snapshot"), Class::Operations).payload(
            serde_json::json!({
                "camera": "cam_gate", "file": name, "sha256": hex(body), "size": body.len(),
                "taken_at": "2026-12-03T10:00:00.000Z", "command_id": "c1"
            }),
        ),
        &DeviceId::new("cam_gate").unwrap(),
        "onvif",
        &Location::default(),
    );
    rig.journal.append(vec![e]).await.unwrap()[0].seq
}

fn payloads(sub: &Subscriber) -> Vec<serde_json::Value> {
    sub.seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic.ends_with("/video.snapshot"))
        .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
        .collect()
}

async fn run(extra: &str) -> (Vec<serde_json::Value>, Vec<Vec<u8>>) {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/#").await;
    let mut rig = Rig::open();
    let dir = rig.dir.path().join("snapshots");
    std::fs::create_dir_all(&dir).unwrap();
    let (mut cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\nheartbeat = \"200ms\"\n{extra}",
        broker.plain_url()
    ));
    let mut dirs = MediaDirs::new();
    dirs.insert(DeviceId::new("cam_gate").unwrap(), dir.clone());
    cfg.snapshots.dirs = Arc::new(dirs);
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let small = jpeg(300_000, 7);
    let big = jpeg(450_000, 9);
    snapshot(&rig, &dir, "cam_gate-1-small.jpg", &small).await;
    snapshot(&rig, &dir, "cam_gate-2-big.jpg", &big).await;
    wait_for("both snapshot events at the subscriber", LIMIT, || {
        payloads(&sub).len() >= 2
    })
    .await;
    let got = payloads(&sub);
    rig.stop().await;
    (got, vec![small, big])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_image_the_jpeg_arrives_byte_identical_and_an_oversized_one_as_a_reference() {
    let (got, bodies) = run("snapshots = \"image\"\nsnapshot_max_bytes = 400_000\n").await;
    let small = got
        .iter()
        .find(|e| e["payload"]["file"] == "cam_gate-1-small.jpg")
        .expect("the small snapshot");
    let image = &small["payload"]["image"];
    assert_eq!(image["content_type"], "image/jpeg");
    assert_eq!(image["encoding"], "base64");
    let data = base64::engine::general_purpose::STANDARD
        .decode(image["data"].as_str().unwrap())
        .unwrap();
    assert_eq!(hex(&data), hex(&bodies[0]), "hash of what arrived");
    assert_eq!(data, bodies[0]);
    assert_eq!(image["sha256"], small["payload"]["sha256"]);
    assert_eq!(image["size"], bodies[0].len() as u64);

    let big = got
        .iter()
        .find(|e| e["payload"]["file"] == "cam_gate-2-big.jpg")
        .expect("the big snapshot");
    assert!(big["payload"].get("image").is_none(), "over the cap");
    assert!(
        big["payload"]["image_omitted"]
            .as_str()
            .unwrap()
            .contains("snapshot_max_bytes"),
        "{}",
        big["payload"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_only_the_reference_travels() {
    let (got, bodies) = run("").await;
    assert_eq!(got.len(), 2);
    for e in &got {
        assert!(e["payload"].get("image").is_none(), "{}", e["payload"]);
        assert!(e["payload"].get("image_omitted").is_none());
        assert!(e["payload"]["file"].as_str().unwrap().ends_with(".jpg"));
    }
    assert!(
        got.iter()
            .any(|e| e["payload"]["sha256"] == hex(&bodies[0]))
    );
}
