//! `campusgw bench linkage`: fire alarm in → door command out, end to end through the
//! journal (DESIGN §4 "Latency").
//!
//! An in-process gateway (config parsed like a file, SQLite journal with
//! `synchronous=FULL` in a fresh directory, the rules runner on a one-rule set) polls a
//! simulated Modbus detector input every 10 ms; the rule answers each `fire.alarm` of that
//! detector with `relay.set` on a second simulated Modbus device, the door release. A
//! latency is from the alarm event's `received_at` (stamped by the driver when the poll
//! response carrying the edge was decoded: the frame that completes the trigger) to the
//! moment the door simulator's coil is seen on (a thread polling it every 50 µs). In
//! between: the journal commit with its fsync, the tail, the engine, the rules step commit
//! (another fsync), the command router, the Modbus write. Both ends read the same wall
//! clock in one process.
//!
//! Phases: **idle** (nothing else happening) and **load** (`load_rate` telemetry events per
//! second appended to the journal in batches every 10 ms, all of which the engine also
//! consumes). Each sample: input on, wait for the coil, input off, wait for `fire.reset`
//! to be consumed, coil cleared. The last stdout line is one JSON object; stderr has the
//! p50/p99 of each stage after each phase (`print_stages`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_modbus::sim::Simulator;
use campusgw_sdk::{DeviceId, Event, Location};
use chrono::{DateTime, Utc};

use super::{BenchDir, mixed_event, quantile};
use crate::app::{Gateway, RunOptions};

const RULE: &str = r#"
[[rule]]
id = "bench_fire_door"
description = "Each fire alarm of the bench detector releases the door"
trigger = { kinds = ["fire.alarm"], devices = ["det"] }
[[rule.actions]]
type = "command"
command = "relay.set"
target = "device:door"
args = { point = "door0", on = true }
"#;

/// How long one sample may take before the bench gives up.
const SAMPLE_LIMIT: Duration = Duration::from_secs(10);

/// The last stdout line.
#[derive(Debug, serde::Serialize)]
struct LinkageResult {
    bench: &'static str,
    samples: usize,
    idle_p50_ms: f64,
    idle_p99_ms: f64,
    idle_max_ms: f64,
    load_events_per_sec: f64,
    load_p50_ms: f64,
    load_p99_ms: f64,
    load_max_ms: f64,
}

fn config_text(data: &Path, rules: &Path, det: &Simulator, door: &Simulator) -> String {
    format!(
        r#"
[gateway]
id = "bench-linkage"
name = "Linkage bench"
data_dir = "{data}"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[console]
listen = "127.0.0.1:0"
[rules]
dir = "{rules}"
[[device]]
id = "det"
driver = "modbus_tcp"
location = "main/A"
address = "{det}"
poll_interval = "10ms"
[[device.points]]
name = "alarm"
table = "discrete_input"
address = 0
on_kind = "fire.alarm"
off_kind = "fire.reset"
class = "life_safety"
[[device]]
id = "door"
driver = "modbus_tcp"
location = "main/A"
address = "{door}"
poll_interval = "1s"
[[device.points]]
name = "door0"
table = "coil"
address = 0
writable = true
"#,
        data = data.display(),
        rules = rules.display(),
        det = det.local_addr(),
        door = door.local_addr(),
    )
}

/// Runs the bench; returns the exit code.
///
/// # Errors
/// Start-up failures, or a sample that never completes.
pub async fn run(samples: usize, load_rate: u64, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let dir = BenchDir::create(data_dir, "linkage")?;
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("bench.toml"), RULE)?;
    let det = Simulator::start().await?;
    let door = Arc::new(Simulator::start().await?);
    let text = config_text(&dir.path().join("data"), &rules, &det, &door);
    let config = crate::config::parse(&text, Path::new("<bench>"))
        .map_err(|e| anyhow::anyhow!("bench config: {e}"))?;
    let gw = Gateway::start(config, RunOptions::default()).await?;
    // Warm up: connections, caches, the first commits.
    sample(&gw, &det, &door).await.context("warm-up sample")?;
    let idle = measure(&gw, &det, &door, samples).await?;
    print_stages("idle");
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(background(gw.journal.clone(), load_rate, stop.clone()));
    let loaded = measure(&gw, &det, &door, samples).await?;
    stop.store(true, Ordering::SeqCst);
    let (sent, secs) = load.await?;
    print_stages("load");
    gw.stop().await;
    let result = LinkageResult {
        bench: "linkage",
        samples,
        idle_p50_ms: quantile(&idle, 0.50),
        idle_p99_ms: quantile(&idle, 0.99),
        idle_max_ms: quantile(&idle, 1.0),
        load_events_per_sec: sent as f64 / secs.max(1e-9),
        load_p50_ms: quantile(&loaded, 0.50),
        load_p99_ms: quantile(&loaded, 0.99),
        load_max_ms: quantile(&loaded, 1.0),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(0)
}

async fn measure(
    gw: &Gateway,
    det: &Simulator,
    door: &Arc<Simulator>,
    n: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        out.push(
            sample(gw, det, door)
                .await
                .with_context(|| format!("sample {i}"))?,
        );
    }
    Ok(out)
}

/// One alarm → door latency in milliseconds.
async fn sample(gw: &Gateway, det: &Simulator, door: &Arc<Simulator>) -> anyhow::Result<f64> {
    let after = *gw.journal.committed_seq().borrow();
    let watcher = {
        let door = door.clone();
        // A thread, not a task: its 50 µs polling must not wait for the runtime.
        std::thread::spawn(move || -> Option<DateTime<Utc>> {
            let end = Instant::now() + SAMPLE_LIMIT;
            while Instant::now() < end {
                if door.coil(0) {
                    return Some(Utc::now());
                }
                std::thread::sleep(Duration::from_micros(50));
            }
            None
        })
    };
    det.set_discrete_input(0, true);
    let seen = tokio::task::spawn_blocking(move || watcher.join().ok().flatten())
        .await?
        .context("the door coil never turned on")?;
    let alarm = find(gw, after, "fire.alarm").await?;
    det.set_discrete_input(0, false);
    find(gw, alarm.seq, "fire.reset").await?;
    door.set_coil(0, false);
    Ok((seen - alarm.received_at).num_microseconds().unwrap_or(0) as f64 / 1000.0)
}

/// The first event of `kind` after `after` (waits for it).
async fn find(gw: &Gateway, after: u64, kind: &str) -> anyhow::Result<Event> {
    let reader = gw.journal.reader()?;
    let end = Instant::now() + SAMPLE_LIMIT;
    let mut from = after;
    loop {
        let page = reader.after(from, None, 10_000)?;
        if let Some(e) = page
            .iter()
            .find(|e| e.kind.as_str() == kind && e.source.device.as_str() == "det")
        {
            return Ok(e.clone());
        }
        if let Some(last) = page.last() {
            from = last.seq;
        }
        anyhow::ensure!(Instant::now() < end, "no {kind} journaled");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Appends `rate` telemetry events per second in batches every 10 ms until `stop`;
/// returns how many and over how long.
async fn background(
    journal: crate::journal::Journal,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> (u64, f64) {
    let per_tick = (rate / 100).max(1);
    let source = DeviceId::new("bench_load").expect("static id is valid");
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut sent = 0u64;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let batch: Vec<Event> = (0..per_tick)
            .map(|i| {
                // Telemetry and business only: the load must not trigger the rule.
                let n = mixed_event(sent + i);
                let n = if n.class == campusgw_sdk::Class::LifeSafety
                    || n.class == campusgw_sdk::Class::Security
                {
                    mixed_event(5)
                } else {
                    n
                };
                Event::stamp(n, &source, "bench", &Location::default())
            })
            .collect();
        if journal.append(batch).await.is_ok() {
            sent += per_tick;
        }
    }
    (sent, started.elapsed().as_secs_f64())
}

/// Prints (stderr) the p50 and p99 of each linkage stage the runner and the journal
/// record, so the total above can be split: `to_engine` (received → handed to the engine:
/// writer queue, commit with fsync, tail wake-up), `engine`, `step_commit` (the rules
/// step's own commit, concurrent with the command), `command` (router → device → result),
/// and `journal_commit_seconds` (every commit, the background load's included). The
/// figures are the recorder's running summaries, so the `load` line includes `idle`.
fn print_stages(phase: &str) {
    let text = crate::api::metrics_handle().render();
    let mut out = Vec::new();
    for line in text.lines() {
        let wanted = line.starts_with("campusgw_linkage_stage_seconds{")
            || line.starts_with("journal_commit_seconds{");
        if !wanted || !(line.contains("quantile=\"0.5\"") || line.contains("quantile=\"0.99\"")) {
            continue;
        }
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let ms = value.parse::<f64>().map_or(f64::NAN, |v| v * 1000.0);
        out.push(format!("{name} {ms:.3} ms"));
    }
    eprintln!("linkage stages after {phase}:\n  {}", out.join("\n  "));
}
