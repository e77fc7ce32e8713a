//! The county uplink through broker restarts and a large backlog (real mosquitto).
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use campusgw_sdk::Class;
use uplink_support::{Broker, Rig, Subscriber, Tls, mqtt_config, wait_for};

/// First arrival of each event id, in arrival order.
fn first_arrivals(sub: &Subscriber) -> Vec<campusgw_sdk::Event> {
    let mut seen = HashSet::new();
    sub.events()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| seen.insert(e.id))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_mid_stream_lose_nothing_and_keep_class_order() {
    restarts_lose_nothing("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_broker_restarts_mid_stream_lose_nothing_and_keep_class_order() {
    restarts_lose_nothing("5").await;
}

async fn restarts_lose_nothing(protocol: &str) {
    let mut broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\ninflight = 50\nprotocol = \"{protocol}\"\n",
        broker.plain_url()
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let mut sent = Vec::new();
    for round in 0..4 {
        // Events keep arriving while the broker goes away and comes back.
        for _ in 0..10 {
            sent.extend(rig.emit(Class::Telemetry, "sensor.reading", 40).await);
            sent.extend(rig.emit(Class::LifeSafety, "fire.alarm", 3).await);
            sent.extend(rig.emit(Class::Security, "door.forced", 5).await);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if round < 3 {
            broker.stop().await;
            sent.extend(rig.emit(Class::LifeSafety, "fire.alarm", 5).await);
            sent.extend(rig.emit(Class::Telemetry, "sensor.reading", 100).await);
            broker.restart().await;
        }
    }
    let want: HashSet<_> = sent.iter().map(|e| e.id).collect();
    wait_for(
        "every event id at least once",
        Duration::from_secs(120),
        || {
            let got: HashSet<_> = sub.events().iter().map(|(_, e)| e.id).collect();
            want.is_subset(&got)
        },
    )
    .await;
    let arrivals = first_arrivals(&sub);
    let mut last: HashMap<Class, u64> = HashMap::new();
    for e in &arrivals {
        let prev = last.insert(e.class, e.seq).unwrap_or(0);
        assert!(
            e.seq > prev,
            "{} seq {} arrived after seq {prev}",
            e.class,
            e.seq
        );
    }
    let snap = rig.status.snapshot();
    eprintln!(
        "sent {} events; subscriber saw {} messages ({} duplicates); uplink published {}",
        want.len(),
        sub.count_events(),
        sub.count_events() - arrivals.len(),
        snap.published
    );
    rig.stop().await;
}

/// 100,000 events journaled during an outage drain with every life_safety event first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_backlog_drains_life_safety_before_older_telemetry() {
    const TOTAL: usize = 100_000;
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let mut rig = Rig::open();
    // The outage: events pile up before the uplink runs; alarms are the newest.
    let mut life = 0;
    for chunk in 0..(TOTAL / 5000) {
        rig.emit(Class::Telemetry, "sensor.reading", 4990).await;
        rig.emit(Class::LifeSafety, "fire.alarm", 10).await;
        life += 10;
        let _ = chunk;
    }
    let (cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\n",
        broker.plain_url()
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    wait_for("the whole backlog", Duration::from_secs(300), || {
        sub.count_events() >= TOTAL
    })
    .await;
    let arrivals = first_arrivals(&sub);
    assert_eq!(arrivals.len(), TOTAL);
    let last_life = arrivals
        .iter()
        .rposition(|e| e.class == Class::LifeSafety)
        .unwrap();
    let first_tele = arrivals
        .iter()
        .position(|e| e.class == Class::Telemetry)
        .unwrap();
    assert_eq!(
        last_life + 1,
        life,
        "every life_safety event is among the first {life}"
    );
    assert!(
        last_life < first_tele,
        "all life_safety before any telemetry"
    );
    let reader = rig.journal.reader().unwrap();
    wait_for("backlog zero", Duration::from_secs(30), || {
        reader.backlog("county", Class::Telemetry).unwrap() == 0
            && reader.backlog("county", Class::LifeSafety).unwrap() == 0
    })
    .await;
    rig.stop().await;
}
