//! The run loop shared by the three kinds: connect, poll, serve commands, reconnect.
//!
//! Invariants:
//! - every request runs under `request_timeout`; a timeout, I/O error or garbled answer
//!   drops the link (a late answer must never be read as the next one) and reconnects
//!   with [`Backoff`], reporting the device `Offline`;
//! - an exception answer keeps the link, skips that block for this cycle and reports the
//!   device `Degraded`;
//! - a poll cycle's bit edges (alarms, door states) go to the journal at once, in one
//!   transaction, and a bit's last state moves only after it committed: if the journal
//!   refuses, the next poll computes the same edges again, so none is lost. Edges never wait
//!   for telemetry and are never coalesced;
//! - register values that moved go into the device's [`Batch`] and leave as one
//!   `sensor.readings` event per class, journaled by a task of its own while polling goes
//!   on. At most one batch per device is in flight: values read meanwhile wait in the
//!   batch, the newest per point winning (`modbus_readings_coalesced_total{device}`), so
//!   a slow or refusing journal costs one value per point, not a queue of cycles. A
//!   refused batch goes back into the batch under any newer values;
//! - the poller never overlaps itself (one cycle at a time, missed ticks delayed); a cycle
//!   that ends later than one interval after it was due is an overrun: counted
//!   (`modbus_poll_overruns_total{device}`), logged at a limited rate, and the device is
//!   `Degraded` until ten cycles in a row keep the rate again;
//! - the last state survives reconnects within one run, so a change during an outage is
//!   reported once the device is back (including a reset) and an unchanged state is not
//!   reported again. At start the state is unknown: a bit found on emits its `on_kind`
//!   (an alarm already active is never missed), a bit found off emits nothing, and each
//!   register emits its first reading;
//! - commands are served between poll cycles, never blocked behind back-off: while the link
//!   is down they are answered `Failed`.

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{
    Backoff, CommandRequest, DeviceId, Driver, DriverContext, DriverError, EmitError, NewEvent,
    Receipt,
};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::batch::{Batch, Handed};
use crate::codec::Reading;
use crate::command;
use crate::config::{Endpoint, PollSettings};
use crate::error::ModbusError;
use crate::observe::Observer;
use crate::points::{PointMap, PointRole};
use crate::transport::{self, Link};

/// Longest wait between reconnect attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A Modbus driver instance: one device, one link. Built by any of the three configs.
#[derive(Debug)]
pub struct ModbusDriver {
    device: DeviceId,
    endpoint: Endpoint,
    settings: PollSettings,
    map: Arc<PointMap>,
}

/// What one point was last reported as.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Last {
    Bit(bool),
    Value(f64),
}

/// A value read in this cycle.
#[derive(Debug, Clone, Copy)]
enum Observed {
    Bit(bool),
    Value(Reading),
}

/// Why a session (one open link) ended.
enum SessionEnd {
    Shutdown,
    Fault(ModbusError),
}

impl ModbusDriver {
    pub(crate) fn new(
        device: DeviceId,
        endpoint: Endpoint,
        settings: PollSettings,
        map: PointMap,
    ) -> ModbusDriver {
        ModbusDriver {
            device,
            endpoint,
            settings,
            map: Arc::new(map),
        }
    }
}

impl Driver for ModbusDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let mut core = Core {
            obs: Observer::new(self.device.clone(), self.endpoint.to_string()),
            last: vec![None; self.map.points.len()],
            batch: Batch::new(self.map.points.len()),
            inflight: None,
            driver: self,
        };
        core.run(&cx).await;
        Ok(())
    }
}

/// A batch on its way to the journal, with its values to put back if it is refused.
struct InFlight {
    task: JoinHandle<Result<Vec<Receipt>, EmitError>>,
    handed: Handed,
}

struct Core {
    driver: ModbusDriver,
    obs: Observer,
    /// Bits: the state last committed. Registers: the value last put into the batch.
    last: Vec<Option<Last>>,
    batch: Batch,
    inflight: Option<InFlight>,
}

impl Core {
    async fn run(&mut self, cx: &DriverContext) {
        let base = self
            .driver
            .settings
            .poll_interval
            .min(Duration::from_secs(1));
        let mut backoff = Backoff::new(base, MAX_BACKOFF);
        let s = &self.driver.settings;
        let (endpoint, unit, timeout) = (self.driver.endpoint.clone(), s.unit, s.request_timeout);
        loop {
            let opened = tokio::select! {
                () = cx.shutdown().cancelled() => return,
                r = transport::connect(&endpoint, unit, timeout) => r,
            };
            let fault = match opened {
                Ok(mut link) => {
                    self.obs.connected();
                    match self.session(cx, &mut link, &mut backoff).await {
                        SessionEnd::Shutdown => return,
                        SessionEnd::Fault(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.obs.transport_error(cx, &fault);
            if !self.wait_out(cx, backoff.next_delay()).await {
                return;
            }
        }
    }

    /// Polls and serves commands on one open link until it fails or shutdown.
    async fn session(
        &mut self,
        cx: &DriverContext,
        link: &mut Link,
        backoff: &mut Backoff,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(self.driver.settings.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return SessionEnd::Shutdown,
                req = cx.next_command() => {
                    let Some(req) = req else { return SessionEnd::Shutdown };
                    if let Some(fault) = self.command(cx, req, Some(&mut *link)).await {
                        return SessionEnd::Fault(fault);
                    }
                }
                done = settled(&mut self.inflight) => {
                    self.settle(done);
                    self.hand_over(cx);
                }
                due = tick.tick() => {
                    let cycle = tokio::select! {
                        () = cx.shutdown().cancelled() => return SessionEnd::Shutdown,
                        r = self.poll_cycle(cx, link, due) => r,
                    };
                    match cycle {
                        Ok(()) => backoff.reset(),
                        Err(fault) => return SessionEnd::Fault(fault),
                    }
                }
            }
        }
    }

    /// Sleeps out a back-off delay, answering commands `Failed` meanwhile; false at shutdown.
    async fn wait_out(&mut self, cx: &DriverContext, delay: Duration) -> bool {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                biased;
                () = cx.shutdown().cancelled() => return false,
                () = &mut sleep => return true,
                req = cx.next_command() => match req {
                    None => return false,
                    Some(req) => { self.command(cx, req, None).await; }
                },
            }
        }
    }

    /// Executes one command; returns a transport fault that must end the session.
    async fn command(
        &mut self,
        cx: &DriverContext,
        req: CommandRequest,
        link: Option<&mut Link>,
    ) -> Option<ModbusError> {
        let kind = req.command.kind.as_str().to_owned();
        let outcome = command::execute(&self.driver.map, cx.device(), &req, link).await;
        self.obs.command(&kind, outcome.status, &outcome.detail);
        let fault = match outcome.error {
            Some(e) if e.is_transient() => Some(e),
            Some(e) => {
                self.obs.exception(&e);
                self.obs
                    .set_health(cx, campusgw_sdk::DeviceHealth::Degraded(e.to_string()));
                None
            }
            None => None,
        };
        req.respond(outcome.status, outcome.detail);
        fault
    }

    /// Reads every block, journals the edges, then queues the readings that moved.
    async fn poll_cycle(
        &mut self,
        cx: &DriverContext,
        link: &mut Link,
        due: Instant,
    ) -> Result<(), ModbusError> {
        let (observed, exceptions) = read_all(&self.driver.map, link).await?;
        for e in &exceptions {
            self.obs.exception(e);
        }
        let (edges, updates) = self.edges(&observed);
        if !edges.is_empty() {
            let pending = edges.len();
            match cx.emit_all(edges).await {
                Ok(_) => {
                    for (i, on) in updates {
                        self.last[i] = Some(Last::Bit(on));
                    }
                }
                Err(e) => self.obs.emit_refused(&e, pending),
            }
        }
        self.queue_readings(&observed);
        if let Some(f) = &self.inflight
            && f.task.is_finished()
        {
            let done = settled(&mut self.inflight).await;
            self.settle(done);
        }
        self.hand_over(cx);
        let interval = self.driver.settings.poll_interval;
        let took = due.elapsed();
        let overrun = (took > interval).then_some((took, interval));
        self.obs.polled(cx, &exceptions, overrun);
        Ok(())
    }

    /// The bit edges this cycle's values call for, and the bit states they imply.
    fn edges(&self, observed: &[(usize, Observed)]) -> (Vec<NewEvent>, Vec<(usize, bool)>) {
        let mut events = Vec::new();
        let mut updates = Vec::new();
        for &(i, obs) in observed {
            let point = &self.driver.map.points[i];
            let (
                PointRole::Bit {
                    on_kind,
                    off_kind,
                    class,
                },
                Observed::Bit(on),
            ) = (&point.role, obs)
            else {
                continue;
            };
            let prev = match self.last[i] {
                Some(Last::Bit(b)) => Some(b),
                _ => None,
            };
            if prev == Some(on) {
                continue;
            }
            // Unknown previous state: only an active input is news (an alarm already on).
            let kind = if on {
                on_kind
            } else if prev.is_some() {
                off_kind
            } else {
                &None
            };
            if let Some(kind) = kind {
                let payload = json!({"point": point.name, "table": point.table.as_str(), "address": point.address, "value": on});
                events.push(NewEvent::new(kind.clone(), *class).payload(payload));
            }
            updates.push((i, on));
        }
        // One transaction; the highest class first so a reader of the journal sees it first.
        events.sort_by_key(|e| e.class);
        (events, updates)
    }

    /// Puts every register value that moved past its deadband into the batch.
    fn queue_readings(&mut self, observed: &[(usize, Observed)]) {
        let mut coalesced = 0;
        for &(i, obs) in observed {
            let point = &self.driver.map.points[i];
            let (PointRole::Register { deadband, .. }, Observed::Value(r)) = (&point.role, obs)
            else {
                continue;
            };
            let moved = match self.last[i] {
                Some(Last::Value(v)) => r.value != v && (r.value - v).abs() >= *deadband,
                _ => true,
            };
            if moved {
                coalesced += u64::from(self.batch.put(i, r));
                self.last[i] = Some(Last::Value(r.value));
            }
        }
        self.obs.coalesced(coalesced);
    }

    /// Starts journaling the batch unless one is still in flight (then it keeps filling).
    fn hand_over(&mut self, cx: &DriverContext) {
        if self.inflight.is_some() || self.batch.is_empty() {
            return;
        }
        let (events, handed) = self.batch.take(&self.driver.map);
        let cx = cx.clone();
        let task = tokio::spawn(async move { cx.emit_all(events).await });
        self.inflight = Some(InFlight { task, handed });
    }

    /// Accounts for a finished batch: refused values go back into the batch.
    fn settle(&mut self, done: (Result<Vec<Receipt>, EmitError>, Handed)) {
        let (result, handed) = done;
        if let Err(e) = result {
            let pending = handed.len();
            let lost = self.batch.restore(handed);
            self.obs.coalesced(lost);
            self.obs.emit_refused(&e, pending);
        }
    }
}

/// Waits for the batch in flight (forever when there is none) and takes it out.
async fn settled(inflight: &mut Option<InFlight>) -> (Result<Vec<Receipt>, EmitError>, Handed) {
    let Some(f) = inflight.as_mut() else {
        return std::future::pending().await;
    };
    let result = match (&mut f.task).await {
        Ok(r) => r,
        // The task only awaits the journal; a panic or abort there means it is gone.
        Err(_) => Err(EmitError::Closed),
    };
    let handed = inflight.take().map(|f| f.handed).unwrap_or_default();
    (result, handed)
}

/// Reads every block once. Exceptions are collected per block; a transport fault aborts.
async fn read_all(
    map: &PointMap,
    link: &mut Link,
) -> Result<(Vec<(usize, Observed)>, Vec<ModbusError>), ModbusError> {
    let mut observed = Vec::new();
    let mut exceptions = Vec::new();
    for block in &map.blocks {
        let values = if block.table.is_bit() {
            link.read_bits(block.table, block.start, block.count)
                .await
                .map(Values::Bits)
        } else {
            link.read_words(block.table, block.start, block.count)
                .await
                .map(Values::Words)
        };
        let values = match values {
            Ok(v) => v,
            Err(e) if e.is_transient() => return Err(e),
            Err(e) => {
                exceptions.push(e);
                continue;
            }
        };
        for &i in &block.members {
            let point = &map.points[i];
            let at = usize::from(point.address - block.start);
            let obs = match (&values, &point.role) {
                (Values::Bits(bits), _) => bits.get(at).copied().map(Observed::Bit),
                (Values::Words(words), PointRole::Register { format, .. }) => words
                    .get(at..at + usize::from(point.width()))
                    .and_then(|w| format.decode(w))
                    .map(Observed::Value),
                _ => None,
            };
            if let Some(obs) = obs {
                observed.push((i, obs));
            }
        }
    }
    Ok((observed, exceptions))
}

enum Values {
    Bits(Vec<bool>),
    Words(Vec<u16>),
}
