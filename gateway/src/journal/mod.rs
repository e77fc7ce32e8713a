//! The durable local journal: every event, kept until each destination confirmed it.
//!
//! # On-disk schema (SQLite, WAL, fsync'd by the sync stage; `PRAGMA user_version` = schema version)
//! ```sql
//! CREATE TABLE meta    (key TEXT PRIMARY KEY, value INTEGER NOT NULL);   -- 'next_seq', 'data_bytes'
//! CREATE TABLE events  (seq INTEGER PRIMARY KEY,        -- journal position, gap-free
//!                       id BLOB NOT NULL,               -- UUIDv7 (16 bytes)
//!                       class INTEGER NOT NULL,         -- Class::rank(): 0 = life_safety
//!                       kind TEXT NOT NULL,
//!                       device TEXT NOT NULL,
//!                       origin_ref TEXT,                -- device's own message id
//!                       received_at INTEGER NOT NULL,   -- unix microseconds
//!                       body TEXT NOT NULL,             -- the event's JSON form with seq 0 (docs/event-schema.md);
//!                                                       -- the seq column is authoritative
//!                       live INTEGER);                  -- 1 on the newest row of its (device, origin_ref)
//!                                                       -- (migration 7), NULL otherwise
//! CREATE INDEX events_by_class ON events(class, seq);
//! CREATE UNIQUE INDEX events_by_live_origin ON events(device, origin_ref) WHERE live = 1;
//! CREATE TABLE cursors (uplink TEXT, class INTEGER, seq INTEGER NOT NULL, updated_at INTEGER NOT NULL,
//!                       PRIMARY KEY (uplink, class)) WITHOUT ROWID;
//! CREATE TABLE rejected (uplink TEXT, seq INTEGER, class INTEGER NOT NULL,   -- a destination's
//!                        reason TEXT NOT NULL, rejected_at INTEGER NOT NULL,  -- verdict on one event
//!                        retry_requested INTEGER NOT NULL DEFAULT 0,          -- (migration 3)
//!                        PRIMARY KEY (uplink, seq)) WITHOUT ROWID;        -- (module rejected)
//! CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, body BLOB,               -- rows that could not
//!                          error TEXT NOT NULL, quarantined_at INTEGER NOT NULL); -- be decoded
//! ```
//! Migration 5 adds the rules runner's tables (`rules_state`, `alarms`, `alarm_log`,
//! `rule_actions`), written only through [`Journal::rules_step`] (see [`rules`]); the
//! consumer tail that never skips is [`Tail`].
//!
//! # Crash guarantee
//! Events are written by one writer thread in group-committed transactions: each batch
//! gathers whatever every emitter has queued, writes it in one transaction (multi-row
//! inserts of up to 32 events) and commits it; the sync stage ([`durable`]) then fsyncs the
//! WAL, once for every transaction committed meanwhile. An emitter's future resolves only
//! after that fsync completed, so after `kill -9` or power loss at any instant every event whose receipt was
//! handed out is in the journal exactly once, with gap-free, strictly increasing seqs
//! (`next_seq` is stored in the same transaction, so seqs are never reused after
//! eviction). A torn tail of the WAL is discarded by SQLite's recovery: it can only hold
//! a transaction that never returned.
//!
//! Duplicates (ADR 0003): an event whose `(device, origin_ref)` matches the newest stored
//! event of that key, of the same kind, received within `dedup_window` before it (for
//! [`campusgw_sdk::Dedup::Lifetime`] keys: at any time), is not stored; its emitter gets the
//! stored event's receipt with `duplicate = true`. So a device retransmitting after a crash
//! between commit and acknowledgement produces one event, and a key that repeats later (a
//! content key after the window, a colliding key of another kind) is a new event.
//! The newest stored event of a key is its `live` row; the insert itself meets a live row
//! through the unique index (one index descent per new message, as cheap as the unique
//! index of schema 1), and only then is the live row read, compared and, if the new event
//! is not a repeat, retired. Rows restored by `campusgw journal salvage` are never live:
//! they are not taken as the originals of later retransmissions.
//!
//! # Start-up (DESIGN §4 "Start-up")
//! Beside `journal.db` live `journal.id` (JSON: a random `journal_id` and `created_at`,
//! written when a journal is created, or on first open of a journal that predates it) and
//! `journal.lock` (held by the writer thread for its lifetime; a second gateway or a
//! salvage on the same journal is refused with [`JournalError::InUse`]).
//! [`Journal::open`] checks the file at a cost that does not grow with the backlog
//! (`check.rs`: header, page count against the file length, schema version, `meta`,
//! `cursors`, the rightmost path of `events` and its indexes, `max(seq) < next_seq`). A
//! file that fails (garbage, truncated, or empty/missing while `journal.id` exists) is
//! moved aside as `journal.db.damaged-<UTC time>` with its `-wal`/`-shm`, a fresh journal
//! (new `journal.id`, seqs from 1) is created and its first event is `storage.damaged`
//! (class `security`, payload `file`, `error`, `cause`), so the gateway serves and the
//! county is told. What is not damage is refused, never moved: a newer schema
//! ([`JournalError::TooNew`]), permission or I/O errors, a held lock. A full
//! `PRAGMA quick_check` then runs in a background thread; its outcome is logged and in
//! `journal_quick_check_ok`; a failure raises `storage.damaged` (`cause` `quick_check`) and
//! leaves the live file in place. [`salvage`] copies the readable events of a moved file
//! back (gateway stopped).
//!
//! # Corrupt rows
//! A row whose body does not decode never stops a reader: it is skipped, and readers from
//! [`Journal::reader`] ask the writer to move it to `quarantine` (the writer re-checks it),
//! which journals one `journal.corrupt` event in the same transaction (`quarantine.rs`).
//! A quarantined row leaves `meta.data_bytes` and every backlog.
//!
//! # Writer failure
//! The writer thread runs under `catch_unwind`. If it panics or returns without
//! [`Journal::close`], [`JournalStatus::writer_failure`] says why, appends fail with
//! `EmitError::Closed` (nothing is acknowledged that is not durable), and
//! [`Journal::writer_stopped`] resolves so the gateway can fail loudly (`app.rs`).
//!
//! # Write failures
//! A failed commit (disk full, read-only, I/O error) is rolled back and retried with
//! back-off; the batch stays in memory and no emitter is acknowledged. While storage is
//! failing, new events queue in memory up to `memory_backlog`; appends carrying a
//! life-safety event may use a further `life_safety_reserve`. Beyond that they are refused
//! (`EmitError::Storage`): their drivers withhold the confirm and the devices keep them and
//! retransmit, so memory is bounded in an outage of any length and nothing already
//! confirmed is lost. The state is `storage.critical` in health and metrics, and a
//! `storage.critical` / `storage.recovered` pair is journaled when writes succeed again.
//!
//! # Memory bound in bytes
//! Events are counted, and their bodies are measured: since event schema 2 one telemetry
//! event can be a batch of a thousand readings (~12 KB), so a count alone bounds nothing.
//! - An append made only of `telemetry` events first takes its body bytes from a budget
//!   (`telemetry_queue_bytes`) and gives them back once answered: however slow the disk,
//!   queued telemetry never holds more than that. A driver waiting for the budget has its
//!   batch in flight, so the Modbus driver coalesces meanwhile (newest value per point).
//!   Other classes never wait for it, so telemetry never delays an alarm.
//! - While storage fails, non-life-safety appends are refused beyond `memory_backlog`
//!   events or `memory_backlog_bytes` body bytes (life-safety: the further reserve).
//! - Once serialized, an appended event's payload is dropped (the body holds it) unless
//!   something [`Journal::subscribe`]d, so the writer holds each event once, as JSON.
//!
//! # Retention and quota (DESIGN §4)
//! See [`retention`].

mod check;
mod checkpoint;
mod durable;
pub mod heads;
pub mod nonces;
mod quarantine;
mod reader;
pub mod rejected;
pub mod retention;
pub mod rules;
pub mod salvage;
mod schema;
mod supervision;
pub mod tail;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sdk::driver::{BoxFuture, EmitError, EventSink, Receipt};
use campusgw_sdk::{Class, DeviceId, Event, Location, NewEvent};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use reader::JournalReader;
pub use retention::RetentionPolicy;
pub use tail::Tail;
pub use writer::ExecOp;

/// Errors opening or reading the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// SQLite said no.
    #[error("journal database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
    /// The file was written by a newer campusgw.
    #[error(
        "journal {path} has schema version {found}, newer than this campusgw supports ({supported}); upgrade campusgw or move the file away"
    )]
    TooNew {
        /// The database file.
        path: PathBuf,
        /// Its version.
        found: i64,
        /// Ours.
        supported: i64,
    },
    /// A stored event's JSON no longer parses.
    #[error("journal event seq {seq} is corrupt: {reason}")]
    Corrupt {
        /// Its seq.
        seq: u64,
        /// Why.
        reason: String,
    },
    /// Retention or quota enforcement failed.
    #[error("journal maintenance failed: {0}")]
    Maintenance(String),
    /// The writer thread is gone.
    #[error("journal writer has stopped")]
    Closed,
    /// The write was committed but its WAL sync failed, so it is not known to be on disk
    /// (see `durable.rs`); the writer stops.
    #[error("journal write could not be made durable: {0}")]
    Unsynced(String),
    /// Another process (a running gateway, a salvage) holds the journal's lock.
    #[error(
        "journal {path} is in use by another campusgw process (a running gateway?); stop it first"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
}

/// Kinds the journal raises itself (docs/event-schema.md).
pub mod kinds {
    use campusgw_sdk::Kind;
    /// A stored row could not be decoded and was moved to quarantine (class `security`;
    /// payload `seq`, `error`).
    pub const JOURNAL_CORRUPT: Kind = Kind::from_static("journal.corrupt");
    /// The journal file was found damaged (class `security`; payload `file`, `error`,
    /// `cause`: `start_check` when it was moved aside at start, `quick_check` when the
    /// background check failed on the live file).
    pub const STORAGE_DAMAGED: Kind = Kind::from_static("storage.damaged");
}

/// How the journal is opened.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The SQLite file.
    pub path: PathBuf,
    /// Retention and disk quota.
    pub retention: RetentionPolicy,
    /// Upper bound of events per transaction.
    pub max_batch: usize,
    /// Events held in memory while storage fails, beyond which non-life-safety events are
    /// refused (their devices keep them and retransmit).
    pub memory_backlog: usize,
    /// Further events held for appends that carry a life-safety event once `memory_backlog`
    /// is full; beyond both, those are refused too, so memory stays bounded in any outage.
    pub life_safety_reserve: usize,
    /// Body bytes held in memory while storage fails, beyond which non-life-safety events
    /// are refused (as for `memory_backlog`).
    pub memory_backlog_bytes: usize,
    /// Body bytes of telemetry-only appends queued for or held by the writer at any time;
    /// a further telemetry append waits (module doc, "Memory bound in bytes").
    pub telemetry_queue_bytes: usize,
    /// The uplinks and the classes each wants; decides what counts as delivered.
    pub uplinks: Vec<UplinkSpec>,
    /// A rules runner consumes every class (`[rules]` is configured): retention keeps what
    /// it has not consumed yet (see `retention.rs`).
    pub rules_consumer: bool,
    /// How long after an event a repeat of its (device, origin_ref) is taken for a device
    /// retransmission ([`campusgw_sdk::Dedup::Window`]; ADR 0003).
    pub dedup_window: Duration,
    /// Test aid, never set by the gateway: commit without fsync (`synchronous=OFF`), so the
    /// crash test can show that its fsync check catches a writer that skips the fsync.
    #[doc(hidden)]
    pub unsafe_sync_off_for_test: bool,
    /// Run `PRAGMA quick_check` in the background after open.
    pub quick_check: bool,
    /// A shorter age for delivered access events that name a person (`access.granted`,
    /// `access.denied`): privacy (`[gateway.journal] access_retention`; `None`: `retention`).
    pub access_retention: Option<Duration>,
}

/// Default [`JournalOptions::memory_backlog_bytes`]: 8 MiB, ~16,000 typical alarm or
/// business events, or ~650 telemetry batches of 1,000 readings.
pub const DEFAULT_MEMORY_BACKLOG_BYTES: usize = 8 << 20;

/// Default [`JournalOptions::telemetry_queue_bytes`]: 4 MiB, ~3 s of 100,000 readings/s
/// (~1.2 MB/s of batch JSON), far above what a healthy disk ever has queued.
pub const DEFAULT_TELEMETRY_QUEUE_BYTES: usize = 4 << 20;

/// The default de-duplication window: longer than any device's retransmission schedule
/// across a reconnect, short enough that a stuck or zero device clock cannot merge alarms
/// for long.
pub const DEFAULT_DEDUP_WINDOW: Duration = Duration::from_secs(10 * 60);

impl JournalOptions {
    /// Defaults for a journal at `path`.
    pub fn new(path: impl AsRef<Path>) -> JournalOptions {
        JournalOptions {
            path: path.as_ref().to_owned(),
            retention: RetentionPolicy::default(),
            max_batch: 8192,
            memory_backlog: 20_000,
            life_safety_reserve: 20_000,
            memory_backlog_bytes: DEFAULT_MEMORY_BACKLOG_BYTES,
            telemetry_queue_bytes: DEFAULT_TELEMETRY_QUEUE_BYTES,
            uplinks: Vec::new(),
            rules_consumer: false,
            dedup_window: DEFAULT_DEDUP_WINDOW,
            unsafe_sync_off_for_test: false,
            quick_check: true,
            access_retention: None,
        }
    }
}

/// An uplink as the journal sees it: a name and the classes it forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkSpec {
    /// The uplink's name (cursor key).
    pub name: String,
    /// The classes it wants.
    pub classes: Vec<Class>,
}

/// Shared state readable without the writer.
#[derive(Debug, Default)]
pub struct JournalStatus {
    /// Last committed seq.
    pub last_seq: AtomicU64,
    /// Storage is failing or the quota is exhausted by protected events.
    pub critical: AtomicBool,
    /// Events committed since start.
    pub committed: AtomicU64,
    /// Transactions committed since start.
    pub batches: AtomicU64,
    /// The writer thread is running.
    pub writer_alive: AtomicBool,
    /// [`Journal::close`] was called: the writer's exit is expected.
    pub closing: AtomicBool,
    /// Why the writer thread stopped when nobody asked it to (a panic, an early return).
    pub writer_failure: Mutex<Option<String>>,
    /// Damage found at start (file moved aside) or by the background quick_check.
    pub damaged: Mutex<Option<String>>,
}

impl JournalStatus {
    /// Why the writer died, if it did: the gateway cannot journal anything any more.
    pub fn writer_failure(&self) -> Option<String> {
        self.writer_failure
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The damage reported at start or by the background check, if any.
    pub fn damaged(&self) -> Option<String> {
        self.damaged
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(slot: &Mutex<Option<String>>, v: String) {
        match slot.lock() {
            Ok(mut g) => *g = Some(v),
            Err(p) => *p.into_inner() = Some(v),
        }
    }
}

/// Handle to the journal: cheap to clone, used by drivers (as an [`EventSink`]), uplinks
/// and the API.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<writer::Msg>,
    path: PathBuf,
    status: Arc<JournalStatus>,
    committed_seq: watch::Receiver<u64>,
    /// Newest committed seq per class ([`heads`]).
    heads: watch::Receiver<heads::Heads>,
    feed: broadcast::Sender<Arc<Event>>,
    /// Turns true once the writer thread has stopped and its status is final.
    stopped: watch::Receiver<bool>,
    /// The telemetry byte budget, in KiB permits (module doc, "Memory bound in bytes").
    telemetry_budget: Arc<tokio::sync::Semaphore>,
    /// Its size in permits: a larger append takes all of them instead of waiting forever.
    telemetry_budget_kib: u32,
}

impl Journal {
    /// Opens (creating or migrating) the journal and starts its writer thread. A damaged
    /// file is moved aside and replaced by a fresh journal that starts with a
    /// `storage.damaged` event (see the module doc, "Start-up").
    ///
    /// # Errors
    /// [`JournalError`] when the journal is refused (newer schema, in use, unreadable for
    /// reasons other than damage) or cannot be created.
    pub fn open(opts: JournalOptions) -> Result<(Journal, WriterHandle), JournalError> {
        let files = check::Files::of(&opts.path);
        let lock = check::lock(&files)?;
        let opened = check::open_checked(&files, opts.unsafe_sync_off_for_test)?;
        let last = opened.last_seq;
        let status = Arc::new(JournalStatus::default());
        status.last_seq.store(last, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(16_384);
        let (seq_tx, seq_rx) = watch::channel(last);
        let (feed, _) = broadcast::channel(4096);
        let (heads_tx, heads_rx) =
            heads::HeadsTx::open(&opened.conn).map_err(|e| JournalError::Sqlite {
                path: opts.path.clone(),
                source: e,
            })?;
        let w = writer::Writer::new(
            opened.conn,
            opts.clone(),
            status.clone(),
            (seq_tx, tx.downgrade(), heads_tx),
            feed.clone(),
            last,
        )?;
        status.writer_alive.store(true, Ordering::SeqCst);
        let (stopped_tx, stopped) = watch::channel(false);
        let thread = supervision::spawn_writer(w, rx, lock, status.clone(), stopped_tx)
            .map_err(|e| check::io_err(&opts.path, e))?;
        let checkpointer = checkpoint::Checkpointer::start(&opts.path)
            .map_err(|e| check::io_err(&opts.path, e))?;
        let telemetry_budget_kib =
            u32::try_from((opts.telemetry_queue_bytes / 1024).max(1)).unwrap_or(u32::MAX);
        let journal = Journal {
            tx,
            path: opts.path.clone(),
            status,
            committed_seq: seq_rx,
            heads: heads_rx,
            feed,
            stopped,
            telemetry_budget: Arc::new(tokio::sync::Semaphore::new(telemetry_budget_kib as usize)),
            telemetry_budget_kib,
        };
        if let Some(d) = opened.damaged {
            let file = d.file.as_ref().map(|f| f.display().to_string());
            journal.raise_damaged(file, &d.error, "start_check");
        }
        let quick_check = opts.quick_check.then(|| {
            let j = journal.clone();
            let file = opts.path.display().to_string();
            check::spawn_quick_check(&opts.path, move |problem| {
                j.raise_damaged(Some(file), &problem, "quick_check");
            })
        });
        Ok((
            journal,
            WriterHandle {
                thread: Some(thread),
                checkpointer: Some(checkpointer),
                quick_check,
            },
        ))
    }

    /// Journals `storage.damaged` and marks the status; never waits (called from `open` and
    /// from the quick_check thread).
    fn raise_damaged(&self, file: Option<String>, error: &str, cause: &str) {
        let text = match &file {
            Some(f) => format!("{cause}: {f}: {error}"),
            None => format!("{cause}: {error}"),
        };
        JournalStatus::set(&self.status.damaged, text);
        let payload = serde_json::json!({ "file": file, "error": error, "cause": cause });
        let event =
            internal_event(NewEvent::new(kinds::STORAGE_DAMAGED, Class::Security).payload(payload));
        let (reply, _) = oneshot::channel();
        let msg = writer::Msg::Append {
            bodies: vec![writer::body_of(&event)],
            events: vec![event],
            reply,
            budget: None,
        };
        // The queue is fresh at open; from the quick_check thread a full queue means the
        // writer is busy, and the error is already logged and in the status.
        if self.tx.try_send(msg).is_err() {
            tracing::error!(error, "storage.damaged could not be queued for the journal");
        }
    }

    /// Appends stamped events in one transaction; resolves once durable.
    ///
    /// # Errors
    /// [`EmitError`] when the events are not durable.
    pub async fn append(&self, mut events: Vec<Event>) -> Result<Vec<Receipt>, EmitError> {
        let (reply, rx) = oneshot::channel();
        // Serialize here, on the emitter's task, so the single writer thread only writes.
        let bodies: Vec<String> = events.iter().map(writer::body_of).collect();
        if self.feed.receiver_count() == 0 {
            // The body holds the payload now; a batch's parsed tree is ~8x its JSON.
            for e in &mut events {
                e.payload = serde_json::Value::Null;
            }
        }
        let budget = if events.iter().all(|e| e.class == Class::Telemetry) {
            let bytes: usize = bodies.iter().map(String::len).sum();
            let kib = u32::try_from(bytes.div_ceil(1024))
                .unwrap_or(u32::MAX)
                .clamp(1, self.telemetry_budget_kib);
            let permit = self
                .telemetry_budget
                .clone()
                .acquire_many_owned(kib)
                .await
                .map_err(|_| EmitError::Closed)?;
            Some(permit)
        } else {
            None
        };
        self.tx
            .send(writer::Msg::Append {
                events,
                bodies,
                reply,
                budget,
            })
            .await
            .map_err(|_| EmitError::Closed)?;
        rx.await.map_err(|_| EmitError::Closed)?
    }

    /// KiB of the telemetry byte budget free right now (test and metrics aid).
    pub fn telemetry_budget_free_kib(&self) -> usize {
        self.telemetry_budget.available_permits()
    }

    /// Stores an uplink's cursor for a class: every event of that class up to `seq` is
    /// confirmed by the destination.
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone.
    pub async fn set_cursor(
        &self,
        uplink: &str,
        class: Class,
        seq: u64,
    ) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        let msg = writer::Msg::SetCursor {
            uplink: uplink.to_owned(),
            class,
            seq,
            reply,
        };
        self.tx.send(msg).await.map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// Runs retention and quota enforcement now (it also runs periodically).
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone, [`JournalError::Maintenance`] on SQLite errors.
    pub async fn maintain(&self) -> Result<retention::MaintenanceReport, JournalError> {
        let mut total: Option<retention::MaintenanceReport> = None;
        loop {
            let (reply, rx) = oneshot::channel();
            self.tx
                .send(writer::Msg::Maintain { reply: Some(reply) })
                .await
                .map_err(|_| JournalError::Closed)?;
            let pass = rx
                .await
                .map_err(|_| JournalError::Closed)?
                .map_err(JournalError::Maintenance)?;
            let more = pass.more;
            match &mut total {
                Some(t) => t.absorb(pass),
                None => total = Some(pass),
            }
            if !more {
                return Ok(total.expect("set above"));
            }
        }
    }

    /// Fault injection for tests: caps the database at `pages` pages so writes beyond fail
    /// with SQLITE_FULL, as on a full disk. `u32::MAX` lifts the cap.
    #[doc(hidden)]
    pub async fn limit_pages_for_test(&self, pages: u32) {
        let _ = self.tx.send(writer::Msg::LimitPages { pages }).await;
    }

    /// Fault injection for tests: the writer thread panics, as a bug in it would.
    #[doc(hidden)]
    pub async fn kill_writer_for_test(&self) {
        let _ = self.tx.send(writer::Msg::Panic).await;
    }

    /// Fault injection for tests: the next WAL fsync fails, as a failing disk's would.
    #[doc(hidden)]
    pub async fn fail_next_sync_for_test(&self) {
        let _ = self.tx.send(writer::Msg::FailNextSync).await;
    }

    /// Asks the writer to finish what is queued and stop; see [`WriterHandle::join`].
    pub async fn close(&self) {
        self.status.closing.store(true, Ordering::SeqCst);
        let _ = self.tx.send(writer::Msg::Shutdown).await;
    }

    /// Resolves when the writer thread has stopped, whether closed or dead; see
    /// [`JournalStatus::writer_failure`] for which.
    pub async fn writer_stopped(&self) {
        let mut stopped = self.stopped.clone();
        // An error means the thread is gone without a word, which is stopped too.
        let _ = stopped.wait_for(|s| *s).await;
    }

    /// A new read connection; corrupt rows it meets are quarantined by the writer.
    ///
    /// # Errors
    /// [`JournalError`] if the database cannot be opened.
    pub fn reader(&self) -> Result<JournalReader, JournalError> {
        Ok(JournalReader::open(&self.path)?
            .with_writer(self.tx.downgrade())
            .with_visible(self.status.clone()))
    }

    /// The last committed seq, updated after every commit.
    pub fn committed_seq(&self) -> watch::Receiver<u64> {
        self.committed_seq.clone()
    }

    /// The newest committed seq of each class, updated after every commit ([`heads`]).
    pub fn heads(&self) -> watch::Receiver<heads::Heads> {
        self.heads.clone()
    }

    /// Every committed event as it is committed (for rules and the live console). A slow
    /// receiver sees `Lagged` and should re-read from the journal.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.feed.subscribe()
    }

    /// Counters and flags.
    pub fn status(&self) -> &JournalStatus {
        &self.status
    }

    /// Sends a periodic maintenance tick every `every` until the journal closes.
    pub fn spawn_maintenance(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if tx
                    .send(writer::Msg::Maintain { reply: None })
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    }
}

impl EventSink for Journal {
    fn append(&self, events: Vec<Event>) -> BoxFuture<'static, Result<Vec<Receipt>, EmitError>> {
        let j = self.clone();
        Box::pin(async move { Journal::append(&j, events).await })
    }
}

/// An event raised by the journal itself, from device `gateway`.
fn internal_event(e: NewEvent) -> Event {
    let source = DeviceId::new("gateway").expect("static id is valid");
    Event::stamp(e, &source, "journal", &Location::default())
}

/// Owns the writer thread; join it at shutdown after [`Journal::close`].
pub struct WriterHandle {
    thread: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<checkpoint::Checkpointer>,
    quick_check: Option<check::QuickCheck>,
}

impl WriterHandle {
    /// Waits for the writer to commit what was queued and exit (it checkpoints and
    /// truncates the WAL on the way out); interrupts a background quick_check.
    pub fn join(mut self) {
        if let Some(q) = self.quick_check.take() {
            q.stop();
        }
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
