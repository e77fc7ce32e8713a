//! `campusgw bench gb26875`: upload → confirm latency of the GB/T 26875.3-2011 receiver,
//! measured where a UITD sees it.
//!
//! The bench starts a real gateway in this process (config parsed and validated like a
//! file, SQLite journal with `synchronous=FULL` in a fresh directory, one `gb26875`
//! listener on a free loopback port) and drives it with simulated UITDs
//! ([`campusgw_gb26875::sim::UitdSim`]). Each UITD is listed as a `[[device.uitd]]` (not
//! `unknown_uitd = "accept"`) so that every frame takes the production path: the address
//! lookup, the per-UITD device and its health.
//!
//! A latency is the time from handing a frame to the simulator to the simulator reading
//! its confirm (command 3): socket write, the gateway's decode, the journal commit with
//! its fsync, the confirm, the socket read. Two phases:
//! - **idle**: one connection, `idle_frames` uploads one at a time (fire alarm, fault,
//!   reset in turn: each carries one event, so each waits for its own commit);
//! - **load**: `connections` UITDs connected at once, each uploading
//!   `frames_per_connection` frames (fire alarm, fault, reset, heartbeat in turn) as fast as
//!   its confirms come back, all connections concurrently.
//!
//! Afterwards the journal must hold exactly one event per journaled upload (none lost,
//! none doubled). The last stdout line is one JSON object.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_gb26875::codec::ComponentAddress;
use campusgw_gb26875::sim::{Delivery, SimConfig, UitdSim};
use futures_util::StreamExt;

use super::{BenchDir, free_port};
use crate::app::{Gateway, RunOptions};

/// The centre's address in the bench config.
const CENTRE: u64 = 88_888;
/// The idle UITD's address; load UITDs follow it.
const FIRST_UITD: u64 = 10_000;
/// Uploads before the idle measurement starts (connection, caches, first commits).
const WARM_UP: u64 = 20;
/// Connects in flight while the load UITDs connect (stays well inside the accept backlog).
const CONNECTING: usize = 64;
/// How long a UITD waits for a confirm before retransmitting (GB/T 26875.3: ≤ 10 s).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Simultaneous UITD connections in the load phase.
    pub connections: u64,
    /// Uploads per connection in the load phase.
    pub frames_per_connection: u64,
    /// Uploads in the idle phase.
    pub idle_frames: u64,
    /// Directory under which the temporary journal goes (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
}

/// The last stdout line (fields in this order).
#[derive(Debug, serde::Serialize)]
struct BenchResult {
    bench: &'static str,
    idle_p50_ms: f64,
    idle_p99_ms: f64,
    idle_max_ms: f64,
    connections: u64,
    load_p50_ms: f64,
    load_p99_ms: f64,
    load_max_ms: f64,
    /// Uploads in the load phase.
    frames: u64,
    /// Load-phase uploads per second, first upload to last confirm.
    frames_per_sec: f64,
    /// Every upload of both phases confirmed.
    all_confirmed: bool,
    /// Every load connection still open at the end.
    sustained: bool,
    /// The journal holds exactly one event per journaled upload.
    journaled_once: bool,
}

/// One upload of the scripted mix.
#[derive(Debug, Clone, Copy)]
enum Upload {
    FireAlarm,
    Fault,
    Reset,
    Heartbeat,
}

impl Upload {
    /// The i-th upload: alarm, fault, reset (and a heartbeat when `heartbeats`) in turn.
    fn nth(i: u64, heartbeats: bool) -> Upload {
        match i % if heartbeats { 4 } else { 3 } {
            0 => Upload::FireAlarm,
            1 => Upload::Fault,
            2 => Upload::Reset,
            _ => Upload::Heartbeat,
        }
    }

    /// Whether the gateway journals an event for it (a heartbeat is activity only).
    fn journaled(self) -> bool {
        !matches!(self, Upload::Heartbeat)
    }

    /// Sends it and waits for the answer; returns the outcome and the time it took.
    async fn send(self, sim: &UitdSim, component: ComponentAddress) -> (Delivery, Duration) {
        let started = Instant::now();
        let delivery = match self {
            Upload::FireAlarm => sim.fire_alarm(component, "三楼东侧走廊感烟探测器").await,
            Upload::Fault => sim.fault(component, "三楼东侧走廊感烟探测器").await,
            Upload::Reset => sim.reset(component).await,
            Upload::Heartbeat => sim.heartbeat().await,
        };
        let took = started.elapsed();
        sim.clear_received();
        (delivery, took)
    }
}

/// What one phase measured.
#[derive(Debug, Default)]
struct Phase {
    latencies: Vec<Duration>,
    journaled: u64,
    unconfirmed: u64,
    retransmitted: u64,
}

impl Phase {
    fn record(&mut self, upload: Upload, delivery: Delivery, took: Duration) {
        self.latencies.push(took);
        match delivery {
            Delivery::Confirmed { attempts } => {
                if upload.journaled() {
                    self.journaled += 1;
                }
                if attempts > 1 {
                    self.retransmitted += 1;
                }
            }
            _ => self.unconfirmed += 1,
        }
    }

    fn merge(&mut self, other: Phase) {
        self.latencies.extend(other.latencies);
        self.journaled += other.journaled;
        self.unconfirmed += other.unconfirmed;
        self.retransmitted += other.retransmitted;
    }

    /// The `q` quantile (nearest rank) in milliseconds, rounded to microseconds.
    fn quantile_ms(&mut self, q: f64) -> f64 {
        self.latencies.sort_unstable();
        let Some(last) = self.latencies.len().checked_sub(1) else {
            return 0.0;
        };
        let at = ((q * self.latencies.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
        (self.latencies[at].as_secs_f64() * 1e6).round() / 1e3
    }
}

/// Runs the bench and prints its result; returns the exit code (1 if an upload went
/// unconfirmed or the journal does not hold exactly one event per upload).
///
/// # Errors
/// The gateway does not start, the listener cannot be reached, or the open-files limit is
/// too low for the connections asked for.
pub async fn run(opts: BenchOptions) -> anyhow::Result<i32> {
    check_open_files(opts.connections)?;
    let dir = BenchDir::create(opts.data_dir.clone(), "bench-gb26875")?;
    let port = free_port()?;
    let text = config_text(dir.path(), port, opts.connections + 1);
    let config = crate::config::parse(&text, &dir.path().join("bench.toml"))
        .map_err(|e| anyhow::anyhow!("bench config rejected: {e}"))?;
    let gw = Gateway::start(config, RunOptions::default()).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let mut idle = idle_phase(addr, opts.idle_frames).await?;
    let (mut load, load_secs, still_connected) =
        load_phase(addr, opts.connections, opts.frames_per_connection).await?;
    let expected = idle.journaled + load.journaled;
    let journaled = count_fire_events(&gw)?;
    gw.stop().await;

    let frames = load.latencies.len() as u64;
    let all_confirmed = idle.unconfirmed == 0 && load.unconfirmed == 0;
    let sustained = still_connected == opts.connections;
    eprintln!(
        "idle: {} uploads, {} retransmitted; load: {} connections, {frames} uploads in {load_secs:.2} s, \
         {} retransmitted, {still_connected} still connected; journal: {journaled} fire events \
         for {expected} journaled uploads",
        idle.latencies.len(),
        idle.retransmitted,
        opts.connections,
        load.retransmitted,
    );
    let result = BenchResult {
        bench: "gb26875",
        idle_p50_ms: idle.quantile_ms(0.50),
        idle_p99_ms: idle.quantile_ms(0.99),
        idle_max_ms: idle.quantile_ms(1.0),
        connections: opts.connections,
        load_p50_ms: load.quantile_ms(0.50),
        load_p99_ms: load.quantile_ms(0.99),
        load_max_ms: load.quantile_ms(1.0),
        frames,
        frames_per_sec: (frames as f64 / load_secs.max(1e-9)).round(),
        all_confirmed,
        sustained,
        journaled_once: journaled == expected,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(if all_confirmed && sustained && journaled == expected {
        0
    } else {
        1
    })
}

/// One UITD, one upload at a time.
async fn idle_phase(addr: SocketAddr, frames: u64) -> anyhow::Result<Phase> {
    let sim = connect(addr, FIRST_UITD, Duration::from_secs(10)).await?;
    let mut warm = Phase::default();
    for i in 0..WARM_UP {
        let upload = Upload::nth(i, false);
        let (delivery, took) = upload.send(&sim, component(0, i)).await;
        warm.record(upload, delivery, took);
    }
    anyhow::ensure!(
        warm.unconfirmed == 0,
        "the gateway on {addr} did not confirm the warm-up uploads (another process on the port?)"
    );
    let mut idle = Phase::default();
    for i in 0..frames {
        let upload = Upload::nth(i, false);
        let (delivery, took) = upload.send(&sim, component(0, i)).await;
        idle.record(upload, delivery, took);
    }
    idle.journaled += warm.journaled;
    Ok(idle)
}

/// `connections` UITDs connected first, then all uploading at once. Returns the
/// measurements, the seconds from the first upload to the last confirm, and how many
/// connections were still open at the end.
async fn load_phase(
    addr: SocketAddr,
    connections: u64,
    frames: u64,
) -> anyhow::Result<(Phase, f64, u64)> {
    let sims: Vec<(u64, UitdSim)> = futures_util::stream::iter(1..=connections)
        .map(|c| async move {
            let sim = connect(addr, FIRST_UITD + c, Duration::from_secs(30)).await;
            sim.map(|s| (c, s))
        })
        .buffer_unordered(CONNECTING)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let tasks: Vec<_> = sims
        .into_iter()
        .map(|(c, sim)| {
            tokio::spawn(async move {
                let mut phase = Phase::default();
                for i in 0..frames {
                    let upload = Upload::nth(c + i, true);
                    let (delivery, took) = upload.send(&sim, component(c, i)).await;
                    phase.record(upload, delivery, took);
                }
                (phase, sim)
            })
        })
        .collect();
    let mut load = Phase::default();
    let mut open = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (phase, sim) = t.await.context("a load UITD task panicked")?;
        load.merge(phase);
        open.push(sim);
    }
    let secs = started.elapsed().as_secs_f64();
    let still_connected = open.iter().filter(|s| !s.is_closed()).count() as u64;
    Ok((load, secs, still_connected))
}

/// A detector address that varies with the connection and the upload.
fn component(connection: u64, i: u64) -> ComponentAddress {
    ComponentAddress::from_parts(1 + (connection % 64) as u16, 1 + (i % 200) as u16)
}

/// Connects UITD `uitd`, retrying while the listener is not bound yet.
async fn connect(addr: SocketAddr, uitd: u64, within: Duration) -> anyhow::Result<UitdSim> {
    let mut config = SimConfig::new(uitd, CENTRE);
    config.confirm_timeout = CONFIRM_TIMEOUT;
    let deadline = Instant::now() + within;
    loop {
        match UitdSim::connect(addr, config.clone()).await {
            Ok(sim) => return Ok(sim),
            Err(e) if Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("UITD {uitd} cannot connect to {addr}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Counts the `fire.*` events in the journal.
fn count_fire_events(gw: &Gateway) -> anyhow::Result<u64> {
    let reader = gw.journal.reader()?;
    let (mut after, mut n) = (0, 0);
    loop {
        let page = reader.after(after, None, 1000)?;
        let Some(last) = page.last() else {
            return Ok(n);
        };
        after = last.seq;
        n += page
            .iter()
            .filter(|e| e.kind.as_str().starts_with("fire."))
            .count() as u64;
    }
}

/// The bench gateway: one gb26875 listener and `uitds` configured UITDs.
fn config_text(data_dir: &Path, port: u16, uitds: u64) -> String {
    let mut text = format!(
        r#"[gateway]
id = "bench-gb26875"
name = "gb26875 bench"
data_dir = "{data}"

[console]
listen = "127.0.0.1:0"

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:{port}"
centre_address = {CENTRE}
heartbeat_timeout = "90s"
"#,
        data = data_dir.join("data").display(),
    );
    for u in 0..uitds {
        text.push_str(&format!(
            "[[device.uitd]]\naddress = {}\ndevice = \"uitd_{u:04}\"\n",
            FIRST_UITD + u,
        ));
    }
    text
}

/// Fails early (rather than with EMFILE half-way) when the soft open-files limit cannot
/// hold both ends of every connection. Linux only; elsewhere nothing is checked.
pub(super) fn check_open_files(connections: u64) -> anyhow::Result<()> {
    let Ok(limits) = std::fs::read_to_string("/proc/self/limits") else {
        return Ok(());
    };
    let soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    let needed = 2 * connections + 256;
    match soft {
        Some(soft) if soft < needed => anyhow::bail!(
            "{connections} connections need about {needed} open files (both ends are in this \
             process) but the limit is {soft}: run `ulimit -n {needed}` first"
        ),
        _ => Ok(()),
    }
}
