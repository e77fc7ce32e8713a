//! Signed county commands over MQTT (real mosquitto): accepted, unsigned, tampered,
//! expired, replayed (also after a restart), for another gateway, not allowed by kind or
//! target, oversized, a junk flood; replies on `replies/{id}` and events in the journal.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use campusgw::commands::CommandRouter;
use campusgw::uplink::county_commands::sign;
use campusgw_sdk::Class;
use rumqttc::QoS;
use serde_json::{Value, json};
use uplink_support::{Broker, Rig, Subscriber, Tls, metric, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn body(id: &str, kind: &str, nonce: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"gateway": "school-042", "id": id, "kind": kind, "issued_at": at, "nonce": nonce, "target": "relay_1", "args": {"from_seq": 1}})
}

fn reply(sub: &Subscriber, id: &str) -> Option<Value> {
    let topic = format!("campusgw/school-042/replies/{id}");
    sub.seen
        .lock()
        .unwrap()
        .iter()
        .find(|m| m.topic == topic)
        .map(|m| serde_json::from_slice(&m.payload).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_signed_fresh_allowed_unreplayed_commands_are_executed() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/replies/+").await;
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\n[commands]\npublic_keys = [\"{public}\"]\nallow = [\"status\", \"resync\", {{ kind = \"relay.set\", targets = [\"relay_1\"] }}]\nwindow = \"1m\"\nmax_bytes = 2048\n",
        broker.plain_url()
    ));
    let mut cx = rig.context();
    cx.commands = Some(Arc::new(CommandRouter::new(
        rig.journal.clone(),
        rig.gw.clone(),
    )));
    rig.start(cfg, filter, cx);
    wait_for("connected", LIMIT, || {
        rig.status.state() == campusgw::uplink::status::LinkState::Connected
    })
    .await;
    // The uplink subscribes right after CONNACK; give the SUBACK a moment by retrying the
    // first command until its reply comes.
    let now = chrono::Utc::now();
    let send = |id: &str, payload: Vec<u8>| {
        let c = sub.client.clone();
        let topic = format!("campusgw/school-042/commands/{id}");
        async move {
            c.publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    let ok = sign(&body("c1", "status", "n1", now), &key);
    let end = std::time::Instant::now() + LIMIT;
    while reply(&sub, "c1").is_none() {
        assert!(std::time::Instant::now() < end, "no reply to c1");
        send("c1", ok.clone()).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = reply(&sub, "c1").unwrap();
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["result"]["status"], "online");

    // Replayed: the same signed message again (fresh id topic is bound to the body id,
    // so replay it under its own id after the accepted one).
    sub.seen.lock().unwrap().clear();
    send("c1", ok.clone()).await;
    wait_for("replay reply", LIMIT, || reply(&sub, "c1").is_some()).await;
    let r = reply(&sub, "c1").unwrap();
    assert_eq!(r["status"], "refused");
    assert!(r["reason"].as_str().unwrap().contains("replay"), "{r}");

    // Unsigned.
    send(
        "c2",
        json!({"body": body("c2", "status", "n2", now).to_string()})
            .to_string()
            .into_bytes(),
    )
    .await;
    // Tampered: signed, then the body changed.
    let signed: Value =
        serde_json::from_slice(&sign(&body("c3", "status", "n3", now), &key)).unwrap();
    let tampered = json!({"body": signed["body"].as_str().unwrap().replace("status", "resync"), "signature": signed["signature"]});
    send("c3", tampered.to_string().into_bytes()).await;
    // Expired.
    send(
        "c4",
        sign(
            &body("c4", "status", "n4", now - chrono::Duration::minutes(5)),
            &key,
        ),
    )
    .await;
    // Not allowed.
    send("c5", sign(&body("c5", "door.unlock", "n5", now), &key)).await;
    // Oversized and malformed.
    send("c6", vec![b'x'; 4096]).await;
    send("c7", b"{\"body\": 1".to_vec()).await;
    // A pass-through device command: accepted, routed, its result replied.
    send("c8", sign(&body("c8", "relay.set", "n8", now), &key)).await;
    // Resync accepted.
    send("c9", sign(&body("c9", "resync", "n9", now), &key)).await;
    // Resync from a time.
    let mut from_time = body("c10", "resync", "n10", now);
    from_time["args"] = json!({"from_time": "2000-01-01T00:00:00Z"});
    send("c10", sign(&from_time, &key)).await;

    let expect = [
        ("c2", "refused", "malformed"),
        ("c3", "refused", "signature"),
        ("c4", "refused", "window"),
        ("c5", "refused", "not allowed"),
        ("c6", "refused", "exceeds"),
        ("c7", "refused", "malformed"),
        ("c8", "ok", ""),
        ("c9", "ok", ""),
        ("c10", "ok", ""),
    ];
    for (id, status, reason) in expect {
        wait_for(id, LIMIT, || reply(&sub, id).is_some()).await;
        let r = reply(&sub, id).unwrap();
        assert_eq!(r["status"], status, "{id}: {r}");
        if !reason.is_empty() {
            assert!(r["reason"].as_str().unwrap().contains(reason), "{id}: {r}");
        }
    }
    // The device command went through the router (no such device here: rejected there).
    let c8 = reply(&sub, "c8").unwrap();
    assert_eq!(c8["result"][0]["status"], "rejected", "{c8}");
    assert_eq!(reply(&sub, "c9").unwrap()["result"]["resync_from_seq"], 1);
    let c10 = reply(&sub, "c10").unwrap();
    let first = rig.journal.reader().unwrap().after(0, None, 1).unwrap();
    let want = first.first().map_or(1, |e| e.seq);
    assert_eq!(c10["result"]["resync_from_seq"], want, "{c10}");
    // Every accepted command is in the journal; the refusals are summarised (the first at
    // once, the rest within the minute), not journaled one by one.
    let reader = rig.journal.reader().unwrap();
    wait_for("audit events", LIMIT, || {
        let evs = reader.after(0, Some(Class::Operations), 1000).unwrap();
        evs.iter()
            .filter(|e| e.kind.as_str() == "uplink.command")
            .count()
            >= 4
    })
    .await;
    let evs = reader.after(0, Some(Class::Operations), 1000).unwrap();
    let refused = evs
        .iter()
        .filter(|e| e.kind.as_str() == "uplink.command" && e.payload["status"] == "refused")
        .count();
    assert_eq!(refused, 0, "refusals are summarised, not journaled each");
    let summaries: Vec<_> = evs
        .iter()
        .filter(|e| e.kind.as_str() == "county.commands_refused")
        .collect();
    assert_eq!(
        summaries.len(),
        1,
        "only the first refusal's summary so far"
    );
    assert_eq!(
        summaries[0].payload["by_reason"]["replay"], 1,
        "{:?}",
        summaries[0].payload
    );
    rig.stop().await;
}

/// An MQTT uplink with commands on a journal at `path`, stoppable and startable again on
/// the same file (a gateway restart, as far as the uplink and the journal are concerned).
struct Gateway {
    journal: campusgw::journal::Journal,
    writer: campusgw::journal::WriterHandle,
    shutdown: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<()>,
    status: Arc<campusgw::uplink::UplinkStatus>,
}

fn commands_uplink(name: &str, url: &str, public: &str, allow: &str) -> String {
    format!(
        "name = \"{name}\"\nkind = \"mqtt\"\nurl = \"{url}\"\n[commands]\npublic_keys = [\"{public}\"]\nallow = {allow}\n"
    )
}

impl Gateway {
    async fn start(path: &std::path::Path, uplink_toml: &str) -> Gateway {
        let (journal, writer) =
            campusgw::journal::Journal::open(campusgw::journal::JournalOptions::new(path)).unwrap();
        let (cfg, filter) = mqtt_config(uplink_toml);
        let status = campusgw::uplink::UplinkStatus::new(&cfg.name, "mqtt");
        let shutdown = tokio_util::sync::CancellationToken::new();
        let gw = campusgw_sdk::DeviceId::new("school-042").unwrap();
        let cx = campusgw::uplink::UplinkContext {
            journal: journal.clone(),
            gateway_id: gw.clone(),
            commands: Some(Arc::new(CommandRouter::new(journal.clone(), gw))),
            drivers: None,
            shutdown: shutdown.clone(),
        };
        let up = campusgw::uplink::mqtt::MqttUplink::new(Arc::new(cfg), filter, cx, status.clone());
        let task = tokio::spawn(up.run());
        wait_for("connected", LIMIT, || {
            status.state() == campusgw::uplink::status::LinkState::Connected
        })
        .await;
        Gateway {
            journal,
            writer,
            shutdown,
            task,
            status,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("uplink stopped")
            .unwrap();
        self.journal.close().await;
        let w = self.writer;
        tokio::task::spawn_blocking(move || w.join()).await.unwrap();
        drop(self.status);
    }

    fn events(&self, kind: &str) -> Vec<campusgw_sdk::Event> {
        self.journal
            .reader()
            .unwrap()
            .after(0, Some(Class::Operations), 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .collect()
    }
}

async fn publish(sub: &Subscriber, id: &str, payload: Vec<u8>) {
    sub.client
        .publish(
            format!("campusgw/school-042/commands/{id}"),
            QoS::AtLeastOnce,
            false,
            payload,
        )
        .await
        .unwrap();
}

/// Waits until the uplink's subscription is in place: status commands with fresh ids and
/// nonces until one is answered.
async fn until_subscribed(sub: &Subscriber, key: &ed25519_dalek::SigningKey) {
    let end = std::time::Instant::now() + LIMIT;
    for i in 0.. {
        let id = format!("ready-{i}");
        let now = chrono::Utc::now();
        let nonce = format!("{id}-{}", now.timestamp_nanos_opt().unwrap_or_default());
        publish(sub, &id, sign(&body(&id, "status", &nonce, now), key)).await;
        let wait = std::time::Instant::now() + Duration::from_millis(500);
        while std::time::Instant::now() < wait {
            if reply(sub, &id).is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            std::time::Instant::now() < end,
            "the uplink never subscribed"
        );
    }
}

/// Publishes `payload` once (the subscription is in place) and returns the reply to `id`.
async fn until_reply(sub: &Subscriber, id: &str, payload: &[u8]) -> Value {
    publish(sub, id, payload.to_vec()).await;
    wait_for(id, LIMIT, || reply(sub, id).is_some()).await;
    reply(sub, id).unwrap()
}

fn key_pair() -> (ed25519_dalek::SigningKey, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let public = base64::engine::general_purpose::STANDARD.encode(key.verifying_key().to_bytes());
    (key, public)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_replayed_after_a_restart_is_refused_as_a_replay() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/replies/+").await;
    let (key, public) = key_pair();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let toml = commands_uplink(
        "restart",
        &broker.plain_url(),
        &public,
        "[\"status\", { kind = \"relay.set\", targets = [\"relay_1\"] }]",
    );
    let gw = Gateway::start(&path, &toml).await;
    until_subscribed(&sub, &key).await;
    let status = sign(&body("r1", "status", "nonce-r1", chrono::Utc::now()), &key);
    let device = sign(
        &body("r2", "relay.set", "nonce-r2", chrono::Utc::now()),
        &key,
    );
    assert_eq!(until_reply(&sub, "r1", &status).await["status"], "ok");
    assert_eq!(until_reply(&sub, "r2", &device).await["status"], "ok");
    // The device command's nonce is durable before it runs; the status one soon after.
    wait_for("both nonces stored", LIMIT, || {
        let stored = gw.journal.load_nonces(chrono::Utc::now()).unwrap();
        stored
            .iter()
            .filter(|n| n.nonce.starts_with("nonce-r"))
            .count()
            == 2
    })
    .await;
    gw.stop().await;

    let gw = Gateway::start(&path, &toml).await;
    until_subscribed(&sub, &key).await;
    sub.seen.lock().unwrap().clear();
    for (id, msg) in [("r1", &status), ("r2", &device)] {
        let r = until_reply(&sub, id, msg).await;
        assert_eq!(r["status"], "refused", "{id} after the restart: {r}");
        assert!(r["reason"].as_str().unwrap().contains("replay"), "{r}");
    }
    let ran = gw
        .events("uplink.command")
        .iter()
        .filter(|e| {
            e.payload["status"] == "ok"
                && ["r1", "r2"].contains(&e.payload["command"].as_str().unwrap())
        })
        .count();
    assert_eq!(ran, 2, "the replays did not run again");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_commands_run_only_for_allowed_targets_and_another_gateways_command_is_refused() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/replies/+").await;
    let (key, public) = key_pair();
    let dir = tempfile::tempdir().unwrap();
    let toml = commands_uplink(
        "targets",
        &broker.plain_url(),
        &public,
        "[\"status\", { kind = \"relay.set\", targets = [\"relay_1\"] }, { kind = \"door.unlock\", targets = [\"all\"] }]",
    );
    let gw = Gateway::start(&dir.path().join("journal.db"), &toml).await;
    until_subscribed(&sub, &key).await;
    let now = chrono::Utc::now();
    let with_target = |id: &str, kind: &str, target: &str| {
        let mut b = body(id, kind, id, now);
        b["target"] = json!(target);
        sign(&b, &key)
    };
    let ok = until_reply(&sub, "t1", &with_target("t1", "relay.set", "relay_1")).await;
    assert_eq!(ok["status"], "ok", "the allowed target: {ok}");
    for (id, kind, target) in [("t2", "relay.set", "relay_2"), ("t3", "relay.set", "all")] {
        let r = until_reply(&sub, id, &with_target(id, kind, target)).await;
        assert_eq!(r["status"], "refused", "{id}: {r}");
        assert!(r["reason"].as_str().unwrap().contains("not allowed"), "{r}");
    }
    let all = until_reply(&sub, "t4", &with_target("t4", "door.unlock", "all")).await;
    assert_eq!(all["status"], "ok", "\"all\" where it is listed: {all}");
    let mut elsewhere = body("t5", "status", "t5", now);
    elsewhere["gateway"] = json!("school-043");
    let r = until_reply(&sub, "t5", &sign(&elsewhere, &key)).await;
    assert_eq!(r["status"], "refused", "{r}");
    assert!(
        r["reason"].as_str().unwrap().contains("school-043"),
        "the reason names the other gateway: {r}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_junk_is_counted_and_summarised_in_one_event_and_a_valid_command_still_runs() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/replies/+").await;
    let (key, public) = key_pair();
    let dir = tempfile::tempdir().unwrap();
    let toml = commands_uplink("flood", &broker.plain_url(), &public, "[\"status\"]");
    let gw = Gateway::start(&dir.path().join("journal.db"), &toml).await;
    until_subscribed(&sub, &key).await;
    // More than the uplink handles per wake-up (256): a full batch once lost the next event.
    for i in 0..1000 {
        let junk = if i % 2 == 0 {
            format!("garbage {i}").into_bytes()
        } else {
            json!({"body": "{}", "signature": "AAAA"})
                .to_string()
                .into_bytes()
        };
        publish(&sub, &format!("j{i}"), junk).await;
    }
    let series = |reason: &str| {
        metric(&format!(
            "campusgw_uplink_commands_refused_total{{reason=\"{reason}\",uplink=\"flood\"}}"
        ))
        .or_else(|| {
            metric(&format!(
                "campusgw_uplink_commands_refused_total{{uplink=\"flood\",reason=\"{reason}\"}}"
            ))
        })
        .unwrap_or(0.0)
    };
    let end = std::time::Instant::now() + LIMIT;
    while series("malformed") + series("bad_signature") < 1000.0 {
        let text = campusgw::api::metrics_handle().render();
        let seen: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("refused_total"))
            .collect();
        assert!(
            std::time::Instant::now() < end,
            "1000 refusals not counted: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // At least: QoS 1 may deliver a message twice.
    assert!(series("malformed") >= 500.0, "{}", series("malformed"));
    assert!(
        series("bad_signature") >= 500.0,
        "{}",
        series("bad_signature")
    );
    let after = sign(&body("f1", "status", "f1", chrono::Utc::now()), &key);
    assert_eq!(until_reply(&sub, "f1", &after).await["status"], "ok");
    wait_for("the first summary journaled", LIMIT, || {
        !gw.events("county.commands_refused").is_empty()
    })
    .await;
    let summaries = gw.events("county.commands_refused");
    assert!(
        (1..=2).contains(&summaries.len()),
        "one summary, not one event per message: {}",
        summaries.len()
    );
    let first = &summaries[0].payload;
    assert_eq!(first["uplink"], "flood");
    assert!(first["first"][0]["id"] == "j0", "{first}");
    wait_for("f1 journaled", LIMIT, || {
        gw.events("uplink.command")
            .iter()
            .any(|e| e.payload["command"] == "f1")
    })
    .await;
    gw.stop().await;
}
