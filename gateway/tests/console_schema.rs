//! The OpenAPI document checked against the live server with schemathesis (PyPI, pinned,
//! installed into .venv by scripts/test): generated requests, valid and not, to every
//! documented operation; each answer must match the document (status, content type,
//! schema) and no request may get a 5xx. The live stream is left out (it never ends).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::path::PathBuf;

use campusgw::console::auth::Role;
use console_support::{FIRE_RULE, Rig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_server_answers_as_its_openapi_document_says() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let st = repo.join(".venv/bin/schemathesis");
    assert!(
        st.exists(),
        "needs schemathesis in .venv: run scripts/test --setup-only"
    );
    let rig = Rig::start_with_rules(FIRE_RULE).await;
    let admin = rig.token("schemathesis", Role::Admin).await;
    let report = repo.join("target/schemathesis");
    let out = tokio::process::Command::new(&st)
        .arg("run")
        .arg(rig.url("/api/v1/openapi.json"))
        .args(["--url", &rig.base])
        .args(["-H", &format!("Authorization: Bearer {admin}")])
        .args(["--exclude-path", "/api/v1/stream"])
        .args(["--checks", "all"])
        .args(["--max-examples", "25"])
        .args(["--request-timeout", "30"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    rig.stop().await;
}
