//! `campusgw bench dc09`: the SIA DC-09 receiver (`driver = "dc09"`) seen from the panels.
//!
//! The bench starts a real gateway in this process (config parsed and validated like a
//! file, SQLite journal with `synchronous=FULL` in a fresh directory, one `dc09` receiver
//! on a free loopback port, TCP and UDP) and drives it with simulated panels
//! ([`campusgw_dc09::sim::PanelSim`]) that run on a runtime of their own (threads named
//! `dc09-bench-sim`), so the gateway's CPU can be told apart from theirs. Every panel is a
//! configured `[[account]]`, so each frame takes the production path.
//!
//! Two phases:
//! - **latency**: one TCP panel sends `frames` ADM-CID alarms (panic, intrusion, fire in
//!   turn, each a zone of its own, so each is a new event and waits for its own commit),
//!   paced at `rate` per second, one at a time. A latency is from handing the event to the
//!   simulator to the simulator holding the matching ACK: encode, socket write, decode,
//!   the journal commit with its fsync, the ACK, the socket read.
//! - **supervision** (with `panels` > 0): that many panels (even ones TCP, odd ones UDP),
//!   each sending a NULL every `supervision` divided by `speedup`, starting at a random
//!   moment within the first interval, and after a NULL, with probability `alarm_ratio`,
//!   an alarm. The receiver's supervision timeout per account is twice the interval. It
//!   runs for `duration` (default: three intervals). Reported: the gateway's CPU (the
//!   process's CPU time minus the simulator threads', from `/proc/self/stat` and
//!   `/proc/self/task/*/stat`: the workspace forbids `unsafe`, so no `getrusage` call;
//!   the kernel keeps the same counters), RSS (the whole process, simulators included: an
//!   upper bound; the figure before the panels started is given too), ACK p50/p99 of every
//!   frame and of the alarms, and the `device.offline` events of panel accounts (must be 0).
//!
//! With `arc`, the gateway also has a police uplink (`kind = "dc09"`, the default filter:
//! panic and intrusion, not fire) to an ARC simulator ([`campusgw_dc09::sim::ArcSim`], on
//! the simulator runtime), and each panic or intrusion alarm of the latency phase is also
//! timed from handing it to the panel to the ARC holding it (the ARC answers its ACK in the
//! same step): panel → receiver → journal commit → uplink feed → DC-09 transmitter → ARC.
//!
//! Afterwards the journal must hold exactly one event per ACKed alarm. The last stdout line
//! is one JSON object; the exit code is 1 if a frame went unACKed, a panel was marked
//! offline, or the journal count is off.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use std::sync::Arc;

use campusgw_dc09::sim::{ArcMode, ArcSim, Outcome, PanelConfig, PanelSim, SimEvent, Transport};
use rand::Rng;

use super::{BenchDir, free_port};
use crate::app::{Gateway, RunOptions};

/// The latency panel's account; supervision panels follow from `FIRST_PANEL`.
const LATENCY_ACCOUNT: &str = "9000";
/// The first supervision panel's account number (written as 5 hex digits).
const FIRST_PANEL: u64 = 0x10000;
/// Frames before the latency measurement starts (connection, caches, first commits).
const WARM_UP: u64 = 20;
/// How long a panel waits for its ACK (SIA DC-09 panels typically wait 20-30 s).
const ACK_TIMEOUT: Duration = Duration::from_secs(20);
/// The name of the simulator runtime's threads (at most 15 characters: Linux cuts `comm`).
const SIM_THREAD: &str = "dc09-bench-sim";
/// Alarm codes in turn: panic, burglary, fire (Contact ID).
const CODES: [u16; 3] = [120, 130, 110];

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Alarm frames in the latency phase.
    pub frames: u64,
    /// Their rate, frames per second.
    pub rate: u64,
    /// Panels in the supervision phase (0: skip it).
    pub panels: u64,
    /// Each panel's NULL interval before the speed-up.
    pub supervision: Duration,
    /// Divides every interval of the supervision phase (1: real time).
    pub speedup: f64,
    /// How long the supervision phase runs (default: three scaled intervals).
    pub duration: Option<Duration>,
    /// The chance that a NULL is followed by an alarm.
    pub alarm_ratio: f64,
    /// Directory under which the temporary journal goes (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
    /// Also forward to a simulated ARC and time panel → ARC (the police uplink).
    pub arc: bool,
}

/// The last stdout line (fields in this order).
#[derive(Debug, serde::Serialize)]
struct BenchResult {
    bench: &'static str,
    frames: u64,
    rate: u64,
    ack_p50_ms: f64,
    ack_p99_ms: f64,
    ack_max_ms: f64,
    /// Panic and intrusion alarms timed to the ARC (0 without `--arc`).
    arc_alarms: u64,
    arc_p50_ms: f64,
    arc_p99_ms: f64,
    arc_max_ms: f64,
    /// Of those, the ones the ARC did not receive within the ACK timeout.
    arc_missing: u64,
    panels: u64,
    supervision_s: f64,
    speedup: f64,
    sustained_s: f64,
    supervision_frames: u64,
    supervision_alarms: u64,
    supervision_ack_p50_ms: f64,
    supervision_ack_p99_ms: f64,
    supervision_alarm_ack_p99_ms: f64,
    /// The gateway's CPU over the supervision phase, percent of one core.
    gateway_cpu_pct: f64,
    rss_before_panels_mb: f64,
    rss_mb: f64,
    rss_peak_mb: f64,
    panels_offline: u64,
    all_acked: bool,
    journaled_once: bool,
}

/// Latencies and counts of one phase (or one panel).
#[derive(Debug, Default)]
struct Phase {
    all: Vec<Duration>,
    alarms: Vec<Duration>,
    /// Panel → ARC, for the alarms the police uplink forwards (`--arc`).
    to_arc: Vec<Duration>,
    arc_missing: u64,
    unacked: u64,
    /// Alarms ACKed, so journaled.
    journaled: u64,
}

impl Phase {
    fn record(&mut self, alarm: bool, outcome: Outcome, took: Duration) {
        self.all.push(took);
        if alarm {
            self.alarms.push(took);
        }
        match outcome {
            Outcome::Acked { .. } => self.journaled += u64::from(alarm),
            _ => self.unacked += 1,
        }
    }

    fn merge(&mut self, other: Phase) {
        self.all.extend(other.all);
        self.alarms.extend(other.alarms);
        self.unacked += other.unacked;
        self.journaled += other.journaled;
    }
}

/// The `q` quantile (nearest rank) in milliseconds, rounded to microseconds.
fn quantile_ms(v: &mut [Duration], q: f64) -> f64 {
    v.sort_unstable();
    let Some(last) = v.len().checked_sub(1) else {
        return 0.0;
    };
    let at = ((q * v.len() as f64).ceil() as usize).clamp(1, last + 1) - 1;
    (v[at].as_secs_f64() * 1e6).round() / 1e3
}

/// Runs the bench and prints its result; returns the exit code.
///
/// # Errors
/// The gateway does not start, the receiver cannot be reached, the simulator runtime cannot
/// be built, or the open-files limit is too low for the panels asked for.
pub async fn run(opts: BenchOptions) -> anyhow::Result<i32> {
    super::gb26875::check_open_files(opts.panels)?;
    anyhow::ensure!(opts.speedup > 0.0, "--speedup must be above 0");
    let interval = opts.supervision.div_f64(opts.speedup);
    let dir = BenchDir::create(opts.data_dir.clone(), "bench-dc09")?;
    let port = free_port()?;
    let sims = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name(SIM_THREAD)
        .enable_all()
        .build()
        .context("cannot build the simulator runtime")?;
    let arc = if opts.arc {
        let bind = sims.spawn(ArcSim::bind(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            std::collections::HashMap::new(),
            ArcMode::Ack,
        ));
        Some(Arc::new(
            bind.await
                .context("the ARC simulator panicked")?
                .context("cannot bind the ARC simulator")?,
        ))
    } else {
        None
    };
    let text = config_text(
        dir.path(),
        port,
        opts.panels,
        interval * 2,
        arc.as_ref().map(|a| a.local_addr()),
    );
    let config = crate::config::parse(&text, &dir.path().join("bench.toml"))
        .map_err(|e| anyhow::anyhow!("bench config rejected: {e}"))?;
    let gw = Gateway::start(config, RunOptions::default()).await?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let (frames, rate) = (opts.frames, opts.rate.max(1));
    let mut latency = sims
        .spawn(latency_phase(addr, frames, rate, arc.clone()))
        .await
        .context("the latency panel panicked")??;
    let rss_before = rss_mb("VmRSS");
    let duration = opts.duration.unwrap_or(interval * 3);
    let cpu0 = cpu_ticks();
    let started = Instant::now();
    let mut fleet = Phase::default();
    if opts.panels > 0 {
        fleet = sims
            .spawn(supervision_phase(
                addr,
                opts.panels,
                interval,
                duration,
                opts.alarm_ratio,
            ))
            .await
            .context("the supervision phase panicked")?;
    }
    let wall = started.elapsed();
    let cpu1 = cpu_ticks();
    let (rss, rss_peak) = (rss_mb("VmRSS"), rss_mb("VmHWM"));
    sims.shutdown_background();
    let (alarms, offline) = count_events(&gw)?;
    gw.stop().await;

    let expected = latency.journaled + fleet.journaled;
    let all_acked = latency.unacked == 0 && fleet.unacked == 0;
    let gateway_ticks = (cpu1.process - cpu0.process).saturating_sub(cpu1.sims - cpu0.sims);
    // /proc reports CPU time in USER_HZ ticks, 100 per second on Linux.
    let cpu_pct = gateway_ticks as f64 / wall.as_secs_f64().max(1e-9);
    eprintln!(
        "latency: {} alarms at {rate}/s; supervision: {} panels, {} frames ({} alarms) in {:.1} s, \
         {} unACKed; journal: {alarms} alarms for {expected} ACKed; {offline} panels offline",
        latency.all.len(),
        opts.panels,
        fleet.all.len(),
        fleet.alarms.len(),
        wall.as_secs_f64(),
        latency.unacked + fleet.unacked,
    );
    let result = BenchResult {
        bench: "dc09",
        frames: latency.all.len() as u64,
        rate,
        ack_p50_ms: quantile_ms(&mut latency.all, 0.50),
        ack_p99_ms: quantile_ms(&mut latency.all, 0.99),
        ack_max_ms: quantile_ms(&mut latency.all, 1.0),
        arc_alarms: latency.to_arc.len() as u64 + latency.arc_missing,
        arc_p50_ms: quantile_ms(&mut latency.to_arc, 0.50),
        arc_p99_ms: quantile_ms(&mut latency.to_arc, 0.99),
        arc_max_ms: quantile_ms(&mut latency.to_arc, 1.0),
        arc_missing: latency.arc_missing,
        panels: opts.panels,
        supervision_s: opts.supervision.as_secs_f64(),
        speedup: opts.speedup,
        sustained_s: (wall.as_secs_f64() * 10.0).round() / 10.0,
        supervision_frames: fleet.all.len() as u64,
        supervision_alarms: fleet.alarms.len() as u64,
        supervision_ack_p50_ms: quantile_ms(&mut fleet.all, 0.50),
        supervision_ack_p99_ms: quantile_ms(&mut fleet.all, 0.99),
        supervision_alarm_ack_p99_ms: quantile_ms(&mut fleet.alarms, 0.99),
        gateway_cpu_pct: (cpu_pct * 10.0).round() / 10.0,
        rss_before_panels_mb: rss_before,
        rss_mb: rss,
        rss_peak_mb: rss_peak,
        panels_offline: offline,
        all_acked,
        journaled_once: alarms == expected,
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(
        if all_acked && offline == 0 && alarms == expected && latency.arc_missing == 0 {
            0
        } else {
            1
        },
    )
}

/// The i-th alarm of a panel: codes in turn, a partition and zone of its own.
fn alarm(i: u64) -> SimEvent {
    SimEvent::cid(code(i), 1 + (i / 999 % 99) as u8, 1 + (i % 999) as u16)
}

/// The i-th alarm's Contact ID code.
fn code(i: u64) -> u16 {
    CODES[(i % CODES.len() as u64) as usize]
}

fn panel(transport: Transport, addr: SocketAddr, account: &str) -> PanelConfig {
    let mut c = PanelConfig::new(transport, addr, account);
    c.ack_timeout = ACK_TIMEOUT;
    c.retries = 0;
    c
}

/// Whether the police uplink's default filter forwards the i-th alarm (not fire).
fn to_police(i: u64) -> bool {
    code(i) != 110
}

/// One TCP panel, one alarm at a time, paced at `rate`; with an ARC, each forwarded alarm
/// is also timed until the ARC holds it.
async fn latency_phase(
    addr: SocketAddr,
    frames: u64,
    rate: u64,
    arc: Option<Arc<ArcSim>>,
) -> anyhow::Result<Phase> {
    let mut sim = connect(panel(Transport::Tcp, addr, LATENCY_ACCOUNT)).await?;
    let mut at_arc = 0;
    for i in 0..WARM_UP {
        let outcome = sim.send(&alarm(i)).await?;
        anyhow::ensure!(
            matches!(outcome, Outcome::Acked { .. }),
            "the gateway on {addr} did not ACK the warm-up alarms (another process on the port?)"
        );
        at_arc += usize::from(to_police(i));
    }
    if let Some(arc) = &arc {
        anyhow::ensure!(
            arc.wait_received(at_arc, ACK_TIMEOUT).await,
            "the ARC simulator did not receive the warm-up alarms through the police uplink"
        );
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1).div_f64(rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = Phase::default();
    for i in WARM_UP..WARM_UP + frames {
        tick.tick().await;
        let started = Instant::now();
        let outcome = sim.send(&alarm(i)).await?;
        phase.record(true, outcome, started.elapsed());
        if let Some(arc) = arc.as_ref().filter(|_| to_police(i)) {
            at_arc += 1;
            if arc.wait_received(at_arc, ACK_TIMEOUT).await {
                phase.to_arc.push(started.elapsed());
            } else {
                phase.arc_missing += 1;
                at_arc = arc.received().len();
            }
        }
    }
    // The warm-up alarms are journaled too.
    phase.journaled += WARM_UP;
    Ok(phase)
}

/// `panels` panels, each a NULL per `interval` (and sometimes an alarm), for `duration`.
async fn supervision_phase(
    addr: SocketAddr,
    panels: u64,
    interval: Duration,
    duration: Duration,
    alarm_ratio: f64,
) -> Phase {
    let end = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..panels)
        .map(|p| {
            let transport = if p % 2 == 0 {
                Transport::Tcp
            } else {
                Transport::Udp
            };
            let account = panel_account(p);
            tokio::spawn(async move {
                let first = interval.mul_f64(rand::rng().random_range(0.0..1.0));
                supervised_panel(
                    panel(transport, addr, &account),
                    first,
                    interval,
                    end,
                    alarm_ratio,
                )
                .await
            })
        })
        .collect();
    let mut all = Phase::default();
    for t in tasks {
        match t.await {
            Ok(p) => all.merge(p),
            Err(_) => all.unacked += 1,
        }
    }
    all
}

/// One panel of the fleet: its first NULL after `first`, then one per `interval`.
async fn supervised_panel(
    config: PanelConfig,
    first: Duration,
    interval: Duration,
    end: tokio::time::Instant,
    alarm_ratio: f64,
) -> Phase {
    let mut phase = Phase::default();
    let start = tokio::time::Instant::now() + first;
    if start >= end {
        return phase;
    }
    tokio::time::sleep_until(start).await;
    let Ok(mut sim) = connect(config).await else {
        phase.unacked += 1;
        return phase;
    };
    let mut tick = tokio::time::interval_at(start, interval);
    let mut alarms = 0;
    loop {
        // The phase ends at `end`, not at the next NULL after it (the CPU figure is per wall second).
        tokio::select! {
            _ = tick.tick() => {}
            () = tokio::time::sleep_until(end) => return phase,
        }
        let started = Instant::now();
        match sim.null().await {
            Ok(o) => phase.record(false, o, started.elapsed()),
            Err(_) => phase.unacked += 1,
        }
        if rand::rng().random_bool(alarm_ratio.clamp(0.0, 1.0)) {
            let started = Instant::now();
            match sim.send(&alarm(alarms)).await {
                Ok(o) => phase.record(true, o, started.elapsed()),
                Err(_) => phase.unacked += 1,
            }
            alarms += 1;
        }
    }
}

/// Connects a panel, retrying briefly while the receiver binds.
async fn connect(config: PanelConfig) -> anyhow::Result<PanelSim> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match PanelSim::connect(config.clone()).await {
            Ok(sim) => return Ok(sim),
            Err(e) if Instant::now() >= deadline => {
                return Err(e)
                    .with_context(|| format!("panel cannot reach {}", config.receiver_addr));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// The account of fleet panel `p`: 5 hex digits.
fn panel_account(p: u64) -> String {
    format!("{:05X}", FIRST_PANEL + p)
}

/// The panels' alarms (`panic.alarm`, `intrusion.alarm`, `fire.alarm`) and the
/// `device.offline` events of panel accounts in the journal.
fn count_events(gw: &Gateway) -> anyhow::Result<(u64, u64)> {
    let reader = gw.journal.reader()?;
    let (mut after, mut alarms, mut offline) = (0, 0, 0);
    loop {
        let page = reader.after(after, None, 1000)?;
        let Some(last) = page.last() else {
            return Ok((alarms, offline));
        };
        after = last.seq;
        for e in &page {
            match e.kind.as_str() {
                "panic.alarm" | "intrusion.alarm" | "fire.alarm" => alarms += 1,
                "device.offline" if e.source.device.as_str().starts_with("panel_") => {
                    offline += 1;
                }
                _ => {}
            }
        }
    }
}

/// The bench gateway: one dc09 receiver, the latency panel and `panels` supervised ones.
fn config_text(
    data_dir: &Path,
    port: u16,
    panels: u64,
    timeout: Duration,
    arc: Option<SocketAddr>,
) -> String {
    let mut text = format!(
        r#"[gateway]
id = "bench-dc09"
name = "dc09 bench"
data_dir = "{data}"

[console]
listen = "127.0.0.1:0"

[[device]]
id = "alarm_rx"
driver = "dc09"
listen_tcp = "127.0.0.1:{port}"
listen_udp = "127.0.0.1:{port}"
unknown_account = "refuse"
max_connections = {conns}
max_connections_per_source = {conns}
# Every simulated panel is 127.0.0.1; at a school each has its own address and bucket.
frames_per_second = 1000000
frame_burst = 1000000
[[device.account]]
account = "{LATENCY_ACCOUNT}"
device = "latency_panel"
"#,
        data = data_dir.join("data").display(),
        conns = panels + 16,
    );
    let timeout = format!("{}ms", timeout.as_millis().max(1));
    for p in 0..panels {
        text.push_str(&format!(
            "[[device.account]]\naccount = \"{}\"\ndevice = \"panel_{p:04}\"\nsupervision = \"{timeout}\"\n",
            panel_account(p),
        ));
    }
    if let Some(arc) = arc {
        // Plain DC-09 is accepted to a loopback receiver only (the uplink refuses it to
        // any other host unless `allow_plaintext`).
        text.push_str(&format!(
            "\n[[uplink]]\nname = \"police\"\nkind = \"dc09\"\nreceivers = [\"{arc}\"]\naccount = \"5A01\"\n"
        ));
    }
    text
}

/// CPU ticks of the whole process and of the simulator threads.
#[derive(Debug, Clone, Copy)]
struct CpuTicks {
    process: u64,
    sims: u64,
}

/// utime + stime from a `/proc/.../stat` line (fields 14 and 15, after the `(comm)`).
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?.to_owned();
    let mut fields = stat.get(close + 2..)?.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((comm, utime + stime))
}

fn cpu_ticks() -> CpuTicks {
    let process = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| stat_ticks(&s))
        .map_or(0, |(_, t)| t);
    let sims = std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .filter_map(|s| stat_ticks(&s))
        .filter(|(comm, _)| comm == SIM_THREAD)
        .map(|(_, t)| t)
        .sum();
    CpuTicks { process, sims }
}

/// A `/proc/self/status` memory line (`VmRSS`, `VmHWM`) in MiB; 0 where unavailable.
fn rss_mb(field: &str) -> f64 {
    let kb = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    (kb / 1024.0 * 10.0).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::stat_ticks;

    #[test]
    fn cpu_ticks_are_read_after_a_thread_name_with_spaces_and_parentheses() {
        let line = "42 (dc09 (x) sim) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0 20 0";
        assert_eq!(stat_ticks(line), Some(("dc09 (x) sim".to_owned(), 150)));
    }
}
