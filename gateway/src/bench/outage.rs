//! `campusgw bench outage`: alarm latency across a county broker outage (issue 22).
//!
//! Per run: a real mosquitto on an ephemeral loopback port (persistent sessions, stopped
//! with SIGTERM and started again on the same port), a fresh journal and the MQTT uplink
//! with its shipped back-off (1 s doubling to 60 s) and urgency defaults (`life_safety`
//! urgent, 1 s cap). The uplink delivers a first event, the broker stops, `--alarms` fire
//! alarms and `--telemetry` readings are journaled, the broker stays away `--outage`
//! seconds and comes back. Measured from the moment the broker accepts connections again:
//! the first alarm and all alarms arriving at a subscriber (persistent session on
//! `.../events/life_safety/#`), and the drain rate of the rest (events confirmed by the
//! broker per second). Then, with only telemetry pending, the broker stops again for
//! `--outage` seconds and the uplink's connect attempts are counted (the long back-off:
//! no reconnect storm against a broker serving hundreds of schools).
//!
//! Prints one JSON line; figures go to bench/README.md (release builds, by the lead).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use tokio_util::sync::CancellationToken;

use super::{BenchDir, free_port, quantile};
use crate::journal::{Journal, JournalOptions};
use crate::uplink::UplinkContext;
use crate::uplink::config::{BrokerAddr, MqttConfig, MqttProtocol, TlsFiles};
use crate::uplink::filter::Filter;
use crate::uplink::mqtt::MqttUplink;
use crate::uplink::status::{LinkState, UplinkStatus};

/// Options of `campusgw bench outage`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Runs (each with a fresh broker and journal).
    pub runs: usize,
    /// Seconds the broker stays away.
    pub outage: Duration,
    /// Fire alarms journaled during the outage.
    pub alarms: u64,
    /// Telemetry events journaled during the outage.
    pub telemetry: u64,
    /// The mosquitto executable (default: on the PATH, else /usr/sbin/mosquitto).
    pub mosquitto: Option<PathBuf>,
    /// Where the journals go (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
}

/// One run's figures, seconds.
struct RunFigures {
    first_alarm: f64,
    all_alarms: f64,
    drain_per_sec: f64,
    drain_seconds: f64,
    idle_attempts: u64,
}

/// Runs the benchmark; prints one JSON line; returns the exit code.
///
/// # Errors
/// mosquitto missing or not starting, journal errors, a run exceeding its time limit.
pub async fn run(o: BenchOptions) -> anyhow::Result<i32> {
    let exe = o.mosquitto.clone().unwrap_or_else(mosquitto);
    let mut runs = Vec::new();
    for i in 0..o.runs.max(1) {
        let dir = BenchDir::create(o.data_dir.clone(), "outage")?;
        let f = one_run(&o, &exe, dir.path())
            .await
            .with_context(|| format!("run {}", i + 1))?;
        eprintln!(
            "run {}: broker back -> first alarm {:.3}s, all {} alarms {:.3}s, drain {:.0} events/s, {} connect attempts in {}s with only telemetry pending",
            i + 1,
            f.first_alarm,
            o.alarms,
            f.all_alarms,
            f.drain_per_sec,
            f.idle_attempts,
            o.outage.as_secs()
        );
        runs.push(f);
    }
    let col = |g: fn(&RunFigures) -> f64| runs.iter().map(g).collect::<Vec<f64>>();
    let first = col(|f| f.first_alarm);
    let all = col(|f| f.all_alarms);
    let drain = col(|f| f.drain_per_sec);
    let drain_s = col(|f| f.drain_seconds);
    let attempts: Vec<u64> = runs.iter().map(|f| f.idle_attempts).collect();
    println!(
        "{}",
        serde_json::json!({
            "bench": "outage",
            "runs": runs.len(),
            "outage_seconds": o.outage.as_secs_f64(),
            "alarms": o.alarms,
            "telemetry": o.telemetry,
            "backoff": {"base_seconds": 1, "max_seconds": 60, "urgent_max_seconds": 1},
            "broker_back_to_first_alarm_seconds": {"p50": quantile(&first, 0.5), "p99": quantile(&first, 0.99), "max": quantile(&first, 1.0)},
            "broker_back_to_all_alarms_seconds": {"p50": quantile(&all, 0.5), "p99": quantile(&all, 0.99), "max": quantile(&all, 1.0)},
            "drain_events_per_sec": {"p50": quantile(&drain, 0.5), "min": quantile(&drain, 0.0)},
            "drain_seconds": {"p50": quantile(&drain_s, 0.5), "max": quantile(&drain_s, 1.0)},
            "telemetry_only_connect_attempts": {"per_run": attempts, "window_seconds": o.outage.as_secs_f64()},
            "targets": {"first_alarm_p99_seconds": 2.0, "all_alarms_seconds": 3.0},
        })
    );
    Ok(0)
}

async fn one_run(o: &BenchOptions, exe: &Path, dir: &Path) -> anyhow::Result<RunFigures> {
    let mut broker = Mosquitto::start(exe, dir).await?;
    let (journal, writer) = Journal::open(JournalOptions::new(dir.join("journal.db")))?;
    let gw = DeviceId::new("bench-gw").map_err(anyhow::Error::msg)?;
    let sub = AlarmSubscriber::start(broker.port, &gw).await?;
    let cfg = MqttConfig {
        name: "county".into(),
        broker: BrokerAddr::parse(&format!("mqtt://127.0.0.1:{}", broker.port))
            .map_err(anyhow::Error::msg)?,
        protocol: MqttProtocol::V311,
        tls: TlsFiles {
            ca_file: None,
            client: None,
        },
        credentials: None,
        topic_prefix: "campusgw".into(),
        inflight: 100,
        keep_alive: Duration::from_secs(30),
        heartbeat: Duration::from_secs(30),
        ack_timeout: Duration::from_secs(60),
        // The shipped bounds (uplink/config.rs).
        backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        commands: None,
        snapshots: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let cx = UplinkContext {
        journal: journal.clone(),
        gateway_id: gw.clone(),
        commands: None,
        drivers: None,
        shutdown: shutdown.clone(),
    };
    let status = UplinkStatus::new("county", "mqtt");
    let task =
        tokio::spawn(MqttUplink::new(Arc::new(cfg), Filter::default(), cx, status.clone()).run());
    let stamp = |n: NewEvent| Event::stamp(n, &gw, "bench", &Location::default());
    journal
        .append(vec![stamp(NewEvent::new(
            Kind::from_static("gateway.hello"),
            Class::Operations,
        ))])
        .await?;
    wait("the first delivery", Duration::from_secs(60), || {
        status.snapshot().confirmed >= 1
    })
    .await?;

    // The outage with alarms and a telemetry backlog.
    broker.stop().await;
    let down = Instant::now();
    wait("the outage noticed", Duration::from_secs(60), || {
        status.state() == LinkState::Down
    })
    .await?;
    let mut alarms_left = o.alarms;
    let mut tele_left = o.telemetry;
    // Alarms spread through the backlog: one per telemetry chunk until none is left.
    let chunk = (o.telemetry / o.alarms.max(1)).clamp(1, 8192);
    while alarms_left > 0 || tele_left > 0 {
        let n = tele_left.min(chunk);
        let mut batch: Vec<Event> = (0..n)
            .map(|k| {
                stamp(
                    NewEvent::new(Kind::from_static("sensor.reading"), Class::Telemetry).payload(
                        serde_json::json!({"point": format!("p{}", k % 2000), "value": k}),
                    ),
                )
            })
            .collect();
        tele_left -= n;
        if alarms_left > 0 {
            batch.push(stamp(
                NewEvent::new(Kind::from_static("fire.alarm"), Class::LifeSafety)
                    .payload(serde_json::json!({"zone": alarms_left})),
            ));
            alarms_left -= 1;
        }
        journal.append(batch).await?;
    }
    let journaled_in = down.elapsed();
    if journaled_in > o.outage {
        eprintln!(
            "journaling the backlog took {:.1}s, longer than the {}s outage",
            journaled_in.as_secs_f64(),
            o.outage.as_secs()
        );
    }
    tokio::time::sleep(o.outage.saturating_sub(down.elapsed())).await;
    let confirmed_before = status.snapshot().confirmed;
    broker.start_again().await?;
    let back = Instant::now();
    let want = usize::try_from(o.alarms).unwrap_or(usize::MAX);
    wait(
        "every alarm at the subscriber",
        Duration::from_secs(600),
        || sub.count() >= want,
    )
    .await?;
    let times = sub.times();
    let rel = |t: Instant| t.saturating_duration_since(back).as_secs_f64();
    let first_alarm = times.first().copied().map_or(f64::NAN, rel);
    let all_alarms = times
        .get(want.saturating_sub(1))
        .copied()
        .map_or(f64::NAN, rel);
    let total = confirmed_before + o.alarms + o.telemetry;
    wait("the backlog drained", Duration::from_secs(3600), || {
        status.snapshot().confirmed >= total
    })
    .await?;
    let drain_seconds = back.elapsed().as_secs_f64();
    let drain_per_sec = (o.alarms + o.telemetry) as f64 / drain_seconds;

    // Only telemetry pending: count connect attempts over one outage.
    broker.stop().await;
    wait("the second outage noticed", Duration::from_secs(60), || {
        status.state() == LinkState::Down
    })
    .await?;
    let before = status.connect_attempts();
    journal
        .append(
            (0..1000)
                .map(|k| {
                    stamp(
                        NewEvent::new(Kind::from_static("sensor.reading"), Class::Telemetry)
                            .payload(serde_json::json!({"value": k})),
                    )
                })
                .collect(),
        )
        .await?;
    tokio::time::sleep(o.outage).await;
    let idle_attempts = status.connect_attempts() - before;

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    drop(sub);
    drop(broker);
    Ok(RunFigures {
        first_alarm,
        all_alarms,
        drain_per_sec,
        drain_seconds,
        idle_attempts,
    })
}

async fn wait(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> anyhow::Result<()> {
    let end = Instant::now() + limit;
    while !cond() {
        anyhow::ensure!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// The mosquitto executable: the first on the PATH, else /usr/sbin/mosquitto.
fn mosquitto() -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("mosquitto"))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/mosquitto"))
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .and_then(|l| l.split_whitespace().nth(2))
            == Some("0")
    })
}

/// A mosquitto child on a loopback port, with persistence in the run's directory.
struct Mosquitto {
    exe: PathBuf,
    conf: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Mosquitto {
    async fn start(exe: &Path, dir: &Path) -> anyhow::Result<Mosquitto> {
        let store = dir.join("mosquitto");
        std::fs::create_dir_all(&store)?;
        for _ in 0..5 {
            let port = free_port()?;
            let conf = dir.join("mosquitto.conf");
            // As root, mosquitto would drop to its own user, who cannot write `store`.
            let user = if running_as_root() { "user root\n" } else { "" };
            std::fs::write(
                &conf,
                format!(
                    "{user}per_listener_settings false\nallow_anonymous true\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nmax_queued_bytes 0\nlog_dest stderr\nlog_type error\nlistener {port} 127.0.0.1\n",
                    store.display()
                ),
            )?;
            let mut m = Mosquitto {
                exe: exe.to_owned(),
                conf,
                port,
                child: None,
            };
            if m.launch().await? {
                return Ok(m);
            }
        }
        anyhow::bail!("mosquitto ({}) did not start in 5 attempts", exe.display())
    }

    /// Starts again on the same port (retried while the port is still held).
    async fn start_again(&mut self) -> anyhow::Result<()> {
        let end = Instant::now() + Duration::from_secs(20);
        while !self.launch().await? {
            anyhow::ensure!(
                Instant::now() < end,
                "mosquitto could not bind its port again"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Spawns it and waits until the port accepts; false if it exited first.
    async fn launch(&mut self) -> anyhow::Result<bool> {
        let child = Command::new(&self.exe)
            .arg("-c")
            .arg(&self.conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot run mosquitto ({})", self.exe.display()))?;
        let child = self.child.insert(child);
        let end = Instant::now() + Duration::from_secs(20);
        loop {
            if child.try_wait()?.is_some() {
                self.child = None;
                return Ok(false);
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return Ok(true);
            }
            anyhow::ensure!(Instant::now() < end, "mosquitto did not start");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// SIGTERM (it saves its persistent sessions) and waits for the exit.
    async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(10);
            while c.try_wait().ok().flatten().is_none() {
                if Instant::now() > end {
                    let _ = c.kill();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Payloads seen (a resend is the same payload) and when each first arrived.
type Seen = (std::collections::HashSet<Vec<u8>>, Vec<Instant>);

/// A persistent-session subscriber to the gateway's `life_safety` events, noting when each
/// distinct one first arrives.
struct AlarmSubscriber {
    seen: Arc<Mutex<Seen>>,
    task: tokio::task::JoinHandle<()>,
}

impl AlarmSubscriber {
    async fn start(port: u16, gw: &DeviceId) -> anyhow::Result<AlarmSubscriber> {
        use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
        let mut o = MqttOptions::new(
            format!("bench-sub-{}", uuid::Uuid::now_v7()),
            "127.0.0.1",
            port,
        );
        o.set_clean_session(false)
            .set_keep_alive(Duration::from_secs(5));
        let (client, mut el) = AsyncClient::new(o, 1024);
        let topic = format!("campusgw/{gw}/events/life_safety/#");
        let seen = Arc::new(Mutex::new((std::collections::HashSet::new(), Vec::new())));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut ready_tx = Some(ready_tx);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            loop {
                match el.poll().await {
                    Ok(MqttEvent::Incoming(Packet::ConnAck(_))) => {
                        let _ = client.subscribe(topic.clone(), QoS::AtLeastOnce).await;
                    }
                    Ok(MqttEvent::Incoming(Packet::SubAck(_))) => {
                        if let Some(tx) = ready_tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                        let at = Instant::now();
                        let mut g = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                        // A resend after the reconnect is the same payload (same event id).
                        if g.0.insert(p.payload.to_vec()) {
                            g.1.push(at);
                        }
                    }
                    Ok(_) => {}
                    // Reconnect quickly: the subscriber's own delay adds to the figure.
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("the bench subscriber was not subscribed within 10 s")??;
        Ok(AlarmSubscriber { seen, task })
    }

    fn count(&self) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .len()
    }

    fn times(&self) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .1
            .clone()
    }
}

impl Drop for AlarmSubscriber {
    fn drop(&mut self) {
        self.task.abort();
    }
}
