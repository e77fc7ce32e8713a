//! Issue 3 "Bad input": a broker that hangs up during the handshake, refuses the client id,
//! answers slowly or withholds PUBACKs. Each time the uplink reports a clear error (status
//! `last_error`, `campusgw_uplink_failures_total{reason}`), retries with back-off, never
//! blocks the journal writer or the drivers, and once the broker behaves (the scripted
//! broker starts proxying to a real mosquitto) delivers everything, losing nothing.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use campusgw::uplink::status::LinkState;
use campusgw_sdk::{Class, EventId, Kind, NewEvent};
use uplink_support::fake_broker::{Act, FakeBroker};
use uplink_support::{Broker, Certs, Rig, Subscriber, Tls, certs, mqtt_config, wait_for};

/// Deadline of every wait: generous, for a loaded CI machine.
const LIMIT: Duration = Duration::from_secs(60);

/// A real mosquitto, the scripted broker in front of it, a subscriber behind it, and an
/// uplink pointed at the scripted broker.
struct Case {
    rig: Rig,
    fake: FakeBroker,
    sub: Subscriber,
    _broker: Broker,
    _certs: Option<(tempfile::TempDir, Certs)>,
}

async fn case(tls: bool, protocol: &str, act: Act, extra: &str) -> Case {
    let certs = tls.then(|| {
        let dir = tempfile::tempdir().unwrap();
        let c = certs(dir.path());
        (dir, c)
    });
    let broker = match &certs {
        Some((_, c)) => Broker::start(Tls::Server(c)).await,
        None => Broker::start(Tls::None).await,
    };
    let upstream = broker.tls.unwrap_or(broker.plain);
    let fake = FakeBroker::start(upstream, act).await;
    let sub = Subscriber::start(broker.plain, "campusgw/school-042/events/#").await;
    let ca = certs
        .as_ref()
        .map(|(_, c)| format!("ca_file = \"{}\"\n", c.ca.display()))
        .unwrap_or_default();
    let (cfg, filter) = mqtt_config(&format!(
        "name = \"county\"\nkind = \"mqtt\"\nurl = \"{}\"\nprotocol = \"{protocol}\"\n{ca}{extra}",
        fake.url(tls)
    ));
    let mut rig = Rig::open();
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    Case {
        rig,
        fake,
        sub,
        _broker: broker,
        _certs: certs,
    }
}

/// 1,000 events through driver contexts (8 drivers, 125 each) all commit while the broker
/// misbehaves; returns their ids. A journal writer or driver blocked by the uplink would
/// never finish them, so a generous deadline tells "blocked" from "slow on a loaded
/// machine"; how fast they commit is the ingest benchmark's business, not this test's.
async fn journal_keeps_committing(rig: &Rig) -> Vec<EventId> {
    let started = Instant::now();
    let mut drivers = Vec::new();
    for d in 0..8 {
        let cx = campusgw::bench::ingest::local_context(&rig.journal, &format!("panel-{d}"));
        drivers.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..125 {
                let (kind, class) = if i % 25 == 0 {
                    ("fire.alarm", Class::LifeSafety)
                } else {
                    ("sensor.reading", Class::Telemetry)
                };
                let r = cx
                    .emit(NewEvent::new(Kind::from_static(kind), class))
                    .await
                    .unwrap();
                ids.push(r.id);
            }
            ids
        }));
    }
    let all = tokio::time::timeout(
        Duration::from_secs(120),
        futures_util::future::join_all(drivers),
    )
    .await
    .expect("1,000 emits commit while the broker misbehaves (deadline 120 s)");
    let mut ids = Vec::new();
    for r in all {
        ids.extend(r.unwrap());
    }
    eprintln!("1,000 emits in {:?}", started.elapsed());
    ids
}

async fn wait_for_error(rig: &Rig, what: &str, limit: Duration, needle: &[&str]) -> String {
    wait_for(what, limit, || {
        let s = rig.status.snapshot();
        s.state == LinkState::Down
            && s.last_error
                .as_deref()
                .is_some_and(|e| needle.iter().all(|n| e.contains(n)))
    })
    .await;
    let e = rig.status.snapshot().last_error.unwrap();
    eprintln!("last_error: {e}");
    e
}

fn assert_failure_metric(reason: &str) {
    let text = campusgw::api::metrics_handle().render();
    let label = format!("reason=\"{reason}\"");
    assert!(
        text.lines()
            .any(|l| l.starts_with("campusgw_uplink_failures_total{") && l.contains(&label)),
        "no failures_total with {label} in\n{text}"
    );
}

/// At least `n` attempts, none closer together than the back-off floor (base 100 ms with
/// equal jitter: at least 50 ms).
async fn assert_backs_off(fake: &FakeBroker, n: usize) {
    wait_for("repeated attempts", LIMIT, || fake.connections() >= n).await;
    let times = fake.accepted.lock().unwrap().clone();
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(40),
            "reconnected after {:?}: no back-off",
            w[1] - w[0]
        );
    }
}

async fn all_delivered(c: &Case, ids: &[EventId]) {
    let want: HashSet<_> = ids.iter().copied().collect();
    wait_for("every event at the subscriber", LIMIT, || {
        let got: HashSet<_> = c.sub.events().iter().map(|(_, e)| e.id).collect();
        want.is_subset(&got)
    })
    .await;
    let reader = c.rig.journal.reader().unwrap();
    wait_for("cursors at the end", LIMIT, || {
        reader.backlog("county", Class::Telemetry).unwrap() == 0
            && reader.backlog("county", Class::LifeSafety).unwrap() == 0
    })
    .await;
    assert_eq!(c.rig.status.snapshot().state, LinkState::Connected);
}

async fn hang_up_during_handshake(tls: bool) {
    let c = case(tls, "3.1.1", Act::HangUp, "").await;
    let needle: &[&str] = if tls {
        &["connecting to", "tls handshake failed"]
    } else {
        &["connecting to", "failed"]
    };
    wait_for_error(&c.rig, "a handshake error", LIMIT, needle).await;
    assert_backs_off(&c.fake, 3).await;
    let ids = journal_keeps_committing(&c.rig).await;
    assert_failure_metric(if tls { "tls" } else { "network" });
    assert_eq!(c.rig.status.snapshot().confirmed, 0);
    c.fake.set(Act::Proxy);
    all_delivered(&c, &ids).await;
    c.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_hanging_up_during_connect_is_retried_and_never_blocks_the_journal() {
    hang_up_during_handshake(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_hanging_up_during_the_tls_handshake_is_retried_and_never_blocks_the_journal() {
    hang_up_during_handshake(true).await;
}

async fn refused_client_id(protocol: &str, code: u8, needle: &str) {
    let c = case(false, protocol, Act::Refuse(code), "").await;
    wait_for_error(&c.rig, "a refusal", LIMIT, &["broker refused", needle]).await;
    assert_backs_off(&c.fake, 3).await;
    let ids = journal_keeps_committing(&c.rig).await;
    assert_failure_metric("refused");
    // Journaled once per outage, as a security event (an alarm naming the reason).
    let reader = c.rig.journal.reader().unwrap();
    let downs = reader
        .after(0, Some(Class::Security), 1000)
        .unwrap()
        .into_iter()
        .filter(|e| e.kind.as_str() == "uplink.down")
        .count();
    assert_eq!(downs, 1, "one uplink.down for the whole outage");
    c.fake.set(Act::Proxy);
    all_delivered(&c, &ids).await;
    c.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_id_is_reported_and_retried_mqtt_3_1_1() {
    // MQTT 3.1.1 §3.2.2.3: return code 2, "identifier rejected".
    refused_client_id("3.1.1", 2, "BadClientId").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_client_id_is_reported_and_retried_mqtt_5() {
    // MQTT 5 §3.2.2.2: reason 0x85, "client identifier not valid".
    refused_client_id("5", 0x85, "ClientIdentifierNotValid").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connack_later_than_the_connect_timeout_is_reported_and_a_slow_one_still_works() {
    let c = case(false, "3.1.1", Act::Delay(Duration::from_secs(7)), "").await;
    // Drivers keep going while the first attempt waits for its CONNACK.
    let mut ids = journal_keeps_committing(&c.rig).await;
    wait_for_error(&c.rig, "a connect timeout", LIMIT, &["no CONNACK"]).await;
    assert_failure_metric("network");
    // Slow but inside the timeout: connects and delivers.
    c.fake.set(Act::Delay(Duration::from_secs(2)));
    ids.extend(journal_keeps_committing(&c.rig).await);
    all_delivered(&c, &ids).await;
    c.rig.stop().await;
}

async fn withheld_pubacks(protocol: &str) {
    let c = case(
        false,
        protocol,
        Act::Mute,
        "ack_timeout = \"1s\"\ninflight = 20\n",
    )
    .await;
    let mut ids = journal_keeps_committing(&c.rig).await;
    wait_for_error(&c.rig, "a stall", LIMIT, &["no PUBACK"]).await;
    assert_failure_metric("stalled");
    // Still muted: the window is full and unconfirmed, the journal does not care.
    ids.extend(journal_keeps_committing(&c.rig).await);
    assert_eq!(c.rig.status.snapshot().confirmed, 0);
    assert!(c.fake.connections() >= 2, "reconnected after the stall");
    // A session that confirms nothing never counts as up: not Connected, the stall still
    // named, and one uplink.down for the whole outage however often it reconnected.
    let snap = c.rig.status.snapshot();
    assert_ne!(snap.state, LinkState::Connected, "{snap:?}");
    assert!(
        snap.last_error
            .as_deref()
            .unwrap_or("")
            .contains("no PUBACK"),
        "{snap:?}"
    );
    let kinds = |kind: &str| {
        let reader = c.rig.journal.reader().unwrap();
        reader
            .after(0, None, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .count()
    };
    assert_eq!(
        kinds("uplink.down"),
        1,
        "one uplink.down for the whole stall"
    );
    assert_eq!(kinds("uplink.up"), 0, "never up while nothing is confirmed");
    c.fake.set(Act::Proxy);
    all_delivered(&c, &ids).await;
    wait_for("uplink.up once delivering", LIMIT, || {
        kinds("uplink.up") == 1
    })
    .await;
    assert_eq!(c.rig.status.snapshot().state, LinkState::Connected);
    c.rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_pubacks_are_reported_as_a_stall_and_resent_mqtt_3_1_1() {
    withheld_pubacks("3.1.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn withheld_pubacks_are_reported_as_a_stall_and_resent_mqtt_5() {
    withheld_pubacks("5").await;
}
