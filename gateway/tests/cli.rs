//! The `campusgw` binary: check-config exit codes and messages, journal export, healthz.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;
use std::time::Duration;

mod cli_support;
use cli_support::{campusgw, write};

fn config(data_dir: &std::path::Path) -> String {
    format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n",
        data_dir.display()
    )
}

#[test]
fn check_config_exits_zero_for_a_good_file_and_one_with_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", &config(dir.path()));
    let out = campusgw().arg("check-config").arg(&good).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad_text = config(dir.path()).replace("127.0.0.1:0", "127.0.0.1:99999")
        + "\n[[device]]\nid = \"x\"\ndriver = \"nosuch\"\n";
    let bad = write(dir.path(), "bad.toml", &bad_text);
    let out = campusgw().arg("check-config").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml has 2 problems"), "{err}");
    assert!(err.contains("console.listen (line 7)"), "{err}");
    assert!(
        err.contains("device[0].driver (line 11): unknown driver \"nosuch\""),
        "{err}"
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/example-gateway.toml");
    let out = campusgw()
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A `campusgw run` child, killed when dropped (a failed assert must not leave it running).
struct Running {
    child: std::process::Child,
    port: u16,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `campusgw run` with a gb26875 listener (on 127.0.0.1:0, so it needs no peer and
/// journals its `device.online`) and waits until `/healthz` shows that event committed.
/// The console port is picked by binding 127.0.0.1:0 and releasing it; a gateway that
/// then cannot bind it exits, and is started again on another port.
fn run_gateway(
    rt: &tokio::runtime::Runtime,
    dir: &std::path::Path,
) -> (Running, serde_json::Value) {
    let data = dir.join("data");
    for _ in 0..5 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let text = config(&data).replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
            + "\n[[device]]\nid = \"fire_listener\"\ndriver = \"gb26875\"\nlisten = \"127.0.0.1:0\"\ncentre_address = 88888\n";
        let cfg = write(dir, "gw.toml", &text);
        let child = campusgw()
            .args(["run", "--config"])
            .arg(&cfg)
            .spawn()
            .unwrap();
        let mut gw = Running { child, port };
        if let Some(body) = rt.block_on(wait_healthz(&mut gw)) {
            return (gw, body);
        }
        eprintln!("campusgw exited before serving /healthz on {port}; retrying on another port");
    }
    panic!("campusgw never served /healthz");
}

/// Polls `/healthz` until it reports the listener's `device.online` journaled; `None` if the
/// process exited first (its port was taken).
async fn wait_healthz(gw: &mut Running) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{}/healthz", gw.port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if gw.child.try_wait().unwrap().is_some() {
            return None;
        }
        if let Ok(r) = reqwest::get(&url).await {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["journal"]["last_seq"].as_u64() >= Some(1) {
                return Some(body);
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz never showed the listener's device.online journaled"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of the sample `series` (name and labels, exactly as rendered) in Prometheus
/// text, if present.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn run_serves_healthz_and_metrics_then_stops_on_sigterm_and_export_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // reqwest is built without a default TLS provider in this workspace; pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (mut gw, body) = run_gateway(&rt, dir.path());
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(body["gateway"], "school-1", "{body}");
    assert_eq!(
        body["devices"]["fire_listener"]["state"], "online",
        "{body}"
    );
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{}/metrics", gw.port))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    // The listener's device.online was committed before /healthz counted it, so the
    // journal's counters and the device gauge are there with their values.
    assert!(
        metrics.contains("# TYPE journal_events_committed_total counter"),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "journal_events_committed_total") >= Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "device_online{device=\"fire_listener\"}"),
        Some(1.0),
        "{metrics}"
    );
    // Graceful stop on SIGTERM.
    Command::new("kill")
        .arg("-TERM")
        .arg(gw.child.id().to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "campusgw did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let out = campusgw()
        .args(["journal", "export", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .all(|v| v["schema"] == campusgw_sdk::EVENT_SCHEMA_VERSION),
        "{lines:#?}"
    );
    let online: Vec<_> = lines
        .iter()
        .filter(|v| v["kind"] == "device.online" && v["source"]["device"] == "fire_listener")
        .collect();
    assert_eq!(
        online.len(),
        1,
        "export holds the listener's device.online: {lines:#?}"
    );
    assert_eq!(online[0]["seq"], 1, "{lines:#?}");
    assert_eq!(online[0]["class"], "operations", "{lines:#?}");
}

/// The reference frames of drivers/dc09/fixtures (source named in its README), by name.
fn dc09_fixture(name: &str) -> String {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../drivers/dc09/fixtures/frames.tsv"),
    )
    .unwrap();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split('\t');
            (f.next() == Some(name)).then(|| f.next().unwrap().to_owned())
        })
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

#[test]
fn decode_dc09_prints_one_json_object_for_plain_and_encrypted_frames_and_refuses_a_wrong_key() {
    let out = campusgw()
        .args(["decode", "dc09", &dc09_fixture("adm_cid_fire")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["events"][0]["kind"], "fire.alarm", "{v}");
    assert_eq!(v["events"][0]["class"], "life_safety", "{v}");

    let frame = dc09_fixture("encrypted_sia_dcs_aes128");
    let out = campusgw()
        .args(["decode", "dc09", &frame, "--key", "0123456789ABCDEF"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pad"], "ABCDEFGHIJ", "{v}");
    assert_eq!(v["events"][0]["kind"], "fire.alarm", "{v}");

    let out = campusgw()
        .args(["decode", "dc09", &frame, "--key", "FEDCBA9876543210"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).starts_with("error: "));
}

#[test]
fn check_config_accepts_the_paging_drivers_and_locates_their_problems() {
    let dir = tempfile::tempdir().unwrap();
    let devices = r#"
[[campus]]
id = "main"
name = "Main"
[[campus.building]]
id = "A"
name = "A"
[[campus.building]]
id = "B"
name = "B"

[[device]]
id = "pa"
driver = "sip_paging"
bind = "127.0.0.1:0"
[[device.zone]]
device = "pa_a"
location = "main/A"
speakers = [{ uri = "sip:spk1@127.0.0.1:5070" }]

[[device]]
id = "mc"
driver = "rtp_multicast"
[[device.zone]]
device = "mc_b"
location = "main/B"
group = "239.10.0.2:5004"
"#;
    let good = write(dir.path(), "paging.toml", &(config(dir.path()) + devices));
    let out = campusgw().arg("check-config").arg(&good).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad = write(
        dir.path(),
        "bad-paging.toml",
        &(config(dir.path()) + &devices.replace("127.0.0.1:0", "nowhere")),
    );
    let out = campusgw().arg("check-config").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("device[0].bind"), "{err}");
}

/// The lines of `out` that name all of `words`.
fn lines_with<'a>(out: &'a str, words: &[&str]) -> Vec<&'a str> {
    out.lines()
        .filter(|l| words.iter().all(|w| l.contains(w)))
        .collect()
}

#[test]
fn the_demo_shows_every_system_acting_within_its_first_minute() {
    let dir = tempfile::tempdir().unwrap();
    let out = campusgw()
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "58s",
            "--data-dir",
        ])
        .arg(dir.path().join("demo"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (what, words) in [
        (
            "Modbus fire panel contact",
            &["fire.alarm", "fire_panel_io"][..],
        ),
        ("GB/T 26875 detector", &["fire.alarm", "uitd_bldg_a"]),
        ("confirmed fire alarm", &["[critical] Confirmed fire"]),
        ("Modbus relay linkage", &["relay.set", "succeeded"]),
        ("DC-09 panic button", &["panic.alarm", "guard_room_panic"]),
        ("DC-09 intrusion", &["intrusion.alarm", "lab_intrusion"]),
        ("police ARC", &["police ARC acknowledged: ADM-CID"]),
        ("gate turnstile", &["access.granted", "gate_in"]),
        ("forced door", &["door.forced", "door_a_3"]),
        ("fire egress by ISAPI", &["door.unlock", "succeeded"]),
        ("lockdown by ISAPI", &["door.lock", "succeeded"]),
        ("egress wins over lockdown", &["door.lock", "rejected"]),
        ("evacuation broadcast", &["broadcast.started", "pa_a_1f"]),
        ("camera analytics", &["video.intrusion", "cam_a1_east"]),
        ("Modbus meter offline", &["device.offline", "power_meter"]),
        ("city fire centre", &["city fire centre confirmed upload"]),
        (
            "police video platform",
            &[
                "police video platform confirmed alarm",
                "34020000001340000001",
            ],
        ),
        ("ZKTeco door", &["access.granted", "zk_b_main"]),
        ("DL/T 645 meter", &["sensor.readings", "meter_a101"]),
        ("canteen sale", &["canteen.sale", "canteen"]),
        ("canteen decline", &["canteen.declined", "card_unknown"]),
    ] {
        assert!(
            !lines_with(&text, words).is_empty(),
            "the demo's first minute shows no {what} (a line with {words:?}):\n{text}"
        );
    }
    // The speakers did not just answer: they heard the evacuation's RTP.
    let heard: Vec<u64> = lines_with(&text, &["speaker", "RTP packets heard"])
        .iter()
        .filter_map(|l| {
            l.split(" answered, ")
                .nth(1)?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    assert_eq!(heard.len(), 2, "{text}");
    assert!(heard.iter().all(|&n| n > 0), "{heard:?}\n{text}");
}
