//! Measures poll cycles of 32 meters on one simulated 9600-baud bus (issue 23's
//! performance target: every meter's energy and power read within 10 s per cycle).
//!
//! `cargo run -p campusgw-dlt645 --example bus_rate` prints each cycle's duration and
//! exits non-zero if a cycle took 10 s or more or a meter was not read. A measurement,
//! not a test: the simulated line paces each byte at 11 bits / 9600 baud plus a 20 ms
//! meter turnaround, so the figure is the bus's, not the machine's.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::{Duration, Instant};

use campusgw_dlt645::Dlt645Config;
use campusgw_dlt645::driver::BusCounters;
use campusgw_dlt645::sim::BusSim;
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{BuildContext, DeviceId, Driver, DriverConfig, Location};

const METERS: usize = 32;
const CYCLES: u64 = 3;
const TARGET: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() {
    let sim = BusSim::start(9600).await.expect("simulator");
    let mut text = format!(
        "address = \"{}\"\nbaud = 9600\npoll_interval = \"1s\"\nrequest_timeout = \"500ms\"\n",
        sim.local_addr()
    );
    let mut addrs = Vec::new();
    for i in 0..METERS {
        let a = sim.add_meter(&format!("{:012}", 201_000 + i));
        addrs.push(a);
        text.push_str(&format!(
            "[[meters]]\ndevice = \"meter_{i:02}\"\naddress = \"{a}\"\npoints = [\"energy_active_forward_total\", \"power_active_total\"]\n"
        ));
    }
    let cfg: Dlt645Config = toml::from_str(&text).expect("config");
    let host = TestHost::new("bus", Dlt645Config::KIND);
    let driver = cfg
        .build(&BuildContext {
            device: DeviceId::new("bus").unwrap(),
            location: Location::default(),
            data_dir: std::env::temp_dir(),
        })
        .expect("driver");
    let counters = driver.counters();
    let task = tokio::spawn(driver.run(host.context()));
    let started = Instant::now();
    let mut seen = 0;
    let mut worst = Duration::ZERO;
    while seen < CYCLES {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let c = BusCounters::get(&counters.cycles);
        if c > seen {
            seen = c;
            let took = Duration::from_millis(BusCounters::get(&counters.last_cycle_ms));
            worst = worst.max(took);
            println!("cycle {c}: {METERS} meters x 2 points in {took:?}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
    }
    host.shutdown();
    let _ = task.await;
    let unread: Vec<_> = addrs
        .iter()
        .filter(|a| sim.answered(**a) < 2 * CYCLES)
        .collect();
    let events = host.events().len();
    println!(
        "worst cycle {worst:?} (target < {TARGET:?}); {events} sensor.readings events; meters not read every cycle: {}",
        unread.len()
    );
    if worst >= TARGET || !unread.is_empty() {
        std::process::exit(1);
    }
}
