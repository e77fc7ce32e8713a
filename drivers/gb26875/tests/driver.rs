//! The gb26875 listener against the simulated UITD, on 127.0.0.1:0, with the SDK's
//! in-memory host. Every await is bounded; waits are on conditions, not sleeps.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use campusgw_gb26875::Gb26875Config;
use campusgw_gb26875::codec::{CommandByte, ComponentAddress};
use campusgw_gb26875::sim::{Delivery, Misbehaviour, SimConfig, UitdSim};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, CommandStatus, DeviceHealth, DeviceId, Driver,
    DriverConfig, FieldPath, Location, Target,
};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(5);

fn smoke() -> ComponentAddress {
    ComponentAddress::from_parts(10, 2)
}

async fn start(extra: &str) -> (TestHost, SocketAddr) {
    let text = format!(
        r#"
        listen = "127.0.0.1:0"
        centre_address = 88888
        response_timeout = "300ms"
        retries = 1
        {extra}
        [[uitd]]
        address = 889
        device = "uitd_a"
        location = {{ building = "A" }}
        [[uitd.components]]
        address = "10-2"
        location = {{ building = "A", floor = "3", point = "smoke-10-2" }}
        "#
    );
    let cfg: Gb26875Config = toml::from_str(&text).unwrap();
    assert!(cfg.validate(&FieldPath::root()).is_empty());
    let host = TestHost::new("fire_listener", "gb26875");
    let addr = run_listener(&cfg, &host).await;
    (host, addr)
}

/// Builds the listener, runs it on `host` and returns the address it bound.
async fn run_listener(cfg: &Gb26875Config, host: &TestHost) -> SocketAddr {
    let bcx = BuildContext {
        device: DeviceId::new("fire_listener").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&bcx).unwrap();
    let mut bound = driver.local_addr();
    tokio::spawn(driver.run(host.context()));
    tokio::time::timeout(WAIT, bound.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

async fn sim(addr: SocketAddr, uitd: u64) -> UitdSim {
    sim_waiting(addr, uitd, Duration::from_secs(1)).await
}

/// A simulator waiting `confirm_timeout` for each confirm before retransmitting.
async fn sim_waiting(addr: SocketAddr, uitd: u64, confirm_timeout: Duration) -> UitdSim {
    let mut c = SimConfig::new(uitd, 88888);
    c.confirm_timeout = confirm_timeout;
    c.answer_duty_checks = true;
    tokio::time::timeout(WAIT, UitdSim::connect(addr, c))
        .await
        .unwrap()
        .unwrap()
}

fn count(host: &TestHost, kind: &str) -> usize {
    host.events()
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .count()
}

fn confirms(sim: &UitdSim, serial: u16) -> usize {
    sim.received()
        .iter()
        .filter(|f| f.serial == serial && f.command == CommandByte::Confirm)
        .count()
}

/// Waits for `cond` with a deadline, polling (the simulator's write counter has no signal).
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let poll = async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(WAIT, poll)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

#[tokio::test]
async fn fire_alarm_is_journaled_with_its_location_before_it_is_confirmed() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    let outcome = tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), "3楼东 烟感"))
        .await
        .unwrap();
    assert_eq!(outcome, Delivery::Confirmed { attempts: 1 });
    // The confirm is out, so the event must already be journaled: no waiting here.
    let events = host.events();
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert_eq!(
        (e.kind.as_str(), e.source.device.as_str()),
        ("fire.alarm", "uitd_a")
    );
    assert_eq!(e.location.point.as_deref(), Some("smoke-10-2"));
    assert_eq!(e.payload["description"], "3楼东 烟感");
    assert!(e.occurred_at.is_some() && e.origin_ref.is_some());
    host.wait_for_health(WAIT, |h| *h == DeviceHealth::Online)
        .await;
}

#[tokio::test]
async fn no_confirm_while_the_journal_refuses_and_the_retransmission_lands_once() {
    let (host, addr) = start("").await;
    let sim = Arc::new(sim_waiting(addr, 889, Duration::from_millis(500)).await);
    host.fail_writes(Some("disk full"));
    let sending = tokio::spawn({
        let sim = sim.clone();
        async move { sim.fire_alarm(smoke(), "").await }
    });
    eventually("a retransmission", || sim.writes() >= 2).await;
    assert!(
        sim.received()
            .iter()
            .all(|f| f.command != CommandByte::Confirm)
    );
    assert!(host.events().is_empty());
    host.fail_writes(None);
    let outcome = tokio::time::timeout(WAIT, sending).await.unwrap().unwrap();
    assert!(
        matches!(outcome, Delivery::Confirmed { attempts } if attempts >= 2),
        "{outcome:?}"
    );
    assert_eq!(count(&host, "fire.alarm"), 1);
}

#[tokio::test]
async fn a_retransmitted_serial_gives_one_event_and_two_confirms() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    let frame = sim.frame(Some(
        campusgw_gb26875::codec::Adu::decode(&sim_alarm_adu()).unwrap(),
    ));
    for _ in 0..2 {
        let outcome = tokio::time::timeout(WAIT, sim.upload_frame(&frame))
            .await
            .unwrap();
        assert!(outcome.is_confirmed());
    }
    assert_eq!(confirms(&sim, frame.serial), 2);
    assert_eq!(count(&host, "fire.alarm"), 1);
}

/// The vendor fire-alarm ADU from PROTOCOLS §1.3.
fn sim_alarm_adu() -> Vec<u8> {
    let mut adu = vec![
        0x02, 0x01, 0x01, 0x01, 0x28, 0x0A, 0x00, 0x02, 0x00, 0x02, 0x00,
    ];
    adu.extend([0x20; 30]);
    adu.push(0);
    adu.extend([0x02, 0x3A, 0x09, 0x1A, 0x09, 0x0C]);
    adu
}

#[tokio::test]
async fn a_bad_checksum_is_denied_and_the_connection_survives() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    assert!(
        tokio::time::timeout(WAIT, sim.heartbeat())
            .await
            .unwrap()
            .is_confirmed()
    );
    sim.set_misbehaviour(Misbehaviour {
        corrupt_checksum: true,
        ..Misbehaviour::default()
    });
    let outcome = tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), ""))
        .await
        .unwrap();
    assert_eq!(outcome, Delivery::Denied { attempts: 4 });
    assert!(host.events().is_empty());
    sim.set_misbehaviour(Misbehaviour::default());
    let outcome = tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), ""))
        .await
        .unwrap();
    assert!(outcome.is_confirmed());
    assert_eq!(count(&host, "fire.alarm"), 1);
}

#[tokio::test]
async fn split_writes_and_garbage_between_frames_still_deliver() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    sim.set_misbehaviour(Misbehaviour {
        split_writes: Some(3),
        garbage_between: true,
        ..Misbehaviour::default()
    });
    assert!(
        tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), ""))
            .await
            .unwrap()
            .is_confirmed()
    );
    assert!(
        tokio::time::timeout(WAIT, sim.fault(smoke(), ""))
            .await
            .unwrap()
            .is_confirmed()
    );
    assert!(
        tokio::time::timeout(WAIT, sim.reset(smoke()))
            .await
            .unwrap()
            .is_confirmed()
    );
    let kinds: Vec<String> = host.events().iter().map(|e| e.kind.to_string()).collect();
    assert_eq!(kinds, ["fire.alarm", "fire.fault", "fire.reset"]);
}

#[tokio::test]
async fn an_unknown_uitd_is_refused_and_disconnected() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 777).await;
    let outcome = tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), ""))
        .await
        .unwrap();
    assert!(!outcome.is_confirmed(), "{outcome:?}");
    assert!(sim.wait_closed(WAIT).await);
    assert!(host.events().is_empty());
}

#[tokio::test]
async fn an_unknown_uitd_is_attributed_to_the_listener_when_accepted() {
    let (host, addr) = start(r#"unknown_uitd = "accept""#).await;
    let sim = sim(addr, 777).await;
    assert!(
        tokio::time::timeout(WAIT, sim.fire_alarm(smoke(), ""))
            .await
            .unwrap()
            .is_confirmed()
    );
    let e = host.wait_for_kind("fire.alarm", WAIT).await;
    assert_eq!(e.source.device.as_str(), "fire_listener");
    assert_eq!(e.payload["uitd_address"], 777);
}

#[tokio::test]
async fn a_silent_uitd_is_reported_offline_and_disconnected() {
    let (host, addr) = start(r#"heartbeat_timeout = "300ms""#).await;
    let sim = sim(addr, 889).await;
    assert!(
        tokio::time::timeout(WAIT, sim.heartbeat())
            .await
            .unwrap()
            .is_confirmed()
    );
    host.wait_for_health(WAIT, |h| *h == DeviceHealth::Online)
        .await;
    host.wait_for_health(WAIT, |h| matches!(h, DeviceHealth::Offline(_)))
        .await;
    assert!(sim.wait_closed(WAIT).await);
    let reports = host.health_reports();
    assert!(
        reports
            .iter()
            .any(|(d, h)| d.as_str() == "uitd_a" && matches!(h, DeviceHealth::Offline(_)))
    );
}

fn command(kind: &str, args: serde_json::Value) -> Command {
    let device = DeviceId::new("uitd_a").unwrap();
    Command::new(
        CommandKind::new(kind).unwrap(),
        Target::Device(device),
        args,
        "operator:test",
    )
}

#[tokio::test]
async fn a_duty_check_round_trips_and_the_answer_is_journaled() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    assert!(
        tokio::time::timeout(WAIT, sim.heartbeat())
            .await
            .unwrap()
            .is_confirmed()
    );
    let result = host
        .command(
            command("fire.duty_check", json!({"minutes": 10})),
            "uitd_a",
            WAIT,
        )
        .await;
    assert_eq!(result.status, CommandStatus::Succeeded, "{}", result.detail);
    let answer: serde_json::Value = serde_json::from_str(&result.detail).unwrap();
    assert_eq!(answer["command"], "confirm");
    let check = sim
        .received()
        .into_iter()
        .find(|f| f.command == CommandByte::Control)
        .unwrap();
    assert_eq!(check.data, vec![91, 1, 10]);
    let e = host.wait_for_kind("fire.operation", WAIT).await;
    assert_eq!(e.payload["action"], "duty_check_answered");
}

#[tokio::test]
async fn status_reads_return_the_decoded_response() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    assert!(
        tokio::time::timeout(WAIT, sim.uitd_status(0x08))
            .await
            .unwrap()
            .is_confirmed()
    );
    let r = host
        .command(command("fire.read_uitd_status", json!({})), "uitd_a", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    let answer: serde_json::Value = serde_json::from_str(&r.detail).unwrap();
    assert_eq!(answer["adu"]["type"], "uitd_status");
    assert_eq!(answer["adu"]["objects"][0]["status"], 8);
    let args = json!({"system_type": 1, "system_address": 1, "component_address": "10-2"});
    let r = host
        .command(command("fire.read_component_status", args), "uitd_a", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Succeeded, "{}", r.detail);
    assert!(r.detail.contains("\"10-2\""), "{}", r.detail);
    let r = host
        .command(
            command("fire.read_system_status", json!({})),
            "uitd_a",
            WAIT,
        )
        .await;
    assert_eq!(r.status, CommandStatus::Rejected, "{}", r.detail);
}

#[tokio::test]
async fn a_command_to_a_silent_or_absent_uitd_fails_after_its_retries() {
    let (host, addr) = start("").await;
    let r = host
        .command(command("fire.sync_clock", json!({})), "uitd_a", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    let sim = sim(addr, 889).await;
    assert!(
        tokio::time::timeout(WAIT, sim.heartbeat())
            .await
            .unwrap()
            .is_confirmed()
    );
    sim.set_misbehaviour(Misbehaviour {
        silent: true,
        ..Misbehaviour::default()
    });
    let r = host
        .command(command("fire.sync_clock", json!({})), "uitd_a", WAIT)
        .await;
    assert_eq!(r.status, CommandStatus::Failed, "{}", r.detail);
    let sent = sim
        .received()
        .iter()
        .filter(|f| f.command == CommandByte::Control)
        .count();
    assert_eq!(sent, 2, "one attempt and one retry");
}

#[tokio::test]
async fn the_same_upload_after_a_gateway_restart_is_not_journaled_twice() {
    // Two listener instances over one journal stand in for the gateway before and after a
    // restart: the origin_ref carries no per-process state.
    let (host, first) = start("").await;
    let cfg: Gb26875Config = toml::from_str(
        "listen = \"127.0.0.1:0\"\ncentre_address = 88888\n[[uitd]]\naddress = 889\ndevice = \"uitd_a\"",
    )
    .unwrap();
    let second = run_listener(&cfg, &host).await;
    let before = sim(first, 889).await;
    let frame = before.frame(Some(
        campusgw_gb26875::codec::Adu::decode(&sim_alarm_adu()).unwrap(),
    ));
    assert!(before.upload_frame(&frame).await.is_confirmed());
    drop(before);
    let after = sim(second, 889).await;
    assert!(after.upload_frame(&frame).await.is_confirmed());
    assert_eq!(count(&host, "fire.alarm"), 1);
}

#[tokio::test]
async fn the_vendor_fire_alarm_bytes_get_the_vendor_confirm() {
    let (host, addr) = start("").await;
    let sim = sim(addr, 889).await;
    let alarm = campusgw_gb26875::parse_hex(
        "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 30 00 02 02 01 01 01 28 0A 00 02 00 02 00 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 00 02 3A 09 1A 09 0C 46 23 23",
    )
    .unwrap();
    sim.send_raw(&alarm).await.unwrap();
    let confirm = sim
        .wait_received(WAIT, |f| f.serial == 1 && f.command == CommandByte::Confirm)
        .await
        .expect("confirm for serial 1");
    let mut expected = campusgw_gb26875::codec::Frame::decode(
        &campusgw_gb26875::parse_hex(
            "40 40 01 00 01 01 23 3A 09 1A 09 0C 38 5B 01 00 00 00 79 03 00 00 00 00 00 00 03 AB 23 23",
        )
        .unwrap(),
    )
    .unwrap();
    expected.time = confirm.time; // the centre stamps its own clock
    assert_eq!(confirm, expected);
    let e = host.wait_for_kind("fire.alarm", WAIT).await;
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2012-09-26T01:58:02+00:00"
    );
}
