//! Alarm latency across outages (issue 22), against a real mosquitto stopped and restarted:
//! a committed alarm wakes the uplink's sleeping retry loop and the back-off stays short
//! while it waits; telemetry and the uplink's own outage events keep the long back-off (no
//! reconnect storm); the oldest undelivered alarm's age is in `/healthz` and the console,
//! and past `alarm_delay_threshold` it raises `uplink.alarm_delayed` (and the pack's alarm).
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use serde_json::{Value, json};
use uplink_support::{Broker, Rig, Subscriber, Tls, mqtt_config, wait_for};

fn delivered(sub: &Subscriber) -> HashSet<campusgw_sdk::EventId> {
    sub.events().into_iter().map(|(_, e)| e.id).collect()
}

fn gateway_event(kind: &'static str, class: Class, payload: Value) -> Event {
    Event::stamp(
        NewEvent::new(Kind::from_static(kind), class).payload(payload),
        &DeviceId::new("school-042").unwrap(),
        "uplink",
        &Location::default(),
    )
}

/// Every event of `kind` in the journal.
fn journaled(journal: &campusgw::journal::Journal, kind: &str) -> Vec<Event> {
    let r = journal.reader().unwrap();
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let page = r.after(after, None, 1000).unwrap();
        let Some(last) = page.last().map(|e| e.seq) else {
            break;
        };
        after = last;
        out.extend(page.into_iter().filter(|e| e.kind.as_str() == kind));
    }
    out
}

/// The loop backs off at least 10 s after the broker goes away (base 20 s, jitter down to
/// half). Alarms journaled meanwhile must arrive within 8 s of the broker's return: only
/// the wake-up and the 1 s urgent cap make that (without them this test fails: the next
/// attempt would come 10-20 s after the failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarms_journaled_during_an_outage_arrive_within_seconds_of_the_broker_returning() {
    let mut broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let mut rig = Rig::open();
    let (mut cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\ninflight = 100\n",
        broker.plain_url()
    ));
    cfg.backoff = (Duration::from_secs(20), Duration::from_secs(60));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let hello = rig.emit(Class::Operations, "gateway.hello", 1).await;
    wait_for("the first event delivered", Duration::from_secs(30), || {
        delivered(&sub).contains(&hello[0].id)
    })
    .await;

    broker.stop().await;
    wait_for("the outage noticed", Duration::from_secs(30), || {
        rig.status.state() == campusgw::uplink::status::LinkState::Down
    })
    .await;
    let down_at = Instant::now();
    for _ in 0..10 {
        rig.emit(Class::Telemetry, "sensor.reading", 1000).await;
    }
    let alarms = rig.emit(Class::LifeSafety, "fire.alarm", 20).await;
    broker.restart().await;
    let back = Instant::now();
    let want: HashSet<_> = alarms.iter().map(|e| e.id).collect();
    wait_for(
        "the 20 alarms within 8 s of the broker's return",
        Duration::from_secs(8),
        || want.is_subset(&delivered(&sub)),
    )
    .await;
    eprintln!(
        "broker back -> 20 alarms delivered: {:?} (outage {:?}, {} connect attempts)",
        back.elapsed(),
        back - down_at,
        rig.status.connect_attempts()
    );
    assert!(
        back - down_at < Duration::from_secs(10),
        "the broker came back before the long back-off (10-20 s) would have ended: {:?}",
        back - down_at
    );
    // The telemetry backlog drains after them.
    wait_for(
        "the telemetry backlog drained",
        Duration::from_secs(120),
        || sub.count_events() >= 10_021,
    )
    .await;
    rig.stop().await;
}

/// With only telemetry and the uplink's own outage events pending (its `uplink.down`, the
/// alarm the rules raise for it, its own `uplink.alarm_delayed`), reconnects follow the long
/// back-off even with `security` urgent; another uplink's `uplink.down` is an alarm to carry
/// and switches to the fast cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telemetry_and_own_outage_events_keep_the_long_back_off_an_alarm_switches_to_the_fast_cap()
{
    let mut broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let mut rig = Rig::open();
    let (mut cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\nurgent_classes = [\"life_safety\", \"security\"]\nurgent_backoff_max = \"200ms\"\n",
        broker.plain_url()
    ));
    cfg.backoff = (Duration::from_millis(100), Duration::from_secs(4));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let hello = rig.emit(Class::Operations, "gateway.hello", 1).await;
    wait_for("the first event delivered", Duration::from_secs(30), || {
        delivered(&sub).contains(&hello[0].id)
    })
    .await;

    broker.stop().await;
    wait_for(
        "its own uplink.down journaled",
        Duration::from_secs(30),
        || !journaled(&rig.journal, "uplink.down").is_empty(),
    )
    .await;
    let down = journaled(&rig.journal, "uplink.down")[0].seq;
    // What the rules runner journals for it (alarm.* with the cause as source), and its own
    // delay alarm: none of it is pending for this uplink.
    rig.journal
        .append(vec![
            gateway_event(
                "alarm.raised",
                Class::Security,
                json!({"id": format!("uplink_down:{down}"), "rule": "uplink_down", "class": "security", "state": "raised", "source_seqs": [down]}),
            ),
            gateway_event(
                "uplink.alarm_delayed",
                Class::Security,
                json!({"uplink": "county", "seq": down, "age_seconds": 31.0}),
            ),
        ])
        .await
        .unwrap();
    rig.emit(Class::Telemetry, "sensor.reading", 2000).await;
    let before = rig.status.connect_attempts();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let during = rig.status.connect_attempts() - before;
    eprintln!("connect attempts in 10 s with telemetry and own outage events pending: {during}");
    // The long back-off (0.1 s doubling to 4 s, jitter down to half) allows at most 9 in
    // any 10 s; the fast cap (200 ms) would make 50 or more.
    assert!(during <= 10, "reconnect storm: {during} attempts in 10 s");
    assert!(!rig.status.snapshot().urgent_pending);

    rig.journal
        .append(vec![gateway_event(
            "uplink.down",
            Class::Security,
            json!({"uplink": "police", "reason": "timeout"}),
        )])
        .await
        .unwrap();
    let before = rig.status.connect_attempts();
    wait_for(
        "fast reconnects while another uplink's alarm waits",
        Duration::from_secs(10),
        || rig.status.connect_attempts() - before >= 10,
    )
    .await;
    assert!(rig.status.snapshot().urgent_pending);
    broker.restart().await;
    wait_for(
        "the police outage alarm delivered",
        Duration::from_secs(30),
        || {
            sub.events()
                .iter()
                .any(|(_, e)| e.kind.as_str() == "uplink.down" && e.payload["uplink"] == "police")
        },
    )
    .await;
    rig.stop().await;
}

/// The whole gateway with the default rules pack: an alarm that cannot be delivered shows
/// its age in `/healthz` and the console's uplink view, raises one `uplink.alarm_delayed`
/// past the 1 s threshold (and the pack's critical alarm), and `uplink.alarm_delay_cleared`
/// once the broker is back and it is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_shows_the_oldest_undelivered_alarm_and_a_delay_raises_then_clears_the_guard_room_alarm()
 {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut broker = Broker::start(Tls::None).await;
    broker.stop().await;
    let dir = tempfile::tempdir().unwrap();
    let pack = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/pack");
    let text = format!(
        "[gateway]\nid = \"school-042\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[rules]\ndir = \"{}\"\n\n[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\nheartbeat = \"500ms\"\nalarm_delay_threshold = \"1s\"\n",
        dir.path().display(),
        pack.display(),
        broker.plain_url()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let config = campusgw::config::load(&path).unwrap();
    let gw = campusgw::app::Gateway::start(config, campusgw::app::RunOptions::default())
        .await
        .unwrap();
    let fire = gw
        .journal
        .append(vec![Event::stamp(
            NewEvent::new(Kind::from_static("fire.alarm"), Class::LifeSafety),
            &DeviceId::new("fire_panel_a").unwrap(),
            "test",
            &Location::default(),
        )])
        .await
        .unwrap()[0]
        .seq;
    let healthz = format!("http://{}/healthz", gw.http_addr);
    let uplink = || async {
        let body: Value = reqwest::get(&healthz).await.unwrap().json().await.unwrap();
        body["uplinks"][0].clone()
    };
    let end = Instant::now() + Duration::from_secs(30);
    let mut up = uplink().await;
    while !(up["alarm_delayed"] == true
        && up["oldest_undelivered_alarm_seconds"].as_f64() >= Some(1.0))
    {
        assert!(Instant::now() < end, "no delayed alarm in /healthz: {up}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        up = uplink().await;
    }
    let view = campusgw::console::uplinks::views(&gw.console);
    assert!(view[0].alarm_delayed, "console: {view:?}");
    assert!(
        view[0].oldest_undelivered_alarm_seconds.unwrap() >= 1.0,
        "console: {view:?}"
    );
    wait_for(
        "uplink.alarm_delayed journaled",
        Duration::from_secs(10),
        || !journaled(&gw.journal, "uplink.alarm_delayed").is_empty(),
    )
    .await;
    let delayed = journaled(&gw.journal, "uplink.alarm_delayed");
    assert_eq!(delayed[0].payload["uplink"], "county");
    assert_eq!(delayed[0].payload["seq"], fire);
    assert_eq!(delayed[0].class, Class::Security);
    wait_for(
        "the pack's alarm for the guard room",
        Duration::from_secs(10),
        || {
            journaled(&gw.journal, "alarm.raised")
                .iter()
                .any(|e| e.payload["rule"] == "uplink_alarm_delayed")
        },
    )
    .await;

    broker.restart().await;
    wait_for(
        "uplink.alarm_delay_cleared",
        Duration::from_secs(30),
        || !journaled(&gw.journal, "uplink.alarm_delay_cleared").is_empty(),
    )
    .await;
    wait_for("the pack's alarm resolved", Duration::from_secs(10), || {
        journaled(&gw.journal, "alarm.resolved")
            .iter()
            .any(|e| e.payload["rule"] == "uplink_alarm_delayed")
    })
    .await;
    let end = Instant::now() + Duration::from_secs(10);
    let mut up = uplink().await;
    while !up["oldest_undelivered_alarm_seconds"].is_null() {
        assert!(Instant::now() < end, "the age stays after delivery: {up}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        up = uplink().await;
    }
    assert_eq!(up["alarm_delayed"], false);
    assert_eq!(
        journaled(&gw.journal, "uplink.alarm_delayed").len(),
        1,
        "one uplink.alarm_delayed per episode"
    );
    gw.stop().await;
}
