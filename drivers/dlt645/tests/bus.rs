//! The driver against the simulated bus on 127.0.0.1:0. Every wait is on a condition
//! (cycles counted by the driver, events, health) under a deadline, never a bare sleep
//! for synchronisation.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use campusgw_dlt645::driver::BusCounters;
use campusgw_dlt645::sim::{Behaviour, BusSim};
use campusgw_dlt645::{Address, Dlt645Config};
use campusgw_sdk::testkit::TestHost;
use campusgw_sdk::{
    BuildContext, DeviceHealth, DeviceId, Driver, DriverConfig, DriverError, Event, Location,
};
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(20);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(90), f)
        .await
        .expect("test finished within 90 s")
}

fn config(sim: &BusSim, meters: &[(String, Address)], extra: &str) -> Dlt645Config {
    let mut text = format!(
        "address = \"{}\"\nbaud = 38400\npoll_interval = \"100ms\"\nrequest_timeout = \"300ms\"\n{extra}\n",
        sim.local_addr()
    );
    for (device, a) in meters {
        text.push_str(&format!(
            "[[meters]]\ndevice = \"{device}\"\naddress = \"{a}\"\n"
        ));
    }
    let c: Dlt645Config = toml::from_str(&text).expect("test config parses");
    assert_eq!(c.validate(&campusgw_sdk::FieldPath::root()), vec![]);
    c
}

fn spawn(
    cfg: &Dlt645Config,
) -> (
    TestHost,
    Arc<BusCounters>,
    JoinHandle<Result<(), DriverError>>,
) {
    let host = TestHost::new("bus", Dlt645Config::KIND);
    let cx = BuildContext {
        device: DeviceId::new("bus").unwrap(),
        location: Location::default(),
        data_dir: std::env::temp_dir(),
    };
    let driver = cfg.build(&cx).expect("driver builds");
    let counters = driver.counters();
    let handle = tokio::spawn(driver.run(host.context()));
    (host, counters, handle)
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    BusCounters::get(c)
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn meters(sim: &BusSim, n: usize) -> Vec<(String, Address)> {
    (1..=n)
        .map(|i| {
            (
                format!("meter_{i}"),
                sim.add_meter(&format!("{:012}", 100 + i)),
            )
        })
        .collect()
}

fn readings_of<'a>(events: &'a [Event], device: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.kind.as_str() == "sensor.readings" && e.source.device.as_str() == device)
        .collect()
}

fn last_health(host: &TestHost, device: &str) -> Option<DeviceHealth> {
    host.health_reports()
        .into_iter()
        .rev()
        .find(|(d, _)| d.as_str() == device)
        .map(|(_, h)| h)
}

#[tokio::test]
async fn eight_meters_one_never_answers_and_the_others_are_read_every_cycle() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let list = meters(&sim, 8);
        let silent = list[4].1;
        sim.set_behaviour(silent, Behaviour::Silent);
        let (host, counters, driver) = spawn(&config(&sim, &list, ""));

        wait_for("two cycles", || get(&counters.cycles) >= 2).await;
        let c0 = get(&counters.cycles);
        let before: Vec<u64> = list.iter().map(|(_, a)| sim.answered(*a)).collect();
        wait_for("five more cycles", || get(&counters.cycles) >= c0 + 5).await;
        let cycles = get(&counters.cycles) - c0;
        for (i, (device, a)) in list.iter().enumerate() {
            let answered = sim.answered(*a) - before[i];
            if *a == silent {
                assert_eq!(sim.answered(*a), 0);
                // one request per cycle: its second point is not tried after a timeout
                assert!(sim.requests_to(*a) <= get(&counters.cycles) + 1, "{device}");
                continue;
            }
            // energy and power each cycle
            assert!(
                answered >= 2 * (cycles - 1),
                "{device}: {answered} answers in {cycles} cycles"
            );
        }
        let events = host.events();
        for (device, a) in &list {
            let readings = readings_of(&events, device);
            if *a == silent {
                assert!(readings.is_empty());
                continue;
            }
            assert!(readings.len() >= 4, "{device}: {} batches", readings.len());
            let first = readings[0];
            assert_eq!(first.class, campusgw_sdk::Class::Telemetry);
            assert_eq!(first.payload["points"]["power_active_total"], 1.1275);
            assert_eq!(first.payload["units"]["energy_active_forward_total"], "kWh");
            assert_eq!(first.payload["units"]["power_active_total"], "kW");
            // energy moves every read in the simulator: each batch carries a new value
            let energies: Vec<f64> = readings
                .iter()
                .map(|e| {
                    e.payload["points"]["energy_active_forward_total"]
                        .as_f64()
                        .unwrap()
                })
                .collect();
            assert!(
                energies.windows(2).all(|w| w[1] > w[0]),
                "{device}: {energies:?}"
            );
            assert_eq!(last_health(&host, device), Some(DeviceHealth::Online));
        }
        assert!(matches!(
            last_health(&host, "meter_5"),
            Some(DeviceHealth::Offline(_))
        ));
        assert!(get(&counters.timeouts) >= cycles);
        assert_eq!(sim.connections(), 1, "a silent meter never costs the bus");
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn bad_frames_echo_and_wrong_addresses_are_counted_and_the_bus_is_kept() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let list = meters(&sim, 7);
        sim.set_echo(true);
        sim.set_behaviour(list[1].1, Behaviour::BadChecksum);
        sim.set_behaviour(list[2].1, Behaviour::WrongAddress);
        sim.set_behaviour(list[3].1, Behaviour::HalfFrame);
        sim.set_behaviour(list[4].1, Behaviour::Garbage);
        sim.set_behaviour(list[5].1, Behaviour::ErrorAnswer(0x02));
        sim.set_behaviour(list[6].1, Behaviour::Slow(Duration::from_millis(100)));
        let (host, counters, driver) = spawn(&config(&sim, &list, ""));

        wait_for("three cycles", || get(&counters.cycles) >= 3).await;
        assert!(get(&counters.echoes) > 0, "echo counted");
        assert!(
            get(&counters.bad_frames) > 0,
            "checksum, half frame, garbage counted"
        );
        assert!(get(&counters.wrong_address) > 0);
        assert!(get(&counters.error_answers) > 0);
        let events = host.events();
        for good in ["meter_1", "meter_7"] {
            assert!(
                !readings_of(&events, good).is_empty(),
                "{good} read despite the others"
            );
            assert_eq!(last_health(&host, good), Some(DeviceHealth::Online));
        }
        for bad in ["meter_2", "meter_3", "meter_4", "meter_5"] {
            assert!(
                readings_of(&events, bad).is_empty(),
                "{bad} produced no reading"
            );
            assert!(
                matches!(last_health(&host, bad), Some(DeviceHealth::Offline(_))),
                "{bad}"
            );
        }
        let Some(DeviceHealth::Degraded(why)) = last_health(&host, "meter_6") else {
            panic!("an error answer degrades the meter")
        };
        assert!(why.contains("no requested data"), "{why}");
        assert_eq!(sim.connections(), 1, "nothing closed the bus");

        // a meter that recovers is read again on the same bus
        sim.set_behaviour(list[1].1, Behaviour::Normal);
        host.wait_until(T, |evs| !readings_of(evs, "meter_2").is_empty())
            .await;
        assert_eq!(sim.connections(), 1);
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_lone_meter_at_the_wildcard_is_found_by_read_address_and_time_is_broadcast() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let a = sim.add_meter("000102030425");
        let list = vec![("lone".to_owned(), Address::WILDCARD)];
        let (host, counters, driver) = spawn(&config(
            &sim,
            &list,
            "time_sync = \"100ms\"\ntime_zone = \"+08:00\"",
        ));
        host.wait_until(T, |evs| !readings_of(evs, "lone").is_empty())
            .await;
        let e = &readings_of(&host.events(), "lone")[0].clone();
        assert_eq!(e.payload["points"]["energy_active_forward_total"], 1206.42);
        assert!(
            sim.requests_to(a) >= 3,
            "13H, then both points at the learned address"
        );
        wait_for("two time syncs", || sim.time_syncs().len() >= 2).await;
        assert!(get(&counters.time_syncs) >= 2);
        let sync = sim.time_syncs()[0].clone();
        assert_eq!(sync.len(), 6);
        let bcd = |b: u8| (b >> 4) * 10 + (b & 0x0F);
        assert!(
            sync.iter().all(|b| b >> 4 <= 9 && b & 0x0F <= 9),
            "{sync:02x?}"
        );
        let now = chrono::Utc::now() + chrono::Duration::hours(8);
        let year = u8::try_from(chrono::Datelike::year(&now) % 100).unwrap();
        assert_eq!(bcd(sync[5]), year);
        assert!((1..=12).contains(&bcd(sync[4])) && (1..=31).contains(&bcd(sync[3])));
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn readings_the_journal_refused_are_journaled_once_it_takes_them_again() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let list = meters(&sim, 2);
        sim.set_value(list[0].1, "power_active_total", -3.5);
        let (host, counters, driver) = spawn(&config(&sim, &list, ""));
        host.fail_writes(Some("disk full"));
        wait_for("three refused cycles", || get(&counters.cycles) >= 3).await;
        assert!(host.events().is_empty());
        host.fail_writes(None);
        host.wait_until(T, |evs| !readings_of(evs, "meter_1").is_empty())
            .await;
        let events = host.events();
        let first = readings_of(&events, "meter_1")[0];
        assert_eq!(
            first.payload["points"]["power_active_total"], -3.5,
            "negative power keeps its sign"
        );
        assert!(
            first.payload["coalesced"].as_u64().unwrap_or(0) >= 1,
            "newer energy replaced refused ones: {}",
            first.payload
        );
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn a_serial_server_that_closes_the_link_makes_every_meter_offline_until_it_is_reopened() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let list = meters(&sim, 2);
        let (host, _counters, driver) = spawn(&config(&sim, &list, ""));
        host.wait_until(T, |evs| !readings_of(evs, "meter_2").is_empty())
            .await;
        sim.drop_connections();
        wait_for("meters offline", || {
            matches!(
                last_health(&host, "meter_1"),
                Some(DeviceHealth::Offline(_))
            ) && matches!(
                last_health(&host, "meter_2"),
                Some(DeviceHealth::Offline(_))
            )
        })
        .await;
        let down = host.health_reports().len();
        wait_for("the bus reopened and read", || {
            sim.connections() >= 2
                && host.health_reports()[down..]
                    .iter()
                    .any(|(d, h)| d.as_str() == "meter_2" && *h == DeviceHealth::Online)
        })
        .await;
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_energy_counter_that_restarted_is_reported_as_read_not_smoothed() {
    within(async {
        let sim = BusSim::start_with(38400, Duration::from_millis(5))
            .await
            .unwrap();
        let list = meters(&sim, 1);
        let (host, _counters, driver) = spawn(&config(&sim, &list, ""));
        host.wait_until(T, |evs| !readings_of(evs, "meter_1").is_empty())
            .await;
        // a replaced or cleared meter starts again at zero
        sim.set_value(list[0].1, "energy_active_forward_total", 0.0);
        host.wait_until(T, |evs| {
            readings_of(evs, "meter_1")
                .iter()
                .any(|e| e.payload["points"]["energy_active_forward_total"] == 0)
        })
        .await;
        host.shutdown();
        driver.await.unwrap().unwrap();
    })
    .await;
}
