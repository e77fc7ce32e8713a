//! End to end: the real `campusgw` binary (`campusgw run --config FILE`) with a gb26875
//! listener, driven by the UITD simulator over loopback, checked in the real SQLite
//! journal.
//!
//! Ports are never fixed: each is picked by binding 127.0.0.1:0 and releasing it, and a
//! gateway that then fails to bind is restarted on fresh ports. Every wait has a
//! deadline; the gateway process is killed when its guard drops, even on a failed assert.
//! No test needs an answer within a short time: the simulated UITD waits as long as a real
//! one may (GB/T 26875.3 §6.5: up to 10 s) and retransmits, as a real one does, where a
//! loaded machine could be slow to confirm.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use campusgw_e2e::campusgw_bin;
use campusgw_e2e::gateway::{
    GatewayProcess, Ports, WAIT, journal, kill_later, kill_loop_params, of_kind, wait_journal,
};
use campusgw_gb26875::codec::{
    Adu, CommandByte, ComponentAddress, ComponentStatus, Description, Frame, SystemRef, TimeLabel,
};
use campusgw_gb26875::sim::{Delivery, Misbehaviour, SimConfig, UitdSim};
use campusgw_sdk::{Class, Event};
use tokio::time::Instant;

/// The centre's address in the config.
const CENTRE: u64 = 88_888;
/// The configured UITD whose detector 10-2 has a location.
const UITD_A: u64 = 889;
/// A configured UITD used for silence.
const UITD_QUIET: u64 = 890;

fn smoke() -> ComponentAddress {
    ComponentAddress::from_parts(10, 2)
}

/// The gateway of these tests: one gb26875 listener with `listener_keys` added, and the two
/// configured UITDs.
async fn start_gateway(dir: &Path, listener_keys: &str) -> GatewayProcess {
    let keys = listener_keys.to_owned();
    let config = move |ports: &Ports, data: &Path| config_text(ports, data, &keys);
    GatewayProcess::start(dir, "fire_listener", Box::new(config)).await
}

fn config_text(ports: &Ports, data: &Path, keys: &str) -> String {
    format!(
        r#"[gateway]
id = "school-e2e"
name = "E2E school"
data_dir = "{data}"

[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "3"
zones = ["east"]
[[campus.building]]
id = "B"

[console]
listen = "127.0.0.1:{console}"

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:{fire}"
centre_address = {CENTRE}
{keys}

[[device.uitd]]
address = {UITD_A}
device = "uitd_bldg_a"
location = "main/A"
[[device.uitd.components]]
address = "10-2"
location = "main/A/3/east/smoke-10-2"

[[device.uitd]]
address = {UITD_QUIET}
device = "uitd_quiet"
location = "main/B"
"#,
        data = data.display(),
        console = ports.console,
        fire = ports.device,
        keys = keys,
    )
}

/// A UITD simulator connected to `addr`, retrying while the listener comes up.
async fn connect(addr: SocketAddr, uitd: u64, confirm_timeout: Duration, retries: u8) -> UitdSim {
    let mut config = SimConfig::new(uitd, CENTRE);
    config.confirm_timeout = confirm_timeout;
    config.retries = retries;
    let deadline = Instant::now() + WAIT;
    loop {
        match UitdSim::connect(addr, config.clone()).await {
            Ok(sim) => return sim,
            Err(e) if Instant::now() >= deadline => panic!("cannot connect to {addr}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Reconnects `sim` to `addr`, retrying while the restarted listener comes up.
async fn reconnect(sim: &mut UitdSim, addr: SocketAddr) {
    let deadline = Instant::now() + WAIT;
    while let Err(e) = sim.reconnect(addr).await {
        assert!(Instant::now() < deadline, "cannot reconnect to {addr}: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Uploads `frame` again and again (same serial, same content), as a UITD retransmits an
/// unconfirmed upload, until the centre confirms it or the deadline passes.
async fn upload_until_confirmed(sim: &UitdSim, frame: &Frame) -> Delivery {
    let deadline = Instant::now() + WAIT;
    loop {
        let delivery = bounded(sim.upload_frame(frame)).await;
        if delivery.is_confirmed() || delivery == Delivery::Closed || Instant::now() >= deadline {
            return delivery;
        }
    }
}

/// Runs an upload under the deadline.
async fn bounded(upload: impl Future<Output = Delivery>) -> Delivery {
    tokio::time::timeout(WAIT, upload)
        .await
        .expect("upload did not end before the deadline")
}

/// A smoke detector fire alarm frame (type 2, status bit 1) from `sim`, not sent yet.
fn fire_alarm_frame(sim: &UitdSim) -> Frame {
    sim.frame(Some(Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: smoke(),
        status: 1 << 1,
        description: Description::new("三楼东 烟感"),
        time: TimeLabel::from_utc(chrono::Utc::now()),
    }])))
}

fn answers(sim: &UitdSim, serial: u16, command: CommandByte) -> usize {
    sim.received()
        .iter()
        .filter(|f| f.serial == serial && f.command == command)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fire_alarm_is_journaled_before_its_confirm_with_the_component_location() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(dir.path(), "").await;
    let sim = connect(gw.device_addr(), UITD_A, WAIT, 0).await;

    let delivery = bounded(sim.fire_alarm(smoke(), "三楼东 烟感")).await;
    assert_eq!(delivery, Delivery::Confirmed { attempts: 1 });

    // No waiting: a confirm is only sent after the commit, so the event is already there.
    let events = journal(&gw.data_dir());
    let alarms = of_kind(&events, "fire.alarm");
    assert_eq!(alarms.len(), 1, "{events:#?}");
    let e = alarms[0];
    assert_eq!(e.class, Class::LifeSafety);
    assert_eq!(e.source.device.as_str(), "uitd_bldg_a");
    assert_eq!(e.location.campus.as_deref(), Some("main"));
    assert_eq!(e.location.building.as_deref(), Some("A"));
    assert_eq!(e.location.floor.as_deref(), Some("3"));
    assert_eq!(e.location.zone.as_deref(), Some("east"));
    assert_eq!(e.location.point.as_deref(), Some("smoke-10-2"));
    assert_eq!(e.payload["component_address"], "10-2");
    assert_eq!(e.payload["description"], "三楼东 烟感");
    assert_eq!(e.payload["uitd_address"], UITD_A);
    assert!(e.origin_ref.is_some());

    // The integrator's view of the same journal, while the gateway runs.
    let out = Command::new(campusgw_bin())
        .args(["journal", "export", "--data-dir"])
        .arg(gw.data_dir())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let exported: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "fire.alarm")
        .collect();
    assert_eq!(exported.len(), 1);
    assert_eq!(exported[0]["class"], "life_safety");
    assert_eq!(exported[0]["location"]["point"], "smoke-10-2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_sent_to_a_gateway_that_dies_before_confirming_is_retransmitted_and_journaled_once()
 {
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_gateway(dir.path(), "").await;
    // An impatient UITD (1 s, one retry) so the frozen phase below ends quickly; where the
    // gateway runs, its uploads are retransmitted until confirmed.
    let mut sim = connect(gw.device_addr(), UITD_A, Duration::from_secs(1), 1).await;
    let heartbeat = sim.frame(None);
    assert!(
        upload_until_confirmed(&sim, &heartbeat)
            .await
            .is_confirmed()
    );

    // Frozen gateway: the alarm reaches its socket, but nothing can journal or confirm it.
    gw.signal("-STOP");
    let alarm = fire_alarm_frame(&sim);
    let delivery = bounded(sim.upload_frame(&alarm)).await;
    assert_eq!(delivery, Delivery::NoAnswer { attempts: 2 });
    assert_eq!(answers(&sim, alarm.serial, CommandByte::Confirm), 0);
    assert!(of_kind(&journal(&gw.data_dir()), "fire.alarm").is_empty());

    // Crash (the frozen process dies without running another instruction), restart.
    gw.crash_and_restart().await;
    assert!(
        sim.wait_closed(WAIT).await,
        "the dead gateway's socket is closed"
    );
    reconnect(&mut sim, gw.device_addr()).await;
    let delivery = upload_until_confirmed(&sim, &alarm).await;
    assert!(delivery.is_confirmed(), "{delivery:?}");
    let events = journal(&gw.data_dir());
    let alarms = of_kind(&events, "fire.alarm");
    assert_eq!(alarms.len(), 1, "{events:#?}");
    assert_eq!(alarms[0].payload["serial"], alarm.serial);
    let origin = alarms[0].origin_ref.clone();

    // The confirmed frame again (same serial, same content) after another crash: the
    // UITD gets its confirm, the journal's de-duplication keeps one event.
    gw.crash_and_restart().await;
    reconnect(&mut sim, gw.device_addr()).await;
    let delivery = upload_until_confirmed(&sim, &alarm).await;
    assert!(delivery.is_confirmed(), "{delivery:?}");
    let events = journal(&gw.data_dir());
    let alarms = of_kind(&events, "fire.alarm");
    assert_eq!(alarms.len(), 1, "{events:#?}");
    assert_eq!(alarms[0].origin_ref, origin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_uitd_is_refused_and_its_connection_closed() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(dir.path(), "").await;
    let sim = connect(gw.device_addr(), 777, Duration::from_secs(2), 0).await;

    let delivery = bounded(sim.fire_alarm(smoke(), "")).await;
    assert!(!delivery.is_confirmed(), "{delivery:?}");
    assert!(
        sim.wait_closed(WAIT).await,
        "the gateway closes the connection"
    );
    assert!(of_kind(&journal(&gw.data_dir()), "fire.alarm").is_empty());
    let log = gw.log();
    assert!(
        log.contains("unconfigured uitd refused") && log.contains("777"),
        "the refusal is logged with the address:\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_checksum_frame_is_denied_and_the_connection_survives() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(dir.path(), "").await;
    let sim = connect(gw.device_addr(), UITD_A, WAIT, 0).await;
    assert!(bounded(sim.heartbeat()).await.is_confirmed());

    sim.set_misbehaviour(Misbehaviour {
        corrupt_checksum: true,
        ..Misbehaviour::default()
    });
    let bad = fire_alarm_frame(&sim);
    let delivery = bounded(sim.upload_frame(&bad)).await;
    assert_eq!(delivery, Delivery::Denied { attempts: 1 });
    let deny = sim
        .received()
        .into_iter()
        .find(|f| f.serial == bad.serial)
        .expect("an answer to the bad frame");
    assert_eq!(deny.command.as_u8(), 6, "deny is command 6");
    assert!(of_kind(&journal(&gw.data_dir()), "fire.alarm").is_empty());

    sim.set_misbehaviour(Misbehaviour::default());
    let delivery = bounded(sim.fire_alarm(smoke(), "")).await;
    assert_eq!(delivery, Delivery::Confirmed { attempts: 1 });
    assert!(
        !sim.is_closed(),
        "the same connection carried the good frame"
    );
    assert_eq!(of_kind(&journal(&gw.data_dir()), "fire.alarm").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_uitd_is_journaled_offline_after_its_heartbeat_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(dir.path(), r#"heartbeat_timeout = "1s""#).await;
    let sim = connect(gw.device_addr(), UITD_QUIET, WAIT, 0).await;
    assert!(bounded(sim.heartbeat()).await.is_confirmed());

    let quiet = |e: &&Event| e.source.device.as_str() == "uitd_quiet";
    let online = wait_journal(&gw.data_dir(), "uitd_quiet online", |events| {
        of_kind(events, "device.online")
            .into_iter()
            .rfind(quiet)
            .cloned()
    })
    .await;
    let offline = wait_journal(&gw.data_dir(), "uitd_quiet offline", |events| {
        of_kind(events, "device.offline")
            .into_iter()
            .filter(quiet)
            .find(|e| e.seq > online.seq)
            .cloned()
    })
    .await;
    assert_eq!(offline.class, Class::Security);
    let silent = offline.received_at - online.received_at;
    assert!(
        silent >= chrono::Duration::milliseconds(900),
        "offline only after the 1 s heartbeat_timeout, not after {silent}"
    );
    assert!(
        sim.wait_closed(WAIT).await,
        "the silent connection is closed"
    );
}

/// One alarm of the kill loop: its frame as first built, and what became of it.
struct LoopAlarm {
    frame: Frame,
    component: String,
    zero_clock: bool,
    confirmed: bool,
}

/// A fire alarm of detector `n` (a component address of its own), stamped with the UITD's
/// clock or with zeros.
fn numbered_alarm(sim: &UitdSim, n: u32, zero_clock: bool) -> LoopAlarm {
    let component = ComponentAddress::from_parts(1 + (n / 200) as u16, (n % 200) as u16);
    let time = if zero_clock {
        TimeLabel::default()
    } else {
        TimeLabel::from_utc(chrono::Utc::now())
    };
    let mut frame = sim.frame(Some(Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: component,
        status: 1 << 1,
        description: Description::new("烟感"),
        time,
    }])));
    if zero_clock {
        frame.time = TimeLabel::default();
    }
    LoopAlarm {
        frame,
        component: component.to_string(),
        zero_clock,
        confirmed: false,
    }
}

/// Uploads `alarm` once (no retries: the loop itself retransmits) and records a confirm.
async fn send_once(sim: &UitdSim, alarm: &mut LoopAlarm, frame: &Frame) -> Delivery {
    let d = bounded(sim.upload_frame(frame)).await;
    if d.is_confirmed() {
        alarm.confirmed = true;
    }
    d
}

/// The bug that lost alarms: a UITD that numbers its frames from 1 on every connection,
/// stamps zero time labels part of the time, and after a reconnect retransmits (under a new
/// serial) every upload it saw no confirm for, against a gateway killed with SIGKILL at
/// random moments (`CAMPUSGW_KILL_ROUNDS`, default 20; seed in `CAMPUSGW_KILL_SEED`,
/// printed). Afterwards every alarm the gateway confirmed is in the journal: exactly once
/// when its object carried a clock, at least once when it did not (ADR 0003: with no clock
/// the wire cannot tell a renumbered retransmission from a new alarm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmed_alarm_survives_sigkill_loops_with_a_uitd_that_restarts_its_serials() {
    use rand::{Rng, SeedableRng};
    let (seed, rounds) = kill_loop_params("kill loop", 20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut gw = start_gateway(dir.path(), "").await;
    let mut sim = connect(gw.device_addr(), UITD_A, Duration::from_secs(5), 0).await;
    sim.set_misbehaviour(Misbehaviour {
        restart_serial_on_reconnect: true,
        ..Misbehaviour::default()
    });
    let mut alarms: Vec<LoopAlarm> = Vec::new();
    // Connections each alarm was sent on (a zero-clock alarm may be stored once per one).
    let mut links: Vec<u32> = Vec::new();
    for round in 0..=rounds {
        let last = round == rounds;
        // What the UITD holds unconfirmed goes first, renumbered as after a reconnect.
        for i in 0..alarms.len() {
            if alarms[i].confirmed {
                continue;
            }
            let frame = sim.renumbered(&alarms[i].frame);
            links[i] += 1;
            if !send_once(&sim, &mut alarms[i], &frame).await.is_confirmed() && !last {
                break;
            }
        }
        if last {
            break;
        }
        let killer = kill_later(gw.pid(), Duration::from_millis(rng.random_range(20..400)));
        loop {
            let mut alarm = numbered_alarm(&sim, alarms.len() as u32, rng.random_bool(0.25));
            let frame = alarm.frame.clone();
            let d = send_once(&sim, &mut alarm, &frame).await;
            alarms.push(alarm);
            links.push(1);
            if !d.is_confirmed() {
                break;
            }
        }
        killer.await.unwrap();
        gw.crash_and_restart().await;
        assert!(
            sim.wait_closed(WAIT).await,
            "the killed gateway's socket closes"
        );
        reconnect(&mut sim, gw.device_addr()).await;
    }
    let unconfirmed: Vec<&str> = alarms
        .iter()
        .filter(|a| !a.confirmed)
        .map(|a| a.component.as_str())
        .collect();
    assert!(
        unconfirmed.is_empty(),
        "never confirmed after the loop: {unconfirmed:?}"
    );
    let events = journal(&gw.data_dir());
    let fires = of_kind(&events, "fire.alarm");
    let mut lost = Vec::new();
    let mut doubled = Vec::new();
    for (a, sent_on) in alarms.iter().zip(&links) {
        let n = fires
            .iter()
            .filter(|e| e.payload["component_address"] == a.component.as_str())
            .count() as u32;
        if n == 0 {
            lost.push(a.component.clone());
        } else if (!a.zero_clock && n > 1) || n > *sent_on {
            doubled.push((a.component.clone(), a.zero_clock, n));
        }
    }
    let with_clock = alarms.iter().filter(|a| !a.zero_clock).count();
    eprintln!(
        "kill loop: {} alarms ({} with a clock), {} fire.alarm events",
        alarms.len(),
        with_clock,
        fires.len()
    );
    assert!(
        lost.is_empty(),
        "confirmed and lost (seed {seed}): {lost:?}"
    );
    assert!(
        doubled.is_empty(),
        "stored more than once (seed {seed}): {doubled:?}"
    );
    assert!(
        alarms.len() as u32 > rounds && with_clock > 0 && with_clock < alarms.len(),
        "the loop exercised both clocks ({} alarms)",
        alarms.len()
    );
}
