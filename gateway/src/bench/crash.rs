//! The journal crash test's writer (`campusgw journal crash-writer`, hidden): producers
//! that behave like devices. Each emits through a real driver context, says on stdout what
//! it is about to send and what the journal confirmed, and after a restart retransmits,
//! with the same `origin_ref` and content, whatever it was not told was durable.
//!
//! # Output (stdout, one line each, written before the next step)
//! - `sent <origin_ref>`: before the event is handed to the journal;
//! - `durable <seq> <id> <origin_ref>`: the journal's receipt (a retransmission the journal
//!   recognised carries the seq and id of the event it repeats);
//! - `batches <n>`: at the end of a bounded run (`--events`), the transactions committed.
//!
//! Producer `p` is device `crash-<p>`; its events' `origin_ref` is `<p>:<run>:<i>` with a
//! fresh `run` per process and `i` counting up; the content is [`mixed_event`]`(i)`. The
//! retransmit file lists one `origin_ref` a line.
//!
//! `CAMPUSGW_UNSAFE_SYNC_OFF_FOR_TEST=1` opens the journal with `synchronous=OFF` (no
//! fsync), so the crash test can show that its fsync check fails for such a writer. Only
//! this test aid reads it; the gateway never does.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use campusgw_sdk::driver::{EmitError, Receipt};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use super::ingest::local_context;
use super::mixed_event;
use crate::journal::{Journal, JournalOptions};

/// Events each producer keeps in flight.
const WINDOW: usize = 64;

/// The environment variable that turns fsync off for the crash writer (see the module doc).
pub const UNSAFE_SYNC_OFF_ENV: &str = "CAMPUSGW_UNSAFE_SYNC_OFF_FOR_TEST";

/// How the crash writer runs.
#[derive(Debug, Clone)]
pub struct CrashOptions {
    /// Concurrent producers (devices).
    pub producers: usize,
    /// Stop after this many receipts and print `batches <n>`; forever when `None`.
    pub events: Option<u64>,
    /// Events to retransmit first: a file of `origin_ref` lines.
    pub retransmit: Option<PathBuf>,
}

/// Runs the crash writer (see the module doc).
///
/// # Errors
/// Journal errors, an unreadable retransmit file, stdout errors.
pub async fn crash_writer(data_dir: PathBuf, o: CrashOptions) -> anyhow::Result<i32> {
    let mut opts = JournalOptions::new(data_dir.join("journal.db"));
    opts.unsafe_sync_off_for_test = std::env::var_os(UNSAFE_SYNC_OFF_ENV).is_some();
    if opts.unsafe_sync_off_for_test {
        tracing::warn!("{UNSAFE_SYNC_OFF_ENV} set: the journal commits without fsync");
    }
    let (journal, writer) = Journal::open(opts)?;
    let mut pending = vec![Vec::new(); o.producers];
    if let Some(path) = &o.retransmit {
        for (p, i, origin) in read_retransmits(path)? {
            let Some(list) = pending.get_mut(p) else {
                anyhow::bail!("{origin} names producer {p}, but only {} run", o.producers);
            };
            list.push((i, origin));
        }
    }
    let run = uuid::Uuid::now_v7().simple().to_string();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (p, again) in pending.into_iter().enumerate() {
        let journal = journal.clone();
        let (tx, run) = (tx.clone(), run.clone());
        tokio::spawn(async move {
            let _ = produce(&journal, p, &run, again, tx).await;
        });
    }
    drop(tx);
    let mut confirmed = 0u64;
    while let Some(first) = rx.recv().await {
        let mut out = std::io::stdout().lock();
        for (r, origin) in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            writeln!(out, "durable {} {} {origin}", r.seq, r.id)?;
            confirmed += 1;
        }
        out.flush()?;
        if o.events.is_some_and(|n| confirmed >= n) {
            break;
        }
    }
    let batches = journal
        .status()
        .batches
        .load(std::sync::atomic::Ordering::SeqCst);
    journal.close().await;
    tokio::task::spawn_blocking(move || writer.join()).await?;
    println!("batches {batches}");
    Ok(0)
}

/// One device: retransmits `again`, then sends fresh events, `WINDOW` in flight.
async fn produce(
    journal: &Journal,
    p: usize,
    run: &str,
    again: Vec<(u64, String)>,
    tx: tokio::sync::mpsc::UnboundedSender<(Receipt, String)>,
) -> anyhow::Result<()> {
    let cx = local_context(journal, &format!("crash-{p}"));
    let fresh = (0u64..).map(|i| (i, format!("{p}:{run}:{i}")));
    let mut inflight = FuturesUnordered::new();
    for (i, origin) in again.into_iter().chain(fresh) {
        if inflight.len() >= WINDOW {
            let Some(Ok((r, origin))) = inflight.next().await else {
                return Ok(());
            };
            tx.send((r, origin))?;
        }
        {
            // Said before it is sent: the test must know of every event that may be in
            // the journal, to expect it (once) or to have it retransmitted.
            let mut out = std::io::stdout().lock();
            writeln!(out, "sent {origin}")?;
            out.flush()?;
        }
        let mut event = mixed_event(i);
        event.origin_ref = Some(origin.clone());
        let durable = cx.emit_pipelined(event);
        inflight.push(async move {
            let receipts = durable.await?;
            let r = receipts.into_iter().next().ok_or(EmitError::Closed)?;
            Ok::<_, EmitError>((r, origin))
        });
    }
    Ok(())
}

/// Parses a retransmit file: `(producer, i, origin_ref)` per line.
fn read_retransmits(path: &Path) -> anyhow::Result<Vec<(usize, u64, String)>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.split(':');
        let (Some(p), Some(_run), Some(i), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            anyhow::bail!("{}: {line:?} is not <producer>:<run>:<i>", path.display());
        };
        out.push((p.parse()?, i.parse()?, line.to_owned()));
    }
    Ok(out)
}
