//! `campusgw journal salvage FILE --data-dir DIR`: copies every readable event from a
//! damaged journal (typically `journal.db.damaged-<time>`, moved aside at start) into the
//! live journal of `DIR`.
//!
//! - The damaged file is never modified: it (and its `-wal`) is copied into a scratch
//!   directory under `DIR` and read from there.
//! - Events keep their ids, kinds, classes, times and payloads; the live journal gives them
//!   new seqs after its own, in their original order. An event whose id the live journal
//!   already holds is skipped (so running salvage twice copies nothing the second time).
//!   De-duplication is by id only: an origin key match is not a reason to drop a recovered
//!   event.
//! - Salvaged events are undelivered for every live uplink (cursors are not carried over),
//!   so they are forwarded again; destinations de-duplicate by event id.
//! - Reading goes around damage: rows are read in seq order; where SQLite reports a damaged
//!   page, the seqs after the last good row are looked up one by one until rows read again,
//!   up to the file's last seq (`meta.next_seq` or `max(seq)`, whichever is readable; else
//!   until [`BLIND_PROBES`] lookups in a row found nothing).
//!
//! The gateway must be stopped: salvage writes the live journal directly and takes the
//! journal's lock, which a running gateway holds (it refuses with
//! [`super::JournalError::InUse`]). A second writer beside the running one would break the
//! one-writer invariant (seqs are assigned by the writer from memory).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use campusgw_sdk::{Class, Event, NewEvent};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, params};

use super::{JournalError, check, kinds, reader, retention, schema, writer};

/// Consecutive one-by-one lookups without a row after which a scan with no known end stops.
pub const BLIND_PROBES: u64 = 100_000;

/// Rows copied per live transaction.
const BATCH: usize = 1000;

/// What a salvage did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SalvageReport {
    /// Events read and decoded from the damaged file.
    pub read: u64,
    /// Of those, copied into the live journal.
    pub copied: u64,
    /// Of those, skipped because the live journal already holds their id.
    pub skipped: u64,
    /// Seqs that could not be read (damaged pages) or whose body does not decode.
    pub unreadable: u64,
}

/// Salvage errors.
#[derive(Debug, thiserror::Error)]
pub enum SalvageError {
    /// The live journal cannot be opened or written.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The damaged file cannot be opened at all.
    #[error("cannot read {path}: {reason}")]
    Source {
        /// The damaged file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// FILE is the live journal itself.
    #[error("{0} is the live journal; salvage reads a file moved aside")]
    SameFile(PathBuf),
}

/// Copies every readable event of `file` into the journal in `data_dir` (module doc).
///
/// # Errors
/// [`SalvageError`]; the live journal is left consistent (each batch is one transaction).
pub fn salvage(file: &Path, data_dir: &Path) -> Result<SalvageReport, SalvageError> {
    let live = data_dir.join("journal.db");
    let files = check::Files::of(&live);
    if same_file(file, &live) {
        return Err(SalvageError::SameFile(file.to_owned()));
    }
    let _lock = check::lock(&files)?;
    let source_err = |reason: String| SalvageError::Source {
        path: file.to_owned(),
        reason,
    };
    if !file.is_file() {
        return Err(source_err("no such file".into()));
    }
    let scratch = Scratch::copy(file, data_dir).map_err(|e| source_err(e.to_string()))?;
    let src = Connection::open_with_flags(
        scratch.db(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| source_err(e.to_string()))?;
    // A truncated file's header states more pages than it has; SQLite refuses to open such
    // a file unless the schema is writable (btree.c lockBtree), and then reads the pages
    // that exist. The file is a scratch copy.
    src.pragma_update(None, "writable_schema", "ON")
        .map_err(|e| source_err(e.to_string()))?;
    let opened = check::open_checked(&files, false)?;
    let mut dst = Copier::new(opened.conn, &live, opened.last_seq)?;
    if let Some(d) = opened.damaged {
        // The live journal itself failed its check and was replaced, as at gateway start.
        dst.raise_damaged(&d)?;
    }
    let mut report = SalvageReport::default();
    scan(&src, |seq, body| {
        match body.map(|b| reader::decode_value(seq, &b)) {
            None | Some(Err(_)) => report.unreadable += 1,
            Some(Ok(e)) => {
                report.read += 1;
                if dst.take(e) {
                    report.copied += 1;
                } else {
                    report.skipped += 1;
                }
            }
        }
        // Flushing as we go keeps memory at one batch.
        if dst.pending.len() >= BATCH {
            dst.flush()?;
        }
        Ok(())
    })?;
    dst.flush()?;
    dst.close();
    tracing::info!(from = %file.display(), read = report.read, copied = report.copied, skipped = report.skipped, unreadable = report.unreadable, "journal salvage done");
    Ok(report)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Walks `src` in seq order around damaged pages; `found(seq, Some(body))` for each row,
/// `found(seq, None)` for each seq whose lookup failed.
fn scan(
    src: &Connection,
    mut found: impl FnMut(u64, Option<Value>) -> Result<(), JournalError>,
) -> Result<(), JournalError> {
    let end = last_seq_of(src);
    let (mut cur, mut blind) = (0u64, 0u64);
    loop {
        let (rows, failed) = range(src, cur, BATCH);
        let n = rows.len();
        if n > 0 {
            blind = 0;
        }
        for (seq, body) in rows {
            cur = seq;
            found(seq, Some(body))?;
        }
        match failed {
            None if n < BATCH => return Ok(()),
            None => {}
            Some(e) => {
                let done = match end {
                    Some(end) => cur >= end,
                    None => blind >= BLIND_PROBES,
                };
                if done {
                    return Ok(());
                }
                tracing::debug!(after = cur, error = %e, "damaged page; probing seqs one by one");
                cur += 1;
                blind += 1;
                match point(src, cur) {
                    Ok(Some(body)) => {
                        blind = 0;
                        found(cur, Some(body))?;
                    }
                    Ok(None) => {}
                    Err(_) => found(cur, None)?,
                }
            }
        }
    }
}

/// The damaged file's last seq, from whichever of its records is readable.
fn last_seq_of(src: &Connection) -> Option<u64> {
    let meta: Option<i64> = src
        .query_row(
            "SELECT value - 1 FROM meta WHERE key = 'next_seq'",
            [],
            |r| r.get(0),
        )
        .ok();
    let max: Option<i64> = src
        .query_row("SELECT max(seq) FROM events", [], |r| r.get(0))
        .ok()
        .flatten();
    meta.max(max).map(|s| s.max(0) as u64)
}

/// Up to `limit` rows after `after`, and the error that stopped the read early, if any.
fn range(
    src: &Connection,
    after: u64,
    limit: usize,
) -> (Vec<(u64, Value)>, Option<rusqlite::Error>) {
    let mut out = Vec::new();
    let mut run = || -> rusqlite::Result<()> {
        let mut stmt = src
            .prepare_cached("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
        let mut rows = stmt.query(params![after as i64, limit as i64])?;
        while let Some(r) = rows.next()? {
            out.push((r.get::<_, i64>(0)? as u64, r.get::<_, Value>(1)?));
        }
        Ok(())
    };
    let failed = run().err();
    (out, failed)
}

fn point(src: &Connection, seq: u64) -> rusqlite::Result<Option<Value>> {
    src.query_row(
        "SELECT body FROM events WHERE seq = ?1",
        [seq as i64],
        |r| r.get(0),
    )
    .optional()
}

/// Writes salvaged events into the live journal, batch by batch.
struct Copier {
    conn: Connection,
    path: PathBuf,
    next_seq: u64,
    ids: HashSet<uuid::Uuid>,
    pending: Vec<Event>,
}

impl Copier {
    fn new(conn: Connection, path: &Path, last_seq: u64) -> Result<Copier, JournalError> {
        let mut ids = HashSet::new();
        {
            let mut stmt = conn
                .prepare("SELECT id FROM events")
                .map_err(schema::err(path))?;
            let mut rows = stmt.query([]).map_err(schema::err(path))?;
            while let Some(r) = rows.next().map_err(schema::err(path))? {
                let id: Vec<u8> = r.get(0).map_err(schema::err(path))?;
                if let Ok(id) = uuid::Uuid::from_slice(&id) {
                    ids.insert(id);
                }
            }
        }
        Ok(Copier {
            conn,
            path: path.to_owned(),
            next_seq: last_seq + 1,
            ids,
            pending: Vec::new(),
        })
    }

    /// Queues `e` unless its id is already held; returns whether it was queued.
    fn take(&mut self, e: Event) -> bool {
        if !self.ids.insert(e.id) {
            return false;
        }
        self.pending.push(e);
        true
    }

    fn raise_damaged(&mut self, d: &check::MovedAside) -> Result<(), JournalError> {
        let file = d.file.as_ref().map(|f| f.display().to_string());
        let payload = serde_json::json!({ "file": file, "error": d.error, "cause": "start_check" });
        let e = super::internal_event(
            NewEvent::new(kinds::STORAGE_DAMAGED, Class::Security).payload(payload),
        );
        self.pending.push(e);
        self.flush()
    }

    /// Commits what is queued in one transaction (seqs from `next_seq`, `meta` updated).
    fn flush(&mut self) -> Result<(), JournalError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut next = self.next_seq;
        let tx = self.conn.transaction().map_err(schema::err(&self.path))?;
        {
            // The writer's insert (writer::Inserter) minus de-duplication by origin key.
            let mut stmt = tx
                .prepare_cached(writer::INSERT_EVENT)
                .map_err(schema::err(&self.path))?;
            let mut bytes = 0i64;
            for e in &self.pending {
                let body = writer::body_of(e);
                bytes += writer::insert_row(&mut stmt, e, &body, next)
                    .map_err(schema::err(&self.path))?;
                next += 1;
            }
            tx.execute(
                "UPDATE meta SET value = ?1 WHERE key = 'next_seq'",
                [next as i64],
            )
            .map_err(schema::err(&self.path))?;
            retention::add_data_bytes(&tx, bytes).map_err(schema::err(&self.path))?;
        }
        tx.commit().map_err(schema::err(&self.path))?;
        self.next_seq = next;
        self.pending.clear();
        Ok(())
    }

    fn close(self) {
        if let Err(e) = self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
            tracing::debug!(error = %e, "wal checkpoint after salvage failed");
        }
    }
}

/// A copy of the damaged file (and its WAL) that salvage may open read-write, removed after.
struct Scratch(PathBuf);

impl Scratch {
    fn copy(file: &Path, data_dir: &Path) -> std::io::Result<Scratch> {
        let dir = data_dir.join(format!(".salvage-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir)?;
        let s = Scratch(dir);
        std::fs::copy(file, s.db())?;
        let wal = check::sidecar(file, "-wal");
        if wal.is_file() {
            std::fs::copy(&wal, check::sidecar(&s.db(), "-wal"))?;
        }
        Ok(s)
    }

    fn db(&self) -> PathBuf {
        self.0.join("damaged.db")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
