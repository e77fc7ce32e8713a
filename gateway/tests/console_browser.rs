//! A real browser: Debian's chromium driven by playwright-core (tests/browser/console.mjs,
//! installed by scripts/test) logs in to a live gateway, sees a simulated fire alarm appear
//! on the board, acknowledges it, and the acknowledgement is in the journal. The screenshot
//! is kept as target/browser/console-board.png.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use campusgw::console::auth::Role;
use campusgw_sdk::Class;
use console_support::{FIRE_RULE, PASSWORD, Rig, event, wait_for};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_logs_in_sees_a_fire_alarm_arrive_live_and_acknowledges_it() {
    let script = repo().join("tests/browser/console.mjs");
    let modules = repo().join("tests/browser/node_modules/playwright-core");
    assert!(
        modules.exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "needs chromium and tests/browser/node_modules: run scripts/test --setup-only"
    );
    let rig = Rig::start_with_rules(FIRE_RULE).await;
    rig.user("guard", Role::Operator).await;
    let out_dir = repo().join("target/browser");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("console-board.png");
    let _ = std::fs::remove_file(&shot);
    let mut node = tokio::process::Command::new("node")
        .arg(&script)
        .arg(&rig.base)
        .arg("guard")
        .arg(PASSWORD)
        .arg(&shot)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node");
    let mut stdin = node.stdin.take().unwrap();
    let mut out = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(120), out.next_line())
            .await
            .expect("the browser script stalled")
            .unwrap()
            .expect("the browser script ended early (see its stderr)")
    };
    assert_eq!(next().await, "ready");
    stdin.write_all(b"fire\n").await.unwrap();
    rig.append(vec![event(
        "fire.alarm",
        Class::LifeSafety,
        "uitd_a",
        "A",
        "3",
    )])
    .await;
    let shown = next().await;
    let ms: u64 = shown
        .strip_prefix("alarm_ms ")
        .expect(&shown)
        .parse()
        .unwrap();
    // Shown to the operator, not asserted: timing belongs in benchmarks (bench/README.md).
    eprintln!("fire alarm on the board {ms} ms after it was journaled (debug build)");
    assert_eq!(next().await, "acknowledged");
    assert_eq!(next().await, "done");
    let status = tokio::time::timeout(Duration::from_secs(60), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "browser script failed: {status}");
    wait_for("alarm.acknowledged in the journal", || {
        !rig.journaled("alarm.acknowledged").is_empty()
    })
    .await;
    let ack = rig.journaled("alarm.acknowledge");
    assert_eq!(ack.len(), 1);
    assert_eq!(ack[0].payload["by"], "user:guard");
    assert_eq!(ack[0].payload["note"], "guard on the way");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 1000,
        "screenshot kept"
    );
    rig.stop().await;
}
