//! Lockdown and fire egress across 200 simulated ISAPI doors (4 controllers × 50 doors in
//! buildings A-D): the real journal, supervisor and command router, the real
//! hikvision_isapi driver, the ISAPI simulator on 127.0.0.1:0.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::Arc;
use std::time::Duration;

use campusgw::commands::CommandRouter;
use campusgw::config::DeviceConfig;
use campusgw::health::HealthBoard;
use campusgw::journal::{Journal, JournalOptions};
use campusgw::supervisor::{RestartPolicy, Shared, Supervisor};
use campusgw_hikvision::HikvisionConfig;
use campusgw_hikvision::sim::{IsapiSim, SimConfig};
use campusgw_sdk::{Command, CommandKind, CommandStatus, DeviceId, Event, Location, Target};
use tokio_util::sync::CancellationToken;

const CONTROLLERS: usize = 4;
const DOORS: u32 = 50;
const WAIT: Duration = Duration::from_secs(60);
const BUILDINGS: [&str; 4] = ["A", "B", "C", "D"];

struct Campus {
    sims: Vec<IsapiSim>,
    router: CommandRouter,
    journal: Journal,
    shutdown: CancellationToken,
    _sup: Supervisor,
    _dir: tempfile::TempDir,
}

/// Even door numbers are on escape routes; odd ones (offices, stores) are not.
fn escape(n: u32) -> bool {
    n.is_multiple_of(2)
}

fn controller_config(sim: &IsapiSim, b: &str, pw: &std::path::Path) -> HikvisionConfig {
    let mut text = format!(
        "host = \"{}\"\nuser = \"admin\"\npassword_file = \"{}\"\nrequest_timeout = \"20s\"\n",
        sim.base_url(),
        pw.display()
    );
    for n in 1..=DOORS {
        text.push_str(&format!(
            "[[doors]]\nn = {n}\ndevice = \"door_{b}_{n}\"\nescape_route = {}\n\
             location = {{ campus = \"main\", building = \"{b}\", point = \"door-{n}\" }}\n",
            escape(n)
        ));
    }
    toml::from_str(&text).unwrap()
}

async fn campus() -> Campus {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "sim-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (journal, _writer) = Journal::open(JournalOptions::new(dir.path().join("j.db"))).unwrap();
    let (board, _rx) = HealthBoard::new();
    let shutdown = CancellationToken::new();
    let shared = Shared {
        journal: journal.clone(),
        health: board,
        data_dir: dir.path().to_owned(),
        shutdown: shutdown.clone(),
        restart: RestartPolicy::default(),
    };
    let mut sims = Vec::new();
    let mut devices = Vec::new();
    for b in BUILDINGS.iter().take(CONTROLLERS) {
        let sim = IsapiSim::start(SimConfig {
            doors: DOORS,
            ..SimConfig::default()
        })
        .await
        .unwrap();
        devices.push(DeviceConfig {
            id: DeviceId::new(format!("acs_{b}")).unwrap(),
            driver: "hikvision_isapi",
            location: Location::from_path(&format!("main/{b}")).unwrap(),
            offline_after: None,
            factory: Arc::new(controller_config(&sim, b, &pw)),
            inbound_connections: 0,
        });
        sims.push(sim);
    }
    let mut router = CommandRouter::new(journal.clone(), DeviceId::new("gw").unwrap());
    let sup = Supervisor::start(&devices, &shared, &mut router);
    Campus {
        sims,
        router,
        journal,
        shutdown,
        _sup: sup,
        _dir: dir,
    }
}

fn command(kind: &str, scope: &str, by: &str) -> Command {
    Command::new(
        CommandKind::new(kind).unwrap(),
        Target::Scope(scope.into()),
        serde_json::Value::Null,
        by,
    )
}

fn results_of(j: &Journal, c: &Command) -> Vec<Event> {
    j.reader()
        .unwrap()
        .after(0, None, 1_000_000)
        .unwrap()
        .into_iter()
        .filter(|e| {
            e.kind.as_str() == "command.result"
                && e.payload["command"]["id"] == serde_json::json!(c.id)
        })
        .collect()
}

fn door_result<'a>(evs: &'a [Event], door: &str) -> Option<&'a Event> {
    evs.iter()
        .find(|e| e.payload["result"]["device"].as_str() == Some(door))
}

#[tokio::test]
async fn a_lockdown_to_the_campus_locks_all_200_doors_and_journals_each_result() {
    let c = campus().await;
    let lock = command("door.lock", "campus:main", "rule:panic_lockdown");
    let results = tokio::time::timeout(WAIT, c.router.execute(lock.clone(), WAIT))
        .await
        .expect("lockdown answered");
    let doors: Vec<_> = results
        .iter()
        .filter(|r| r.device.as_str().starts_with("door_"))
        .collect();
    assert_eq!(doors.len(), CONTROLLERS * DOORS as usize);
    for r in &doors {
        assert_eq!(
            r.status,
            CommandStatus::Succeeded,
            "{}: {}",
            r.device,
            r.detail
        );
    }
    for (i, sim) in c.sims.iter().enumerate() {
        let states = sim.door_states();
        assert!(
            states.iter().all(|s| s == "alwaysClose"),
            "controller {i}: {states:?}"
        );
    }
    let journaled = results_of(&c.journal, &lock);
    for b in BUILDINGS.iter().take(CONTROLLERS) {
        for n in 1..=DOORS {
            let e = door_result(&journaled, &format!("door_{b}_{n}"))
                .unwrap_or_else(|| panic!("door_{b}_{n} result journaled"));
            assert_eq!(e.payload["result"]["status"], "succeeded");
        }
    }
    let evs = c
        .journal
        .reader()
        .unwrap()
        .after(0, None, 1_000_000)
        .unwrap();
    let lockdown = evs
        .iter()
        .find(|e| e.kind.as_str() == "access.lockdown")
        .expect("lockdown journaled");
    assert_eq!(lockdown.payload["state"], "active");
    assert_eq!(lockdown.payload["scope"], "campus:main");
    assert_eq!(c.router.access().snapshot().lockdown.len(), 1);
    c.shutdown.cancel();
}

#[tokio::test]
async fn with_fire_egress_active_escape_doors_stay_unlocked_and_their_refusals_are_journaled() {
    let c = campus().await;
    let fire = command("door.unlock", "building:A", "rule:fire_confirmed");
    let unlocked = c.router.execute(fire, WAIT).await;
    assert!(
        unlocked
            .iter()
            .filter(|r| r.device.as_str().starts_with("door_A_"))
            .all(|r| r.status == CommandStatus::Succeeded),
        "{unlocked:?}"
    );
    assert!(
        c.sims[0].door_states().iter().all(|s| s == "alwaysOpen"),
        "a fire unlock holds the doors open"
    );

    let lock = command("door.lock", "campus:main", "rule:panic_lockdown");
    let results = c.router.execute(lock.clone(), WAIT).await;
    let journaled = results_of(&c.journal, &lock);
    for n in 1..=DOORS {
        let door = format!("door_A_{n}");
        let r = results.iter().find(|r| r.device.as_str() == door).unwrap();
        let e = door_result(&journaled, &door).expect("journaled");
        if escape(n) {
            assert_eq!(r.status, CommandStatus::Rejected, "{door}");
            assert!(r.detail.contains("fire egress"), "{}", r.detail);
            assert_eq!(e.payload["result"]["status"], "rejected");
            assert_eq!(
                c.sims[0].door_state(n).as_deref(),
                Some("alwaysOpen"),
                "{door}"
            );
        } else {
            assert_eq!(r.status, CommandStatus::Succeeded, "{door}: {}", r.detail);
            assert_eq!(
                c.sims[0].door_state(n).as_deref(),
                Some("alwaysClose"),
                "{door}"
            );
        }
    }
    // No fire in the other buildings: every door there locks.
    for sim in &c.sims[1..] {
        assert!(sim.door_states().iter().all(|s| s == "alwaysClose"));
    }
    let kinds: Vec<String> = c
        .journal
        .reader()
        .unwrap()
        .after(0, None, 1_000_000)
        .unwrap()
        .iter()
        .map(|e| e.kind.to_string())
        .filter(|k| k.starts_with("access."))
        .collect();
    assert_eq!(kinds, ["access.egress", "access.lockdown"]);

    // Released: the egress ends, and a new lockdown locks the escape doors too.
    c.router
        .execute(
            command("door.release", "campus:main", "operator:alice"),
            WAIT,
        )
        .await;
    let again = c
        .router
        .execute(command("door.lock", "building:A", "operator:alice"), WAIT)
        .await;
    assert!(
        again
            .iter()
            .all(|r| r.status == CommandStatus::Succeeded || r.device.as_str() == "acs_A"),
        "{again:?}"
    );
    assert!(c.sims[0].door_states().iter().all(|s| s == "alwaysClose"));
    c.shutdown.cancel();
}
