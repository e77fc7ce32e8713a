//! Against independent peers: `sipp` (Debian package `sip-tester`) is the answering speaker
//! (UAS) for call setup, digest auth and teardown, and the RTP we send is checked by
//! `rtp_check.py`, a receiver written with Python's standard library only. The scenarios
//! are in tests/data (see its README). Installed by scripts/test; without sipp these tests
//! fail, naming what is missing.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use campusgw_paging::SipPagingConfig;
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceId, Driver, DriverConfig, FieldPath,
    Location, Target,
};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command as Proc};

const WAIT: Duration = Duration::from_secs(60);

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(name)
}

fn free_udp_port() -> u16 {
    // sipp cannot report an ephemeral port back, so one is picked here and released; the
    // INVITE is retransmitted if sipp binds a moment after the driver's first send.
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts rtp_check.py; returns it and the port it listens on.
async fn rtp_receiver() -> (Child, BufReader<tokio::process::ChildStdout>, u16) {
    let python = std::env::var("CAMPUSGW_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = Proc::new(python)
        .arg(data("rtp_check.py"))
        .args(["--idle", "2"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs tests/rtp_check.py (scripts/test installs python3)");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let port = serde_json::from_str::<Value>(&line).unwrap()["port"]
        .as_u64()
        .unwrap();
    (child, out, u16::try_from(port).unwrap())
}

fn sipp(scenario: &str, sip_port: u16, rtp_port: u16, dir: &std::path::Path) -> Child {
    Proc::new("sipp")
        .arg("-sf")
        .arg(data("data").join(scenario))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &sip_port.to_string(),
            "-m",
            "1",
            "-nostdin",
        ])
        .args([
            "-key",
            "rtp_port",
            &rtp_port.to_string(),
            "-timeout",
            "90s",
            "-timeout_error",
        ])
        .arg("-trace_err")
        .current_dir(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed (Debian package sip-tester; scripts/test installs it)")
}

fn driver(sip_port: u16, auth: &str) -> TestHost {
    let text = format!(
        r#"
        bind = "127.0.0.1:0"
        answer_timeout = "10s"
        retry = {{ attempts = 1, backoff = "1s" }}
        [messages.short]
        priority = "manual"
        segments = ["tone:lockdown"]
        [[zone]]
        device = "zone_a"
        speakers = [{{ uri = "sip:spk@127.0.0.1:{sip_port}"{auth} }}]
        "#
    );
    let cfg: SipPagingConfig = toml::from_str(&text).unwrap();
    assert!(cfg.validate(&FieldPath::root()).is_empty());
    let host = TestHost::new("pa", "sip_paging");
    let bcx = BuildContext {
        device: DeviceId::new("pa").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    tokio::spawn(cfg.build(&bcx).unwrap().run(host.context()));
    host
}

async fn play_twice_and_check(scenario: &str, auth: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (mut py, mut py_out, rtp_port) = rtp_receiver().await;
    let sip_port = free_udp_port();
    let mut uas = sipp(scenario, sip_port, rtp_port, dir.path());
    let host = driver(sip_port, auth);
    // `short` is 6 x 450 ms + 500 ms = 3.2 s: 160 frames a cycle
    let c = Command::new(
        CommandKind::BROADCAST_PLAY,
        Target::Device(DeviceId::new("zone_a").unwrap()),
        json!({"message": "short", "repeat": 2}),
        "test",
    );
    let r = host.command(c, "zone_a", WAIT).await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    // sipp exits 0 only if every step of its scenario matched (the INVITE's checks, ACK,
    // our BYE after the second cycle, and for auth the verified credentials)
    let status = tokio::time::timeout(WAIT, uas.wait())
        .await
        .unwrap()
        .unwrap();
    let errors: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect();
    assert!(status.success(), "sipp failed: {status}; {errors:?}");
    let mut line = String::new();
    tokio::time::timeout(WAIT, py_out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let report: Value = serde_json::from_str(&line).unwrap();
    let _ = py.wait().await;
    assert_eq!(report["packets"], 320, "{report}");
    assert_eq!(report["not_rtp"], 0, "{report}");
    assert_eq!(report["payload_types"], json!({"8": 320}), "{report}");
    assert_eq!(report["ssrcs"], 1, "{report}");
    assert_eq!(report["seq_gaps"], 0, "{report}");
    assert_eq!(report["timestamp_deltas"], json!({"160": 319}), "{report}");
    assert_eq!(report["payload_sizes"], json!({"160": 320}), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_answers_our_call_and_an_independent_receiver_finds_the_rtp_well_formed() {
    play_twice_and_check("uas_rtp.xml", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_challenges_and_accepts_our_digest_credentials() {
    play_twice_and_check("uas_auth.xml", r#", user = "pa", password = "s3cret""#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_refuses_wrong_digest_credentials_and_the_speaker_is_reported_failed() {
    let dir = tempfile::tempdir().unwrap();
    let sip_port = free_udp_port();
    let mut uas = sipp("uas_auth.xml", sip_port, 9, dir.path());
    let host = driver(sip_port, r#", user = "pa", password = "wrong""#);
    let c = Command::new(
        CommandKind::BROADCAST_PLAY,
        Target::Device(DeviceId::new("zone_a").unwrap()),
        json!({"message": "short"}),
        "test",
    );
    let r = host.command(c, "zone_a", WAIT).await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    assert!(r.detail.contains("authentication failed"), "{}", r.detail);
    let status = tokio::time::timeout(WAIT, uas.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "sipp took wrong credentials");
}
