//! The fire-monitoring uplink (`kind = "gb26875"`, issue 24 item 1): gateway A's uplink over
//! real TCP to gateway B's own GB/T 26875 receiver (`driver = "gb26875"`, written
//! independently of the transmitter, the centre side), the reference vectors of
//! `drivers/gb26875/tests/data/frames.tsv` sent by a UITD into A and relayed to a
//! simulated centre with the same objects, and the simulated centre
//! (`campusgw_gb26875::sim::centre`): confirm = delivered with a delivery record, silent
//! then back (the alarm raised meanwhile arrives), deny = rejected and listed, 查岗
//! journaled and answered by an operator through `POST /api/v1/uplinks/{name}/duty-check`.
#![allow(missing_docs, clippy::unwrap_used)]

mod console_support;
mod uplink_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use campusgw::app::{Gateway, RunOptions};
use campusgw::journal::Journal;
use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_gb26875::codec::{Adu, CommandByte, ComponentAddress, Frame};
use campusgw_gb26875::sim::centre::{CentreConfig, CentreMode, CentreSim};
use campusgw_gb26875::sim::{SimConfig, UitdSim};
use campusgw_sdk::{Class, Event, FieldPath};
use uplink_support::{Rig, free_port, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
/// The uplink's own UITD address toward the centre, and the centre's.
const OUR_UITD: u64 = 4242;
const CENTRE: u64 = 88888;

fn journaled(journal: &Journal, kind: &str) -> Vec<Event> {
    journal
        .reader()
        .unwrap()
        .after(0, None, 10_000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == kind)
        .collect()
}

fn cursor(journal: &Journal, class: Class) -> u64 {
    journal
        .reader()
        .unwrap()
        .cursor("fire_centre", class)
        .unwrap()
}

fn uplink_table(centres: &[String]) -> String {
    let list: Vec<String> = centres.iter().map(|c| format!("\"{c}\"")).collect();
    format!(
        "name = \"fire_centre\"\nkind = \"gb26875\"\ncentres = [{}]\nuitd_address = {OUR_UITD}\ncentre_address = {CENTRE}\nconfirm_timeout = \"300ms\"\nconnect_timeout = \"1s\"\nheartbeat = \"1s\"\n",
        list.join(", ")
    )
}

/// Starts the uplink on the rig toward `centres`, with test back-off.
fn start(rig: &mut Rig, centres: &[String]) -> Arc<UplinkStatus> {
    let u = campusgw::uplink::parse(
        toml::from_str(&uplink_table(centres)).unwrap(),
        &FieldPath::root(),
    )
    .map_err(|e| format!("{e:?}"))
    .unwrap();
    let UplinkSettings::Gb26875(c) = u.settings else {
        panic!("gb26875")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(50), Duration::from_millis(300));
    let status = UplinkStatus::new("fire_centre", "gb26875");
    let run = campusgw::uplink::UplinkFactory::start(
        Arc::new(c),
        u.filter,
        rig.context(),
        status.clone(),
    );
    rig.adopt(tokio::spawn(run));
    status
}

async fn centre() -> CentreSim {
    CentreSim::bind(
        "127.0.0.1:0".parse().unwrap(),
        CentreConfig::new(CENTRE, OUR_UITD),
    )
    .await
    .unwrap()
}

fn deliveries(journal: &Journal, e: &Event) -> Vec<campusgw::uplink::deliveries::DeliveryRecord> {
    let conn = journal.read_connection().unwrap();
    campusgw::uplink::deliveries::list(&conn, "fire_centre", &e.id.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_fire_alarm_moves_the_cursor_and_records_the_centre() {
    let c = centre().await;
    let mut rig = Rig::open();
    start(&mut rig, &[c.local_addr().to_string()]);
    let alarm = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    wait_for("cursor past the alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let up = c.uploads();
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0].frame.source.value(), OUR_UITD);
    assert_eq!(up[0].frame.destination.value(), CENTRE);
    let Some(Adu::SystemStatus(o)) = up[0].frame.adu().unwrap() else {
        panic!("an unplaced alarm is a system status")
    };
    assert_eq!(o[0].status, 0x0003, "normal operation + fire");
    let recs = deliveries(&rig.journal, &alarm);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].sequence, u32::from(up[0].frame.serial));
    assert_eq!(recs[0].endpoint, c.local_addr().to_string());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_centre_silent_then_back_gets_the_alarm_raised_meanwhile() {
    let c = centre().await;
    c.set_mode(CentreMode::Silent);
    let mut rig = Rig::open();
    start(&mut rig, &[c.local_addr().to_string()]);
    let alarm = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    // First attempt and 3 retransmissions of the same bytes, then a new connection.
    assert!(
        c.wait_until(LIMIT, |r| r.iter().filter(|f| f.is_upload()).count() >= 4)
            .await
    );
    let first: Vec<_> = c.uploads().into_iter().take(4).collect();
    assert!(
        first.iter().all(|r| r.bytes == first[0].bytes),
        "same serial and bytes"
    );
    assert!(
        c.wait_connections(2, LIMIT).await,
        "reconnected after 3 retries"
    );
    wait_for("uplink.down journaled", LIMIT, || {
        !journaled(&rig.journal, "uplink.down").is_empty()
    })
    .await;
    assert_eq!(
        cursor(&rig.journal, Class::LifeSafety),
        0,
        "no confirm, no cursor"
    );
    let meanwhile = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    c.set_mode(CentreMode::Confirm);
    wait_for("both alarms confirmed", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= meanwhile.seq
    })
    .await;
    assert_eq!(deliveries(&rig.journal, &alarm).len(), 1);
    assert_eq!(deliveries(&rig.journal, &meanwhile).len(), 1);
    let contents: Vec<Vec<u8>> = c.uploads().into_iter().map(|r| r.frame.data).collect();
    assert!(
        contents.contains(&first[0].frame.data),
        "the first alarm's ADU, unchanged"
    );
    wait_for("uplink.up journaled", LIMIT, || {
        !journaled(&rig.journal, "uplink.up").is_empty()
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_alarm_is_rejected_kept_and_listed() {
    let c = centre().await;
    c.set_mode(CentreMode::Deny);
    let mut rig = Rig::open();
    let status = start(&mut rig, &[c.local_addr().to_string()]);
    let alarm = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    wait_for("cursor past the denied alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let listed = rig
        .journal
        .rejected_reader()
        .unwrap()
        .list(Some("fire_centre"))
        .unwrap();
    assert!(listed.iter().any(|r| r.seq == alarm.seq), "{listed:?}");
    wait_for("uplink.rejected raised", LIMIT, || {
        !journaled(&rig.journal, "uplink.rejected").is_empty()
    })
    .await;
    assert_eq!(
        c.uploads().len(),
        4,
        "denied on the first attempt and 3 retransmissions"
    );
    assert_eq!(status.snapshot().rejected, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duty_check_is_journaled_and_the_operators_answer_uploaded() {
    let c = centre().await;
    let mut rig = Rig::open();
    let status = start(&mut rig, &[c.local_addr().to_string()]);
    assert!(c.wait_connections(1, LIMIT).await);
    let serial = c.duty_check(10).await.unwrap();
    wait_for("fire_centre.duty_check journaled", LIMIT, || {
        !journaled(&rig.journal, "fire_centre.duty_check").is_empty()
    })
    .await;
    assert!(
        c.wait_until(LIMIT, |r| r.iter().any(|f| f.frame.command
            == CommandByte::Confirm
            && f.frame.serial == serial))
            .await,
        "the check is confirmed at once"
    );
    let check = journaled(&rig.journal, "fire_centre.duty_check").remove(0);
    assert_eq!(check.payload["minutes"], 10);
    assert_eq!(status.duty_desk().current().unwrap().serial, serial);
    status.duty_desk().answer("operator:wang", 7).unwrap();
    assert!(
        c.wait_until(LIMIT, |r| r.iter().any(|f| matches!(
            f.frame.adu(),
            Ok(Some(Adu::UitdOperation(ref o))) if o[0].flags == 0x20 && o[0].operator == 7
        )))
        .await,
        "the answer is uploaded as type 24, flag b5"
    );
    wait_for("answer journaled", LIMIT, || {
        !journaled(&rig.journal, "fire_centre.duty_check_answered").is_empty()
    })
    .await;
    assert!(status.duty_desk().current().is_none());
    rig.stop().await;
}

// ---- gateway A (UITD in, uplink out) → gateway B (its own GB/T 26875 receiver) ----

fn receiver_config(dir: &Path, port: u16) -> String {
    format!(
        r#"[gateway]
id = "city-centre"
name = "gateway B, the centre side"
data_dir = "{data}"

[console]
listen = "127.0.0.1:0"

[[device]]
id = "centre_listener"
driver = "gb26875"
listen = "127.0.0.1:{port}"
centre_address = {CENTRE}
[[device.uitd]]
address = {OUR_UITD}
device = "school_042"
"#,
        data = dir.join("b").display(),
    )
}

fn school_config(dir: &Path, port: u16, centre: &str) -> String {
    format!(
        r#"[gateway]
id = "school-042"
name = "gateway A, the school"
data_dir = "{data}"

[console]
listen = "127.0.0.1:0"

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:{port}"
centre_address = {CENTRE}
[[device.uitd]]
address = 889
device = "building_a_uitd"

[[uplink]]
{table}"#,
        data = dir.join("a").display(),
        table = uplink_table(&[centre.to_owned()]),
    )
}

async fn gateway(text: &str, dir: &Path) -> Gateway {
    let config = campusgw::config::parse(text, &dir.join("gateway.toml")).unwrap();
    Gateway::start(config, RunOptions::default()).await.unwrap()
}

fn fixture(name: &str) -> Vec<u8> {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../drivers/gb26875/tests/data/frames.tsv");
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.split('\t').next() == Some(name))
        .unwrap();
    campusgw_gb26875::parse_hex(line.split('\t').nth(2).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_school_uitd_alarm_reaches_gateway_b_through_gateway_a_uplink() {
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let b = gateway(&receiver_config(dir.path(), b_port), dir.path()).await;
    let a = gateway(
        &school_config(dir.path(), a_port, &format!("127.0.0.1:{b_port}")),
        dir.path(),
    )
    .await;
    let uitd = UitdSim::connect(
        format!("127.0.0.1:{a_port}").parse().unwrap(),
        SimConfig::new(889, CENTRE),
    )
    .await
    .unwrap();
    let sent = uitd
        .fire_alarm(ComponentAddress::from_parts(10, 2), "3楼东 烟感")
        .await;
    assert!(sent.is_confirmed(), "{sent:?}");
    wait_for("the alarm at gateway B", LIMIT, || {
        !journaled(&b.journal, "fire.alarm").is_empty()
    })
    .await;
    let at_b = journaled(&b.journal, "fire.alarm").remove(0);
    assert_eq!(at_b.source.device.as_str(), "school_042");
    assert_eq!(at_b.payload["component_address"], "10-2");
    assert_eq!(at_b.payload["component_type"], 40);
    assert_eq!(at_b.payload["description"], "3楼东 烟感");
    let at_a = journaled(&a.journal, "fire.alarm").remove(0);
    assert_eq!(
        at_a.occurred_at, at_b.occurred_at,
        "the device's time label travels"
    );
    // The UITD resets the detector: the reset follows the alarm to B.
    assert!(
        uitd.reset(ComponentAddress::from_parts(10, 2))
            .await
            .is_confirmed()
    );
    wait_for("the reset at gateway B", LIMIT, || {
        !journaled(&b.journal, "fire.reset").is_empty()
    })
    .await;
    assert_eq!(
        journaled(&b.journal, "fire.alarm").len(),
        1,
        "one alarm, once"
    );
    drop(uitd);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_b_reads_syncs_and_checks_duty_on_gateway_a_uplink() {
    use campusgw_sdk::{Command, CommandKind, CommandStatus, DeviceId, Target};
    let dir = tempfile::tempdir().unwrap();
    let (a_port, b_port) = (free_port(), free_port());
    let b = gateway(&receiver_config(dir.path(), b_port), dir.path()).await;
    let a = gateway(
        &school_config(dir.path(), a_port, &format!("127.0.0.1:{b_port}")),
        dir.path(),
    )
    .await;
    let school = Target::Device(DeviceId::new("school_042").unwrap());
    let send = |kind: &str| {
        Command::new(
            CommandKind::new(kind).unwrap(),
            school.clone(),
            serde_json::json!({"minutes": 5}),
            "test",
        )
    };
    // The uplink connects on its own; B's commands need the connection.
    let mut status = CommandStatus::Failed;
    for _ in 0..100 {
        let r = b.command(send("fire.read_uitd_status")).await;
        status = r.first().map_or(CommandStatus::Failed, |r| r.status);
        if status == CommandStatus::Succeeded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, CommandStatus::Succeeded, "B read A's UITD status");
    for kind in ["fire.sync_clock", "fire.duty_check"] {
        let r = b.command(send(kind)).await;
        assert_eq!(r[0].status, CommandStatus::Succeeded, "{kind}: {r:?}");
    }
    wait_for(
        "A journaled the clock sync and the duty check",
        LIMIT,
        || {
            !journaled(&a.journal, "fire_centre.clock_sync").is_empty()
                && !journaled(&a.journal, "fire_centre.duty_check").is_empty()
        },
    )
    .await;
    let check = journaled(&a.journal, "fire_centre.duty_check").remove(0);
    assert_eq!(check.payload["minutes"], 5);
    let sync = journaled(&a.journal, "fire_centre.clock_sync").remove(0);
    assert!(
        sync.payload["offset_seconds"].as_f64().unwrap().abs() < 5.0,
        "{}",
        sync.payload
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_fire_alarm_is_relayed_to_the_centre_with_its_adu_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let c = centre().await;
    let a_port = free_port();
    let a = gateway(
        &school_config(dir.path(), a_port, &c.local_addr().to_string()),
        dir.path(),
    )
    .await;
    let uitd = UitdSim::connect(
        format!("127.0.0.1:{a_port}").parse().unwrap(),
        SimConfig::new(889, CENTRE),
    )
    .await
    .unwrap();
    let vector = fixture("fire_alarm_smoke_detector");
    uitd.send_raw(&vector).await.unwrap();
    assert!(
        c.wait_until(LIMIT, |r| r.iter().any(|f| f.is_upload()))
            .await
    );
    let relayed = c.uploads().remove(0);
    let original = Frame::decode(&vector).unwrap();
    let (Some(Adu::ComponentStatus(want)), Some(Adu::ComponentStatus(got))) =
        (original.adu().unwrap(), relayed.frame.adu().unwrap())
    else {
        panic!("component status both ways")
    };
    assert_eq!(got[0].system, want[0].system);
    assert_eq!(got[0].component_type, want[0].component_type);
    assert_eq!(got[0].component_address, want[0].component_address);
    assert_eq!(
        got[0].status, want[0].status,
        "the word as the UITD sent it"
    );
    assert_eq!(got[0].time, want[0].time, "the object's own time label");
    assert_eq!(
        got[0].description, want[0].description,
        "30 spaces and a NUL, as sent"
    );
    let adu = &vector[27..vector.len() - 3];
    assert_eq!(
        relayed.frame.data, adu,
        "the vector's ADU relayed byte for byte"
    );
    assert_eq!(relayed.frame.command, CommandByte::SendData);
    assert_eq!(relayed.frame.version, original.version);
    drop(uitd);
    a.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_answers_the_duty_check_through_the_console_api() {
    use campusgw::console::auth::Role;
    let c = centre().await;
    let rig = console_support::Rig::start_with(&format!(
        "\n[[uplink]]\n{}",
        uplink_table(&[c.local_addr().to_string()])
    ))
    .await;
    let (viewer, operator) = (
        rig.token("viewer", Role::Viewer).await,
        rig.token("duty", Role::Operator).await,
    );
    let post = |token: String, body: &'static str| {
        rig.http
            .post(rig.url("/api/v1/uplinks/fire_centre/duty-check"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    assert_eq!(
        post(operator.clone(), "{}").await.unwrap().status(),
        409,
        "no check open"
    );
    assert!(c.wait_connections(1, LIMIT).await);
    let serial = c.duty_check(10).await.unwrap();
    wait_for("fire_centre.duty_check journaled", LIMIT, || {
        !journaled(&rig.gw.journal, "fire_centre.duty_check").is_empty()
    })
    .await;
    assert_eq!(
        post(viewer, "{}").await.unwrap().status(),
        403,
        "viewers do not answer"
    );
    let answered = post(operator.clone(), "{\"operator\": 3}").await.unwrap();
    assert_eq!(answered.status(), 202);
    let body: serde_json::Value = answered.json().await.unwrap();
    assert_eq!(body["serial"], serial);
    assert_eq!(
        post(operator, "{}").await.unwrap().status(),
        409,
        "answered once"
    );
    wait_for("answer journaled", LIMIT, || {
        !journaled(&rig.gw.journal, "fire_centre.duty_check_answered").is_empty()
    })
    .await;
    let done = journaled(&rig.gw.journal, "fire_centre.duty_check_answered").remove(0);
    assert_eq!(done.payload["operator"], 3);
    assert!(
        done.payload["by"].as_str().unwrap().contains("duty"),
        "{}",
        done.payload
    );
    assert!(c.uploads().iter().any(|r| matches!(
        r.frame.adu(),
        Ok(Some(Adu::UitdOperation(ref o))) if o[0].flags == 0x20 && o[0].operator == 3
    )));
    rig.stop().await;
}
