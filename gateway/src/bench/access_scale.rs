//! `campusgw bench access-scale`: 2,000 doors configured (issue 14's figure): the gateway as
//! its own process (`campusgw run` on a generated config), its doors on simulated Hikvision
//! ISAPI controllers (alertStream each) and simulated ZKTeco PUSH controllers (polling one
//! iclock server), both from drivers/*/src/sim.rs in this process.
//!
//! Reported (one JSON line):
//! - `rss_online_mib`: the child's `VmRSS` once every ISAPI stream is open and every ZKTeco
//!   controller has registered (DESIGN §6: ≤ 40 MB with 2,000 devices configured);
//!   `rss_after_events_mib` after the samples;
//! - `isapi_event_journaled_p50/p99/max_ms`: an ISAPI simulator pushes an `access.granted`
//!   part → the bench's read-only journal reader sees the event (polled every millisecond,
//!   so a bound from above on in → journaled; the issue asks p99 ≤ 10 ms);
//! - `zkteco_upload_ok_p50/p99/max_ms`: a PUSH `rtlog` upload → the server's `OK`, which the
//!   driver answers only after the journal commit (so it bounds in → journaled too).
//!
//! Unlike `bench access` (in-process, lockdown latency), the measured gateway here is a
//! separate process, so the RSS is the gateway's alone. Smoke it in debug; the figures are
//! for a release build (`cargo build --release`, bench/README.md).

use std::time::{Duration, Instant};

use campusgw_hikvision::sim::{IsapiSim, SimConfig};
use campusgw_zkteco::sim::{ControllerSim, SimConfig as ZkSimConfig};
use serde::Serialize;

use super::{BenchDir, free_port, quantile};
use crate::journal::JournalReader;

/// Doors per simulated ZKTeco controller.
const ZK_DOORS_PER_CONTROLLER: u32 = 10;

/// What `campusgw bench access-scale` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simulated ISAPI controllers.
    pub isapi_controllers: u32,
    /// Doors per ISAPI controller.
    pub isapi_doors: u32,
    /// ZKTeco PUSH doors (10 per simulated controller).
    pub zkteco_doors: u32,
    /// Access event samples (each of ISAPI and ZKTeco).
    pub events: usize,
    /// Directory for the gateway's data (default: a temporary directory).
    pub data_dir: Option<std::path::PathBuf>,
}

#[derive(Serialize)]
struct ScaleResult {
    bench: &'static str,
    doors: u32,
    isapi_doors: u32,
    zkteco_doors: u32,
    online_secs: f64,
    rss_online_mib: f64,
    rss_after_events_mib: f64,
    events: usize,
    isapi_event_journaled_p50_ms: f64,
    isapi_event_journaled_p99_ms: f64,
    isapi_event_journaled_max_ms: f64,
    zkteco_upload_ok_p50_ms: f64,
    zkteco_upload_ok_p99_ms: f64,
    zkteco_upload_ok_max_ms: f64,
}

fn zk_controllers(doors: u32) -> u32 {
    doors.div_ceil(ZK_DOORS_PER_CONTROLLER)
}

fn config_text(
    dir: &std::path::Path,
    o: &BenchOptions,
    isapi: &[IsapiSim],
    zk_port: u16,
) -> String {
    let mut buildings = String::new();
    for i in 0..o.isapi_controllers {
        buildings.push_str(&format!("[[campus.building]]\nid = \"b{i}\"\n"));
    }
    for c in 0..zk_controllers(o.zkteco_doors) {
        buildings.push_str(&format!("[[campus.building]]\nid = \"zk{c}\"\n"));
    }
    let mut text = format!(
        "[gateway]\nid = \"bench-access-scale\"\nname = \"Access scale bench\"\ndata_dir = \"{}\"\n\
         [console]\nlisten = \"127.0.0.1:0\"\n[[campus]]\nid = \"main\"\n{buildings}",
        dir.join("data").display()
    );
    let pw = dir.join("isapi.pass");
    for (i, sim) in isapi.iter().enumerate() {
        text.push_str(&format!(
            "[[device]]\nid = \"acs_{i}\"\ndriver = \"hikvision_isapi\"\nlocation = \"main/b{i}\"\n\
             host = \"{}\"\nuser = \"admin\"\npassword_file = \"{}\"\n",
            sim.base_url(),
            pw.display()
        ));
        for n in 1..=o.isapi_doors {
            text.push_str(&format!(
                "[[device.doors]]\nn = {n}\ndevice = \"door_{i}_{n}\"\n"
            ));
        }
    }
    if o.zkteco_doors > 0 {
        text.push_str(&format!(
            "[[device]]\nid = \"iclock\"\ndriver = \"zkteco_push\"\nlocation = \"main\"\n\
             listen = \"127.0.0.1:{zk_port}\"\nrequest_delay = \"1s\"\nmax_connections = 1024\n"
        ));
        for c in 0..zk_controllers(o.zkteco_doors) {
            text.push_str(&format!(
                "[[device.controllers]]\nsn = \"ZKS{c:05}\"\ndevice = \"zkc_{c}\"\nlocation = \"main/zk{c}\"\n"
            ));
            let first = c * ZK_DOORS_PER_CONTROLLER;
            for n in 1..=ZK_DOORS_PER_CONTROLLER.min(o.zkteco_doors - first) {
                text.push_str(&format!(
                    "[[device.controllers.doors]]\nn = {n}\ndevice = \"door_zk{c}_{n}\"\n"
                ));
            }
        }
    }
    text
}

/// Runs the bench; prints one JSON line; returns the exit code.
///
/// # Errors
/// Start-up failures, a child that exits, or a sample that never completes.
pub async fn run(o: BenchOptions) -> anyhow::Result<i32> {
    anyhow::ensure!(
        o.isapi_controllers >= 1 && o.isapi_doors >= 1,
        "at least one ISAPI controller with one door"
    );
    let dir = BenchDir::create(o.data_dir.clone(), "access-scale")?;
    let pw = dir.path().join("isapi.pass");
    std::fs::write(&pw, format!("{}\n", SimConfig::default().password))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600))?;
    }
    let mut isapi = Vec::new();
    for _ in 0..o.isapi_controllers {
        isapi.push(
            IsapiSim::start(SimConfig {
                doors: o.isapi_doors,
                ..SimConfig::default()
            })
            .await?,
        );
    }
    let zk_port = free_port()?;
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text(dir.path(), &o, &isapi, zk_port))?;
    let started = Instant::now();
    let mut gw = super::GatewayChild::spawn(dir.path(), &config)?;
    let outcome = measure(&o, &dir, &isapi, zk_port, gw.pid, started, &mut gw.child).await;
    gw.finish(outcome).await
}

async fn measure(
    o: &BenchOptions,
    dir: &BenchDir,
    isapi: &[IsapiSim],
    zk_port: u16,
    pid: u32,
    started: Instant,
    child: &mut tokio::process::Child,
) -> anyhow::Result<ScaleResult> {
    let deadline = started + Duration::from_secs(300);
    let alive = |child: &mut tokio::process::Child| -> anyhow::Result<()> {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the gateway exited during the bench: {status}");
        }
        anyhow::ensure!(Instant::now() < deadline, "not online within 300 s");
        Ok(())
    };
    while !isapi.iter().all(|s| s.streams_connected() >= 1) {
        alive(child)?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut zk = Vec::new();
    if o.zkteco_doors > 0 {
        while tokio::net::TcpStream::connect(("127.0.0.1", zk_port))
            .await
            .is_err()
        {
            alive(child)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for c in 0..zk_controllers(o.zkteco_doors) {
            let first = c * ZK_DOORS_PER_CONTROLLER;
            let n = u8::try_from(ZK_DOORS_PER_CONTROLLER.min(o.zkteco_doors - first))?;
            let cfg = ZkSimConfig::new(format!("http://127.0.0.1:{zk_port}"), format!("ZKS{c:05}"))
                .doors(n);
            zk.push(
                ControllerSim::start(cfg)
                    .await
                    .map_err(anyhow::Error::msg)?,
            );
        }
        for s in &zk {
            alive(child)?;
            anyhow::ensure!(
                s.wait_registered(Duration::from_secs(60)).await,
                "ZKTeco simulator {} did not register",
                s.sn()
            );
        }
    }
    let online_secs = started.elapsed().as_secs_f64();
    let rss_online_mib = super::video::rss_mib(pid)?;

    let reader = JournalReader::open(&dir.path().join("data/journal.db"))?;
    let mut after = 0;
    loop {
        let page = reader.after(after, None, 10_000)?;
        match page.last() {
            Some(e) => after = e.seq,
            None => break,
        }
    }
    let mut isapi_ms = Vec::with_capacity(o.events);
    // The first sample of each is a warm-up, not counted.
    for i in 0..=o.events {
        let sim = &isapi[i % isapi.len()];
        let person = format!("S{i}");
        let t0 = Instant::now();
        sim.access(5, 1, 1 + (i as u32 % o.isapi_doors), &person, "");
        let end = t0 + Duration::from_secs(30);
        'seen: loop {
            let page = reader.after(after, None, 10_000)?;
            for e in &page {
                after = e.seq;
                if e.payload["person_id"] == person.as_str() {
                    break 'seen;
                }
            }
            anyhow::ensure!(
                Instant::now() < end,
                "access event {person} not journaled within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        if i > 0 {
            isapi_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    let mut zk_ms = Vec::with_capacity(o.events);
    for i in 0..=o.events {
        let Some(z) = zk.get(i % zk.len().max(1)) else {
            break;
        };
        let t0 = Instant::now();
        let status = z.access(1, 0, &format!("Z{i}"), 0).await;
        anyhow::ensure!(status == 200, "ZKTeco upload answered {status}");
        if i > 0 {
            zk_ms.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
    }
    alive(child)?;
    let rss_after_events_mib = super::video::rss_mib(pid)?;
    Ok(ScaleResult {
        bench: "access-scale",
        doors: o.isapi_controllers * o.isapi_doors + o.zkteco_doors,
        isapi_doors: o.isapi_controllers * o.isapi_doors,
        zkteco_doors: o.zkteco_doors,
        online_secs,
        rss_online_mib,
        rss_after_events_mib,
        events: o.events,
        isapi_event_journaled_p50_ms: quantile(&isapi_ms, 0.50),
        isapi_event_journaled_p99_ms: quantile(&isapi_ms, 0.99),
        isapi_event_journaled_max_ms: quantile(&isapi_ms, 1.0),
        zkteco_upload_ok_p50_ms: quantile(&zk_ms, 0.50),
        zkteco_upload_ok_p99_ms: quantile(&zk_ms, 0.99),
        zkteco_upload_ok_max_ms: quantile(&zk_ms, 1.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_config_is_valid_and_counts_every_door() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = BenchOptions {
            isapi_controllers: 0,
            isapi_doors: 50,
            zkteco_doors: 25,
            events: 1,
            data_dir: None,
        };
        std::fs::write(dir.path().join("isapi.pass"), "x\n").expect("write");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                dir.path().join("isapi.pass"),
                std::fs::Permissions::from_mode(0o600),
            )
            .expect("chmod");
        }
        let text = config_text(dir.path(), &o, &[], 18088);
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).expect("write");
        let config = crate::config::load(&path).expect("the bench config is valid");
        let doors = config
            .devices
            .iter()
            .flat_map(|d| d.factory.sub_devices())
            .filter(|(id, _)| id.as_str().starts_with("door_zk"))
            .count();
        assert_eq!(doors, 25, "{text}");
    }
}
