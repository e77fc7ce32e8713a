//! `campusgw bench retention`: how long an alarm waits for the journal while retention
//! deletes a large expired backlog. Fills a fresh journal with N events received long ago,
//! then runs maintenance to completion while one producer appends life-safety events one at
//! a time and records each append's latency (submit → durable receipt).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, DeviceId, Event, Location, NewEvent};

use super::{BenchDir, mixed_event};
use crate::journal::{Journal, JournalOptions, RetentionPolicy};

/// Runs the benchmark; returns the exit code.
///
/// # Errors
/// Journal errors.
pub async fn run(events: u64, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let dir = BenchDir::create(data_dir, "bench-retention")?;
    let mut opts = JournalOptions::new(dir.path().join("journal.db"));
    opts.retention = RetentionPolicy {
        max_age: Duration::from_secs(3600),
        quota_bytes: u64::MAX,
    };
    let (journal, writer) = Journal::open(opts)?;
    let dev = DeviceId::new("bench").map_err(anyhow::Error::msg)?;
    let old = chrono::Utc::now() - chrono::Duration::days(2);
    let mut i = 0;
    while i < events {
        let n = (events - i).min(10_000);
        let batch: Vec<Event> = (i..i + n)
            .map(|k| {
                let mut e = Event::stamp(mixed_event(k), &dev, "bench", &Location::default());
                e.received_at = old;
                e
            })
            .collect();
        journal.append(batch).await?;
        i += n;
    }
    let stop = tokio_util::sync::CancellationToken::new();
    let alarms = {
        let j = journal.clone();
        let dev = dev.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.is_cancelled() {
                let e = Event::stamp(
                    NewEvent::new(kinds::FIRE_ALARM, Class::LifeSafety),
                    &dev,
                    "bench",
                    &Location::default(),
                );
                let t = Instant::now();
                if j.append(vec![e]).await.is_err() {
                    return lat;
                }
                lat.push(t.elapsed());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            lat
        })
    };
    let started = Instant::now();
    let report = journal.maintain().await?;
    let secs = started.elapsed().as_secs_f64();
    stop.cancel();
    let mut lat = alarms.await?;
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    lat.sort();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({"bench": "retention", "expired": report.expired, "passes": report.passes, "seconds": secs,
            "alarms": lat.len(), "alarm_p50_ms": pct(0.5), "alarm_p99_ms": pct(0.99), "alarm_max_ms": lat.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0)})
    );
    Ok(0)
}
