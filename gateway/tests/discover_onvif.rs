//! `campusgw discover onvif` against simulated cameras that answer WS-Discovery on the
//! multicast group, in a network namespace this test creates (as root): its own loopback
//! with a route for 224.0.0.0/4, so the probe never leaves it. The outer test sets the
//! namespace up and re-runs this test binary inside it for the inner (ignored) test; the
//! namespace is removed afterwards. Without root it skips, saying so.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::Ipv4Addr;
use std::process::Command as Proc;

use campusgw_onvif::sim::SimCamera;

const INNER: &str = "inside_the_namespace_discover_prints_a_snippet_per_answering_camera";

fn is_root() -> bool {
    Proc::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn ip(args: &[&str]) {
    let s = Proc::new("ip")
        .args(args)
        .status()
        .expect("iproute2's ip runs");
    assert!(s.success(), "ip {args:?} failed");
}

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Proc::new("ip").args(["netns", "del", &self.0]).status();
    }
}

#[test]
fn discover_onvif_finds_the_cameras_of_a_private_network_namespace_by_multicast() {
    if !is_root() {
        eprintln!(
            "SKIPPED: creating a network namespace needs root (scripts/test runs as root in CI)"
        );
        return;
    }
    let ns = Netns(format!("cgw-discover-{}", std::process::id()));
    ip(&["netns", "add", &ns.0]);
    ip(&["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]);
    ip(&[
        "netns",
        "exec",
        &ns.0,
        "ip",
        "route",
        "add",
        "224.0.0.0/4",
        "dev",
        "lo",
        // The source address a LAN interface's route has, so the CLI can pick it.
        "src",
        "127.0.0.1",
    ]);
    let out = Proc::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            INNER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "the inner test failed:\n{text}");
    assert!(
        text.contains("1 passed"),
        "the inner test did not run:\n{text}"
    );
}

fn discover() -> (i32, String, String) {
    let out = Proc::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["discover", "onvif", "--timeout", "2s"])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
#[ignore = "run inside the namespace by the test above"]
fn inside_the_namespace_discover_prints_a_snippet_per_answering_camera() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Nobody answers yet: exit 1 and say so.
    let (code, stdout, stderr) = discover();
    assert_eq!(code, 1, "stdout {stdout}\nstderr {stderr}");
    assert!(
        stderr.contains("no ONVIF camera answered on 127.0.0.1"),
        "{stderr}"
    );
    assert!(stdout.is_empty(), "{stdout}");

    let (gate, hall) = rt.block_on(async {
        let gate = SimCamera::start(None).await.unwrap();
        let hall = SimCamera::start(None).await.unwrap();
        gate.multicast_discovery_responder("Gate North", Ipv4Addr::LOCALHOST)
            .unwrap();
        hall.multicast_discovery_responder("Hall", Ipv4Addr::LOCALHOST)
            .unwrap();
        (gate, hall)
    });
    // The CLI picks the interface itself (the namespace routes multicast through lo).
    let (code, stdout, stderr) = discover();
    assert_eq!(code, 0, "stdout {stdout}\nstderr {stderr}");
    assert_eq!(
        stdout.matches("[[device.camera]]").count(),
        2,
        "one entry per camera:\n{stdout}"
    );
    for (cam, id) in [(&gate, "cam_gate_north"), (&hall, "cam_hall")] {
        assert!(
            stdout.contains(&format!("xaddr = \"{}\"", cam.xaddr())),
            "{stdout}"
        );
        assert!(stdout.contains(&format!("device = \"{id}\"")), "{stdout}");
    }
    assert!(stdout.contains("# Gate North, SIM-1 at "), "{stdout}");
    assert!(
        stderr.contains("2 camera(s) answered on 127.0.0.1"),
        "{stderr}"
    );
    drop((gate, hall));
}
