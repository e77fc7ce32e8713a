//! The county MQTT uplink against a real mosquitto: plain TCP, TLS, mutual TLS, a wrong CA,
//! an expired server certificate; MQTT 3.1.1 and MQTT 5 (PUBACK reason codes honoured).
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::HashSet;
use std::time::Duration;

use campusgw::uplink::UplinkStatus;
use campusgw_sdk::Class;
use uplink_support::fake_broker::{Act, FakeBroker};
use uplink_support::{Broker, Rig, Subscriber, Tls, certs, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn toml_for(url: &str, extra: &str) -> String {
    format!("name = \"county\"\nkind = \"mqtt\"\nurl = \"{url}\"\nheartbeat = \"200ms\"\n{extra}")
}

async fn delivers_everything(rig: &mut Rig, broker: &Broker, url: &str, extra: &str) {
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/#").await;
    let (cfg, filter) = mqtt_config(&toml_for(url, extra));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let mut sent = rig.emit(Class::Telemetry, "sensor.reading", 20).await;
    sent.extend(rig.emit(Class::LifeSafety, "fire.alarm", 5).await);
    sent.extend(rig.emit(Class::Business, "access.granted", 10).await);
    let want: HashSet<_> = sent.iter().map(|e| e.id).collect();
    wait_for("every event at the subscriber", LIMIT, || {
        let got: HashSet<_> = sub.events().iter().map(|(_, e)| e.id).collect();
        want.is_subset(&got)
    })
    .await;
    for (topic, e) in sub.events() {
        // Freshly emitted events carry the current schema (2 since batched readings).
        assert_eq!(e.schema, campusgw_sdk::EVENT_SCHEMA_VERSION);
        assert_eq!(
            topic,
            format!("campusgw/school-042/events/{}/{}", e.class.as_str(), e.kind)
        );
    }
    // Cursors are stored once confirmed: each class up to its last seq.
    let last = |c: Class| {
        sent.iter()
            .filter(|e| e.class == c)
            .map(|e| e.seq)
            .max()
            .unwrap()
    };
    let reader = rig.journal.reader().unwrap();
    wait_for("cursors stored", LIMIT, || {
        [Class::Telemetry, Class::LifeSafety, Class::Business]
            .iter()
            .all(|c| reader.cursor("county", *c).unwrap() >= last(*c))
    })
    .await;
    // The retained status says online, with a backlog per class.
    wait_for("retained online status", LIMIT, || {
        sub.seen.lock().unwrap().iter().any(|m| {
            m.topic == "campusgw/school-042/status"
                && serde_json::from_slice::<serde_json::Value>(&m.payload).unwrap()["status"]
                    == "online"
        })
    })
    .await;
    let snap = rig.status.snapshot();
    assert!(snap.confirmed >= want.len() as u64, "{snap:?}");
}

/// Protocol lines for the uplink config: MQTT 3.1.1 (the default) and MQTT 5.
const V311: &str = "";
const V5: &str = "protocol = \"5\"\n";

async fn plain_case(protocol: &str) {
    let broker = Broker::start(Tls::None).await;
    let mut rig = Rig::open();
    let url = broker.plain_url();
    delivers_everything(&mut rig, &broker, &url, protocol).await;
    rig.stop().await;
}

async fn tls_case(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let broker = Broker::start(Tls::Server(&c)).await;
    let mut rig = Rig::open();
    let extra = format!("{protocol}ca_file = \"{}\"\n", c.ca.display());
    let url = broker.tls_url();
    delivers_everything(&mut rig, &broker, &url, &extra).await;
    rig.stop().await;
}

async fn mutual_tls_case(protocol: &str) {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let broker = Broker::start(Tls::Mutual(&c)).await;
    let mut rig = Rig::open();
    let extra = format!(
        "{protocol}ca_file = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
        c.ca.display(),
        c.client_cert.display(),
        c.client_key.display()
    );
    let url = broker.tls_url();
    delivers_everything(&mut rig, &broker, &url, &extra).await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_tcp_publishes_every_event_on_its_class_topic_and_stores_cursors() {
    plain_case(V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_plain_tcp_publishes_every_event_on_its_class_topic_and_stores_cursors() {
    plain_case(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_test_ca_delivers() {
    tls_case(V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_tls_with_the_test_ca_delivers() {
    tls_case(V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_presents_the_client_certificate() {
    mutual_tls_case(V311).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_mutual_tls_presents_the_client_certificate() {
    mutual_tls_case(V5).await;
}

/// Why the broker's certificate must be refused.
#[derive(Clone, Copy)]
enum BadCertificate {
    /// Signed by a CA other than the configured one.
    WrongCa,
    /// Signed by the configured CA but expired.
    Expired,
}

/// The uplink refuses the broker's certificate with a clear error, journals one
/// `uplink.down` (security, reason certificate), counts it, keeps retrying and delivers
/// nothing.
async fn refuses_the_certificate(bad: BadCertificate, needles: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let c = certs(dir.path());
    let (tls, ca) = match bad {
        BadCertificate::WrongCa => (Tls::Server(&c), &c.other_ca),
        BadCertificate::Expired => (Tls::Expired(&c), &c.ca),
    };
    let broker = Broker::start(tls).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/#").await;
    let mut rig = Rig::open();
    let extra = format!("ca_file = \"{}\"\n", ca.display());
    let (cfg, filter) = mqtt_config(&toml_for(&broker.tls_url(), &extra));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    rig.emit(Class::LifeSafety, "fire.alarm", 3).await;
    wait_for("a certificate error", LIMIT, || {
        rig.status
            .snapshot()
            .last_error
            .is_some_and(|e| needles.iter().all(|n| e.contains(n)))
    })
    .await;
    let reader = rig.journal.reader().unwrap();
    wait_for("uplink.down journaled", LIMIT, || {
        reader
            .after(0, Some(Class::Security), 100)
            .unwrap()
            .iter()
            .any(|e| e.kind.as_str() == "uplink.down" && e.payload["reason"] == "certificate")
    })
    .await;
    let snap = rig.status.snapshot();
    assert_eq!(snap.confirmed, 0);
    assert_eq!(sub.count_events(), 0);
    assert_eq!(reader.cursor("county", Class::LifeSafety).unwrap(), 0);
    let text = campusgw::api::metrics_handle().render();
    assert!(
        text.contains("campusgw_uplink_failures_total") && text.contains("reason=\"certificate\""),
        "{text}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_the_wrong_ca_is_refused_with_a_clear_error() {
    refuses_the_certificate(
        BadCertificate::WrongCa,
        &["server certificate failed verification"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_server_certificate_is_refused_with_a_clear_error() {
    refuses_the_certificate(
        BadCertificate::Expired,
        &["server certificate failed verification", "expired"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kind_filter_skips_unwanted_kinds_but_moves_their_cursor() {
    let broker = Broker::start(Tls::None).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/#").await;
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&toml_for(
        &broker.plain_url(),
        "classes = [\"life_safety\"]\nkinds = [\"fire.*\"]\n",
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let panic = rig.emit(Class::LifeSafety, "panic.alarm", 3).await;
    let fire = rig.emit(Class::LifeSafety, "fire.alarm", 2).await;
    rig.emit(Class::Telemetry, "sensor.reading", 3).await;
    let reader = rig.journal.reader().unwrap();
    let last = fire.last().unwrap().seq;
    wait_for("life_safety cursor past everything", LIMIT, || {
        reader.cursor("county", Class::LifeSafety).unwrap() >= last
    })
    .await;
    // PUBACK reaches the uplink before the broker's copy reaches the subscriber.
    wait_for("the subscriber got the fire alarms", LIMIT, || {
        sub.count_events() >= fire.len()
    })
    .await;
    let got: Vec<_> = sub.events().into_iter().map(|(_, e)| e.id).collect();
    assert!(fire.iter().all(|e| got.contains(&e.id)));
    assert!(panic.iter().all(|e| !got.contains(&e.id)));
    assert_eq!(got.len(), 2, "only fire.* of life_safety");
    rig.stop().await;
}

/// An MQTT 5 PUBACK refusing an event as not authorized (0x87) is link trouble, not a
/// verdict on the event (issue 7): the events are kept, their cursor stays, the uplink
/// raises `uplink.down` (reason `auth`) and retries on a new session, and higher classes
/// still go first. The broker is the test's judging broker (a real MQTT 5 session that
/// refuses telemetry topics with 0x87, as an ACL would): mosquitto 2.0.11 sends the same
/// 0x87 PUBACK but then drops the connection ("Bad socket read/write").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_puback_not_authorized_keeps_the_events_and_retries_while_alarms_still_go() {
    let broker = FakeBroker::start(0, Act::Judge).await;
    let mut rig = Rig::open();
    // Metrics are process-wide and the other tests here also run an uplink "county": this
    // one's status gets a name of its own, so its rejected_total counts only its events.
    rig.status = UplinkStatus::new("county-judged", "mqtt");
    let (cfg, filter) = mqtt_config(&toml_for(
        &broker.url(false),
        &format!("{V5}inflight = 10\n"),
    ));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let denied = rig.emit(Class::Telemetry, "sensor.reading", 10).await;
    let allowed = rig.emit(Class::LifeSafety, "fire.alarm", 3).await;
    let reader = rig.journal.reader().unwrap();
    wait_for("the alarms confirmed", LIMIT, || {
        reader.cursor("county", Class::LifeSafety).unwrap() >= allowed.last().unwrap().seq
    })
    .await;
    let refusals = |id: &str| {
        broker
            .publishes
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, rc, p)| *rc == 0x87 && p["id"] == id)
            .count()
    };
    let first = denied[0].id.to_string();
    wait_for(
        "the first telemetry event refused on two sessions",
        LIMIT,
        || refusals(&first) >= 2,
    )
    .await;
    assert_eq!(reader.cursor("county", Class::Telemetry).unwrap(), 0);
    assert!(broker.connections() >= 2, "retried on a new session");
    wait_for("uplink.down (security, auth) journaled", LIMIT, || {
        reader
            .after(0, Some(Class::Security), 100)
            .unwrap()
            .iter()
            .any(|e| e.kind.as_str() == "uplink.down" && e.payload["reason"] == "auth")
    })
    .await;
    let snap = rig.status.snapshot();
    assert_eq!(snap.rejected, 0, "{snap:?}");
    assert_eq!(snap.last_reason, Some("auth"), "{snap:?}");
    rig.stop().await;
}
