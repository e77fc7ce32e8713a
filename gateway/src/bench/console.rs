//! `campusgw bench console`: a live alarm reaching a console client (issue 12: "Live alarm
//! to the browser <= 1 s p99 with 1,000 events/s of background telemetry").
//!
//! The gateway runs as a **child process** (`campusgw run`, this same binary) with a
//! `gb26875` listener, the rules runner on one rule (every `fire.alarm` raises a critical
//! alarm) and its console on a free loopback port. This process then:
//! - logs a viewer in (`campusgw admin set-password` before the start, then
//!   `POST /api/v1/login`) and opens `GET /api/v1/stream` with the classes the alarm board
//!   asks for (`--classes`, default as `console.js`), reading it with reqwest as a browser's
//!   `EventSource` would;
//! - runs `uitds` simulated UITDs uploading analog values (GB/T 26875.3 type 3, ten per
//!   frame) paced to `telemetry_rate` telemetry events per second in total, each frame
//!   waiting for its confirm (= journal commit) as a real UITD does;
//! - after 3 s of telemetry, one more UITD uploads a fire alarm every `alarm_every`, one at
//!   a time, each waiting until the stream delivers the resulting `alarm.raised` /
//!   `alarm.updated` (the rule's open alarm is updated by each further fire alarm).
//!
//! Two latencies per sample, both wall clock on one machine:
//! - **alarm → client**: the alarm event's `received_at` (stamped by the rules runner when
//!   it hands the alarm change to the journal, just before that commit) to the moment the
//!   client has the SSE event parsed;
//! - **fire → client**: the fire-alarm upload handed to the simulator to the same moment
//!   (decode, commit with fsync, tail, rules engine, its commit, the stream).
//!
//! The last stdout line is one JSON object. Debug builds are for smoke runs only: the
//! figures in bench/README.md are from release builds.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_gb26875::codec::{AnalogValue, ComponentAddress, SystemRef, TimeLabel};
use campusgw_gb26875::sim::{Delivery, SimConfig, UitdSim};
use chrono::{DateTime, Utc};
use tokio::io::AsyncWriteExt;

use super::{BenchDir, free_port, quantile};

const CENTRE: u64 = 88_888;
/// The UITD that raises the alarms; telemetry UITDs follow it.
const ALARM_UITD: u64 = 10_000;
/// Analog values per telemetry frame (each is one `telemetry` event).
const VALUES_PER_FRAME: u64 = 10;
/// How long one sample may take before the bench gives up.
const SAMPLE_LIMIT: Duration = Duration::from_secs(30);
/// Telemetry running before the first measured alarm.
const LOAD_WARM_UP: Duration = Duration::from_secs(3);

const RULE: &str = r#"
[[rule]]
id = "bench_fire"
description = "Every fire alarm raises a critical alarm"
trigger = { kinds = ["fire.alarm"] }
actions = [{ type = "alarm", severity = "critical", title = "Fire alarm" }]
"#;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Alarms measured.
    pub samples: usize,
    /// Telemetry events per second in the background (0: none).
    pub telemetry_rate: u64,
    /// UITD connections carrying the telemetry.
    pub uitds: u64,
    /// One alarm this often (the next waits for the last to arrive in any case).
    pub alarm_every: Duration,
    /// `classes` of the stream (empty: every class).
    pub classes: String,
    /// Directory under which the gateway's data goes (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
}

/// The last stdout line.
#[derive(Debug, serde::Serialize)]
struct ConsoleResult {
    bench: &'static str,
    samples: usize,
    telemetry_target_per_sec: u64,
    telemetry_events_per_sec: f64,
    seconds: f64,
    telemetry_unconfirmed: u64,
    classes: String,
    alarm_to_client_p50_ms: f64,
    alarm_to_client_p99_ms: f64,
    alarm_to_client_max_ms: f64,
    fire_to_client_p50_ms: f64,
    fire_to_client_p99_ms: f64,
    fire_to_client_max_ms: f64,
}

/// The child gateway, killed on drop.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

fn config_text(data: &Path, rules: &Path, console: u16, fire: u16, uitds: u64) -> String {
    let mut text = format!(
        r#"[gateway]
id = "bench-console"
name = "console bench"
data_dir = "{data}"

[console]
listen = "127.0.0.1:{console}"

[rules]
dir = "{rules}"

[[device]]
id = "fire_listener"
driver = "gb26875"
listen = "127.0.0.1:{fire}"
centre_address = {CENTRE}
heartbeat_timeout = "90s"
"#,
        data = data.display(),
        rules = rules.display(),
    );
    for u in 0..=uitds {
        text.push_str(&format!(
            "[[device.uitd]]\naddress = {}\ndevice = \"uitd_{u:04}\"\n",
            ALARM_UITD + u,
        ));
    }
    text
}

/// Runs the bench; prints one JSON line; returns the exit code.
///
/// # Errors
/// Start-up failures, or an alarm that never reaches the stream.
pub async fn run(o: BenchOptions) -> anyhow::Result<i32> {
    anyhow::ensure!(o.samples > 0, "--samples must be at least 1");
    let dir = BenchDir::create(o.data_dir.clone(), "console")?;
    let data = dir.path().join("data");
    let rules = dir.path().join("rules");
    std::fs::create_dir_all(&rules)?;
    std::fs::write(rules.join("bench.toml"), RULE)?;
    let (console_port, fire_port) = (free_port()?, free_port()?);
    let config = dir.path().join("gateway.toml");
    std::fs::write(
        &config,
        config_text(&data, &rules, console_port, fire_port, o.uitds.max(1)),
    )?;
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let password = crate::console::auth::random_token();
    set_password(&exe, &data, &password).await?;
    let child = Child(
        tokio::process::Command::new(&exe)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("CAMPUSGW_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the gateway")?,
    );
    let base = format!("http://127.0.0.1:{console_port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    wait_healthy(&http, &base).await?;
    let cookie = login(&http, &base, &password).await?;
    let fire_addr: SocketAddr = ([127, 0, 0, 1], fire_port).into();
    let alarm_sim = connect(fire_addr, ALARM_UITD).await?;

    let mut stream = Stream::open(&http, &base, &cookie, &o.classes).await?;
    // Warm-up: the first alarm raises, later ones update the same open alarm.
    sample(&alarm_sim, &mut stream, 0)
        .await
        .context("warm-up alarm")?;

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let unconfirmed = Arc::new(AtomicU64::new(0));
    let mut load = Vec::new();
    if o.telemetry_rate > 0 {
        let uitds = o.uitds.max(1);
        let frames_per_sec = (o.telemetry_rate as f64 / VALUES_PER_FRAME as f64) / uitds as f64;
        let every = Duration::from_secs_f64(1.0 / frames_per_sec.max(0.001));
        for u in 1..=uitds {
            let sim = connect(fire_addr, ALARM_UITD + u).await?;
            let (stop, sent, unconfirmed) = (stop.clone(), sent.clone(), unconfirmed.clone());
            load.push(tokio::spawn(async move {
                telemetry(sim, u, every, &stop, &sent, &unconfirmed).await;
            }));
        }
    }
    // The telemetry reaches its pace before anything is measured.
    tokio::time::sleep(LOAD_WARM_UP).await;
    let sent_before = sent.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut alarm_ms = Vec::with_capacity(o.samples);
    let mut fire_ms = Vec::with_capacity(o.samples);
    let mut pace = tokio::time::interval(o.alarm_every.max(Duration::from_millis(1)));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 1..=o.samples {
        pace.tick().await;
        let (a, f) = sample(&alarm_sim, &mut stream, i as u64)
            .await
            .with_context(|| format!("sample {i}"))?;
        alarm_ms.push(a);
        fire_ms.push(f);
    }
    let secs = started.elapsed().as_secs_f64();
    let sent_during = sent.load(Ordering::SeqCst) - sent_before;
    stop.store(true, Ordering::SeqCst);
    for t in load {
        let _ = t.await;
    }
    drop(child);
    let result = ConsoleResult {
        bench: "console",
        samples: o.samples,
        telemetry_target_per_sec: o.telemetry_rate,
        telemetry_events_per_sec: sent_during as f64 / secs.max(1e-9),
        seconds: secs,
        telemetry_unconfirmed: unconfirmed.load(Ordering::SeqCst),
        classes: o.classes,
        alarm_to_client_p50_ms: quantile(&alarm_ms, 0.50),
        alarm_to_client_p99_ms: quantile(&alarm_ms, 0.99),
        alarm_to_client_max_ms: quantile(&alarm_ms, 1.0),
        fire_to_client_p50_ms: quantile(&fire_ms, 0.50),
        fire_to_client_p99_ms: quantile(&fire_ms, 0.99),
        fire_to_client_max_ms: quantile(&fire_ms, 1.0),
    };
    println!("{}", serde_json::to_string(&result)?);
    Ok(0)
}

async fn set_password(exe: &Path, data: &Path, password: &str) -> anyhow::Result<()> {
    std::fs::create_dir_all(data)?;
    let mut c = tokio::process::Command::new(exe)
        .args([
            "admin",
            "set-password",
            "--user",
            "bench",
            "--role",
            "viewer",
        ])
        .arg("--data-dir")
        .arg(data)
        .env("CAMPUSGW_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("campusgw admin set-password")?;
    if let Some(mut stdin) = c.stdin.take() {
        stdin.write_all(format!("{password}\n").as_bytes()).await?;
    }
    let status = c.wait().await?;
    anyhow::ensure!(status.success(), "admin set-password failed: {status}");
    Ok(())
}

async fn wait_healthy(http: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < end, "the gateway never became healthy");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn login(http: &reqwest::Client, base: &str, password: &str) -> anyhow::Result<String> {
    let r = http
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({ "user": "bench", "password": password }))
        .send()
        .await?;
    anyhow::ensure!(r.status().is_success(), "login: {}", r.status());
    let set = r
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .context("login set no cookie")?;
    Ok(set.split(';').next().unwrap_or_default().to_owned())
}

async fn connect(addr: SocketAddr, uitd: u64) -> anyhow::Result<UitdSim> {
    let mut config = SimConfig::new(uitd, CENTRE);
    config.confirm_timeout = Duration::from_secs(10);
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match UitdSim::connect(addr, config.clone()).await {
            Ok(sim) => return Ok(sim),
            Err(e) if Instant::now() >= end => {
                return Err(e).with_context(|| format!("UITD {uitd} cannot connect to {addr}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Uploads a frame of analog values every `every` until `stop`.
async fn telemetry(
    sim: UitdSim,
    u: u64,
    every: Duration,
    stop: &AtomicBool,
    sent: &AtomicU64,
    unconfirmed: &AtomicU64,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut i: u64 = 0;
    while !stop.load(Ordering::SeqCst) {
        tick.tick().await;
        let time = TimeLabel::from_utc(Utc::now());
        let values = (0..VALUES_PER_FRAME)
            .map(|k| AnalogValue {
                system: SystemRef {
                    system_type: 1,
                    system_address: 1,
                },
                component_type: 30,
                component_address: ComponentAddress::from_parts(
                    (u % 64) as u16 + 1,
                    (k + 1) as u16,
                ),
                analog_type: 3,
                value: ((i + k) % 400) as i16,
                time,
            })
            .collect();
        i += 1;
        match sim
            .upload(Some(campusgw_gb26875::codec::Adu::ComponentAnalog(values)))
            .await
        {
            Delivery::Confirmed { .. } => {
                sent.fetch_add(VALUES_PER_FRAME, Ordering::Relaxed);
            }
            Delivery::Closed => {
                unconfirmed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            _ => {
                unconfirmed.fetch_add(1, Ordering::Relaxed);
            }
        }
        sim.clear_received();
    }
}

/// One fire alarm: (alarm → client, fire → client) in milliseconds.
async fn sample(sim: &UitdSim, stream: &mut Stream, i: u64) -> anyhow::Result<(f64, f64)> {
    let sent_at = Utc::now();
    let component = ComponentAddress::from_parts(1, (i % 200) as u16 + 1);
    let upload = sim.fire_alarm(component, "三楼东侧走廊感烟探测器");
    let (delivery, seen) = tokio::join!(upload, async {
        tokio::time::timeout(SAMPLE_LIMIT, stream.next_alarm_after(sent_at)).await
    });
    sim.clear_received();
    anyhow::ensure!(
        delivery.is_confirmed(),
        "the fire alarm was not confirmed: {delivery:?}"
    );
    let (received_at, at) = seen
        .context("no alarm on the stream in time")?
        .context("the stream broke")?;
    let ms = |from: DateTime<Utc>| (at - from).num_microseconds().unwrap_or(0) as f64 / 1000.0;
    Ok((ms(received_at), ms(sent_at)))
}

/// The SSE stream as a browser's EventSource reads it.
struct Stream {
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl Stream {
    async fn open(
        http: &reqwest::Client,
        base: &str,
        cookie: &str,
        classes: &str,
    ) -> anyhow::Result<Stream> {
        let url = if classes.is_empty() {
            format!("{base}/api/v1/stream")
        } else {
            format!("{base}/api/v1/stream?classes={classes}")
        };
        let response = http
            .get(url)
            .header("cookie", cookie)
            .header("accept", "text/event-stream")
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "stream: {}",
            response.status()
        );
        Ok(Stream {
            response,
            buffer: Vec::new(),
        })
    }

    /// The next `alarm` SSE event whose alarm change was journaled after `after`: its
    /// `received_at` and when it was read here.
    async fn next_alarm_after(
        &mut self,
        after: DateTime<Utc>,
    ) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
        loop {
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                let is_alarm = text.lines().any(|l| l == "event: alarm");
                if !is_alarm {
                    continue;
                }
                let now = Utc::now();
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect::<Vec<_>>()
                    .join("\n");
                let v: serde_json::Value = serde_json::from_str(&data)?;
                let kind = v["kind"].as_str().unwrap_or_default();
                if kind != "alarm.raised" && kind != "alarm.updated" {
                    continue;
                }
                let received: DateTime<Utc> = v["received_at"]
                    .as_str()
                    .context("alarm event without received_at")?
                    .parse()?;
                if received >= after {
                    return Ok((received, now));
                }
            }
            let chunk = self.response.chunk().await?.context("the stream ended")?;
            self.buffer.extend_from_slice(&chunk);
        }
    }
}
