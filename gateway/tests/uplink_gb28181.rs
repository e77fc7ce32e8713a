//! The police video platform uplink (`kind = "gb28181"`, issue 24 item 2) against the
//! simulated platform (`campusgw_gb28181::sim`) over real UDP on loopback: REGISTER
//! challenged (401) then accepted, the panic alarm confirmed by the platform's 200 with a
//! delivery record, GB2312 (or UTF-8) bodies, a platform that restarts (the alarm raised
//! while it was down arrives after a new REGISTER), wrong credentials (no alarm leaves,
//! the cursor stays), a refused alarm (rejected and listed) and the Catalog answer.
//! The independent peer (sipp as the platform, `verifyauth`) is in
//! drivers/gb28181/tests/sipp.rs.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::sync::Arc;
use std::time::Duration;

use campusgw::journal::Journal;
use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_gb28181::GbId;
use campusgw_gb28181::manscdp::Charset;
use campusgw_gb28181::sim::{Mode, PlatformSim, SimSettings};
use campusgw_sdk::{Class, Event, FieldPath};
use uplink_support::{Rig, wait_for};

const LIMIT: Duration = Duration::from_secs(60);
const PLATFORM: &str = "34020000002000000001";
const GATEWAY: &str = "34020000001180000001";
const BUTTON: &str = "34020000001340000001";
const CAMERA: &str = "34020000001320000001";

fn cursor(journal: &Journal, class: Class) -> u64 {
    journal
        .reader()
        .unwrap()
        .cursor("police_video", class)
        .unwrap()
}

async fn platform(charset: Charset) -> PlatformSim {
    platform_granting(charset, 3600).await
}

async fn platform_granting(charset: Charset, expires: u64) -> PlatformSim {
    PlatformSim::start(
        SimSettings {
            platform_id: GbId::new(PLATFORM).unwrap(),
            username: GATEWAY.into(),
            password: "s3cret-Pw".into(),
            expires,
            charset,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn start(rig: &mut Rig, sim: &PlatformSim, password: &str, charset: &str) -> Arc<UplinkStatus> {
    let table = format!(
        "name = \"police_video\"\nkind = \"gb28181\"\nplatform = \"{}\"\nplatform_id = \"{PLATFORM}\"\ndevice_id = \"{GATEWAY}\"\npassword = \"{password}\"\nbind = \"127.0.0.1:0\"\ncharset = \"{charset}\"\nkeepalive = \"5s\"\nanswer_timeout = \"1s\"\n[[alarm_input]]\nid = \"{BUTTON}\"\nname = \"门卫室一键报警\"\ndevice = \"dev-1\"\n[[camera]]\nid = \"{CAMERA}\"\nname = \"校门口\"\nlocation = \"main/gate\"\n",
        sim.addr()
    );
    let u = campusgw::uplink::parse(toml::from_str(&table).unwrap(), &FieldPath::root())
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let UplinkSettings::Gb28181(c) = u.settings else {
        panic!("gb28181")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(50), Duration::from_millis(500));
    let status = UplinkStatus::new("police_video", "gb28181");
    let run = campusgw::uplink::UplinkFactory::start(
        Arc::new(c),
        u.filter,
        rig.context(),
        status.clone(),
    );
    rig.adopt(tokio::spawn(run));
    status
}

fn deliveries(journal: &Journal, e: &Event) -> Vec<campusgw::uplink::deliveries::DeliveryRecord> {
    let conn = journal.read_connection().unwrap();
    campusgw::uplink::deliveries::list(&conn, "police_video", &e.id.to_string()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_alarm_goes_after_a_challenged_register_in_gb2312_and_the_200_moves_the_cursor() {
    let sim = platform(Charset::Gb2312).await;
    let mut rig = Rig::open();
    start(&mut rig, &sim, "s3cret-Pw", "gb2312");
    let (s, ok) = sim.wait_for(LIMIT, |s| s.registrations >= 1).await;
    assert!(ok, "{s:?}");
    assert!(
        s.registers >= 2,
        "challenged first, then with credentials: {s:?}"
    );
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("cursor past the alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let got = sim.state().alarms;
    assert_eq!(got.len(), 1, "{got:?}");
    let a = &got[0];
    assert_eq!(a.device_id, BUTTON);
    assert_eq!((a.priority.as_str(), a.method.as_str()), ("1", "2"));
    assert_eq!(a.sn, Some(u32::try_from(alarm.seq).unwrap()));
    assert_eq!(a.declared, "GB2312");
    assert!(!a.utf8, "the Chinese name travels as GB2312 bytes");
    assert!(
        a.description.starts_with("门卫室一键报警 panic.alarm"),
        "{a:?}"
    );
    assert_eq!(a.time.len(), 19, "local time without zone: {}", a.time);
    let recs = deliveries(&rig.journal, &alarm);
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].address, BUTTON);
    assert_eq!(recs[0].endpoint, sim.addr().to_string());
    // the platform asks for the Catalog: alarm input and camera, children of the gateway
    assert!(sim.query_catalog().await);
    let (s, ok) = sim.wait_for(LIMIT, |s| s.catalog.len() >= 2).await;
    assert!(ok, "{s:?}");
    assert_eq!(s.catalog_sum, Some(2));
    assert_eq!(
        s.catalog[0],
        (BUTTON.into(), "门卫室一键报警".into(), GATEWAY.into())
    );
    assert_eq!(s.catalog[1].0, CAMERA);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_that_restarts_gets_the_alarm_raised_meanwhile_after_a_new_register() {
    let mut sim = platform(Charset::Utf8).await;
    let mut rig = Rig::open();
    start(&mut rig, &sim, "s3cret-Pw", "utf-8");
    assert!(sim.wait_for(LIMIT, |s| s.registrations >= 1).await.1);
    let restart = tokio::spawn(async move {
        sim.restart(Duration::from_secs(3)).await.unwrap();
        sim
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    let sim = restart.await.unwrap();
    wait_for("cursor past the alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let s = sim.state();
    assert_eq!(s.restarts, 1);
    assert!(
        s.registrations >= 2,
        "registered again after the restart: {s:?}"
    );
    assert!(
        s.alarms
            .iter()
            .any(|a| a.sn == Some(u32::try_from(alarm.seq).unwrap())),
        "{s:?}"
    );
    assert!(
        s.alarms.iter().all(|a| a.utf8 && a.declared == "UTF-8"),
        "{s:?}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_refused_and_no_alarm_leaves() {
    let sim = platform(Charset::Gb2312).await;
    let mut rig = Rig::open();
    let status = start(&mut rig, &sim, "wrong", "gb2312");
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    let (s, ok) = sim.wait_for(LIMIT, |s| s.bad_auth >= 2).await;
    assert!(ok, "the uplink keeps trying with back-off: {s:?}");
    assert_eq!(s.registrations, 0);
    assert!(s.alarms.is_empty(), "{s:?}");
    assert!(cursor(&rig.journal, Class::LifeSafety) < alarm.seq);
    let snap = status.snapshot();
    assert_eq!(snap.last_reason, Some("auth"), "{snap:?}");
    assert_eq!(snap.confirmed, 0);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alarm_the_platform_refuses_is_rejected_kept_and_listed() {
    let sim = platform(Charset::Gb2312).await;
    sim.set_mode(Mode::RefuseAlarms(400));
    let mut rig = Rig::open();
    let status = start(&mut rig, &sim, "s3cret-Pw", "gb2312");
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("cursor past the refused alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let listed = rig
        .journal
        .rejected_reader()
        .unwrap()
        .list(Some("police_video"))
        .unwrap();
    assert!(listed.iter().any(|r| r.seq == alarm.seq), "{listed:?}");
    assert_eq!(status.snapshot().rejected, 1);
    assert!(deliveries(&rig.journal, &alarm).is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_registration_is_refreshed_before_it_expires_and_keepalives_flow() {
    // the platform grants 10 s of the 3600 asked: refreshed after 5 s, on the same link
    let sim = platform_granting(Charset::Gb2312, 10).await;
    let mut rig = Rig::open();
    let status = start(&mut rig, &sim, "s3cret-Pw", "gb2312");
    let (s, ok) = sim
        .wait_for(LIMIT, |s| s.registrations >= 2 && s.keepalives >= 1)
        .await;
    assert!(ok, "{s:?}");
    assert_eq!(s.restarts, 0);
    assert_eq!(s.unknown_device, 0, "never unregistered in between: {s:?}");
    assert_eq!(status.snapshot().last_reason, None);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_platform_gets_the_alarm_once_it_answers_again() {
    let sim = platform(Charset::Gb2312).await;
    let mut rig = Rig::open();
    let status = start(&mut rig, &sim, "s3cret-Pw", "gb2312");
    assert!(sim.wait_for(LIMIT, |s| s.registrations >= 1).await.1);
    sim.set_mode(Mode::Silent);
    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    wait_for("the outage seen", LIMIT, || {
        status.snapshot().last_reason == Some("timeout")
    })
    .await;
    assert!(sim.state().alarms.is_empty());
    assert!(cursor(&rig.journal, Class::LifeSafety) < alarm.seq);
    sim.set_mode(Mode::Normal);
    wait_for("cursor past the alarm", LIMIT, || {
        cursor(&rig.journal, Class::LifeSafety) >= alarm.seq
    })
    .await;
    let s = sim.state();
    assert_eq!(s.alarms.len(), 1, "{s:?}");
    assert!(s.registrations >= 2, "a new link registers first: {s:?}");
    rig.stop().await;
}
