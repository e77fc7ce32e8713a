//! The Modbus edge path across SIGKILL: the real `campusgw` binary polls a simulated fire
//! panel's alarm outputs (discrete inputs) while the test toggles them and kills the
//! gateway at random moments (`CAMPUSGW_KILL_ROUNDS`, default 20; seed `CAMPUSGW_KILL_SEED`,
//! printed).
//!
//! Modbus is polled, so there is no confirm to withhold: the contract is that an alarm the
//! gateway could see is never lost. An input that is on when the gateway (re)starts is
//! announced again, and every alarm that stayed on for a while as the gateway polled is in
//! the journal, whatever crash came after it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::path::Path;
use std::time::Duration;

use campusgw_e2e::gateway::{
    GatewayProcess, Ports, journal, kill_later, kill_loop_params, of_kind,
};
use campusgw_modbus::sim::Simulator;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Alarm outputs of the simulated panel: discrete inputs 0..POINTS.
const POINTS: u16 = 6;
/// How often the gateway polls.
const POLL: Duration = Duration::from_millis(50);
/// An alarm on for at least this long while the gateway was polling must be journaled (many
/// poll intervals: the assertion never depends on a loaded machine's timing).
const SEEN_IF_ON_FOR: Duration = Duration::from_millis(1000);

fn config_text(ports: &Ports, data: &Path, sim: std::net::SocketAddr) -> String {
    let mut points = String::new();
    for p in 0..POINTS {
        points.push_str(&format!(
            "[[device.points]]\nname = \"alarm{p}\"\ntable = \"discrete_input\"\naddress = {p}\non_kind = \"fire.alarm\"\noff_kind = \"fire.reset\"\nclass = \"life_safety\"\n"
        ));
    }
    format!(
        r#"[gateway]
id = "school-modbus"
name = "Modbus kill loop"
data_dir = "{data}"

[[campus]]
id = "main"

[console]
listen = "127.0.0.1:{console}"

[[device]]
id = "fire_panel"
driver = "modbus_tcp"
address = "{sim}"
poll_interval = "{poll}ms"
request_timeout = "5s"
{points}"#,
        data = data.display(),
        console = ports.console,
        poll = POLL.as_millis(),
    )
}

/// One stretch of an input being on, in the test's clock.
struct OnPeriod {
    point: u16,
    on: Instant,
    off: Option<Instant>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_alarm_the_gateway_could_see_survives_sigkill_loops() {
    let (seed, rounds) = kill_loop_params("modbus kill loop", 20);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sim = Simulator::start().await.unwrap();
    let addr = sim.local_addr();
    let dir = tempfile::tempdir().unwrap();
    let config = move |ports: &Ports, data: &Path| config_text(ports, data, addr);
    let mut gw = GatewayProcess::start(dir.path(), "fire_panel", Box::new(config)).await;
    // The test clock and the journal's receive times, tied once: the events carry wall time.
    let t0 = Instant::now();
    let wall0 = chrono::Utc::now();
    let wall = |t: Instant| wall0 + chrono::Duration::from_std(t - t0).unwrap();
    let mut periods: Vec<OnPeriod> = Vec::new();
    // When the gateway was ready and polling: [ready, killed).
    let mut up: Vec<(Instant, Instant)> = Vec::new();
    let mut ready = Instant::now();
    let mut restarted = Instant::now();
    for _ in 0..rounds {
        let killed_at = Instant::now() + Duration::from_millis(rng.random_range(300..1500));
        let killer = kill_later(gw.pid(), killed_at - Instant::now());
        // Toggle inputs until a little after the kill, so some change while it is dead.
        let until = killed_at + Duration::from_millis(rng.random_range(0..300));
        while Instant::now() < until {
            let p = rng.random_range(0..POINTS);
            let now = Instant::now();
            if sim.discrete_input(p) {
                sim.set_discrete_input(p, false);
                if let Some(open) = periods
                    .iter_mut()
                    .rfind(|o| o.point == p && o.off.is_none())
                {
                    open.off = Some(now);
                }
            } else {
                sim.set_discrete_input(p, true);
                periods.push(OnPeriod {
                    point: p,
                    on: now,
                    off: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(50..600))).await;
        }
        killer.await.unwrap();
        up.push((ready, killed_at));
        restarted = Instant::now();
        gw.crash_and_restart().await;
        ready = Instant::now();
    }
    // Let the last start poll what is on now, then stop toggling and read the journal.
    tokio::time::sleep(SEEN_IF_ON_FOR).await;
    let events = journal(&gw.data_dir());
    let alarms = of_kind(&events, "fire.alarm");
    let journaled = |point: u16, from: Instant, to: Instant| {
        alarms.iter().any(|e| {
            e.payload["point"] == format!("alarm{point}")
                && e.received_at >= wall(from) - chrono::Duration::milliseconds(5)
                && e.received_at <= wall(to) + chrono::Duration::seconds(5)
        })
    };
    let mut missed = Vec::new();
    let mut checked = 0;
    for p in &periods {
        let off = p.off.unwrap_or_else(Instant::now);
        // Seen: the input stayed on for SEEN_IF_ON_FOR inside one stretch of polling.
        let seen = up
            .iter()
            .chain(std::iter::once(&(ready, Instant::now())))
            .any(|(a, b)| {
                let from = p.on.max(*a);
                let to = off.min(*b);
                to > from && to - from >= SEEN_IF_ON_FOR
            });
        if seen {
            checked += 1;
            if !journaled(p.point, p.on, off) {
                missed.push((p.point, p.on - t0, off - t0));
            }
        }
    }
    // What is on now was announced by the last start (its first poll may precede the
    // moment /healthz showed it ready), even if it came on while the gateway was dead.
    let on_now: Vec<u16> = (0..POINTS).filter(|p| sim.discrete_input(*p)).collect();
    let unannounced: Vec<u16> = on_now
        .iter()
        .copied()
        .filter(|p| !journaled(*p, restarted, Instant::now()))
        .collect();
    eprintln!(
        "modbus kill loop: {} on-periods, {checked} long enough to be seen, {} fire.alarm events",
        periods.len(),
        alarms.len()
    );
    assert!(missed.is_empty(), "seen and lost (seed {seed}): {missed:?}");
    assert!(
        unannounced.is_empty(),
        "on at the last start but not announced (seed {seed}): {unannounced:?}"
    );
    assert!(
        checked > 0,
        "the loop held some alarm on long enough to check"
    );
}
