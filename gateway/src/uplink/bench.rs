//! `campusgw bench forward`: fills a fresh journal with N events of mixed classes, drains it
//! through the MQTT uplink (QoS 1) and prints one JSON line with the rate.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusgw_sdk::{DeviceId, Event, Location};
use tokio_util::sync::CancellationToken;

use super::UplinkContext;
use super::config::{BrokerAddr, MqttConfig, MqttProtocol, TlsFiles};
use super::filter::Filter;
use super::mqtt::MqttUplink;
use super::status::UplinkStatus;
use crate::bench::{BenchDir, mixed_event};
use crate::journal::{Journal, JournalOptions};

/// Options of `campusgw bench forward`.
#[derive(Debug, Clone)]
pub struct ForwardBench {
    /// Events to journal and forward.
    pub events: u64,
    /// `mqtt://` or `mqtts://` broker.
    pub broker: String,
    /// CA for `mqtts://`.
    pub ca: Option<PathBuf>,
    /// In-flight window.
    pub inflight: u16,
    /// Where the temporary journal goes (default: the system temp dir).
    pub data_dir: Option<PathBuf>,
}

/// Runs the benchmark; returns the exit code.
///
/// # Errors
/// Journal, broker address or timeout errors.
pub async fn forward(b: ForwardBench) -> anyhow::Result<i32> {
    let broker = BrokerAddr::parse(&b.broker).map_err(anyhow::Error::msg)?;
    let tls = broker.tls;
    let dir = BenchDir::create(b.data_dir.clone(), "forward")?;
    let (events, secs) = run(b, broker, dir.path()).await?;
    println!(
        "{}",
        serde_json::json!({"bench": "forward", "events": events, "seconds": secs, "events_per_sec": events as f64 / secs, "qos": 1, "tls": tls})
    );
    Ok(0)
}

async fn run(
    b: ForwardBench,
    broker: BrokerAddr,
    dir: &std::path::Path,
) -> anyhow::Result<(u64, f64)> {
    let (journal, writer) = Journal::open(JournalOptions::new(dir.join("journal.db")))?;
    let gw = DeviceId::new("bench-gw").map_err(anyhow::Error::msg)?;
    let fill = Instant::now();
    let mut i = 0;
    while i < b.events {
        let n = (b.events - i).min(8192);
        journal
            .append(
                (i..i + n)
                    .map(|k| Event::stamp(mixed_event(k), &gw, "bench", &Location::default()))
                    .collect(),
            )
            .await?;
        i += n;
    }
    eprintln!(
        "journaled {} events in {:.2}s",
        b.events,
        fill.elapsed().as_secs_f64()
    );
    let cfg = MqttConfig {
        name: "bench".into(),
        broker,
        protocol: MqttProtocol::V311,
        tls: TlsFiles {
            ca_file: b.ca.clone(),
            client: None,
        },
        credentials: None,
        topic_prefix: "campusgw-bench".into(),
        inflight: b.inflight.max(1),
        keep_alive: Duration::from_secs(30),
        heartbeat: Duration::from_secs(30),
        ack_timeout: Duration::from_secs(60),
        backoff: (Duration::from_millis(200), Duration::from_secs(2)),
        commands: None,
        snapshots: Default::default(),
    };
    let shutdown = CancellationToken::new();
    let cx = UplinkContext {
        journal: journal.clone(),
        gateway_id: gw,
        commands: None,
        drivers: None,
        shutdown: shutdown.clone(),
    };
    let status = UplinkStatus::new("bench", "mqtt");
    let started = Instant::now();
    let task =
        tokio::spawn(MqttUplink::new(Arc::new(cfg), Filter::default(), cx, status.clone()).run());
    let deadline = started + Duration::from_secs(1800);
    while status.snapshot().confirmed < b.events {
        anyhow::ensure!(
            Instant::now() < deadline,
            "forwarding did not finish within 30 minutes"
        );
        if let Some(e) = status.snapshot().last_error {
            eprintln!("uplink: {e}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    if let Ok(s) = std::fs::read_to_string("/proc/self/status")
        && let Some(l) = s.lines().find(|l| l.starts_with("VmHWM"))
    {
        eprintln!("peak RSS {}", l.trim_start_matches("VmHWM:").trim());
    }
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok((b.events, secs))
}
