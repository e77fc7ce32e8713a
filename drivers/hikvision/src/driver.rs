//! The running `hikvision_isapi` driver: one alertStream with reconnects, door commands, and
//! the clock check, for one controller and its doors.
//!
//! - **Stream.** `GET /ISAPI/Event/notification/alertStream` is held open; its multipart
//!   parts are split ([`crate::multipart`]), parsed and mapped ([`crate::alert`]) and each
//!   event is journaled. ISAPI has no per-event acknowledgement, so durability is the
//!   journal's from the moment a part is read. A stream that ends, errors, or carries no valid
//!   part for `heartbeat_timeout` is reconnected on [`Backoff`]; the controller and its doors
//!   go `Offline` until it is back. Refused parts (malformed, oversized, DOCTYPE) are counted
//!   (`campusgw_hikvision_parts_refused_total{reason}`) and logged at most once per 10 s.
//! - **Auth.** A wrong password is a `device.fault` event (once per change) and `Offline`
//!   health; the loop keeps retrying on back-off, because an operator may fix the account on
//!   the device without touching campusgw.
//! - **Clock.** `GET /ISAPI/System/time` after each connect and every `clock_check_interval`;
//!   `device.clock_skew` (operations) when `localTime` is off by more than `max_clock_skew`.
//! - **Commands**: see [`crate::command`].

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{
    Backoff, BuildError, Class, DeviceHealth, DeviceId, Driver, DriverContext, DriverError,
    EmitError, Kind, NewEvent,
};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde_json::json;

use crate::alert::{self, DoorPlace, Mapped};
use crate::client::{IsapiClient, IsapiError, error_chain};
use crate::command::Doors;
use crate::multipart::{self, Piece, Splitter};

/// What `build` hands the driver.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `https://host:port`.
    pub base: String,
    /// ISAPI user.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Extra CA (PEM).
    pub ca_pem: Option<Vec<u8>>,
    /// Per request.
    pub request_timeout: Duration,
    /// Stream silence before a reconnect.
    pub heartbeat_timeout: Duration,
    /// Largest part.
    pub max_part: usize,
    /// Clock skew limit.
    pub max_skew: Duration,
    /// Clock check period.
    pub clock_interval: Duration,
    /// The doors.
    pub doors: Vec<DoorPlace>,
}

/// The driver for one controller (built by [`crate::HikvisionConfig`]).
#[derive(Debug)]
pub struct HikvisionDriver {
    settings: Settings,
    client: Arc<IsapiClient>,
}

/// The path of the event stream.
pub const ALERT_STREAM: &str = "/ISAPI/Event/notification/alertStream";
/// The path of the device clock.
pub const SYSTEM_TIME: &str = "/ISAPI/System/time";

impl HikvisionDriver {
    pub(crate) fn new(settings: Settings) -> Result<HikvisionDriver, BuildError> {
        let client = IsapiClient::new(
            &settings.base,
            &settings.user,
            &settings.password,
            settings.ca_pem.as_deref(),
            settings.request_timeout,
        )
        .map_err(|e| BuildError::Invalid(e.to_string()))?;
        Ok(HikvisionDriver {
            settings,
            client: Arc::new(client),
        })
    }
}

impl Driver for HikvisionDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let doors = Doors::new(
            self.client.clone(),
            self.settings.doors.clone(),
            self.settings.request_timeout,
        );
        let commands = tokio::spawn(doors.serve(cx.clone()));
        let result = Stream::new(self.settings, self.client, cx.clone())
            .run()
            .await;
        commands.abort();
        result
    }
}

/// Why one stream session ended.
enum End {
    Shutdown,
    Lost(String),
    Auth,
}

struct Stream {
    s: Settings,
    client: Arc<IsapiClient>,
    cx: DriverContext,
    limiter: LogLimiter,
    auth_failed: bool,
    next_clock: tokio::time::Instant,
}

impl Stream {
    fn new(s: Settings, client: Arc<IsapiClient>, cx: DriverContext) -> Stream {
        Stream {
            s,
            client,
            cx,
            limiter: LogLimiter::new(Duration::from_secs(10)),
            auth_failed: false,
            next_clock: tokio::time::Instant::now(),
        }
    }

    fn devices(&self) -> Vec<DeviceId> {
        let mut d = vec![self.cx.device().clone()];
        d.extend(self.s.doors.iter().map(|x| x.device.clone()));
        d
    }

    fn health(&self, h: &DeviceHealth) {
        for d in self.devices() {
            self.cx.report_health(&d, h.clone());
        }
    }

    async fn run(mut self) -> Result<(), DriverError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let end = self.session(&mut backoff).await?;
            let reason = match end {
                End::Shutdown => return Ok(()),
                End::Auth => "authentication refused".to_owned(),
                End::Lost(why) => why,
            };
            tracing::warn!(device = %self.cx.device(), %reason, "alertStream lost; reconnecting");
            metrics::counter!("campusgw_hikvision_reconnects_total").increment(1);
            self.health(&DeviceHealth::Offline(reason));
            if !self.cx.sleep(backoff.next_delay()).await {
                return Ok(());
            }
        }
    }

    async fn auth_fault(&mut self, failed: bool) -> Result<(), DriverError> {
        if failed == self.auth_failed {
            return Ok(());
        }
        self.auth_failed = failed;
        if failed {
            let ev = NewEvent::new(Kind::from_static("device.fault"), Class::Operations).payload(
                json!({"reason": "authentication_failed", "detail": "the controller refused the configured user or password"}),
            );
            emit(&self.cx, ev).await?;
        }
        Ok(())
    }

    async fn session(&mut self, backoff: &mut Backoff) -> Result<End, DriverError> {
        // Only the answer's headers are bounded by request_timeout: a client-wide timeout
        // would cut the long-lived body too (and lose the events of every reconnect gap).
        let open = tokio::time::timeout(
            self.s.request_timeout,
            self.client.send(Method::GET, ALERT_STREAM, None, None),
        );
        let resp = tokio::select! {
            r = open => r,
            () = self.cx.shutdown().cancelled() => return Ok(End::Shutdown),
        };
        let resp = match resp {
            Err(_) => {
                return Ok(End::Lost(
                    "no alertStream answer within request_timeout".into(),
                ));
            }
            Ok(Ok(r)) => r,
            Ok(Err(IsapiError::Auth)) => {
                self.auth_fault(true).await?;
                return Ok(End::Auth);
            }
            Ok(Err(e)) => return Ok(End::Lost(e.to_string())),
        };
        self.auth_fault(false).await?;
        if !resp.status().is_success() {
            return Ok(End::Lost(format!("alertStream answered {}", resp.status())));
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let Some(boundary) = multipart::boundary_of(&ct) else {
            return Ok(End::Lost(format!("alertStream is not multipart ({ct:?})")));
        };
        self.health(&DeviceHealth::Online);
        backoff.reset();
        self.read(resp, Splitter::new(&boundary, self.s.max_part))
            .await
    }

    async fn read(
        &mut self,
        mut resp: reqwest::Response,
        mut split: Splitter,
    ) -> Result<End, DriverError> {
        let mut last_good = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= self.next_clock {
                self.next_clock = tokio::time::Instant::now() + self.s.clock_interval;
                self.check_clock().await?;
            }
            let deadline = (last_good + self.s.heartbeat_timeout).min(self.next_clock);
            let chunk = tokio::select! {
                c = tokio::time::timeout_at(deadline, resp.chunk()) => c,
                () = self.cx.shutdown().cancelled() => return Ok(End::Shutdown),
            };
            let bytes = match chunk {
                Err(_) if tokio::time::Instant::now() >= last_good + self.s.heartbeat_timeout => {
                    return Ok(End::Lost("no valid part within heartbeat_timeout".into()));
                }
                Err(_) => continue,
                Ok(Ok(Some(b))) => b,
                Ok(Ok(None)) => return Ok(End::Lost("the controller closed the stream".into())),
                Ok(Err(e)) => return Ok(End::Lost(error_chain(&e))),
            };
            for piece in split.push(&bytes) {
                if self.piece(piece).await? {
                    last_good = tokio::time::Instant::now();
                    self.cx.activity(self.cx.device());
                }
            }
        }
    }

    fn refused(&mut self, reason: &'static str, detail: &str) {
        metrics::counter!("campusgw_hikvision_parts_refused_total", "reason" => reason)
            .increment(1);
        if let Some(held) = self.limiter.allow() {
            tracing::warn!(device = %self.cx.device(), reason, detail, held_back = held,
                "alertStream part refused");
        }
    }

    /// Handles one piece; true when it was a valid part.
    async fn piece(&mut self, piece: Piece) -> Result<bool, DriverError> {
        let part = match piece {
            Piece::Part(p) => p,
            Piece::Refused(r) => {
                self.refused(r.as_str(), "");
                return Ok(false);
            }
        };
        let a = match alert::parse_part(&part) {
            Ok(a) => a,
            // Pictures ride along on some firmware; they are neither events nor attacks.
            Err(alert::AlertError::ContentType(ct)) if ct.starts_with("image/") => return Ok(true),
            Err(e) => {
                self.refused(e.as_str(), &e.to_string());
                return Ok(false);
            }
        };
        match alert::map(&a, &self.s.doors) {
            Mapped::Heartbeat => {}
            Mapped::Ignored => {
                metrics::counter!("campusgw_hikvision_parts_ignored_total").increment(1);
            }
            Mapped::Event(ev) => emit(&self.cx, *ev).await?,
        }
        Ok(true)
    }

    async fn check_clock(&mut self) -> Result<(), DriverError> {
        let body = match self.get_text(SYSTEM_TIME).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(device = %self.cx.device(), error = %e, "clock not read");
                return Ok(());
            }
        };
        let Some(local) = crate::command::xml_leaf(&body, "localTime") else {
            return Ok(());
        };
        let Ok(device_time) = DateTime::parse_from_rfc3339(local.trim()) else {
            return Ok(());
        };
        let skew = device_time.with_timezone(&Utc) - Utc::now();
        let skew_s = skew.num_milliseconds() as f64 / 1000.0;
        if skew.abs().to_std().unwrap_or_default() > self.s.max_skew {
            let ev = NewEvent::new(Kind::from_static("device.clock_skew"), Class::Operations)
                .payload(json!({
                    "skew_seconds": skew_s,
                    "device_time": local.trim(),
                    "max_skew_seconds": self.s.max_skew.as_secs_f64(),
                }));
            emit(&self.cx, ev).await?;
        }
        Ok(())
    }

    async fn get_text(&self, path: &str) -> Result<String, IsapiError> {
        let resp = self
            .client
            .send(Method::GET, path, None, Some(self.s.request_timeout))
            .await?;
        resp.text()
            .await
            .map_err(|e| IsapiError::Transport(error_chain(&e)))
    }
}

/// Journals an event; a journal that refuses for now is logged (ISAPI cannot be told to
/// resend), a closed journal ends the driver.
async fn emit(cx: &DriverContext, ev: NewEvent) -> Result<(), DriverError> {
    match cx.emit(ev).await {
        Ok(_) => Ok(()),
        Err(EmitError::Closed) => Err(DriverError::Emit(EmitError::Closed)),
        Err(e) => {
            metrics::counter!("campusgw_hikvision_events_lost_total").increment(1);
            tracing::error!(device = %cx.device(), error = %e, "access event not journaled");
            Ok(())
        }
    }
}
