//! The writer thread's supervision: it runs under `catch_unwind`, holds the journal's lock,
//! and records why it stopped when nobody asked it to (module doc, "Writer failure").

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, watch};

use super::{JournalStatus, writer};

/// Starts the writer thread. It holds the journal's lock for its lifetime, and marks the
/// status when it stops: a stop nobody asked for (a panic, an early return) is a writer
/// failure, which `/healthz` reports and the gateway exits on.
pub(super) fn spawn_writer(
    w: writer::Writer,
    rx: mpsc::Receiver<writer::Msg>,
    lock: std::fs::File,
    status: Arc<JournalStatus>,
    stopped: watch::Sender<bool>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("journal-writer".into())
        .spawn(move || {
            let _lock = lock;
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || w.run(rx)));
            let failure = match run {
                Ok(()) if status.closing.load(Ordering::SeqCst) => None,
                Ok(()) => Some("journal writer stopped without being asked to close".to_owned()),
                Err(panic) => Some(format!("journal writer panicked: {}", panic_text(&*panic))),
            };
            if let Some(reason) = failure {
                tracing::error!(reason = %reason, "journal writer is gone: nothing can be journaled or acknowledged");
                metrics::counter!("journal_writer_failures_total").increment(1);
                JournalStatus::set(&status.writer_failure, reason);
            }
            status.writer_alive.store(false, Ordering::SeqCst);
            // Only now: the channel closed during the unwind, before the failure was set.
            stopped.send_replace(true);
        })
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
