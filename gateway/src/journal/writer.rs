//! The single writer thread: group commit, dedup, failure handling, maintenance.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use campusgw_sdk::driver::{Backoff, EmitError, Receipt};
use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, Dedup, DeviceId, Event, Location, NewEvent};
use rusqlite::{Connection, params};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::durable::{Group, Outputs, Syncer};
use super::retention::{self, MaintenanceReport};
use super::{JournalError, JournalOptions, JournalStatus, schema};

pub(super) enum Msg {
    Append {
        events: Vec<Event>,
        /// Each event's JSON with seq 0, serialized by the emitter off the writer thread.
        bodies: Vec<String>,
        reply: oneshot::Sender<Result<Vec<Receipt>, EmitError>>,
        /// The telemetry byte budget this append holds, given back when it is answered.
        budget: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    SetCursor {
        uplink: String,
        class: Class,
        seq: u64,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    Maintain {
        reply: Option<oneshot::Sender<Result<MaintenanceReport, String>>>,
    },
    /// Records or clears a destination's rejection (its own small transaction, durable
    /// before the reply; see [`super::rejected`]).
    Rejected {
        op: super::rejected::RejectedOp,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Remembers an accepted county command's nonce and prunes expired ones (its own small
    /// transaction, durable before the reply; see [`super::nonces`]). Replies whether new.
    Nonce {
        nonce: String,
        issued_at_us: i64,
        expires_at_us: i64,
        reply: oneshot::Sender<Result<bool, JournalError>>,
    },
    /// A state write of another module (the console's users, sessions, API tokens), in a
    /// transaction of its own, committed (fsync'd) before the reply. The statement lives
    /// with its owner so the journal does not depend on it.
    Exec {
        op: ExecOp,
        reply: oneshot::Sender<Result<(), JournalError>>,
    },
    /// Fault injection for tests: caps the database at a page count (SQLITE_FULL beyond).
    LimitPages {
        pages: u32,
    },
    Shutdown,
    /// A reader met a row whose body does not decode: quarantine it (see `quarantine.rs`).
    Quarantine {
        seq: u64,
        error: String,
    },
    /// Fault injection for tests: the writer thread panics.
    Panic,
    /// Fault injection for tests: the next WAL fsync fails.
    FailNextSync,
    /// The sync stage failed: the writer looks at it now instead of at its next message.
    Wake,
    /// A rules runner step: derived events plus cursor, state, alarm and action rows in
    /// one transaction of its own (see [`super::rules`]).
    RulesStep {
        step: Box<super::rules::RulesStep>,
        bodies: Vec<String>,
        reply: oneshot::Sender<Result<super::rules::StepReceipt, JournalError>>,
    },
}

/// A write another module runs on the writer's connection ([`Journal::exec`]).
pub type ExecOp = Box<dyn FnOnce(&rusqlite::Transaction<'_>) -> rusqlite::Result<()> + Send>;

impl super::Journal {
    /// Runs `op` on the writer thread in its own transaction and resolves once it is
    /// committed (durable). For small state tables beside the events (the console's users,
    /// sessions, API tokens, migration 6); events go through [`super::Journal::append`].
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone, [`JournalError::Sqlite`] if `op` or
    /// the commit failed (nothing of it is kept then).
    pub async fn exec(&self, op: ExecOp) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Exec { op, reply })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// A read-only SQLite connection to the journal file, for tables outside the events
    /// (the console's users and sessions); WAL lets it read while the writer writes.
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if the file cannot be opened.
    pub fn read_connection(&self) -> Result<Connection, JournalError> {
        schema::open_ro(&self.path)
    }
}

struct PendingAppend {
    events: Vec<Event>,
    bodies: Vec<String>,
    reply: oneshot::Sender<Result<Vec<Receipt>, EmitError>>,
    /// Given back when the append is answered (just before the reply on commit).
    _budget: Option<tokio::sync::OwnedSemaphorePermit>,
}

struct PendingCursor {
    uplink: String,
    class: Class,
    seq: u64,
    reply: oneshot::Sender<Result<(), JournalError>>,
}

/// Why storage is failing and since when.
struct Outage {
    since: chrono::DateTime<chrono::Utc>,
    reason: String,
}

pub(super) struct Writer {
    conn: Connection,
    opts: JournalOptions,
    status: Arc<JournalStatus>,
    feed: broadcast::Sender<Arc<Event>>,
    /// The WAL sync stage: every answer and every publication goes through it.
    syncer: Syncer,
    next_seq: u64,
    appends: Vec<PendingAppend>,
    cursors: Vec<PendingCursor>,
    pending_events: usize,
    /// Body bytes of the pending appends (the outage bound counts them too).
    pending_bytes: usize,
    maintain: Vec<Option<oneshot::Sender<Result<MaintenanceReport, String>>>>,
    outage: Option<Outage>,
    quota_critical: bool,
    source: DeviceId,
}

/// How long a shutdown keeps retrying a failing disk before giving up on queued events.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Writer {
    pub(super) fn new(
        conn: Connection,
        opts: JournalOptions,
        status: Arc<JournalStatus>,
        (seq_tx, wake, heads): (
            watch::Sender<u64>,
            mpsc::WeakSender<Msg>,
            super::heads::HeadsTx,
        ),
        feed: broadcast::Sender<Arc<Event>>,
        last_seq: u64,
    ) -> Result<Writer, JournalError> {
        let syncer = Syncer::start(
            &opts.path,
            !opts.unsafe_sync_off_for_test,
            Outputs {
                status: status.clone(),
                seq_tx,
                feed: feed.clone(),
                wake,
                heads,
            },
        )
        .map_err(|e| super::check::io_err(&opts.path, e))?;
        let w = Writer {
            conn,
            status,
            syncer,
            feed,
            next_seq: last_seq + 1,
            appends: Vec::new(),
            cursors: Vec::new(),
            pending_events: 0,
            pending_bytes: 0,
            maintain: Vec::new(),
            outage: None,
            quota_critical: false,
            source: DeviceId::new("gateway").expect("static id is valid"),
            opts,
        };
        w.register_uplinks()?;
        Ok(w)
    }

    fn register_uplinks(&self) -> Result<(), JournalError> {
        let now = chrono::Utc::now().timestamp_micros();
        for u in &self.opts.uplinks {
            for c in &u.classes {
                self.conn
                    .execute(
                        "INSERT OR IGNORE INTO cursors (uplink, class, seq, updated_at) VALUES (?1, ?2, 0, ?3)",
                        params![u.name, c.rank(), now],
                    )
                    .map_err(schema::err(&self.opts.path))?;
            }
        }
        Ok(())
    }

    pub(super) fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        let mut closing: Option<Instant> = None;
        loop {
            if let Some(e) = self.syncer.failure() {
                panic!("journal WAL fsync failed, nothing more can be made durable: {e}");
            }
            if self.is_idle() && closing.is_none() {
                match rx.blocking_recv() {
                    Some(m) => self.accept(m, &mut closing),
                    None => closing = Some(Instant::now()),
                }
            }
            while self.pending_events < self.opts.max_batch || self.outage.is_some() {
                match rx.try_recv() {
                    Ok(m) => self.accept(m, &mut closing),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        closing.get_or_insert_with(Instant::now);
                        break;
                    }
                }
            }
            if !self.appends.is_empty() || !self.cursors.is_empty() {
                match self.commit() {
                    Ok(()) => backoff.reset(),
                    Err(e) => {
                        self.on_failure(&e);
                        if closing.is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE) {
                            tracing::error!(
                                queued = self.pending_events,
                                "journal closing with events it could not store"
                            );
                            self.syncer.finish();
                            return;
                        }
                        std::thread::sleep(backoff.next_delay());
                        continue;
                    }
                }
            }
            if !self.maintain.is_empty() {
                self.run_maintenance();
            }
            if closing.is_some() && self.is_idle() {
                self.syncer.finish();
                self.checkpoint();
                return;
            }
        }
    }

    fn is_idle(&self) -> bool {
        self.appends.is_empty() && self.cursors.is_empty() && self.maintain.is_empty()
    }

    fn accept(&mut self, m: Msg, closing: &mut Option<Instant>) {
        match m {
            Msg::Append {
                events,
                bodies,
                reply,
                budget,
            } => {
                let bytes: usize = bodies.iter().map(String::len).sum();
                if let Some(o) = &self.outage {
                    let vital = events.iter().any(|e| e.class == Class::LifeSafety);
                    let bound = if vital {
                        self.opts.memory_backlog + self.opts.life_safety_reserve
                    } else {
                        self.opts.memory_backlog
                    };
                    // Life-safety appends are bounded by count alone (they are small and
                    // must not be refused for telemetry's bytes); the others by both.
                    let too_big =
                        !vital && self.pending_bytes + bytes > self.opts.memory_backlog_bytes;
                    if self.pending_events + events.len() > bound || too_big {
                        let class = if vital { "life_safety" } else { "other" };
                        metrics::counter!("journal_refused_events_total", "class" => class)
                            .increment(events.len() as u64);
                        // As on commit: the budget is back before the answer.
                        drop(budget);
                        let _ = reply.send(Err(EmitError::Storage(format!(
                            "{} (memory backlog of {bound} events is full)",
                            o.reason
                        ))));
                        return;
                    }
                }
                self.pending_events += events.len();
                self.pending_bytes += bytes;
                self.appends.push(PendingAppend {
                    events,
                    bodies,
                    reply,
                    _budget: budget,
                });
            }
            Msg::SetCursor {
                uplink,
                class,
                seq,
                reply,
            } => {
                self.cursors.push(PendingCursor {
                    uplink,
                    class,
                    seq,
                    reply,
                });
            }
            Msg::Maintain { reply } => self.maintain.push(reply),
            Msg::Rejected { op, reply } => {
                let r = op.apply(&self.conn).map_err(schema::err(&self.opts.path));
                self.answer_when_durable(r, reply);
            }
            Msg::Nonce {
                nonce,
                issued_at_us,
                expires_at_us,
                reply,
            } => {
                let now = chrono::Utc::now().timestamp_micros();
                let r =
                    super::nonces::remember(&self.conn, &nonce, issued_at_us, expires_at_us, now)
                        .map_err(schema::err(&self.opts.path));
                self.answer_when_durable(r, reply);
            }
            Msg::Exec { op, reply } => {
                let r = (|| {
                    let tx = self.conn.unchecked_transaction()?;
                    op(&tx)?;
                    tx.commit()
                })()
                .map_err(schema::err(&self.opts.path));
                self.answer_when_durable(r, reply);
            }
            Msg::LimitPages { pages } => {
                if let Err(e) = self.conn.pragma_update(None, "max_page_count", pages) {
                    tracing::warn!(error = %e, "cannot set max_page_count");
                }
            }
            Msg::Shutdown => {
                closing.get_or_insert_with(Instant::now);
            }
            Msg::Quarantine { seq, error } => self.quarantine(seq, &error),
            Msg::Panic => panic!("journal writer killed by fault injection"),
            Msg::FailNextSync => self.syncer.fail_next_for_test(),
            Msg::Wake => {}
            Msg::RulesStep {
                mut step,
                bodies,
                reply,
            } => self.rules_step(&mut step, &bodies, reply),
        }
    }

    /// Writes everything pending in one transaction; on success answers every emitter.
    fn commit(&mut self) -> Result<(), rusqlite::Error> {
        let started = Instant::now();
        let mut extra: Vec<Event> = match &self.outage {
            Some(o) => self.recovery_events(o),
            None => Vec::new(),
        };
        let tx = self.conn.transaction()?;
        let mut next = self.next_seq;
        let mut receipts: Vec<Vec<Receipt>> = Vec::with_capacity(self.appends.len());
        let mut fresh: Vec<Event> = Vec::new();
        let mut heads = [0u64; 5];
        {
            let mut ins = Inserter::new(&tx, self.opts.dedup_window)?;
            for e in &mut extra {
                let r = ins.insert(e, &body_of(e), next)?;
                if !r.duplicate {
                    heads[usize::from(e.class.rank())] = next;
                }
                next += u64::from(!r.duplicate);
            }
            let mut rows: Vec<(&mut Event, &str)> = self
                .appends
                .iter_mut()
                .flat_map(|a| a.events.iter_mut().zip(a.bodies.iter().map(String::as_str)))
                .collect();
            let all = ins.insert_all(&mut rows, &mut next)?;
            for ((e, _), r) in rows.iter().zip(&all) {
                if !r.duplicate {
                    let h = &mut heads[usize::from(e.class.rank())];
                    *h = (*h).max(r.seq);
                }
            }
            if self.feed.receiver_count() > 0 {
                fresh.extend(
                    rows.iter()
                        .zip(&all)
                        .filter(|(_, r)| !r.duplicate)
                        .map(|((e, _), _)| (**e).clone()),
                );
            }
            drop(rows);
            let mut all = all.into_iter();
            for a in &self.appends {
                receipts.push(all.by_ref().take(a.events.len()).collect());
            }
            let now = chrono::Utc::now().timestamp_micros();
            let mut cur = tx.prepare_cached(
                "INSERT INTO cursors (uplink, class, seq, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (uplink, class) DO UPDATE SET seq = max(seq, excluded.seq), updated_at = excluded.updated_at",
            )?;
            for c in &self.cursors {
                cur.execute(params![c.uplink, c.class.rank(), c.seq as i64, now])?;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
                [next as i64],
            )?;
            retention::add_data_bytes(&tx, ins.bytes_added)?;
        }
        tx.commit()?;
        let mut events = extra;
        events.extend(fresh);
        self.after_commit(next, receipts, events, heads, started);
        Ok(())
    }

    /// The transaction is in the WAL: its answers wait for the sync stage ([`Syncer`]).
    fn after_commit(
        &mut self,
        next: u64,
        receipts: Vec<Vec<Receipt>>,
        events: Vec<Event>,
        heads: [u64; 5],
        started: Instant,
    ) {
        let committed = next - self.next_seq;
        self.next_seq = next;
        if self.outage.take().is_some() {
            tracing::warn!("journal storage recovered; queued events committed");
            metrics::gauge!("journal_storage_critical").set(if self.quota_critical {
                1.0
            } else {
                0.0
            });
            self.status
                .critical
                .store(self.quota_critical, Ordering::SeqCst);
        }
        metrics::histogram!("journal_commit_seconds").record(started.elapsed().as_secs_f64());
        let mut done: Vec<super::durable::Done> =
            Vec::with_capacity(self.appends.len() + self.cursors.len());
        for (a, r) in self.appends.drain(..).zip(receipts) {
            let PendingAppend {
                reply,
                _budget: budget,
                ..
            } = a;
            done.push(Box::new(move |synced: Result<(), String>| {
                // The budget comes back before the answer, so whoever was answered finds
                // it free (the bytes are on disk; the budget bounds what waits in memory).
                drop(budget);
                let _ = reply.send(synced.map(|()| r).map_err(EmitError::Storage));
            }));
        }
        for c in self.cursors.drain(..) {
            let reply = c.reply;
            done.push(Box::new(move |synced: Result<(), String>| {
                let _ = reply.send(synced.map_err(JournalError::Unsynced));
            }));
        }
        self.syncer.submit(Group {
            committed,
            events,
            heads: Class::ALL
                .into_iter()
                .map(|c| (c, heads[usize::from(c.rank())]))
                .filter(|(_, seq)| *seq > 0)
                .collect(),
            done,
        });
        self.pending_events = 0;
        self.pending_bytes = 0;
    }

    /// Answers `reply` with `r` once the transaction that produced it is durable; an error
    /// (nothing was committed) is answered at once.
    fn answer_when_durable<T: Send + 'static>(
        &self,
        r: Result<T, JournalError>,
        reply: oneshot::Sender<Result<T, JournalError>>,
    ) {
        match r {
            Ok(v) => self.syncer.submit(Group {
                committed: 0,
                events: Vec::new(),
                heads: Vec::new(),
                done: vec![Box::new(move |synced: Result<(), String>| {
                    let _ = reply.send(synced.map(|()| v).map_err(JournalError::Unsynced));
                })],
            }),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    fn on_failure(&mut self, e: &rusqlite::Error) {
        metrics::counter!("journal_write_failures_total").increment(1);
        let reason = e.to_string();
        if self.outage.is_none() {
            tracing::error!(error = %reason, queued = self.pending_events, "storage.critical: journal cannot write; holding events in memory and retrying");
            self.outage = Some(Outage {
                since: chrono::Utc::now(),
                reason,
            });
        } else {
            tracing::debug!(error = %reason, "journal write retry failed");
        }
        self.status.critical.store(true, Ordering::SeqCst);
        metrics::gauge!("journal_storage_critical").set(1.0);
    }

    fn recovery_events(&self, o: &Outage) -> Vec<Event> {
        let payload = serde_json::json!({
            "reason": o.reason,
            "since": o.since,
            "until": chrono::Utc::now(),
            "cause": "write_failure",
        });
        vec![
            self.internal(
                NewEvent::new(kinds::STORAGE_CRITICAL, Class::Security).payload(payload.clone()),
            ),
            self.internal(
                NewEvent::new(kinds::STORAGE_RECOVERED, Class::Operations).payload(payload),
            ),
        ]
    }

    fn internal(&self, e: NewEvent) -> Event {
        Event::stamp(e, &self.source, "journal", &Location::default())
    }

    fn run_maintenance(&mut self) {
        let replies: Vec<_> = self.maintain.drain(..).flatten().collect();
        // A caller waiting for the report drives further passes itself (Journal::maintain).
        let driven = !replies.is_empty();
        let report =
            retention::run(&self.conn, &self.opts, chrono::Utc::now()).map_err(|e| e.to_string());
        match &report {
            // Not finished: continue after committing whatever is waiting. The quota verdict
            // waits for a complete run.
            Ok(r) if r.more => {
                if !driven {
                    self.maintain.push(None);
                }
            }
            Ok(r) => self.on_quota(r),
            Err(e) => tracing::warn!(error = %e, "journal maintenance failed"),
        }
        for r in replies {
            let _ = r.send(report.clone());
        }
    }

    fn on_quota(&mut self, report: &MaintenanceReport) {
        if report.over_quota == self.quota_critical {
            return;
        }
        self.quota_critical = report.over_quota;
        let kind = if report.over_quota {
            kinds::STORAGE_CRITICAL
        } else {
            kinds::STORAGE_RECOVERED
        };
        let class = if report.over_quota {
            Class::Security
        } else {
            Class::Operations
        };
        if report.over_quota {
            tracing::error!(
                used_bytes = report.used_bytes,
                quota_bytes = self.opts.retention.quota_bytes,
                "storage.critical: disk quota reached and only undelivered alarms, security events and card transactions remain; nothing is dropped"
            );
        }
        let payload = serde_json::json!({
            "cause": "quota",
            "used_bytes": report.used_bytes,
            "quota_bytes": self.opts.retention.quota_bytes,
        });
        let (reply, _) = oneshot::channel();
        let event = self.internal(NewEvent::new(kind, class).payload(payload));
        let body = body_of(&event);
        self.pending_bytes += body.len();
        self.appends.push(PendingAppend {
            bodies: vec![body],
            events: vec![event],
            reply,
            _budget: None,
        });
        self.pending_events += 1;
        self.status.critical.store(
            self.quota_critical || self.outage.is_some(),
            Ordering::SeqCst,
        );
        metrics::gauge!("journal_storage_critical").set(if self.quota_critical {
            1.0
        } else {
            0.0
        });
    }

    fn checkpoint(&self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(error = %e, "wal checkpoint at close failed");
        }
    }
}

/// The stored JSON body of an event: its JSON form with `seq` 0 (the `seq` column is
/// authoritative, so bodies can be serialized by emitters before a seq exists).
pub(super) fn body_of(e: &Event) -> String {
    e.to_json_with_seq(0)
}

/// Inserts one event row (the writer's and salvage's one statement).
pub(super) const INSERT_EVENT: &str =
    "INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

/// Runs [`INSERT_EVENT`] (or `INSERT_LIVE`) for `e` with `body` at `seq`; returns the data
/// bytes it adds to the quota (ADR 0002), 0 if no row was inserted.
pub(super) fn insert_row(
    stmt: &mut rusqlite::CachedStatement<'_>,
    e: &Event,
    body: &str,
    seq: u64,
) -> rusqlite::Result<i64> {
    let changed = stmt.execute(params![
        seq as i64,
        e.id.as_bytes(),
        e.class.rank(),
        e.kind.as_str(),
        e.source.device.as_str(),
        e.origin_ref,
        e.received_at.timestamp_micros(),
        body
    ])?;
    // 0: the row was not inserted (a live key already there; `INSERT_LIVE` only).
    Ok(if changed == 0 { 0 } else { row_bytes(body) })
}

/// What one stored row adds to the quota (ADR 0002).
fn row_bytes(body: &str) -> i64 {
    retention::ROW_OVERHEAD + body.len() as i64
}

/// Inserts a keyed event as the live row of its `(device, origin_ref)` (migration 5): the
/// unique index over live keys finds a repeat during the insert itself, so a new message
/// costs one index descent, as before windowed dedup, instead of a probe and an insert.
const INSERT_LIVE: &str =
    "INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body, live)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1)
     ON CONFLICT (device, origin_ref) WHERE live = 1 DO NOTHING";

/// The largest multi-row insert ([`Inserter::insert_all`]); smaller runs use the powers of
/// two below it, so at most six statements are prepared.
const CHUNK: usize = 32;

/// [`insert_many_sql`] for runs of 1, 2, 4, ... [`CHUNK`] rows (index: log2 of the run),
/// built once instead of for every run of the hot path.
static INSERT_MANY: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
    (0..=CHUNK.ilog2())
        .map(|k| insert_many_sql(1 << k))
        .collect()
});

/// `INSERT ... VALUES (..), (..) ...` of `n` rows, each the live row of its key when it has
/// one (`live` 1) and keyless otherwise (`live` NULL, outside the live-key index), doing
/// nothing for a row whose key already has a live row.
fn insert_many_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body, live) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            sql.push(',');
        }
        sql.push_str("(?,?,?,?,?,?,?,?,?)");
    }
    sql.push_str(" ON CONFLICT (device, origin_ref) WHERE live = 1 DO NOTHING");
    sql
}

/// Prepared statements for inserting events with de-duplication (ADR 0003).
struct Inserter<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    insert: rusqlite::CachedStatement<'t>,
    insert_live: rusqlite::CachedStatement<'t>,
    live: rusqlite::CachedStatement<'t>,
    retire: rusqlite::CachedStatement<'t>,
    window_us: i64,
    bytes_added: i64,
}

impl<'t> Inserter<'t> {
    fn new(tx: &'t rusqlite::Transaction<'t>, window: Duration) -> rusqlite::Result<Inserter<'t>> {
        Ok(Inserter {
            tx,
            insert: tx.prepare_cached(INSERT_EVENT)?,
            insert_live: tx.prepare_cached(INSERT_LIVE)?,
            live: tx.prepare_cached(
                "SELECT seq, id, kind, received_at FROM events
                 WHERE device = ?1 AND origin_ref = ?2 AND live = 1",
            )?,
            retire: tx.prepare_cached("UPDATE events SET live = NULL WHERE seq = ?1")?,
            window_us: i64::try_from(window.as_micros()).unwrap_or(i64::MAX),
            bytes_added: 0,
        })
    }

    /// Inserts `e` at `seq`, or returns the receipt of the event it repeats: the newest
    /// event of the same device and `origin_ref` (the live row of that key), of the same
    /// kind, received within the window before it (any time before it for
    /// [`Dedup::Lifetime`]). A key that is not a repeat retires the live row and takes its
    /// place, so the live row is always the key's newest.
    fn insert(&mut self, e: &mut Event, body: &str, seq: u64) -> rusqlite::Result<Receipt> {
        let r = self.place(e, body, seq)?;
        if !r.duplicate {
            e.seq = seq;
        }
        Ok(r)
    }

    /// Inserts `rows` in order from seq `*next` on, advancing `*next` past the rows
    /// inserted; the receipts are those [`Inserter::insert`] gives one by one.
    ///
    /// The common case is a run of new messages: up to [`CHUNK`] rows go in one statement
    /// (one parse-free step instead of one per row; the writer's time is mostly spent in
    /// `sqlite3_step`). If any row of a run meets a live row of its key (a repeat, or a key
    /// whose event must be compared), the run's inserted rows are deleted again inside
    /// this transaction and the run goes row by row through [`Inserter::insert`], so seqs
    /// stay contiguous and every comparison of ADR 0003 is made as before.
    fn insert_all(
        &mut self,
        rows: &mut [(&mut Event, &str)],
        next: &mut u64,
    ) -> rusqlite::Result<Vec<Receipt>> {
        let mut receipts = Vec::with_capacity(rows.len());
        let mut rest = rows;
        while !rest.is_empty() {
            let n = if rest.len() >= CHUNK {
                CHUNK
            } else {
                1 << rest.len().ilog2()
            };
            let (run, tail) = rest.split_at_mut(n);
            rest = tail;
            if n > 1 && self.insert_run(run, *next)? {
                for (e, body) in run.iter_mut() {
                    e.seq = *next;
                    self.bytes_added += row_bytes(body);
                    receipts.push(Receipt {
                        id: e.id,
                        seq: *next,
                        duplicate: false,
                    });
                    *next += 1;
                }
                continue;
            }
            for (e, body) in run.iter_mut() {
                let r = self.insert(e, body, *next)?;
                *next += u64::from(!r.duplicate);
                receipts.push(r);
            }
        }
        Ok(receipts)
    }

    /// Inserts `run` at seqs `first..` in one statement; false (and nothing inserted) if
    /// some row's key already had a live row.
    fn insert_run(&mut self, run: &[(&mut Event, &str)], first: u64) -> rusqlite::Result<bool> {
        // Runs are powers of two up to CHUNK (insert_all).
        let mut stmt = self
            .tx
            .prepare_cached(&INSERT_MANY[run.len().ilog2() as usize])?;
        let mut at = 1;
        for (i, (e, body)) in run.iter().enumerate() {
            let live: Option<i64> = e.origin_ref.as_ref().map(|_| 1);
            stmt.raw_bind_parameter(at, (first + i as u64) as i64)?;
            stmt.raw_bind_parameter(at + 1, e.id.as_bytes())?;
            stmt.raw_bind_parameter(at + 2, e.class.rank())?;
            stmt.raw_bind_parameter(at + 3, e.kind.as_str())?;
            stmt.raw_bind_parameter(at + 4, e.source.device.as_str())?;
            stmt.raw_bind_parameter(at + 5, &e.origin_ref)?;
            stmt.raw_bind_parameter(at + 6, e.received_at.timestamp_micros())?;
            stmt.raw_bind_parameter(at + 7, *body)?;
            stmt.raw_bind_parameter(at + 8, live)?;
            at += 9;
        }
        let changed = stmt.raw_execute()?;
        if changed == run.len() {
            return Ok(true);
        }
        if changed > 0 {
            self.tx.execute(
                "DELETE FROM events WHERE seq >= ?1 AND seq < ?2",
                params![first as i64, (first + run.len() as u64) as i64],
            )?;
        }
        Ok(false)
    }

    /// [`Inserter::insert`] without stamping the seq, so the key stays borrowed from `e`.
    fn place(&mut self, e: &Event, body: &str, seq: u64) -> rusqlite::Result<Receipt> {
        let Some(key) = e.origin_ref.as_deref() else {
            return self.insert_with(false, e, body, seq)?.ok_or(NOT_INSERTED);
        };
        // The common case, a new message: one statement, one descent of the live index.
        if let Some(r) = self.insert_with(true, e, body, seq)? {
            return Ok(r);
        }
        let (old_seq, id, kind, at) =
            self.live
                .query_row(params![e.source.device.as_str(), key], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, Vec<u8>>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                    ))
                })?;
        if kind != e.kind.as_str() {
            // A driver's key that does not cover the content: never take a different
            // message for a repeat.
            observe_key_collision(e, key, &kind);
        } else if match e.dedup {
            Dedup::Lifetime => true,
            Dedup::Window => e.received_at.timestamp_micros().saturating_sub(at) <= self.window_us,
        } {
            return Ok(Receipt {
                id: uuid::Uuid::from_slice(&id).unwrap_or(e.id),
                seq: old_seq as u64,
                duplicate: true,
            });
        }
        self.retire.execute([old_seq])?;
        // The live row was just retired inside this transaction, so the key is free.
        self.insert_with(true, e, body, seq)?.ok_or(NOT_INSERTED)
    }

    /// Inserts `e` at `seq` (as its key's live row if `live`); `None` if the key already
    /// has a live row.
    fn insert_with(
        &mut self,
        live: bool,
        e: &Event,
        body: &str,
        seq: u64,
    ) -> rusqlite::Result<Option<Receipt>> {
        let stmt = if live {
            &mut self.insert_live
        } else {
            &mut self.insert
        };
        let added = insert_row(stmt, e, body, seq)?;
        if added == 0 {
            return Ok(None);
        }
        self.bytes_added += added;
        Ok(Some(Receipt {
            id: e.id,
            seq,
            duplicate: false,
        }))
    }
}

/// An insert that must succeed changed no row: the transaction is rolled back and retried
/// like any failed commit (it cannot happen while this writer is the only one).
const NOT_INSERTED: rusqlite::Error = rusqlite::Error::StatementChangedRows(0);

fn observe_key_collision(e: &Event, key: &str, stored_kind: &str) {
    metrics::counter!("journal_origin_ref_collisions_total").increment(1);
    tracing::warn!(
        device = %e.source.device,
        origin_ref = key,
        kind = %e.kind,
        stored_kind,
        "same origin_ref, different kind: kept as a new event (driver key does not cover the content)"
    );
}

impl Writer {
    /// Moves an undecodable row to `quarantine` and journals one `journal.corrupt` event,
    /// in one transaction of its own (pending appends get their seqs after it).
    fn quarantine(&mut self, seq: u64, error: &str) {
        let payload = serde_json::json!({ "seq": seq, "error": error });
        let mut event = self.internal(
            NewEvent::new(super::kinds::JOURNAL_CORRUPT, Class::Security).payload(payload),
        );
        let body = body_of(&event);
        let at = self.next_seq;
        let window = self.opts.dedup_window;
        let moved = (|| -> rusqlite::Result<bool> {
            let tx = self.conn.transaction()?;
            if !super::quarantine::move_row(&tx, seq, error)? {
                return Ok(false);
            }
            let added = {
                let mut ins = Inserter::new(&tx, window)?;
                ins.insert(&mut event, &body, at)?;
                ins.bytes_added
            };
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
                [at as i64 + 1],
            )?;
            retention::add_data_bytes(&tx, added)?;
            tx.commit()?;
            Ok(true)
        })();
        match moved {
            Ok(true) => {
                tracing::error!(
                    seq,
                    error,
                    event_seq = at,
                    "journal.corrupt: undecodable row moved to quarantine"
                );
                metrics::counter!("journal_quarantined_total").increment(1);
                self.next_seq = at + 1;
                self.syncer.submit(Group {
                    committed: 1,
                    events: vec![event],
                    heads: vec![(Class::Security, at)],
                    done: Vec::new(),
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(seq, error = %e, "cannot quarantine a corrupt row now; retried when it is read again")
            }
        }
    }
}

impl Writer {
    /// Writes a rules step in its own transaction (pending appends get their seqs after
    /// its events) and publishes its events like any commit.
    fn rules_step(
        &mut self,
        step: &mut super::rules::RulesStep,
        bodies: &[String],
        reply: oneshot::Sender<Result<super::rules::StepReceipt, JournalError>>,
    ) {
        let first = self.next_seq;
        let now = chrono::Utc::now().timestamp_micros();
        let written = (|| -> rusqlite::Result<_> {
            let tx = self.conn.transaction()?;
            let (receipt, bytes) = super::rules::write_step(&tx, step, bodies, first, now)?;
            let next = first + step.events.len() as u64;
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
                [next as i64],
            )?;
            retention::add_data_bytes(&tx, bytes)?;
            tx.commit()?;
            Ok(receipt)
        })();
        let receipt = match written {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(schema::err(&self.opts.path)(e)));
                return;
            }
        };
        let n = step.events.len() as u64;
        self.next_seq = first + n;
        self.syncer.submit(Group {
            committed: n,
            heads: step.events.iter().map(|e| (e.class, e.seq)).collect(),
            events: step.events.drain(..).collect(),
            done: vec![Box::new(move |synced: Result<(), String>| {
                let _ = reply.send(synced.map(|()| receipt).map_err(JournalError::Unsynced));
            })],
        });
    }
}
