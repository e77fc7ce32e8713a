//! The user agent against a hand-driven platform socket that misbehaves: garbage and half
//! messages before the real answer, a MESSAGE whose body is not MANSCDP (400), a stranger's
//! datagram (dropped), and against the simulated platform: digest, keepalive, Catalog.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use campusgw_gb28181::GbId;
use campusgw_gb28181::manscdp::{CatalogItem, Charset};
use campusgw_gb28181::sim::{PlatformSim, SimSettings};
use campusgw_gb28181::ua::{DeviceUa, UaError, UaEvent, UaSettings};
use campusgw_sip::msg;
use tokio::net::UdpSocket;

const WAIT: Duration = Duration::from_secs(30);

fn settings(platform: std::net::SocketAddr, password: &str) -> UaSettings {
    let gw = GbId::new("34020000001180000001").unwrap();
    UaSettings {
        platform,
        platform_id: GbId::new("34020000002000000001").unwrap(),
        domain: "3402000000".into(),
        device_id: gw.clone(),
        username: gw.to_string(),
        password: password.into(),
        bind: "127.0.0.1:0".parse().unwrap(),
        charset: Charset::Gb2312,
        answer_timeout: Duration::from_secs(10),
        catalog: (1..=5)
            .map(|n| CatalogItem {
                id: GbId::new(&format!("3402000000134000000{n}")).unwrap(),
                name: format!("报警输入{n}"),
                address: "main/gate".into(),
                parent: gw.clone(),
                online: true,
            })
            .collect(),
    }
}

/// The next datagram `want` accepts (retransmissions of earlier requests are skipped).
async fn recv(
    sock: &UdpSocket,
    want: impl Fn(&msg::Message) -> bool,
) -> (msg::Message, std::net::SocketAddr) {
    let mut buf = vec![0u8; 9000];
    loop {
        let (n, from) = tokio::time::timeout(WAIT, sock.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = msg::parse(&buf[..n]).unwrap();
        if want(&m) {
            return (m, from);
        }
    }
}

fn has(m: &msg::Message, text: &str) -> bool {
    String::from_utf8_lossy(&m.body).contains(text)
}

fn answer(m: &msg::Message, code: u16) -> Vec<u8> {
    let mut h: Vec<(&str, String)> = vec![];
    for (n, k) in [
        ("Via", "via"),
        ("From", "from"),
        ("To", "to"),
        ("Call-ID", "call-id"),
        ("CSeq", "cseq"),
    ] {
        h.push((n, m.header(k).unwrap().to_owned()));
    }
    msg::write(&format!("SIP/2.0 {code} X"), &h, "")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_half_messages_are_dropped_and_counted_and_the_real_answer_still_counts() {
    let platform = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let ua = DeviceUa::open(settings(platform.local_addr().unwrap(), "x"))
        .await
        .unwrap();
    let keepalive = tokio::spawn(async move {
        let r = ua.keepalive().await;
        (ua, r)
    });
    let (m, from) = recv(&platform, |_| true).await;
    assert_eq!(m.method(), Some("MESSAGE"));
    assert!(has(&m, "<CmdType>Keepalive</CmdType>"));
    let ok = answer(&m, 200);
    platform
        .send_to(b"\x00\xffgarbage\r\n\r\n", from)
        .await
        .unwrap();
    platform.send_to(&ok[..ok.len() / 2], from).await.unwrap();
    // a stranger answering in the platform's place is not believed
    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(&answer(&m, 500), from).await.unwrap();
    platform.send_to(&ok, from).await.unwrap();
    let (ua, r) = keepalive.await.unwrap();
    assert_eq!(r.unwrap().code, 200);
    assert!(ua.stats().garbage.load(Ordering::Relaxed) >= 2);
    assert_eq!(ua.stats().strangers.load(Ordering::Relaxed), 1);
    // a MESSAGE from the platform whose body is not MANSCDP: 400, the UA carries on
    let bad = msg::write(
        "MESSAGE sip:34020000001180000001@3402000000 SIP/2.0",
        &[
            ("Via", "SIP/2.0/UDP 127.0.0.1;branch=z9hG4bKbad".to_owned()),
            (
                "From",
                "<sip:34020000002000000001@3402000000>;tag=p".to_owned(),
            ),
            ("To", "<sip:34020000001180000001@3402000000>".to_owned()),
            ("Call-ID", "bad@platform".to_owned()),
            ("CSeq", "1 MESSAGE".to_owned()),
        ],
        "<Query><CmdType>Catalog",
    );
    platform.send_to(&bad, from).await.unwrap();
    let (m, _) = recv(&platform, |m| m.code().is_some()).await;
    assert_eq!(m.code(), Some(400));
    // an alarm the platform refuses with a 4xx is reported as refused, not unregistered
    let alarm = tokio::spawn(async move {
        let r = ua
            .alarm(&campusgw_gb28181::manscdp::Alarm {
                sn: 1,
                device: GbId::new("34020000001340000001").unwrap(),
                priority: 1,
                method: 2,
                time: "2026-12-03T09:00:00".into(),
                description: String::new(),
                alarm_type: None,
            })
            .await;
        (ua, r)
    });
    let (m, from) = recv(&platform, |m| has(m, "<CmdType>Alarm</CmdType>")).await;
    platform.send_to(&answer(&m, 488), from).await.unwrap();
    let (_ua, r) = alarm.await.unwrap();
    let e = r.err().unwrap();
    assert!(
        matches!(e, UaError::Refused { code: 488, .. }) && !e.unregistered(),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_platform_registers_us_and_gets_every_catalog_item_in_parts() {
    let sim = PlatformSim::start(
        SimSettings {
            platform_id: GbId::new("34020000002000000001").unwrap(),
            username: "34020000001180000001".into(),
            password: "pw".into(),
            expires: 600,
            charset: Charset::Gb2312,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let mut ua = DeviceUa::open(settings(sim.addr(), "pw")).await.unwrap();
    let r = ua.register(Duration::from_secs(3600)).await.unwrap();
    assert_eq!(
        r.expires,
        Some(Duration::from_secs(600)),
        "the platform's grant"
    );
    assert_eq!(r.attempts, 2);
    ua.keepalive().await.unwrap();
    assert!(sim.query_catalog().await);
    let ev = tokio::time::timeout(WAIT, ua.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            ev,
            UaEvent::CatalogAnswered {
                items: 5,
                complete: true,
                ..
            }
        ),
        "{ev:?}"
    );
    let s = sim.state();
    assert_eq!(s.keepalives, 1);
    assert_eq!(s.catalog.len(), 5, "two parts (4 + 1): {s:?}");
    assert_eq!(s.catalog_sum, Some(5));
    assert_eq!(s.catalog[4].1, "报警输入5");
    // unregister
    ua.register(Duration::ZERO).await.unwrap();
    assert!(sim.state().registered.is_none());
    let e = ua.keepalive().await.err().unwrap();
    assert!(e.unregistered(), "{e}");
}
