//! The canteen driver on the real journal with the `card_platform` uplink against the
//! card-platform simulator: the card list arrives by pull, a lunch rush with duplicate sends
//! goes on through an hour-long platform outage (injected clock), and afterwards every
//! approved sale is at the platform exactly once, the totals reconcile to the cent, and the
//! changes queued during the outage raise conflicts instead of silent corrections.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use campusgw::uplink::contract::UplinkFactory;
use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_canteen::ledger::{Change, Ledger, MealPeriod, Rules};
use campusgw_canteen::sim::platform::{Mood, PlatformSim};
use campusgw_canteen::sim::{self, SimTerminal};
use campusgw_canteen::{CanteenDriver, Clock, Settings, TerminalAuth};
use campusgw_sdk::{
    Class, CommandInbox, ContextParts, DeviceHealth, DeviceId, Driver, DriverContext, FieldPath,
    HealthSink, Location,
};
use chrono::TimeZone;
use uplink_support::{Rig, wait_for};

const T: Duration = Duration::from_secs(60);

struct NoHealth;

impl HealthSink for NoHealth {
    fn report(&self, _: &DeviceId, _: DeviceHealth) {}
    fn activity(&self, _: &DeviceId) {}
}

/// 11:00 local (+08:00) on 2026-12-03, plus `secs`.
fn lunch(secs: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::FixedOffset::east_opt(8 * 3600)
        .unwrap()
        .with_ymd_and_hms(2026, 12, 3, 11, 0, 0)
        .unwrap()
        .with_timezone(&chrono::Utc)
        + chrono::Duration::seconds(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hour_long_platform_outage_during_a_lunch_rush_loses_nothing_and_counts_nothing_twice() {
    let platform = PlatformSim::start("platform-token", sim::card_list(40, 5000)).await;
    let mut rig = Rig::open();
    let ledger = rig.dir.path().join("canteen-canteen.db");
    let addr = platform.addr;
    let text = format!(
        "name = \"card\"\nkind = \"card_platform\"\nurl = \"http://{addr}/v1/transactions\"\nchanges_url = \"http://{addr}/v1/changes\"\ntoken = \"platform-token\"\nledger = \"{}\"\npoll = \"1s\"\nbatch = 50\ntimeout = \"2s\"\n",
        ledger.display()
    );
    let u = campusgw::uplink::parse(toml::from_str(&text).unwrap(), &FieldPath::root())
        .unwrap_or_else(|e| panic!("{e:?}"));
    let UplinkSettings::CardPlatform(c) = u.settings else {
        panic!("card_platform")
    };
    let mut c = (*c).clone();
    c.push.backoff = (Duration::from_millis(50), Duration::from_millis(500));
    let status = UplinkStatus::new("card", "card_platform");
    rig.adopt(tokio::spawn(Arc::new(c).start(
        u.filter,
        rig.context(),
        status.clone(),
    )));
    // The card list arrives by pull.
    let ledger_path = ledger.clone();
    wait_for("card list pulled", T, || {
        Ledger::open(&ledger_path).and_then(|l| l.card_count()).ok() == Some(40)
    })
    .await;

    // The driver on the real journal, its clock injected: each sale moves it 10 s, so the
    // 400 sales below span more than an hour of lunch service.
    let tick = Arc::new(AtomicI64::new(0));
    let clock: Clock = {
        let tick = tick.clone();
        Arc::new(move || lunch(tick.fetch_add(10, Ordering::SeqCst)))
    };
    let settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        ledger_path: ledger.clone(),
        rules: Rules {
            offset: chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            meals: vec![MealPeriod {
                name: "lunch".into(),
                start: chrono::NaiveTime::from_hms_opt(11, 0, 0).unwrap(),
                end: chrono::NaiveTime::from_hms_opt(13, 30, 0).unwrap(),
                limit_cents: None,
            }],
            daily_limit_cents: None,
        },
        max_amount_cents: 20_000,
        max_connections: 64,
        terminals: (1..=10)
            .map(|i| TerminalAuth {
                id: format!("t{i:02}"),
                token_sha256: sim::token_hash_bytes(&format!("token-{i}")),
            })
            .collect(),
        card_list: Vec::new(),
        clock,
    };
    let driver = CanteenDriver::new(settings);
    let mut bound = driver.bound();
    let cx = DriverContext::new(ContextParts {
        device: DeviceId::new("canteen").unwrap(),
        driver: "canteen",
        location: Location::default(),
        sink: Arc::new(rig.journal.clone()),
        health: Arc::new(NoHealth),
        commands: Arc::new(CommandInbox::new()),
        shutdown: rig.shutdown.clone(),
    });
    let driver_task = tokio::spawn(async move { driver.run(cx).await.unwrap() });
    let gw = *tokio::time::timeout(T, bound.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap();
    let gw = gw.unwrap();

    // The platform goes down for the whole rush.
    platform.set(Mood::Down);
    let terminals: Vec<_> = (1..=10)
        .map(|i| {
            let mut t = SimTerminal::new(gw, &format!("t{i:02}"), &format!("token-{i}"));
            t.duplicate_every = 4;
            t
        })
        .collect();
    let sold = tokio::time::timeout(
        Duration::from_secs(300),
        sim::rush(terminals, sim::cards(40), 40, 250),
    )
    .await
    .expect("rush in time")
    .expect("every sale answered while the platform is down");
    assert_eq!(sold.len(), 400);
    assert!(
        sold.iter().all(|s| s.answer.approved()),
        "10 meals of 2.50 per card fit 50.00"
    );
    assert!(
        tick.load(Ordering::SeqCst) >= 3600,
        "over an hour of service"
    );
    // Queued at the platform during the outage: card 2 reported lost at 11:00, and the
    // shop took 48.00 from account 3.
    platform.push_changes(vec![
        Change::Card {
            id: "late-lost".into(),
            card_uid: Some("04000000000002".into()),
            card_no: None,
            account: "S00002".into(),
            status: "lost".into(),
            lost_at: Some(lunch(0)),
        },
        Change::Debit {
            id: "late-shop".into(),
            account: "S00003".into(),
            amount_cents: 4800,
        },
    ]);
    platform.set(Mood::Slow(Duration::from_millis(200)));
    wait_for(
        "every sale and conflict at the platform",
        Duration::from_secs(120),
        || {
            let got = platform.received();
            let sales = got.values().filter(|e| e["kind"] == "canteen.sale").count();
            let conflicts = got
                .values()
                .filter(|e| e["kind"] == "canteen.conflict")
                .count();
            sales >= 400 && conflicts >= 11
        },
    )
    .await;
    platform.set(Mood::Up);
    let got = platform.received();
    let sales: Vec<_> = got
        .values()
        .filter(|e| e["kind"] == "canteen.sale")
        .collect();
    assert_eq!(sales.len(), 400, "each sale once, duplicates not counted");
    let mut keys: Vec<String> = sales
        .iter()
        .map(|e| format!("{}:{}", e["payload"]["terminal"], e["payload"]["txn"]))
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 400);
    let platform_cents: i64 = sales
        .iter()
        .map(|e| e["payload"]["amount_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(platform_cents, 400 * 250);
    let conflicts: Vec<_> = got
        .values()
        .filter(|e| e["kind"] == "canteen.conflict")
        .collect();
    assert_eq!(
        conflicts
            .iter()
            .filter(|e| e["payload"]["kind"] == "card_lost_after_sale")
            .count(),
        10,
        "every sale on the lost card"
    );
    assert_eq!(
        conflicts
            .iter()
            .filter(|e| e["payload"]["kind"] == "balance_negative")
            .count(),
        1
    );
    let l = Ledger::open(&ledger).unwrap();
    let rep = l.report("2026-12-03").unwrap();
    assert_eq!(
        (rep.approved, rep.approved_cents, rep.unjournaled),
        (400, 100_000, 0)
    );
    let today = chrono::Utc::now()
        .with_timezone(&chrono::FixedOffset::east_opt(8 * 3600).unwrap())
        .format("%Y-%m-%d")
        .to_string();
    // Lost-card conflicts are the sale day's; the negative balance is the day it was found.
    let want = if today == "2026-12-03" { 11 } else { 10 };
    assert_eq!(rep.conflicts.len(), want, "{:?}", rep.conflicts);
    let found_today = l.report(&today).unwrap().conflicts;
    assert!(
        found_today
            .iter()
            .any(|c| c.kind == "balance_negative" && c.balance_cents == -2300),
        "{found_today:?}"
    );
    let total: i64 = (1..=40)
        .map(|i| l.balance(&format!("S{i:05}")).unwrap().unwrap())
        .sum();
    assert_eq!(
        total,
        40 * 5000 - 100_000 - 4800,
        "to the cent, nothing corrected"
    );
    assert_eq!(l.balance("S00003").unwrap(), Some(5000 - 2500 - 4800));
    // The operator's reconciliation says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args([
            "canteen",
            "report",
            "--day",
            "2026-12-03",
            "--device",
            "canteen",
            "--data-dir",
        ])
        .arg(rig.dir.path())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "conflicts make it exit 2: {out:?}"
    );
    let printed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["approved"], 400);
    assert_eq!(printed["approved_cents"], 100_000);
    assert_eq!(printed["terminals"].as_array().unwrap().len(), 10);
    // The journal holds each sale once, and refusals are not pushed to the platform.
    let all = rig
        .journal
        .reader()
        .unwrap()
        .after(0, None, 100_000)
        .unwrap();
    assert_eq!(
        all.iter()
            .filter(|e| e.kind.as_str() == "canteen.sale")
            .count(),
        400
    );
    assert!(
        all.iter()
            .filter(|e| e.kind.as_str() == "canteen.sale")
            .all(|e| e.class == Class::Business)
    );
    rig.shutdown.cancel();
    tokio::time::timeout(T, driver_task).await.unwrap().unwrap();
    rig.stop().await;
    platform.stop();
}

#[test]
fn a_card_platform_uplink_with_missing_or_mismatched_keys_is_refused_with_each_problem() {
    let parse = |extra: &str| {
        let text = format!("name = \"card\"\nkind = \"card_platform\"\n{extra}");
        campusgw::uplink::parse(
            toml::from_str(&text).unwrap(),
            &FieldPath::root().key("uplink").index(0),
        )
        .err()
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
    };
    let issues = parse("url = \"https://card.example/v1/transactions\"\npoll = \"2h\"\n");
    for want in [
        "uplink[0].changes_url: required",
        "uplink[0].ledger: required",
        "uplink[0].poll:",
    ] {
        assert!(
            issues.iter().any(|i| i.starts_with(want)),
            "{want} in {issues:#?}"
        );
    }
    let issues = parse(
        "url = \"https://card.example/v1/transactions\"\nchanges_url = \"http://card.example/v1/changes\"\nledger = \"/x.db\"\n",
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("uplink[0].changes_url: plain http")),
        "{issues:#?}"
    );
    let issues = parse(
        "url = \"http://card.example/v1/transactions\"\nchanges_url = \"http://card.example/v1/changes\"\nledger = \"/x.db\"\n",
    );
    assert!(
        issues
            .iter()
            .any(|i| i.starts_with("uplink[0].url:") && i.contains("not a loopback")),
        "{issues:#?}"
    );
    assert!(parse(
        "url = \"https://card.example/v1/transactions\"\nchanges_url = \"https://card.example/v1/changes\"\nledger = \"/x.db\"\n",
    )
    .is_empty());
}

#[test]
fn check_config_refuses_a_bad_canteen_device_with_file_line_and_what_to_change() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[[device]]\nid = \"canteen\"\ndriver = \"canteen\"\nlisten = \"0.0.0.0:8443\"\n[[device.terminals]]\nid = \"t01\"\ntoken_sha256 = \"not-a-hash\"\n",
        dir.path().display()
    );
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(err.contains("gateway.toml"), "{err}");
    assert!(
        err.contains("token_sha256") && err.contains("line 15"),
        "{err}"
    );
    assert!(
        err.contains("listen") && err.contains("allow_http"),
        "{err}"
    );
    assert!(
        !err.contains("not-a-hash"),
        "the configured value is not echoed: {err}"
    );
}
