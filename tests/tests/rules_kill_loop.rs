//! The rules runner across SIGKILL, with the real `campusgw` binary: fire alarms from a
//! simulated Modbus panel while the gateway is killed at random moments
//! (`CAMPUSGW_KILL_ROUNDS`, default 8; seed `CAMPUSGW_KILL_SEED`, printed). Afterwards
//! every fire alarm the engine consumed produced exactly one linkage (one door command row
//! per `fire.alarm` event, one `alarm.raised` per alarm id), and an absence timer armed
//! before a kill fires after the restart at its original deadline.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use campusgw::journal::rules::RulesReader;
use campusgw_e2e::gateway::{
    GatewayProcess, Ports, WAIT, journal, kill_later, kill_loop_params, of_kind, wait_journal,
};
use campusgw_modbus::sim::Simulator;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// Fire alarm outputs of the simulated panel: discrete inputs 0..POINTS; input PATROL is a
/// guard tour starting (`patrol.started`).
const POINTS: u16 = 4;
const PATROL: u16 = 10;
/// The absence window of the patrol rule: long enough that a kill and restart fit in it.
const PATROL_WITHIN_S: i64 = 12;

fn rules_text() -> String {
    format!(
        r#"
[[rule]]
id = "fire_doors"
description = "Every fire alarm releases the door and raises (or updates) the point's alarm"
trigger = {{ kinds = ["fire.alarm"] }}
group_by = "payload.point"
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:doors"
args = {{ point = "door0", on = true }}
[[rule.actions]]
type = "alarm"
severity = "critical"
title = "Fire at {{event.payload.point}}"
resolve_on = ["fire.reset"]

[[rule]]
id = "patrol_missed"
description = "A started guard tour must reach its checkpoint in time"
trigger = {{ kinds = ["patrol.checkpoint"] }}
pattern = {{ type = "absence", within = "{PATROL_WITHIN_S}s", arm = {{ kinds = ["patrol.started"] }} }}
[[rule.actions]]
type = "alarm"
severity = "major"
title = "Patrol checkpoint missed"
"#
    )
}

fn config_text(
    ports: &Ports,
    data: &Path,
    panel: std::net::SocketAddr,
    doors: std::net::SocketAddr,
) -> String {
    let mut points = String::new();
    for p in 0..POINTS {
        points.push_str(&format!(
            "[[device.points]]\nname = \"alarm{p}\"\ntable = \"discrete_input\"\naddress = {p}\non_kind = \"fire.alarm\"\noff_kind = \"fire.reset\"\nclass = \"life_safety\"\n"
        ));
    }
    let rules = data.parent().unwrap().join("rules");
    std::fs::create_dir_all(&rules).unwrap();
    std::fs::write(rules.join("rules.toml"), rules_text()).unwrap();
    format!(
        r#"[gateway]
id = "school-rules"
name = "Rules kill loop"
data_dir = "{data}"

[[campus]]
id = "main"

[console]
listen = "127.0.0.1:{console}"

[rules]
dir = "{rules}"

[[device]]
id = "fire_panel"
driver = "modbus_tcp"
address = "{panel}"
poll_interval = "50ms"
request_timeout = "5s"
{points}[[device.points]]
name = "tour"
table = "discrete_input"
address = {PATROL}
on_kind = "patrol.started"
off_kind = "patrol.ended"
class = "business"

[[device]]
id = "doors"
driver = "modbus_tcp"
address = "{doors}"
poll_interval = "1s"
request_timeout = "5s"
[[device.points]]
name = "door0"
table = "coil"
address = 0
writable = true
"#,
        data = data.display(),
        rules = rules.display(),
        console = ports.console,
    )
}

struct Rig {
    _dir: tempfile::TempDir,
    panel: Simulator,
    doors: Simulator,
    gw: GatewayProcess,
}

async fn start() -> Rig {
    let panel = Simulator::start().await.unwrap();
    let doors = Simulator::start().await.unwrap();
    let (p, d) = (panel.local_addr(), doors.local_addr());
    let dir = tempfile::tempdir().unwrap();
    let config = move |ports: &Ports, data: &Path| config_text(ports, data, p, d);
    let gw = GatewayProcess::start(dir.path(), "fire_panel", Box::new(config)).await;
    Rig {
        _dir: dir,
        panel,
        doors,
        gw,
    }
}

fn rules_reader(data: &Path) -> RulesReader {
    RulesReader::open(&data.join("journal.db")).expect("open the rules tables")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fire_alarm_produces_exactly_one_linkage_across_sigkill_loops() {
    let (seed, rounds) = kill_loop_params("rules kill loop", 8);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut rig = start().await;
    for _ in 0..rounds {
        let killed_at = Instant::now() + Duration::from_millis(rng.random_range(300..1500));
        let killer = kill_later(rig.gw.pid(), killed_at - Instant::now());
        while Instant::now() < killed_at + Duration::from_millis(100) {
            let p = rng.random_range(0..POINTS);
            rig.panel
                .set_discrete_input(p, !rig.panel.discrete_input(p));
            tokio::time::sleep(Duration::from_millis(rng.random_range(30..300))).await;
        }
        killer.await.unwrap();
        rig.gw.crash_and_restart().await;
    }
    // Settle: the runner has consumed every fire alarm and finished every command.
    let data = rig.gw.data_dir();
    let deadline = Instant::now() + WAIT * 2;
    loop {
        let events = journal(&data);
        let last_fire = of_kind(&events, "fire.alarm").last().map_or(0, |e| e.seq);
        let r = rules_reader(&data);
        let cursor = r.state("rules").unwrap().map_or(0, |(c, _)| c);
        let open = r.open_actions().unwrap().len();
        if cursor >= last_fire && open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "runner did not settle (seed {seed}): cursor {cursor}, last fire {last_fire}, {open} open actions"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events = journal(&data);
    let fires = of_kind(&events, "fire.alarm");
    let rows = rules_reader(&data).all_actions().unwrap();
    let mut per_cause: BTreeMap<u64, usize> = BTreeMap::new();
    for row in rows
        .iter()
        .filter(|r| r.rule == "fire_doors" && r.kind == "command")
    {
        *per_cause.entry(row.cause_seq).or_default() += 1;
    }
    let twice: Vec<_> = per_cause.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "linkage repeated (seed {seed}): {twice:?}"
    );
    let missing: Vec<u64> = fires
        .iter()
        .map(|e| e.seq)
        .filter(|s| !per_cause.contains_key(s))
        .collect();
    assert!(
        missing.is_empty(),
        "fire alarms without linkage (seed {seed}): {missing:?}"
    );
    assert_eq!(
        per_cause.len(),
        fires.len(),
        "no command without a fire alarm"
    );
    assert!(
        rows.iter().all(|r| r.status == "done"),
        "every door command done (seed {seed}): {:?}",
        rows.iter()
            .filter(|r| r.status != "done")
            .collect::<Vec<_>>()
    );
    let mut raised: BTreeMap<String, usize> = BTreeMap::new();
    for e in of_kind(&events, "alarm.raised") {
        *raised
            .entry(e.payload["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(!raised.is_empty(), "some fire alarm was raised");
    let repeated: Vec<_> = raised.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.is_empty(),
        "alarm raised twice (seed {seed}): {repeated:?}"
    );
    assert!(rig.doors.coil(0), "the door was released");
    eprintln!(
        "rules kill loop: {rounds} kills, {} fire alarms, {} linkages, {} alarms",
        fires.len(),
        per_cause.len(),
        raised.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absence_timer_armed_before_a_sigkill_fires_after_restart_at_its_original_deadline() {
    let mut rig = start().await;
    let data = rig.gw.data_dir();
    rig.panel.set_discrete_input(PATROL, true);
    let started = wait_journal(&data, "patrol.started", |ev| {
        of_kind(ev, "patrol.started").first().map(|e| (*e).clone())
    })
    .await;
    let deadline = started.received_at + chrono::Duration::seconds(PATROL_WITHIN_S);
    // Armed: the runner consumed the event and stored its state with the timer.
    let end = Instant::now() + WAIT;
    while rules_reader(&data)
        .state("rules")
        .unwrap()
        .is_none_or(|(c, _)| c < started.seq)
    {
        assert!(
            Instant::now() < end,
            "the runner never stored the armed timer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    rig.gw.crash_and_restart().await;
    assert!(
        chrono::Utc::now() < deadline,
        "the restart took longer than the absence window; the test proves nothing"
    );
    let alarm = wait_journal(&data, "the patrol alarm", |ev| {
        of_kind(ev, "alarm.raised")
            .into_iter()
            .find(|e| e.payload["rule"] == "patrol_missed")
            .cloned()
    })
    .await;
    let raised_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(alarm.payload["raised_at"].clone()).unwrap();
    assert_eq!(
        raised_at, deadline,
        "the alarm carries the original deadline"
    );
    assert!(
        alarm.received_at >= deadline,
        "the timer did not fire early"
    );
    let events = journal(&data);
    let patrol_alarms = of_kind(&events, "alarm.raised")
        .into_iter()
        .filter(|e| e.payload["rule"] == "patrol_missed")
        .count();
    assert_eq!(patrol_alarms, 1, "the timer fired once");
}
