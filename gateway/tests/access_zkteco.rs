//! Lockdown, fire egress and the muster list across both access drivers: 100 ISAPI doors (2
//! controllers × 50, buildings A and B) and 100 ZKTeco PUSH doors (10 controllers × 10 behind
//! one iclock server, buildings A and C), with the real journal, supervisor and command
//! router, the ISAPI simulator and the PUSH controller simulator on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use campusgw::commands::CommandRouter;
use campusgw::config::DeviceConfig;
use campusgw::health::HealthBoard;
use campusgw::journal::{Journal, JournalOptions, WriterHandle};
use campusgw::presence::{Presence, Roster};
use campusgw::supervisor::{RestartPolicy, Shared, Supervisor};
use campusgw_hikvision::HikvisionConfig;
use campusgw_hikvision::sim::{IsapiSim, SimConfig as IsapiConfig};
use campusgw_sdk::{Command, CommandKind, CommandStatus, DeviceId, Event, Location, Target};
use campusgw_zkteco::ZktecoConfig;
use campusgw_zkteco::sim::{ControllerSim, Misbehaviour, SimConfig as ZkConfig};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(90);
const ISAPI_DOORS: u32 = 50;
const ZK_CONTROLLERS: usize = 10;
const ZK_DOORS: u8 = 10;

/// Even door numbers are on escape routes; odd ones (offices, stores) are not.
fn escape(n: u32) -> bool {
    n.is_multiple_of(2)
}

/// ZKTeco controller i: 0-4 in building A, 5-9 in building C.
fn zk_building(i: usize) -> &'static str {
    if i < ZK_CONTROLLERS / 2 { "A" } else { "C" }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Campus {
    isapi: Vec<IsapiSim>,
    zk: Vec<ControllerSim>,
    router: CommandRouter,
    journal: Journal,
    writer: WriterHandle,
    shutdown: CancellationToken,
    _sup: Supervisor,
}

fn isapi_config(sim: &IsapiSim, b: &str, pw: &Path) -> HikvisionConfig {
    let mut text = format!(
        "host = \"{}\"\nuser = \"admin\"\npassword_file = \"{}\"\nrequest_timeout = \"20s\"\n",
        sim.base_url(),
        pw.display()
    );
    for n in 1..=ISAPI_DOORS {
        // Doors 1 and 2 are the building's entrance (in) and exit (out).
        let boundary = match n {
            1 => format!("boundary = \"building:{b}\"\n"),
            2 => format!("boundary = \"building:{b}\"\ndirection = \"out\"\n"),
            _ => String::new(),
        };
        text.push_str(&format!(
            "[[doors]]\nn = {n}\ndevice = \"door_{b}_{n}\"\nescape_route = {}\n{boundary}\
             location = {{ campus = \"main\", building = \"{b}\", point = \"door-{n}\" }}\n",
            escape(n)
        ));
    }
    toml::from_str(&text).unwrap()
}

fn zk_config(port: u16, deadline: &str) -> ZktecoConfig {
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\nrequest_delay = \"1s\"\ncommand_deadline = \"{deadline}\"\n"
    );
    for i in 0..ZK_CONTROLLERS {
        let b = zk_building(i);
        text.push_str(&format!(
            "[[controllers]]\nsn = \"ZK{i:04}\"\ndevice = \"zkc_{i}\"\n\
             location = {{ campus = \"main\", building = \"{b}\" }}\n"
        ));
        for n in 1..=ZK_DOORS {
            let boundary = if n == 1 {
                format!("boundary = \"building:{b}\"\n")
            } else {
                String::new()
            };
            text.push_str(&format!(
                "[[controllers.doors]]\nn = {n}\ndevice = \"zk_{i}_{n}\"\nescape_route = {}\n{boundary}\
                 location = {{ campus = \"main\", building = \"{b}\", point = \"zk-{i}-{n}\" }}\n",
                escape(u32::from(n))
            ));
        }
    }
    toml::from_str(&text).unwrap()
}

async fn campus(dir: &Path, deadline: &str) -> Campus {
    let pw = dir.join("pw");
    std::fs::write(&pw, "sim-password\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let (journal, writer) = Journal::open(JournalOptions::new(dir.join("j.db"))).unwrap();
    let (board, _rx) = HealthBoard::new();
    let shutdown = CancellationToken::new();
    let shared = Shared {
        journal: journal.clone(),
        health: board,
        data_dir: dir.to_owned(),
        shutdown: shutdown.clone(),
        restart: RestartPolicy::default(),
    };
    let mut isapi = Vec::new();
    let mut devices = Vec::new();
    for b in ["A", "B"] {
        let sim = IsapiSim::start(IsapiConfig {
            doors: ISAPI_DOORS,
            ..IsapiConfig::default()
        })
        .await
        .unwrap();
        devices.push(DeviceConfig {
            id: DeviceId::new(format!("acs_{b}")).unwrap(),
            driver: "hikvision_isapi",
            location: Location::from_path(&format!("main/{b}")).unwrap(),
            offline_after: None,
            factory: Arc::new(isapi_config(&sim, b, &pw)),
            inbound_connections: 0,
        });
        isapi.push(sim);
    }
    let port = free_port();
    devices.push(DeviceConfig {
        id: DeviceId::new("iclock_server").unwrap(),
        driver: "zkteco_push",
        location: Location::from_path("main").unwrap(),
        offline_after: None,
        factory: Arc::new(zk_config(port, deadline)),
        inbound_connections: 28,
    });
    let mut router = CommandRouter::new(journal.clone(), DeviceId::new("gw").unwrap());
    let sup = Supervisor::start(&devices, &shared, &mut router);
    let mut zk = Vec::new();
    for i in 0..ZK_CONTROLLERS {
        let c =
            ZkConfig::new(format!("http://127.0.0.1:{port}"), format!("ZK{i:04}")).doors(ZK_DOORS);
        zk.push(ControllerSim::start(c).await.unwrap());
    }
    for c in &zk {
        assert!(c.wait_registered(WAIT).await, "{} registered", c.sn());
    }
    for s in &isapi {
        s.wait_until(WAIT, |s| s.streams_connected() > 0).await;
    }
    Campus {
        isapi,
        zk,
        router,
        journal,
        writer,
        shutdown,
        _sup: sup,
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

fn all_events(j: &Journal) -> Vec<Event> {
    j.reader().unwrap().after(0, None, 1_000_000).unwrap()
}

fn results_of(j: &Journal, c: &Command) -> Vec<Event> {
    all_events(j)
        .into_iter()
        .filter(|e| {
            e.kind.as_str() == "command.result"
                && e.payload["command"]["id"] == serde_json::json!(c.id)
        })
        .collect()
}

fn is_door(d: &str) -> bool {
    d.starts_with("door_") || d.starts_with("zk_")
}

fn all_door_ids() -> Vec<String> {
    let mut v = Vec::new();
    for b in ["A", "B"] {
        for n in 1..=ISAPI_DOORS {
            v.push(format!("door_{b}_{n}"));
        }
    }
    for i in 0..ZK_CONTROLLERS {
        for n in 1..=ZK_DOORS {
            v.push(format!("zk_{i}_{n}"));
        }
    }
    v
}

#[tokio::test]
async fn a_lockdown_locks_100_isapi_and_100_zkteco_doors_and_journals_every_result() {
    let dir = tempfile::tempdir().unwrap();
    let c = campus(dir.path(), "20s").await;
    let lock = command("door.lock", "campus:main", "rule:panic_lockdown");
    let results = tokio::time::timeout(WAIT, c.router.execute(lock.clone(), WAIT))
        .await
        .expect("lockdown answered");
    let doors: Vec<_> = results
        .iter()
        .filter(|r| is_door(r.device.as_str()))
        .collect();
    assert_eq!(doors.len(), 200);
    for r in &doors {
        assert_eq!(
            r.status,
            CommandStatus::Succeeded,
            "{}: {}",
            r.device,
            r.detail
        );
    }
    for s in &c.isapi {
        assert!(s.door_states().iter().all(|x| x == "alwaysClose"));
    }
    for z in &c.zk {
        assert!(
            z.door_states().iter().all(|x| x == "locked"),
            "{}: {:?}",
            z.sn(),
            z.door_states()
        );
    }
    let journaled = results_of(&c.journal, &lock);
    for d in all_door_ids() {
        let e = journaled
            .iter()
            .find(|e| e.payload["result"]["device"].as_str() == Some(d.as_str()))
            .unwrap_or_else(|| panic!("{d}: result journaled"));
        assert_eq!(e.payload["result"]["status"], "succeeded", "{d}");
    }
    // The console's view: lockdown active, every door's last result.
    let presence = Presence::new(c.journal.clone(), Roster::default());
    let doors = presence.door_results().unwrap();
    assert_eq!(doors.iter().filter(|d| is_door(&d.door)).count(), 200);
    assert!(
        doors
            .iter()
            .all(|d| d.status == "succeeded" && d.command == "door.lock")
    );
    assert_eq!(c.router.access().snapshot().lockdown.len(), 1);
    c.shutdown.cancel();
}

#[tokio::test]
async fn fire_egress_keeps_zkteco_escape_doors_open_through_a_lockdown() {
    let dir = tempfile::tempdir().unwrap();
    let c = campus(dir.path(), "20s").await;
    let fire = command("door.unlock", "building:A", "rule:fire_confirmed");
    let unlocked = c.router.execute(fire, WAIT).await;
    for r in unlocked.iter().filter(|r| is_door(r.device.as_str())) {
        assert_eq!(
            r.status,
            CommandStatus::Succeeded,
            "{}: {}",
            r.device,
            r.detail
        );
    }
    for z in &c.zk[..ZK_CONTROLLERS / 2] {
        assert!(
            z.door_states().iter().all(|s| s == "normal_open"),
            "{:?}",
            z.door_states()
        );
    }
    let lock = command("door.lock", "campus:main", "rule:panic_lockdown");
    let results = c.router.execute(lock.clone(), WAIT).await;
    let journaled = results_of(&c.journal, &lock);
    for (i, z) in c.zk.iter().enumerate() {
        for n in 1..=ZK_DOORS {
            let door = format!("zk_{i}_{n}");
            let r = results.iter().find(|r| r.device.as_str() == door).unwrap();
            let e = journaled
                .iter()
                .find(|e| e.payload["result"]["device"].as_str() == Some(door.as_str()))
                .expect("journaled");
            if zk_building(i) == "A" && escape(u32::from(n)) {
                assert_eq!(r.status, CommandStatus::Rejected, "{door}: {}", r.detail);
                assert!(r.detail.contains("fire egress"), "{}", r.detail);
                assert_eq!(e.payload["result"]["status"], "rejected");
                assert_eq!(z.door_state(n).as_deref(), Some("normal_open"), "{door}");
            } else {
                assert_eq!(r.status, CommandStatus::Succeeded, "{door}: {}", r.detail);
                assert_eq!(z.door_state(n).as_deref(), Some("locked"), "{door}");
            }
        }
    }
    c.shutdown.cancel();
}

#[tokio::test]
async fn a_zkteco_controller_that_disconnects_mid_command_reports_failed_for_its_doors() {
    let dir = tempfile::tempdir().unwrap();
    let c = campus(dir.path(), "4s").await;
    c.zk[7].misbehave(Misbehaviour {
        drop_mid_command: true,
        ..Misbehaviour::default()
    });
    let lock = command("door.lock", "building:C", "operator:alice");
    let results = c.router.execute(lock.clone(), WAIT).await;
    let journaled = results_of(&c.journal, &lock);
    for i in ZK_CONTROLLERS / 2..ZK_CONTROLLERS {
        for n in 1..=ZK_DOORS {
            let door = format!("zk_{i}_{n}");
            let r = results.iter().find(|r| r.device.as_str() == door).unwrap();
            let e = journaled
                .iter()
                .find(|e| e.payload["result"]["device"].as_str() == Some(door.as_str()))
                .expect("journaled");
            if i == 7 {
                assert_eq!(r.status, CommandStatus::Failed, "{door}: {}", r.detail);
                assert_eq!(e.payload["result"]["status"], "failed");
                assert_eq!(
                    c.zk[7].door_state(n).as_deref(),
                    Some("normal"),
                    "not locked"
                );
            } else {
                assert_eq!(r.status, CommandStatus::Succeeded, "{door}: {}", r.detail);
            }
        }
    }
    assert_eq!(c.zk[7].executed(), 0, "the controller executed nothing");
    c.shutdown.cancel();
}

#[tokio::test]
async fn the_muster_list_comes_from_both_drivers_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let roster_path = dir.path().join("roster.csv");
    std::fs::write(
        &roster_path,
        "person_id,name,role\nS1,张三,student\nS2,李四,student\nT1,王老师,staff\nV1,赵访客,visitor\n",
    )
    .unwrap();
    let roster = || Roster::load(&roster_path).unwrap();
    {
        let c = campus(dir.path(), "20s").await;
        // Building A: S1 and T1 enter through the ZKTeco entrance, S2 enters and leaves
        // (inoutstatus 1), V1 enters through the ISAPI entrance.
        assert_eq!(c.zk[0].access(1, 0, "S1", 0).await, 200);
        assert_eq!(c.zk[1].access(1, 0, "T1", 0).await, 200);
        assert_eq!(c.zk[2].access(1, 0, "S2", 0).await, 200);
        assert_eq!(c.zk[2].access(1, 0, "S2", 1).await, 200);
        // Building C: S2 goes in there instead.
        assert_eq!(c.zk[6].access(1, 0, "S2", 0).await, 200);
        // ISAPI building A: V1 in at door 1; building B: S9 (not on the roster) in, then out
        // through door 2 (the exit).
        c.isapi[0].access(5, 0x4b, 1, "V1", "");
        c.isapi[1].access(5, 0x4b, 1, "S9", "");
        c.isapi[1].access(5, 0x4b, 2, "S9", "");
        let deadline = tokio::time::Instant::now() + WAIT;
        while all_events(&c.journal)
            .iter()
            .filter(|e| e.kind.as_str() == "access.granted" && e.source.driver == "hikvision_isapi")
            .count()
            < 3
        {
            assert!(
                tokio::time::Instant::now() < deadline,
                "ISAPI events journaled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let p = Presence::new(c.journal.clone(), roster());
        let m = p.muster(Some("A")).unwrap();
        let ids: Vec<&str> = m.people.iter().map(|e| e.person_id.as_str()).collect();
        assert_eq!(ids, ["S1", "T1", "V1"], "students, staff, visitors");
        assert_eq!(m.people[0].name.as_deref(), Some("张三"));
        assert_eq!(m.by_role["student"], 1);
        assert!(p.muster(Some("B")).unwrap().people.is_empty(), "S9 left B");
        let c_list = p.muster(Some("C")).unwrap();
        assert_eq!(c_list.people.len(), 1);
        assert_eq!(c_list.people[0].person_id, "S2");
        // S9 left building B but not the campus: still on the campus-wide list.
        let campus_list = p.muster(None).unwrap();
        assert_eq!(campus_list.total, 5);
        let s9 = campus_list
            .people
            .iter()
            .find(|e| e.person_id == "S9")
            .unwrap();
        assert!(s9.buildings.is_empty() && s9.name.is_none() && s9.role.is_none());
        // Privacy: no name reached the journal.
        let text: String = all_events(&c.journal)
            .iter()
            .map(|e| e.payload.to_string())
            .collect();
        assert!(!text.contains("张三") && !text.contains("王老师"));
        c.shutdown.cancel();
        drop(c.zk);
        c.journal.close().await;
        tokio::task::spawn_blocking(move || c.writer.join())
            .await
            .unwrap();
    }
    // Restart: a new journal handle on the same file, a new model, the same list.
    let (journal, _writer) = Journal::open(JournalOptions::new(dir.path().join("j.db"))).unwrap();
    let p = Presence::new(journal, roster());
    let m = p.muster(Some("A")).unwrap();
    let ids: Vec<&str> = m.people.iter().map(|e| e.person_id.as_str()).collect();
    assert_eq!(ids, ["S1", "T1", "V1"]);
    assert_eq!(m.people[1].name.as_deref(), Some("王老师"));
    assert_eq!(p.muster(Some("C")).unwrap().people[0].person_id, "S2");
}

#[tokio::test]
async fn access_retention_deletes_delivered_person_events_sooner_and_nothing_else() {
    use campusgw::journal::UplinkSpec;
    use campusgw_sdk::{Class, NewEvent};
    let dir = tempfile::tempdir().unwrap();
    let mut opts = JournalOptions::new(dir.path().join("j.db"));
    opts.uplinks = vec![UplinkSpec {
        name: "county".into(),
        classes: Class::ALL.to_vec(),
    }];
    // Everything received before now is older than the access age; the general age is long.
    opts.access_retention = Some(Duration::ZERO);
    let (j, _w) = Journal::open(opts).unwrap();
    let dev = DeviceId::new("zk_1_1").unwrap();
    let ev = |kind: &'static str, class| {
        Event::stamp(
            NewEvent::new(campusgw_sdk::Kind::from_static(kind), class)
                .payload(serde_json::json!({"person_id": "S1"})),
            &dev,
            "zkteco_push",
            &Location::default(),
        )
    };
    let batch = vec![
        ev("access.granted", Class::Business),
        ev("access.denied", Class::Business),
        ev("door.opened", Class::Business),
        ev("door.forced", Class::Security),
        ev("access.granted", Class::Business),
    ];
    j.append(batch).await.unwrap();
    // Delivered up to seq 4 only: the last access.granted must stay (not yet forwarded).
    for c in Class::ALL {
        j.set_cursor("county", c, 4).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let report = j.maintain().await.unwrap();
    assert_eq!(report.expired, 2, "{report:?}");
    let left: Vec<(u64, String)> = all_events(&j)
        .iter()
        .map(|e| (e.seq, e.kind.to_string()))
        .collect();
    assert_eq!(
        left,
        [
            (3, "door.opened".to_owned()),
            (4, "door.forced".to_owned()),
            (5, "access.granted".to_owned())
        ]
    );
}
