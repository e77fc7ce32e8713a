//! The rtp_multicast driver in a network namespace this test creates (as root): its own
//! loopback with a route for 224.0.0.0/4, so multicast never touches the host's network.
//! The outer test sets the namespace up, re-runs this test binary inside it for the inner
//! (ignored) test, and removes the namespace afterwards. Without root it skips, saying so.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command as Proc;
use std::time::Duration;

use campusgw_paging::RtpMulticastConfig;
use campusgw_paging::messages::Library;
use campusgw_paging::rtp::Codec;
use campusgw_paging::sim::{MulticastListener, distinct_frames};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceId, Driver, DriverConfig, FieldPath,
    Location, Target,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const INNER: &str = "inside_the_namespace_a_multicast_zone_reaches_its_listener";

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
fn a_multicast_zone_streams_to_its_group_inside_a_private_network_namespace() {
    if !is_root() {
        eprintln!(
            "SKIPPED: creating a network namespace needs root (scripts/test runs as root in CI)"
        );
        return;
    }
    let ns = Netns(format!("cgw-paging-{}", std::process::id()));
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
    ]);
    let exe = std::env::current_exe().unwrap();
    let out = Proc::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args([
            "--exact",
            INNER,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "inner test failed:\n{stdout}\n{stderr}"
    );
    // the filter matched and the inner test really ran
    assert!(
        stdout.contains("1 passed"),
        "inner test did not run:\n{stdout}"
    );
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
#[ignore = "run inside its network namespace by a_multicast_zone_streams_to_its_group_inside_a_private_network_namespace"]
async fn inside_the_namespace_a_multicast_zone_reaches_its_listener() {
    let group = SocketAddrV4::new(Ipv4Addr::new(239, 255, 10, 1), free_udp_port());
    let listener = MulticastListener::start(group, Ipv4Addr::LOCALHOST).unwrap();
    let text = format!(
        r#"
        codec = "pcmu"
        ttl = 1
        interface = "127.0.0.1"
        [messages.short]
        priority = "manual"
        segments = ["tone:lockdown"]
        [[zone]]
        device = "group_b"
        location = {{ building = "B" }}
        group = "{group}"
        "#
    );
    let cfg: RtpMulticastConfig = toml::from_str(&text).unwrap();
    assert!(cfg.validate(&FieldPath::root()).is_empty());
    let host = TestHost::new("pa_mc", "rtp_multicast");
    let bcx = BuildContext {
        device: DeviceId::new("pa_mc").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    tokio::spawn(cfg.build(&bcx).unwrap().run(host.context()));
    let play = |message: &str, repeat: serde_json::Value| {
        Command::new(
            CommandKind::BROADCAST_PLAY,
            Target::Device(DeviceId::new("group_b").unwrap()),
            json!({"message": message, "repeat": repeat}),
            "test",
        )
    };
    let r = host.command(play("short", json!(2)), "group_b", WAIT).await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    // two cycles of 160 frames, then silence
    let rep = listener
        .wait_until(WAIT, |r| r.packets >= 320)
        .await
        .unwrap();
    assert_eq!(rep.payload_types, BTreeSet::from([0]));
    assert_eq!(
        (
            rep.seq_gaps,
            rep.timestamp_errors,
            rep.wrong_size,
            rep.bad_packets
        ),
        (0, 0, 0, 0)
    );
    host.wait_until(WAIT, |evs| {
        evs.iter()
            .any(|e| e.kind.as_str() == "broadcast.stopped" && e.payload["reason"] == "finished")
    })
    .await;
    // the bell is preempted by the evacuation on the group
    let lib = Library::load(
        &BTreeMap::new(),
        &BTreeMap::new(),
        &BTreeSet::from([Some("B".to_owned())]),
    )
    .unwrap();
    let evac = lib.program("evacuation", Some("B")).unwrap();
    let bell = lib.program("bell", Some("B")).unwrap();
    let evac_only = distinct_frames(evac, bell, Codec::Pcmu);
    let bell_only = distinct_frames(bell, evac, Codec::Pcmu);
    host.command(play("bell", json!(true)), "group_b", WAIT)
        .await;
    listener
        .wait_until(WAIT, |r| r.recent.iter().any(|p| bell_only.contains(p)))
        .await
        .unwrap();
    let r = host
        .command(play("evacuation", json!(true)), "group_b", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    listener
        .wait_until(WAIT, |r| r.recent.iter().any(|p| evac_only.contains(p)))
        .await
        .unwrap();
}
