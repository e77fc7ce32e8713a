//! The zkteco_push iclock server against the simulated PUSH controller (and the published
//! protocol examples in tests/data), on 127.0.0.1:0, with the SDK's in-memory host.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceId, DriverConfig, FieldPath, Location,
    Target,
};
use campusgw_zkteco::ZktecoConfig;
use campusgw_zkteco::sim::{ControllerSim, Misbehaviour, SimConfig};

const WAIT: Duration = Duration::from_secs(30);
const SN: &str = "CGXK201760001";

fn config(deadline: &str) -> ZktecoConfig {
    config_with(deadline, "")
}

fn config_with(deadline: &str, extra: &str) -> ZktecoConfig {
    let text = format!(
        r#"listen = "127.0.0.1:0"
        request_delay = "1s"
        command_deadline = "{deadline}"
        max_body_bytes = 4096
        {extra}
        [[controllers]]
        sn = "{SN}"
        device = "zk_gate"
        [[controllers.doors]]
        n = 1
        device = "gate_1"
        location = {{ campus = "main", building = "gate", point = "t1" }}
        boundary = "campus"
        [[controllers.doors]]
        n = 2
        device = "gate_2"
        boundary = "campus"
        direction = "out"
        "#
    );
    let c: ZktecoConfig = toml::from_str(&text).unwrap();
    assert!(c.validate(&FieldPath::root()).is_empty());
    c
}

async fn server(deadline: &str) -> (TestHost, SocketAddr) {
    server_with(config(deadline)).await
}

async fn server_with(cfg: ZktecoConfig) -> (TestHost, SocketAddr) {
    let host = TestHost::new("zk_push", "zkteco_push");
    let bcx = BuildContext {
        device: DeviceId::new("zk_push").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&bcx).unwrap();
    let mut bound = driver.local_addr();
    tokio::spawn(campusgw_sdk::Driver::run(driver, host.context()));
    let addr = tokio::time::timeout(WAIT, bound.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    (host, addr)
}

async fn controller(addr: SocketAddr) -> ControllerSim {
    let sim = ControllerSim::start(SimConfig::new(format!("http://{addr}"), SN).doors(2))
        .await
        .unwrap();
    assert!(sim.wait_registered(WAIT).await, "handshake answered");
    sim
}

fn door_cmd(kind: &str, door: &str, args: serde_json::Value) -> Command {
    Command::new(
        CommandKind::new(kind).unwrap(),
        Target::Device(DeviceId::new(door).unwrap()),
        args,
        "test",
    )
}

#[tokio::test]
async fn the_handshake_hands_out_a_one_second_request_delay_and_swipes_are_journaled_before_ok() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    assert_eq!(sim.request_delay(), Duration::from_secs(1));
    assert_eq!(sim.access(1, 0, "S1001", 0).await, 200);
    // OK came back, so the event is already in the journal: no waiting needed.
    let evs = host.events();
    let e = evs
        .iter()
        .find(|e| e.kind.as_str() == "access.granted")
        .unwrap();
    assert_eq!(e.source.device.as_str(), "gate_1");
    assert_eq!(e.location.building.as_deref(), Some("gate"));
    assert_eq!(e.payload["person_id"], "S1001");
    assert_eq!(e.payload["direction"], "in");
    assert_eq!(e.payload["boundary"], "campus");
    // Door 2 is a one-way exit: its direction is configured, whatever the reader says.
    assert_eq!(sim.access(2, 0, "S1001", 0).await, 200);
    let e = host
        .events()
        .into_iter()
        .rfind(|e| e.kind.as_str() == "access.granted")
        .unwrap();
    assert_eq!(e.payload["direction"], "out");
    for (code, kind) in [
        (23, "access.denied"),
        (102, "door.forced"),
        (28, "door.held_open"),
        (100, "device.tamper"),
    ] {
        assert_eq!(sim.access(1, code, "", 0).await, 200);
        assert!(
            host.events().iter().any(|e| e.kind.as_str() == kind),
            "{kind}"
        );
    }
    // rtstate: door 1 opens, then closes.
    assert_eq!(sim.rtstate("01", "0000").await, 200);
    assert_eq!(sim.rtstate("02", "0000").await, 200);
    assert_eq!(sim.rtstate("01", "0000").await, 200);
    let kinds: Vec<String> = host
        .events()
        .iter()
        .map(|e| e.kind.to_string())
        .filter(|k| k == "door.opened" || k == "door.closed")
        .collect();
    assert_eq!(kinds, ["door.opened", "door.closed"]);
    host.shutdown();
}

#[tokio::test]
async fn door_commands_travel_the_getrequest_queue_and_succeed_only_on_return_zero() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    let r = host
        .command(
            door_cmd("door.lock", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert_eq!(sim.door_state(1).as_deref(), Some("locked"));
    assert_eq!(sim.door_state(2).as_deref(), Some("normal"));
    // Egress: the remote lock is lifted first, then the door is held open.
    let r = host
        .command(
            door_cmd("door.unlock", "gate_1", serde_json::json!({"egress": true})),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert_eq!(sim.door_state(1).as_deref(), Some("normal_open"));
    let r = host
        .command(
            door_cmd("door.release", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert_eq!(sim.door_state(1).as_deref(), Some("normal"));
    // The controller itself: every door at once (door 00).
    let r = host
        .command(
            door_cmd("door.lock", "zk_gate", serde_json::Value::Null),
            "zk_gate",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert_eq!(sim.door_states(), ["locked", "locked"]);
    let r = host
        .command(
            door_cmd("relay.set", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Unsupported);
    // A negative Return is a failure, and nothing changed on the door.
    sim.misbehave(Misbehaviour {
        fail_return: Some(-1002),
        ..Misbehaviour::default()
    });
    let r = host
        .command(
            door_cmd("door.release", "gate_2", serde_json::Value::Null),
            "gate_2",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    assert!(r.detail.contains("-1002"), "{}", r.detail);
    assert_eq!(sim.door_state(2).as_deref(), Some("locked"));
    host.shutdown();
}

#[tokio::test]
async fn a_controller_that_disconnects_mid_command_or_goes_silent_reports_failed() {
    let (host, addr) = server("3s").await;
    let sim = controller(addr).await;
    sim.misbehave(Misbehaviour {
        drop_mid_command: true,
        ..Misbehaviour::default()
    });
    let r = host
        .command(
            door_cmd("door.lock", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    assert!(r.detail.contains("never answered"), "{}", r.detail);
    assert_eq!(
        sim.door_state(1).as_deref(),
        Some("normal"),
        "nothing was executed"
    );
    sim.misbehave(Misbehaviour {
        silent: true,
        ..Misbehaviour::default()
    });
    let r = host
        .command(
            door_cmd("door.lock", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    assert!(r.detail.contains("did not poll"), "{}", r.detail);
    // Back to normal: commands work again on the same server.
    sim.misbehave(Misbehaviour::default());
    let r = host
        .command(
            door_cmd("door.lock", "gate_1", serde_json::Value::Null),
            "gate_1",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    host.shutdown();
}

#[tokio::test]
async fn unknown_serials_garbage_and_oversized_bodies_are_refused_and_the_server_survives() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    let line = b"time=2026-12-03 08:00:00\tpin=1\teventaddr=1\tevent=0\n".to_vec();
    let (status, _) = sim
        .post_as("EVIL0001", "cdata", "rtlog", line.clone())
        .await;
    assert_eq!(status, 403);
    let (status, body) = sim.post_as("EVIL0001", "getrequest", "", Vec::new()).await;
    assert_eq!(status, 403, "{body}");
    assert!(!body.contains("C:"), "no commands for an unknown serial");
    let (status, _) = sim.post_as("a%20b", "cdata", "rtlog", line).await;
    assert_eq!(status, 403);
    let unknown: Vec<_> = host
        .events()
        .into_iter()
        .filter(|e| e.kind.as_str() == "device.unknown")
        .collect();
    assert_eq!(unknown.len(), 2, "one per serial, rate-limited");
    assert_eq!(unknown[0].payload["serial"], "EVIL0001");
    assert_eq!(unknown[0].class.as_str(), "security");

    assert_eq!(sim.post_raw("cdata", "rtlog", vec![0xff; 100]).await, 400);
    assert_eq!(
        sim.post_raw("cdata", "rtlog", b"no fields here\n".to_vec())
            .await,
        400
    );
    assert_eq!(sim.post_raw("cdata", "rtlog", vec![b'a'; 5000]).await, 413);
    assert_eq!(
        sim.post_raw("devicecmd", "", b"ID=x&Return=\n".to_vec())
            .await,
        200
    );
    assert_eq!(
        sim.access(1, 0, "S1", 0).await,
        200,
        "the server still works"
    );
    host.shutdown();
}

#[tokio::test]
async fn an_upload_the_journal_refused_is_not_acknowledged_and_arrives_once_after_recovery() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    host.fail_writes(Some("disk full"));
    assert_eq!(sim.access(1, 0, "S7", 0).await, 503);
    assert_eq!(sim.backlog(), 1);
    host.fail_writes(None);
    host.wait_until(WAIT, |evs| {
        evs.iter().any(|e| e.payload["person_id"] == "S7")
    })
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.backlog() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sim.backlog(), 0);
    let n = host
        .events()
        .iter()
        .filter(|e| e.payload["person_id"] == "S7")
        .count();
    assert_eq!(n, 1);
    host.shutdown();
}

#[tokio::test]
async fn a_restarted_log_counter_stores_new_events_and_a_resent_upload_is_recognised() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    assert_eq!(sim.access(1, 0, "S1", 0).await, 200);
    let first = host.events()[0].clone();
    sim.restart();
    let deadline = tokio::time::Instant::now() + WAIT;
    while sim.handshakes() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Index 1 again, a second later: a different event, stored.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(sim.access(1, 0, "S1", 0).await, 200);
    let granted: Vec<_> = host
        .events()
        .into_iter()
        .filter(|e| e.kind.as_str() == "access.granted")
        .collect();
    assert_eq!(granted.len(), 2);
    assert_eq!(
        granted[0].payload["log_index"],
        granted[1].payload["log_index"]
    );
    // The controller resends the first upload verbatim (it never saw our OK): recognised.
    // origin_ref = zk:<sn>:<YYYY-MM-DD HH:MM:SS>:...: the controller's own time.
    let origin = first.origin_ref.clone().unwrap();
    let time = &origin[format!("zk:{SN}:").len()..][..19];
    let line = format!(
        "time={time}\tpin=S1\tcardno=0\tsitecode=0\tlinkid=0\teventaddr=1\tevent=0\tinoutstatus=0\tverifytype=4\tindex=1\n"
    );
    assert_eq!(sim.post_raw("cdata", "rtlog", line.into_bytes()).await, 200);
    let granted = host
        .events()
        .into_iter()
        .filter(|e| e.kind.as_str() == "access.granted")
        .count();
    assert_eq!(granted, 2, "the retransmission is a duplicate");
    host.shutdown();
}

#[tokio::test]
async fn the_published_protocol_examples_are_understood() {
    let (host, addr) = server("10s").await;
    let sim = controller(addr).await;
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/");
    let rtlog = std::fs::read(format!("{data}rtlog_protocol_example.txt")).unwrap();
    assert_eq!(sim.post_raw("cdata", "rtlog", rtlog).await, 200);
    let e = host.wait_for_kind("access.granted", WAIT).await;
    assert_eq!(e.payload["person_id"], "1001");
    assert_eq!(e.payload["verify_mode"], "15");
    assert_eq!(e.payload["log_index"], 42);
    assert_eq!(e.source.device.as_str(), "gate_1");
    let cmd = std::fs::read_to_string(format!("{data}getrequest_protocol_example.txt")).unwrap();
    let (id, c) = campusgw_zkteco::proto::parse_command_line(cmd.trim()).unwrap();
    assert_eq!(id, 221);
    let c = campusgw_zkteco::proto::parse_control(c).unwrap();
    assert_eq!((c.op, c.door, c.target, c.value), (1, 1, 1, 5));
    let res = std::fs::read(format!("{data}devicecmd_protocol_example.txt")).unwrap();
    let (r, bad) = campusgw_zkteco::proto::parse_results(&res);
    assert_eq!((r[0].id, r[0].ret, bad), (221, 0, 0));
    host.shutdown();
}

#[tokio::test]
async fn connections_over_max_connections_are_closed_and_the_server_recovers() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, addr) = server_with(config_with("10s", "max_connections = 2")).await;
    // Two callers that connect and say nothing hold both slots.
    let idle1 = tokio::net::TcpStream::connect(addr).await.unwrap();
    let idle2 = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req =
        format!("GET /iclock/getrequest?SN={SN} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let _ = third.write_all(req.as_bytes()).await;
    let mut buf = Vec::new();
    let n = tokio::time::timeout(WAIT, third.read_to_end(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "closed without an answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
    drop((idle1, idle2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sim = controller(addr).await;
    assert_eq!(sim.access(1, 0, "S1", 0).await, 200);
    host.shutdown();
}
