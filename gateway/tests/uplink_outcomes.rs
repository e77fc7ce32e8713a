//! Issue 7 "Delivery outcomes that cannot lose an alarm": a destination refusing our
//! credentials, endpoint or quota is a link failure (retried, cursor kept, `uplink.down`),
//! never a verdict on the alarm; only an explicit "this one event is malformed" rejects it,
//! and a rejected alarm is kept, listed, raised and resent on request. Also: an unreadable
//! secret stops the uplink instead of sending without it, and a panicking uplink task is
//! restarted.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use campusgw::journal::rejected::RejectedReader;
use campusgw::journal::{Journal, JournalOptions, RetentionPolicy, UplinkSpec, WriterHandle};
use campusgw::uplink::config::WebhookConfig;
use campusgw::uplink::status::LinkState;
use campusgw::uplink::webhook::WebhookUplink;
use campusgw::uplink::{UplinkContext, UplinkSettings, UplinkStatus};
use campusgw_sdk::{Class, DeviceId, Event, FieldPath, Kind, Location, NewEvent};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uplink_support::fake_broker::{Act, FakeBroker};
use uplink_support::{Rig, mqtt_config, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// What the scripted destination answers.
#[derive(Debug, Clone, Default)]
struct Script {
    /// Answer every POST with this status (0: judge normally).
    all: u16,
    /// Answer 400 to any batch holding an event whose payload has `"bad": true`.
    refuse_bad: bool,
    /// Answer 401 unless `Authorization: Bearer <token>`.
    token: Option<String>,
}

/// One POST: the status answered, the event ids, the Authorization header.
#[derive(Debug, Clone)]
struct Post {
    code: u16,
    ids: Vec<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct Destination {
    script: Mutex<Script>,
    log: Mutex<Vec<Post>>,
}

impl Destination {
    fn set(&self, f: impl FnOnce(&mut Script)) {
        f(&mut self.script.lock().unwrap());
    }
    fn posts(&self) -> Vec<Post> {
        self.log.lock().unwrap().clone()
    }
    /// Whether `id` was in a batch answered `code`.
    fn saw(&self, id: &str, code: u16) -> bool {
        self.posts()
            .iter()
            .any(|p| p.code == code && p.ids.iter().any(|i| i == id))
    }
}

async fn ingest(State(d): State<Arc<Destination>>, headers: HeaderMap, body: String) -> StatusCode {
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    let ids = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let auth = headers
        .get("authorization")
        .map(|v| v.to_str().unwrap().to_owned());
    let s = d.script.lock().unwrap().clone();
    let code = if s
        .token
        .as_ref()
        .is_some_and(|t| auth.as_deref() != Some(&format!("Bearer {t}")))
    {
        401
    } else if s.all != 0 {
        s.all
    } else if s.refuse_bad && events.iter().any(|e| e["payload"]["bad"] == true) {
        400
    } else {
        200
    };
    d.log.lock().unwrap().push(Post { code, ids, auth });
    StatusCode::from_u16(code).unwrap()
}

/// A local HTTP destination; returns its `/ingest` URL.
async fn destination() -> (Arc<Destination>, String) {
    let d = Arc::new(Destination::default());
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(d.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (d, format!("http://{addr}/ingest"))
}

/// A journal in a temp dir that knows the `archive` uplink (for retention) and keeps
/// delivered events no time at all, so retention deletes whatever it may.
struct Site {
    journal: Journal,
    writer: Option<WriterHandle>,
    shutdown: CancellationToken,
    dir: tempfile::TempDir,
}

impl Site {
    fn open() -> Site {
        let dir = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(dir.path().join("journal.db"));
        o.retention = RetentionPolicy {
            max_age: Duration::ZERO,
            ..RetentionPolicy::default()
        };
        o.uplinks = vec![UplinkSpec {
            name: "archive".into(),
            classes: vec![Class::LifeSafety, Class::Security],
        }];
        let (journal, writer) = Journal::open(o).unwrap();
        Site {
            journal,
            writer: Some(writer),
            shutdown: CancellationToken::new(),
            dir,
        }
    }

    fn context(&self) -> UplinkContext {
        UplinkContext {
            journal: self.journal.clone(),
            gateway_id: DeviceId::new("school-042").unwrap(),
            commands: None,
            drivers: None,
            shutdown: self.shutdown.clone(),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.journal.close().await;
        if let Some(w) = self.writer.take() {
            let _ = tokio::task::spawn_blocking(move || w.join()).await;
        }
    }
}

async fn emit(journal: &Journal, class: Class, kind: &'static str, payload: Value) -> Event {
    let mut e = Event::stamp(
        NewEvent::new(Kind::from_static(kind), class).payload(payload),
        &DeviceId::new("panel-1").unwrap(),
        "test",
        &Location::default(),
    );
    let r = journal.append(vec![e.clone()]).await.unwrap();
    e.seq = r[0].seq;
    e
}

fn webhook_config(url: &str, extra: &str) -> (WebhookConfig, campusgw::uplink::Filter) {
    let classes = if extra.contains("classes") {
        ""
    } else {
        "classes = [\"life_safety\", \"security\"]\n"
    };
    let text = format!(
        "name = \"archive\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout = \"2s\"\n{classes}{extra}"
    );
    let u = campusgw::uplink::parse(toml::from_str(&text).unwrap(), &FieldPath::root())
        .ok()
        .unwrap();
    let UplinkSettings::Webhook(c) = u.settings else {
        panic!("webhook")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(50), Duration::from_millis(300));
    (c, u.filter)
}

fn start_webhook(site: &Site, url: &str, extra: &str) -> Arc<UplinkStatus> {
    let (c, filter) = webhook_config(url, extra);
    let status = UplinkStatus::new("archive", "webhook");
    let up = WebhookUplink::new(Arc::new(c), filter, site.context(), status.clone());
    tokio::spawn(up.run());
    status
}

/// Events of `kind` in the journal.
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

/// The destination refuses with `code` for a while: the fire alarm raised meanwhile is
/// posted again and again, never confirmed, its cursor stays, `uplink.down` (class
/// `security`, with `reason`) is journaled once; then the destination accepts and the alarm
/// arrives, followed by `uplink.up`.
async fn refused_then_accepted(code: u16, reason: &str) {
    let (dest, url) = destination().await;
    dest.set(|s| s.all = code);
    let site = Site::open();
    let status = start_webhook(&site, &url, "");
    let fire = emit(
        &site.journal,
        Class::LifeSafety,
        "fire.alarm",
        json!({"zone": 3}),
    )
    .await;
    let id = fire.id.to_string();
    let reader = site.journal.reader().unwrap();
    wait_for("three refused posts of the alarm", LIMIT, || {
        dest.posts()
            .iter()
            .filter(|p| p.code == code && p.ids.contains(&id))
            .count()
            >= 3
    })
    .await;
    assert_eq!(
        reader.cursor("archive", Class::LifeSafety).unwrap(),
        0,
        "{code}: the cursor never moves past a refused alarm"
    );
    let snap = status.snapshot();
    assert_eq!(snap.state, LinkState::Down, "{code}: {snap:?}");
    assert_eq!(snap.last_reason, Some(reason), "{code}: {snap:?}");
    assert_eq!((snap.confirmed, snap.rejected), (0, 0), "{code}: {snap:?}");
    wait_for("uplink.down journaled", LIMIT, || {
        !journaled(&site.journal, "uplink.down").is_empty()
    })
    .await;
    let downs = journaled(&site.journal, "uplink.down");
    assert_eq!(downs.len(), 1, "{code}: one uplink.down per outage");
    assert_eq!(downs[0].class, Class::Security);
    assert_eq!(downs[0].payload["reason"], reason);
    dest.set(|s| s.all = 0);
    wait_for("the alarm delivered", LIMIT, || dest.saw(&id, 200)).await;
    wait_for("the cursor past the alarm", LIMIT, || {
        reader.cursor("archive", Class::LifeSafety).unwrap() >= fire.seq
    })
    .await;
    wait_for("uplink.up journaled", LIMIT, || {
        !journaled(&site.journal, "uplink.up").is_empty()
    })
    .await;
    assert!(
        RejectedReader::open(&site.path())
            .unwrap()
            .list(None)
            .unwrap()
            .is_empty()
    );
    site.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_401_then_200_delivers_the_fire_alarm_raised_during_the_401s() {
    refused_then_accepted(401, "auth").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_403_404_407_and_429_are_retried_like_401_and_the_alarm_arrives() {
    for (code, reason) in [
        (403, "auth"),
        (404, "config"),
        (407, "auth"),
        (429, "throttled"),
    ] {
        refused_then_accepted(code, reason).await;
    }
}

/// A 400 on a batch of five where the destination refuses exactly one event: the batch is
/// bisected, four are delivered, that one is rejected (recorded, raised, listed by `campusgw
/// uplink rejected`, kept by retention) and resent after `retry-rejected` once the
/// destination accepts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_on_a_batch_of_five_rejects_only_the_refused_event_which_is_kept_listed_and_resent_on_request()
 {
    let (dest, url) = destination().await;
    dest.set(|s| s.refuse_bad = true);
    let site = Site::open();
    // Five security events committed together, so they leave in one batch.
    let events: Vec<Event> = (0..5)
        .map(|i| {
            Event::stamp(
                NewEvent::new(Kind::from_static("door.forced"), Class::Security)
                    .payload(json!({"i": i, "bad": i == 2})),
                &DeviceId::new("door-1").unwrap(),
                "test",
                &Location::default(),
            )
        })
        .collect();
    let receipts = site.journal.append(events.clone()).await.unwrap();
    let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
    let status = start_webhook(&site, &url, "batch = 5\n");
    let reader = site.journal.reader().unwrap();
    wait_for("security cursor past the five", LIMIT, || {
        reader.cursor("archive", Class::Security).unwrap() >= seqs[4]
    })
    .await;
    let posts = dest.posts();
    assert_eq!(
        posts[0].ids.len(),
        5,
        "first posted as one batch: {posts:?}"
    );
    assert_eq!(posts[0].code, 400);
    let bad = events[2].id.to_string();
    for (i, e) in events.iter().enumerate() {
        let id = e.id.to_string();
        assert_eq!(
            dest.saw(&id, 200),
            i != 2,
            "event {i} delivered unless refused"
        );
    }
    // Listed (durably, before the cursor moved).
    let list = RejectedReader::open(&site.path())
        .unwrap()
        .list(Some("archive"))
        .unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0].seq, seqs[2]);
    assert_eq!(list[0].id.as_deref(), Some(bad.as_str()));
    assert!(list[0].reason.contains("400"), "{list:?}");
    assert_eq!(status.snapshot().rejected, 1);
    // Raised: one uplink.rejected alarm naming it.
    wait_for("uplink.rejected journaled", LIMIT, || {
        journaled(&site.journal, "uplink.rejected")
            .iter()
            .any(|e| e.class == Class::Security && e.payload["event_ids"] == json!([bad]))
    })
    .await;
    // The operator's view.
    let out = campusgw(&["uplink", "rejected", "--data-dir"], site.dir.path(), &[]);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let l = &lines[0];
    assert_eq!(
        (&l["uplink"], &l["seq"], &l["class"], &l["kind"], &l["id"]),
        (
            &json!("archive"),
            &json!(seqs[2]),
            &json!("security"),
            &json!("door.forced"),
            &json!(bad)
        ),
        "{l}"
    );
    assert!(
        l["reason"].as_str().unwrap().contains("400") && l["rejected_at"].is_string(),
        "{l}"
    );
    // Retention deletes the delivered events but keeps the rejected one.
    site.journal.maintain().await.unwrap();
    assert!(
        reader.get(seqs[2]).unwrap().is_some(),
        "the rejected event is kept"
    );
    assert!(
        reader.get(seqs[0]).unwrap().is_none(),
        "delivered events expire"
    );
    // The destination is fixed; the operator asks for a resend while the uplink runs.
    dest.set(|s| s.refuse_bad = false);
    let out = campusgw(
        &[
            "uplink",
            "retry-rejected",
            "--uplink",
            "archive",
            "--seq",
            &seqs[2].to_string(),
            "--data-dir",
        ],
        site.dir.path(),
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    wait_for("the rejected event resent and delivered", LIMIT, || {
        dest.saw(&bad, 200)
    })
    .await;
    wait_for("unlisted once delivered", LIMIT, || {
        RejectedReader::open(&site.path())
            .unwrap()
            .list(None)
            .unwrap()
            .is_empty()
    })
    .await;
    site.stop().await;
}

/// Runs the campusgw binary with `args`, then `dir`, then `more`.
fn campusgw(args: &[&str], dir: &Path, more: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(args)
        .arg(dir)
        .args(more)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_token_file_posts_nothing_and_the_uplink_recovers_once_the_file_is_fixed() {
    let (dest, url) = destination().await;
    dest.set(|s| s.token = Some("s3cret".into()));
    let site = Site::open();
    // The file exists when the config is checked, then becomes unreadable: a directory in
    // its place cannot be read, even by root.
    let token = site.dir.path().join("archive.token");
    uplink_support::write_secret(&token, "old\n");
    let (c, filter) = webhook_config(&url, &format!("token_file = \"{}\"\n", token.display()));
    std::fs::remove_file(&token).unwrap();
    std::fs::create_dir(&token).unwrap();
    let status = UplinkStatus::new("archive", "webhook");
    let up = WebhookUplink::new(Arc::new(c), filter, site.context(), status.clone());
    tokio::spawn(up.run());
    let fire = emit(&site.journal, Class::LifeSafety, "fire.alarm", json!({})).await;
    wait_for("status down with reason config", LIMIT, || {
        let s = status.snapshot();
        s.state == LinkState::Down
            && s.last_reason == Some("config")
            && s.last_error
                .as_deref()
                .is_some_and(|e| e.contains("token_file"))
    })
    .await;
    wait_for("uplink.down journaled", LIMIT, || {
        journaled(&site.journal, "uplink.down")
            .iter()
            .any(|e| e.payload["reason"] == "config")
    })
    .await;
    // Retried periodically: several failures counted, and still nothing posted.
    wait_for("repeated config failures", LIMIT, || {
        failures("archive", "config") >= 3
    })
    .await;
    assert!(
        dest.posts().is_empty(),
        "nothing is posted without the token"
    );
    std::fs::remove_dir(&token).unwrap();
    uplink_support::write_secret(&token, "s3cret\n");
    let id = fire.id.to_string();
    wait_for("the alarm delivered with the token", LIMIT, || {
        dest.saw(&id, 200)
    })
    .await;
    assert!(
        dest.posts()
            .iter()
            .all(|p| p.auth.as_deref() == Some("Bearer s3cret"))
    );
    wait_for("connected", LIMIT, || {
        status.snapshot().state == LinkState::Connected
    })
    .await;
    site.stop().await;
}

/// `campusgw_uplink_failures_total{uplink, reason}` as rendered.
fn failures(uplink: &str, reason: &str) -> u64 {
    let text = campusgw::api::metrics_handle().render();
    text.lines()
        .filter(|l| {
            l.starts_with("campusgw_uplink_failures_total{")
                && l.contains(&format!("uplink=\"{uplink}\""))
                && l.contains(&format!("reason=\"{reason}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_uplink_panic_restarts_the_task_and_the_alarm_still_arrives() {
    let (dest, url) = destination().await;
    let site = Site::open();
    let (c, filter) = webhook_config(&url, "");
    let u = campusgw::config::UplinkConfig {
        name: "archive".into(),
        kind: "webhook",
        filter,
        settings: UplinkSettings::Webhook(Arc::new(c)),
    };
    let uplinks = campusgw::uplink::start(std::slice::from_ref(&u), &site.context());
    let status = uplinks.board.0[0].clone();
    let first = emit(&site.journal, Class::Security, "door.forced", json!({})).await;
    wait_for("first event delivered", LIMIT, || {
        dest.saw(&first.id.to_string(), 200)
    })
    .await;
    status.inject_panic_for_test();
    let fire = emit(&site.journal, Class::LifeSafety, "fire.alarm", json!({})).await;
    wait_for("the alarm delivered after the restart", LIMIT, || {
        dest.saw(&fire.id.to_string(), 200)
    })
    .await;
    let snap = status.snapshot();
    assert_eq!(snap.restarts, 1, "{snap:?}");
    wait_for("uplink.down with reason crashed", LIMIT, || {
        journaled(&site.journal, "uplink.down")
            .iter()
            .any(|e| e.payload["reason"] == "crashed")
    })
    .await;
    let text = campusgw::api::metrics_handle().render();
    assert!(
        text.lines()
            .any(|l| l.starts_with("campusgw_uplink_restarts_total{")
                && l.contains("archive")
                && l.ends_with(" 1")),
        "{text}"
    );
    site.shutdown.cancel();
    uplinks.join(Duration::from_secs(10)).await;
    site.stop().await;
}

const V5: &str = "protocol = \"5\"\ninflight = 10\n";

fn mqtt_toml(url: &str) -> String {
    format!("name = \"county\"\nkind = \"mqtt\"\nurl = \"{url}\"\n{V5}")
}

/// Whether the judging broker acknowledged event `id` with reason code `rc`.
fn judged(broker: &FakeBroker, id: &str, rc: u8) -> usize {
    broker
        .publishes
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, c, p)| *c == rc && p["id"] == id)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_puback_0x87_then_ok_delivers_the_alarm_raised_meanwhile() {
    let broker = FakeBroker::start(0, Act::JudgeAll(0x87)).await;
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&mqtt_toml(&broker.url(false)));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let fire = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    let id = fire.id.to_string();
    let reader = rig.journal.reader().unwrap();
    wait_for(
        "the alarm refused with 0x87 on two connections",
        LIMIT,
        || judged(&broker, &id, 0x87) >= 2,
    )
    .await;
    assert_eq!(reader.cursor("county", Class::LifeSafety).unwrap(), 0);
    let snap = rig.status.snapshot();
    assert_eq!(snap.last_reason, Some("auth"), "{snap:?}");
    assert_eq!((snap.confirmed, snap.rejected), (0, 0), "{snap:?}");
    assert!(
        snap.last_error.as_deref().unwrap().contains("0x87"),
        "{snap:?}"
    );
    wait_for("uplink.down (security, auth) journaled", LIMIT, || {
        journaled(&rig.journal, "uplink.down")
            .iter()
            .any(|e| e.class == Class::Security && e.payload["reason"] == "auth")
    })
    .await;
    broker.set(Act::Judge);
    wait_for("the alarm acknowledged", LIMIT, || {
        judged(&broker, &id, 0) >= 1
    })
    .await;
    wait_for("the cursor past the alarm", LIMIT, || {
        reader.cursor("county", Class::LifeSafety).unwrap() >= fire.seq
    })
    .await;
    let list = RejectedReader::open(&rig.dir.path().join("journal.db"))
        .unwrap()
        .list(None)
        .unwrap();
    assert!(list.is_empty(), "{list:?}");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_connack_not_authorized_then_ok_delivers_the_alarm() {
    // MQTT 5 §3.2.2.2: 0x87 not authorized.
    let broker = FakeBroker::start(0, Act::Refuse(0x87)).await;
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&mqtt_toml(&broker.url(false)));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let fire = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    wait_for("refused as auth", LIMIT, || {
        let s = rig.status.snapshot();
        s.last_reason == Some("auth") && broker.connections() >= 2
    })
    .await;
    let reader = rig.journal.reader().unwrap();
    assert_eq!(reader.cursor("county", Class::LifeSafety).unwrap(), 0);
    broker.set(Act::Judge);
    wait_for("the alarm acknowledged", LIMIT, || {
        judged(&broker, &fire.id.to_string(), 0) >= 1
    })
    .await;
    wait_for("the cursor past the alarm", LIMIT, || {
        reader.cursor("county", Class::LifeSafety).unwrap() >= fire.seq
    })
    .await;
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_5_puback_0x99_rejects_the_alarm_which_is_recorded_before_its_cursor_moves() {
    let broker = FakeBroker::start(0, Act::JudgeAll(0x99)).await;
    let mut rig = Rig::open();
    let (cfg, filter) = mqtt_config(&mqtt_toml(&broker.url(false)));
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let fire = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    let reader = rig.journal.reader().unwrap();
    wait_for("the cursor past the rejected alarm", LIMIT, || {
        reader.cursor("county", Class::LifeSafety).unwrap() >= fire.seq
    })
    .await;
    let list = RejectedReader::open(&rig.dir.path().join("journal.db"))
        .unwrap()
        .list(Some("county"))
        .unwrap();
    assert!(
        list.iter()
            .any(|r| r.seq == fire.seq && r.reason.contains("0x99")),
        "{list:?}"
    );
    wait_for("uplink.rejected naming the alarm", LIMIT, || {
        journaled(&rig.journal, "uplink.rejected")
            .iter()
            .any(|e| e.payload["event_ids"] == json!([fire.id.to_string()]))
    })
    .await;
    // The uplink.rejected alarm is itself refused by this broker: kept, never alarmed about.
    wait_for("the alarm about the alarm is settled too", LIMIT, || {
        rig.status.snapshot().rejected >= 2
    })
    .await;
    assert_eq!(journaled(&rig.journal, "uplink.rejected").len(), 1);
    assert_eq!(
        judged(&broker, &fire.id.to_string(), 0x99),
        1,
        "never retried"
    );
    rig.stop().await;
}

/// The whole gateway: a webhook uplink whose token file disappears after the config was
/// checked shows up in `/healthz` as down with reason `config`, and posts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_shows_an_uplink_stopped_by_its_missing_token_file() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (dest, url) = destination().await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("archive.token");
    uplink_support::write_secret(&token, "s3cret\n");
    let text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[[uplink]]\nname = \"archive\"\nkind = \"webhook\"\nurl = \"{url}\"\ntoken_file = \"{}\"\n",
        dir.path().display(),
        token.display()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let config = campusgw::config::load(&path).unwrap();
    std::fs::remove_file(&token).unwrap();
    let gw = campusgw::app::Gateway::start(config, campusgw::app::RunOptions::default())
        .await
        .unwrap();
    let healthz = format!("http://{}/healthz", gw.http_addr);
    let mut body = Value::Null;
    let end = std::time::Instant::now() + LIMIT;
    while std::time::Instant::now() < end {
        body = reqwest::get(&healthz).await.unwrap().json().await.unwrap();
        if body["uplinks"][0]["last_reason"] == "config" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let up = &body["uplinks"][0];
    assert_eq!(up["last_reason"], "config", "{body}");
    assert_eq!(up["state"], "down", "{body}");
    assert!(
        up["last_error"].as_str().unwrap().contains("token_file"),
        "{body}"
    );
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(dest.posts().is_empty(), "nothing posted without the token");
    gw.stop().await;
}

/// A lower-class event the destination refuses on its own is counted and logged, not
/// listed or alarmed about, and the uplink moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_telemetry_event_is_counted_but_not_listed_or_alarmed() {
    let (dest, url) = destination().await;
    dest.set(|s| s.refuse_bad = true);
    let site = Site::open();
    let status = start_webhook(&site, &url, "classes = [\"telemetry\"]\n");
    let bad = emit(
        &site.journal,
        Class::Telemetry,
        "sensor.reading",
        json!({"bad": true}),
    )
    .await;
    let good = emit(&site.journal, Class::Telemetry, "sensor.reading", json!({})).await;
    let reader = site.journal.reader().unwrap();
    wait_for("telemetry cursor past both", LIMIT, || {
        reader.cursor("archive", Class::Telemetry).unwrap() >= good.seq
    })
    .await;
    assert!(dest.saw(&bad.id.to_string(), 400));
    assert!(dest.saw(&good.id.to_string(), 200));
    assert_eq!(status.snapshot().rejected, 1);
    assert!(
        RejectedReader::open(&site.path())
            .unwrap()
            .list(None)
            .unwrap()
            .is_empty()
    );
    assert!(journaled(&site.journal, "uplink.rejected").is_empty());
    site.stop().await;
}

/// An MQTT password file that disappears after the config was checked: no connection is
/// even attempted without it (status down, reason `config`); once it is back the alarm
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_mqtt_password_file_connects_nowhere_until_it_is_back() {
    let broker = FakeBroker::start(0, Act::Judge).await;
    let mut rig = Rig::open();
    let pass = rig.dir.path().join("county.pass");
    uplink_support::write_secret(&pass, "pw\n");
    let (cfg, filter) = mqtt_config(&format!(
        "{}username = \"school-042\"\npassword_file = \"{}\"\n",
        mqtt_toml(&broker.url(false)),
        pass.display()
    ));
    std::fs::remove_file(&pass).unwrap();
    let cx = rig.context();
    rig.start(cfg, filter, cx);
    let fire = rig.emit(Class::LifeSafety, "fire.alarm", 1).await.remove(0);
    wait_for("repeated config failures", LIMIT, || {
        let s = rig.status.snapshot();
        s.last_reason == Some("config") && failures("county", "config") >= 3
    })
    .await;
    assert_eq!(
        broker.connections(),
        0,
        "no connection without the password"
    );
    uplink_support::write_secret(&pass, "pw\n");
    wait_for("the alarm acknowledged", LIMIT, || {
        judged(&broker, &fire.id.to_string(), 0) >= 1
    })
    .await;
    rig.stop().await;
}
