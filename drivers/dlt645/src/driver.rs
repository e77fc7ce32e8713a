//! The run loop: open the bus, poll every meter in turn, broadcast time, reopen on faults.
//!
//! Invariants:
//! - one request on the bus at a time: the next is written only after the answer to the
//!   last arrived or its `request_timeout` passed, so meters never collide;
//! - a meter that does not answer one request is skipped for the rest of the cycle (it
//!   costs one timeout per cycle, not one per point) and reported `Offline`; the others
//!   are read as usual;
//! - rejected frames (garbage, torn, bad checksum, echo, another meter's late answer) are
//!   counted and logged at a limited rate; they never close the bus. Only an I/O error or
//!   the serial server closing the connection does: then every meter is `Offline` and the
//!   link is reopened with [`Backoff`];
//! - each meter's values that changed since last queued go out as one `sensor.readings`
//!   event per meter per cycle (device = the meter), journaled by a task of its own while
//!   polling goes on. At most one hand-over is in flight; values read meanwhile wait, the
//!   newest per point winning (counted as `coalesced`); a refused hand-over goes back
//!   under any newer values. Nothing is acknowledged to a meter (reads need none);
//! - meters take no commands: every command is answered `Unsupported`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use campusgw_sdk::event::kinds::SENSOR_READINGS;
use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{
    Backoff, Class, CommandStatus, DeviceHealth, DeviceId, Driver, DriverContext, DriverError,
    EmitError, Location, NewEvent, Receipt,
};
use chrono::{Datelike, FixedOffset, Timelike};
use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::codec::{Address, Frame, Function, ReadAnswer};
use crate::config::Link;
use crate::ids::Quantity;
use crate::transport::{self, Bus, Rejected};

/// Longest wait between attempts to reopen the link.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// At most one warning per kind of trouble per window.
const LOG_WINDOW: Duration = Duration::from_secs(30);

/// Polling settings from the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) poll_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) preamble: usize,
    pub(crate) time_sync: Option<Duration>,
    pub(crate) time_zone: FixedOffset,
    #[allow(dead_code)] // kept for logs of the link
    pub(crate) baud: u32,
}

/// One meter on the bus and what was last queued of it.
#[derive(Debug)]
pub(crate) struct Meter {
    device: DeviceId,
    location: Option<Location>,
    address: Address,
    /// The address read with `13H` when configured as the wildcard.
    learned: Option<Address>,
    points: Vec<&'static Quantity>,
    last: Vec<Option<f64>>,
    pending: Vec<Option<f64>>,
    coalesced: u64,
    health: Option<DeviceHealth>,
}

impl Meter {
    pub(crate) fn new(
        device: DeviceId,
        location: Option<Location>,
        address: Address,
        points: Vec<&'static Quantity>,
    ) -> Meter {
        let n = points.len();
        Meter {
            device,
            location,
            address,
            learned: None,
            points,
            last: vec![None; n],
            pending: vec![None; n],
            coalesced: 0,
            health: None,
        }
    }

    fn target(&self) -> Option<Address> {
        if self.address == Address::WILDCARD {
            self.learned
        } else {
            Some(self.address)
        }
    }
}

/// Counts of what happened on the bus, shared with whoever asked for them (tests, the
/// bench example); the same events also go to `metrics` counters.
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

/// A DL/T 645 driver instance: one bus and its meters.
#[derive(Debug)]
pub struct Dlt645Driver {
    device: DeviceId,
    link: Link,
    settings: Settings,
    meters: Vec<Meter>,
    counters: Arc<BusCounters>,
}

impl Dlt645Driver {
    pub(crate) fn new(
        device: DeviceId,
        link: Link,
        settings: Settings,
        meters: Vec<Meter>,
    ) -> Dlt645Driver {
        Dlt645Driver {
            device,
            link,
            settings,
            meters,
            counters: Arc::default(),
        }
    }

    /// The bus counters of this instance (take them before `run`).
    pub fn counters(&self) -> Arc<BusCounters> {
        self.counters.clone()
    }
}

/// A hand-over on its way to the journal, with its values to put back if refused.
struct InFlight {
    task: JoinHandle<Result<Vec<Receipt>, EmitError>>,
    handed: Handed,
}

/// What a hand-over carried: (meter, point, value) and each meter's coalesced count.
#[derive(Default)]
struct Handed {
    values: Vec<(usize, usize, f64)>,
    coalesced: Vec<(usize, u64)>,
}

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Fault(std::io::Error),
}

impl Driver for Dlt645Driver {
    async fn run(mut self, cx: DriverContext) -> Result<(), DriverError> {
        let mut inflight = None;
        let mut limits = Limits::default();
        let mut backoff = Backoff::new(Duration::from_millis(500), MAX_BACKOFF);
        loop {
            let opened = tokio::select! {
                () = cx.shutdown().cancelled() => break,
                r = transport::open(&self.link, self.settings.request_timeout, self.settings.preamble) => r,
            };
            let fault = match opened {
                Ok(mut bus) => {
                    tracing::info!(device = %self.device, link = %self.link, meters = self.meters.len(), "dlt645 bus open");
                    cx.report_health(&self.device, DeviceHealth::Online);
                    match self
                        .session(&cx, &mut bus, &mut inflight, &mut limits, &mut backoff)
                        .await
                    {
                        SessionEnd::Shutdown => break,
                        SessionEnd::Fault(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.link_down(&cx, &fault, &mut limits);
            if !wait_out(&cx, backoff.next_delay()).await {
                break;
            }
        }
        if let Some(f) = inflight {
            // shutdown: let the journal finish what it was given
            let _ = f.task.await;
        }
        Ok(())
    }
}

impl Dlt645Driver {
    async fn session(
        &mut self,
        cx: &DriverContext,
        bus: &mut Bus,
        inflight: &mut Option<InFlight>,
        limits: &mut Limits,
        backoff: &mut Backoff,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(self.settings.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sync = self.settings.time_sync.map(|d| {
            let mut i = tokio::time::interval(d);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        loop {
            tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return SessionEnd::Shutdown,
                req = cx.next_command() => match req {
                    None => return SessionEnd::Shutdown,
                    Some(req) => req.respond(CommandStatus::Unsupported, "DL/T 645 meters take no commands"),
                },
                done = settled(inflight) => {
                    self.settle(done, limits);
                    self.hand_over(cx, inflight);
                }
                _ = next_tick(&mut sync) => {
                    if let Err(e) = self.time_sync(bus).await {
                        return SessionEnd::Fault(e);
                    }
                }
                _ = tick.tick() => {
                    let cycle = tokio::select! {
                        () = cx.shutdown().cancelled() => return SessionEnd::Shutdown,
                        r = self.poll_cycle(cx, bus, inflight, limits) => r,
                    };
                    match cycle {
                        Ok(()) => backoff.reset(),
                        Err(e) => return SessionEnd::Fault(e),
                    }
                }
            }
        }
    }

    /// `08H` to every meter with the current time in the meters' zone.
    async fn time_sync(&mut self, bus: &mut Bus) -> std::io::Result<()> {
        let now = chrono::Utc::now().with_timezone(&self.settings.time_zone);
        #[allow(clippy::cast_possible_truncation)] // each field is below 100
        let fields = [
            now.second() as u8,
            now.minute() as u8,
            now.hour() as u8,
            now.day() as u8,
            now.month() as u8,
            (now.year() % 100) as u8,
        ];
        bus.send(&Frame::broadcast_time(fields)).await?;
        self.counters.time_syncs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dlt645_time_syncs_total", "device" => self.device.to_string())
            .increment(1);
        tracing::debug!(device = %self.device, time = %now, "dlt645 broadcast time sync");
        Ok(())
    }

    /// Reads every meter once, handing each meter's changes to the journal as it goes.
    async fn poll_cycle(
        &mut self,
        cx: &DriverContext,
        bus: &mut Bus,
        inflight: &mut Option<InFlight>,
        limits: &mut Limits,
    ) -> std::io::Result<()> {
        let started = tokio::time::Instant::now();
        for i in 0..self.meters.len() {
            let mut rejected = Vec::new();
            let result = self.read_meter(i, bus, &mut rejected, limits).await;
            self.rejected(&rejected, limits);
            let health = result?;
            self.set_health(cx, i, health);
            if inflight.as_ref().is_some_and(|f| f.task.is_finished()) {
                let done = settled(inflight).await;
                self.settle(done, limits);
            }
            self.hand_over(cx, inflight);
        }
        self.counters.cycles.fetch_add(1, Ordering::Relaxed);
        let took = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.counters.last_cycle_ms.store(took, Ordering::Relaxed);
        metrics::counter!("dlt645_polls_total", "device" => self.device.to_string()).increment(1);
        if started.elapsed() > self.settings.poll_interval
            && let Some(held) = limits.admit("overrun")
        {
            tracing::warn!(device = %self.device, took_ms = took, interval_ms = self.settings.poll_interval.as_millis(), suppressed = held, "dlt645 poll cycle longer than poll_interval: the bus cannot be read at this rate");
        }
        cx.activity(&self.device);
        Ok(())
    }

    /// Reads one meter's points; returns its health for this cycle.
    async fn read_meter(
        &mut self,
        i: usize,
        bus: &mut Bus,
        rejected: &mut Vec<Rejected>,
        limits: &mut Limits,
    ) -> std::io::Result<DeviceHealth> {
        let timeout = self.settings.request_timeout;
        let Some(address) = self.resolve_address(i, bus, rejected).await? else {
            self.timeout(i, "13H read address", limits);
            return Ok(DeviceHealth::Offline(
                "no answer to read address (13H)".into(),
            ));
        };
        let mut problem = None;
        for p in 0..self.meters[i].points.len() {
            let q = self.meters[i].points[p];
            let req = Frame::read_data(address, q.id);
            let Some(frame) = bus
                .exchange(&req, Function::ReadData, timeout, rejected)
                .await?
            else {
                self.timeout(i, q.name, limits);
                let why = format!("no answer within {timeout:?} (reading {})", q.name);
                if p == 0 {
                    return Ok(DeviceHealth::Offline(why));
                }
                problem = Some(why);
                break;
            };
            match frame.read_answer() {
                Ok(ReadAnswer::Data { value, .. }) => match q.decode(&value) {
                    Ok(v) => self.queue(i, p, v),
                    Err(e) => {
                        self.counters.bad_values.fetch_add(1, Ordering::Relaxed);
                        problem =
                            Some(self.warn(limits, "bad_value", i, &format!("{}: {e}", q.name)));
                    }
                },
                Ok(ReadAnswer::Error(flags)) => {
                    self.counters.error_answers.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!("dlt645_error_answers_total", "device" => self.device.to_string(), "meter" => self.meters[i].device.to_string()).increment(1);
                    problem = Some(self.warn(
                        limits,
                        "error_answer",
                        i,
                        &format!("{} refused: {flags}", q.name),
                    ));
                }
                Err(e) => {
                    problem = Some(self.warn(limits, "bad_answer", i, &format!("{}: {e}", q.name)));
                }
            }
        }
        Ok(problem.map_or(DeviceHealth::Online, DeviceHealth::Degraded))
    }

    /// The address to poll meter `i` at; reads it with `13H` for a wildcard meter.
    async fn resolve_address(
        &mut self,
        i: usize,
        bus: &mut Bus,
        rejected: &mut Vec<Rejected>,
    ) -> std::io::Result<Option<Address>> {
        if let Some(a) = self.meters[i].target() {
            return Ok(Some(a));
        }
        let timeout = self.settings.request_timeout;
        let answer = bus
            .exchange(
                &Frame::read_address(),
                Function::ReadAddress,
                timeout,
                rejected,
            )
            .await?;
        let learned = answer
            .and_then(|f| f.address_answer().ok())
            .filter(Address::is_bcd);
        if let Some(a) = learned {
            tracing::info!(device = %self.device, meter = %self.meters[i].device, address = %a, "dlt645 meter address read with 13H");
            self.meters[i].learned = Some(a);
        }
        Ok(learned)
    }

    fn queue(&mut self, i: usize, p: usize, v: f64) {
        let m = &mut self.meters[i];
        if m.last[p] == Some(v) {
            return;
        }
        m.last[p] = Some(v);
        if m.pending[p].replace(v).is_some() {
            m.coalesced += 1;
        }
    }

    /// Starts journaling every meter's pending values unless a hand-over is in flight.
    fn hand_over(&mut self, cx: &DriverContext, inflight: &mut Option<InFlight>) {
        if inflight.is_some() {
            return;
        }
        let mut events = Vec::new();
        let mut handed = Handed::default();
        for (i, m) in self.meters.iter_mut().enumerate() {
            let mut points = Map::new();
            let mut units = Map::new();
            for (p, slot) in m.pending.iter_mut().enumerate() {
                let Some(v) = slot.take() else { continue };
                let q = m.points[p];
                points.insert(q.name.into(), number(v));
                if !q.unit.is_empty() {
                    units.insert(q.name.into(), Value::String(q.unit.into()));
                }
                handed.values.push((i, p, v));
            }
            if points.is_empty() {
                continue;
            }
            let mut payload = Map::new();
            payload.insert("points".into(), Value::Object(points));
            if !units.is_empty() {
                payload.insert("units".into(), Value::Object(units));
            }
            if m.coalesced > 0 {
                let n = std::mem::take(&mut m.coalesced);
                handed.coalesced.push((i, n));
                payload.insert("coalesced".into(), Value::from(n));
            }
            let mut e = NewEvent::new(SENSOR_READINGS, Class::Telemetry)
                .device(m.device.clone())
                .payload(Value::Object(payload));
            if let Some(l) = &m.location {
                e = e.location(l.clone());
            }
            events.push(e);
        }
        if events.is_empty() {
            return;
        }
        let cx = cx.clone();
        let task = tokio::spawn(async move { cx.emit_all(events).await });
        *inflight = Some(InFlight { task, handed });
    }

    /// A refused hand-over's values go back under any newer ones.
    fn settle(&mut self, done: (Result<Vec<Receipt>, EmitError>, Handed), limits: &mut Limits) {
        let (result, handed) = done;
        let Err(e) = result else { return };
        metrics::counter!("dlt645_emit_refused_total", "device" => self.device.to_string())
            .increment(1);
        if let Some(held) = limits.admit("emit") {
            tracing::warn!(device = %self.device, values = handed.values.len(), suppressed = held, error = %e, "journal refused meter readings; kept for the next hand-over");
        }
        for (i, n) in handed.coalesced {
            self.meters[i].coalesced += n;
        }
        for (i, p, v) in handed.values {
            let m = &mut self.meters[i];
            match m.pending[p] {
                None => m.pending[p] = Some(v),
                Some(_) => m.coalesced += 1,
            }
        }
    }

    fn timeout(&mut self, i: usize, what: &str, limits: &mut Limits) {
        self.counters.timeouts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("dlt645_timeouts_total", "device" => self.device.to_string(), "meter" => self.meters[i].device.to_string()).increment(1);
        if let Some(held) = limits.admit("timeout") {
            tracing::warn!(device = %self.device, meter = %self.meters[i].device, request = what, suppressed = held, "dlt645 meter did not answer; polling the others");
        }
    }

    fn warn(&self, limits: &mut Limits, class: &'static str, i: usize, what: &str) -> String {
        if let Some(held) = limits.admit(class) {
            tracing::warn!(device = %self.device, meter = %self.meters[i].device, suppressed = held, "dlt645 {what}");
        }
        what.to_owned()
    }

    fn rejected(&self, rejected: &[Rejected], limits: &mut Limits) {
        for r in rejected {
            let c = &self.counters;
            let counter = match r {
                Rejected::Frame(_) => &c.bad_frames,
                Rejected::Echo => &c.echoes,
                Rejected::WrongAddress => &c.wrong_address,
                Rejected::Unexpected => &c.unexpected,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("dlt645_frames_rejected_total", "device" => self.device.to_string(), "reason" => r.label()).increment(1);
            // an echo is what a half-duplex adapter does, not news
            if *r != Rejected::Echo
                && let Some(held) = limits.admit(r.label())
            {
                tracing::warn!(device = %self.device, reason = r.label(), suppressed = held, "dlt645 frame rejected; bus kept");
            }
        }
    }

    fn set_health(&mut self, cx: &DriverContext, i: usize, health: DeviceHealth) {
        let m = &mut self.meters[i];
        if !matches!(health, DeviceHealth::Offline(_)) {
            cx.activity(&m.device);
        }
        let same =
            m.health.as_ref().map(std::mem::discriminant) == Some(std::mem::discriminant(&health));
        if !same {
            if matches!(health, DeviceHealth::Online) {
                tracing::info!(device = %self.device, meter = %m.device, "dlt645 meter online");
            }
            cx.report_health(&m.device, health.clone());
            m.health = Some(health);
        }
    }

    fn link_down(&mut self, cx: &DriverContext, e: &std::io::Error, limits: &mut Limits) {
        metrics::counter!("dlt645_link_errors_total", "device" => self.device.to_string())
            .increment(1);
        if let Some(held) = limits.admit("link") {
            tracing::warn!(device = %self.device, link = %self.link, suppressed = held, error = %e, "dlt645 bus link down; reopening");
        }
        let why = format!("bus link down: {e}");
        cx.report_health(&self.device, DeviceHealth::Offline(why.clone()));
        for i in 0..self.meters.len() {
            self.set_health(cx, i, DeviceHealth::Offline(why.clone()));
        }
    }
}

/// One [`LogLimiter`] per kind of trouble.
#[derive(Default)]
struct Limits(std::collections::HashMap<&'static str, LogLimiter>);

impl Limits {
    fn admit(&mut self, class: &'static str) -> Option<u64> {
        self.0
            .entry(class)
            .or_insert_with(|| LogLimiter::new(LOG_WINDOW))
            .allow()
    }
}

async fn next_tick(sync: &mut Option<tokio::time::Interval>) {
    match sync {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// Sleeps out a back-off delay, answering commands meanwhile; false at shutdown.
async fn wait_out(cx: &DriverContext, delay: Duration) -> bool {
    let sleep = tokio::time::sleep(delay);
    tokio::pin!(sleep);
    loop {
        tokio::select! {
            biased;
            () = cx.shutdown().cancelled() => return false,
            () = &mut sleep => return true,
            req = cx.next_command() => match req {
                None => return false,
                Some(req) => req.respond(CommandStatus::Unsupported, "DL/T 645 meters take no commands"),
            },
        }
    }
}

/// Waits for the hand-over in flight (forever when none) and takes it out.
async fn settled(inflight: &mut Option<InFlight>) -> (Result<Vec<Receipt>, EmitError>, Handed) {
    let Some(f) = inflight.as_mut() else {
        return std::future::pending().await;
    };
    let result = (&mut f.task).await.unwrap_or(Err(EmitError::Closed));
    let handed = inflight.take().map(|f| f.handed).unwrap_or_default();
    (result, handed)
}

/// A JSON number; integral values without a fraction, as the Modbus driver writes them.
fn number(v: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)] // integral and below 2^53: exact
        return Value::from(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}
