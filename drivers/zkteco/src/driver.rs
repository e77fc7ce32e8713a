//! The running `zkteco_push` driver: the iclock HTTP server the controllers call, and the
//! per-controller command queues.
//!
//! | request | answer |
//! |---|---|
//! | `GET /iclock/cdata?SN=&options=all` (handshake), `GET/POST /iclock/push` | the options block ([`crate::proto::options_block`]) with `RequestDelay` |
//! | `POST /iclock/registry?SN=` | `RegistryCode=<code>` |
//! | `POST /iclock/cdata?SN=&table=rtlog` / `rtstate` | `OK` **after** the journal commit; 503 when the journal cannot store them (the controller resends) |
//! | `POST /iclock/cdata?SN=&table=<other>` (ATTLOG, OPERLOG, ...) | `OK`, not journaled (counted) |
//! | `GET /iclock/getrequest?SN=` | queued `C:<id>:<COMMAND>` lines, or `OK` |
//! | `POST /iclock/devicecmd?SN=` | `OK`; each `ID=&Return=` settles its command |
//! | an unknown or malformed `SN` | 403, no commands, one `device.unknown` (security) event per serial per 10 min |
//! | a body over `max_body_bytes` | 413; lines that are not `key=value` are skipped and counted; a body with no readable line is 400 |
//!
//! # Command latency
//! A controller fetches commands only when it polls `getrequest`, every `RequestDelay`
//! seconds (the firmware's default is 30 s). A door command therefore waits up to one
//! `RequestDelay` to be fetched, plus the controller's execution and its `devicecmd` post:
//! with the default `request_delay = "1s"` a lockdown reaches a controller within about
//! 1-2 s. The handshake hands out the configured value; a controller that keeps its own
//! larger delay makes commands fail at `command_deadline` rather than succeed late unseen.
//!
//! # Results are never guessed
//! A command is `Succeeded` only when the controller posts `Return=0` for every protocol
//! command it was translated into. Not fetched within `command_deadline`, fetched but not
//! answered within it (the controller disconnected mid-command or went silent), a controller
//! that handshakes again while a command is out (it rebooted and forgot it), or any non-zero
//! `Return`: `Failed`, with the reason.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{
    Class, CommandRequest, CommandStatus, DeviceHealth, DeviceId, Driver, DriverContext,
    DriverError, EmitError, Kind, Location, NewEvent, Target,
};
use serde_json::json;
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;

use crate::map::{self, DoorPlace, DoorStates};
use crate::proto::{self, RtLog, RtState};

/// One controller, as configured.
#[derive(Debug, Clone)]
pub struct Controller {
    /// Its serial number.
    pub sn: String,
    /// Its device id.
    pub device: DeviceId,
    /// Its location.
    pub location: Location,
    /// Its doors.
    pub doors: Vec<DoorPlace>,
}

/// What `build` hands the driver.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// `RequestDelay` for the controllers.
    pub request_delay: Duration,
    /// A command's deadline.
    pub command_deadline: Duration,
    /// Largest body.
    pub max_body: usize,
    /// Connections served at once.
    pub max_connections: usize,
    /// The controllers accepted.
    pub controllers: Vec<Controller>,
}

/// The iclock server (built by [`crate::ZktecoConfig`]).
#[derive(Debug)]
pub struct ZktecoDriver {
    settings: Settings,
    bound: watch::Sender<Option<SocketAddr>>,
}

/// Protocol commands handed out per poll at most.
pub const PER_POLL: usize = 32;
/// One `device.unknown` event per serial per this long.
pub const UNKNOWN_EVENT_EVERY: Duration = Duration::from_secs(600);

impl ZktecoDriver {
    pub(crate) fn new(settings: Settings) -> ZktecoDriver {
        ZktecoDriver {
            settings,
            bound: watch::channel(None).0,
        }
    }

    /// The address bound once listening (`listen` may name port 0).
    pub fn local_addr(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.bound.subscribe()
    }
}

struct Pending {
    id: u64,
    line: String,
    deadline: Instant,
    done: oneshot::Sender<Result<(), String>>,
}

#[derive(Default)]
struct CtlState {
    queue: VecDeque<Pending>,
    sent: HashMap<u64, Pending>,
    doors: DoorStates,
    last_seen: Option<Instant>,
    online: bool,
}

struct Server {
    cx: DriverContext,
    s: Settings,
    by_sn: HashMap<String, usize>,
    ctl: Vec<Mutex<CtlState>>,
    next_id: AtomicU64,
    registry_code: String,
    log: Mutex<LogLimiter>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl Driver for ZktecoDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let listener = tokio::net::TcpListener::bind(self.settings.listen).await?;
        let _ = self.bound.send(Some(listener.local_addr()?));
        let by_sn = self
            .settings
            .controllers
            .iter()
            .enumerate()
            .map(|(i, c)| (c.sn.clone(), i))
            .collect();
        let ctl = self
            .settings
            .controllers
            .iter()
            .map(|_| Mutex::default())
            .collect();
        // Ids start at a random base so a restarted gateway does not take an old result
        // (same id, from before the restart) for a new command; below 2^31 because firmware
        // keeps the id in a signed 32-bit integer.
        let base = u64::from(uuid::Uuid::new_v4().as_fields().0 % 1_000_000) * 1000 + 1;
        let server = Arc::new(Server {
            cx: cx.clone(),
            s: self.settings,
            by_sn,
            ctl,
            next_id: AtomicU64::new(base),
            registry_code: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            log: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
            unknown: Mutex::new(HashMap::new()),
        });
        let commands = tokio::spawn(server.clone().serve_commands());
        let sweeper = tokio::spawn(server.clone().sweep());
        let app = Router::new().fallback(handle).with_state(server.clone());
        let max = server.s.max_connections;
        accept_loop(listener, app, max, cx.shutdown().clone()).await;
        commands.abort();
        sweeper.abort();
        server.fail_all("the driver stopped");
        Ok(())
    }
}

/// Request headers must arrive within this (slow-loris callers are dropped); bodies too.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts until shutdown: at most `max` connections at once (more are accepted and closed
/// at once, counted), each served as HTTP/1.1 with a header read timeout.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    max: usize,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let open = Arc::new(AtomicU64::new(0));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            // EMFILE and the like fail at once: back off instead of spinning.
            metrics::counter!("campusgw_zkteco_accept_failures_total").increment(1);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                () = shutdown.cancelled() => return,
            }
        };
        if open.load(Ordering::SeqCst) >= max as u64 {
            metrics::counter!("campusgw_listener_refused_total", "listener" => "zkteco_push")
                .increment(1);
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (open, app, shutdown) = (open.clone(), app.clone(), shutdown.clone());
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(READ_TIMEOUT)
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper_util::service::TowerToHyperService::new(app),
                );
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
                }
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "text/plain")],
        body.into(),
    )
        .into_response()
}

async fn handle(State(srv): State<Arc<Server>>, method: Method, uri: Uri, body: Body) -> Response {
    let q = proto::parse_query(uri.query().unwrap_or(""));
    let path = uri.path().trim_end_matches('/').to_ascii_lowercase();
    let Some(sn) = q.sn.clone() else {
        srv.refused("no_sn", &format!("{method} {path} without SN"));
        return text(StatusCode::BAD_REQUEST, "ERROR: no SN");
    };
    let Some(&ci) = srv.by_sn.get(&sn) else {
        srv.unknown_serial(&sn, &path).await;
        return text(StatusCode::FORBIDDEN, "ERROR: unknown device");
    };
    srv.seen(ci);
    let read = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, srv.s.max_body));
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Err(_) => {
            srv.refused(
                "slow_body",
                &format!("{sn}: body not read within {READ_TIMEOUT:?}"),
            );
            return text(StatusCode::REQUEST_TIMEOUT, "ERROR: body too slow");
        }
        Ok(Err(_)) => {
            srv.refused(
                "oversized",
                &format!("{sn}: body over {} bytes", srv.s.max_body),
            );
            return text(StatusCode::PAYLOAD_TOO_LARGE, "ERROR: body too large");
        }
    };
    match (method, path.as_str()) {
        (Method::GET, "/iclock/cdata") | (_, "/iclock/push") => {
            srv.handshake(ci);
            text(StatusCode::OK, srv.options(&sn))
        }
        (Method::POST, "/iclock/registry") => {
            srv.handshake(ci);
            text(
                StatusCode::OK,
                format!("RegistryCode={}", srv.registry_code),
            )
        }
        (Method::POST, "/iclock/cdata") => srv.upload(ci, q.table.as_deref(), &bytes).await,
        (Method::GET, "/iclock/getrequest") => text(StatusCode::OK, srv.poll(ci)),
        (Method::POST, "/iclock/devicecmd") => {
            srv.results(ci, &bytes);
            text(StatusCode::OK, "OK")
        }
        (Method::GET, "/iclock/ping") => text(StatusCode::OK, "OK"),
        (m, p) => {
            srv.refused("unknown_path", &format!("{sn}: {m} {p}"));
            text(StatusCode::NOT_FOUND, "ERROR: unknown request")
        }
    }
}

impl Server {
    fn controller(&self, ci: usize) -> &Controller {
        &self.s.controllers[ci]
    }

    fn state(&self, ci: usize) -> std::sync::MutexGuard<'_, CtlState> {
        match self.ctl[ci].lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    fn refused(&self, reason: &'static str, detail: &str) {
        metrics::counter!("campusgw_zkteco_requests_refused_total", "reason" => reason)
            .increment(1);
        let allow = self.log.lock().ok().and_then(|mut l| l.allow());
        if let Some(held) = allow {
            tracing::warn!(device = %self.cx.device(), reason, detail, held_back = held,
                "iclock request refused");
        }
    }

    fn options(&self, sn: &str) -> String {
        let delay = self.s.request_delay.as_secs().max(1);
        let timeout = self.s.command_deadline.as_secs().max(1);
        proto::options_block(sn, &self.registry_code, delay, timeout)
    }

    fn health(&self, ci: usize, h: &DeviceHealth) {
        let c = self.controller(ci);
        self.cx.report_health(&c.device, h.clone());
        for d in &c.doors {
            self.cx.report_health(&d.device, h.clone());
        }
    }

    fn seen(&self, ci: usize) {
        let came_online = {
            let mut st = self.state(ci);
            st.last_seen = Some(Instant::now());
            !std::mem::replace(&mut st.online, true)
        };
        self.cx.activity(&self.controller(ci).device);
        if came_online {
            self.health(ci, &DeviceHealth::Online);
        }
    }

    /// A handshake while commands are out: the controller restarted and will never answer
    /// them.
    fn handshake(&self, ci: usize) {
        let lost: Vec<Pending> = self.state(ci).sent.drain().map(|(_, p)| p).collect();
        for p in lost {
            let _ = p.done.send(Err(format!(
                "command {} lost: the controller registered again (rebooted) before answering",
                p.id
            )));
        }
    }

    async fn unknown_serial(&self, sn: &str, path: &str) {
        let shown: String = sn.chars().take(32).collect();
        self.refused("unknown_serial", &format!("{shown:?} on {path}"));
        let valid = proto::valid_sn(sn);
        let key = if valid {
            shown.clone()
        } else {
            "<malformed>".to_owned()
        };
        let due = {
            let Ok(mut m) = self.unknown.lock() else {
                return;
            };
            if m.len() > 256 {
                m.clear();
            }
            let now = Instant::now();
            match m.get(&key) {
                Some(t) if now < *t + UNKNOWN_EVENT_EVERY => false,
                _ => {
                    m.insert(key.clone(), now);
                    true
                }
            }
        };
        if due {
            let ev = NewEvent::new(Kind::from_static("device.unknown"), Class::Security).payload(
                json!({
                    "serial": key,
                    "path": path.chars().take(64).collect::<String>(),
                    "detail": "a controller that is not configured called the iclock server; it gets no commands",
                }),
            );
            if let Err(e) = self.cx.emit(ev).await {
                tracing::error!(error = %e, "device.unknown not journaled");
            }
        }
    }

    async fn upload(&self, ci: usize, table: Option<&str>, body: &[u8]) -> Response {
        let c = self.controller(ci);
        let table = table.unwrap_or("").to_ascii_lowercase();
        if table != "rtlog" && table != "rtstate" {
            metrics::counter!("campusgw_zkteco_uploads_ignored_total").increment(1);
            return text(StatusCode::OK, "OK");
        }
        let (records, bad) = match proto::parse_records(body) {
            Ok(r) => r,
            Err(e) => {
                self.refused(e.as_str(), &format!("{}: {e}", c.sn));
                return text(StatusCode::BAD_REQUEST, "ERROR");
            }
        };
        for e in &bad {
            self.refused(e.as_str(), &format!("{} {table}: {e}", c.sn));
        }
        let mut events = Vec::new();
        let mut unreadable = bad.len();
        for (n, r) in records.iter().enumerate() {
            if table == "rtlog" {
                match RtLog::from_record(n + 1, r) {
                    Ok(l) => match map::map_rtlog(&c.sn, &l, &c.doors) {
                        Some(ev) => events.push(ev),
                        None => {
                            metrics::counter!("campusgw_zkteco_events_ignored_total").increment(1);
                        }
                    },
                    Err(e) => {
                        unreadable += 1;
                        self.refused(e.as_str(), &format!("{}: {e}", c.sn));
                    }
                }
            } else {
                match RtState::from_record(n + 1, r) {
                    Ok(s) => {
                        let mut st = self.state(ci);
                        events.extend(map::map_rtstate(&c.sn, &s, &mut st.doors, &c.doors));
                    }
                    Err(e) => {
                        unreadable += 1;
                        self.refused(e.as_str(), &format!("{}: {e}", c.sn));
                    }
                }
            }
        }
        if events.is_empty() && unreadable > 0 && unreadable == records.len() + bad.len() {
            return text(StatusCode::BAD_REQUEST, "ERROR");
        }
        let events: Vec<NewEvent> = events
            .into_iter()
            .map(|e| {
                if e.device.is_some() {
                    e
                } else {
                    e.device(c.device.clone()).location(c.location.clone())
                }
            })
            .collect();
        let n = events.len();
        match self.cx.emit_all(events).await {
            // Only now may the controller forget these lines.
            Ok(_) => text(StatusCode::OK, format!("OK: {n}")),
            Err(e) => {
                metrics::counter!("campusgw_zkteco_uploads_unacknowledged_total").increment(1);
                tracing::error!(device = %c.device, error = %e,
                    "access events not journaled; the controller is told to resend");
                if matches!(e, EmitError::Closed) {
                    self.cx.shutdown().cancel();
                }
                text(StatusCode::SERVICE_UNAVAILABLE, "ERROR: not stored")
            }
        }
    }

    fn poll(&self, ci: usize) -> String {
        let mut st = self.state(ci);
        let mut out = String::new();
        let now = Instant::now();
        while out.len() < 16 * 1024 && st.sent.len() < PER_POLL * 4 {
            let Some(p) = st.queue.pop_front() else {
                break;
            };
            if p.deadline <= now {
                let _ = p.done.send(Err(format!(
                    "command {} not fetched: the controller did not poll within the deadline",
                    p.id
                )));
                continue;
            }
            out.push_str(&format!("C:{}:{}\n", p.id, p.line));
            st.sent.insert(p.id, p);
        }
        if out.is_empty() { "OK".to_owned() } else { out }
    }

    fn results(&self, ci: usize, body: &[u8]) {
        let (results, bad) = proto::parse_results(body);
        if bad > 0 {
            self.refused(
                "bad_result",
                &format!(
                    "{}: {bad} unreadable devicecmd lines",
                    self.controller(ci).sn
                ),
            );
        }
        let mut st = self.state(ci);
        for r in results {
            let Some(p) = st.sent.remove(&r.id) else {
                metrics::counter!("campusgw_zkteco_results_unmatched_total").increment(1);
                continue;
            };
            let outcome = if r.ret == 0 {
                Ok(())
            } else {
                Err(format!("command {} ({}) returned {}", p.id, p.line, r.ret))
            };
            let _ = p.done.send(outcome);
        }
    }

    fn fail_all(&self, why: &str) {
        for ci in 0..self.ctl.len() {
            let mut st = self.state(ci);
            let mut pending: Vec<Pending> = st.queue.drain(..).collect();
            pending.extend(st.sent.drain().map(|(_, p)| p));
            drop(st);
            for p in pending {
                let _ = p.done.send(Err(format!("command {}: {why}", p.id)));
            }
        }
    }

    /// Fails commands past their deadline, and marks silent controllers offline.
    async fn sweep(self: Arc<Server>) {
        let silent_after = self.s.request_delay * 3 + Duration::from_secs(5);
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tick.tick().await;
            let now = Instant::now();
            for ci in 0..self.ctl.len() {
                let (expired, went_offline) = {
                    let mut st = self.state(ci);
                    let mut expired = Vec::new();
                    while st.queue.front().is_some_and(|p| p.deadline <= now) {
                        if let Some(p) = st.queue.pop_front() {
                            expired.push((p, "not fetched: the controller did not poll"));
                        }
                    }
                    let late: Vec<u64> = st
                        .sent
                        .iter()
                        .filter(|(_, p)| p.deadline <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in late {
                        if let Some(p) = st.sent.remove(&id) {
                            expired.push((p, "fetched but never answered: the controller disconnected or went silent mid-command"));
                        }
                    }
                    let silent = st.online && st.last_seen.is_some_and(|t| now > t + silent_after);
                    if silent {
                        st.online = false;
                    }
                    (expired, silent)
                };
                for (p, why) in expired {
                    let _ = p
                        .done
                        .send(Err(format!("command {} {why} within the deadline", p.id)));
                }
                if went_offline {
                    let secs = silent_after.as_secs();
                    self.health(
                        ci,
                        &DeviceHealth::Offline(format!("no request for {secs}s")),
                    );
                }
            }
        }
    }

    async fn serve_commands(self: Arc<Server>) {
        while let Some(req) = self.cx.next_command().await {
            let me = self.clone();
            tokio::spawn(async move { me.command(req).await });
        }
    }

    /// Which controller and door (0 = all) a request addresses.
    fn resolve(&self, req: &CommandRequest) -> Result<(usize, u8), (CommandStatus, String)> {
        for (ci, c) in self.s.controllers.iter().enumerate() {
            if c.device == req.device {
                if matches!(req.command.target, Target::Scope(_)) {
                    return Err((
                        CommandStatus::Unsupported,
                        "the controller takes all-door commands only when addressed directly"
                            .into(),
                    ));
                }
                return Ok((ci, 0));
            }
            if let Some(d) = c.doors.iter().find(|d| d.device == req.device) {
                return Ok((ci, d.n));
            }
        }
        if &req.device == self.cx.device() {
            return Err((
                CommandStatus::Unsupported,
                "the iclock server is not a door; address a controller or a door".into(),
            ));
        }
        Err((
            CommandStatus::Rejected,
            format!("{} is not a controller or door of this server", req.device),
        ))
    }

    async fn command(&self, req: CommandRequest) {
        let (ci, door) = match self.resolve(&req) {
            Ok(x) => x,
            Err((status, detail)) => return req.respond(status, detail),
        };
        let Some(lines) = plan(&req, door) else {
            let detail = format!("{} is not a door command", req.command.kind);
            return req.respond(CommandStatus::Unsupported, detail);
        };
        let deadline = Instant::now() + self.s.command_deadline;
        let mut waits = Vec::new();
        {
            let mut st = self.state(ci);
            for line in &lines {
                let (tx, rx) = oneshot::channel();
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                st.queue.push_back(Pending {
                    id,
                    line: line.clone(),
                    deadline,
                    done: tx,
                });
                waits.push((id, rx));
            }
        }
        let sn = &self.controller(ci).sn;
        let mut ids = Vec::new();
        for (id, rx) in waits {
            ids.push(id.to_string());
            // The sweeper answers every pending command by its deadline; the extra second
            // only covers a sweeper that died, and a dropped sender reads as failed.
            let r = tokio::time::timeout_at(deadline + Duration::from_secs(1), rx).await;
            let failure = match r {
                Ok(Ok(Ok(()))) => continue,
                Ok(Ok(Err(why))) => why,
                Ok(Err(_)) => format!("command {id} abandoned"),
                Err(_) => format!("command {id}: no result within the deadline"),
            };
            return req.respond(
                CommandStatus::Failed,
                format!("{sn} door {door}: {failure}"),
            );
        }
        let detail = format!(
            "{sn} door {door}: Return=0 for {} ({})",
            lines.join(", "),
            ids.join(", ")
        );
        req.respond(CommandStatus::Succeeded, detail);
    }
}

/// The protocol commands a door command becomes (door 0 = every door).
///
/// | command | CONTROL DEVICE lines |
/// |---|---|
/// | `door.unlock` | `06dd0000` (end a remote lock: CC 00), `01dd01ss` (open for `seconds`, default 5) |
/// | `door.unlock` with `egress`, `door.hold_open` | `06dd0000`, `01dd01FF` (normal open) |
/// | `door.lock` | `01dd0100` (end an open / normal open), `06dd0100` (remote lock: CC 01 lock) |
/// | `door.release` | `06dd0000` (end the remote lock), `01dd0100` (back to schedule) |
pub fn plan(req: &CommandRequest, door: u8) -> Option<Vec<String>> {
    let args = &req.command.args;
    let unlock_lock = proto::control_device(6, door, 0, 0);
    Some(match req.command.kind.as_str() {
        "door.unlock" if args.get("egress").and_then(|v| v.as_bool()) == Some(true) => {
            vec![unlock_lock, proto::control_device(1, door, 1, 0xFF)]
        }
        "door.unlock" => {
            let secs = args
                .get("seconds")
                .and_then(|v| v.as_u64())
                .map_or(5, |s| s.clamp(1, 254));
            let secs = u8::try_from(secs).unwrap_or(5);
            vec![unlock_lock, proto::control_device(1, door, 1, secs)]
        }
        "door.hold_open" => vec![unlock_lock, proto::control_device(1, door, 1, 0xFF)],
        "door.lock" => vec![
            proto::control_device(1, door, 1, 0),
            proto::control_device(6, door, 1, 0),
        ],
        "door.release" => vec![unlock_lock, proto::control_device(1, door, 1, 0)],
        _ => return None,
    })
}
