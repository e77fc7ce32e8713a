//! A real browser on the bulk import page: Debian's chromium driven by playwright-core
//! (tests/browser/import.mjs, installed by scripts/test) logs in as an admin, uploads a
//! door table with a mistake and reads it by row and column, uploads the corrected table,
//! applies it; the config file then holds the doors and `audit.import` is journaled. The
//! screenshot is kept as target/browser/console-import.png.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use campusgw::console::auth::Role;
use console_support::{PASSWORD, Rig};
use tokio::io::{AsyncBufReadExt, BufReader};

const EXTRA: &str = r#"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["east"]

[[device]]
id = "zk_push"
driver = "zkteco_push"
location = "main"
listen = "127.0.0.1:0"
[[device.controllers]]
sn = "ZK00001"
device = "zk_gate"
location = "main/A"
"#;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_uploads_a_door_table_sees_its_problem_by_row_and_applies_the_fixed_one() {
    let script = repo().join("tests/browser/import.mjs");
    let modules = repo().join("tests/browser/node_modules/playwright-core");
    assert!(
        modules.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "needs chromium and tests/browser/node_modules: run scripts/test --setup-only"
    );
    let rig = Rig::start_with(EXTRA).await;
    rig.user("chief", Role::Admin).await;
    let files = tempfile::tempdir().unwrap();
    let bad = files.path().join("doors-bad.csv");
    let good = files.path().join("doors.csv");
    std::fs::write(
        &bad,
        "控制器,门号,门名称,楼栋,楼层,区域,疏散通道\nzk_gate,1,南门,A,1,east,是\nzk_gate,2,北门,A,1,east,也许\n",
    )
    .unwrap();
    std::fs::write(
        &good,
        "控制器,门号,门名称,楼栋,楼层,区域,疏散通道\nzk_gate,1,南门,A,1,east,是\nzk_gate,2,北门,A,1,east,否\n",
    )
    .unwrap();
    let out_dir = repo().join("target/browser");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("console-import.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&rig.base)
        .arg("chief")
        .arg(PASSWORD)
        .arg(&bad)
        .arg(&good)
        .arg(&shot)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(120), out.next_line())
            .await
            .expect("the browser script stalled")
            .unwrap()
            .expect("the browser script ended early (see its stderr)")
    };
    let error = next().await;
    assert!(
        error.starts_with("error 3|7 (疏散通道)|") && error.contains("也许"),
        "{error}"
    );
    assert_eq!(next().await, "added 2");
    let applied = next().await;
    assert!(applied.starts_with("applied "), "{applied}");
    assert!(applied.contains("gateway.toml"), "{applied}");
    assert_eq!(next().await, "done");
    let status = tokio::time::timeout(Duration::from_secs(60), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "browser script failed: {status}");

    let config = campusgw::config::load(&rig.dir.path().join("gateway.toml")).unwrap();
    assert_eq!(config.devices.len(), 1);
    let text = std::fs::read_to_string(rig.dir.path().join("gateway.toml")).unwrap();
    assert!(text.contains("zk_gate_door2"), "{text}");
    let audit = rig.journaled("audit.import");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].payload["by"], "user:chief");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot kept"
    );
    rig.stop().await;
}
