//! The `campusgw` binary: check-config exit codes and messages, journal export, healthz.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::process::Command;
use std::time::Duration;

fn campusgw() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_campusgw"));
    c.env("CAMPUSGW_LOG", "warn");
    c
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn config(data_dir: &std::path::Path) -> String {
    format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n",
        data_dir.display()
    )
}

#[test]
fn check_config_exits_zero_for_a_good_file_and_one_with_located_problems() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.toml", &config(dir.path()));
    let out = campusgw().arg("check-config").arg(&good).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bad_text = config(dir.path()).replace("127.0.0.1:0", "127.0.0.1:99999")
        + "\n[[device]]\nid = \"x\"\ndriver = \"nosuch\"\n";
    let bad = write(dir.path(), "bad.toml", &bad_text);
    let out = campusgw().arg("check-config").arg(&bad).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.toml has 2 problems"), "{err}");
    assert!(err.contains("console.listen (line 7)"), "{err}");
    assert!(
        err.contains("device[0].driver (line 11): unknown driver \"nosuch\""),
        "{err}"
    );
}

#[test]
fn the_documented_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/example-gateway.toml");
    let out = campusgw()
        .arg("check-config")
        .arg(example)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn run_serves_healthz_and_metrics_then_stops_on_sigterm_and_export_prints_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Pick a port: bind, read, release (the gateway binds it right after).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write(
        dir.path(),
        "gw.toml",
        &config(&data).replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    );
    let mut child = campusgw()
        .args(["run", "--config"])
        .arg(&cfg)
        .spawn()
        .unwrap();
    // reqwest is built without a default TLS provider in this workspace; pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let body: serde_json::Value = rt.block_on(async {
        let url = format!("http://127.0.0.1:{port}/healthz");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(&url).await {
                return r.json().await.unwrap();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "healthz never answered"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
    assert!(body["journal"]["last_seq"].is_u64());
    let metrics = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    assert!(
        metrics.is_empty() || metrics.contains("# TYPE"),
        "{metrics}"
    );
    // Graceful stop on SIGTERM.
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "campusgw did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    let out = campusgw()
        .args(["journal", "export", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema"], campusgw_sdk::EVENT_SCHEMA_VERSION);
    }
}
