//! The console's access routes on a running gateway: the muster list with roster names only
//! for an authenticated caller, the access state, and a bad roster refused at start.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use campusgw::console::auth::Role;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use console_support::Rig;

fn passage(person: &str, boundary: &str, direction: &str) -> Event {
    Event::stamp(
        NewEvent::new(Kind::from_static("access.granted"), Class::Business).payload(
            serde_json::json!({"person_id": person, "boundary": boundary, "direction": direction}),
        ),
        &DeviceId::new("zk_gate_1").unwrap(),
        "zkteco_push",
        &Location::default(),
    )
}

#[tokio::test]
async fn the_muster_list_names_people_from_the_roster_for_logged_in_callers_only() {
    let roster_dir = tempfile::tempdir().unwrap();
    let roster = roster_dir.path().join("roster.csv");
    std::fs::write(
        &roster,
        "person_id,name,role\nS1,张三,student\nT1,王老师,staff\n",
    )
    .unwrap();
    let rig = Rig::start_with(&format!("\n[access]\nroster = \"{}\"\n", roster.display())).await;
    rig.append(vec![
        passage("S1", "building:A", "in"),
        passage("T1", "building:A", "in"),
        passage("X7", "building:A", "in"),
        passage("T1", "building:A", "out"),
    ])
    .await;
    let anon = rig
        .http
        .get(rig.url("/api/v1/access/muster?building=A"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    assert!(!anon.text().await.unwrap().contains("张三"));
    let token = rig.token("guard", Role::Viewer).await;
    let get = |path: &'static str| {
        let req = rig.http.get(rig.url(path)).bearer_auth(&token);
        async move {
            let r = req.send().await.unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (status, m) = get("/api/v1/access/muster?building=A").await;
    assert_eq!(status, 200, "{m}");
    assert_eq!(m["total"], 2, "{m}");
    assert_eq!(m["people"][0]["person_id"], "S1");
    assert_eq!(m["people"][0]["name"], "张三");
    assert_eq!(m["people"][0]["role"], "student");
    assert_eq!(m["people"][1]["person_id"], "X7");
    assert!(
        m["people"][1]["name"].is_null(),
        "not on the roster: no name"
    );
    let (status, m) = get("/api/v1/access/muster?building=").await;
    assert_eq!(status, 400, "{m}");
    let (status, s) = get("/api/v1/access/state").await;
    assert_eq!(status, 200, "{s}");
    assert_eq!(s["lockdown_active"], false);
    assert!(s["doors"].as_array().unwrap().is_empty());
    rig.stop().await;
}

#[tokio::test]
async fn a_bad_roster_stops_the_start_naming_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let roster = dir.path().join("roster.csv");
    std::fs::write(&roster, "S1,张三,student\nS2,李四,teacher-ish\n").unwrap();
    let text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"t\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n\n[access]\nroster = \"{}\"\n",
        dir.path().display(),
        roster.display()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let config = campusgw::config::load(&path).unwrap();
    let err =
        match campusgw::app::Gateway::start(config, campusgw::app::RunOptions::default()).await {
            Ok(_) => panic!("started with a bad roster"),
            Err(e) => e.to_string(),
        };
    assert!(
        err.contains("roster.csv") && err.contains("line 2"),
        "{err}"
    );
}
