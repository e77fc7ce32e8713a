//! An in-memory host for driver tests: no gateway, no SQLite.
//!
//! ```no_run
//! # async fn t() {
//! use campusgw_sdk::testkit::TestHost;
//! let host = TestHost::new("panel_a", "modbus_tcp");
//! let cx = host.context();
//! // run the driver with `cx`, then:
//! let ev = host.wait_for_kind("fire.alarm", std::time::Duration::from_secs(5)).await;
//! # }
//! ```

use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::command::{Command, CommandInbox, CommandRequest, CommandResult};
use crate::driver::{
    BoxFuture, ContextParts, DeviceHealth, DriverContext, EmitError, EventSink, HealthSink, Receipt,
};
use crate::event::{DeviceId, Event, Location};

#[derive(Default)]
struct Shared {
    events: StdMutex<Vec<Event>>,
    health: StdMutex<Vec<(DeviceId, DeviceHealth)>>,
    activity: StdMutex<Vec<DeviceId>>,
    fail: StdMutex<Option<String>>,
    changed: Notify,
}

/// An in-memory journal, health log and command source for one driver instance.
#[derive(Clone)]
pub struct TestHost {
    device: DeviceId,
    driver: &'static str,
    shared: Arc<Shared>,
    commands: Arc<CommandInbox>,
    shutdown: CancellationToken,
}

struct MemSink(Arc<Shared>);

impl EventSink for MemSink {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>> {
        let shared = self.0.clone();
        Box::pin(async move {
            if let Some(why) = shared.fail.lock().expect("lock").clone() {
                return Err(EmitError::Storage(why));
            }
            let mut log = shared.events.lock().expect("lock");
            let mut receipts = Vec::new();
            for mut e in events {
                let dup = e.origin_ref.as_ref().and_then(|r| {
                    log.iter().find(|o| {
                        o.source.device == e.source.device && o.origin_ref.as_ref() == Some(r)
                    })
                });
                if let Some(d) = dup {
                    receipts.push(Receipt {
                        id: d.id,
                        seq: d.seq,
                        duplicate: true,
                    });
                    continue;
                }
                e.seq = log.len() as u64 + 1;
                receipts.push(Receipt {
                    id: e.id,
                    seq: e.seq,
                    duplicate: false,
                });
                log.push(e);
            }
            drop(log);
            shared.changed.notify_waiters();
            Ok(receipts)
        })
    }
}

struct MemHealth(Arc<Shared>);

impl HealthSink for MemHealth {
    fn report(&self, device: &DeviceId, health: DeviceHealth) {
        self.0
            .health
            .lock()
            .expect("lock")
            .push((device.clone(), health));
        self.0.changed.notify_waiters();
    }
    fn activity(&self, device: &DeviceId) {
        self.0.activity.lock().expect("lock").push(device.clone());
    }
}

impl TestHost {
    /// A host for device `device` driven by `driver`.
    ///
    /// # Panics
    /// If `device` is not a valid device id.
    pub fn new(device: &str, driver: &'static str) -> TestHost {
        TestHost {
            device: DeviceId::new(device).expect("valid test device id"),
            driver,
            shared: Arc::default(),
            commands: Arc::new(CommandInbox::new()),
            shutdown: CancellationToken::new(),
        }
    }

    /// A context for the driver under test.
    pub fn context(&self) -> DriverContext {
        DriverContext::new(ContextParts {
            device: self.device.clone(),
            driver: self.driver,
            location: Location::default(),
            sink: Arc::new(MemSink(self.shared.clone())),
            health: Arc::new(MemHealth(self.shared.clone())),
            commands: self.commands.clone(),
            shutdown: self.shutdown.clone(),
        })
    }

    /// Every event journaled so far.
    pub fn events(&self) -> Vec<Event> {
        self.shared.events.lock().expect("lock").clone()
    }

    /// Every health report so far.
    pub fn health_reports(&self) -> Vec<(DeviceId, DeviceHealth)> {
        self.shared.health.lock().expect("lock").clone()
    }

    /// Makes the journal refuse writes (`Some(reason)`) or accept them again (`None`).
    pub fn fail_writes(&self, why: Option<&str>) {
        *self.shared.fail.lock().expect("lock") = why.map(str::to_owned);
    }

    /// Fires shutdown.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Sends a command to the driver and waits for its result.
    ///
    /// # Panics
    /// If the driver does not answer within `timeout`.
    pub async fn command(
        &self,
        command: Command,
        device: &str,
        timeout: Duration,
    ) -> CommandResult {
        let (req, rx): (CommandRequest, oneshot::Receiver<CommandResult>) =
            CommandRequest::new(command, DeviceId::new(device).expect("valid device id"));
        self.commands
            .send(req)
            .await
            .expect("driver command inbox open");
        tokio::time::timeout(timeout, rx)
            .await
            .expect("driver answered the command in time")
            .expect("driver answered rather than dropping the command")
    }

    /// Waits until `pred` holds over the journaled events.
    ///
    /// # Panics
    /// If it does not hold within `timeout`.
    pub async fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Event]) -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if pred(&self.events()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "condition not met within {timeout:?}; events: {:#?}",
                    self.events()
                        .iter()
                        .map(|e| e.kind.as_str().to_owned())
                        .collect::<Vec<_>>()
                );
            }
        }
    }

    /// Waits for the first event of `kind` and returns it.
    ///
    /// # Panics
    /// If none arrives within `timeout`.
    pub async fn wait_for_kind(&self, kind: &str, timeout: Duration) -> Event {
        self.wait_until(timeout, |evs| evs.iter().any(|e| e.kind.as_str() == kind))
            .await;
        self.events()
            .into_iter()
            .find(|e| e.kind.as_str() == kind)
            .expect("present after wait")
    }

    /// Waits until the health log holds a report matching `pred`.
    ///
    /// # Panics
    /// If none arrives within `timeout`.
    pub async fn wait_for_health(
        &self,
        timeout: Duration,
        pred: impl Fn(&DeviceHealth) -> bool,
    ) -> DeviceHealth {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            if let Some((_, h)) = self
                .health_reports()
                .into_iter()
                .rev()
                .find(|(_, h)| pred(h))
            {
                return h;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "no matching health report within {timeout:?}: {:?}",
                    self.health_reports()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Class, NewEvent, kinds};

    #[tokio::test]
    async fn the_memory_journal_assigns_seqs_and_drops_duplicate_origin_refs() {
        let host = TestHost::new("dev", "test");
        let cx = host.context();
        let a = cx
            .emit(NewEvent::new(kinds::FIRE_ALARM, Class::LifeSafety).origin_ref("s1"))
            .await
            .unwrap();
        let b = cx
            .emit(NewEvent::new(kinds::FIRE_ALARM, Class::LifeSafety).origin_ref("s1"))
            .await
            .unwrap();
        assert_eq!((a.seq, a.duplicate), (1, false));
        assert_eq!((b.seq, b.duplicate, b.id), (1, true, a.id));
        host.fail_writes(Some("disk full"));
        assert!(
            cx.emit(NewEvent::new(kinds::FIRE_FAULT, Class::LifeSafety))
                .await
                .is_err()
        );
        assert_eq!(host.events().len(), 1);
    }
}
