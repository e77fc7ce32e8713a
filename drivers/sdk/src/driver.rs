//! The driver contract (STYLE "The driver contract").
//!
//! Lifecycle: the gateway deserializes a device's driver table into a [`DriverConfig`],
//! calls the pure [`DriverConfig::validate`], then [`DriverConfig::build`] (effectful, may
//! open files), then [`Driver::run`] with a [`DriverContext`]. `run` owns its reconnects
//! and returns only at shutdown or on a fault no retry can fix; the supervisor rebuilds
//! and restarts it with back-off whenever it returns early or panics.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use tokio_util::sync::CancellationToken;

use crate::command::{CommandInbox, CommandRequest};
use crate::config::{ConfigIssue, FieldPath};
use crate::event::{DeviceId, Event, EventId, Location, NewEvent};

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A device's driver table from the config, typed.
pub trait DriverConfig: DeserializeOwned + Clone + Send + Sync + 'static {
    /// The `driver = "..."` name in the config: a snake_case protocol noun.
    const KIND: &'static str;
    /// The driver this config builds.
    type Driver: Driver;

    /// Pure: no I/O. Reports every problem, each with its field path under `at`.
    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue>;

    /// Builds the driver. Called again on every restart.
    ///
    /// # Errors
    /// [`BuildError`] when a resource the driver needs cannot be prepared.
    fn build(&self, cx: &BuildContext) -> Result<Self::Driver, BuildError>;

    /// Devices behind this driver instance besides the instance's own device (e.g. the
    /// UITDs a GB/T 26875 listener accepts), with their locations.
    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        Vec::new()
    }

    /// Doors (this instance's device or its sub-devices) on an escape route: while fire
    /// egress is active the gateway refuses to lock them (life safety: people must be able
    /// to leave). Vendor-neutral, so the rule lives in the gateway's command router.
    fn escape_routes(&self) -> Vec<DeviceId> {
        Vec::new()
    }

    /// The directory where this instance stores the files its events name (the `file` of
    /// `video.snapshot`), given the gateway's data directory; `None` when it stores none.
    /// The console serves a file only from the directory of the device whose journaled
    /// event names it.
    fn media_dir(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        let _ = data_dir;
        None
    }
}

/// What `build` may know about its surroundings.
#[derive(Debug, Clone)]
pub struct BuildContext {
    /// The device id of this driver instance.
    pub device: DeviceId,
    /// Its configured location.
    pub location: Location,
    /// The gateway's data directory, for drivers that keep state.
    pub data_dir: PathBuf,
}

/// A running driver.
pub trait Driver: Send + 'static {
    /// Runs until `cx.shutdown()` fires. Reconnects with back-off itself; returns Err only
    /// for faults no retry can fix.
    fn run(self, cx: DriverContext) -> impl Future<Output = Result<(), DriverError>> + Send;
}

/// Why `build` failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A resource could not be opened.
    #[error("cannot prepare {what}: {source}")]
    Io {
        /// What was being opened.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The config is valid in shape but unusable.
    #[error("{0}")]
    Invalid(String),
}

/// Why a driver's run loop ended.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// I/O that the driver decided not to retry itself.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The journal refused events for good (shutting down).
    #[error(transparent)]
    Emit(#[from] EmitError),
    /// Anything else no retry inside the driver can fix.
    #[error("{0}")]
    Fatal(String),
}

/// Why events could not be made durable. The driver must not acknowledge the device.
#[derive(Debug, Clone, thiserror::Error)]
pub enum EmitError {
    /// The journal is shutting down.
    #[error("journal is closed")]
    Closed,
    /// The journal cannot write now (disk full, read-only, I/O error); it keeps retrying
    /// life-safety events, others are refused while the backlog in memory is full.
    #[error("journal cannot store events: {0}")]
    Storage(String),
}

/// Proof that an event is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The event's id (the existing one for a duplicate).
    pub id: EventId,
    /// Its journal position.
    pub seq: u64,
    /// The journal already held an event with the same (device, origin_ref).
    pub duplicate: bool,
}

/// Where stamped events go: the journal in the gateway, memory in the test kit.
pub trait EventSink: Send + Sync + 'static {
    /// Commits `events` in one transaction; resolves once durable (fsync'd), with one
    /// receipt per event in order.
    fn append(&self, events: Vec<Event>) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>>;
}

/// A device's health as its driver sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum DeviceHealth {
    /// Talking normally.
    Online,
    /// Reachable but with errors (exceptions, bad frames).
    Degraded(String),
    /// Not reachable.
    Offline(String),
}

/// Where health reports go.
pub trait HealthSink: Send + Sync + 'static {
    /// The driver's view of a device changed.
    fn report(&self, device: &DeviceId, health: DeviceHealth);
    /// The device said something (resets the silence timer).
    fn activity(&self, device: &DeviceId);
}

/// Everything a running driver may use: emit events, receive commands, report health,
/// and learn of shutdown.
#[derive(Clone)]
pub struct DriverContext {
    device: DeviceId,
    driver: &'static str,
    location: Location,
    sink: Arc<dyn EventSink>,
    health: Arc<dyn HealthSink>,
    commands: Arc<CommandInbox>,
    shutdown: CancellationToken,
}

/// The parts a host (gateway or test kit) assembles a [`DriverContext`] from.
pub struct ContextParts {
    /// The instance's device id.
    pub device: DeviceId,
    /// The driver kind.
    pub driver: &'static str,
    /// The instance's location.
    pub location: Location,
    /// The journal.
    pub sink: Arc<dyn EventSink>,
    /// Health reports.
    pub health: Arc<dyn HealthSink>,
    /// Commands for this instance's devices; shared across restarts.
    pub commands: Arc<CommandInbox>,
    /// Fires at shutdown.
    pub shutdown: CancellationToken,
}

impl DriverContext {
    /// Assembles a context.
    pub fn new(p: ContextParts) -> DriverContext {
        DriverContext {
            device: p.device,
            driver: p.driver,
            location: p.location,
            sink: p.sink,
            health: p.health,
            commands: p.commands,
            shutdown: p.shutdown,
        }
    }

    /// This instance's device id.
    pub fn device(&self) -> &DeviceId {
        &self.device
    }

    /// This instance's configured location.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Journals one event; resolves once it is durable. Acknowledge the device only after.
    ///
    /// # Errors
    /// [`EmitError`] when the event is not durable.
    pub async fn emit(&self, event: NewEvent) -> Result<Receipt, EmitError> {
        let mut r = self.emit_all(vec![event]).await?;
        r.pop().ok_or(EmitError::Closed)
    }

    /// Journals several events (e.g. from one frame) in one transaction: all or none.
    ///
    /// # Errors
    /// [`EmitError`] when the events are not durable.
    pub async fn emit_all(&self, events: Vec<NewEvent>) -> Result<Vec<Receipt>, EmitError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let stamped: Vec<Event> = events
            .into_iter()
            .map(|e| Event::stamp(e, &self.device, self.driver, &self.location))
            .collect();
        for e in &stamped {
            self.health.activity(&e.source.device);
        }
        self.sink.append(stamped).await
    }

    /// Starts journaling without waiting, for producers that pipeline many events; the
    /// returned future resolves once durable.
    pub fn emit_pipelined(
        &self,
        event: NewEvent,
    ) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>> {
        let e = Event::stamp(event, &self.device, self.driver, &self.location);
        self.health.activity(&e.source.device);
        self.sink.append(vec![e])
    }

    /// The next command for one of this instance's devices; `None` at shutdown.
    pub async fn next_command(&self) -> Option<CommandRequest> {
        tokio::select! {
            c = self.commands.recv() => c,
            () = self.shutdown.cancelled() => None,
        }
    }

    /// Reports a device's health; the gateway turns changes into `device.online` /
    /// `device.offline` events.
    pub fn report_health(&self, device: &DeviceId, health: DeviceHealth) {
        self.health.report(device, health);
    }

    /// Notes that a device spoke (resets its silence timer) without emitting an event.
    pub fn activity(&self, device: &DeviceId) {
        self.health.activity(device);
    }

    /// The shutdown signal.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// Sleeps for `d` unless shutdown comes first; returns false on shutdown.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = self.shutdown.cancelled() => false,
        }
    }
}

/// Exponential back-off with full jitter, for reconnect loops.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, doubles per failure up to `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The delay before the next attempt: uniform in [ceiling/2, ceiling].
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(16))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        let jitter = cheap_random() % (nanos / 2 + 1);
        Duration::from_nanos(nanos / 2 + jitter)
    }

    /// Call after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

fn cheap_random() -> u64 {
    // UUIDv4 draws from the OS RNG; jitter needs no more than that.
    let b = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_its_ceiling_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
