//! Each observable happening of a driver instance in one place: the log line (rate
//! limited), the metric and the health report.
//!
//! Metrics (the gateway installs a Prometheus recorder):
//! - `modbus_polls_total{device}`: completed poll cycles;
//! - `modbus_transport_errors_total{device,class}`: connect / timeout / io / framing faults;
//! - `modbus_exceptions_total{device,code}`: exception answers, code as `0x02`;
//! - `modbus_emit_refused_total{device}`: edge sets or reading batches the journal refused;
//! - `modbus_readings_coalesced_total{device}`: register readings replaced by a newer value
//!   of the same point before the journal took them (the journal could not keep up);
//! - `modbus_poll_overruns_total{device}`: poll cycles that ended more than one interval
//!   after they were due (the device cannot be polled at its configured rate).
//!
//! Warnings are limited to one per device per error class per [`LOG_WINDOW`]; the next
//! one that gets through says how many were suppressed.

use std::collections::HashMap;
use std::time::Duration;

use campusgw_sdk::{DeviceHealth, DeviceId, DriverContext, EmitError};
use tokio::time::Instant;

use crate::error::ModbusError;

/// At most one warning per device and error class per window.
pub const LOG_WINDOW: Duration = Duration::from_secs(30);

/// On-time cycles needed after an overrun before the device is `Online` again: a device at
/// the edge of its rate would otherwise flip between `Degraded` and `Online` every cycle.
pub const ON_TIME_TO_RECOVER: u32 = 10;

/// Logs, metrics and health for one device.
pub(crate) struct Observer {
    device: DeviceId,
    endpoint: String,
    warned: HashMap<&'static str, (Instant, u64)>,
    health: Option<DeviceHealth>,
    /// Since the last overrun: `Some(on-time cycles)`; `None` when none is pending.
    overrun: Option<(u32, String)>,
}

impl Observer {
    pub(crate) fn new(device: DeviceId, endpoint: String) -> Observer {
        Observer {
            device,
            endpoint,
            warned: HashMap::new(),
            health: None,
            overrun: None,
        }
    }

    /// `Some(suppressed)` when a warning of `class` may be logged now.
    fn admit(&mut self, class: &'static str) -> Option<u64> {
        let now = Instant::now();
        match self.warned.get_mut(class) {
            Some((last, suppressed)) if now.duration_since(*last) < LOG_WINDOW => {
                *suppressed += 1;
                None
            }
            Some((last, suppressed)) => {
                *last = now;
                Some(std::mem::take(suppressed))
            }
            None => {
                self.warned.insert(class, (now, 0));
                Some(0)
            }
        }
    }

    fn label(&self) -> String {
        self.device.to_string()
    }

    pub(crate) fn connected(&mut self) {
        tracing::info!(device = %self.device, endpoint = %self.endpoint, "modbus link open");
    }

    /// A transport fault: the link is dropped and the device is offline until the next
    /// good poll.
    pub(crate) fn transport_error(&mut self, cx: &DriverContext, err: &ModbusError) {
        metrics::counter!("modbus_transport_errors_total", "device" => self.label(), "class" => err.class())
            .increment(1);
        if let Some(suppressed) = self.admit(err.class()) {
            tracing::warn!(device = %self.device, endpoint = %self.endpoint, class = err.class(), suppressed, error = %err, "modbus transport fault; reconnecting");
        }
        self.set_health(cx, DeviceHealth::Offline(err.to_string()));
    }

    /// An exception answer; the health decision is the caller's.
    pub(crate) fn exception(&mut self, err: &ModbusError) {
        let code = match err {
            ModbusError::Exception { code, .. } => format!("{code:#04x}"),
            _ => "none".to_owned(),
        };
        metrics::counter!("modbus_exceptions_total", "device" => self.label(), "code" => code)
            .increment(1);
        if let Some(suppressed) = self.admit("exception") {
            tracing::warn!(device = %self.device, suppressed, error = %err, "modbus exception");
        }
    }

    /// A poll cycle completed; `exceptions` holds the blocks the device refused, `overrun`
    /// how long the cycle took against its interval when it could not keep the rate.
    pub(crate) fn polled(
        &mut self,
        cx: &DriverContext,
        exceptions: &[ModbusError],
        overrun: Option<(Duration, Duration)>,
    ) {
        metrics::counter!("modbus_polls_total", "device" => self.label()).increment(1);
        cx.activity(&self.device);
        let slow = overrun.map(|(took, interval)| {
            format!(
                "cannot poll at the configured rate: a cycle ended {} ms after it was due, the interval is {} ms",
                took.as_millis(),
                interval.as_millis()
            )
        });
        if let Some(why) = &slow {
            metrics::counter!("modbus_poll_overruns_total", "device" => self.label()).increment(1);
            if let Some(suppressed) = self.admit("overrun") {
                tracing::warn!(device = %self.device, suppressed, "{why}");
            }
        }
        self.overrun = match (slow, self.overrun.take()) {
            (Some(why), _) => Some((0, why)),
            (None, Some((n, _))) if n + 1 >= ON_TIME_TO_RECOVER => None,
            (None, Some((n, why))) => Some((n + 1, why)),
            (None, None) => None,
        };
        let health = match (exceptions.first(), &self.overrun) {
            (Some(e), _) => DeviceHealth::Degraded(e.to_string()),
            (None, Some((_, why))) => DeviceHealth::Degraded(why.clone()),
            (None, None) => DeviceHealth::Online,
        };
        self.set_health(cx, health);
    }

    /// `n` register readings were replaced by newer ones before the journal took them.
    pub(crate) fn coalesced(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        metrics::counter!("modbus_readings_coalesced_total", "device" => self.label()).increment(n);
        if let Some(suppressed) = self.admit("coalesced") {
            tracing::warn!(device = %self.device, readings = n, suppressed, "journal behind: newest reading per point kept, older ones coalesced");
        }
    }

    /// The journal refused a cycle's events; they are computed again next poll.
    pub(crate) fn emit_refused(&mut self, err: &EmitError, pending: usize) {
        metrics::counter!("modbus_emit_refused_total", "device" => self.label()).increment(1);
        if let Some(suppressed) = self.admit("emit") {
            tracing::warn!(device = %self.device, pending, suppressed, error = %err, "journal refused events; retrying next poll");
        }
    }

    /// A command ended; one info line each (commands are rare and audited).
    pub(crate) fn command(&self, kind: &str, status: campusgw_sdk::CommandStatus, detail: &str) {
        tracing::info!(device = %self.device, command = kind, ?status, detail, "modbus command");
    }

    /// Reports health when its state (not just its reason) changed.
    pub(crate) fn set_health(&mut self, cx: &DriverContext, health: DeviceHealth) {
        let same = self.health.as_ref().map(std::mem::discriminant)
            == Some(std::mem::discriminant(&health));
        if !same {
            if matches!(health, DeviceHealth::Online) {
                tracing::info!(device = %self.device, "modbus device online");
            }
            cx.report_health(&self.device, health.clone());
            self.health = Some(health);
        }
    }
}
