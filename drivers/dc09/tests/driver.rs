//! The dc09 receiver against the simulated panel, on 127.0.0.1:0, with the SDK's in-memory
//! host. Every await is bounded; waits are on conditions, not sleeps.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_dc09::sim::{Clock, Outcome, PanelConfig, PanelSim, SimEvent, Transport};
use campusgw_dc09::{Bound, Dc09Config, Key, KeyEncoding, MessageId, Qualifier};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BoxFuture, BuildContext, ContextParts, DeviceHealth, DeviceId, Driver, DriverConfig,
    DriverContext, EmitError, Event, EventSink, FieldPath, HealthSink, Location, Receipt,
};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(10);
const KEY: &str = "0123456789abcdef";

fn config(extra: &str) -> Dc09Config {
    let text = format!(
        r#"
        listen_tcp = "127.0.0.1:0"
        listen_udp = "127.0.0.1:0"
        {extra}
        [[account]]
        account = "1234"
        device = "guard_panic"
        location = {{ building = "A", point = "guard room" }}
        [[account.zone]]
        number = 5
        name = "lab door"
        location = {{ building = "Lab", zone = "east" }}
        [[account]]
        account = "AB12"
        device = "lab_panel"
        key = "{KEY}"
        [[account]]
        account = "777"
        device = "supervised_panel"
        supervision = "1s"
        "#
    );
    let cfg: Dc09Config = toml::from_str(&text).unwrap();
    assert_eq!(cfg.validate(&FieldPath::root()), vec![]);
    cfg
}

async fn run(cfg: &Dc09Config, cx: DriverContext) -> Bound {
    let bcx = BuildContext {
        device: DeviceId::new("dc09_rx").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&bcx).unwrap();
    let mut bound = driver.local_addr();
    tokio::spawn(driver.run(cx));
    tokio::time::timeout(WAIT, bound.wait_for(Option::is_some))
        .await
        .unwrap()
        .unwrap()
        .unwrap()
}

async fn start(extra: &str) -> (TestHost, Bound) {
    let host = TestHost::new("dc09_rx", "dc09");
    let bound = run(&config(extra), host.context()).await;
    (host, bound)
}

async fn panel(bound: Bound, transport: Transport, account: &str) -> PanelSim {
    panel_with(bound, transport, account, |_| {}).await
}

async fn panel_with(
    bound: Bound,
    transport: Transport,
    account: &str,
    tweak: impl FnOnce(&mut PanelConfig),
) -> PanelSim {
    let addr = match transport {
        Transport::Tcp => bound.tcp.unwrap(),
        Transport::Udp => bound.udp.unwrap(),
    };
    let mut c = PanelConfig::new(transport, addr, account);
    c.ack_timeout = Duration::from_secs(3);
    tweak(&mut c);
    tokio::time::timeout(WAIT, PanelSim::connect(c))
        .await
        .unwrap()
        .unwrap()
}

fn kinds(host: &TestHost) -> Vec<String> {
    host.events()
        .iter()
        .map(|e| e.kind.as_str().to_owned())
        .collect()
}

/// A journal that holds each commit until released.
struct HoldingSink {
    release: watch::Receiver<bool>,
    started: AtomicUsize,
    started_changed: Notify,
    events: Mutex<Vec<Event>>,
}

/// The sink handed to the context: a handle on the shared [`HoldingSink`].
struct Holding(Arc<HoldingSink>);

impl EventSink for Holding {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>> {
        let me = self.0.clone();
        Box::pin(async move {
            me.started.fetch_add(1, Ordering::SeqCst);
            me.started_changed.notify_waiters();
            let mut release = me.release.clone();
            release
                .wait_for(|r| *r)
                .await
                .map_err(|_| EmitError::Closed)?;
            let mut log = me.events.lock().unwrap();
            let receipts = events
                .into_iter()
                .map(|mut e| {
                    e.seq = log.len() as u64 + 1;
                    log.push(e.clone());
                    Receipt {
                        id: e.id,
                        seq: e.seq,
                        duplicate: false,
                    }
                })
                .collect();
            Ok(receipts)
        })
    }
}

struct NoHealth;
impl HealthSink for NoHealth {
    fn report(&self, _: &DeviceId, _: DeviceHealth) {}
    fn activity(&self, _: &DeviceId) {}
}

#[tokio::test]
async fn an_event_is_acked_only_after_the_journal_committed_it() {
    let (release_tx, release_rx) = watch::channel(false);
    let sink = Arc::new(HoldingSink {
        release: release_rx,
        started: AtomicUsize::new(0),
        started_changed: Notify::new(),
        events: Mutex::new(Vec::new()),
    });
    let cx = DriverContext::new(ContextParts {
        device: DeviceId::new("dc09_rx").unwrap(),
        driver: "dc09",
        location: Location::default(),
        sink: Arc::new(Holding(sink.clone())),
        health: Arc::new(NoHealth),
        commands: Arc::new(campusgw_sdk::CommandInbox::new()),
        shutdown: CancellationToken::new(),
    });
    let bound = run(&config(""), cx).await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    let msg = p.message(
        &SimEvent::cid(120, 1, 5),
        campusgw_dc09::Sequence::ZERO.next(),
    );
    let frame = p.encode(&msg).unwrap();
    p.send_raw(&frame).await.unwrap();
    // The driver has handed the event to the journal, which holds the commit.
    tokio::time::timeout(WAIT, async {
        loop {
            let notified = sink.started_changed.notified();
            if sink.started.load(Ordering::SeqCst) > 0 {
                break;
            }
            notified.await;
        }
    })
    .await
    .unwrap();
    assert!(
        p.read_reply(Duration::from_millis(300))
            .await
            .unwrap()
            .is_none(),
        "a reply came while the journal had not committed"
    );
    assert!(sink.events.lock().unwrap().is_empty());
    release_tx.send_replace(true);
    let ack = p.read_reply(WAIT).await.unwrap().expect("ACK after commit");
    assert_eq!((ack.id, ack.sequence), (MessageId::Ack, msg.sequence));
    assert_eq!(sink.events.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_panic_button_event_is_journaled_with_its_zone_and_acked() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 5)).await.unwrap(),
        Outcome::Acked { attempts: 1 }
    );
    let e = host.wait_for_kind("panic.alarm", WAIT).await;
    assert_eq!(e.class, campusgw_sdk::Class::LifeSafety);
    assert_eq!(e.source.device.as_str(), "guard_panic");
    assert_eq!(e.location.building.as_deref(), Some("Lab"));
    assert_eq!(e.payload["zone_name"], "lab door");
    assert_eq!(e.payload["account"], "1234");
    assert!(e.origin_ref.as_deref().unwrap().contains("1120 01 005"));
    // A restore of the same zone is its own event kind.
    let restore = SimEvent::ContactId {
        qualifier: Qualifier::Restore,
        code: 120,
        partition: 1,
        zone: 5,
    };
    assert!(matches!(
        p.send(&restore).await.unwrap(),
        Outcome::Acked { .. }
    ));
    host.wait_for_kind("panic.alarm.restore", WAIT).await;
}

#[tokio::test]
async fn a_retransmission_with_a_restarted_sequence_is_the_same_event_and_a_new_alarm_with_the_same_sequence_is_not()
 {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    let burglary = SimEvent::cid(130, 1, 7);
    assert!(matches!(
        p.send(&burglary).await.unwrap(),
        Outcome::Acked { .. }
    ));
    let first_seq = p.sequence();
    // The panel reboots, numbers from 0001 again and retransmits the unconfirmed burglary.
    p.restart_sequence();
    assert!(matches!(
        p.send(&burglary).await.unwrap(),
        Outcome::Acked { .. }
    ));
    assert_eq!(p.sequence(), first_seq);
    assert_eq!(kinds(&host), vec!["intrusion.alarm"]);
    // A different alarm under the same sequence number is a new event.
    p.restart_sequence();
    assert!(matches!(
        p.send(&SimEvent::cid(130, 1, 8)).await.unwrap(),
        Outcome::Acked { .. }
    ));
    assert_eq!(p.sequence(), first_seq);
    host.wait_until(WAIT, |evs| evs.len() == 2).await;
    let zones: Vec<_> = host
        .events()
        .iter()
        .map(|e| e.payload["zone"].clone())
        .collect();
    assert_eq!(zones, vec![7, 8]);
}

#[tokio::test]
async fn encrypted_accounts_are_decrypted_and_acked_encrypted_and_a_wrong_key_gets_a_nak() {
    let (host, bound) = start("").await;
    let key = Key::parse(KEY, KeyEncoding::Text).unwrap();
    let mut p = panel_with(bound, Transport::Tcp, "AB12", |c| c.key = Some(key)).await;
    assert_eq!(
        p.send(&SimEvent::sia("1", "BA", "3")).await.unwrap(),
        Outcome::Acked { attempts: 1 }
    );
    assert!(
        p.replies.last().unwrap().encrypted,
        "the ACK is encrypted like the request"
    );
    let e = host.wait_for_kind("intrusion.alarm", WAIT).await;
    assert_eq!(e.source.device.as_str(), "lab_panel");
    assert_eq!(e.payload["encrypted"], true);

    let wrong = Key::parse("fedcba9876543210", KeyEncoding::Text).unwrap();
    let mut bad = panel_with(bound, Transport::Tcp, "AB12", |c| {
        c.key = Some(wrong);
        c.retries = 0;
    })
    .await;
    assert_eq!(
        bad.send(&SimEvent::sia("1", "PA", "1")).await.unwrap(),
        Outcome::NoAck {
            attempts: 1,
            naks: 1
        }
    );
    assert_eq!(kinds(&host), vec!["intrusion.alarm"]);
}

#[tokio::test]
async fn a_message_outside_the_time_window_gets_a_nak_with_our_clock_and_the_corrected_retry_is_acked()
 {
    let (host, bound) = start("").await;
    let mut p = panel_with(bound, Transport::Tcp, "1234", |c| {
        c.clock = Clock::Offset(-3600);
    })
    .await;
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 1)).await.unwrap(),
        Outcome::Acked { attempts: 2 }
    );
    let nak = &p.replies[0];
    assert_eq!(nak.id, MessageId::Nak);
    let offset = nak.timestamp.unwrap().offset_from(chrono::Utc::now());
    assert!(
        offset.abs() < 60,
        "the NAK carries our clock, off by {offset} s"
    );
    assert_eq!(kinds(&host), vec!["panic.alarm"]);

    // A panel that lost its clock and ignores NAKs is never accepted.
    let mut zero = panel_with(bound, Transport::Tcp, "1234", |c| {
        c.clock = Clock::Zero;
        c.follow_nak_clock = false;
        c.retries = 1;
    })
    .await;
    assert_eq!(
        zero.send(&SimEvent::cid(121, 1, 1)).await.unwrap(),
        Outcome::NoAck {
            attempts: 2,
            naks: 2
        }
    );
}

#[tokio::test]
async fn a_bad_crc_gets_a_nak_and_the_connection_survives() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    let msg = p.message(
        &SimEvent::cid(110, 1, 2),
        campusgw_dc09::Sequence::ZERO.next(),
    );
    let mut frame = p.encode(&msg).unwrap();
    // Corrupt the CRC's first hex digit.
    frame[1] = if frame[1] == b'0' { b'1' } else { b'0' };
    p.send_raw(&frame).await.unwrap();
    let nak = p.read_reply(WAIT).await.unwrap().unwrap();
    assert_eq!(nak.id, MessageId::Nak);
    assert!(host.events().is_empty());
    assert_eq!(
        p.send(&SimEvent::cid(110, 1, 2)).await.unwrap(),
        Outcome::Acked { attempts: 1 }
    );
    host.wait_for_kind("fire.alarm", WAIT).await;
}

#[tokio::test]
async fn a_hex_sequence_number_is_acked_with_the_same_digits_and_journaled() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    // As dc09_spt writes its tenth message: `000A` (DC-09 says decimal; we accept it).
    let seq = campusgw_dc09::Sequence::parse("000A").unwrap();
    let frame = p
        .encode(&p.message(&SimEvent::cid(120, 1, 4), seq))
        .unwrap();
    p.send_raw(&frame).await.unwrap();
    let ack = p.read_reply(WAIT).await.unwrap().unwrap();
    assert_eq!(ack.id, MessageId::Ack);
    assert_eq!(ack.sequence.to_string(), "000A", "echoed as written");
    let e = host.wait_for_kind("panic.alarm", WAIT).await;
    assert_eq!(e.payload["sequence"], 10);
}

#[tokio::test]
async fn an_unknown_code_gets_duh_and_nothing_is_journaled() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    assert!(matches!(
        p.send(&SimEvent::cid(999, 1, 1)).await.unwrap(),
        Outcome::Duh { .. }
    ));
    assert!(matches!(
        p.send(&SimEvent::sia("1", "ZZ", "1")).await.unwrap(),
        Outcome::Duh { .. }
    ));
    assert!(host.events().is_empty());
}

#[tokio::test]
async fn an_unknown_code_is_journaled_when_the_policy_accepts_it() {
    let (host, bound) = start("unknown_code = \"accept\"").await;
    let mut p = panel(bound, Transport::Udp, "1234").await;
    assert!(matches!(
        p.send(&SimEvent::cid(999, 1, 1)).await.unwrap(),
        Outcome::Acked { .. }
    ));
    host.wait_for_kind("dc09.unknown", WAIT).await;
}

#[tokio::test]
async fn a_null_reports_the_account_online_and_its_silence_reports_it_offline() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "777").await;
    assert_eq!(p.null().await.unwrap(), Outcome::Acked { attempts: 1 });
    let supervised = DeviceId::new("supervised_panel").unwrap();
    let online = |h: &TestHost| {
        h.health_reports()
            .iter()
            .any(|(d, s)| *d == supervised && *s == DeviceHealth::Online)
    };
    assert!(online(&host), "{:?}", host.health_reports());
    assert!(host.events().is_empty(), "a NULL is no event");
    // The panel goes silent: no NULL within its 1 s supervision interval.
    host.wait_for_health(
        WAIT,
        |h| matches!(h, DeviceHealth::Offline(why) if why.contains("supervision")),
    )
    .await;
    let last = host
        .health_reports()
        .into_iter()
        .rev()
        .find(|(d, _)| *d == supervised)
        .unwrap();
    assert!(matches!(last.1, DeviceHealth::Offline(_)));
}

#[tokio::test]
async fn half_frames_and_garbage_over_tcp_still_yield_the_frame() {
    let (host, bound) = start("").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    let msg = p.message(
        &SimEvent::cid(130, 2, 9),
        campusgw_dc09::Sequence::ZERO.next(),
    );
    let frame = p.encode(&msg).unwrap();
    p.send_raw(b"\x00\xffgarbage without a newline")
        .await
        .unwrap();
    let (a, b) = frame.split_at(frame.len() / 2);
    p.send_raw(a).await.unwrap();
    assert!(
        p.read_reply(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none(),
        "half a frame is not answered"
    );
    p.send_raw(b).await.unwrap();
    let ack = p.read_reply(WAIT).await.unwrap().unwrap();
    assert_eq!((ack.id, ack.sequence), (MessageId::Ack, msg.sequence));
    host.wait_for_kind("intrusion.alarm", WAIT).await;
}

#[tokio::test]
async fn udp_frames_are_answered_to_their_sender() {
    let (host, bound) = start("").await;
    let key = Key::parse(KEY, KeyEncoding::Text).unwrap();
    let mut p = panel_with(bound, Transport::Udp, "AB12", |c| c.key = Some(key)).await;
    assert_eq!(
        p.send(&SimEvent::sia("1", "PA", "2")).await.unwrap(),
        Outcome::Acked { attempts: 1 }
    );
    let mut plain = panel(bound, Transport::Udp, "1234").await;
    assert_eq!(plain.null().await.unwrap(), Outcome::Acked { attempts: 1 });
    assert_eq!(kinds(&host), vec!["panic.alarm"]);
}

#[tokio::test]
async fn a_flood_from_one_source_is_rate_limited_and_every_acked_event_is_journaled() {
    let (host, bound) = start("frames_per_second = 1\nframe_burst = 3").await;
    let mut p = panel(bound, Transport::Tcp, "1234").await;
    let mut acked = Vec::new();
    for zone in 1..=10u16 {
        let msg = p.message(
            &SimEvent::cid(130, 1, zone),
            campusgw_dc09::Sequence::ZERO.next(),
        );
        let bytes = p.encode(&msg).unwrap();
        p.send_raw(&bytes).await.unwrap();
    }
    // Only the burst is answered; the rest get no reply (the panel would retransmit).
    // Two quiet seconds end the replies (generous for a loaded CI machine).
    while let Some(r) = p.read_reply(Duration::from_secs(2)).await.unwrap() {
        if r.id == MessageId::Ack {
            acked.push(r);
        }
    }
    assert!(
        (3..10).contains(&acked.len()),
        "{} of 10 flooded frames were answered",
        acked.len()
    );
    assert_eq!(host.events().len(), acked.len());
}

#[tokio::test]
async fn a_journal_that_cannot_write_gets_no_ack() {
    let (host, bound) = start("").await;
    host.fail_writes(Some("disk full"));
    let mut p = panel_with(bound, Transport::Tcp, "1234", |c| {
        c.retries = 0;
        c.ack_timeout = Duration::from_millis(500);
    })
    .await;
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 1)).await.unwrap(),
        Outcome::NoAck {
            attempts: 1,
            naks: 0
        }
    );
    host.fail_writes(None);
    assert!(matches!(
        p.send(&SimEvent::cid(120, 1, 1)).await.unwrap(),
        Outcome::Acked { .. }
    ));
    assert_eq!(kinds(&host), vec!["panic.alarm"]);
}

#[tokio::test]
async fn the_arc_simulator_acks_naks_or_stays_silent_and_records_what_it_got() {
    use campusgw_dc09::sim::{ArcMode, ArcSim};
    let key = Key::parse(KEY, KeyEncoding::Text).unwrap();
    let keys = [("AB12".to_owned(), key.clone())].into_iter().collect();
    let arc = ArcSim::bind("127.0.0.1:0".parse().unwrap(), keys, ArcMode::Ack)
        .await
        .unwrap();
    let mut c = PanelConfig::new(Transport::Tcp, arc.local_addr(), "AB12");
    c.key = Some(key);
    c.ack_timeout = Duration::from_millis(500);
    c.retries = 1;
    let mut p = PanelSim::connect(c).await.unwrap();
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 1)).await.unwrap(),
        Outcome::Acked { attempts: 1 }
    );
    arc.set_mode(ArcMode::Nak);
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 2)).await.unwrap(),
        Outcome::NoAck {
            attempts: 2,
            naks: 2
        }
    );
    arc.set_mode(ArcMode::Silent);
    assert_eq!(
        p.send(&SimEvent::cid(120, 1, 3)).await.unwrap(),
        Outcome::NoAck {
            attempts: 2,
            naks: 0
        }
    );
    let got = arc.received();
    assert_eq!(got.len(), 5, "1 + 2 NAKed + 2 unanswered");
    assert!(got.iter().all(|m| m.encrypted && m.id == MessageId::AdmCid));
}

#[tokio::test]
async fn connections_over_the_per_source_limit_are_closed() {
    let (host, bound) = start("max_connections_per_source = 1").await;
    let mut first = panel(bound, Transport::Tcp, "1234").await;
    assert_eq!(first.null().await.unwrap(), Outcome::Acked { attempts: 1 });
    let mut second = panel(bound, Transport::Tcp, "1234").await;
    let _ = second.send_raw(b"\n").await;
    let closed = second.read_reply(WAIT).await;
    assert!(
        matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof
            || e.kind() == std::io::ErrorKind::ConnectionReset),
        "{closed:?}"
    );
    // The first connection is unaffected.
    assert!(matches!(
        first.send(&SimEvent::cid(120, 1, 1)).await.unwrap(),
        Outcome::Acked { .. }
    ));
    assert_eq!(kinds(&host), vec!["panic.alarm"]);
}
