//! Group commit's second stage: the WAL is fsync'd on a thread of its own, and only then is
//! anything answered or shown.
//!
//! With `synchronous=FULL`, SQLite fsyncs the WAL inside `COMMIT`, and the writer thread
//! can do nothing else meanwhile: on this project's disks an fsync takes 7-40 ms, about as
//! long as inserting the batch, so half the writer's time was spent waiting. The writer's
//! connection therefore runs with `synchronous=NORMAL`: `COMMIT` writes the transaction's
//! frames to the WAL file (crash-consistent, as SQLite guarantees for NORMAL) without
//! syncing it, and hands a [`Group`] to this stage. This thread fsyncs the WAL file
//! (`fdatasync` on its own descriptor of the same file: the kernel flushes every dirty
//! page of the file, whoever wrote it) and then, in commit order,
//! - publishes the group's events: the committed-seq watch the uplinks wait on, the
//!   journal's `last_seq`, the live feed (rules, console), and
//! - answers whoever waits on the group (emitters' receipts, cursor moves, state writes).
//!
//! Meanwhile the writer is already inserting the next batch, and groups committed while an
//! fsync runs share the next one. The contract is the one DESIGN §4 states and
//! `journal_crash.rs` audits with strace: nothing is acknowledged before a WAL sync that
//! started after it was committed has completed. Readers inside the gateway are bounded by
//! the published `last_seq` ([`super::JournalReader`]), so an uplink never forwards an
//! event that a power cut could still take back (its seq would be reused by another).
//!
//! State tables written in the same transactions (the alarms projection, rule actions,
//! cursors) are readable through their own connections as soon as the transaction
//! committed, a few milliseconds before its events are published and the alarm change is
//! announced. That is safe because they are derived: a power cut in between takes the
//! whole transaction back, and the runner derives it again from the durable events.
//!
//! A failed fsync is not retried: after one, Linux may have dropped the dirty pages, and a
//! second fsync would "succeed" without them. Everything waiting is answered with an
//! error (devices retransmit), the failure is recorded, and the writer thread stops on its
//! next turn, which `/healthz` reports and the gateway exits on (module doc, "Writer
//! failure"): a restart recovers the WAL as SQLite left it.
//!
//! Written by hand: no crate offers a second commit stage for SQLite; the whole mechanism
//! is one `fdatasync` in the right place.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Instant;

use campusgw_sdk::{Class, Event};
use tokio::sync::{broadcast, watch};

use super::JournalStatus;
use super::writer::Msg;

/// Called once the group is durable (`Ok`) or can no longer become so (`Err` with why).
pub(super) type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One committed transaction waiting for its WAL sync.
pub(super) struct Group {
    /// Events it stored (for the count of committed events).
    pub committed: u64,
    /// Events for the live feed (empty when nobody listens).
    pub events: Vec<Event>,
    /// The newest seq it stored of each class it stored ([`super::heads`]); their maximum
    /// is the newest seq of the transaction.
    pub heads: Vec<(Class, u64)>,
    /// Whoever waits on it.
    pub done: Vec<Done>,
}

/// The running stage; [`Syncer::finish`] (or drop) syncs and answers what was submitted.
pub(super) struct Syncer {
    tx: Option<mpsc::Sender<Group>>,
    thread: Option<std::thread::JoinHandle<()>>,
    failed: Arc<Mutex<Option<String>>>,
    /// Fault injection: the next sync fails.
    fail_next: Arc<AtomicBool>,
}

/// What the stage publishes to.
pub(super) struct Outputs {
    pub status: Arc<JournalStatus>,
    pub seq_tx: watch::Sender<u64>,
    pub feed: broadcast::Sender<Arc<Event>>,
    /// The writer's queue, to wake it when a sync failed (weak: never keeps it running).
    pub wake: tokio::sync::mpsc::WeakSender<Msg>,
    /// The newest durable seq per class, which wakes the uplinks' retry loops.
    pub heads: super::heads::HeadsTx,
}

impl Syncer {
    /// Starts the stage for the database at `db` (its WAL is `<db>-wal`); `sync` false is
    /// the crash tests' `synchronous=OFF` aid (nothing is fsync'd).
    pub(super) fn start(db: &Path, sync: bool, out: Outputs) -> std::io::Result<Syncer> {
        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(Mutex::new(None));
        let fail_next = Arc::new(AtomicBool::new(false));
        let mut wal = db.as_os_str().to_owned();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        // What a killed process left in the WAL may still be only in the page cache, and
        // it is about to be read and forwarded: make it durable first.
        if sync
            && std::fs::metadata(&wal).is_ok()
            && let Err(e) = sync_wal(&wal, &mut None)
        {
            tracing::error!(error = %e, "journal WAL fsync at start failed");
        }
        let thread = {
            let failed = failed.clone();
            let fail_next = fail_next.clone();
            std::thread::Builder::new()
                .name("journal-sync".into())
                .spawn(move || run(&rx, &wal, sync, &out, &failed, &fail_next))?
        };
        Ok(Syncer {
            tx: Some(tx),
            thread: Some(thread),
            failed,
            fail_next,
        })
    }

    /// Queues a committed group.
    pub(super) fn submit(&self, g: Group) {
        let refused = match &self.tx {
            Some(tx) => tx.send(g).err().map(|e| e.0),
            None => Some(g),
        };
        if let Some(g) = refused {
            for d in g.done {
                d(Err("journal sync stage is gone".to_owned()));
            }
        }
    }

    /// Why a WAL sync failed, once one has: the writer must stop.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Fault injection for tests: the next sync fails.
    pub(super) fn fail_next_for_test(&self) {
        self.fail_next.store(true, Ordering::SeqCst);
    }

    /// Syncs and answers everything submitted, then stops the thread.
    pub(super) fn finish(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        self.finish();
    }
}

fn run(
    rx: &mpsc::Receiver<Group>,
    wal: &Path,
    sync: bool,
    out: &Outputs,
    failed: &Mutex<Option<String>>,
    fail_next: &AtomicBool,
) {
    let mut file: Option<File> = None;
    let mut dead: Option<String> = None;
    while let Ok(first) = rx.recv() {
        let mut groups = vec![first];
        groups.extend(rx.try_iter());
        let started = Instant::now();
        let r = match &dead {
            Some(e) => Err(e.clone()),
            None if fail_next.swap(false, Ordering::SeqCst) => {
                Err(format!("{}: fsync failed (fault injection)", wal.display()))
            }
            None if !sync => Ok(()),
            None => sync_wal(wal, &mut file),
        };
        match &r {
            Ok(()) => {
                metrics::histogram!("journal_sync_seconds").record(started.elapsed().as_secs_f64());
                metrics::counter!("journal_batches_total").increment(1);
                out.status.batches.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) if dead.is_none() => {
                tracing::error!(error = %e, wal = %wal.display(), "journal WAL fsync failed: nothing waiting is acknowledged, the writer stops");
                metrics::counter!("journal_sync_failures_total").increment(1);
                match failed.lock() {
                    Ok(mut g) => *g = Some(e.clone()),
                    Err(p) => *p.into_inner() = Some(e.clone()),
                }
                dead = Some(e.clone());
                if let Some(tx) = out.wake.upgrade() {
                    let _ = tx.try_send(Msg::Wake);
                }
            }
            Err(_) => {}
        }
        for g in groups {
            if r.is_ok() {
                publish(out, &g);
                for e in g.events {
                    let _ = out.feed.send(Arc::new(e));
                }
            }
            for d in g.done {
                d(r.clone());
            }
        }
    }
}

/// Makes the group's events visible: `last_seq` (which bounds the gateway's readers) and
/// the watch the uplinks wait on, never backwards.
fn publish(out: &Outputs, g: &Group) {
    out.status
        .committed
        .fetch_add(g.committed, Ordering::Relaxed);
    if g.committed > 0 {
        metrics::counter!("journal_events_committed_total").increment(g.committed);
    }
    if let Some(seq) = g.heads.iter().map(|(_, seq)| *seq).max() {
        out.status.last_seq.fetch_max(seq, Ordering::SeqCst);
        out.seq_tx.send_if_modified(|v| {
            let newer = seq > *v;
            if newer {
                *v = seq;
            }
            newer
        });
    }
    // After the seq watch: whoever sees a head move finds its event readable (the police
    // uplink's primary probe relies on that order).
    if !g.heads.is_empty() {
        out.heads.publish(g.heads.iter().copied());
    }
}

/// `fdatasync` of the WAL through a descriptor of its own, reopened if the file was
/// replaced (SQLite recreates the WAL only when the last connection closed, so this is a
/// safeguard, not a path of the running gateway).
fn sync_wal(wal: &Path, file: &mut Option<File>) -> Result<(), String> {
    let what = |e: std::io::Error| format!("{}: {e}", wal.display());
    let current = std::fs::metadata(wal).map_err(what)?.ino();
    let same = file
        .as_ref()
        .and_then(|f| f.metadata().ok())
        .is_some_and(|m| m.ino() == current);
    if !same {
        *file = Some(File::open(wal).map_err(what)?);
    }
    match file {
        Some(f) => f.sync_data().map_err(what),
        None => Err(format!("{}: not open", wal.display())),
    }
}
