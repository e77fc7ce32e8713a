//! The run loop: open the bus, poll every meter in turn, broadcast time, reopen on faults.
//!
//! Invariants:
//! - one request on the bus at a time: the next is written only after the answer to the
//!   last arrived or its `request_timeout` passed, so meters never collide;
//! - a meter that does not answer one request is skipped for the rest of the cycle (it
//!   costs one timeout per cycle, not one per point) and reported `Offline`; the others
//!   are read as usual;
//! - rejected frames (garbage, torn, bad checksum, echo, another meter's late answer) are
//!   counted and logged at a limited rate ([`crate::observe`]); they never close
//!   the bus. Only an I/O error or the serial server closing the connection does: then
//!   every meter is `Offline` and the link is reopened with [`Backoff`];
//! - each meter's values that changed since last queued go out as one `sensor.readings`
//!   event per meter per cycle (device = the meter; see `batch.rs`),
//!   journaled by a task of its own while polling goes on. At most one hand-over is in
//!   flight; values read meanwhile wait, the newest per point winning; a refused hand-over
//!   goes back under any newer values. Nothing is acknowledged to a meter (reads need none);
//! - meters take no commands: every command is answered `Unsupported`.

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{
    Backoff, CommandStatus, DeviceHealth, DeviceId, Driver, DriverContext, DriverError, EmitError,
    Location, Receipt,
};
use chrono::{Datelike, FixedOffset, Timelike};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use crate::batch::{self, Handed};
use crate::codec::{Address, Frame, Function, ReadAnswer};
use crate::config::Link;
use crate::ids::Quantity;
pub use crate::observe::BusCounters;
use crate::observe::Observer;
use crate::transport::{self, Bus, Rejected};

/// Longest wait between attempts to reopen the link.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Polling settings from the config.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) poll_interval: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) preamble: usize,
    pub(crate) time_sync: Option<Duration>,
    pub(crate) time_zone: FixedOffset,
}

/// One meter on the bus and what was last queued of it.
#[derive(Debug)]
pub(crate) struct Meter {
    pub(crate) device: DeviceId,
    pub(crate) location: Option<Location>,
    address: Address,
    /// The address read with `13H` when configured as the wildcard.
    learned: Option<Address>,
    pub(crate) points: Vec<&'static Quantity>,
    /// Per point: the value last queued.
    pub(crate) last: Vec<Option<f64>>,
    /// Per point: the value waiting for the journal.
    pub(crate) pending: Vec<Option<f64>>,
    /// Values replaced before the journal took them, not yet reported.
    pub(crate) coalesced: u64,
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

/// Why a session ended.
enum SessionEnd {
    Shutdown,
    Fault(std::io::Error),
}

impl Driver for Dlt645Driver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let obs = Observer::new(self.device.clone(), self.counters.clone());
        let mut core = Core {
            obs,
            inflight: None,
            link: self.link.to_string(),
            driver: self,
        };
        core.run(&cx).await;
        Ok(())
    }
}

struct Core {
    driver: Dlt645Driver,
    obs: Observer,
    inflight: Option<InFlight>,
    link: String,
}

impl Core {
    async fn run(&mut self, cx: &DriverContext) {
        let mut backoff = Backoff::new(Duration::from_millis(500), MAX_BACKOFF);
        let (timeout, preamble) = (
            self.driver.settings.request_timeout,
            self.driver.settings.preamble,
        );
        loop {
            let opened = tokio::select! {
                () = cx.shutdown().cancelled() => break,
                r = transport::open(&self.driver.link, timeout, preamble) => r,
            };
            let fault = match opened {
                Ok(mut bus) => {
                    self.obs.bus_open(&self.link, self.driver.meters.len());
                    cx.report_health(&self.driver.device, DeviceHealth::Online);
                    match self.session(cx, &mut bus, &mut backoff).await {
                        SessionEnd::Shutdown => break,
                        SessionEnd::Fault(e) => e,
                    }
                }
                Err(e) => e,
            };
            self.link_down(cx, &fault);
            if !wait_out(cx, backoff.next_delay()).await {
                break;
            }
        }
        if let Some(f) = self.inflight.take() {
            // shutdown: let the journal finish what it was given
            let _ = f.task.await;
        }
    }

    async fn session(
        &mut self,
        cx: &DriverContext,
        bus: &mut Bus,
        backoff: &mut Backoff,
    ) -> SessionEnd {
        let mut tick = tokio::time::interval(self.driver.settings.poll_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut sync = self.driver.settings.time_sync.map(|d| {
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
                done = settled(&mut self.inflight) => {
                    self.settle(done);
                    self.hand_over(cx);
                }
                _ = next_tick(&mut sync) => {
                    if let Err(e) = self.time_sync(bus).await {
                        return SessionEnd::Fault(e);
                    }
                }
                _ = tick.tick() => {
                    let cycle = tokio::select! {
                        () = cx.shutdown().cancelled() => return SessionEnd::Shutdown,
                        r = self.poll_cycle(cx, bus) => r,
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
        let now = chrono::Utc::now().with_timezone(&self.driver.settings.time_zone);
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
        self.obs.time_sync(&now.to_rfc3339());
        Ok(())
    }

    /// Reads every meter once, handing each meter's changes to the journal as it goes.
    async fn poll_cycle(&mut self, cx: &DriverContext, bus: &mut Bus) -> std::io::Result<()> {
        let started = tokio::time::Instant::now();
        for i in 0..self.driver.meters.len() {
            let mut rejected = Vec::new();
            let result = self.read_meter(i, bus, &mut rejected).await;
            self.obs.rejected(&rejected);
            let health = result?;
            self.set_health(cx, i, health);
            if self.inflight.as_ref().is_some_and(|f| f.task.is_finished()) {
                let done = settled(&mut self.inflight).await;
                self.settle(done);
            }
            self.hand_over(cx);
        }
        self.obs
            .cycle(started.elapsed(), self.driver.settings.poll_interval);
        cx.activity(&self.driver.device);
        Ok(())
    }

    /// Reads one meter's points; returns its health for this cycle.
    async fn read_meter(
        &mut self,
        i: usize,
        bus: &mut Bus,
        rejected: &mut Vec<Rejected>,
    ) -> std::io::Result<DeviceHealth> {
        let timeout = self.driver.settings.request_timeout;
        let Some(address) = self.resolve_address(i, bus, rejected).await? else {
            let meter = self.driver.meters[i].device.clone();
            self.obs.timeout(&meter, "13H read address");
            return Ok(DeviceHealth::Offline(
                "no answer to read address (13H)".into(),
            ));
        };
        let meter = self.driver.meters[i].device.clone();
        let mut problem = None;
        for p in 0..self.driver.meters[i].points.len() {
            let q = self.driver.meters[i].points[p];
            let req = Frame::read_data(address, q.id);
            let answer = bus
                .exchange(&req, Function::ReadData, timeout, rejected)
                .await?;
            let Some(frame) = answer else {
                self.obs.timeout(&meter, q.name);
                let why = format!("no answer within {timeout:?} (reading {})", q.name);
                if p == 0 {
                    return Ok(DeviceHealth::Offline(why));
                }
                problem = Some(why);
                break;
            };
            match frame.read_answer() {
                Ok(ReadAnswer::Data { value, .. }) => match q.decode(&value) {
                    Ok(v) => batch::queue(&mut self.driver.meters[i], p, v),
                    Err(e) => {
                        problem = Some(self.obs.bad_value(&meter, format!("{}: {e}", q.name)))
                    }
                },
                Ok(ReadAnswer::Error(flags)) => {
                    problem = Some(
                        self.obs
                            .error_answer(&meter, format!("{} refused: {flags}", q.name)),
                    );
                }
                Err(e) => {
                    problem = Some(
                        self.obs
                            .warn("bad_answer", &meter, format!("{}: {e}", q.name)),
                    );
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
        if let Some(a) = self.driver.meters[i].target() {
            return Ok(Some(a));
        }
        let timeout = self.driver.settings.request_timeout;
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
            let m = &mut self.driver.meters[i];
            self.obs.address_learned(&m.device, &a.to_string());
            m.learned = Some(a);
        }
        Ok(learned)
    }

    /// Starts journaling every meter's pending values unless a hand-over is in flight.
    fn hand_over(&mut self, cx: &DriverContext) {
        if self.inflight.is_some() {
            return;
        }
        let (events, handed) = batch::take(&mut self.driver.meters);
        if events.is_empty() {
            return;
        }
        let cx = cx.clone();
        let task = tokio::spawn(async move { cx.emit_all(events).await });
        self.inflight = Some(InFlight { task, handed });
    }

    /// A refused hand-over's values go back under any newer ones.
    fn settle(&mut self, done: (Result<Vec<Receipt>, EmitError>, Handed)) {
        let (result, handed) = done;
        if let Err(e) = result {
            self.obs.emit_refused(handed.values.len(), &e);
            batch::restore(&mut self.driver.meters, handed);
        }
    }

    fn set_health(&mut self, cx: &DriverContext, i: usize, health: DeviceHealth) {
        let m = &mut self.driver.meters[i];
        if !matches!(health, DeviceHealth::Offline(_)) {
            cx.activity(&m.device);
        }
        let same =
            m.health.as_ref().map(std::mem::discriminant) == Some(std::mem::discriminant(&health));
        if !same {
            if matches!(health, DeviceHealth::Online) {
                self.obs.meter_online(&m.device);
            }
            cx.report_health(&m.device, health.clone());
            m.health = Some(health);
        }
    }

    fn link_down(&mut self, cx: &DriverContext, e: &std::io::Error) {
        self.obs.link_down(&self.link, e);
        let why = format!("bus link down: {e}");
        cx.report_health(&self.driver.device, DeviceHealth::Offline(why.clone()));
        for i in 0..self.driver.meters.len() {
            self.set_health(cx, i, DeviceHealth::Offline(why.clone()));
        }
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
    // the task only awaits the journal; a panic or abort there means it is gone
    let result = (&mut f.task).await.unwrap_or(Err(EmitError::Closed));
    let handed = inflight.take().map(|f| f.handed).unwrap_or_default();
    (result, handed)
}
