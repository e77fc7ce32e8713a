//! A gateway with its console on loopback, users and tokens of each role, and an HTTP
//! client that does not follow redirects (shared by the console_* tests).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use campusgw::app::{Gateway, RunOptions};
use campusgw::console::auth::Role;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

pub const PASSWORD: &str = "correct horse battery";

pub struct Rig {
    pub gw: Gateway,
    pub base: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start() -> Rig {
        Rig::start_with("").await
    }

    /// A gateway running the rules in `rules` (one TOML file).
    pub async fn start_with_rules(rules: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let rules_dir = dir.path().join("rules");
        std::fs::create_dir_all(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("school.toml"), rules).unwrap();
        let extra = format!("\n[rules]\ndir = \"{}\"\n", rules_dir.display());
        Rig::start_in(dir, &extra).await
    }

    /// A gateway whose config has `extra` appended (devices, uplinks).
    pub async fn start_with(extra: &str) -> Rig {
        Rig::start_in(tempfile::tempdir().unwrap(), extra).await
    }

    /// A gateway in `dir` (files the config names may be put there first).
    pub async fn start_in(dir: tempfile::TempDir, extra: &str) -> Rig {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let text = format!(
            "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n{extra}",
            dir.path().display()
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let config = campusgw::config::load(&path).unwrap();
        let gw = Gateway::start(config, RunOptions::default()).await.unwrap();
        let base = format!("http://{}", gw.http_addr);
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Rig {
            gw,
            base,
            http,
            dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn user(&self, name: &str, role: Role) {
        self.gw
            .console
            .auth
            .set_password(name, PASSWORD, role)
            .await
            .unwrap();
    }

    pub async fn token(&self, name: &str, role: Role) -> String {
        self.gw
            .console
            .auth
            .create_token(name, role, "test")
            .await
            .unwrap()
    }

    /// Logs in through the API: (cookie header value, csrf token).
    pub async fn login(&self, name: &str) -> (String, String) {
        let r = self
            .http
            .post(self.url("/api/v1/login"))
            .json(&serde_json::json!({ "user": name, "password": PASSWORD }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "login of {name}");
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let cookie = set.split(';').next().unwrap().to_owned();
        let body: serde_json::Value = r.json().await.unwrap();
        (cookie, body["csrf"].as_str().unwrap().to_owned())
    }

    /// Appends events straight into the journal (a driver would do the same).
    pub async fn append(&self, events: Vec<Event>) -> Vec<u64> {
        let r = self.gw.journal.append(events).await.unwrap();
        r.into_iter().map(|r| r.seq).collect()
    }

    /// Every journaled event of `kind`.
    pub fn journaled(&self, kind: &str) -> Vec<Event> {
        let reader = self.gw.journal.reader().unwrap();
        reader
            .after(0, None, 100_000)
            .unwrap()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .collect()
    }

    pub async fn stop(self) {
        self.gw.stop().await;
    }
}

/// An event of `kind`/`class` from `device` at `building`/`floor`.
pub fn event(kind: &str, class: Class, device: &str, building: &str, floor: &str) -> Event {
    let loc = Location {
        building: Some(building.into()),
        floor: Some(floor.into()),
        ..Location::default()
    };
    Event::stamp(
        NewEvent::new(Kind::new(kind).unwrap(), class),
        &DeviceId::new(device).unwrap(),
        "test",
        &loc,
    )
}

/// Waits for `cond` with a generous deadline (loaded CI).
pub async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rule raising a critical alarm for every fire alarm.
pub const FIRE_RULE: &str = r#"
[[rule]]
id = "fire_alarm"
description = "Fire alarm: raise a critical alarm"
trigger = { kinds = ["fire.alarm"] }
actions = [{ type = "alarm", severity = "critical", title = "Fire alarm" }]
"#;
