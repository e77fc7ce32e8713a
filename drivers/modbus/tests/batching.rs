//! Readings in batches, coalescing behind a slow or refusing journal, alarms that never
//! wait for telemetry, and overrun reports. The journal here is a gate the test opens and
//! closes; every wait is on a condition (events, requests, health) under a deadline.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_modbus::ModbusTcpConfig;
use campusgw_modbus::sim::Simulator;
use campusgw_sdk::driver::{BoxFuture, ContextParts, EmitError, EventSink, HealthSink, Receipt};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, Class, DeviceHealth, DeviceId, Driver, DriverConfig, DriverContext, Event,
    Location,
};
use common::{T, within};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const REGISTERS: u16 = 200;

/// A journal whose appends of one class wait while the gate of that class is closed, or
/// fail while it refuses.
#[derive(Clone)]
struct GatedJournal {
    events: Arc<Mutex<Vec<Event>>>,
    appends: Arc<Mutex<Vec<Class>>>,
    telemetry_open: watch::Sender<bool>,
    edges_delay: Arc<Mutex<Option<Duration>>>,
    refuse: Arc<Mutex<bool>>,
    health: Arc<Mutex<Vec<DeviceHealth>>>,
}

impl GatedJournal {
    fn new() -> GatedJournal {
        GatedJournal {
            events: Arc::default(),
            appends: Arc::default(),
            telemetry_open: watch::channel(true).0,
            edges_delay: Arc::default(),
            refuse: Arc::default(),
            health: Arc::default(),
        }
    }

    fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    fn of_kind(&self, kind: &str) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind.as_str() == kind)
            .collect()
    }

    fn appends(&self) -> Vec<Class> {
        self.appends.lock().unwrap().clone()
    }

    async fn wait(&self, what: &str, pred: impl Fn(&GatedJournal) -> bool) {
        let deadline = tokio::time::Instant::now() + T;
        while !pred(self) {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn context(&self, shutdown: &CancellationToken) -> DriverContext {
        DriverContext::new(ContextParts {
            device: DeviceId::new("dev").unwrap(),
            driver: "modbus_tcp",
            location: Location::default(),
            sink: Arc::new(self.clone()),
            health: Arc::new(self.clone()),
            commands: Arc::new(campusgw_sdk::CommandInbox::new()),
            shutdown: shutdown.clone(),
        })
    }
}

impl EventSink for GatedJournal {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>> {
        let j = self.clone();
        Box::pin(async move {
            let class = events.iter().map(|e| e.class).min().unwrap();
            j.appends.lock().unwrap().push(class);
            if class == Class::Telemetry {
                let mut open = j.telemetry_open.subscribe();
                open.wait_for(|o| *o).await.unwrap();
            } else {
                let delay = *j.edges_delay.lock().unwrap();
                if let Some(d) = delay {
                    // A slow disk under the edge transaction, to make the cycle late.
                    tokio::time::sleep(d).await;
                }
            }
            if *j.refuse.lock().unwrap() {
                return Err(EmitError::Storage("refusing for the test".into()));
            }
            let mut log = j.events.lock().unwrap();
            let mut receipts = Vec::new();
            for mut e in events {
                e.seq = log.len() as u64 + 1;
                receipts.push(Receipt {
                    id: e.id,
                    seq: e.seq,
                    duplicate: false,
                });
                log.push(e);
            }
            Ok(receipts)
        })
    }
}

impl HealthSink for GatedJournal {
    fn report(&self, _device: &DeviceId, health: DeviceHealth) {
        self.health.lock().unwrap().push(health);
    }
    fn activity(&self, _device: &DeviceId) {}
}

/// 200 holding registers r0..r199 (u16) and one fire-alarm input, polled every 20 ms.
fn config(sim: &Simulator) -> ModbusTcpConfig {
    let mut s = format!(
        "address = \"{}\"\npoll_interval = \"20ms\"\nrequest_timeout = \"2s\"\n",
        sim.local_addr()
    );
    s.push_str("[[points]]\nname = \"alarm\"\ntable = \"discrete_input\"\naddress = 3\non_kind = \"fire.alarm\"\noff_kind = \"fire.reset\"\nclass = \"life_safety\"\n");
    s.push_str("[[points]]\nname = \"temp\"\ntable = \"input_register\"\naddress = 0\nscale = 0.1\nunit = \"°C\"\n");
    for a in 0..REGISTERS {
        s.push_str(&format!(
            "[[points]]\nname = \"r{a}\"\ntable = \"holding_register\"\naddress = {a}\n"
        ));
    }
    toml::from_str(&s).expect("test config parses")
}

fn start(sim: &Simulator, journal: &GatedJournal) -> CancellationToken {
    let shutdown = CancellationToken::new();
    let cx = BuildContext {
        device: DeviceId::new("dev").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = config(sim).build(&cx).expect("driver builds");
    tokio::spawn(driver.run(journal.context(&shutdown)));
    shutdown
}

/// Waits until the simulator answered `n` more poll cycles (4 blocks each) than now.
async fn cycles(sim: &Simulator, n: u64) {
    let target = sim.requests() + 4 * n;
    let deadline = tokio::time::Instant::now() + T;
    while sim.requests() < target {
        assert!(tokio::time::Instant::now() < deadline, "no polls");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn one_poll_cycle_of_every_register_is_one_sensor_readings_event() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        for a in 0..REGISTERS {
            sim.set_holding_register(a, 1000 + a);
        }
        sim.set_input_register(0, 652);
        let j = GatedJournal::new();
        let stop = start(&sim, &j);
        j.wait("first batch", |j| !j.of_kind("sensor.readings").is_empty())
            .await;
        let first = &j.of_kind("sensor.readings")[0];
        assert_eq!(first.class, Class::Telemetry);
        let points = first.payload["points"].as_object().unwrap();
        assert_eq!(
            points.len(),
            usize::from(REGISTERS) + 1,
            "every point, once"
        );
        assert_eq!(first.payload["points"]["r17"], 1017);
        assert_eq!(first.payload["points"]["temp"], 65.2);
        assert_eq!(first.payload["units"], serde_json::json!({"temp": "°C"}));
        assert_eq!(first.payload["raw"], serde_json::json!({"temp": 652}));
        assert!(
            first.payload.get("coalesced").is_none(),
            "nothing was coalesced"
        );
        assert!(
            j.of_kind("sensor.reading").is_empty(),
            "no per-point events"
        );

        // Unchanged registers are not sent again; one that moved is sent alone.
        sim.set_holding_register(5, 7);
        j.wait("second batch", |j| j.of_kind("sensor.readings").len() >= 2)
            .await;
        let second = &j.of_kind("sensor.readings")[1];
        assert_eq!(second.payload["points"], serde_json::json!({"r5": 7}));
        cycles(&sim, 3).await;
        assert_eq!(j.of_kind("sensor.readings").len(), 2);
        stop.cancel();
    })
    .await;
}

#[tokio::test]
async fn while_a_batch_is_stuck_new_values_coalesce_and_the_newest_wins() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let j = GatedJournal::new();
        j.telemetry_open.send_replace(false);
        let stop = start(&sim, &j);
        j.wait("first batch handed over", |j| {
            j.appends().contains(&Class::Telemetry)
        })
        .await;
        for v in 1..=20u16 {
            sim.set_holding_register(9, v);
            cycles(&sim, 2).await;
        }
        assert_eq!(
            j.appends()
                .iter()
                .filter(|c| **c == Class::Telemetry)
                .count(),
            1,
            "no second batch is queued while the first is pending"
        );
        j.telemetry_open.send_replace(true);
        j.wait("the coalesced batch", |j| {
            j.of_kind("sensor.readings").len() >= 2
        })
        .await;
        let batches = j.of_kind("sensor.readings");
        assert_eq!(batches[1].payload["points"], serde_json::json!({"r9": 20}));
        let coalesced = batches[1].payload["coalesced"].as_u64().unwrap();
        assert!(
            coalesced >= 10,
            "20 values, one batch: most were coalesced ({coalesced})"
        );
        stop.cancel();
    })
    .await;
}

#[tokio::test]
async fn an_alarm_is_journaled_while_telemetry_is_stuck() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let j = GatedJournal::new();
        j.telemetry_open.send_replace(false);
        let stop = start(&sim, &j);
        j.wait("a batch is stuck", |j| {
            j.appends().contains(&Class::Telemetry)
        })
        .await;
        sim.set_discrete_input(3, true);
        j.wait("the alarm", |j| !j.of_kind("fire.alarm").is_empty())
            .await;
        sim.set_discrete_input(3, false);
        j.wait("the reset", |j| !j.of_kind("fire.reset").is_empty())
            .await;
        assert!(
            j.of_kind("sensor.readings").is_empty(),
            "telemetry is still stuck behind the gate"
        );
        assert_eq!(j.of_kind("fire.alarm")[0].payload["value"], true);
        stop.cancel();
    })
    .await;
}

#[tokio::test]
async fn a_refused_batch_is_sent_again_with_the_newest_values() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        sim.set_holding_register(3, 1);
        let j = GatedJournal::new();
        *j.refuse.lock().unwrap() = true;
        let stop = start(&sim, &j);
        j.wait("refusals", |j| j.appends().len() >= 3).await;
        sim.set_holding_register(3, 2);
        cycles(&sim, 3).await;
        *j.refuse.lock().unwrap() = false;
        j.wait("a batch", |j| !j.of_kind("sensor.readings").is_empty())
            .await;
        let first = &j.of_kind("sensor.readings")[0];
        let points = first.payload["points"].as_object().unwrap();
        assert_eq!(
            points.len(),
            usize::from(REGISTERS) + 1,
            "every refused value came back"
        );
        assert_eq!(first.payload["points"]["r3"], 2, "the newest value won");
        assert_eq!(
            first.payload["coalesced"], 1,
            "r3's first value was replaced"
        );
        stop.cancel();
    })
    .await;
}

#[tokio::test]
async fn a_cycle_later_than_its_interval_is_reported_degraded_and_recovers() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        let j = GatedJournal::new();
        let stop = start(&sim, &j);
        j.wait("online", |j| {
            j.health.lock().unwrap().contains(&DeviceHealth::Online)
        })
        .await;
        // The alarm's transaction takes 10 intervals: that cycle cannot keep the rate.
        *j.edges_delay.lock().unwrap() = Some(Duration::from_millis(200));
        sim.set_discrete_input(3, true);
        j.wait("degraded", |j| {
            j.health.lock().unwrap().iter().any(|h| {
                matches!(h, DeviceHealth::Degraded(r) if r.contains("cannot poll at the configured rate"))
            })
        })
        .await;
        *j.edges_delay.lock().unwrap() = None;
        j.wait("online again", |j| {
            j.health.lock().unwrap().last() == Some(&DeviceHealth::Online)
        })
        .await;
        stop.cancel();
    })
    .await;
}

/// The test kit's journal still works with batches (the common helpers unpack them).
#[tokio::test]
async fn the_test_kit_sees_a_point_through_its_batch() {
    within(async {
        let sim = Simulator::start().await.expect("sim");
        sim.set_holding_register(4, 44);
        let host = TestHost::new("dev", "modbus_tcp");
        let cx = BuildContext {
            device: DeviceId::new("dev").unwrap(),
            location: Location::default(),
            data_dir: std::env::temp_dir(),
        };
        let driver = config(&sim).build(&cx).expect("driver builds");
        tokio::spawn(driver.run(host.context()));
        let r = common::wait_for_point(&host, "r4", 1).await;
        assert_eq!(r.payload["value"], 44);
        host.shutdown();
    })
    .await;
}
