//! Interop: the driver against the TCP meter server of the `dlt645` package from PyPI
//! (an independent DL/T 645-2007 implementation; `tests/dlt645_meter.py` sets it up).
//!
//! Needs a python with the `dlt645` release `scripts/test` pins: `$CAMPUSGW_PYTHON` (set by
//! `scripts/test`), else the project's `.venv/bin/python`, else `python3`. Without it the
//! test fails with a message saying so; it does not pass silently.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use campusgw_dlt645::Dlt645Config;
use campusgw_dlt645::driver::BusCounters;
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{BuildContext, DeviceHealth, DeviceId, Driver, DriverConfig, Event, Location};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const T: Duration = Duration::from_secs(20);

fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CAMPUSGW_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.venv/bin/python"
    ));
    if venv.exists() {
        return venv;
    }
    PathBuf::from("python3")
}

/// The meter server child (killed when dropped) and its port.
async fn start_meter() -> (Child, u16) {
    let python = python();
    let probe = Command::new(&python)
        .args([
            "-c",
            "import importlib.metadata as m; print(m.version('dlt645'))",
        ])
        .output()
        .await;
    match probe {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "the dlt645 package is not installed for {} (run `scripts/test`, which installs it into .venv/): {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => panic!(
            "{} could not be run for the dlt645 interop test: {e}",
            python.display()
        ),
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/dlt645_meter.py");
    let mut child = Command::new(&python)
        .arg(script)
        .current_dir(std::env::temp_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dlt645_meter.py");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(T, lines.next_line())
        .await
        .expect("the meter printed its port in time")
        .expect("read the meter's stdout")
        .expect("the meter exited before printing its port");
    let port = first
        .strip_prefix("PORT ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    (child, port)
}

type Task = tokio::task::JoinHandle<Result<(), campusgw_sdk::DriverError>>;

fn run(port: u16, address: &str, extra: &str) -> (TestHost, Arc<BusCounters>, Task) {
    let text = format!(
        r#"
address = "127.0.0.1:{port}"
poll_interval = "200ms"
request_timeout = "2s"
{extra}
[[meters]]
device = "py_meter"
address = "{address}"
points = ["energy_active_forward_total", "energy_active_reverse_total", "voltage_a", "current_a",
          "power_active_total", "power_reactive_total", "power_factor_total", "frequency"]
"#
    );
    let cfg: Dlt645Config = toml::from_str(&text).expect("config");
    assert_eq!(cfg.validate(&campusgw_sdk::FieldPath::root()), vec![]);
    let host = TestHost::new("py_bus", Dlt645Config::KIND);
    let driver = cfg
        .build(&BuildContext {
            device: DeviceId::new("py_bus").unwrap(),
            location: Location::default(),
            data_dir: std::env::temp_dir(),
        })
        .expect("driver");
    let counters = driver.counters();
    let task = tokio::spawn(driver.run(host.context()));
    (host, counters, task)
}

async fn first_reading(host: &TestHost) -> Event {
    host.wait_until(T, |evs| {
        evs.iter().any(|e| e.kind.as_str() == "sensor.readings")
    })
    .await;
    host.events()
        .into_iter()
        .find(|e| e.kind.as_str() == "sensor.readings")
        .unwrap()
}

fn assert_values(e: &Event) {
    assert_eq!(e.source.device.as_str(), "py_meter");
    let p = &e.payload["points"];
    assert_eq!(p["energy_active_forward_total"], 1234.56, "{p}");
    assert_eq!(p["energy_active_reverse_total"], 7.89, "{p}");
    assert_eq!(p["voltage_a"], 221.3, "{p}");
    assert_eq!(p["current_a"], 12.345, "{p}");
    assert_eq!(p["power_active_total"], 2.4681, "{p}");
    assert_eq!(p["power_reactive_total"], -0.4321, "{p}");
    assert_eq!(p["power_factor_total"], 0.987, "{p}");
    assert_eq!(p["frequency"], 49.98, "{p}");
    assert_eq!(e.payload["units"]["power_reactive_total"], "kvar");
}

#[tokio::test]
async fn every_point_of_an_independent_meter_reads_as_it_was_set() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_meter, port) = start_meter().await;
        // The package's `set_address("202312010042")` takes the digits in wire order
        // (20 23 12 01 00 42 on the line); DL/T 645 sends the low byte first, so the
        // name-plate address of that meter is 420001122320 (its own 13H answer agrees).
        let (host, counters, task) = run(port, "420001122320", "time_sync = \"300ms\"");
        let e = first_reading(&host).await;
        assert_values(&e);
        // time broadcasts (08H, no answer) do not disturb the meter: cycles after two of
        // them go on without a timeout or an error answer
        let get = |c: &std::sync::atomic::AtomicU64| BusCounters::get(c);
        let deadline = tokio::time::Instant::now() + T;
        while get(&counters.time_syncs) < 2 {
            assert!(tokio::time::Instant::now() < deadline, "no time syncs sent");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after = get(&counters.cycles);
        while get(&counters.cycles) < after + 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no cycles after the time syncs"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(get(&counters.timeouts), 0);
        assert_eq!(get(&counters.error_answers), 0);
        assert_eq!(get(&counters.bad_frames), 0);
        let meter: Vec<_> = host
            .health_reports()
            .into_iter()
            .filter(|(d, _)| d.as_str() == "py_meter")
            .collect();
        assert_eq!(
            meter,
            vec![(DeviceId::new("py_meter").unwrap(), DeviceHealth::Online)]
        );
        host.shutdown();
        task.await.unwrap().unwrap();
    })
    .await
    .expect("within 60 s");
}

#[tokio::test]
async fn an_independent_meter_at_the_wildcard_is_found_by_read_address() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let (_meter, port) = start_meter().await;
        let (host, _counters, task) = run(port, "AAAAAAAAAAAA", "");
        assert_values(&first_reading(&host).await);
        host.shutdown();
        task.await.unwrap().unwrap();
    })
    .await
    .expect("within 60 s");
}
