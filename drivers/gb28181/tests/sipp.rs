//! Against an independent SIP stack: `sipp` (Debian package `sip-tester`) plays the GB/T
//! 28181 platform (tests/data/platform_uas.xml): it challenges our REGISTER, verifies the
//! digest with its own code (`verifyauth`), then checks the Alarm MESSAGE (content type,
//! CmdType, DeviceID, priority, method, time format) with regular expressions. Installed
//! by scripts/test; without sipp these tests fail, naming what is missing.
#![allow(missing_docs, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use campusgw_gb28181::GbId;
use campusgw_gb28181::manscdp::{Alarm, Charset};
use campusgw_gb28181::ua::{DeviceUa, UaError, UaSettings};
use tokio::process::{Child, Command};

const WAIT: Duration = Duration::from_secs(60);

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sipp(port: u16, calls: u32, dir: &std::path::Path) -> Child {
    Command::new("sipp")
        .arg("-sf")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/platform_uas.xml"))
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            &calls.to_string(),
            "-nostdin",
        ])
        .args(["-timeout", "90s", "-timeout_error", "-trace_err"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("sipp is installed (Debian package sip-tester; scripts/test installs it)")
}

fn settings(port: u16, password: &str) -> UaSettings {
    UaSettings {
        platform: ([127, 0, 0, 1], port).into(),
        platform_id: GbId::new("34020000002000000001").unwrap(),
        domain: "3402000000".into(),
        device_id: GbId::new("34020000001180000001").unwrap(),
        username: "34020000001180000001".into(),
        password: password.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        charset: Charset::Gb2312,
        // sipp may bind a moment after our first REGISTER: retransmission covers that
        answer_timeout: Duration::from_secs(10),
        catalog: vec![],
    }
}

fn errors(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| std::fs::read_to_string(e.unwrap().path()).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_challenges_verifies_our_digest_and_accepts_the_alarm() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    // call 1: REGISTER (401, then verified); call 2: the Alarm MESSAGE
    let mut peer = sipp(port, 2, dir.path());
    let ua = DeviceUa::open(settings(port, "s3cret")).await.unwrap();
    let reg = ua.register(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(reg.code, 200);
    assert!(
        reg.attempts >= 2,
        "401 first, then the authenticated REGISTER"
    );
    assert_eq!(reg.expires, Some(Duration::from_secs(3600)));
    let ok = ua
        .alarm(&Alarm {
            sn: 7,
            device: GbId::new("34020000001340000001").unwrap(),
            priority: 1,
            method: 2,
            time: "2026-12-03T09:00:00".into(),
            description: "门卫室一键报警".into(),
            alarm_type: None,
        })
        .await
        .unwrap();
    assert_eq!(ok.code, 200);
    let status = tokio::time::timeout(WAIT, peer.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "sipp failed: {status}; {:?}",
        errors(dir.path())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_refuses_a_wrong_password_and_we_report_it_as_an_auth_failure() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_udp_port();
    let mut peer = sipp(port, 1, dir.path());
    let ua = DeviceUa::open(settings(port, "wrong")).await.unwrap();
    let e = ua.register(Duration::from_secs(3600)).await.err().unwrap();
    assert!(matches!(e, UaError::AuthRejected(403, "REGISTER")), "{e}");
    let status = tokio::time::timeout(WAIT, peer.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "sipp took wrong credentials");
}
