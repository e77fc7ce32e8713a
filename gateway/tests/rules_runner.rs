//! The rules runner in a real gateway: a fire confirmed by two Modbus detectors unlocks the
//! door at a Modbus simulator through the journal; the alarm lifecycle through AlarmStore;
//! a refused reload keeps the old set; notifier bodies against a local HTTP server.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use campusgw::alarms::{AlarmError, AlarmFilter};
use campusgw::app::{Gateway, RunOptions};
use campusgw::notify::{Message, Notifier, NotifierConfig};
use campusgw_modbus::sim::Simulator;

const LIMIT: Duration = Duration::from_secs(30);

const FIRE_RULE: &str = r#"
[[rule]]
id = "fire_confirmed"
description = "Two detectors of one building within a minute: release the door, raise a critical alarm"
trigger = { kinds = ["fire.alarm"] }
group_by = "building"
pattern = { type = "confirm", devices = 2, within = "60s" }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:door_release_a"
args = { point = "main_entrance", on = true }
[[rule.actions]]
type = "alarm"
severity = "critical"
title = "Confirmed fire in building {event.location.building}"
"#;

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + LIMIT;
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

struct Rig {
    _dir: tempfile::TempDir,
    rules_dir: std::path::PathBuf,
    det1: Simulator,
    det2: Simulator,
    door: Simulator,
    /// Two door releases in building B (scope commands).
    door_b1: Simulator,
    door_b2: Simulator,
    gw: Gateway,
}

fn detector(id: &str, zone: &str, sim: &Simulator) -> String {
    format!(
        r#"
[[device]]
id = "{id}"
driver = "modbus_tcp"
location = "main/A/1/{zone}"
address = "{addr}"
poll_interval = "50ms"
[[device.points]]
name = "alarm"
table = "discrete_input"
address = 0
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
"#,
        addr = sim.local_addr()
    )
}

fn door_device(id: &str, sim: &Simulator) -> String {
    format!(
        r#"
[[device]]
id = "{id}"
driver = "modbus_tcp"
location = "main/B"
address = "{addr}"
poll_interval = "1s"
[[device.points]]
name = "main_entrance"
table = "coil"
address = 0
writable = true
"#,
        addr = sim.local_addr()
    )
}

impl Rig {
    async fn start(rules: &str) -> Rig {
        Rig::start_with(rules, "").await
    }

    /// With `extra` appended to the config (e.g. an `[[uplink]]`).
    async fn start_with(rules: &str, extra: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("fire.toml"), rules).unwrap();
        let det1 = Simulator::start().await.unwrap();
        let det2 = Simulator::start().await.unwrap();
        let door = Simulator::start().await.unwrap();
        let door_b1 = Simulator::start().await.unwrap();
        let door_b2 = Simulator::start().await.unwrap();
        let text = format!(
            r#"
[gateway]
id = "school-1"
name = "Test school"
data_dir = "{data}"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["east", "west"]
[[campus.building]]
id = "B"
[console]
listen = "127.0.0.1:0"
[rules]
dir = "{rules}"
reload_poll = "100ms"
command_timeout = "5s"
{d1}{d2}
[[device]]
id = "door_release_a"
driver = "modbus_tcp"
location = "main/A/1/west"
address = "{door}"
poll_interval = "1s"
[[device.points]]
name = "main_entrance"
table = "coil"
address = 0
writable = true
{b1}{b2}{extra}"#,
            data = dir.path().join("data").display(),
            rules = rules_dir.display(),
            d1 = detector("det_1", "east", &det1),
            d2 = detector("det_2", "west", &det2),
            door = door.local_addr(),
            b1 = door_device("door_b1", &door_b1),
            b2 = door_device("door_b2", &door_b2),
        );
        let config = campusgw::config::parse(&text, Path::new("<test>")).unwrap();
        let gw = Gateway::start(config, RunOptions::default()).await.unwrap();
        Rig {
            _dir: dir,
            rules_dir,
            det1,
            det2,
            door,
            door_b1,
            door_b2,
            gw,
        }
    }

    fn events(&self, kind: &str) -> Vec<campusgw_sdk::Event> {
        let r = self.gw.journal.reader().unwrap();
        r.after(0, None, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .collect()
    }

    fn cursor(&self) -> u64 {
        let r = self.gw.journal.rules_reader().unwrap();
        r.state("rules").unwrap().map(|(c, _)| c).unwrap_or(0)
    }

    /// Both detectors alarm, one after the other; returns when the door coil is on.
    async fn confirmed_fire(&self) {
        self.det1.set_discrete_input(0, true);
        wait_for("the first fire.alarm", || {
            !self.events("fire.alarm").is_empty()
        })
        .await;
        let first = self.events("fire.alarm")[0].seq;
        wait_for("the runner to consume the first alarm", || {
            self.cursor() >= first
        })
        .await;
        assert!(
            !self.door.coil(0),
            "one detector alone must not release the door"
        );
        self.det2.set_discrete_input(0, true);
        wait_for("the door coil", || self.door.coil(0)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fire_confirmed_by_two_detectors_releases_the_door_at_the_modbus_sim_with_one_alarm_and_one_logged_command()
 {
    let rig = Rig::start(FIRE_RULE).await;
    rig.confirmed_fire().await;
    wait_for("alarm.raised", || !rig.events("alarm.raised").is_empty()).await;
    let raised = rig.events("alarm.raised");
    assert_eq!(raised.len(), 1, "one confirmed fire, one alarm");
    assert_eq!(raised[0].class, campusgw_sdk::Class::LifeSafety);
    assert_eq!(raised[0].payload["severity"], "critical");
    let second = rig.events("fire.alarm")[1].seq;
    assert!(raised[0].seq > second, "the alarm follows what caused it");
    let list = rig.gw.alarms.list(&AlarmFilter::default()).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].state, "raised");
    assert_eq!(list[0].severity, "critical");
    assert_eq!(list[0].building.as_deref(), Some("A"));
    let actions = rig.gw.journal.rules_reader().unwrap();
    wait_for("the command row to be done", || {
        actions
            .all_actions()
            .unwrap()
            .iter()
            .any(|a| a.status == "done")
    })
    .await;
    let rows = actions.all_actions().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].kind, "command");
    assert_eq!(rows[0].alarm.as_deref(), Some(list[0].id.as_str()));
    assert_eq!(rows[0].attempts, 1);
    let results = rig.events("command.result");
    assert!(
        results
            .iter()
            .any(|e| e.payload["result"]["status"] == "succeeded"),
        "{results:?}"
    );
    rig.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alarm_is_acknowledged_then_resolved_through_the_store_and_refuses_a_second_resolve() {
    let rig = Rig::start(FIRE_RULE).await;
    let mut live = rig.gw.alarms.subscribe();
    rig.confirmed_fire().await;
    let store = rig.gw.alarms.clone();
    wait_for("the alarm on the board", || {
        !store.list(&AlarmFilter::default()).unwrap().is_empty()
    })
    .await;
    let id = store.list(&AlarmFilter::default()).unwrap()[0].id.clone();
    store.acknowledge(&id, "wang", "on my way").await.unwrap();
    wait_for("acknowledged", || {
        store.get(&id).unwrap().unwrap().view.state == "acknowledged"
    })
    .await;
    let detail = store.get(&id).unwrap().unwrap();
    assert_eq!(detail.view.alarm["acknowledged"][0], "wang");
    store
        .resolve(&id, "wang", "false alarm: burnt toast")
        .await
        .unwrap();
    // The alarm rows are readable once the runner's step committed; its events and the
    // live announcement follow once the step is durable (journal/durable.rs), so wait for
    // what is durable before counting.
    wait_for("resolved", || {
        store.get(&id).unwrap().unwrap().view.state == "resolved"
            && !rig.events("alarm.resolved").is_empty()
    })
    .await;
    let detail = store.get(&id).unwrap().unwrap();
    let changes: Vec<&str> = detail
        .timeline
        .iter()
        .filter(|t| t.seq.is_some())
        .map(|t| t.what.as_str())
        .collect();
    assert_eq!(changes, ["raised", "acknowledged", "resolved"]);
    assert!(detail.timeline.iter().any(|t| t.what == "command"));
    assert_eq!(rig.events("alarm.acknowledged").len(), 1);
    assert_eq!(rig.events("alarm.resolved").len(), 1);
    assert!(matches!(
        store.resolve(&id, "wang", "again").await,
        Err(AlarmError::AlreadyResolved { .. })
    ));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match tokio::time::timeout(Duration::from_secs(10), live.recv()).await {
            Ok(Ok(v)) => seen.push(v.state),
            _ => break,
        }
    }
    assert_eq!(seen, ["raised", "acknowledged", "resolved"]);
    assert!(live.try_recv().is_err(), "no further change announced");
    rig.gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_rule_set_is_refused_at_reload_and_the_old_set_keeps_linking() {
    let rig = Rig::start(FIRE_RULE).await;
    let failures = || async {
        let text = campusgw::api::metrics_handle().render();
        text.lines()
            .find(|l| l.starts_with("campusgw_rules_reload_failures_total"))
            .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The runner is up (it has stored a cursor), so the change below is a reload.
    wait_for("the runner's first cursor", || rig.cursor() > 0).await;
    let before = failures().await;
    // Same rule id twice and an unknown pattern: refused as a whole.
    std::fs::write(
        rig.rules_dir.join("zz_broken.toml"),
        "[[rule]]\nid = \"fire_confirmed\"\ntrigger = { kinds = [\"fire.alarm\"] }\npattern = { type = \"sometimes\", within = \"1s\" }\n",
    )
    .unwrap();
    let end = Instant::now() + LIMIT;
    while failures().await <= before {
        assert!(
            Instant::now() < end,
            "the broken set was not refused: {}",
            campusgw::api::metrics_handle().render()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.confirmed_fire().await;
    wait_for("alarm.raised", || !rig.events("alarm.raised").is_empty()).await;
    rig.gw.stop().await;
}

/// Every `command.result` journaled for `device`, oldest first.
fn results_of(rig: &Rig, device: &str) -> Vec<campusgw_sdk::Event> {
    rig.events("command.result")
        .into_iter()
        .filter(|e| e.payload["result"]["device"] == device)
        .collect()
}

const SCOPE_RULE: &str = r#"
[[rule]]
id = "release_building_b"
description = "A fire alarm of det_1 releases every door of building B"
trigger = { kinds = ["fire.alarm"], devices = ["det_1"] }
retry = { attempts = 8, backoff = "200ms" }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "building:B"
args = { point = "main_entrance", on = true }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_command_retries_only_the_device_that_failed_and_logs_each_devices_outcome() {
    let rig = Rig::start(SCOPE_RULE).await;
    // Door b2 does not answer: its first attempt fails, b1's succeeds.
    rig.door_b2.set_silent(true);
    rig.det1.set_discrete_input(0, true);
    wait_for("door b1 released", || rig.door_b1.coil(0)).await;
    wait_for("door b2's first failure", || {
        results_of(&rig, "door_b2")
            .iter()
            .any(|e| e.payload["result"]["status"] == "failed")
    })
    .await;
    rig.door_b2.set_silent(false);
    wait_for("door b2 released by a retry", || rig.door_b2.coil(0)).await;
    let actions = rig.gw.journal.rules_reader().unwrap();
    wait_for("the row to be done", || {
        actions
            .all_actions()
            .unwrap()
            .iter()
            .any(|a| a.status == "done")
    })
    .await;
    let b1 = results_of(&rig, "door_b1");
    assert_eq!(
        b1.len(),
        1,
        "the door that opened is not sent the command again: {b1:?}"
    );
    let b2 = results_of(&rig, "door_b2");
    assert!(b2.len() >= 2, "{b2:?}");
    assert_eq!(b2.last().unwrap().payload["result"]["status"], "succeeded");
    let rows = actions.all_actions().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].attempts as usize,
        b2.len(),
        "one attempt per try of b2"
    );
    // The row's result holds each device's latest outcome.
    let result = rows[0].result.clone().unwrap();
    let by_device: Vec<(String, String)> = result
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["device"].as_str().unwrap().to_owned(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        by_device.contains(&("door_b1".into(), "succeeded".into())),
        "{by_device:?}"
    );
    assert!(
        by_device.contains(&("door_b2".into(), "succeeded".into())),
        "{by_device:?}"
    );
    rig.gw.stop().await;
}

const FORWARD_RULES: &str = r#"
[[rule]]
id = "fire_to_police"
description = "Every fire alarm of det_1 goes to the police uplink too"
trigger = { kinds = ["fire.alarm"], devices = ["det_1"] }
[[rule.actions]]
type = "forward"
uplink = "police"

[[rule]]
id = "reset_to_police"
description = "The reset as well, which the police uplink's own filter already carries"
trigger = { kinds = ["fire.reset"], devices = ["det_1"] }
[[rule.actions]]
type = "forward"
uplink = "police"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_reaches_the_named_uplink_once_and_what_its_filter_carries_is_not_sent_twice() {
    let (url, seen) = receiver(serde_json::json!({})).await;
    // The uplink's own filter carries fire.reset but not fire.alarm.
    let uplink = format!(
        "\n[[uplink]]\nname = \"police\"\nkind = \"webhook\"\nurl = \"{url}/ingest\"\nclasses = [\"life_safety\"]\nkinds = [\"fire.reset\"]\n"
    );
    let rig = Rig::start_with(FORWARD_RULES, &uplink).await;
    rig.det1.set_discrete_input(0, true);
    wait_for("the fire alarm", || !rig.events("fire.alarm").is_empty()).await;
    rig.det1.set_discrete_input(0, false);
    wait_for("the reset", || !rig.events("fire.reset").is_empty()).await;
    let actions = rig.gw.journal.rules_reader().unwrap();
    wait_for("both forward rows settled", || {
        let rows = actions.all_actions().unwrap();
        rows.len() == 2 && rows.iter().all(|a| a.status != "queued")
    })
    .await;
    let alarm = rig.events("fire.alarm")[0].id.to_string();
    let reset = rig.events("fire.reset")[0].id.to_string();
    let sent = |id: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .flat_map(|(_, body)| body.as_array().cloned().unwrap_or_default())
            .filter(|e| e["id"] == id)
            .count()
    };
    wait_for("the reset through the filter", || sent(&reset) > 0).await;
    let rows = actions.all_actions().unwrap();
    let status = |rule: &str| {
        rows.iter()
            .find(|a| a.rule == rule)
            .map(|a| a.status.clone())
            .unwrap()
    };
    assert_eq!(status("fire_to_police"), "delivered", "{rows:?}");
    assert_eq!(status("reset_to_police"), "carried", "{rows:?}");
    assert_eq!(sent(&alarm), 1, "the forwarded alarm arrives once");
    assert_eq!(
        sent(&reset),
        1,
        "what the filter carries is not forwarded again"
    );
    rig.gw.stop().await;
}

const NOWHERE_RULE: &str = r#"
[[rule]]
id = "release_building_c"
description = "A fire alarm of det_1 releases the doors of building C, which has none"
trigger = { kinds = ["fire.alarm"], devices = ["det_1"] }
[[rule.actions]]
type = "command"
command = "door.unlock"
target = "building:C"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_gives_up_raises_the_packs_linkage_failed_alarm_naming_command_and_target() {
    let rig = Rig::start(NOWHERE_RULE).await;
    let pack = Path::new(env!("CARGO_MANIFEST_DIR")).join("../rules/pack/operations.toml");
    std::fs::copy(pack, rig.rules_dir.join("operations.toml")).unwrap();
    // Let the reload take the pack file in before the fire.
    let reloads = || {
        campusgw::api::metrics_handle()
            .render()
            .lines()
            .any(|l| l.starts_with("campusgw_rules_reloads_total"))
    };
    wait_for("the pack file to be loaded", reloads).await;
    wait_for("the runner's first cursor", || rig.cursor() > 0).await;
    rig.det1.set_discrete_input(0, true);
    wait_for("rule.action_failed", || {
        !rig.events("rule.action_failed").is_empty()
    })
    .await;
    wait_for("the linkage_failed alarm", || {
        rig.events("alarm.raised")
            .iter()
            .any(|e| e.payload["rule"] == "linkage_failed")
    })
    .await;
    let raised: Vec<_> = rig
        .events("alarm.raised")
        .into_iter()
        .filter(|e| e.payload["rule"] == "linkage_failed")
        .collect();
    assert_eq!(raised.len(), 1, "{raised:?}");
    let title = raised[0].payload["title"].as_str().unwrap();
    assert!(
        title.contains("door.unlock to building:C") && title.contains("release_building_c"),
        "{title}"
    );
    assert_eq!(raised[0].payload["severity"], "major");
    rig.gw.stop().await;
}

/// A local receiver that records each request (path and query, JSON body) and answers
/// with `answer`.
async fn receiver(
    answer: serde_json::Value,
) -> (String, Arc<Mutex<Vec<(String, serde_json::Value)>>>) {
    use axum::extract::State;
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    type Shared = (
        Arc<Mutex<Vec<(String, serde_json::Value)>>>,
        serde_json::Value,
    );
    async fn take(
        State((seen, answer)): State<Shared>,
        uri: axum::http::Uri,
        axum::Json(body): axum::Json<serde_json::Value>,
    ) -> axum::Json<serde_json::Value> {
        seen.lock().unwrap().push((uri.to_string(), body));
        axum::Json(answer)
    }
    let app = axum::Router::new()
        .fallback(axum::routing::post(take))
        .with_state((seen.clone(), answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), seen)
}

fn notifier(toml_text: &str) -> Notifier {
    let cfg: NotifierConfig = toml::from_str(toml_text).unwrap();
    Notifier::new(cfg, Duration::from_secs(10)).unwrap()
}

const MSG: Message<'static> = Message {
    title: "Confirmed fire in building A",
    text: "Doors released",
    severity: "critical",
    rule: "fire_confirmed",
    cause_seq: 42,
    gateway: "school-1",
};

#[tokio::test]
async fn notifiers_post_the_documented_json_shapes_and_dingtalk_signs_its_url() {
    let ok = serde_json::json!({"errcode": 0, "errmsg": "ok"});
    let (url, seen) = receiver(ok.clone()).await;

    notifier(&format!(
        "name = \"w\"\nkind = \"wechat_work\"\nurl = \"{url}/cgi-bin/webhook/send?key=K\"\n"
    ))
    .send(&MSG)
    .await
    .unwrap();
    notifier(&format!("name = \"w\"\nkind = \"wechat_work\"\nformat = \"text\"\nmention_mobiles = [\"13800001111\"]\nmention_all_on_critical = true\nurl = \"{url}/cgi-bin/webhook/send?key=K\"\n"))
        .send(&MSG)
        .await
        .unwrap();
    notifier(&format!("name = \"d\"\nkind = \"dingtalk\"\nsecret = \"SECtest\"\nmention_mobiles = [\"13800001111\"]\nurl = \"{url}/robot/send?access_token=T\"\n"))
        .send(&MSG)
        .await
        .unwrap();
    notifier(&format!(
        "name = \"h\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\n"
    ))
    .send(&MSG)
    .await
    .unwrap();

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0].0, "/cgi-bin/webhook/send?key=K");
    assert_eq!(
        seen[0].1,
        serde_json::json!({"msgtype": "markdown", "markdown": {"content": "**[critical] Confirmed fire in building A**\n\nDoors released"}})
    );
    assert_eq!(
        seen[1].1,
        serde_json::json!({"msgtype": "text", "text": {"content": "[critical] Confirmed fire in building A\nDoors released", "mentioned_mobile_list": ["13800001111", "@all"]}})
    );
    assert_eq!(
        seen[2].1,
        serde_json::json!({"msgtype": "markdown",
            "markdown": {"title": "Confirmed fire in building A", "text": "**[critical] Confirmed fire in building A**\n\nDoors released"},
            "at": {"atMobiles": ["13800001111"], "isAtAll": false}})
    );
    let (path, query) = seen[2].0.split_once('?').unwrap();
    assert_eq!(path, "/robot/send");
    let params: std::collections::BTreeMap<&str, &str> = query
        .split('&')
        .map(|kv| kv.split_once('=').unwrap())
        .collect();
    assert_eq!(params["access_token"], "T");
    let ts: i64 = params["timestamp"].parse().unwrap();
    assert!((chrono::Utc::now().timestamp_millis() - ts).abs() < 3_600_000);
    assert_eq!(
        params["sign"],
        campusgw::notify::dingtalk_sign("SECtest", ts)
    );
    assert_eq!(
        seen[3].1,
        serde_json::json!({"title": "Confirmed fire in building A", "text": "Doors released", "severity": "critical", "rule": "fire_confirmed", "cause_seq": 42, "gateway": "school-1"})
    );
}

#[tokio::test]
async fn a_robot_answering_a_nonzero_errcode_is_a_failed_notification() {
    let (url, _seen) =
        receiver(serde_json::json!({"errcode": 310000, "errmsg": "sign not match"})).await;
    let r = notifier(&format!(
        "name = \"d\"\nkind = \"dingtalk\"\nurl = \"{url}/robot/send?access_token=T\"\n"
    ))
    .send(&MSG)
    .await;
    let e = r.expect_err("errcode 310000 is not delivered");
    assert!(e.to_string().contains("310000"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_keeps_failing_is_given_up_healthz_turns_503_with_the_reason_and_the_gateway_fails()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("fire.toml"), FIRE_RULE).unwrap();
    // The fault: a stored engine state the runner cannot read, so every start fails.
    let db = data.join("journal.db");
    let (j, w) =
        campusgw::journal::Journal::open(campusgw::journal::JournalOptions::new(db.clone()))
            .unwrap();
    j.close().await;
    tokio::task::spawn_blocking(move || w.join()).await.unwrap();
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO rules_state (consumer, cursor, state, updated_at) VALUES ('rules', 0, 'not json', 0)",
            [],
        )
        .unwrap();
    let text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n[console]\nlisten = \"127.0.0.1:0\"\n[rules]\ndir = \"{}\"\n",
        data.display(),
        rules.display()
    );
    let config = campusgw::config::parse(&text, Path::new("<test>")).unwrap();
    let opts = RunOptions {
        failure_linger: Duration::from_secs(5),
        ..RunOptions::default()
    };
    let gw = Gateway::start(config, opts).await.unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = format!("http://{}/healthz", gw.http_addr);
    let end = Instant::now() + LIMIT;
    let body: serde_json::Value = loop {
        let r = reqwest::get(&url).await.unwrap();
        if r.status().as_u16() == 503 {
            break r.json().await.unwrap();
        }
        assert!(Instant::now() < end, "healthz never turned 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["status"], "failing", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!(
            "rules runner failed {} times",
            campusgw::rules::RESTART_LIMIT
        )) && reason.contains("stored engine state is unreadable"),
        "{reason}"
    );
    let failed = tokio::time::timeout(LIMIT, gw.failed())
        .await
        .expect("the gateway reports failing, so `campusgw run` exits non-zero");
    assert_eq!(failed, reason);
    gw.stop().await;
}

fn old_event(kind: &str, class: campusgw_sdk::Class) -> campusgw_sdk::Event {
    let mut e = campusgw_sdk::Event::stamp(
        campusgw_sdk::NewEvent::new(campusgw_sdk::Kind::new(kind).unwrap(), class),
        &campusgw_sdk::DeviceId::new("panel").unwrap(),
        "test",
        &campusgw_sdk::Location::default(),
    );
    e.received_at = chrono::Utc::now() - chrono::Duration::hours(1);
    e
}

#[tokio::test]
async fn retention_keeps_alarms_the_rules_runner_has_not_consumed_even_over_quota() {
    use campusgw::journal::{Journal, JournalOptions, RetentionPolicy, rules::RulesStep};
    use campusgw_sdk::Class;
    let dir = tempfile::tempdir().unwrap();
    let mut opts = JournalOptions::new(dir.path().join("j.db"));
    // Old enough to expire, and far over quota: only the rules cursor protects anything.
    opts.retention = RetentionPolicy {
        max_age: Duration::from_secs(60),
        quota_bytes: 1,
    };
    opts.rules_consumer = true;
    let (j, w) = Journal::open(opts).unwrap();
    let mut batch = Vec::new();
    for _ in 0..30 {
        batch.push(old_event("fire.alarm", Class::LifeSafety));
        batch.push(old_event("door.forced", Class::Security));
        batch.push(old_event("sensor.reading", Class::Telemetry));
    }
    j.append(batch).await.unwrap();
    // The runner consumed the first 45 events (seq 1..=45).
    j.rules_step(RulesStep {
        consumer: "rules".into(),
        cursor: Some(45),
        state: Some("{}".into()),
        ..RulesStep::default()
    })
    .await
    .unwrap();
    let report = j.maintain().await.unwrap();
    assert!(report.over_quota, "{report:?}");
    let left = j.reader().unwrap().after(0, None, 1000).unwrap();
    let vital: Vec<u64> = left
        .iter()
        .filter(|e| e.class != Class::Telemetry)
        .map(|e| e.seq)
        .collect();
    let unconsumed: Vec<u64> = (46..=90).filter(|s| s % 3 != 0).collect();
    assert_eq!(
        vital, unconsumed,
        "every alarm the runner has not consumed is kept, every consumed one may go"
    );
    // DESIGN §4: at the quota telemetry goes first, consumed or not.
    assert!(
        left.iter().all(|e| e.class != Class::Telemetry),
        "{report:?}"
    );
    j.close().await;
    w.join();
}
