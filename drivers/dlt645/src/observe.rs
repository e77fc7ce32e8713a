//! Each observable happening on a bus in one place: the counter, the metric and the log
//! line (at most one warning per kind of trouble per [`LOG_WINDOW`]; the next one that gets
//! through says how many were held back).
//!
//! Metrics (the gateway installs a Prometheus recorder):
//! - `dlt645_polls_total{device}`: completed poll cycles;
//! - `dlt645_timeouts_total{device,meter}`: requests a meter did not answer in time;
//! - `dlt645_error_answers_total{device,meter}`: abnormal (`D1H`) answers;
//! - `dlt645_frames_rejected_total{device,reason}`: `garbage`, `bad_end`, `checksum`,
//!   `truncated`, `echo`, `wrong_address`, `unexpected`;
//! - `dlt645_time_syncs_total{device}`, `dlt645_emit_refused_total{device}`,
//!   `dlt645_link_errors_total{device}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{DeviceId, EmitError};

use crate::transport::Rejected;

/// At most one warning per kind of trouble per window.
pub const LOG_WINDOW: Duration = Duration::from_secs(30);

/// Counts of what happened on the bus, shared with whoever asked for them (tests, the
/// `bus_rate` example); the same happenings also go to `metrics` counters.
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Completed poll cycles.
    pub cycles: AtomicU64,
    /// Requests that got no answer in time.
    pub timeouts: AtomicU64,
    /// Abnormal (`D1H`) answers.
    pub error_answers: AtomicU64,
    /// Values that were not BCD or had the wrong length.
    pub bad_values: AtomicU64,
    /// Frames rejected: garbage, bad end byte, bad checksum, truncated.
    pub bad_frames: AtomicU64,
    /// Our own request heard back.
    pub echoes: AtomicU64,
    /// Answers from a meter that was not asked.
    pub wrong_address: AtomicU64,
    /// Master frames or answers to another request.
    pub unexpected: AtomicU64,
    /// Broadcast time syncs sent.
    pub time_syncs: AtomicU64,
    /// How long the last poll cycle took, in milliseconds.
    pub last_cycle_ms: AtomicU64,
}

impl BusCounters {
    /// Reads one counter.
    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Logs, metrics and counters of one bus.
pub(crate) struct Observer {
    device: DeviceId,
    pub(crate) counters: Arc<BusCounters>,
    limits: HashMap<&'static str, LogLimiter>,
}

impl Observer {
    pub(crate) fn new(device: DeviceId, counters: Arc<BusCounters>) -> Observer {
        Observer {
            device,
            counters,
            limits: HashMap::new(),
        }
    }

    /// `Some(held back)` when a warning of `class` may be written now.
    fn admit(&mut self, class: &'static str) -> Option<u64> {
        self.limits
            .entry(class)
            .or_insert_with(|| LogLimiter::new(LOG_WINDOW))
            .allow()
    }

    fn label(&self) -> String {
        self.device.to_string()
    }

    pub(crate) fn bus_open(&self, link: &str, meters: usize) {
        tracing::info!(device = %self.device, link, meters, "dlt645 bus open");
    }

    pub(crate) fn link_down(&mut self, link: &str, e: &std::io::Error) {
        metrics::counter!("dlt645_link_errors_total", "device" => self.label()).increment(1);
        if let Some(held) = self.admit("link") {
            tracing::warn!(device = %self.device, link, suppressed = held, error = %e, "dlt645 bus link down; reopening");
        }
    }

    pub(crate) fn cycle(&mut self, took: Duration, interval: Duration) {
        bump(&self.counters.cycles);
        let ms = u64::try_from(took.as_millis()).unwrap_or(u64::MAX);
        self.counters.last_cycle_ms.store(ms, Ordering::Relaxed);
        metrics::counter!("dlt645_polls_total", "device" => self.label()).increment(1);
        if took > interval
            && let Some(held) = self.admit("overrun")
        {
            tracing::warn!(device = %self.device, took_ms = ms, interval_ms = interval.as_millis(), suppressed = held, "dlt645 poll cycle longer than poll_interval: the bus cannot be read at this rate");
        }
    }

    pub(crate) fn time_sync(&self, time: &str) {
        bump(&self.counters.time_syncs);
        metrics::counter!("dlt645_time_syncs_total", "device" => self.label()).increment(1);
        tracing::debug!(device = %self.device, time, "dlt645 broadcast time sync");
    }

    pub(crate) fn timeout(&mut self, meter: &DeviceId, what: &str) {
        bump(&self.counters.timeouts);
        metrics::counter!("dlt645_timeouts_total", "device" => self.label(), "meter" => meter.to_string()).increment(1);
        if let Some(held) = self.admit("timeout") {
            tracing::warn!(device = %self.device, %meter, request = what, suppressed = held, "dlt645 meter did not answer; polling the others");
        }
    }

    /// A `D1H` answer; returns the health reason.
    pub(crate) fn error_answer(&mut self, meter: &DeviceId, what: String) -> String {
        bump(&self.counters.error_answers);
        metrics::counter!("dlt645_error_answers_total", "device" => self.label(), "meter" => meter.to_string()).increment(1);
        self.warn("error_answer", meter, what)
    }

    /// A value that is not in its format; returns the health reason.
    pub(crate) fn bad_value(&mut self, meter: &DeviceId, what: String) -> String {
        bump(&self.counters.bad_values);
        self.warn("bad_value", meter, what)
    }

    /// Any other trouble with one meter's answer; returns the health reason.
    pub(crate) fn warn(&mut self, class: &'static str, meter: &DeviceId, what: String) -> String {
        if let Some(held) = self.admit(class) {
            tracing::warn!(device = %self.device, %meter, suppressed = held, "dlt645 {what}");
        }
        what
    }

    pub(crate) fn rejected(&mut self, rejected: &[Rejected]) {
        for r in rejected {
            let c = &self.counters;
            bump(match r {
                Rejected::Frame(_) => &c.bad_frames,
                Rejected::Echo => &c.echoes,
                Rejected::WrongAddress => &c.wrong_address,
                Rejected::Unexpected => &c.unexpected,
            });
            metrics::counter!("dlt645_frames_rejected_total", "device" => self.label(), "reason" => r.label()).increment(1);
            // an echo is what a half-duplex adapter does, not news
            if *r != Rejected::Echo
                && let Some(held) = self.admit(r.label())
            {
                tracing::warn!(device = %self.device, reason = r.label(), suppressed = held, "dlt645 frame rejected; bus kept");
            }
        }
    }

    pub(crate) fn emit_refused(&mut self, values: usize, e: &EmitError) {
        metrics::counter!("dlt645_emit_refused_total", "device" => self.label()).increment(1);
        if let Some(held) = self.admit("emit") {
            tracing::warn!(device = %self.device, values, suppressed = held, error = %e, "journal refused meter readings; kept for the next hand-over");
        }
    }

    pub(crate) fn meter_online(&self, meter: &DeviceId) {
        tracing::info!(device = %self.device, %meter, "dlt645 meter online");
    }

    pub(crate) fn address_learned(&self, meter: &DeviceId, address: &str) {
        tracing::info!(device = %self.device, %meter, address, "dlt645 meter address read with 13H");
    }
}
