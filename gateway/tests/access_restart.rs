//! Issue 14: the lockdown state survives a restart. A gateway with an ISAPI controller
//! simulator (drivers/hikvision) locks the campus down and is stopped; a new `campusgw run`
//! process on the same data directory shows the lockdown at `/api/v1/access/state` with the
//! same who and when, and is killed (SIGKILL); a gateway started again still has it in
//! force; a release clears it, and that too survives the next restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::time::Duration;

use campusgw::app::{Gateway, RunOptions};
use campusgw::console::auth::Role;
use campusgw_hikvision::sim::{IsapiSim, SimConfig};
use campusgw_sdk::{Command, CommandKind, CommandStatus, Target};

/// Writes the gateway config (console on `listen`); returns its path.
fn write_config(dir: &Path, sim: &IsapiSim, listen: &str) -> std::path::PathBuf {
    let pw = dir.join("acs.pass");
    std::fs::write(&pw, format!("{}\n", SimConfig::default().password)).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n\
         [console]\nlisten = \"{listen}\"\n\n\
         [[campus]]\nid = \"main\"\n[[campus.building]]\nid = \"A\"\n[[campus.building.floor]]\nid = \"1\"\nzones = [\"z1\", \"z2\", \"z3\", \"z4\"]\n\n\
         [[device]]\nid = \"acs_A\"\ndriver = \"hikvision_isapi\"\nlocation = \"main/A\"\n\
         host = \"{}\"\nuser = \"{}\"\npassword_file = \"{}\"\n",
        dir.display(),
        sim.base_url(),
        SimConfig::default().user,
        pw.display()
    );
    for n in 1..=4 {
        text.push_str(&format!(
            "[[device.doors]]\nn = {n}\ndevice = \"door_A_{n}\"\n\
             location = \"main/A/1/z{n}\"\n"
        ));
    }
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The gateway in this process.
async fn start(dir: &Path, sim: &IsapiSim) -> Gateway {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = campusgw::config::load(&write_config(dir, sim, "127.0.0.1:0")).unwrap();
    Gateway::start(config, RunOptions::default()).await.unwrap()
}

async fn token(gw: &Gateway) -> String {
    gw.console
        .auth
        .create_token(
            &format!("wall-{}", uuid::Uuid::new_v4().simple()),
            Role::Viewer,
            "test",
        )
        .await
        .unwrap()
}

async fn state_at(addr: &str, token: &str) -> Option<serde_json::Value> {
    let r = reqwest::Client::new()
        .get(format!("http://{addr}/api/v1/access/state"))
        .bearer_auth(token)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .ok()?;
    assert_eq!(r.status(), 200);
    r.json().await.ok()
}

async fn state(gw: &Gateway) -> serde_json::Value {
    let t = token(gw).await;
    state_at(&gw.http_addr.to_string(), &t).await.unwrap()
}

fn command(kind: &str, scope: &str, by: &str) -> Command {
    Command::new(
        CommandKind::new(kind).unwrap(),
        Target::Scope(scope.into()),
        serde_json::Value::Null,
        by,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lockdown_is_still_shown_with_who_and_when_after_a_restart_until_released() {
    let dir = tempfile::tempdir().unwrap();
    let sim = IsapiSim::start(SimConfig {
        doors: 4,
        ..SimConfig::default()
    })
    .await
    .unwrap();

    let gw = start(dir.path(), &sim).await;
    let results = gw
        .command(command("door.lock", "campus:main", "operator:alice"))
        .await;
    assert!(
        results
            .iter()
            .filter(|r| r.device.as_str().starts_with("door_A_"))
            .all(|r| r.status == CommandStatus::Succeeded),
        "{results:?}"
    );
    let before = state(&gw).await;
    assert_eq!(before["lockdown_active"], true, "{before}");
    assert_eq!(before["lockdown"][0]["scope"], "campus:main");
    assert_eq!(before["lockdown"][0]["by"], "operator:alice");
    // A token for the next process (tokens are kept in the journal too).
    let wall = token(&gw).await;
    gw.stop().await;

    // A new `campusgw run` process on the same data directory, then killed (SIGKILL).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let config = write_config(dir.path(), &sim, &addr);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let in_child = loop {
        if let Some(s) = state_at(&addr, &wall).await {
            break s;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the gateway process exited"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the gateway process did not answer within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(in_child["lockdown_active"], true, "{in_child}");
    assert_eq!(
        in_child["lockdown"], before["lockdown"],
        "same scope, who and since"
    );
    child.kill().await.unwrap();

    let gw = start(dir.path(), &sim).await;
    let after = state(&gw).await;
    assert_eq!(after["lockdown_active"], true, "{after}");
    assert_eq!(
        after["lockdown"], before["lockdown"],
        "same scope, who and since"
    );
    // Still in force, not only shown: a second lock to the same scope starts nothing new.
    gw.command(command("door.lock", "campus:main", "operator:bob"))
        .await;
    assert_eq!(state(&gw).await["lockdown"][0]["by"], "operator:alice");

    gw.command(command("door.release", "campus:main", "operator:carol"))
        .await;
    let released = state(&gw).await;
    assert_eq!(released["lockdown_active"], false, "{released}");
    gw.stop().await;

    let gw = start(dir.path(), &sim).await;
    let later = state(&gw).await;
    assert_eq!(later["lockdown_active"], false, "{later}");
    assert_eq!(later["lockdown"], serde_json::json!([]));
    gw.stop().await;
}
