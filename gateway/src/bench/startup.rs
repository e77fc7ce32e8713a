//! `campusgw bench startup`: start-to-ready of a gateway whose journal holds a large
//! backlog (DESIGN §6: ≤ 1 s with 1,000,000 events). Fills `<data-dir>/journal.db` with
//! N undelivered events of the benchmark mix (once; a journal already that full is
//! reused), then starts and stops a real gateway on it `--runs` times, each time timing
//! `Journal::open` alone (start-up check included) and `Gateway::start` up to ready.

use std::path::{Path, PathBuf};
use std::time::Instant;

use campusgw_sdk::{DeviceId, Event, Location};

use super::mixed_event;
use crate::app::{Gateway, RunOptions};
use crate::journal::{Journal, JournalOptions};

/// Runs the benchmark; returns the exit code.
///
/// # Errors
/// Journal or start-up errors.
pub async fn run(events: u64, runs: u32, data_dir: PathBuf) -> anyhow::Result<i32> {
    std::fs::create_dir_all(&data_dir)?;
    fill(&data_dir, events).await?;
    let mut results = Vec::new();
    for _ in 0..runs.max(1) {
        let mut opts = JournalOptions::new(data_dir.join("journal.db"));
        opts.quick_check = false;
        let t = Instant::now();
        let (journal, writer) = Journal::open(opts)?;
        let open_ms = t.elapsed().as_secs_f64() * 1e3;
        journal.close().await;
        tokio::task::spawn_blocking(move || writer.join()).await?;

        let config = config(&data_dir)?;
        let t = Instant::now();
        let gw = Gateway::start(config, RunOptions::default()).await?;
        let ready_ms = t.elapsed().as_secs_f64() * 1e3;
        gw.stop().await;
        results
            .push(serde_json::json!({ "journal_open_ms": open_ms, "start_to_ready_ms": ready_ms }));
    }
    println!(
        "{}",
        serde_json::json!({ "bench": "startup", "events": events, "runs": results })
    );
    Ok(0)
}

async fn fill(data_dir: &Path, events: u64) -> anyhow::Result<()> {
    let mut opts = JournalOptions::new(data_dir.join("journal.db"));
    opts.quick_check = false;
    let (journal, writer) = Journal::open(opts)?;
    let have = journal.reader()?.counts()?.iter().sum::<u64>();
    let dev = DeviceId::new("bench").map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut i = have;
    while i < events {
        let n = (events - i).min(10_000);
        let batch: Vec<Event> = (i..i + n)
            .map(|k| Event::stamp(mixed_event(k), &dev, "bench", &Location::default()))
            .collect();
        journal.append(batch).await?;
        i += n;
    }
    if events > have {
        eprintln!(
            "journaled {} events in {:.1}s",
            events - have,
            t.elapsed().as_secs_f64()
        );
    }
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    Ok(())
}

fn config(data_dir: &Path) -> anyhow::Result<crate::config::Config> {
    let text = format!(
        "[gateway]\nid = \"bench\"\nname = \"Start-up bench\"\ndata_dir = \"{}\"\n\n[console]\nlisten = \"127.0.0.1:0\"\n",
        data_dir.display()
    );
    crate::config::parse(&text, Path::new("<bench>")).map_err(|e| anyhow::anyhow!("{e}"))
}
