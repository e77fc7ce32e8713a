//! The DC-09 transmitter (`campusgw_dc09::transmit`) against `ArcSim`: ACK, NAK with a
//! shifted clock, DUH, failover, all silent, a receiver closing, sequence wrap, AES, UDP,
//! garbage answers; the config's validation; and interop: our transmitter delivers to
//! pysiaalarm 3.2.2's `SIAClient` (`tests/pysiaalarm_listener.py`, the python
//! `scripts/test` sets up, found by `tests/support`), over TCP and UDP, plain, AES-128 and
//! AES-256.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use campusgw_dc09::sim::{ArcMode, ArcSim};
use campusgw_dc09::transmit::{
    AttemptError, Endpoint, Format, TransmitConfig, TransmitError, Transmitter, Transport,
};
use campusgw_dc09::{Data, Key, KeyEncoding, Message, MessageId, Qualifier, Sequence, TimeWindow};
use campusgw_sdk::{DeviceId, FieldPath, HumanDuration, Kind, Location};
use serde_json::json;

/// Generous: a loaded two-core CI machine.
const WAIT: Duration = Duration::from_secs(10);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn arc(mode: ArcMode) -> ArcSim {
    ArcSim::bind(local(), HashMap::new(), mode).await.unwrap()
}

fn config(arcs: &[&ArcSim]) -> TransmitConfig {
    let mut c = TransmitConfig::new(
        arcs.iter().map(|a| a.local_addr().to_string()).collect(),
        "5A01",
    );
    c.ack_timeout = HumanDuration(Duration::from_secs(2));
    c.retries = 1;
    c.failover_after = 2;
    c
}

fn panic_alarm(tx: &Transmitter) -> Message {
    tx.map()
        .message(
            &Kind::new("panic.alarm").unwrap(),
            &json!({}),
            &DeviceId::new("guard_button").unwrap(),
            &Location::from_path("main/A").unwrap(),
        )
        .unwrap()
}

async fn send(tx: &mut Transmitter) -> Result<campusgw_dc09::transmit::Receipt, TransmitError> {
    let m = panic_alarm(tx);
    tokio::time::timeout(Duration::from_secs(60), tx.send(&m))
        .await
        .expect("send ends")
}

fn cid_code(m: &Message) -> (u16, Qualifier) {
    match &m.data {
        Data::ContactId(c) => (c.event.code, c.event.qualifier),
        other => panic!("not contact id: {other:?}"),
    }
}

#[tokio::test]
async fn a_panic_alarm_is_acked_by_the_primary_and_the_receipt_says_so() {
    let primary = arc(ArcMode::Ack).await;
    let mut tx = Transmitter::new(&config(&[&primary])).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!((r.receiver, r.attempts), (0, 1));
    assert_eq!(r.endpoint, Endpoint::Addr(primary.local_addr()));
    assert_eq!(r.address, primary.local_addr());
    assert_eq!(r.sequence, Sequence::new(1).unwrap());
    let got = primary.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, MessageId::AdmCid);
    assert_eq!(got[0].account.as_number(), Some("5A01"));
    assert_eq!(cid_code(&got[0]), (120, Qualifier::New));
    assert!(got[0].timestamp.is_some(), "every message is stamped");
    let r = tx.supervise().await.unwrap();
    assert_eq!(r.sequence, Sequence::new(2).unwrap());
    assert_eq!(primary.received()[1].id, MessageId::Null);
}

#[tokio::test]
async fn a_nak_with_a_shifted_clock_gets_one_resend_with_the_corrected_time_then_the_ack() {
    let primary = arc(ArcMode::Ack).await;
    primary.set_clock_offset(3600);
    let mut tx = Transmitter::new(&config(&[&primary])).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!(r.attempts, 2, "the first frame NAKed, the second ACKed");
    let got = primary.received();
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].sequence, got[1].sequence,
        "a resend keeps its sequence"
    );
    let arc_now = primary.now();
    assert!(
        TimeWindow::default()
            .check_present(got[0].timestamp, arc_now)
            .is_err(),
        "the first was stamped with our clock"
    );
    TimeWindow::default()
        .check_present(got[1].timestamp, arc_now)
        .expect("the resend carries the receiver's time");
    assert!(
        (tx.clock_offset(0) - 3600).abs() <= 2,
        "{}",
        tx.clock_offset(0)
    );
    // The offset sticks: the next message is ACKed at once.
    assert_eq!(send(&mut tx).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn a_duh_is_refused_and_nothing_is_resent() {
    let primary = arc(ArcMode::Ack).await;
    let backup = arc(ArcMode::Ack).await;
    primary.script([ArcMode::Duh]);
    let mut tx = Transmitter::new(&config(&[&primary, &backup])).unwrap();
    let e = send(&mut tx).await.unwrap_err();
    assert!(
        matches!(e, TransmitError::Refused { receiver: 0, .. }),
        "{e}"
    );
    assert!(!e.is_transient());
    assert_eq!(primary.received().len(), 1);
    assert!(backup.received().is_empty(), "a DUH is not tried elsewhere");
    // The receiver answered: it is still the one messages start at.
    assert_eq!(tx.current_receiver(), 0);
}

#[tokio::test]
async fn a_silent_primary_fails_over_to_the_backup_and_the_receipt_names_it() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Ack).await;
    let mut c = config(&[&primary, &backup]);
    c.ack_timeout = HumanDuration(Duration::from_millis(500));
    c.retries = 1;
    c.failover_after = 2;
    let mut tx = Transmitter::new(&c).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!(r.receiver, 1);
    assert_eq!(r.endpoint, Endpoint::Addr(backup.local_addr()));
    assert_eq!(r.attempts, 3, "two at the primary, one at the backup");
    assert_eq!(primary.received().len(), 2);
    assert_eq!(tx.current_receiver(), 1, "two failures moved us on");
    let r = send(&mut tx).await.unwrap();
    assert_eq!(
        (r.receiver, r.attempts),
        (1, 1),
        "the next starts at the backup"
    );
    assert_eq!(primary.received().len(), 2);
}

#[tokio::test]
async fn after_the_return_period_a_probe_brings_the_primary_back() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Ack).await;
    let mut c = config(&[&primary, &backup]);
    c.ack_timeout = HumanDuration(Duration::from_millis(500));
    c.failover_after = 1;
    c.retries = 0;
    c.return_to_primary_after = HumanDuration(Duration::from_secs(1));
    let mut tx = Transmitter::new(&c).unwrap();
    assert_eq!(send(&mut tx).await.unwrap().receiver, 1);
    primary.set_mode(ArcMode::Ack);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = tx.supervise().await.unwrap();
        if r.receiver == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never back on the primary"
        );
        // Polling interval while the return period runs out.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(tx.current_receiver(), 0);
}

/// After the return period an event still goes to the backup at once (it is never the
/// probe); the primary comes back only through a NULL probe, which fails while it is
/// silent and succeeds when it answers.
#[tokio::test]
async fn an_event_never_probes_the_primary_a_null_probe_brings_it_back() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Ack).await;
    let mut c = config(&[&primary, &backup]);
    c.ack_timeout = HumanDuration(Duration::from_millis(300));
    c.failover_after = 1;
    c.retries = 0;
    c.return_to_primary_after = HumanDuration(Duration::from_secs(1));
    let mut tx = Transmitter::new(&c).unwrap();
    assert!(
        tx.primary_probe_due().is_none(),
        "on the primary: nothing to probe"
    );
    assert_eq!(send(&mut tx).await.unwrap().receiver, 1);
    let due = tx
        .primary_probe_due()
        .expect("a probe is due after the failover");
    tokio::time::sleep_until(due).await;
    let at_primary = primary.received().len();
    let r = send(&mut tx).await.unwrap();
    assert_eq!((r.receiver, r.attempts), (1, 1), "straight to the backup");
    assert_eq!(
        primary.received().len(),
        at_primary,
        "the event did not probe"
    );
    assert!(!tx.probe_primary().await.unwrap(), "silent primary");
    assert_eq!(primary.received().last().unwrap().id, MessageId::Null);
    assert_eq!(tx.current_receiver(), 1);
    assert!(
        tx.primary_probe_due().unwrap() > tokio::time::Instant::now(),
        "the next probe a period later"
    );
    primary.set_mode(ArcMode::Ack);
    assert!(tx.probe_primary().await.unwrap());
    assert_eq!(tx.current_receiver(), 0);
    assert!(tx.primary_probe_due().is_none());
    assert_eq!(send(&mut tx).await.unwrap().receiver, 0);
}

#[tokio::test]
async fn every_receiver_silent_is_unreachable_with_a_reason_per_receiver() {
    let primary = arc(ArcMode::Silent).await;
    let backup = arc(ArcMode::Close).await;
    let mut c = config(&[&primary, &backup]);
    c.ack_timeout = HumanDuration(Duration::from_millis(300));
    let mut tx = Transmitter::new(&c).unwrap();
    let e = send(&mut tx).await.unwrap_err();
    assert!(e.is_transient());
    let TransmitError::Unreachable { failures } = e else {
        panic!("{e}")
    };
    let reasons: Vec<(usize, AttemptError)> = failures
        .iter()
        .map(|f| (f.receiver, f.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        vec![(0, AttemptError::Timeout), (1, AttemptError::Closed)]
    );
    assert!(failures.iter().all(|f| f.attempts == 2));
}

#[tokio::test]
async fn a_receiver_given_by_host_name_is_resolved_when_connecting() {
    let primary = arc(ArcMode::Ack).await;
    let mut c = config(&[]);
    let name = format!("localhost:{}", primary.local_addr().port());
    c.receivers = vec![name.clone()];
    let mut tx = Transmitter::new(&c).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!(r.endpoint.to_string(), name);
    assert_eq!(r.address, primary.local_addr());
}

#[tokio::test]
async fn a_refused_connection_is_a_failure_and_the_backup_takes_the_alarm() {
    // A port nothing listens on: bind, note it, close.
    let dead = std::net::TcpListener::bind(local()).unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let backup = arc(ArcMode::Ack).await;
    let mut c = config(&[&backup]);
    c.receivers.insert(0, dead_addr.to_string());
    let mut tx = Transmitter::new(&c).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!(r.receiver, 1);
}

#[tokio::test]
async fn a_receiver_that_closes_after_reading_gets_a_reconnect_and_the_resend() {
    let primary = arc(ArcMode::Ack).await;
    primary.script([ArcMode::Close]);
    let mut tx = Transmitter::new(&config(&[&primary])).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!((r.receiver, r.attempts), (0, 2));
    let got = primary.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].sequence, got[1].sequence);
    // Closed on a connection that had carried a frame (as after an idle close): resent on
    // a fresh one at once, two frames, no failure counted.
    primary.script([ArcMode::Close]);
    assert_eq!(tx.supervise().await.unwrap().attempts, 2);
    assert_eq!(send(&mut tx).await.unwrap().attempts, 1);
}

#[tokio::test]
async fn garbage_answers_fail_the_attempt_and_the_retry_is_acked() {
    let primary = arc(ArcMode::Ack).await;
    primary.script([ArcMode::Garbage]);
    let mut tx = Transmitter::new(&config(&[&primary])).unwrap();
    let r = send(&mut tx).await.unwrap();
    assert_eq!(r.attempts, 2);
}

#[tokio::test]
async fn sequence_numbers_wrap_from_9999_to_0001() {
    let primary = arc(ArcMode::Ack).await;
    let mut tx = Transmitter::new(&config(&[&primary])).unwrap();
    tx.set_sequence(Sequence::new(9998).unwrap());
    let seqs = [
        send(&mut tx).await.unwrap().sequence.value(),
        send(&mut tx).await.unwrap().sequence.value(),
        send(&mut tx).await.unwrap().sequence.value(),
    ];
    assert_eq!(seqs, [9999, 1, 2]);
    let wire: Vec<u16> = primary
        .received()
        .iter()
        .map(|m| m.sequence.value())
        .collect();
    assert_eq!(wire, [9999, 1, 2]);
}

#[tokio::test]
async fn aes_128_and_aes_256_messages_round_trip_through_the_simulated_arc() {
    for (key, format) in [
        ("0123456789abcdef", Format::AdmCid),
        ("0123456789abcdef0123456789ABCDEF", Format::SiaDcs),
    ] {
        let keys = HashMap::from([(
            "5A01".to_owned(),
            Key::parse(key, KeyEncoding::Text).unwrap(),
        )]);
        let primary = ArcSim::bind(local(), keys, ArcMode::Ack).await.unwrap();
        let mut c = config(&[&primary]);
        c.key = Some(key.to_owned());
        c.format = format;
        let mut tx = Transmitter::new(&c).unwrap();
        let r = send(&mut tx).await.unwrap();
        assert_eq!(r.attempts, 1, "AES-{}", key.len() * 8);
        let got = primary.received();
        assert!(got[0].encrypted);
        match (&got[0].data, format) {
            (Data::ContactId(d), Format::AdmCid) => assert_eq!(d.event.code, 120),
            (Data::Sia(d), Format::SiaDcs) => {
                assert_eq!(d.events().next(), Some(("PA", "000")));
                assert_eq!(d.modifier("ri"), Some("1"));
            }
            (other, _) => panic!("{other:?}"),
        }
    }
}

#[tokio::test]
async fn a_udp_receiver_acks_and_a_silent_one_times_out() {
    let primary = ArcSim::bind_udp(local(), HashMap::new(), ArcMode::Ack)
        .await
        .unwrap();
    let mut c = config(&[&primary]);
    c.transport = Transport::Udp;
    c.ack_timeout = HumanDuration(Duration::from_millis(500));
    let mut tx = Transmitter::new(&c).unwrap();
    assert_eq!(send(&mut tx).await.unwrap().attempts, 1);
    primary.set_mode(ArcMode::Silent);
    let e = send(&mut tx).await.unwrap_err();
    assert!(matches!(e, TransmitError::Unreachable { .. }), "{e}");
    assert!(primary.wait_received(3, WAIT).await);
}

#[test]
fn every_config_problem_is_reported_with_its_path_and_what_to_change() {
    let c: TransmitConfig = toml::from_str(
        r#"
        receivers = ["nowhere", "arc.example.net:0"]
        account = "12"
        receiver_number = "XYZ"
        key = "short"
        ack_timeout = "1ms"
        failover_after = 0
        retries = 50
        supervision = "0s"
        default_partition = 100
        [[zone]]
        partition = 2
        [[zone]]
        location = "main/A"
        zone = 1000
        "#,
    )
    .unwrap();
    let issues: Vec<String> = c
        .validate(&FieldPath::root().key("uplink").index(0))
        .iter()
        .map(ToString::to_string)
        .collect();
    for want in [
        "uplink[0].receivers[0]",
        "uplink[0].receivers[1]",
        "uplink[0].account",
        "uplink[0].receiver_number",
        "uplink[0].key",
        "uplink[0].ack_timeout",
        "uplink[0].failover_after",
        "uplink[0].retries",
        "uplink[0].supervision",
        "uplink[0].default_partition",
        "uplink[0].zone[0].location",
        "uplink[0].zone[1].zone",
    ] {
        assert!(
            issues.iter().any(|i| i.starts_with(want)),
            "{want} missing in {issues:#?}"
        );
    }
    let empty: TransmitConfig = toml::from_str("receivers = []\naccount = \"5A01\"").unwrap();
    assert!(
        empty.validate(&FieldPath::root())[0]
            .to_string()
            .contains("at least one receiver")
    );
    assert!(matches!(
        Transmitter::new(&c),
        Err(TransmitError::Config(v)) if v.len() == issues.len()
    ));
    let fine: TransmitConfig = toml::from_str(
        "receivers = [\"arc.example.net:9010\", \"[::1]:9010\"]\naccount = \"5A01\"\nformat = \"sia-dcs\"",
    )
    .unwrap();
    assert!(fine.validate(&FieldPath::root()).is_empty());
    assert_eq!(fine.format, Format::SiaDcs);
}

mod support;

/// A running `tests/pysiaalarm_listener.py`: pysiaalarm's `SIAClient` on a free port.
struct Listener {
    child: tokio::process::Child,
    lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Listener {
    async fn start(transport: &str, account: &str, key: Option<&str>) -> Listener {
        use tokio::io::AsyncBufReadExt;
        let python = support::python_with("pysiaalarm");
        let accounts = json!([{"account": account, "key": key}]).to_string();
        let mut child = tokio::process::Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/pysiaalarm_listener.py"
            ))
            .args([transport, &accounts])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn pysiaalarm_listener.py");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the listener starts")
            .unwrap()
            .expect("a ready line");
        let ready: serde_json::Value = serde_json::from_str(&ready).unwrap();
        let port = u16::try_from(ready["ready"].as_u64().expect("ready port")).unwrap();
        Listener { child, lines, port }
    }

    async fn next_event(&mut self) -> serde_json::Value {
        let line = tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("pysiaalarm reports the event")
            .unwrap()
            .expect("an event line");
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_transmitter_delivers_panic_and_intrusion_alarms_to_pysiaalarm_over_tcp_and_udp_plain_and_aes()
 {
    const K128: &str = "0123456789ABCDEF";
    const K256: &str = "0123456789ABCDEF0123456789abcdef";
    for (transport, key) in [
        (Transport::Tcp, None),
        (Transport::Tcp, Some(K128)),
        (Transport::Tcp, Some(K256)),
        (Transport::Udp, None),
        (Transport::Udp, Some(K256)),
    ] {
        let proto = if transport == Transport::Udp {
            "udp"
        } else {
            "tcp"
        };
        let mut rx = Listener::start(proto, "AB12", key).await;
        let what = format!(
            "{proto} {}",
            key.map_or("plain".to_owned(), |k| format!("AES-{}", k.len() * 8))
        );
        for (format, kind, code, zone) in [
            (Format::AdmCid, "panic.alarm", "PA", 5),
            (Format::SiaDcs, "intrusion.alarm", "BA", 12),
        ] {
            let mut c = TransmitConfig::new(vec![format!("127.0.0.1:{}", rx.port)], "AB12");
            c.format = format;
            c.transport = transport;
            c.key = key.map(str::to_owned);
            c.zone = toml::from_str::<TransmitConfig>(&format!(
                "receivers = []\naccount = \"AB12\"\n[[zone]]\nlocation = \"main/A\"\npartition = 2\nzone = {zone}"
            ))
            .unwrap()
            .zone;
            let mut tx = Transmitter::new(&c).unwrap();
            let m = tx
                .map()
                .message(
                    &Kind::new(kind).unwrap(),
                    &json!({}),
                    &DeviceId::new("d").unwrap(),
                    &Location::from_path("main/A/1").unwrap(),
                )
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(60), tx.send(&m))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("{what} {kind}: pysiaalarm did not ACK: {e}"));
            assert_eq!(r.attempts, 1, "{what} {kind}");
            let ev = rx.next_event().await;
            assert_eq!(ev["account"], "AB12", "{what}: {ev}");
            assert_eq!(ev["code"], code, "{what}: {ev}");
            assert_eq!(ev["valid_timestamp"], true, "{what}: {ev}");
            assert_eq!(ev["encrypted"], key.is_some(), "{what}: {ev}");
            // pysiaalarm reads ADM-CID's ZZZ as `ri` and GG as `partition`; SIA DCS's
            // `ri` as the area and the event's address as `message`.
            let (area, addr) = match format {
                Format::AdmCid => (&ev["partition"], &ev["ri"]),
                Format::SiaDcs => (&ev["ri"], &ev["message"]),
            };
            assert_eq!(
                (
                    area.as_str().and_then(|a| a.parse::<u8>().ok()),
                    addr.as_str()
                ),
                (Some(2), Some(format!("{zone:03}").as_str())),
                "{what}: {ev}"
            );
        }
    }
}
