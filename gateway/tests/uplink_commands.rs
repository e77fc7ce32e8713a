//! Signed county commands over MQTT (real mosquitto): accepted, unsigned, tampered,
//! expired, replayed, oversized; replies on `replies/{id}` and audit events in the journal.
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
use uplink_support::{Broker, Rig, Subscriber, Tls, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn body(id: &str, kind: &str, nonce: &str, at: chrono::DateTime<chrono::Utc>) -> Value {
    json!({"id": id, "kind": kind, "issued_at": at, "nonce": nonce, "target": "relay_1", "args": {"from_seq": 1}})
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
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\n[commands]\npublic_keys = [\"{public}\"]\nallow = [\"status\", \"resync\", \"relay.set\"]\nwindow = \"1m\"\nmax_bytes = 2048\n",
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
    // Every command, accepted or refused, is in the journal.
    let reader = rig.journal.reader().unwrap();
    wait_for("audit events", LIMIT, || {
        let evs = reader.after(0, Some(Class::Operations), 1000).unwrap();
        evs.iter()
            .filter(|e| e.kind.as_str() == "uplink.command")
            .count()
            >= 11
    })
    .await;
    rig.stop().await;
}
