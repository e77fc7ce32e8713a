//! The durable local journal: every event, kept until each destination confirmed it.
//!
//! # On-disk schema (SQLite, WAL, `synchronous=FULL`; `PRAGMA user_version` = schema version)
//! ```sql
//! CREATE TABLE meta    (key TEXT PRIMARY KEY, value INTEGER NOT NULL);   -- 'next_seq', 'data_bytes'
//! CREATE TABLE events  (seq INTEGER PRIMARY KEY,        -- journal position, gap-free
//!                       id BLOB NOT NULL,               -- UUIDv7 (16 bytes)
//!                       class INTEGER NOT NULL,         -- Class::rank(): 0 = life_safety
//!                       kind TEXT NOT NULL,
//!                       device TEXT NOT NULL,
//!                       origin_ref TEXT,                -- device's own message id
//!                       received_at INTEGER NOT NULL,   -- unix microseconds
//!                       body TEXT NOT NULL);            -- the event's JSON form with seq 0 (docs/event-schema.md);
//!                                                       -- the seq column is authoritative
//! CREATE INDEX events_by_class ON events(class, seq);
//! CREATE INDEX events_by_origin ON events(device, origin_ref) WHERE origin_ref IS NOT NULL;
//! CREATE TABLE cursors (uplink TEXT, class INTEGER, seq INTEGER NOT NULL, updated_at INTEGER NOT NULL,
//!                       PRIMARY KEY (uplink, class)) WITHOUT ROWID;
//! CREATE TABLE rejected (uplink TEXT, seq INTEGER, class INTEGER NOT NULL,   -- a destination's
//!                        reason TEXT NOT NULL, rejected_at INTEGER NOT NULL,  -- verdict on one event
//!                        retry_requested INTEGER NOT NULL DEFAULT 0,          -- (migration 3)
//!                        PRIMARY KEY (uplink, seq)) WITHOUT ROWID;        -- (module rejected)
//! CREATE TABLE quarantine (seq INTEGER PRIMARY KEY, body BLOB,               -- rows that could not
//!                          error TEXT NOT NULL, quarantined_at INTEGER NOT NULL); -- be decoded
//! ```
//!
//! # Crash guarantee
//! Events are written by one writer thread in group-committed transactions: each batch
//! gathers whatever every emitter has queued, writes it in one transaction and commits it
//! with one fsync of the WAL. An emitter's future resolves only after that commit
//! returned, so after `kill -9` or power loss at any instant every event whose receipt was
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
//! # Retention and quota (DESIGN §4)
//! See [`retention`].

mod checkpoint;
mod reader;
pub mod rejected;
pub mod retention;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use campusgw_sdk::driver::{BoxFuture, EmitError, EventSink, Receipt};
use campusgw_sdk::{Class, Event};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use reader::JournalReader;
pub use retention::RetentionPolicy;

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
    /// The uplinks and the classes each wants; decides what counts as delivered.
    pub uplinks: Vec<UplinkSpec>,
    /// How long after an event a repeat of its (device, origin_ref) is taken for a device
    /// retransmission ([`campusgw_sdk::Dedup::Window`]; ADR 0003).
    pub dedup_window: Duration,
    /// Test aid, never set by the gateway: commit without fsync (`synchronous=OFF`), so the
    /// crash test can show that its fsync check catches a writer that skips the fsync.
    #[doc(hidden)]
    pub unsafe_sync_off_for_test: bool,
}

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
            uplinks: Vec::new(),
            dedup_window: DEFAULT_DEDUP_WINDOW,
            unsafe_sync_off_for_test: false,
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
}

/// Handle to the journal: cheap to clone, used by drivers (as an [`EventSink`]), uplinks
/// and the API.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::Sender<writer::Msg>,
    path: PathBuf,
    status: Arc<JournalStatus>,
    committed_seq: watch::Receiver<u64>,
    feed: broadcast::Sender<Arc<Event>>,
}

impl Journal {
    /// Opens (creating or migrating) the journal and starts its writer thread.
    ///
    /// # Errors
    /// [`JournalError`] when the database cannot be opened or migrated.
    pub fn open(opts: JournalOptions) -> Result<(Journal, WriterHandle), JournalError> {
        let conn = schema::open_rw(&opts.path, opts.unsafe_sync_off_for_test)?;
        let status = Arc::new(JournalStatus::default());
        let last = schema::last_seq(&conn, &opts.path)?;
        status.last_seq.store(last, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(16_384);
        let (seq_tx, seq_rx) = watch::channel(last);
        let (feed, _) = broadcast::channel(4096);
        let w = writer::Writer::new(
            conn,
            opts.clone(),
            status.clone(),
            seq_tx,
            feed.clone(),
            last,
        )?;
        let thread = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || w.run(rx))
            .map_err(|e| JournalError::Sqlite {
                path: opts.path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        let checkpointer =
            checkpoint::Checkpointer::start(&opts.path).map_err(|e| JournalError::Sqlite {
                path: opts.path.clone(),
                source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
            })?;
        let journal = Journal {
            tx,
            path: opts.path,
            status,
            committed_seq: seq_rx,
            feed,
        };
        Ok((
            journal,
            WriterHandle {
                thread: Some(thread),
                checkpointer: Some(checkpointer),
            },
        ))
    }

    /// Appends stamped events in one transaction; resolves once durable.
    ///
    /// # Errors
    /// [`EmitError`] when the events are not durable.
    pub async fn append(&self, events: Vec<Event>) -> Result<Vec<Receipt>, EmitError> {
        let (reply, rx) = oneshot::channel();
        // Serialize here, on the emitter's task, so the single writer thread only writes.
        let bodies = events.iter().map(writer::body_of).collect();
        self.tx
            .send(writer::Msg::Append {
                events,
                bodies,
                reply,
            })
            .await
            .map_err(|_| EmitError::Closed)?;
        rx.await.map_err(|_| EmitError::Closed)?
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

    /// Asks the writer to finish what is queued and stop; see [`WriterHandle::join`].
    pub async fn close(&self) {
        let _ = self.tx.send(writer::Msg::Shutdown).await;
    }

    /// A new read connection.
    ///
    /// # Errors
    /// [`JournalError`] if the database cannot be opened.
    pub fn reader(&self) -> Result<JournalReader, JournalError> {
        JournalReader::open(&self.path)
    }

    /// The last committed seq, updated after every commit.
    pub fn committed_seq(&self) -> watch::Receiver<u64> {
        self.committed_seq.clone()
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

/// Owns the writer thread; join it at shutdown after [`Journal::close`].
pub struct WriterHandle {
    thread: Option<std::thread::JoinHandle<()>>,
    checkpointer: Option<checkpoint::Checkpointer>,
}

impl WriterHandle {
    /// Waits for the writer to commit what was queued and exit (it checkpoints and
    /// truncates the WAL on the way out).
    pub fn join(mut self) {
        if let Some(c) = self.checkpointer.take() {
            c.stop();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
