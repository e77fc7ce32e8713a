//! `campusgw bench access`: lockdown of every simulated ISAPI door, and access event in →
//! journaled, through the real journal, supervisor, command router and `hikvision_isapi`
//! driver against ISAPI simulators on loopback.
//!
//! - **Lockdown**: per round, every door is released (not timed), then one `door.lock` to
//!   `campus:main` is issued; the sample is the time until the router holds every door's
//!   result, each `Succeeded` only after its controller confirmed `statusCode` 1 (so every
//!   door is locked in its simulator) and journaled.
//! - **Access event**: a simulator pushes an `access.granted` part; the sample ends when the
//!   journal's committed-event broadcast carries it (fsync'd).
//! - **`--zkteco N`**: N more doors on simulated ZKTeco PUSH controllers (10 doors each)
//!   behind one `zkteco_push` iclock server with `RequestDelay` 1 s, locked by the same
//!   lockdown (a lockdown then takes up to one poll interval longer: the controllers fetch
//!   commands only when they poll), and a PUSH upload → `OK` sample per event (the server
//!   answers `OK` only after the journal commit, so the round trip bounds in → journaled).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_hikvision::HikvisionConfig;
use campusgw_hikvision::sim::{IsapiSim, SimConfig};
use campusgw_sdk::{Command, CommandKind, CommandStatus, DeviceId, Location, Target};
use campusgw_zkteco::sim::{ControllerSim, SimConfig as ZkSimConfig};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::{BenchDir, quantile};
use crate::commands::CommandRouter;
use crate::config::DeviceConfig;
use crate::health::HealthBoard;
use crate::journal::{Journal, JournalOptions};
use crate::supervisor::{RestartPolicy, Shared, Supervisor};

/// What `campusgw bench access` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simulated controllers.
    pub controllers: u32,
    /// Doors per controller.
    pub doors: u32,
    /// Lockdown rounds.
    pub rounds: usize,
    /// Access events.
    pub events: usize,
    /// Directory for the journal.
    pub data_dir: Option<std::path::PathBuf>,
    /// ZKTeco PUSH doors (0: none).
    pub zkteco: u32,
}

/// Doors per simulated ZKTeco controller.
const ZK_DOORS_PER_CONTROLLER: u32 = 10;

#[derive(Serialize)]
struct AccessResult {
    bench: &'static str,
    doors: u32,
    rounds: usize,
    lockdown_p50_ms: f64,
    lockdown_p99_ms: f64,
    lockdown_max_ms: f64,
    events: usize,
    event_journaled_p50_ms: f64,
    event_journaled_p99_ms: f64,
    event_journaled_max_ms: f64,
    zkteco_doors: u32,
    zkteco_request_delay_s: u64,
    zkteco_upload_ok_p50_ms: f64,
    zkteco_upload_ok_p99_ms: f64,
}

fn zk_config(port: u16, doors: u32) -> anyhow::Result<campusgw_zkteco::ZktecoConfig> {
    let mut text = format!(
        "listen = \"127.0.0.1:{port}\"\nrequest_delay = \"1s\"\ncommand_deadline = \"20s\"\n"
    );
    for c in 0..doors.div_ceil(ZK_DOORS_PER_CONTROLLER) {
        text.push_str(&format!(
            "[[controllers]]\nsn = \"ZKB{c:05}\"\ndevice = \"zkc_{c}\"\n\
             location = {{ campus = \"main\", building = \"zk{c}\" }}\n"
        ));
        let first = c * ZK_DOORS_PER_CONTROLLER;
        for n in 1..=ZK_DOORS_PER_CONTROLLER.min(doors - first) {
            text.push_str(&format!(
                "[[controllers.doors]]\nn = {n}\ndevice = \"door_zk{c}_{n}\"\n"
            ));
        }
    }
    toml::from_str(&text).context("bench zkteco config")
}

async fn zk_sims(port: u16, doors: u32) -> anyhow::Result<Vec<ControllerSim>> {
    let mut out = Vec::new();
    for c in 0..doors.div_ceil(ZK_DOORS_PER_CONTROLLER) {
        let first = c * ZK_DOORS_PER_CONTROLLER;
        let n = u8::try_from(ZK_DOORS_PER_CONTROLLER.min(doors - first))?;
        let cfg =
            ZkSimConfig::new(format!("http://127.0.0.1:{port}"), format!("ZKB{c:05}")).doors(n);
        out.push(
            ControllerSim::start(cfg)
                .await
                .map_err(anyhow::Error::msg)?,
        );
    }
    for s in &out {
        anyhow::ensure!(
            s.wait_registered(Duration::from_secs(30)).await,
            "ZKTeco simulator {} did not register",
            s.sn()
        );
    }
    Ok(out)
}

fn controller(
    sim: &IsapiSim,
    i: u32,
    doors: u32,
    pw: &std::path::Path,
) -> anyhow::Result<HikvisionConfig> {
    let mut text = format!(
        "host = \"{}\"\nuser = \"admin\"\npassword_file = \"{}\"\nrequest_timeout = \"10s\"\n",
        sim.base_url(),
        pw.display()
    );
    for n in 1..=doors {
        text.push_str(&format!(
            "[[doors]]\nn = {n}\ndevice = \"door_{i}_{n}\"\n\
             location = {{ campus = \"main\", building = \"b{i}\" }}\n"
        ));
    }
    toml::from_str(&text).context("bench controller config")
}

fn command(kind: &str) -> anyhow::Result<Command> {
    Ok(Command::new(
        CommandKind::new(kind).map_err(|e| anyhow::anyhow!("{e}"))?,
        Target::Scope("campus:main".into()),
        serde_json::Value::Null,
        "bench",
    ))
}

/// Runs the bench; prints one JSON line; returns the exit code.
///
/// # Errors
/// Start-up failures, or a door that does not confirm.
pub async fn run(o: BenchOptions) -> anyhow::Result<i32> {
    let dir = BenchDir::create(o.data_dir.clone(), "access")?;
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "sim-password\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    }
    let (journal, writer) = Journal::open(JournalOptions::new(dir.path().join("j.db")))?;
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
    for i in 0..o.controllers {
        let sim = IsapiSim::start(SimConfig {
            doors: o.doors,
            ..SimConfig::default()
        })
        .await?;
        devices.push(DeviceConfig {
            id: DeviceId::new(format!("acs_{i}")).map_err(|e| anyhow::anyhow!(e))?,
            driver: "hikvision_isapi",
            location: Location::from_path(&format!("main/b{i}")).map_err(|e| anyhow::anyhow!(e))?,
            offline_after: None,
            factory: Arc::new(controller(&sim, i, o.doors, &pw)?),
            inbound_connections: 0,
        });
        sims.push(sim);
    }
    let zk_port = if o.zkteco > 0 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        devices.push(DeviceConfig {
            id: DeviceId::new("iclock").map_err(|e| anyhow::anyhow!(e))?,
            driver: campusgw_zkteco::KIND,
            location: Location::from_path("main").map_err(|e| anyhow::anyhow!(e))?,
            offline_after: None,
            factory: Arc::new(zk_config(port, o.zkteco)?),
            inbound_connections: 0,
        });
        Some(port)
    } else {
        None
    };
    let mut router = CommandRouter::new(
        journal.clone(),
        DeviceId::new("gw").map_err(|e| anyhow::anyhow!(e))?,
    );
    let _sup = Supervisor::start(&devices, &shared, &mut router);
    let zk = match zk_port {
        Some(port) => zk_sims(port, o.zkteco).await?,
        None => Vec::new(),
    };
    let lockdown = lockdowns(&router, &sims, &zk, o.rounds).await?;
    let events = access_events(&journal, &sims, o.events).await?;
    let mut uploads = Vec::new();
    if let Some(z) = zk.first() {
        for i in 0..=o.events {
            let t0 = Instant::now();
            let status = z.access(1, 0, &format!("Z{i}"), 0).await;
            anyhow::ensure!(status == 200, "ZKTeco upload answered {status}");
            if i > 0 {
                uploads.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
    }
    let result = AccessResult {
        bench: "access",
        doors: o.controllers * o.doors + o.zkteco,
        rounds: o.rounds,
        lockdown_p50_ms: quantile(&lockdown, 0.50),
        lockdown_p99_ms: quantile(&lockdown, 0.99),
        lockdown_max_ms: quantile(&lockdown, 1.0),
        events: o.events,
        event_journaled_p50_ms: quantile(&events, 0.50),
        event_journaled_p99_ms: quantile(&events, 0.99),
        event_journaled_max_ms: quantile(&events, 1.0),
        zkteco_doors: o.zkteco,
        zkteco_request_delay_s: 1,
        zkteco_upload_ok_p50_ms: quantile(&uploads, 0.50),
        zkteco_upload_ok_p99_ms: quantile(&uploads, 0.99),
    };
    println!("{}", serde_json::to_string(&result)?);
    shutdown.cancel();
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok(0)
}

async fn lockdowns(
    router: &CommandRouter,
    sims: &[IsapiSim],
    zk: &[ControllerSim],
    rounds: usize,
) -> anyhow::Result<Vec<f64>> {
    let timeout = Duration::from_secs(30);
    let mut out = Vec::new();
    // The first round warms connections and the Digest challenge; it is not counted.
    for round in 0..=rounds {
        router.execute(command("door.release")?, timeout).await;
        let t0 = Instant::now();
        let results = router.execute(command("door.lock")?, timeout).await;
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        let bad: Vec<_> = results
            .iter()
            .filter(|r| {
                r.device.as_str().starts_with("door_") && r.status != CommandStatus::Succeeded
            })
            .collect();
        anyhow::ensure!(bad.is_empty(), "round {round}: doors not locked: {bad:?}");
        anyhow::ensure!(
            sims.iter()
                .all(|s| s.door_states().iter().all(|d| d == "alwaysClose")),
            "round {round}: a simulated door is not locked"
        );
        anyhow::ensure!(
            zk.iter()
                .all(|s| s.door_states().iter().all(|d| d == "locked")),
            "round {round}: a simulated ZKTeco door is not locked"
        );
        if round > 0 {
            out.push(ms);
        }
    }
    Ok(out)
}

async fn access_events(journal: &Journal, sims: &[IsapiSim], n: usize) -> anyhow::Result<Vec<f64>> {
    let sim = sims.first().context("no simulator")?;
    sim.wait_until(Duration::from_secs(30), |s| s.streams_connected() >= 1)
        .await;
    let mut rx = journal.subscribe();
    let mut out = Vec::new();
    for i in 0..=n {
        let person = format!("P{i}");
        let t0 = Instant::now();
        sim.access(5, 1, 1, &person, "");
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                match rx.recv().await {
                    Ok(e) if e.payload["person_id"] == person.as_str() => return Ok(()),
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => return Err(anyhow::anyhow!("journal feed closed: {e}")),
                }
            }
        })
        .await
        .context("access event not journaled within 30 s")??;
        if i > 0 {
            out.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(out)
}
