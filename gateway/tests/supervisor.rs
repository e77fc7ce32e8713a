//! Supervision: a failing or panicking driver is restarted with back-off and never stops
//! the others; its device goes offline and back online; shutdown stops everything.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use campusgw::commands::CommandRouter;
use campusgw::config::DeviceConfig;
use campusgw::health::{self, HealthBoard};
use campusgw::journal::{Journal, JournalOptions};
use campusgw::supervisor::{RestartPolicy, Shared, Supervisor};
use campusgw_sdk::driver::{
    BuildContext, BuildError, Driver, DriverConfig, DriverContext, DriverError,
};
use campusgw_sdk::{
    Class, Command, CommandKind, CommandStatus, ConfigIssue, DeviceId, FieldPath, Kind, Location,
    NewEvent, Target,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone, serde::Deserialize)]
struct TestConfig {
    mode: String,
    #[serde(default)]
    sub: Option<String>,
    #[serde(skip)]
    starts: Arc<AtomicU32>,
}

struct TestDriver(TestConfig);

impl DriverConfig for TestConfig {
    const KIND: &'static str = "test";
    type Driver = TestDriver;
    fn validate(&self, _: &FieldPath) -> Vec<ConfigIssue> {
        Vec::new()
    }
    fn build(&self, _: &BuildContext) -> Result<TestDriver, BuildError> {
        Ok(TestDriver(self.clone()))
    }
    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.sub
            .iter()
            .map(|s| (DeviceId::new(s.clone()).unwrap(), None))
            .collect()
    }
}

impl Driver for TestDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let n = self.0.starts.fetch_add(1, Ordering::SeqCst);
        let tick = NewEvent::new(Kind::new("test.tick").unwrap(), Class::Telemetry)
            .payload(serde_json::json!({"start": n}));
        match self.0.mode.as_str() {
            "panic" => {
                cx.emit(tick).await?;
                panic!("simulated driver bug");
            }
            "fail" => Err(DriverError::Fatal("device refused the session".into())),
            // Waits for commands from the start, before any command channel exists.
            "echo" => {
                while let Some(req) = cx.next_command().await {
                    let detail = format!("done by {}", req.device);
                    req.respond(CommandStatus::Succeeded, detail);
                }
                Ok(())
            }
            _ => loop {
                cx.emit(tick.clone()).await?;
                if !cx.sleep(Duration::from_millis(10)).await {
                    return Ok(());
                }
            },
        }
    }
}

fn device(id: &str, mode: &str, starts: &Arc<AtomicU32>) -> DeviceConfig {
    device_with_sub(id, mode, starts, None)
}

fn device_with_sub(
    id: &str,
    mode: &str,
    starts: &Arc<AtomicU32>,
    sub: Option<&str>,
) -> DeviceConfig {
    DeviceConfig {
        id: DeviceId::new(id).unwrap(),
        driver: "test",
        location: Location::default(),
        offline_after: None,
        factory: Arc::new(TestConfig {
            mode: mode.into(),
            sub: sub.map(str::to_owned),
            starts: starts.clone(),
        }),
        inbound_connections: 0,
    }
}

#[tokio::test]
async fn a_panicking_driver_is_restarted_and_the_others_keep_running() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = Journal::open(JournalOptions::new(dir.path().join("j.db"))).unwrap();
    let (board, rx) = HealthBoard::new();
    let shutdown = CancellationToken::new();
    let shared = Shared {
        journal: journal.clone(),
        health: board.clone(),
        data_dir: dir.path().to_owned(),
        shutdown: shutdown.clone(),
        restart: RestartPolicy {
            base: Duration::from_millis(10),
            max: Duration::from_millis(40),
        },
    };
    let health_task = tokio::spawn(health::run(
        board.clone(),
        rx,
        journal.clone(),
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    let (panics, fails, steady) = (Arc::default(), Arc::default(), Arc::default());
    let devices = vec![
        device("flaky", "panic", &panics),
        device_with_sub("broken", "fail", &fails, Some("broken_sub")),
        device("steady", "ok", &steady),
    ];
    let mut router = CommandRouter::new(journal.clone(), DeviceId::new("gw").unwrap());
    let sup = Supervisor::start(&devices, &shared, &mut router);

    tokio::time::timeout(Duration::from_secs(20), async {
        while panics.load(Ordering::SeqCst) < 4 || fails.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both failing drivers restarted several times");
    let ticks_then = steady_ticks(&journal);
    tokio::time::timeout(Duration::from_secs(20), async {
        while steady_ticks(&journal) < ticks_then + 5 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the steady driver keeps emitting while the others fail");

    let states = sup.states.lock().unwrap().clone();
    let flaky = &states[&DeviceId::new("flaky").unwrap()];
    assert!(flaky.restarts >= 3, "{flaky:?}");
    assert!(
        flaky
            .last_error
            .as_deref()
            .unwrap()
            .contains("simulated driver bug"),
        "{flaky:?}"
    );
    assert!(
        states[&DeviceId::new("broken").unwrap()]
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused")
    );
    assert_eq!(states[&DeviceId::new("steady").unwrap()].restarts, 0);
    assert_eq!(
        steady.load(Ordering::SeqCst),
        1,
        "the steady driver was never restarted"
    );

    // The flaky device went offline (after its panic) and online (after its next event).
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let evs = journal.reader().unwrap().after(0, None, 100_000).unwrap();
            let kinds: Vec<_> = evs
                .iter()
                .filter(|e| e.source.device.as_str() == "flaky")
                .map(|e| e.kind.to_string())
                .collect();
            if kinds.iter().any(|k| k == "device.offline")
                && kinds.iter().rposition(|k| k == "device.online")
                    > kinds.iter().position(|k| k == "device.offline")
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("flaky device reported offline then online");

    // A failing driver takes the devices behind it offline too.
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let evs = journal.reader().unwrap().after(0, None, 100_000).unwrap();
            if let Some(e) = evs.iter().find(|e| {
                e.source.device.as_str() == "broken_sub" && e.kind.as_str() == "device.offline"
            }) {
                assert!(
                    e.payload["reason"]
                        .as_str()
                        .unwrap()
                        .contains("driver of broken stopped")
                );
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the sub-device of the failing driver reported offline");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), sup.join(Duration::from_secs(5)))
        .await
        .expect("drivers stop at shutdown");
    health_task.await.unwrap();
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
}

fn steady_ticks(j: &Journal) -> usize {
    j.reader()
        .unwrap()
        .after(0, Some(Class::Telemetry), 1_000_000)
        .unwrap()
        .iter()
        .filter(|e| e.source.device.as_str() == "steady")
        .count()
}

#[tokio::test]
async fn a_command_reaches_a_driver_that_was_waiting_before_any_command_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (journal, writer) = Journal::open(JournalOptions::new(dir.path().join("j.db"))).unwrap();
    let (board, _rx) = HealthBoard::new();
    let shutdown = CancellationToken::new();
    let shared = Shared {
        journal: journal.clone(),
        health: board,
        data_dir: dir.path().to_owned(),
        shutdown: shutdown.clone(),
        restart: RestartPolicy::default(),
    };
    let starts = Arc::default();
    let devices = vec![
        device_with_sub("panel", "echo", &starts, Some("panel_sub")),
        device("idle", "echo", &starts),
    ];
    let mut router = CommandRouter::new(journal.clone(), DeviceId::new("gw").unwrap());
    let sup = Supervisor::start(&devices, &shared, &mut router);
    tokio::time::timeout(Duration::from_secs(20), async {
        while starts.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("both drivers started");

    for target in ["panel", "panel_sub"] {
        let cmd = Command::new(
            CommandKind::new("door.unlock").unwrap(),
            Target::Device(DeviceId::new(target).unwrap()),
            serde_json::Value::Null,
            "test",
        );
        let results = router.execute(cmd, Duration::from_secs(20)).await;
        assert_eq!(results.len(), 1, "{results:?}");
        assert_eq!(results[0].status, CommandStatus::Succeeded, "{results:?}");
        assert_eq!(results[0].detail, format!("done by {target}"));
    }

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), sup.join(Duration::from_secs(5)))
        .await
        .expect("drivers stop at shutdown");
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join())
        .await
        .unwrap();
}
