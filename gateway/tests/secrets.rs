//! Issue 8, items 4 and 5, against the real binary: plaintext only by opt-in (or to
//! loopback), TLS options never silently ignored, URLs redacted in `/healthz`, the log and
//! the journal, secret values never echoed by config errors, secret files private.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod cli_support;
use cli_support::{campusgw, export_text, write};

fn write_mode(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = write(dir, name, text);
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    p
}

/// Lines 1-7; an `[[uplink]]` appended starts at line 9.
fn base(data_dir: &Path, listen: &str) -> String {
    format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"{listen}\"\n",
        data_dir.display()
    )
}

/// `campusgw check-config` on `base + uplink`: exit code and stderr.
fn check(dir: &Path, uplink: &str) -> (Option<i32>, String) {
    let cfg = write(
        dir,
        "gw.toml",
        &(base(&dir.join("data"), "127.0.0.1:0") + "\n" + uplink),
    );
    let out = campusgw().arg("check-config").arg(&cfg).output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const REMOTE_MQTT: &str = "[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"mqtt://192.0.2.1:1883\"\nusername = \"school-1\"\npassword = \"pw\"\n";
const REMOTE_WEBHOOK: &str = "[[uplink]]\nname = \"archive\"\nkind = \"webhook\"\nurl = \"http://archive.example/ingest\"\ntoken = \"t0ken\"\n";

#[test]
fn check_config_refuses_plaintext_mqtt_with_a_password_to_a_remote_host_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = check(dir.path(), REMOTE_MQTT);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("uplink[0].url (line 12)"), "{err}");
    assert!(err.contains("use mqtts://192.0.2.1:8883"), "{err}");
    assert!(err.contains("allow_plaintext = true"), "{err}");
}

#[test]
fn check_config_refuses_an_http_webhook_with_a_token_to_a_remote_host_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, err) = check(dir.path(), REMOTE_WEBHOOK);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("uplink[0].url (line 12)"), "{err}");
    assert!(err.contains("use https://archive.example/ingest"), "{err}");
}

#[test]
fn allow_plaintext_on_the_uplink_lets_check_config_accept_a_remote_plaintext_url() {
    let dir = tempfile::tempdir().unwrap();
    for uplink in [REMOTE_MQTT, REMOTE_WEBHOOK] {
        let (code, err) = check(dir.path(), &format!("{uplink}allow_plaintext = true\n"));
        assert_eq!(code, Some(0), "{uplink}: {err}");
    }
}

#[test]
fn tls_files_with_a_plaintext_url_are_refused_rather_than_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let ca = write(dir.path(), "ca.pem", "not read by check-config");
    let uplink = format!(
        "[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let (code, err) = check(dir.path(), &uplink);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("uplink[0].ca_file (line 13): ca_file is only used over TLS"),
        "{err}"
    );
    assert!(err.contains("use mqtts://127.0.0.1:8883"), "{err}");
}

#[test]
fn a_mistyped_password_is_reported_by_path_and_type_without_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let uplink = "[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"mqtts://192.0.2.1\"\nusername = \"school-1\"\npassword = 123456789\n";
    let (code, err) = check(dir.path(), uplink);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("uplink[0].password (line 14)"), "{err}");
    assert!(err.contains("expected a string"), "{err}");
    assert!(!err.contains("123456789"), "the value leaked: {err}");
}

#[test]
fn a_token_file_others_can_read_or_its_group_can_write_is_refused_with_the_chmod_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let uplink = |f: &Path| {
        format!(
            "[[uplink]]\nname = \"archive\"\nkind = \"webhook\"\nurl = \"https://archive.example/ingest\"\ntoken_file = \"{}\"\n",
            f.display()
        )
    };
    let open = write_mode(dir.path(), "open.token", "t\n", 0o644);
    let (code, err) = check(dir.path(), &uplink(&open));
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("uplink[0].token_file (line 13)"), "{err}");
    assert!(
        err.contains(&format!("chmod 0640 {}", open.display())),
        "{err}"
    );

    let group_write = write_mode(dir.path(), "gw.token", "t\n", 0o620);
    let (code, err) = check(dir.path(), &uplink(&group_write));
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!("chmod 0600 {}", group_write.display())),
        "{err}"
    );

    let group_read = write_mode(dir.path(), "ok.token", "t\n", 0o640);
    let (code, err) = check(dir.path(), &uplink(&group_read));
    assert_eq!(code, Some(0), "{err}");

    // `run` checks the same and does not start.
    let cfg = write(
        dir.path(),
        "run.toml",
        &(base(&dir.path().join("data"), "127.0.0.1:0") + "\n" + &uplink(&open)),
    );
    let out = campusgw()
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("chmod 0640"), "{err}");
}

/// A `campusgw run` child with its stderr in a file, killed when dropped.
struct Running {
    child: std::process::Child,
    port: u16,
    stderr: PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// SIGTERM, then waits for the exit.
    fn stop(&mut self) {
        Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline, "no stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `campusgw run` with a gb26875 listener and `uplink` and waits until `/healthz` shows uplink 0 down with
/// an error (its destination is a closed port). Retries on another console port if the
/// picked one was taken meanwhile.
fn run_until_down(
    rt: &tokio::runtime::Runtime,
    dir: &Path,
    uplink: &str,
) -> (Running, serde_json::Value) {
    for attempt in 0..5 {
        let port = free_port();
        // The listener journals its device.online at start: something for the uplink to send.
        let text = base(&dir.join("data"), &format!("127.0.0.1:{port}"))
            + "\n[[device]]\nid = \"fire_listener\"\ndriver = \"gb26875\"\nlisten = \"127.0.0.1:0\"\ncentre_address = 88888\n\n"
            + uplink;
        let cfg = write(dir, "gw.toml", &text);
        let stderr = dir.join(format!("stderr-{attempt}.log"));
        let child = campusgw()
            .env("CAMPUSGW_LOG", "info")
            .args(["run", "--config"])
            .arg(&cfg)
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .unwrap();
        let mut gw = Running {
            child,
            port,
            stderr,
        };
        if let Some(body) = rt.block_on(wait_down(&mut gw)) {
            return (gw, body);
        }
        eprintln!("campusgw exited before serving /healthz: {}", gw.log());
    }
    panic!("campusgw never served /healthz");
}

async fn wait_down(gw: &mut Running) -> Option<serde_json::Value> {
    let url = format!("http://127.0.0.1:{}/healthz", gw.port);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = None;
    loop {
        if gw.child.try_wait().unwrap().is_some() {
            return None;
        }
        if let Ok(r) = reqwest::get(&url).await {
            let body: serde_json::Value = r.json().await.unwrap();
            if body["uplinks"][0]["last_error"].is_string() {
                return Some(body);
            }
            last = Some(body);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz never showed the uplink down: {last:?}\n{}",
            gw.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_token_in_a_webhook_url_never_shows_in_healthz_the_log_or_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    // reqwest is built without a default TLS provider in this workspace; pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let closed = free_port();
    let uplink = format!(
        "[[uplink]]\nname = \"archive\"\nkind = \"webhook\"\nurl = \"https://127.0.0.1:{closed}/ingest?token=SECRET-7f3a\"\n"
    );
    let (mut gw, body) = run_until_down(&rt, dir.path(), &uplink);
    let text = body.to_string();
    assert!(!text.contains("SECRET-7f3a"), "healthz leaks: {text}");
    assert!(
        body["uplinks"][0]["last_error"]
            .as_str()
            .unwrap()
            .contains("token=***"),
        "{text}"
    );
    assert_eq!(body["uplinks"][0]["plaintext"], false, "{text}");
    gw.stop();
    let journal = export_text(&dir.path().join("data"));
    assert!(journal.contains("uplink.down"), "{journal}");
    assert!(!journal.contains("SECRET-7f3a"), "journal leaks: {journal}");
    let log = gw.log();
    assert!(log.contains("uplink delivery failed"), "{log}");
    assert!(!log.contains("SECRET-7f3a"), "log leaks: {log}");
}

#[test]
fn a_plaintext_uplink_is_flagged_in_healthz_and_warned_about_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // reqwest is built without a default TLS provider in this workspace; pick ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let closed = free_port();
    let uplink = format!(
        "[[uplink]]\nname = \"local\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{closed}/ingest\"\n"
    );
    let (gw, body) = run_until_down(&rt, dir.path(), &uplink);
    assert_eq!(body["uplinks"][0]["plaintext"], true, "{body}");
    let log = gw.log();
    assert!(
        log.contains("uplink sends events and credentials unencrypted"),
        "{log}"
    );
}
