//! Issue 8, items 1 and 2, against the real `campusgw` binary: a hostile school LAN cannot
//! exhaust the gateway's descriptors, hold its HTTP server with half-sent requests, keep
//! GB/T 26875 connections open with garbage, freeze a connection by never reading, make
//! it amplify garbage into denies, or pose as a configured UITD from another host; and the
//! console serves plain HTTP only on loopback, HTTPS elsewhere.
//!
//! Every wait has a generous deadline; ports are picked by binding 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bytes_free::decode_all;
use campusgw_e2e::campusgw_bin;
use campusgw_gb26875::codec::{Address, CommandByte, Frame, TimeLabel, Version};
use campusgw_gb26875::sim::{Delivery, SimConfig, UitdSim};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(30);
const CENTRE: u64 = 88_888;
const UITD_A: u64 = 889;
const UITD_B: u64 = 890;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What a test changes in the config.
#[derive(Default, Clone)]
struct Setup {
    console: String,
    listener: String,
    uitd_a: String,
    ulimit: Option<u32>,
}

/// A `campusgw run` child, killed when dropped.
struct Gw {
    child: Child,
    dir: PathBuf,
    console: u16,
    fire: u16,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config_text(dir: &Path, console: u16, fire: u16, s: &Setup) -> String {
    format!(
        r#"[gateway]
id = "school-lan"
name = "LAN school"
data_dir = "{data}"

[console]
listen = "127.0.0.1:{console}"
{console_keys}

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:{fire}"
centre_address = {CENTRE}
{listener}

[[device.uitd]]
address = {UITD_A}
device = "uitd_a"
{uitd_a}

[[device.uitd]]
address = {UITD_B}
device = "uitd_b"
"#,
        data = dir.join("data").display(),
        console_keys = s.console,
        listener = s.listener,
        uitd_a = s.uitd_a,
    )
}

impl Gw {
    async fn start(dir: &Path, s: &Setup) -> Gw {
        for attempt in 0..5 {
            let (console, fire) = (free_port(), free_port());
            let config = dir.join("gateway.toml");
            std::fs::write(&config, config_text(dir, console, fire, s)).unwrap();
            let log = std::fs::File::create(dir.join(format!("log-{attempt}"))).unwrap();
            let mut cmd = match s.ulimit {
                // ulimit -n sets soft and hard: the gateway cannot raise it past this.
                Some(n) => {
                    let mut c = Command::new("bash");
                    c.arg("-c")
                        .arg(format!("ulimit -n {n} && exec \"$0\" run --config \"$1\""))
                        .arg(campusgw_bin())
                        .arg(&config);
                    c
                }
                None => {
                    let mut c = Command::new(campusgw_bin());
                    c.args(["run", "--config"]).arg(&config);
                    c
                }
            };
            let child = cmd
                .env("CAMPUSGW_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap();
            let mut gw = Gw {
                child,
                dir: dir.to_owned(),
                console,
                fire,
            };
            if gw.wait_ready().await {
                return gw;
            }
        }
        panic!("the gateway never came up; log:\n{}", read_logs(dir));
    }

    /// Ready once the fire listener is bound (a connect succeeds) and the process lives.
    async fn wait_ready(&mut self) -> bool {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            if TcpStream::connect(self.fire_addr()).await.is_ok()
                && TcpStream::connect(("127.0.0.1", self.console))
                    .await
                    .is_ok()
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    fn fire_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.fire))
    }

    fn log(&self) -> String {
        read_logs(&self.dir)
    }
}

fn read_logs(dir: &Path) -> String {
    let mut out = String::new();
    for i in 0..5 {
        out += &std::fs::read_to_string(dir.join(format!("log-{i}"))).unwrap_or_default();
    }
    out
}

/// A plain HTTP GET on a fresh connection; `None` on any failure.
async fn http_get(port: u16, path: &str) -> Option<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(0)
        .build()
        .ok()?;
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .ok()?;
    r.text().await.ok()
}

/// Retries `http_get` until it answers or the deadline passes.
async fn http_get_eventually(port: u16, path: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(body) = http_get(port, path).await {
            return body;
        }
        assert!(Instant::now() < deadline, "GET {path} never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn sim(addr: SocketAddr, uitd: u64) -> UitdSim {
    let mut config = SimConfig::new(uitd, CENTRE);
    config.confirm_timeout = Duration::from_secs(5);
    config.retries = 5;
    let deadline = Instant::now() + WAIT;
    loop {
        match UitdSim::connect(addr, config.clone()).await {
            Ok(s) => return s,
            Err(e) if Instant::now() >= deadline => panic!("cannot connect: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A fire alarm from `uitd` is confirmed (retransmitted as a UITD does) and journaled.
async fn alarm_gets_through(gw: &Gw, uitd: u64) {
    let s = sim(gw.fire_addr(), uitd).await;
    let delivery = tokio::time::timeout(
        WAIT * 2,
        s.fire_alarm(
            campusgw_gb26875::codec::ComponentAddress::from_parts(10, 2),
            "smoke",
        ),
    )
    .await
    .expect("the upload ended");
    assert!(
        matches!(delivery, Delivery::Confirmed { .. }),
        "{delivery:?}; log:\n{}",
        gw.log()
    );
    let reader =
        campusgw::journal::JournalReader::open(&gw.dir.join("data").join("journal.db")).unwrap();
    let events = reader.after(0, None, 10_000).unwrap();
    assert!(
        events.iter().any(|e| e.kind.as_str() == "fire.alarm"),
        "no fire.alarm journaled"
    );
}

/// A heartbeat (empty send-data) frame from `uitd`.
fn heartbeat(uitd: u64, serial: u16) -> Frame {
    Frame {
        serial,
        version: Version::V1_1,
        time: TimeLabel::from_utc(chrono::Utc::now()),
        source: Address::new(uitd).unwrap(),
        destination: Address::new(CENTRE).unwrap(),
        command: CommandByte::SendData,
        data: Vec::new(),
    }
}

/// Reads frames until one with `serial` and `command` arrives; returns every frame read.
async fn read_until(stream: &mut TcpStream, serial: u16, command: CommandByte) -> Vec<Frame> {
    let deadline = Instant::now() + WAIT;
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let frames = decode_all(&raw);
        if frames
            .iter()
            .any(|f| f.serial == serial && f.command == command)
        {
            return frames;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("answer before the deadline")
            .unwrap();
        assert!(n > 0, "connection closed before the answer");
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Whether the peer closes `stream` before the deadline (reads discard data).
async fn closed_by_peer(stream: &mut TcpStream) -> bool {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

mod bytes_free {
    use campusgw_gb26875::codec::{Frame, FrameDecoder};

    /// Every valid frame in `raw`.
    pub fn decode_all(raw: &[u8]) -> Vec<Frame> {
        let mut buf = bytes::BytesMut::from(raw);
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        while let Some(item) = d.next_item(&mut buf) {
            if let Ok(f) = item {
                out.push(f);
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_console_connections_under_a_low_fd_limit_does_not_stop_a_fire_alarm_confirm()
 {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        console: "max_connections = 32\nidle_timeout = \"2s\"".into(),
        listener: "max_connections = 64".into(),
        ulimit: Some(256),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    // Far more idle connections than the gateway has descriptors.
    let mut idle = Vec::new();
    for _ in 0..400 {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", gw.console)).await {
            idle.push(s);
        }
    }
    assert!(idle.len() > 300, "the test could open only {}", idle.len());
    alarm_gets_through(&gw, UITD_A).await;
    // The held connections idle out; then the console answers again.
    let metrics = http_get_eventually(gw.console, "/metrics").await;
    assert!(
        metric(
            &metrics,
            "campusgw_listener_refused_total{listener=\"console\"}"
        ) > 0.0,
        "{metrics}"
    );
    let health = http_get_eventually(gw.console, "/healthz").await;
    assert!(health.contains("\"status\""), "{health}");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_http_request_is_closed_after_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        console: "header_timeout = \"1s\"".into(),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let mut s = TcpStream::connect(("127.0.0.1", gw.console)).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    assert!(closed_by_peer(&mut s).await, "half-sent request kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gb26875_connection_trickling_garbage_is_closed_after_the_identify_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        listener: "identify_timeout = \"2s\"".into(),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let s = TcpStream::connect(gw.fire_addr()).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let trickle = tokio::spawn(async move {
        // One garbage byte at a time, more often than any timeout.
        while w.write_all(b"x").await.is_ok() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 64];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, r.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(_)) => {}
        }
    };
    trickle.abort();
    assert!(closed, "the trickling connection was kept open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_reads_is_closed_and_does_not_stop_another_uitd_being_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        listener: "write_timeout = \"1s\"".into(),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let s = socket.connect(gw.fire_addr()).await.unwrap();
    // Heartbeats, each answered with a confirm it never reads, until the gateway gives up.
    let block: Vec<u8> = (0..2000u16)
        .flat_map(|i| heartbeat(UITD_A, i).encode().unwrap())
        .collect();
    let (_r, mut w) = s.into_split();
    let flood = tokio::spawn(async move {
        loop {
            if w.write_all(&block).await.is_err() {
                return true;
            }
        }
    });
    alarm_gets_through(&gw, UITD_B).await;
    let closed = tokio::time::timeout(WAIT * 2, flood).await;
    assert!(
        matches!(closed, Ok(Ok(true))),
        "the non-reading peer was not closed; log:\n{}",
        gw.log()
    );
    assert!(gw.log().contains("write_timeout"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_no_deny_and_a_burst_of_bad_checksums_gets_at_most_the_rate_limit_of_denies() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        listener: "max_denies_per_second = 2".into(),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let mut s = TcpStream::connect(gw.fire_addr()).await.unwrap();
    // Garbage: start markers with impossible lengths, markers without an end, noise.
    let mut garbage = Vec::new();
    for i in 0..200u8 {
        garbage.extend_from_slice(b"@@\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff");
        garbage.extend_from_slice(&[i, i.wrapping_mul(7), 0x41]);
    }
    s.write_all(&garbage).await.unwrap();
    s.write_all(&heartbeat(UITD_A, 1).encode().unwrap())
        .await
        .unwrap();
    let got = read_until(&mut s, 1, CommandByte::Confirm).await;
    assert!(
        got.iter().all(|f| f.command != CommandByte::Deny),
        "garbage was denied: {got:?}"
    );

    // A burst of 100 frames with a bad checksum, in one write.
    let mut burst = Vec::new();
    for serial in 100..200u16 {
        let mut b = heartbeat(UITD_A, serial).encode().unwrap();
        let n = b.len();
        b[n - 3] = b[n - 3].wrapping_add(1);
        burst.extend_from_slice(&b);
    }
    let started = Instant::now();
    s.write_all(&burst).await.unwrap();
    s.write_all(&heartbeat(UITD_A, 2).encode().unwrap())
        .await
        .unwrap();
    let got = read_until(&mut s, 2, CommandByte::Confirm).await;
    // Denies can span at most this many one-second windows.
    let windows = started.elapsed().as_secs() + 2;
    let denies = got
        .iter()
        .filter(|f| f.command == CommandByte::Deny)
        .count() as u64;
    assert!(denies >= 1, "a plausible bad frame must still be denied");
    assert!(
        denies <= 2 * windows,
        "{denies} denies in {windows} windows"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_uitd_address_from_a_peer_outside_its_list_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup {
        uitd_a: "peers = [\"127.0.0.1\"]".into(),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = socket.connect(gw.fire_addr()).await.unwrap();
    s.write_all(&heartbeat(UITD_A, 7).encode().unwrap())
        .await
        .unwrap();
    let mut raw = Vec::new();
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 1024];
    let closed = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0) | Err(_)) => break true,
            Ok(Ok(n)) => raw.extend_from_slice(&buf[..n]),
        }
    };
    assert!(closed, "the impostor's connection stayed open");
    assert!(
        decode_all(&raw)
            .iter()
            .all(|f| f.command != CommandByte::Confirm),
        "the impostor was confirmed"
    );
    // From the allowed address the same UITD is served.
    let mut ok = TcpStream::connect(gw.fire_addr()).await.unwrap();
    ok.write_all(&heartbeat(UITD_A, 8).encode().unwrap())
        .await
        .unwrap();
    read_until(&mut ok, 8, CommandByte::Confirm).await;
    let metrics = http_get_eventually(gw.console, "/metrics").await;
    assert!(metric(&metrics, "campusgw_gb26875_peer_refused_total") >= 1.0);
}

fn check_config(dir: &Path, console: &str) -> (Option<i32>, String) {
    let text = config_text(dir, 0, 0, &Setup::default()).replacen(
        "[console]\nlisten = \"127.0.0.1:0\"\n",
        &format!("[console]\n{console}\n"),
        1,
    );
    let path = dir.join("check.toml");
    std::fs::write(&path, text).unwrap();
    let out = Command::new(campusgw_bin())
        .arg("check-config")
        .arg(&path)
        .env("CAMPUSGW_LOG", "warn")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

#[test]
fn a_console_on_a_lan_address_without_tls_is_refused_by_check_config_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out) = check_config(dir.path(), "listen = \"0.0.0.0:8443\"");
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("console.listen (line 7)"), "{out}");
    assert!(out.contains("tls_cert_file"), "{out}");
    let (code, out) = check_config(
        dir.path(),
        "listen = \"0.0.0.0:8443\"\ntls_cert_file = \"c.pem\"\ntls_key_file = \"k.pem\"",
    );
    assert_eq!(code, Some(0), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_with_tls_files_serves_https() {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    let setup = Setup {
        console: format!(
            "tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert_path.display(),
            key_path.display()
        ),
        ..Setup::default()
    };
    let gw = Gw::start(dir.path(), &setup).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let url = format!("https://127.0.0.1:{}/healthz", gw.console);
    let deadline = Instant::now() + WAIT;
    let body = loop {
        match client.get(&url).send().await {
            Ok(r) => break r.text().await.unwrap(),
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "no HTTPS answer: {e}; {}",
                    gw.log()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(body.contains("\"status\""), "{body}");
    assert!(
        http_get(gw.console, "/healthz").await.is_none(),
        "plain HTTP answered on the TLS port"
    );
}
