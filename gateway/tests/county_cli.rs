//! `campusgw county keygen` / `county sign` round trip through the verifier, and the
//! `[uplink.commands]` bounds and allow-list errors of `check-config`, with their lines.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use campusgw::uplink::county_commands::{CommandGate, CommandPolicy, RefusalReason};
use campusgw_sdk::FieldPath;

mod cli_support;
use cli_support::campusgw;

fn check_config(commands: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[gateway]\nid = \"school-1\"\nname = \"Test school\"\ndata_dir = \"{}\"\n\n\
         [console]\nlisten = \"127.0.0.1:0\"\n[[uplink]]\nname = \"county\"\nkind = \"mqtt\"\nurl = \"mqtt://127.0.0.1:1883\"\n\
         [uplink.commands]\n{commands}",
        dir.path().display()
    );
    let file = dir.path().join("gw.toml");
    std::fs::write(&file, text).unwrap();
    let out = campusgw().arg("check-config").arg(&file).output().unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), all)
}

const KEY: &str = "public_keys = [\"A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=\"]\n";

#[test]
fn a_window_over_one_hour_and_max_bytes_over_one_mebibyte_are_refused_with_their_lines() {
    let (ok, out) = check_config(&format!(
        "{KEY}allow = [\"status\"]\nwindow = \"2h\"\nmax_bytes = 2097152\n"
    ));
    assert!(!ok, "{out}");
    // [gateway] 4 lines, blank, [console] 2, [[uplink]] 4, [uplink.commands], public_keys,
    // allow: window is line 15, max_bytes line 16.
    assert!(out.contains("uplink[0].commands.window (line 15)"), "{out}");
    assert!(
        out.contains("at most 1h") || out.contains("and 1h"),
        "{out}"
    );
    assert!(
        out.contains("uplink[0].commands.max_bytes (line 16)"),
        "{out}"
    );
    let (ok, out) = check_config(&format!(
        "{KEY}allow = [\"status\"]\nwindow = \"1h\"\nmax_bytes = 1048576\n"
    ));
    assert!(ok, "the bounds themselves are accepted: {out}");
}

#[test]
fn a_device_command_allowed_as_a_plain_string_is_refused_with_a_message_to_list_targets() {
    let (ok, out) = check_config(&format!("{KEY}allow = [\"status\", \"relay.set\"]\n"));
    assert!(!ok, "{out}");
    assert!(out.contains("uplink[0].commands.allow[1]"), "{out}");
    assert!(out.contains("targets"), "{out}");
    let (ok, out) = check_config(&format!(
        "{KEY}allow = [\"status\", \"resync\", {{ kind = \"relay.set\", targets = [\"fire_panel_a\"] }}, {{ kind = \"door.unlock\", targets = [\"building:A\"] }}]\n"
    ));
    assert!(ok, "kinds with targets are valid: {out}");
    let (ok, out) = check_config(&format!(
        "{KEY}allow = [{{ kind = \"status\", targets = [\"x\"] }}]\n"
    ));
    assert!(!ok && out.contains("takes no target"), "{out}");
}

fn gate(public: &str, gateway: &str) -> CommandGate {
    let v: toml::Value = toml::from_str(&format!(
        "public_keys = [\"{public}\"]\nallow = [\"status\", {{ kind = \"relay.set\", targets = [\"relay_1\"] }}]\n"
    ))
    .unwrap();
    let p = CommandPolicy::from_toml(v, &FieldPath::root().key("commands")).expect("policy");
    CommandGate::new(p, gateway)
}

fn sign(key: &std::path::Path, args: &[&str]) -> Vec<u8> {
    let out = campusgw()
        .args(["county", "sign", "--key"])
        .arg(key)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout.trim_ascii_end().to_vec()
}

#[test]
fn keygen_then_sign_produces_a_command_the_gateway_accepts_and_a_tampered_one_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("county.key");
    let out = campusgw()
        .args(["county", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the private key file is owner-only");
    }
    let again = campusgw()
        .args(["county", "keygen", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        !again.status.success(),
        "an existing key file is never overwritten"
    );

    let g = gate(&public, "school-042");
    let now = chrono::Utc::now();
    let msg = sign(
        &key,
        &["--gateway", "school-042", "--kind", "status", "--id", "c-1"],
    );
    let ok = g
        .verify("c-1", &msg, now)
        .expect("signed by the CLI: accepted");
    assert!(
        (ok.issued_at - now).abs() < chrono::Duration::from_std(Duration::from_secs(60)).unwrap()
    );
    let device = sign(
        &key,
        &[
            "--gateway",
            "school-042",
            "--kind",
            "relay.set",
            "--target",
            "relay_1",
            "--args",
            "{\"on\": true}",
            "--id",
            "c-2",
        ],
    );
    g.verify("c-2", &device, now)
        .expect("a device command for an allowed target");

    let text = String::from_utf8(sign(
        &key,
        &["--gateway", "school-042", "--kind", "status", "--id", "c-3"],
    ))
    .unwrap();
    let tampered = text.replace("school-042", "school-043");
    let r = gate(&public, "school-043")
        .verify("c-3", tampered.as_bytes(), now)
        .expect_err("tampered");
    assert_eq!(r.reason, RefusalReason::BadSignature, "{r:?}");

    let other = sign(
        &key,
        &["--gateway", "school-007", "--kind", "status", "--id", "c-4"],
    );
    let r = g.verify("c-4", &other, now).expect_err("another gateway's");
    assert_eq!(r.reason, RefusalReason::WrongGateway, "{r:?}");
}
