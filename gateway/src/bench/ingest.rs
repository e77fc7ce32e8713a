//! `campusgw bench ingest`: producers emitting through real driver contexts into the real
//! journal.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use campusgw_sdk::driver::{ContextParts, DriverContext, EmitError};
use campusgw_sdk::{DeviceId, Location};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio_util::sync::CancellationToken;

use super::{BenchDir, mixed_event};
use crate::health::HealthBoard;
use crate::journal::{Journal, JournalOptions};

/// A driver context over `journal` for in-process producers (bench, crash test, demo).
pub fn local_context(journal: &Journal, device: &str) -> DriverContext {
    let (board, _rx) = HealthBoard::new();
    DriverContext::new(ContextParts {
        device: DeviceId::new(device).expect("valid bench device id"),
        driver: "bench",
        location: Location::default(),
        sink: Arc::new(journal.clone()),
        health: board,
        commands: Arc::new(campusgw_sdk::CommandInbox::new()),
        shutdown: CancellationToken::new(),
    })
}

/// Device messages carry a key the journal de-duplicates on (ADR 0003); readings do not.
fn keyed(e: campusgw_sdk::NewEvent, i: u64) -> campusgw_sdk::NewEvent {
    if e.class == campusgw_sdk::Class::Telemetry {
        e
    } else {
        e.origin_ref(format!("m{i:016x}"))
    }
}

/// `campusgw bench ingest`: P producers emit through real driver contexts into a fresh
/// journal, each keeping `window` events in flight; an event counts once it is durable.
/// Half the mix (alarms, security, business) carries a de-duplication key, as device
/// messages do, so the figure includes the duplicate check.
///
/// # Errors
/// Journal errors.
pub async fn bench_ingest(
    events: u64,
    producers: u64,
    window: usize,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<i32> {
    let tmp = BenchDir::create(data_dir, "bench")?;
    let (journal, writer) = Journal::open(JournalOptions::new(tmp.path().join("journal.db")))?;
    let per = events / producers.max(1);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let cx = local_context(&journal, &format!("producer-{p}"));
        tasks.push(tokio::spawn(async move {
            let mut inflight = FuturesUnordered::new();
            for i in 0..per {
                if inflight.len() >= window {
                    inflight.next().await.expect("non-empty")?;
                }
                inflight.push(cx.emit_pipelined(keyed(mixed_event(i), i)));
            }
            while let Some(r) = inflight.next().await {
                r?;
            }
            Ok::<(), EmitError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let total = per * producers;
    let batches = journal
        .status()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    eprintln!(
        "{total} events in {batches} transactions ({:.0} events/fsync)",
        total as f64 / batches.max(1) as f64
    );
    println!(
        "{}",
        serde_json::json!({"bench": "ingest", "events": total, "producers": producers, "seconds": secs, "events_per_sec": total as f64 / secs, "durable": true})
    );
    Ok(0)
}
