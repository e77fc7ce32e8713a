//! Interop with dc09_spt 0.0.4 (PyPI), an independent DC-09 transmitter: it sends ADM-CID,
//! SIA-DCS and NULL messages, plain, AES-128 and AES-256, over TCP and UDP, to our receiver
//! driver; each must be ACKed by our receiver and accepted by dc09_spt's own answer check,
//! and journaled. The peer script is `tests/dc09_spt_peer.py` (it states its one shim).
//!
//! Needs the python `scripts/test` sets up (`$CAMPUSGW_PYTHON`, else the project's
//! `.venv/bin/python`, else `python3`) with the dc09_spt release it pins. Without it the test
//! fails saying so; it does not pass silently.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::time::Duration;

use campusgw_dc09::Dc09Config;
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{BuildContext, DeviceId, Driver, DriverConfig, FieldPath, Location};
use serde_json::Value;

mod support;

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dc09_spt_messages_plain_and_encrypted_over_tcp_and_udp_are_acked_and_journaled() {
    // Includes sequence numbers 10 and 27, which dc09_spt writes in hex (`000A`, `001B`).
    let cfg: Dc09Config = toml::from_str(
        r#"
        listen_tcp = "127.0.0.1:0"
        listen_udp = "127.0.0.1:0"
        [[account]]
        account = "1234"
        device = "plain_panel"
        [[account]]
        account = "AB12"
        device = "aes128_panel"
        key = "0123456789abcdef"
        [[account]]
        account = "CD34"
        device = "aes256_panel"
        key = "0123456789abcdef0123456789abcdef"
        "#,
    )
    .unwrap();
    assert!(cfg.validate(&FieldPath::root()).is_empty());
    let host = TestHost::new("dc09_rx", "dc09");
    let bcx = BuildContext {
        device: DeviceId::new("dc09_rx").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&bcx).unwrap();
    let mut bound = driver.local_addr();
    tokio::spawn(driver.run(host.context()));
    let b = tokio::time::timeout(WAIT, bound.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (tcp, udp) = (b.tcp.unwrap(), b.udp.unwrap());

    let python = support::python_with("dc09_spt");
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(&python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/dc09_spt_peer.py"
            ))
            .args([
                "127.0.0.1",
                &tcp.port().to_string(),
                &udp.port().to_string(),
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "peer failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 8, "{stdout}");
    for r in &results {
        assert_eq!(
            r["acked"],
            true,
            "dc09_spt saw no ACK: {r}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    host.wait_until(WAIT, |evs| evs.len() == 7).await;
    let got: Vec<(String, String)> = host
        .events()
        .iter()
        .map(|e| {
            (
                e.source.device.as_str().to_owned(),
                e.kind.as_str().to_owned(),
            )
        })
        .collect();
    let want = [
        ("plain_panel", "panic.alarm"),
        ("plain_panel", "intrusion.alarm"),
        ("aes128_panel", "intrusion.alarm"),
        ("aes128_panel", "fire.alarm"),
        ("aes256_panel", "panic.alarm"),
        // Sent as `000A` and `001B` (hex): accepted, ACKed as written.
        ("plain_panel", "panic.alarm"),
        ("aes128_panel", "intrusion.alarm"),
    ];
    assert_eq!(
        got,
        want.iter()
            .map(|(d, k)| ((*d).to_owned(), (*k).to_owned()))
            .collect::<Vec<_>>()
    );
}
