//! A simulated Hikvision access controller (ISAPI over HTTP on `127.0.0.1:0`), for tests,
//! benchmarks and `campusgw demo`.
//!
//! It speaks Digest auth (MD5, `qop=auth`; a wrong password gets 401 forever), serves
//! `alertStream` as `multipart/mixed` and pushes what the test scripts ([`IsapiSim::access`],
//! [`IsapiSim::raw`]), keeps per-door state for `RemoteControl/door/<n>` (65535 = all), and
//! answers `System/time` with an adjustable offset. Misbehaviour ([`Misbehaviour`]): drop the
//! connection in the middle of a command answer (after applying it, the worst case for a
//! false success), answer slowly, answer with a failing `statusCode`, and reboot (every
//! stream closes, the event serial restarts at 1).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use bytes::Bytes;
use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use crate::command::xml_leaf;
use crate::config::ALL_DOORS;
use crate::digest::{Algorithm, Challenge, Credentials};

/// The multipart boundary the simulator uses.
pub const BOUNDARY: &str = "MIME_boundary";

/// What the simulated controller does wrong.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Misbehaviour {
    /// Apply door commands, then cut the connection halfway through the answer.
    pub drop_mid_command: bool,
    /// Wait this long before answering a door command.
    pub slow_commands: Option<Duration>,
    /// Answer door commands with this statusCode (and HTTP 400) without applying them.
    pub fail_status: Option<u32>,
}

/// How to start a simulator.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// ISAPI user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Doors 1..=doors.
    pub doors: u32,
    /// Added to the real clock in `System/time`.
    pub clock_offset: chrono::Duration,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            user: "admin".into(),
            password: "sim-password".into(),
            doors: 4,
            clock_offset: chrono::Duration::zero(),
        }
    }
}

struct Sim {
    cfg: Mutex<SimConfig>,
    nonce: Mutex<String>,
    /// Index n-1: the last `cmd` applied to door n (`resume` = normal).
    doors: Mutex<Vec<String>>,
    serial: AtomicU64,
    events: broadcast::Sender<Bytes>,
    boot: Mutex<CancellationToken>,
    misbehaviour: Mutex<Misbehaviour>,
    streams_opened: AtomicU64,
    auth_failures: AtomicU64,
    changed: Notify,
}

/// A running simulator; dropping it stops the server.
pub struct IsapiSim {
    addr: SocketAddr,
    sim: Arc<Sim>,
    stop: CancellationToken,
}

impl Drop for IsapiSim {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(b) = self.sim.boot.lock() {
            b.cancel();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread poisons nothing we cannot keep using.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One multipart part as a controller writes it.
pub fn part(content_type: &str, body: &str) -> Bytes {
    Bytes::from(format!(
        "--{BOUNDARY}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n{body}\r\n",
        body.len()
    ))
}

/// An `AccessControllerEvent` alert as XML.
#[allow(clippy::too_many_arguments)] // the fields of the alert, named as ISAPI names them
pub fn access_xml(
    date_time: &str,
    major: u32,
    minor: u32,
    door: u32,
    reader: u32,
    employee: &str,
    card: &str,
    serial: u64,
) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\
<EventNotificationAlert version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\">\
<ipAddress>127.0.0.1</ipAddress><portNo>80</portNo><protocol>HTTP</protocol>\
<dateTime>{date_time}</dateTime><activePostCount>1</activePostCount>\
<eventType>AccessControllerEvent</eventType><eventState>active</eventState>\
<eventDescription>Access Controller Event</eventDescription>\
<AccessControllerEvent><deviceName>sim</deviceName><majorEventType>{major}</majorEventType>\
<subEventType>{minor}</subEventType><cardNo>{card}</cardNo><cardType>1</cardType>\
<employeeNoString>{employee}</employeeNoString><doorNo>{door}</doorNo>\
<cardReaderNo>{reader}</cardReaderNo><currentVerifyMode>cardOrFace</currentVerifyMode>\
<serialNo>{serial}</serialNo></AccessControllerEvent></EventNotificationAlert>"
    )
}

impl IsapiSim {
    /// Starts a simulator on 127.0.0.1:0.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(cfg: SimConfig) -> std::io::Result<IsapiSim> {
        let doors = vec!["resume".to_owned(); cfg.doors as usize];
        let sim = Arc::new(Sim {
            cfg: Mutex::new(cfg),
            nonce: Mutex::new(uuid::Uuid::new_v4().simple().to_string()),
            doors: Mutex::new(doors),
            serial: AtomicU64::new(0),
            events: broadcast::channel(4096).0,
            boot: Mutex::new(CancellationToken::new()),
            misbehaviour: Mutex::new(Misbehaviour::default()),
            streams_opened: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/ISAPI/Event/notification/alertStream", get(alert_stream))
            .route(
                "/ISAPI/AccessControl/RemoteControl/door/{n}",
                put(remote_control),
            )
            .route("/ISAPI/System/time", get(system_time))
            .with_state(sim.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(s.cancelled_owned())
                .await;
        });
        Ok(IsapiSim { addr, sim, stop })
    }

    /// `http://127.0.0.1:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets what goes wrong.
    pub fn misbehave(&self, m: Misbehaviour) {
        *lock(&self.sim.misbehaviour) = m;
    }

    /// Changes the password the device accepts (the old nonce stays valid).
    pub fn set_password(&self, p: &str) {
        lock(&self.sim.cfg).password = p.to_owned();
    }

    /// Sets the device clock's offset from the real one.
    pub fn set_clock_offset(&self, d: chrono::Duration) {
        lock(&self.sim.cfg).clock_offset = d;
    }

    /// The last `cmd` applied to door `n` (`resume` when never commanded).
    pub fn door_state(&self, n: u32) -> Option<String> {
        lock(&self.sim.doors).get(n as usize - 1).cloned()
    }

    /// Every door's state.
    pub fn door_states(&self) -> Vec<String> {
        lock(&self.sim.doors).clone()
    }

    /// alertStream connections accepted so far (after auth).
    pub fn streams_opened(&self) -> u64 {
        self.sim.streams_opened.load(Ordering::SeqCst)
    }

    /// Requests refused for bad credentials so far.
    pub fn auth_failures(&self) -> u64 {
        self.sim.auth_failures.load(Ordering::SeqCst)
    }

    /// Streams currently open.
    pub fn streams_connected(&self) -> usize {
        self.sim.events.receiver_count()
    }

    /// Waits until `pred` holds over the simulator (re-checked on every change).
    ///
    /// # Panics
    /// If it does not hold within `timeout`.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&IsapiSim) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let n = self.sim.changed.notified();
            if pred(self) {
                return;
            }
            // Polled too: receiver counts change without a notification.
            let step = tokio::time::Instant::now() + Duration::from_millis(20);
            let _ = tokio::time::timeout_at(step.min(deadline), n).await;
            assert!(
                tokio::time::Instant::now() < deadline || pred(self),
                "simulator condition not met within {timeout:?}"
            );
        }
    }

    /// The device's clock as ISAPI writes it.
    pub fn now_text(&self) -> String {
        let off = lock(&self.sim.cfg).clock_offset;
        let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
        (chrono::Utc::now() + off)
            .with_timezone(&cst)
            .format("%Y-%m-%dT%H:%M:%S%:z")
            .to_string()
    }

    /// Pushes an access event (`major`/`minor` as ISAPI codes) for door `door`; returns the
    /// serial it carried.
    pub fn access(&self, major: u32, minor: u32, door: u32, employee: &str, card: &str) -> u64 {
        self.access_at(&self.now_text(), major, minor, door, employee, card)
    }

    /// As [`IsapiSim::access`], with the device time given.
    pub fn access_at(
        &self,
        date_time: &str,
        major: u32,
        minor: u32,
        door: u32,
        employee: &str,
        card: &str,
    ) -> u64 {
        let serial = self.sim.serial.fetch_add(1, Ordering::SeqCst) + 1;
        let reader = door * 2 - 1;
        let xml = access_xml(
            date_time, major, minor, door, reader, employee, card, serial,
        );
        self.raw(part("application/xml; charset=\"UTF-8\"", &xml));
        serial
    }

    /// A heartbeat part (`videoloss` inactive, as the controllers send).
    pub fn heartbeat(&self) {
        let xml = format!(
            "<EventNotificationAlert version=\"2.0\"><dateTime>{}</dateTime><eventType>videoloss</eventType><eventState>inactive</eventState></EventNotificationAlert>",
            self.now_text()
        );
        self.raw(part("application/xml", &xml));
    }

    /// Pushes bytes as they are to every open stream (garbage, half parts, bombs).
    pub fn raw(&self, bytes: Bytes) {
        let _ = self.sim.events.send(bytes);
    }

    /// Reboots: every stream closes and the serial restarts at 1.
    pub fn reboot(&self) {
        let mut b = lock(&self.sim.boot);
        b.cancel();
        *b = CancellationToken::new();
        self.sim.serial.store(0, Ordering::SeqCst);
        *lock(&self.sim.nonce) = uuid::Uuid::new_v4().simple().to_string();
        self.sim.changed.notify_waiters();
    }
}

fn unauthorized(sim: &Sim) -> Response {
    let c = Challenge {
        realm: "DS-K2604 sim".into(),
        nonce: lock(&sim.nonce).clone(),
        opaque: None,
        algorithm: Algorithm::Md5,
        stale: false,
    };
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, c.to_header())],
        "",
    )
        .into_response()
}

fn authorized(sim: &Sim, method: &Method, headers: &HeaderMap) -> bool {
    let Some(h) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Ok(c) = Credentials::parse(h) else {
        return false;
    };
    let cfg = lock(&sim.cfg);
    let ok = c.username == cfg.user
        && c.nonce == *lock(&sim.nonce)
        && c.verify(&cfg.password, method.as_str());
    if !ok {
        sim.auth_failures.fetch_add(1, Ordering::SeqCst);
    }
    ok
}

async fn alert_stream(State(sim): State<Arc<Sim>>, method: Method, headers: HeaderMap) -> Response {
    if !authorized(&sim, &method, &headers) {
        return unauthorized(&sim);
    }
    let rx = sim.events.subscribe();
    let boot = lock(&sim.boot).clone();
    sim.streams_opened.fetch_add(1, Ordering::SeqCst);
    sim.changed.notify_waiters();
    let stream = futures_util::stream::unfold((rx, boot), |(mut rx, boot)| async move {
        loop {
            tokio::select! {
                () = boot.cancelled() => return None,
                r = rx.recv() => match r {
                    Ok(b) => return Some((Ok::<Bytes, std::io::Error>(b), (rx, boot))),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
            }
        }
    });
    (
        [(
            header::CONTENT_TYPE,
            format!("multipart/mixed; boundary={BOUNDARY}"),
        )],
        Body::from_stream(stream),
    )
        .into_response()
}

fn response_status(code: u32, text: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><ResponseStatus version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><requestURL>/ISAPI/AccessControl/RemoteControl/door</requestURL><statusCode>{code}</statusCode><statusString>{text}</statusString><subStatusCode>{}</subStatusCode></ResponseStatus>",
        if code == 1 { "ok" } else { "invalidOperation" }
    )
}

async fn remote_control(
    State(sim): State<Arc<Sim>>,
    Path(n): Path<u32>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&sim, &method, &headers) {
        return unauthorized(&sim);
    }
    let m = lock(&sim.misbehaviour).clone();
    if let Some(d) = m.slow_commands {
        tokio::time::sleep(d).await;
    }
    let cmd = xml_leaf(&String::from_utf8_lossy(&body), "cmd").unwrap_or_default();
    let valid = ["open", "close", "alwaysOpen", "alwaysClose", "resume"];
    let count = lock(&sim.doors).len() as u32;
    if !valid.contains(&cmd.as_str()) || (n != ALL_DOORS && (n == 0 || n > count)) {
        return (
            StatusCode::BAD_REQUEST,
            response_status(4, "Invalid Operation"),
        )
            .into_response();
    }
    if let Some(code) = m.fail_status {
        return (
            StatusCode::BAD_REQUEST,
            response_status(code, "Device Error"),
        )
            .into_response();
    }
    {
        let mut doors = lock(&sim.doors);
        // `open` and `close` are momentary: the door returns to its mode afterwards.
        if cmd != "open" && cmd != "close" {
            for (i, d) in doors.iter_mut().enumerate() {
                if n == ALL_DOORS || i as u32 + 1 == n {
                    *d = cmd.clone();
                }
            }
        }
    }
    sim.changed.notify_waiters();
    let answer = response_status(1, "OK");
    if m.drop_mid_command {
        let half = Bytes::from(answer[..answer.len() / 2].to_owned());
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(half),
            Err(std::io::Error::other("simulated connection loss")),
        ];
        return (
            [(header::CONTENT_TYPE, "application/xml")],
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
            .into_response();
    }
    ([(header::CONTENT_TYPE, "application/xml")], answer).into_response()
}

async fn system_time(State(sim): State<Arc<Sim>>, method: Method, headers: HeaderMap) -> Response {
    if !authorized(&sim, &method, &headers) {
        return unauthorized(&sim);
    }
    let off = lock(&sim.cfg).clock_offset;
    let cst = chrono::FixedOffset::east_opt(8 * 3600).expect("UTC+8 is a valid offset");
    let now = (chrono::Utc::now() + off)
        .with_timezone(&cst)
        .format("%Y-%m-%dT%H:%M:%S%:z");
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Time version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><timeMode>manual</timeMode><localTime>{now}</localTime><timeZone>CST-8:00:00</timeZone></Time>"
    );
    ([(header::CONTENT_TYPE, "application/xml")], xml).into_response()
}
