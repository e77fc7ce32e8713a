//! The canteen driver against its terminal simulator, journal in memory (the SDK test kit).
#![allow(missing_docs, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use campusgw_canteen::ledger::{Ledger, MealPeriod, Rules};
use campusgw_canteen::proto::CardKey;
use campusgw_canteen::sim::{self, SimTerminal};
use campusgw_canteen::{CanteenDriver, Settings, TerminalAuth, system_clock};
use campusgw_sdk::Driver;
use campusgw_sdk::testkit::TestHost;

const T: Duration = Duration::from_secs(60);

fn settings(dir: &std::path::Path, cards: usize, balance: i64) -> Settings {
    Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        tls: None,
        ledger_path: dir.join("canteen.db"),
        rules: Rules {
            offset: chrono::FixedOffset::east_opt(8 * 3600).unwrap(),
            meals: Vec::<MealPeriod>::new(),
            daily_limit_cents: None,
        },
        max_amount_cents: 20_000,
        max_connections: 64,
        terminals: (1..=20)
            .map(|i| TerminalAuth {
                id: format!("t{i:02}"),
                token_sha256: sim::token_hash_bytes(&format!("token-{i}")),
            })
            .collect(),
        card_list: sim::card_list(cards, balance),
        clock: system_clock(),
    }
}

/// Starts the driver; returns its address and the task.
async fn start(host: &TestHost, s: Settings) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let d = CanteenDriver::new(s);
    let mut bound = d.bound();
    let cx = host.context();
    let task = tokio::spawn(async move {
        d.run(cx).await.expect("driver runs");
    });
    let addr = tokio::time::timeout(T, bound.wait_for(Option::is_some))
        .await
        .expect("bound in time")
        .expect("driver alive")
        .expect("some");
    (addr, task)
}

fn kinds(host: &TestHost, kind: &str) -> usize {
    host.events()
        .iter()
        .filter(|e| e.kind.as_str() == kind)
        .count()
}

fn terminal(addr: SocketAddr, i: u32) -> SimTerminal {
    SimTerminal::new(addr, &format!("t{i:02}"), &format!("token-{i}"))
}

#[tokio::test]
async fn a_lunch_rush_with_duplicate_sends_is_in_the_journal_exactly_once_and_reconciles() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, settings(dir.path(), 50, 10_000)).await;
    let terminals: Vec<_> = (1..=10)
        .map(|i| {
            let mut t = terminal(addr, i);
            t.duplicate_every = 3;
            t
        })
        .collect();
    let sold = tokio::time::timeout(T, sim::rush(terminals, sim::cards(50), 20, 450))
        .await
        .expect("rush in time")
        .expect("every sale answered");
    assert_eq!(sold.len(), 200);
    assert!(sold.iter().filter(|s| s.duplicated).count() >= 60);
    assert!(
        sold.iter().all(|s| s.answer.approved()),
        "balances cover 20 meals"
    );
    let journaled = host.events();
    let sales: Vec<_> = journaled
        .iter()
        .filter(|e| e.kind.as_str() == "canteen.sale")
        .collect();
    assert_eq!(sales.len(), 200, "duplicates counted once");
    let mut refs: Vec<_> = sales
        .iter()
        .map(|e| e.origin_ref.clone().unwrap())
        .collect();
    refs.sort();
    refs.dedup();
    assert_eq!(refs.len(), 200);
    let journal_cents: i64 = sales
        .iter()
        .map(|e| e.payload["amount_cents"].as_i64().unwrap())
        .sum();
    assert_eq!(journal_cents, 200 * 450);
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
    let l = Ledger::open(&dir.path().join("canteen.db")).unwrap();
    let day = &sales[0].payload["day"].as_str().unwrap().to_owned();
    let rep = l.report(day).unwrap();
    assert_eq!(
        (rep.approved, rep.approved_cents, rep.unjournaled),
        (200, 90_000, 0)
    );
    let balances: i64 = (1..=50)
        .map(|i| l.balance(&format!("S{i:05}")).unwrap().unwrap())
        .sum();
    assert_eq!(balances, 50 * 10_000 - 90_000, "to the cent");
}

#[tokio::test]
async fn no_approval_before_the_journal_commit_and_the_resend_gets_the_same_answer() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, settings(dir.path(), 3, 1000)).await;
    host.fail_writes(Some("disk full"));
    let card = sim::cards(3).remove(0);
    let body = sim::sale_body("t01", 1, &card, 300);
    let (status, b) = sim::post(addr, "/v1/sale", Some("token-1"), &body)
        .await
        .unwrap();
    assert_eq!(status, 503, "{b}");
    assert!(b.contains("\"unavailable\""), "{b}");
    assert_eq!(kinds(&host, "canteen.sale"), 0);
    host.fail_writes(None);
    let (status, first) = sim::post(addr, "/v1/sale", Some("token-1"), &body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{first}");
    let (status, again) = sim::post(addr, "/v1/sale", Some("token-1"), &body)
        .await
        .unwrap();
    assert_eq!(
        (status, &again),
        (200, &first),
        "a resend gets the first answer"
    );
    let a: campusgw_canteen::proto::SaleAnswer = serde_json::from_str(&first).unwrap();
    assert!(a.approved());
    assert_eq!(a.balance_cents, Some(700));
    assert_eq!(kinds(&host, "canteen.sale"), 1);
    assert_eq!(host.events()[0].id.to_string(), a.record_id);
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_sale_decided_but_not_journaled_before_a_restart_is_journaled_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, settings(dir.path(), 3, 1000)).await;
    host.fail_writes(Some("journal writer stalled"));
    let body = sim::sale_body("t01", 1, &sim::cards(3)[0], 250);
    let (status, _) = sim::post(addr, "/v1/sale", Some("token-1"), &body)
        .await
        .unwrap();
    assert_eq!(status, 503);
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
    // A new process (a new journal host) with the same ledger file.
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, settings(dir.path(), 3, 1000)).await;
    host.wait_for_kind("canteen.sale", T).await;
    let (status, b) = sim::post(addr, "/v1/sale", Some("token-1"), &body)
        .await
        .unwrap();
    assert_eq!(status, 200, "{b}");
    assert_eq!(kinds(&host, "canteen.sale"), 1, "journaled once");
    let l = Ledger::open(&dir.path().join("canteen.db")).unwrap();
    assert_eq!(l.balance("S00001").unwrap(), Some(750), "debited once");
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn bad_input_is_refused_with_the_protocol_error_and_a_security_event_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, settings(dir.path(), 3, 5000)).await;
    let card = sim::cards(3).remove(0);
    let mut t = terminal(addr, 1);
    let first = t.sell(&card, 500).await.unwrap();
    assert!(first.answer.approved());
    let cases: Vec<(Vec<u8>, Option<&str>, u16, &str)> = vec![
        (
            sim::sale_body("t99", 1, &card, 100),
            Some("token-1"),
            403,
            "unknown_terminal",
        ),
        (
            sim::sale_body("t01", 2, &card, 100),
            Some("wrong"),
            401,
            "unauthorized",
        ),
        (
            sim::sale_body("t01", 2, &card, 100),
            None,
            401,
            "unauthorized",
        ),
        (
            sim::sale_body("t01", 2, &card, -100),
            Some("token-1"),
            400,
            "amount_invalid",
        ),
        (
            sim::sale_body("t01", 2, &card, 0),
            Some("token-1"),
            400,
            "amount_invalid",
        ),
        (
            sim::sale_body("t01", 2, &card, 20_001),
            Some("token-1"),
            400,
            "amount_invalid",
        ),
        (
            sim::sale_body("t01", 1, &card, 900),
            Some("token-1"),
            409,
            "txn_conflict",
        ),
        (
            b"{\"terminal\":".to_vec(),
            Some("token-1"),
            400,
            "bad_request",
        ),
        (
            b"\x00\xff garbage".to_vec(),
            Some("token-1"),
            400,
            "bad_request",
        ),
    ];
    for (body, token, status, code) in &cases {
        let (s, b) = sim::post(addr, "/v1/sale", *token, body).await.unwrap();
        assert_eq!(s, *status, "{code}: {b}");
        assert!(b.contains(&format!("\"error\":\"{code}\"")), "{code}: {b}");
    }
    // A replay of an older number after the terminal moved on.
    let mut t2 = terminal(addr, 2);
    t2.next_txn = 10;
    t2.sell(&card, 100).await.unwrap();
    let (s, b) = sim::post(
        addr,
        "/v1/sale",
        Some("token-2"),
        &sim::sale_body("t02", 4, &card, 100),
    )
    .await
    .unwrap();
    assert_eq!(s, 409, "{b}");
    assert!(b.contains("txn_replayed"), "{b}");
    // Too large, half a request, junk: refused or closed, the server lives.
    let big = vec![b'x'; campusgw_canteen::proto::MAX_BODY + 10];
    let (s, _) = sim::post(addr, "/v1/sale", Some("token-1"), &big)
        .await
        .unwrap();
    assert_eq!(s, 413);
    let _ = sim::send_raw(
        addr,
        b"POST /v1/sale HTTP/1.1\r\nContent-Length: 500\r\n\r\n{\"ter",
    )
    .await;
    let _ = sim::send_raw(addr, b"\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    host.wait_until(T, |ev| {
        ev.iter()
            .filter(|e| e.kind.as_str() == "canteen.refused")
            .count()
            >= 6
    })
    .await;
    let refused: Vec<_> = host
        .events()
        .into_iter()
        .filter(|e| e.kind.as_str() == "canteen.refused")
        .collect();
    assert!(
        refused
            .iter()
            .all(|e| e.class == campusgw_sdk::Class::Security)
    );
    let json =
        serde_json::to_string(&refused.iter().map(|e| &e.payload).collect::<Vec<_>>()).unwrap();
    assert!(
        !json.contains("token-1") && !json.contains("wrong"),
        "no token in events: {json}"
    );
    // Still serving, the approved sale intact, the next sale approved.
    let next = t.sell(&card, 500).await.unwrap();
    assert!(next.answer.approved());
    assert_eq!(next.answer.balance_cents, Some(5000 - 500 - 100 - 500));
    assert_eq!(kinds(&host, "canteen.sale"), 3);
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_lost_card_is_declined_and_the_decline_is_final_and_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let host = TestHost::new("canteen", "canteen");
    let mut s = settings(dir.path(), 2, 1000);
    s.card_list.push(campusgw_canteen::ledger::Change::Card {
        id: "lost".into(),
        card_uid: Some("04000000000002".into()),
        card_no: None,
        account: "S00002".into(),
        status: "lost".into(),
        lost_at: None,
    });
    let (addr, task) = start(&host, s).await;
    let mut t = terminal(addr, 3);
    let d = t
        .sell(&CardKey::Uid("04000000000002".into()), 100)
        .await
        .unwrap();
    assert!(!d.answer.approved());
    assert_eq!(
        d.answer.reason,
        Some(campusgw_canteen::proto::DeclineReason::CardLost)
    );
    let e = host.wait_for_kind("canteen.declined", T).await;
    assert_eq!(e.payload["reason"], "card_lost");
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn https_carries_sales_and_a_plain_client_gets_no_answer_from_a_tls_listener() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let mut s = settings(dir.path(), 2, 1000);
    s.tls = Some(campusgw_canteen::load_tls(&cert, &key).unwrap());
    let host = TestHost::new("canteen", "canteen");
    let (addr, task) = start(&host, s).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(ck.cert.der().clone()).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(client));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .unwrap()
        .unwrap();
    let body = sim::sale_body("t01", 1, &sim::cards(2)[0], 400);
    tls.write_all(&sim::request_bytes(
        addr,
        "/v1/sale",
        Some("token-1"),
        &body,
    ))
    .await
    .unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(T, tls.read_to_end(&mut out))
        .await
        .unwrap();
    let (status, b) = sim::parse_answer(&out).unwrap();
    assert_eq!(status, 200, "{b}");
    assert!(b.contains("\"approved\""), "{b}");
    assert_eq!(kinds(&host, "canteen.sale"), 1);
    // Plain HTTP to the TLS listener: no HTTP answer, nothing decided.
    let plain = sim::post(
        addr,
        "/v1/sale",
        Some("token-1"),
        &sim::sale_body("t01", 2, &sim::cards(2)[0], 400),
    )
    .await;
    assert!(!matches!(plain, Ok((200, _))), "{plain:?}");
    assert_eq!(kinds(&host, "canteen.sale"), 1);
    host.shutdown();
    tokio::time::timeout(T, task).await.unwrap().unwrap();
}
