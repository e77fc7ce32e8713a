//! Uplink contracts no other test pins down (issue 7, item 8): the stored cursor moves only
//! on PUBACK and only over the contiguous confirmed prefix (the scripted broker withholds
//! and releases PUBACKs by packet id); the full class priority order; resume after an
//! uplink restart (real mosquitto).
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use campusgw::journal::JournalReader;
use campusgw::uplink::Filter;
use campusgw::uplink::config::MqttConfig;
use campusgw::uplink::mqtt::MqttUplink;
use campusgw_sdk::{Class, Event};
use tokio_util::sync::CancellationToken;
use uplink_support::fake_broker::{Act, FakeBroker};
use uplink_support::{Broker, Rig, Subscriber, Tls, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

fn toml_for(url: &str, extra: &str) -> String {
    format!("name = \"county\"\nkind = \"mqtt\"\nurl = \"{url}\"\n{extra}")
}

/// The stored cursor of `class` (what a restart would resume from).
fn stored(reader: &JournalReader, class: Class) -> u64 {
    reader.cursor("county", class).unwrap()
}

/// Releases the PUBACKs of `events` (in this order), then of `marker` (a telemetry event),
/// and waits until the telemetry cursor is stored at the marker. The cursor saver stores
/// every class of one snapshot in rank order, telemetry last, and the uplink handles
/// PUBACKs in the order the broker sent them: once the marker's cursor is stored, whatever
/// the earlier PUBACKs did to the other classes' cursors is stored too.
async fn release(fake: &FakeBroker, reader: &JournalReader, events: &[&Event], marker: &Event) {
    for e in events.iter().copied().chain([marker]) {
        let pkid = fake
            .pkid_of(&e.id.to_string())
            .expect("event was published");
        fake.ack(pkid);
    }
    wait_for("the marker's cursor stored", LIMIT, || {
        stored(reader, Class::Telemetry) >= marker.seq
    })
    .await;
    assert_eq!(
        stored(reader, Class::Telemetry),
        marker.seq,
        "the telemetry cursor moved past unacknowledged markers"
    );
}

/// With PUBACKs withheld the stored cursor stays put; PUBACKs released out of order move
/// it only over the contiguous confirmed prefix (MQTT 3.1.1 and 5).
async fn cursor_moves_only_on_puback_over_the_confirmed_prefix(protocol: &str) {
    let fake = FakeBroker::start(0, Act::Hold).await;
    let mut rig = Rig::open();
    // Journaled before the uplink starts, so the first fill publishes them all.
    let alarms = rig.emit(Class::LifeSafety, "fire.alarm", 5).await;
    let markers = rig.emit(Class::Telemetry, "sensor.reading", 4).await;
    let (cfg, filter) = mqtt_config(&toml_for(
        &fake.url(false),
        &format!(
            "protocol = \"{protocol}\"\ninflight = 50\nack_timeout = \"10m\"\nheartbeat = \"1h\"\n"
        ),
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    wait_for("every event published to the broker", LIMIT, || {
        alarms
            .iter()
            .chain(&markers)
            .all(|e| fake.pkid_of(&e.id.to_string()).is_some())
    })
    .await;
    let reader = rig.journal.reader().unwrap();
    let a: Vec<&Event> = alarms.iter().collect();

    // Nothing acknowledged: the alarms were sent, their cursor has not moved.
    release(&fake, &reader, &[], &markers[0]).await;
    assert_eq!(
        stored(&reader, Class::LifeSafety),
        0,
        "published is not confirmed"
    );
    // Alarms 2 and 4 acknowledged, 1 not: the gap holds the cursor.
    release(&fake, &reader, &[a[1], a[3]], &markers[1]).await;
    assert_eq!(
        stored(&reader, Class::LifeSafety),
        0,
        "past a gap the cursor waits"
    );
    // Alarm 1 fills the gap: the cursor moves over 1 and 2, and stops before unacked 3.
    release(&fake, &reader, &[a[0]], &markers[2]).await;
    assert_eq!(stored(&reader, Class::LifeSafety), a[1].seq);
    // Alarm 3: over 3 and the already acknowledged 4, not over unacked 5.
    release(&fake, &reader, &[a[2]], &markers[3]).await;
    assert_eq!(stored(&reader, Class::LifeSafety), a[3].seq);
    let pkid = fake.pkid_of(&a[4].id.to_string()).unwrap();
    fake.ack(pkid);
    wait_for("the last alarm's cursor", LIMIT, || {
        stored(&reader, Class::LifeSafety) == a[4].seq
    })
    .await;
    assert_eq!(fake.connections(), 1, "all on one session");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_cursor_moves_only_on_puback_and_only_over_the_contiguous_confirmed_prefix() {
    cursor_moves_only_on_puback_over_the_confirmed_prefix("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_the_stored_cursor_moves_only_on_puback_and_only_over_the_contiguous_confirmed_prefix()
 {
    cursor_moves_only_on_puback_over_the_confirmed_prefix("5").await;
}

/// First arrival of each event id the test journaled (source `dev-1`), in arrival order.
fn first_arrivals(sub: &Subscriber) -> Vec<Event> {
    let mut seen = HashSet::new();
    sub.events()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.source.device.as_str() == "dev-1" && seen.insert(e.id))
        .collect()
}

/// A backlog of all five classes, journaled interleaved and lowest class first, goes out
/// life_safety, security, operations, business, telemetry: each class entirely before the
/// next, each in seq order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_of_all_five_classes_goes_out_in_full_class_priority_order() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let mut rig = Rig::open();
    let mut sent = Vec::new();
    for _ in 0..4 {
        for c in Class::ALL.iter().rev() {
            sent.extend(rig.emit(*c, "backlog.item", 5).await);
        }
    }
    let (cfg, filter) = mqtt_config(&toml_for(&broker.plain_url(), "inflight = 4\n"));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    wait_for("the whole backlog", LIMIT, || {
        first_arrivals(&sub).len() >= sent.len()
    })
    .await;
    let arrivals = first_arrivals(&sub);
    let order: Vec<(u8, u64)> = arrivals.iter().map(|e| (e.class.rank(), e.seq)).collect();
    let mut want = order.clone();
    want.sort_unstable();
    assert_eq!(
        order, want,
        "class by class, highest first, each in seq order"
    );
    let classes: Vec<Class> = arrivals.iter().map(|e| e.class).collect();
    let mut distinct = classes.clone();
    distinct.dedup();
    assert_eq!(distinct, Class::ALL.to_vec());
    rig.stop().await;
}

/// An uplink task started on the rig's journal with its own shutdown token.
struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_uplink(rig: &Rig, cfg: &MqttConfig, filter: &Filter) -> Running {
    let stop = CancellationToken::new();
    let mut cx = rig.context();
    cx.shutdown = stop.clone();
    let up = MqttUplink::new(
        Arc::new(cfg.clone()),
        filter.clone(),
        cx,
        rig.status.clone(),
    );
    Running {
        stop,
        task: tokio::spawn(up.run()),
    }
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the uplink stops in time")
            .unwrap();
    }
}

/// Stopped mid-stream and started again on the same journal, the uplink resumes from its
/// stored cursors: nothing confirmed before the restart is sent again; what was unconfirmed
/// (at most the in-flight window) is resent; everything after the cursors, including events
/// journaled while it was down, is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_uplink_restart_resends_nothing_confirmed_and_delivers_everything_after_the_cursor() {
    const WINDOW: usize = 20;
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let rig = Rig::open();
    let mut sent = Vec::new();
    // Large enough that stopping after 150 arrivals is mid-stream on any machine.
    for _ in 0..20 {
        sent.extend(rig.emit(Class::Telemetry, "sensor.reading", 100).await);
        sent.extend(rig.emit(Class::LifeSafety, "fire.alarm", 2).await);
        sent.extend(rig.emit(Class::Security, "door.forced", 3).await);
    }
    let (cfg, filter) = mqtt_config(&toml_for(
        &broker.plain_url(),
        &format!("inflight = {WINDOW}\n"),
    ));
    let first = start_uplink(&rig, &cfg, &filter);
    wait_for("part of the stream delivered", LIMIT, || {
        first_arrivals(&sub).len() >= 150
    })
    .await;
    first.stop().await;
    let reader = rig.journal.reader().unwrap();
    let cursors: HashMap<Class, u64> = Class::ALL
        .iter()
        .map(|c| (*c, stored(&reader, *c)))
        .collect();
    let confirmed = |e: &Event| e.seq <= cursors[&e.class];
    let was_confirmed: HashSet<_> = sent.iter().filter(|e| confirmed(e)).map(|e| e.id).collect();
    assert!(
        !was_confirmed.is_empty() && was_confirmed.len() < sent.len(),
        "stopped mid-stream: {} of {} confirmed",
        was_confirmed.len(),
        sent.len()
    );
    // Everything confirmed reached the broker, so the subscriber gets it: wait for it all,
    // so that anything confirmed seen from here on was sent again.
    wait_for("every confirmed event at the subscriber", LIMIT, || {
        let got: HashSet<_> = first_arrivals(&sub).iter().map(|e| e.id).collect();
        was_confirmed.is_subset(&got)
    })
    .await;
    let before = sub.events().len();
    let seen_before: HashSet<_> = sub.events().iter().map(|(_, e)| e.id).collect();
    // Journaled while the uplink is down.
    sent.extend(rig.emit(Class::Telemetry, "sensor.reading", 30).await);
    sent.extend(rig.emit(Class::LifeSafety, "fire.alarm", 3).await);

    let second = start_uplink(&rig, &cfg, &filter);
    let want: HashSet<_> = sent.iter().map(|e| e.id).collect();
    wait_for("every event after the restart", LIMIT, || {
        let got: HashSet<_> = first_arrivals(&sub).iter().map(|e| e.id).collect();
        want.is_subset(&got)
    })
    .await;
    second.stop().await;
    let after: Vec<Event> = sub.events()[before..]
        .iter()
        .map(|(_, e)| e.clone())
        .filter(|e| e.source.device.as_str() == "dev-1")
        .collect();
    let after_ids: HashSet<_> = after.iter().map(|e| e.id).collect();
    for e in &after {
        assert!(
            !was_confirmed.contains(&e.id),
            "{} seq {} was confirmed before the restart and sent again",
            e.class,
            e.seq
        );
    }
    for e in sent.iter().filter(|e| !confirmed(e)) {
        assert!(
            after_ids.contains(&e.id),
            "{} seq {} past the cursor not delivered after the restart",
            e.class,
            e.seq
        );
    }
    let resent = after_ids.intersection(&seen_before).count();
    assert!(
        resent <= WINDOW,
        "{resent} events sent again: more than the in-flight window of {WINDOW}"
    );
    eprintln!(
        "confirmed before the restart: {}; resent after it: {resent}",
        was_confirmed.len()
    );
    rig.stop().await;
}

/// Future-dated signed county commands over the wire: one dated beyond the window ahead
/// of the gateway clock is refused (reply names the window, audit says refused) and not
/// executed; one just inside the window is executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_county_command_dated_beyond_the_window_ahead_is_refused_and_one_just_inside_runs()
{
    use base64::Engine;
    use rumqttc::QoS;
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/replies/+").await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[43; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&toml_for(
        &broker.plain_url(),
        &format!(
            "[commands]\npublic_keys = [\"{public}\"]\nallow = [\"status\"]\nwindow = \"1m\"\n"
        ),
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let reply = |id: &str| {
        let topic = format!("campusgw/school-042/replies/{id}");
        sub.seen
            .lock()
            .unwrap()
            .iter()
            .find(|m| m.topic == topic)
            .map(|m| serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap())
    };
    let send = |id: &str, at: chrono::DateTime<chrono::Utc>| {
        let body = serde_json::json!({"gateway": "school-042", "id": id, "kind": "status", "issued_at": at, "nonce": id});
        let payload = campusgw::uplink::county_commands::sign(&body, &key);
        let c = sub.client.clone();
        let topic = format!("campusgw/school-042/commands/{id}");
        async move {
            c.publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    // Resent until answered: the uplink subscribes to commands only once connected. A
    // refused command's nonce is not remembered, so resending it changes nothing.
    let end = std::time::Instant::now() + LIMIT;
    while reply("ahead").is_none() {
        assert!(
            std::time::Instant::now() < end,
            "no reply to the future-dated command"
        );
        send("ahead", chrono::Utc::now() + chrono::Duration::seconds(120)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = reply("ahead").unwrap();
    assert_eq!(r["status"], "refused", "{r}");
    assert!(r["reason"].as_str().unwrap().contains("window"), "{r}");
    send("inside", chrono::Utc::now() + chrono::Duration::seconds(50)).await;
    wait_for("the reply to the command inside the window", LIMIT, || {
        reply("inside").is_some()
    })
    .await;
    let r = reply("inside").unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["result"]["status"], "online", "{r}");
    let reader = rig.journal.reader().unwrap();
    let audit = |id: &str| {
        reader
            .after(0, Some(Class::Operations), 1000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == "uplink.command" && e.payload["command"] == id)
            .map(|e| e.payload["status"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    // Refusals are summarised (`county.commands_refused`), not audited one by one.
    let summarised = || {
        reader
            .after(0, Some(Class::Operations), 1000)
            .unwrap()
            .into_iter()
            .any(|e| {
                e.kind.as_str() == "county.commands_refused"
                    && e.payload["first"][0]["id"] == "ahead"
                    && e.payload["first"][0]["reason"] == "outside_window"
            })
    };
    wait_for("audited and summarised", LIMIT, || {
        summarised() && !audit("inside").is_empty()
    })
    .await;
    assert!(audit("ahead").is_empty(), "{:?}", audit("ahead"));
    assert_eq!(audit("inside"), vec!["ok".to_owned()]);
    rig.stop().await;
}
