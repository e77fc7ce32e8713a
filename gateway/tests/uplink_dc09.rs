//! The police uplink (`kind = "dc09"`, issue 13 item 3) against the crate's simulated alarm
//! receiving centre (`campusgw_dc09::sim::ArcSim`): one message per event, the cursor moves
//! only on ACK, failover to the backup with a delivery record naming it, NAK clock
//! correction, DUH → rejected (kept, listed), every receiver down → one `uplink.down` then
//! `uplink.up`, and a restart resumes from the cursor.
#![allow(missing_docs, clippy::unwrap_used)]

mod console_support;
mod uplink_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use campusgw::journal::Journal;
use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_dc09::sim::{ArcMode, ArcSim};
use campusgw_sdk::{Class, Event, FieldPath};
use tokio_util::sync::CancellationToken;
use uplink_support::{Rig, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

async fn arc(mode: ArcMode) -> ArcSim {
    ArcSim::bind("127.0.0.1:0".parse().unwrap(), HashMap::new(), mode)
        .await
        .unwrap()
}

/// Starts a dc09 uplink named "police" to `receivers` with short timeouts, stopped by
/// `stop`; returns its status and its task.
fn spawn(
    rig: &Rig,
    receivers: &[&ArcSim],
    stop: CancellationToken,
) -> (Arc<UplinkStatus>, tokio::task::JoinHandle<()>) {
    spawn_with(
        rig,
        receivers,
        stop,
        "ack_timeout = \"300ms\"\nconnect_timeout = \"300ms\"\nretries = 1\nfailover_after = 1\n",
    )
}

/// [`spawn`] with the timing keys given (`ack_timeout`, `retries`, ...).
fn spawn_with(
    rig: &Rig,
    receivers: &[&ArcSim],
    stop: CancellationToken,
    timing: &str,
) -> (Arc<UplinkStatus>, tokio::task::JoinHandle<()>) {
    let list: Vec<String> = receivers
        .iter()
        .map(|a| format!("\"{}\"", a.local_addr()))
        .collect();
    let text = format!(
        "name = \"police\"\nkind = \"dc09\"\nreceivers = [{}]\naccount = \"5A01\"\n{timing}",
        list.join(", ")
    );
    let u = campusgw::uplink::parse(toml::from_str(&text).unwrap(), &FieldPath::root())
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let UplinkSettings::Dc09(c) = u.settings else {
        panic!("dc09")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(50), Duration::from_millis(300));
    let status = UplinkStatus::new("police", "dc09");
    let mut cx = rig.context();
    cx.shutdown = stop;
    let run = campusgw::uplink::UplinkFactory::start(Arc::new(c), u.filter, cx, status.clone());
    (status, tokio::spawn(run))
}

/// [`spawn`] as the rig's uplink ([`Rig::stop`] stops it).
fn start(rig: &mut Rig, receivers: &[&ArcSim]) -> Arc<UplinkStatus> {
    let (status, task) = spawn(rig, receivers, rig.shutdown.clone());
    rig.adopt(task);
    status
}

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
    journal.reader().unwrap().cursor("police", class).unwrap()
}

fn deliveries(
    journal: &Journal,
    event: &Event,
) -> Vec<campusgw::uplink::deliveries::DeliveryRecord> {
    let conn = journal.read_connection().unwrap();
    campusgw::uplink::deliveries::list(&conn, "police", &event.id.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_alarm_reaches_the_arc_once_and_its_cursor_moves_only_after_the_ack() {
    let arc = arc(ArcMode::Silent).await;
    let mut rig = Rig::open();
    start(&mut rig, &[&arc]);
    let panic = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    // Silent: the message arrives, is never acknowledged, and the cursor stays.
    assert!(arc.wait_received(1, LIMIT).await, "the ARC got the message");
    assert!(
        arc.wait_received(2, LIMIT).await,
        "unacknowledged, it is sent again"
    );
    assert_eq!(
        cursor(&rig.journal, Class::LifeSafety),
        0,
        "no ACK, no cursor"
    );
    assert!(deliveries(&rig.journal, &panic).is_empty());
    arc.set_mode(ArcMode::Ack);
    wait_for("cursor past the panic alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= panic.seq
    })
    .await;
    let recs = deliveries(&rig.journal, &panic);
    assert_eq!(recs.len(), 1, "one delivery record: {recs:?}");
    assert_eq!(recs[0].receiver, 0);
    assert_eq!(recs[0].endpoint, arc.local_addr().to_string());
    // Once acknowledged it is not sent again: every frame the ARC saw was for that event.
    let seen = arc.received().len();
    let later = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("the next alarm delivered", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= later.seq
    })
    .await;
    assert_eq!(
        arc.received().len(),
        seen + 1,
        "each acknowledged alarm once"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_primary_silent_the_backup_acknowledges_and_the_record_names_the_backup() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Ack).await;
    let mut rig = Rig::open();
    start(&mut rig, &[&primary, &backup]);
    let alarm = rig
        .emit(Class::LifeSafety, "intrusion.alarm", 1)
        .await
        .remove(0);
    wait_for("cursor past the intrusion alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    assert!(
        !primary.received().is_empty(),
        "the primary was tried first"
    );
    let recs = deliveries(&rig.journal, &alarm);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].receiver, 1, "the backup acknowledged");
    assert_eq!(recs[0].endpoint, backup.local_addr().to_string());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nak_from_a_shifted_clock_is_resent_with_the_corrected_time_and_delivered() {
    let arc = arc(ArcMode::Ack).await;
    // Ten minutes ahead: our first timestamp is outside its window, so it NAKs with its clock.
    arc.set_clock_offset(600);
    let mut rig = Rig::open();
    start(&mut rig, &[&arc]);
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("cursor past the alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let got = arc.received();
    assert!(got.len() >= 2, "NAKed first, then resent: {got:?}");
    let last = got.last().unwrap().timestamp.expect("timestamped");
    let skew = (last.at().timestamp() - arc.now().timestamp()).abs();
    assert!(
        skew <= 20,
        "the resend carries the ARC's time (skew {skew} s)"
    );
    assert!(deliveries(&rig.journal, &alarm)[0].attempts >= 2);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duh_rejects_the_alarm_which_is_kept_and_listed_before_its_cursor_moves() {
    let arc = arc(ArcMode::Duh).await;
    let mut rig = Rig::open();
    let status = start(&mut rig, &[&arc]);
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("cursor past the refused alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let listed = rig
        .journal
        .rejected_reader()
        .unwrap()
        .list(Some("police"))
        .unwrap();
    assert!(
        listed.iter().any(|r| r.seq == alarm.seq),
        "the refused alarm is in the rejected list: {listed:?}"
    );
    wait_for("uplink.rejected raised", LIMIT, || {
        !journaled(&rig.journal, "uplink.rejected").is_empty()
    })
    .await;
    assert!(deliveries(&rig.journal, &alarm).is_empty(), "not delivered");
    assert_eq!(status.snapshot().rejected, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_receiver_down_one_uplink_down_is_raised_then_uplink_up_on_recovery() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Silent).await;
    let mut rig = Rig::open();
    start(&mut rig, &[&primary, &backup]);
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("uplink.down journaled", LIMIT, || {
        !journaled(&rig.journal, "uplink.down").is_empty()
    })
    .await;
    // Several more rounds at both receivers: still the same outage.
    let seen = primary.received().len();
    assert!(primary.wait_received(seen + 2, LIMIT).await);
    let downs = journaled(&rig.journal, "uplink.down");
    assert_eq!(downs.len(), 1, "one uplink.down per outage: {downs:?}");
    assert_eq!(downs[0].class, Class::Security);
    assert_eq!(cursor(&rig.journal, Class::LifeSafety), 0);
    backup.set_mode(ArcMode::Ack);
    wait_for("delivered after recovery", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    wait_for("uplink.up journaled", LIMIT, || {
        !journaled(&rig.journal, "uplink.up").is_empty()
    })
    .await;
    assert_eq!(journaled(&rig.journal, "uplink.down").len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_resumes_from_the_cursor_and_loses_nothing() {
    let arc = arc(ArcMode::Ack).await;
    let mut rig = Rig::open();
    let stop = CancellationToken::new();
    let (_status, task) = spawn(&rig, &[&arc], stop.clone());
    let first = rig.emit(Class::LifeSafety, "panic.alarm", 3).await;
    wait_for("first three delivered", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= first[2].seq
    })
    .await;
    stop.cancel();
    tokio::time::timeout(LIMIT, task).await.unwrap().unwrap();
    // Raised while the uplink is stopped; also a kind the police are not sent by default.
    let meanwhile = rig.emit(Class::LifeSafety, "intrusion.alarm", 2).await;
    rig.emit(Class::LifeSafety, "fire.alarm", 1).await;
    let before = arc.received().len();
    start(&mut rig, &[&arc]);
    wait_for("the two raised meanwhile delivered", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= meanwhile[1].seq
    })
    .await;
    for e in first.iter().chain(&meanwhile) {
        assert_eq!(deliveries(&rig.journal, e).len(), 1, "{} once", e.seq);
    }
    // The fire alarm is not for the police (default filter): its cursor moves past it unsent.
    wait_for("cursor past the fire alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) > meanwhile[1].seq
    })
    .await;
    assert_eq!(
        arc.received().len(),
        before + 2,
        "nothing confirmed is resent, no fire"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_api_names_the_receiver_that_acknowledged_an_event() {
    let arc = arc(ArcMode::Ack).await;
    let extra = format!(
        "\n[[uplink]]\nname = \"police\"\nkind = \"dc09\"\nreceivers = [\"{}\"]\naccount = \"5A01\"\n",
        arc.local_addr()
    );
    let rig = console_support::Rig::start_with(&extra).await;
    let token = rig
        .token("viewer", campusgw::console::auth::Role::Viewer)
        .await;
    let e = console_support::event("panic.alarm", Class::LifeSafety, "button_1", "A", "1");
    let id = e.id.to_string();
    rig.append(vec![e]).await;
    let url = rig.url(&format!("/api/v1/uplinks/police/deliveries?event={id}"));
    let mut body = serde_json::Value::Null;
    for _ in 0..300 {
        let r = rig.http.get(&url).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 200);
        body = r.json().await.unwrap();
        if body.as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(body[0]["event_id"], id.as_str(), "{body}");
    assert_eq!(body[0]["receiver"], 0);
    assert_eq!(body[0]["endpoint"], arc.local_addr().to_string());
    assert!(body[0]["acknowledged_at"].as_str().is_some());
    let get = |path: String| rig.http.get(rig.url(&path)).bearer_auth(&token).send();
    let r = get(format!("/api/v1/uplinks/nope/deliveries?event={id}"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "unknown uplink");
    let r = get("/api/v1/uplinks/police/deliveries?event=x".to_owned())
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "not an event id");
    rig.stop().await;
}

/// Issue 22 item 3: the primary stops answering; the next alarm goes to the backup after
/// the configured attempts there (`retries + 1` = 2 of `ack_timeout` = 2 s), later ones
/// start at the backup; after `return_to_primary_after` the primary is probed with a NULL
/// while idle, and an alarm arriving during a probe of the still-dead primary goes to the
/// backup at once instead of waiting out the probe's `ack_timeout`; once the primary
/// answers a probe, alarms go to it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_police_uplink_fails_over_returns_by_an_idle_probe_and_never_holds_an_alarm_for_it() {
    let primary = arc(ArcMode::Ack).await;
    let backup = arc(ArcMode::Ack).await;
    let mut rig = Rig::open();
    let (_status, task) = spawn_with(
        &rig,
        &[&primary, &backup],
        rig.shutdown.clone(),
        "ack_timeout = \"2s\"\nconnect_timeout = \"1s\"\nretries = 1\nfailover_after = 2\nreturn_to_primary_after = \"1s\"\n",
    );
    rig.adopt(task);
    let receiver_of =
        |e: &Event| -> Option<u32> { deliveries(&rig.journal, e).first().map(|r| r.receiver) };
    let first = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("the first alarm at the primary", LIMIT, || {
        receiver_of(&first) == Some(0)
    })
    .await;

    // The primary stops answering: the next alarm fails over after two attempts there.
    primary.set_mode(ArcMode::Silent);
    let at_primary = primary.received().len();
    let t = std::time::Instant::now();
    let second = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("the second alarm at the backup", LIMIT, || {
        receiver_of(&second) == Some(1)
    })
    .await;
    let failover = t.elapsed();
    assert_eq!(
        primary.received().len() - at_primary,
        2,
        "retries + 1 attempts at the primary, then the backup"
    );
    eprintln!("failover took {failover:?} (configured: 2 attempts x 2 s)");
    assert!(
        failover < Duration::from_secs(8),
        "failover within the configured attempts (4 s) and some slack: {failover:?}"
    );

    // After the return period the dead primary is probed with a NULL while idle.
    let before_probe = primary.received().len();
    assert!(
        primary.wait_received(before_probe + 1, LIMIT).await,
        "a probe of the primary while idle"
    );
    let probe = primary.received().pop().unwrap();
    assert_eq!(
        probe.id,
        campusgw_dc09::MessageId::Null,
        "the probe is a NULL, not an alarm"
    );
    // An alarm during the probe (the primary is silent: the probe would take 2 s) goes to
    // the backup at once.
    let t = std::time::Instant::now();
    let third = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("the third alarm at the backup", LIMIT, || {
        receiver_of(&third) == Some(1)
    })
    .await;
    let during_probe = t.elapsed();
    eprintln!("alarm during a probe of the dead primary delivered in {during_probe:?}");
    assert!(
        during_probe < Duration::from_millis(1500),
        "the alarm waited on the probe of a dead primary: {during_probe:?}"
    );
    assert!(
        primary
            .received()
            .iter()
            .skip(at_primary + 2)
            .all(|m| m.id == campusgw_dc09::MessageId::Null),
        "no alarm was sent to the dead primary after the failover"
    );

    // The primary is back: a probe finds it and alarms go there again.
    primary.set_mode(ArcMode::Ack);
    let end = std::time::Instant::now() + LIMIT;
    loop {
        let e = rig
            .emit(Class::LifeSafety, "panic.alarm", 1)
            .await
            .remove(0);
        wait_for("the alarm delivered", LIMIT, || receiver_of(&e).is_some()).await;
        if receiver_of(&e) == Some(0) {
            break;
        }
        assert!(std::time::Instant::now() < end, "never back on the primary");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    rig.stop().await;
}
