//! The police uplink against an independent DC-09 receiver: pysiaalarm 3.2.2's `SIAClient`
//! (the listening side Home Assistant uses, run by drivers/dc09/tests/pysiaalarm_listener.py).
//! A panic alarm journaled in the gateway is decoded and ACKed by pysiaalarm, AES-128, and
//! only then does the cursor move and the delivery record appear.
//!
//! Needs the python with the pinned pysiaalarm that `scripts/test` installs
//! (`$CAMPUSGW_PYTHON`, else `.venv/bin/python`); without it the test fails saying so.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::path::PathBuf;
use std::time::Duration;

use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_sdk::{Class, FieldPath};
use tokio::io::AsyncBufReadExt;
use uplink_support::{Rig, wait_for};

const LIMIT: Duration = Duration::from_secs(30);
const KEY: &str = "0123456789ABCDEF";

fn python() -> PathBuf {
    let python = std::env::var_os("CAMPUSGW_PYTHON").map_or_else(
        || PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python")),
        PathBuf::from,
    );
    let ok = std::process::Command::new(&python)
        .args(["-c", "import pysiaalarm"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "{} has no pysiaalarm: run scripts/test (it installs pysiaalarm into .venv/)",
        python.display()
    );
    python
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pysiaalarm_receives_and_acknowledges_a_panic_alarm_from_the_police_uplink() {
    let accounts = serde_json::json!([{"account": "5A01", "key": KEY}]).to_string();
    let mut child = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../drivers/dc09/tests/pysiaalarm_listener.py"
        ))
        .args(["tcp", &accounts])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn pysiaalarm_listener.py");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let next = async |lines: &mut tokio::io::Lines<_>| -> serde_json::Value {
        let line = tokio::time::timeout(LIMIT, lines.next_line())
            .await
            .expect("pysiaalarm answers in time")
            .unwrap()
            .expect("a line");
        serde_json::from_str(&line).unwrap()
    };
    let port = next(&mut lines).await["ready"]
        .as_u64()
        .expect("ready port");

    let mut rig = Rig::open();
    let text = format!(
        "name = \"police\"\nkind = \"dc09\"\nreceivers = [\"127.0.0.1:{port}\"]\naccount = \"5A01\"\nkey = \"{KEY}\"\n"
    );
    let u = campusgw::uplink::parse(toml::from_str(&text).unwrap(), &FieldPath::root())
        .map_err(|e| format!("{e:?}"))
        .unwrap();
    let UplinkSettings::Dc09(c) = u.settings else {
        panic!("dc09")
    };
    let status = UplinkStatus::new("police", "dc09");
    let run = campusgw::uplink::UplinkFactory::start(c, u.filter, rig.context(), status);
    rig.adopt(tokio::spawn(run));

    let alarm = rig
        .emit(Class::LifeSafety, "panic.alarm", 1)
        .await
        .remove(0);
    let got = next(&mut lines).await;
    assert_eq!(got["account"], "5A01", "{got}");
    assert_eq!(got["code"], "PA", "Contact ID 120 is SIA PA: {got}");
    assert_eq!(got["encrypted"], true, "{got}");
    let reader = rig.journal.reader().unwrap();
    wait_for(
        "cursor past the alarm after pysiaalarm's ACK",
        LIMIT,
        || reader.cursor("police", Class::LifeSafety).unwrap() >= alarm.seq,
    )
    .await;
    let conn = rig.journal.read_connection().unwrap();
    let recs = campusgw::uplink::deliveries::list(&conn, "police", &alarm.id.to_string()).unwrap();
    assert_eq!(recs.len(), 1, "{recs:?}");
    assert_eq!(recs[0].endpoint, format!("127.0.0.1:{port}"));
    rig.stop().await;
    drop(child.stdin.take());
}
