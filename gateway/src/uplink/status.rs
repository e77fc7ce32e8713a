//! Per-uplink state and counters: the one place that writes uplink metrics, read by
//! `/healthz` and the MQTT heartbeat. Failure texts arrive here already redacted
//! ([`super::outcome::report_down`] passes them through [`crate::secrets::redact_urls_in`]).
//!
//! Metrics (label `uplink`): `campusgw_uplink_published_total`,
//! `campusgw_uplink_confirmed_total`, `campusgw_uplink_rejected_total`,
//! `campusgw_uplink_backlog{class}`, `campusgw_uplink_oldest_unconfirmed_seconds`,
//! `campusgw_uplink_connected` (1/0), `campusgw_uplink_failures_total{reason}`,
//! `campusgw_uplink_restarts_total` (counted by the supervisor in `uplink::start`),
//! `campusgw_uplink_connect_attempts_total`, `campusgw_uplink_urgent_pending` (1 while an
//! urgent event waits during back-off), `campusgw_uplink_oldest_undelivered_alarm_seconds`
//! (0 when none; `uplink/urgency.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use campusgw_sdk::Class;
use metrics::{Counter, Gauge};
use serde::Serialize;

use super::delivery::RetryReason;

/// Connection state of an uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkState {
    /// Connecting (first attempt or after a failure).
    Connecting,
    /// Connected and forwarding.
    Connected,
    /// The last attempt failed; retrying after back-off.
    Down,
    /// Stopped (shutdown).
    Stopped,
}

/// Live state of one uplink.
pub struct UplinkStatus {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    published: AtomicU64,
    confirmed: AtomicU64,
    rejected: AtomicU64,
    restarts: AtomicU64,
    connect_attempts: AtomicU64,
    /// An `uplink.alarm_delayed` was journaled and its `..._cleared` not yet.
    alarm_delayed: AtomicBool,
    panic_once: AtomicBool,
    plaintext: AtomicBool,
    inner: Mutex<Inner>,
    duty: super::gb26875::duty::DutyDesk,
    m_published: Counter,
    m_confirmed: Counter,
    m_rejected: Counter,
    m_connected: Gauge,
    m_oldest: Gauge,
    m_attempts: Counter,
    m_urgent: Gauge,
    m_alarm_age: Gauge,
}

#[derive(Clone)]
struct Inner {
    state: LinkState,
    /// An `uplink.down` was journaled and no destination confirmation has come since.
    outage: bool,
    last_error: Option<String>,
    last_reason: Option<RetryReason>,
    backlog: [u64; 5],
    oldest_unconfirmed_seconds: Option<f64>,
    oldest_undelivered_alarm_seconds: Option<f64>,
    urgent_pending: bool,
    cursors: [u64; 5],
}

/// A JSON view for `/healthz` and the heartbeat.
#[derive(Debug, Clone, Serialize)]
pub struct UplinkSnapshot {
    /// Name.
    pub name: String,
    /// Kind.
    pub kind: &'static str,
    /// Connection state.
    pub state: LinkState,
    /// The last failure, if any since the last success.
    pub last_error: Option<String>,
    /// Its reason label (`auth`, `config`, `network`, ...; see `RetryReason`).
    pub last_reason: Option<&'static str>,
    /// Times the supervisor restarted the uplink task (panic or unexpected return).
    pub restarts: u64,
    /// Events and credentials go unencrypted (`mqtt://` or `http://`, loopback or
    /// `allow_plaintext = true`).
    pub plaintext: bool,
    /// Events published (including resends).
    pub published: u64,
    /// Events confirmed by the destination.
    pub confirmed: u64,
    /// Events the destination rejected as malformed (HTTP 400/413/422 on a single event,
    /// MQTT 5 PUBACK 0x99).
    pub rejected: u64,
    /// Unconfirmed events per class.
    pub backlog: BTreeMap<&'static str, u64>,
    /// Age of the oldest unconfirmed event.
    pub oldest_unconfirmed_seconds: Option<f64>,
    /// Age of the oldest undelivered alarm (`life_safety` or `security` event it forwards,
    /// not about its own outage; `uplink/urgency.rs`), `null` when none waits.
    pub oldest_undelivered_alarm_seconds: Option<f64>,
    /// An undelivered alarm is older than `alarm_delay_threshold` (`uplink.alarm_delayed`).
    pub alarm_delayed: bool,
    /// It is backing off with an urgent event waiting (fast cap, `urgent_backoff_max`).
    pub urgent_pending: bool,
    /// Connection attempts since start.
    pub connect_attempts: u64,
    /// Confirmed cursor per class.
    pub cursors: BTreeMap<&'static str, u64>,
}

impl UplinkStatus {
    /// A fresh status with its metric handles.
    pub fn new(name: &str, kind: &'static str) -> Arc<UplinkStatus> {
        // Handles taken before the recorder exists would be no-ops for good.
        let _ = crate::api::metrics_handle();
        let l = name.to_owned();
        Arc::new(UplinkStatus {
            name: name.to_owned(),
            kind,
            published: AtomicU64::new(0),
            confirmed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            connect_attempts: AtomicU64::new(0),
            alarm_delayed: AtomicBool::new(false),
            panic_once: AtomicBool::new(false),
            plaintext: AtomicBool::new(false),
            inner: Mutex::new(Inner {
                state: LinkState::Connecting,
                outage: false,
                last_error: None,
                last_reason: None,
                backlog: [0; 5],
                oldest_unconfirmed_seconds: None,
                oldest_undelivered_alarm_seconds: None,
                urgent_pending: false,
                cursors: [0; 5],
            }),
            duty: super::gb26875::duty::DutyDesk::default(),
            m_published: metrics::counter!("campusgw_uplink_published_total", "uplink" => l.clone()),
            m_confirmed: metrics::counter!("campusgw_uplink_confirmed_total", "uplink" => l.clone()),
            m_rejected: metrics::counter!("campusgw_uplink_rejected_total", "uplink" => l.clone()),
            m_connected: metrics::gauge!("campusgw_uplink_connected", "uplink" => l.clone()),
            m_oldest: metrics::gauge!("campusgw_uplink_oldest_unconfirmed_seconds", "uplink" => l.clone()),
            m_attempts: metrics::counter!("campusgw_uplink_connect_attempts_total", "uplink" => l.clone()),
            m_urgent: metrics::gauge!("campusgw_uplink_urgent_pending", "uplink" => l.clone()),
            m_alarm_age: metrics::gauge!("campusgw_uplink_oldest_undelivered_alarm_seconds", "uplink" => l),
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut g)
    }

    /// Requests of the destination waiting for an operator (查岗 of `kind = "gb26875"`;
    /// always empty for other kinds).
    pub fn duty_desk(&self) -> &super::gb26875::duty::DutyDesk {
        &self.duty
    }

    /// `n` events handed to the transport.
    pub fn published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
        self.m_published.increment(n);
    }

    /// `n` events confirmed.
    pub fn confirmed(&self, n: u64) {
        self.confirmed.fetch_add(n, Ordering::Relaxed);
        self.m_confirmed.increment(n);
    }

    /// `n` events rejected by the destination.
    pub fn rejected(&self, n: u64) {
        self.rejected.fetch_add(n, Ordering::Relaxed);
        self.m_rejected.increment(n);
    }

    /// The destination confirmed something (PUBACK, 2xx): the link works. Clears the last
    /// error; returns true when this ends an outage (when `uplink.up` is journaled).
    pub fn connected(&self) -> bool {
        self.m_connected.set(1.0);
        self.m_urgent.set(0.0);
        self.with(|i| {
            i.urgent_pending = false;
            i.state = LinkState::Connected;
            i.last_error = None;
            i.last_reason = None;
            std::mem::take(&mut i.outage)
        })
    }

    /// A session is open (MQTT CONNACK) but nothing is confirmed on it yet: still
    /// `Connecting`, and the last error stays visible until the first confirmation.
    pub fn session_open(&self) {
        self.with(|i| i.state = LinkState::Connecting);
    }

    /// A connection attempt or session failed; returns true when this starts an outage
    /// (when the `uplink.down` event is journaled). Failures until the next confirmation
    /// belong to the same outage, so a broker that accepts sessions and then stalls yields
    /// one `uplink.down`, not one per reconnect.
    pub fn failed(&self, reason: RetryReason, message: &str) -> bool {
        self.m_connected.set(0.0);
        metrics::counter!("campusgw_uplink_failures_total", "uplink" => self.name.clone(), "reason" => reason.as_str())
            .increment(1);
        self.with(|i| {
            i.state = LinkState::Down;
            i.last_error = Some(message.to_owned());
            i.last_reason = Some(reason);
            !std::mem::replace(&mut i.outage, true)
        })
    }

    /// The retry loop is about to connect.
    pub fn connect_attempt(&self) {
        self.connect_attempts.fetch_add(1, Ordering::Relaxed);
        self.m_attempts.increment(1);
    }

    /// Connection attempts so far.
    pub fn connect_attempts(&self) -> u64 {
        self.connect_attempts.load(Ordering::Relaxed)
    }

    /// Whether the back-off now running has an urgent event waiting (fast cap).
    pub fn set_urgent(&self, urgent: bool) {
        self.m_urgent.set(if urgent { 1.0 } else { 0.0 });
        self.with(|i| i.urgent_pending = urgent);
    }

    /// The oldest undelivered alarm's age, from the stats pass.
    pub fn set_alarm_age(&self, age: Option<f64>) {
        self.m_alarm_age.set(age.unwrap_or(0.0));
        self.with(|i| i.oldest_undelivered_alarm_seconds = age);
    }

    /// Marks the alarm-delay episode open (`true`) or over; returns whether it changed
    /// (so each `uplink.alarm_delayed` / `..._cleared` is journaled once, across restarts
    /// of the task).
    pub fn set_alarm_delayed(&self, delayed: bool) -> bool {
        self.alarm_delayed.swap(delayed, Ordering::SeqCst) != delayed
    }

    /// The supervisor restarts the task; returns the restarts so far.
    pub fn restarted(&self) -> u64 {
        self.restarts.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Fault injection for tests: the uplink task panics once, at its next loop turn.
    #[doc(hidden)]
    pub fn inject_panic_for_test(&self) {
        self.panic_once.store(true, Ordering::SeqCst);
    }

    /// Panics once after [`UplinkStatus::inject_panic_for_test`].
    ///
    /// # Panics
    /// That is its purpose: only when a test asked for it.
    pub(crate) fn injected_fault(&self) {
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("injected uplink panic (test fault injection)");
        }
    }

    /// Marks the uplink as sending in plaintext (shown in `/healthz`).
    pub fn mark_plaintext(&self) {
        self.plaintext.store(true, Ordering::Relaxed);
    }

    /// Stopped at shutdown.
    pub fn stopped(&self) {
        self.m_connected.set(0.0);
        self.with(|i| i.state = LinkState::Stopped);
    }

    /// Current connection state.
    pub fn state(&self) -> LinkState {
        self.with(|i| i.state)
    }

    /// Backlog, oldest unconfirmed age and cursors from the periodic stats pass.
    pub fn set_backlog(&self, backlog: [u64; 5], oldest: Option<f64>, cursors: [u64; 5]) {
        for c in Class::ALL {
            metrics::gauge!("campusgw_uplink_backlog", "uplink" => self.name.clone(), "class" => c.as_str())
                .set(backlog[usize::from(c.rank())] as f64);
        }
        self.m_oldest.set(oldest.unwrap_or(0.0));
        self.with(|i| {
            i.backlog = backlog;
            i.oldest_unconfirmed_seconds = oldest;
            i.cursors = cursors;
        });
    }

    /// A JSON-ready view.
    pub fn snapshot(&self) -> UplinkSnapshot {
        let i = self.with(|i| i.clone());
        let by_class = |a: [u64; 5]| {
            Class::ALL
                .into_iter()
                .map(|c| (c.as_str(), a[usize::from(c.rank())]))
                .collect()
        };
        UplinkSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            state: i.state,
            last_error: i.last_error,
            last_reason: i.last_reason.map(RetryReason::as_str),
            restarts: self.restarts.load(Ordering::Relaxed),
            plaintext: self.plaintext.load(Ordering::Relaxed),
            published: self.published.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            backlog: by_class(i.backlog),
            oldest_unconfirmed_seconds: i.oldest_unconfirmed_seconds,
            oldest_undelivered_alarm_seconds: i.oldest_undelivered_alarm_seconds,
            alarm_delayed: self.alarm_delayed.load(Ordering::SeqCst),
            urgent_pending: i.urgent_pending,
            connect_attempts: self.connect_attempts.load(Ordering::Relaxed),
            cursors: by_class(i.cursors),
        }
    }
}

/// Every uplink's status, for `/healthz`.
#[derive(Clone, Default)]
pub struct UplinkBoard(pub Arc<Vec<Arc<UplinkStatus>>>);

impl UplinkBoard {
    /// Snapshots of every uplink.
    pub fn snapshot(&self) -> Vec<UplinkSnapshot> {
        self.0.iter().map(|s| s.snapshot()).collect()
    }

    /// Whether any uplink is not connected.
    pub fn degraded(&self) -> bool {
        self.0.iter().any(|s| s.state() != LinkState::Connected)
    }
}

/// Backlog per class rank, oldest unconfirmed age in seconds, stored cursors.
pub type Measured = ([u64; 5], Option<f64>, [u64; 5]);

/// Computes backlog per class and the oldest unconfirmed age from the journal and the
/// stored cursors (blocking: run it off the async workers).
///
/// # Errors
/// Journal read errors.
pub fn measure(
    reader: &crate::journal::JournalReader,
    uplink: &str,
    classes: &[Class],
) -> Result<Measured, crate::journal::JournalError> {
    let mut backlog = [0u64; 5];
    let mut cursors = [0u64; 5];
    let mut oldest: Option<chrono::DateTime<chrono::Utc>> = None;
    for &c in classes {
        let r = usize::from(c.rank());
        cursors[r] = reader.cursor(uplink, c)?;
        let first = reader.after(cursors[r], Some(c), 1)?;
        if let Some(e) = first.first() {
            oldest = Some(oldest.map_or(e.received_at, |o| o.min(e.received_at)));
            backlog[r] = reader.backlog(uplink, c)?;
        }
    }
    let age = oldest.map(|o| (chrono::Utc::now() - o).num_milliseconds().max(0) as f64 / 1000.0);
    Ok((backlog, age, cursors))
}
