//! Shared helpers for the driver tests.
#![allow(dead_code, missing_docs)]

use std::future::Future;
use std::time::Duration;

use campusgw_modbus::sim::Simulator;
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Command, CommandKind, DeviceHealth, DeviceId, Driver, DriverConfig, DriverError,
    Event, Location, Target,
};
use tokio::task::JoinHandle;

/// The deadline for any single wait.
pub const T: Duration = Duration::from_secs(10);

/// Runs a test body under an overall deadline.
pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("test finished within 60 s")
}

/// Builds the driver for device `dev` and runs it on a test host.
pub fn spawn_driver<C: DriverConfig>(cfg: &C) -> (TestHost, JoinHandle<Result<(), DriverError>>) {
    let host = TestHost::new("dev", C::KIND);
    let cx = BuildContext {
        device: DeviceId::new("dev").expect("id"),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&cx).expect("driver builds");
    let handle = tokio::spawn(driver.run(host.context()));
    (host, handle)
}

pub fn target() -> Target {
    Target::Device(DeviceId::new("dev").expect("id"))
}

pub fn relay_set(point: &str, on: bool) -> Command {
    Command::new(
        CommandKind::RELAY_SET,
        target(),
        serde_json::json!({"point": point, "on": on}),
        "test",
    )
}

pub fn register_write(point: &str, value: f64) -> Command {
    Command::new(
        CommandKind::REGISTER_WRITE,
        target(),
        serde_json::json!({"point": point, "value": value}),
        "test",
    )
}

pub fn events_of(host: &TestHost, kind: &str) -> Vec<Event> {
    host.events()
        .into_iter()
        .filter(|e| e.kind.as_str() == kind)
        .collect()
}

/// Waits until the simulator served `n` more requests than now (so `n` / blocks polls).
pub async fn wait_polls(sim: &Simulator, n: u64) {
    let target = sim.requests() + n * 3; // the test map has three polled blocks
    let deadline = tokio::time::Instant::now() + T;
    while sim.requests() < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "simulator saw no polls"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits for a health report matching `pred` at index `from` or later; returns the index
/// just after it.
pub async fn wait_health_after(
    host: &TestHost,
    from: usize,
    pred: impl Fn(&DeviceHealth) -> bool,
) -> usize {
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let reports = host.health_reports();
        if let Some(i) = reports.iter().skip(from).position(|(_, h)| pred(h)) {
            return from + i + 1;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no matching health report after #{from}: {reports:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The readings of one point, one per `sensor.readings` batch that carries it, each as
/// an event whose payload is `{point, value, unit, raw}` (`raw` is the value when the batch
/// gives none: the point has no scale or offset).
pub fn readings_of(host: &TestHost, point: &str) -> Vec<Event> {
    host.events()
        .into_iter()
        .filter_map(|e| reading_in(e, point))
        .collect()
}

fn reading_in(mut e: Event, point: &str) -> Option<Event> {
    if e.kind.as_str() != "sensor.readings" {
        return None;
    }
    let value = e.payload["points"].get(point)?.clone();
    let unit = e.payload["units"].get(point).cloned();
    let raw = e.payload["raw"]
        .get(point)
        .cloned()
        .unwrap_or(value.clone());
    e.payload = serde_json::json!({"point": point, "value": value, "unit": unit, "raw": raw});
    Some(e)
}

/// Waits until point `point` has `n` readings and returns the last.
pub async fn wait_for_point(host: &TestHost, point: &str, n: usize) -> Event {
    host.wait_until(T, |evs| {
        evs.iter()
            .filter(|e| {
                e.kind.as_str() == "sensor.readings" && e.payload["points"].get(point).is_some()
            })
            .count()
            >= n
    })
    .await;
    readings_of(host, point).pop().expect("present after wait")
}
