//! `campusgw bench video`: many ONVIF cameras subscribed at once, and fire alarm → the
//! zone's snapshots stored, with the gateway as its own process (issue 16's figures).
//!
//! The bench process hosts the simulated cameras (`campusgw_onvif::sim::SimCamera`, one
//! HTTP server each, with authentication) and a simulated Modbus fire detector; the gateway
//! under test is `campusgw run` in a child process with a generated config: `cameras`
//! cameras in `onvif` devices of [`PER_DEVICE`], `zone_cameras` of them in the detector's
//! zone, and one rule (fire alarm of the detector → `camera.snapshot` to that zone). So the
//! memory and CPU figures are the gateway's alone, read from `/proc/<child>/`.
//!
//! - **Subscribed**: child start → every simulated camera holds a live PullPoint
//!   subscription; then the child's RSS, and its CPU over a steady window (long-polls and
//!   renewals only).
//! - **Snapshot latency**: per sample the detector input goes on; the sample is from the
//!   `fire.alarm` event's `received_at` (stamped by the child when the poll answer was
//!   decoded) to the moment the bench sees the last of the zone's `video.snapshot` events
//!   committed in the child's journal (read-only, polled every 2 ms; each event is journaled
//!   after its JPEG was fetched, checked and stored). In between: the alarm's commit, the
//!   rules runner, the command router, the SOAP-less HTTP snapshot fetch per camera, the
//!   store, the event commit. Then the input goes off and the bench waits for `fire.reset`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_modbus::sim::Simulator;
use campusgw_onvif::sim::SimCamera;
use chrono::Utc;

use super::{BenchDir, quantile};
use crate::journal::JournalReader;

/// Cameras per `onvif` device in the generated config.
pub const PER_DEVICE: usize = 50;

const RULE: &str = r#"
[[rule]]
id = "bench_fire_snapshots"
description = "Each fire alarm of the bench detector takes the snapshots of its zone"
trigger = { kinds = ["fire.alarm"], devices = ["det"] }
[[rule.actions]]
type = "command"
command = "camera.snapshot"
target = "zone:A/1/z0"
"#;

/// What `campusgw bench video` measures.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simulated cameras in all.
    pub cameras: usize,
    /// Of which in the detector's zone (each sample waits for all of their snapshots).
    pub zone_cameras: usize,
    /// Fire alarm → snapshots samples.
    pub samples: usize,
    /// Seconds of the steady CPU window after subscribing.
    pub steady_secs: u64,
    /// Directory for the child's data (default: a temporary directory).
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, serde::Serialize)]
struct VideoResult {
    bench: &'static str,
    cameras: usize,
    zone_cameras: usize,
    subscribed_all_secs: f64,
    rss_subscribed_mib: f64,
    rss_after_samples_mib: f64,
    steady_cpu_percent: f64,
    samples: usize,
    snapshots_p50_ms: f64,
    snapshots_p99_ms: f64,
    snapshots_max_ms: f64,
}

fn zone_of(i: usize, zone_cameras: usize) -> String {
    if i < zone_cameras {
        "z0".into()
    } else {
        format!("z{}", 1 + (i - zone_cameras) / 4)
    }
}

fn config_text(dir: &Path, det: &Simulator, cams: &[SimCamera], zone_cameras: usize) -> String {
    let zones: Vec<String> = (0..cams.len())
        .map(|i| zone_of(i, zone_cameras))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|z| format!("\"{z}\""))
        .collect();
    let mut text = format!(
        r#"
[gateway]
id = "bench-video"
name = "Video bench"
data_dir = "{data}"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = [{zones}]
[console]
listen = "127.0.0.1:0"
[rules]
dir = "{rules}"
[[device]]
id = "det"
driver = "modbus_tcp"
location = "main/A/1/z0"
address = "{det}"
poll_interval = "10ms"
[[device.points]]
name = "alarm"
table = "discrete_input"
address = 0
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
"#,
        data = dir.join("data").display(),
        rules = dir.join("rules").display(),
        zones = zones.join(", "),
        det = det.local_addr(),
    );
    for (d, chunk) in cams.chunks(PER_DEVICE).enumerate() {
        text.push_str(&format!(
            "[[device]]\nid = \"cams_{d}\"\ndriver = \"onvif\"\nlocation = \"main/A/1\"\n\
             [device.snapshots]\ndir = \"{}\"\n",
            dir.join("snapshots").display()
        ));
        for (j, cam) in chunk.iter().enumerate() {
            let i = d * PER_DEVICE + j;
            text.push_str(&format!(
                "[[device.camera]]\ndevice = \"cam_{i}\"\nlocation = \"main/A/1/{}\"\n\
                 xaddr = \"{}\"\nuser = \"bench\"\npassword_file = \"{}\"\n",
                zone_of(i, zone_cameras),
                cam.xaddr(),
                dir.join("camera.pass").display()
            ));
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
        o.zone_cameras >= 1 && o.zone_cameras <= o.cameras,
        "--zone-cameras must be between 1 and --cameras"
    );
    let dir = BenchDir::create(o.data_dir.clone(), "video")?;
    std::fs::create_dir_all(dir.path().join("rules"))?;
    std::fs::write(dir.path().join("rules/bench.toml"), RULE)?;
    let pass = dir.path().join("camera.pass");
    std::fs::write(&pass, "bench-camera-password\n")?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600))?;
    }
    let det = Simulator::start().await?;
    let mut cams = Vec::with_capacity(o.cameras);
    for _ in 0..o.cameras {
        cams.push(SimCamera::start(Some(("bench", "bench-camera-password"))).await?);
    }
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        config_text(dir.path(), &det, &cams, o.zone_cameras),
    )?;
    let started = Instant::now();
    let mut gw = super::GatewayChild::spawn(dir.path(), &config)?;
    let outcome = measure(&o, &dir, &det, &cams, gw.pid, started, &mut gw.child).await;
    gw.finish(outcome).await
}

async fn measure(
    o: &BenchOptions,
    dir: &BenchDir,
    det: &Simulator,
    cams: &[SimCamera],
    pid: u32,
    started: Instant,
    child: &mut tokio::process::Child,
) -> anyhow::Result<VideoResult> {
    let deadline = started + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("the gateway exited during start-up: {status}");
        }
        if cams.iter().all(|c| c.live_subscriptions() >= 1) {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {} cameras subscribed after 300 s",
            cams.iter().filter(|c| c.live_subscriptions() >= 1).count(),
            cams.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let subscribed_all_secs = started.elapsed().as_secs_f64();
    let rss_subscribed_mib = rss_mib(pid)?;
    let cpu0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(o.steady_secs)).await;
    let steady_cpu_percent =
        (cpu_ticks(pid)? - cpu0) as f64 / clock_ticks() / t0.elapsed().as_secs_f64() * 100.0;

    let reader = JournalReader::open(&dir.path().join("data/journal.db"))?;
    let zone: Vec<String> = (0..o.zone_cameras).map(|i| format!("cam_{i}")).collect();
    let mut after = 0u64;
    let mut out = Vec::with_capacity(o.samples);
    // The first sample warms the snapshot connections; it is not counted.
    for i in 0..=o.samples {
        let (ms, last) = sample(&reader, det, &zone, after)
            .await
            .with_context(|| format!("sample {i}"))?;
        after = last;
        if i > 0 {
            out.push(ms);
        }
    }
    Ok(VideoResult {
        bench: "video",
        cameras: o.cameras,
        zone_cameras: o.zone_cameras,
        subscribed_all_secs,
        rss_subscribed_mib,
        rss_after_samples_mib: rss_mib(pid)?,
        steady_cpu_percent,
        samples: o.samples,
        snapshots_p50_ms: quantile(&out, 0.50),
        snapshots_p99_ms: quantile(&out, 0.99),
        snapshots_max_ms: quantile(&out, 1.0),
    })
}

/// One fire alarm → every zone camera's `video.snapshot` committed; returns the latency in
/// milliseconds and the seq to continue after.
async fn sample(
    reader: &JournalReader,
    det: &Simulator,
    zone: &[String],
    after: u64,
) -> anyhow::Result<(f64, u64)> {
    let end = Instant::now() + Duration::from_secs(30);
    det.set_discrete_input(0, true);
    let mut from = after;
    let mut alarm = None;
    let mut pending: std::collections::BTreeSet<&str> = zone.iter().map(String::as_str).collect();
    let seen = loop {
        let page = reader.after(from, None, 10_000)?;
        for e in &page {
            match e.kind.as_str() {
                "fire.alarm" if e.source.device.as_str() == "det" => alarm = Some(e.clone()),
                "video.snapshot" if alarm.is_some() => {
                    pending.remove(e.source.device.as_str());
                }
                _ => {}
            }
        }
        if let Some(last) = page.last() {
            from = last.seq;
        }
        if alarm.is_some() && pending.is_empty() {
            break Utc::now();
        }
        anyhow::ensure!(
            Instant::now() < end,
            "fire alarm {}; snapshots missing from {pending:?} after 30 s",
            if alarm.is_some() {
                "journaled"
            } else {
                "never journaled"
            }
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let alarm = alarm.context("no fire alarm")?;
    det.set_discrete_input(0, false);
    loop {
        let page = reader.after(from, None, 10_000)?;
        let reset = page
            .iter()
            .any(|e| e.kind.as_str() == "fire.reset" && e.source.device.as_str() == "det");
        if let Some(last) = page.last() {
            from = last.seq;
        }
        if reset {
            break;
        }
        anyhow::ensure!(Instant::now() < end, "no fire.reset journaled");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let ms = (seen - alarm.received_at).num_microseconds().unwrap_or(0) as f64 / 1000.0;
    Ok((ms, from))
}

/// The child's resident set in MiB (`VmRSS` of `/proc/<pid>/status`).
pub(crate) fn rss_mib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")?;
    Ok(kb / 1024.0)
}

/// The child's user + system CPU time in clock ticks (`/proc/<pid>/stat` fields 14 and 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces; the fields after it are fixed.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc/<pid>/stat")?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .context("unreadable /proc/<pid>/stat field")
    };
    // After the ')' the first field is the state (field 3), so utime (14) is index 11.
    Ok(field(11)? + field(12)?)
}

/// Clock ticks per second of `/proc/<pid>/stat`: Linux reports them in USER_HZ, which is
/// 100 on every architecture whatever the kernel's own tick rate.
fn clock_ticks() -> f64 {
    100.0
}
