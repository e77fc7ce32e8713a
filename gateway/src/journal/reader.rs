//! Read connections: events by seq range and by class, cursors, backlog.
//!
//! A row whose body does not decode into an [`Event`] never stops a reader: [`JournalReader::after`]
//! skips it (and fills its page from the rows after it), logs it, counts it, and, for a
//! reader handed out by [`super::Journal::reader`], asks the writer to quarantine it (see
//! [`super::quarantine`]). Readers opened on a bare file (`campusgw journal export`) skip
//! and count only.

use std::cell::Cell;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use campusgw_sdk::{Class, Event};
use rusqlite::types::{Value, ValueRef};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::mpsc;

use super::writer::Msg;
use super::{JournalError, JournalStatus, schema};

/// A read-only connection to the journal (WAL lets it read while the writer writes).
pub struct JournalReader {
    conn: Connection,
    path: std::path::PathBuf,
    /// The writer, to quarantine corrupt rows; weak so a reader never keeps it running.
    writer: Option<mpsc::WeakSender<Msg>>,
    /// The running journal's status: this reader sees events up to its `last_seq`, the
    /// newest durable one (`durable.rs`), never a commit whose WAL sync is still running.
    visible: Option<Arc<JournalStatus>>,
    corrupt_seen: Cell<u64>,
}

impl JournalReader {
    /// Opens a reader on an existing journal file.
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if the file cannot be opened.
    pub fn open(path: &Path) -> Result<JournalReader, JournalError> {
        Ok(JournalReader {
            conn: schema::open_ro(path)?,
            path: path.to_owned(),
            writer: None,
            visible: None,
            corrupt_seen: Cell::new(0),
        })
    }

    /// This reader sees only what `status` says is durable (readers of the running
    /// gateway; a bare file's reader sees every committed row).
    pub(super) fn with_visible(mut self, status: Arc<JournalStatus>) -> JournalReader {
        self.visible = Some(status);
        self
    }

    /// The newest seq this reader may return.
    fn bound(&self) -> i64 {
        self.visible.as_ref().map_or(i64::MAX, |s| {
            i64::try_from(s.last_seq.load(Ordering::SeqCst)).unwrap_or(i64::MAX)
        })
    }

    /// This reader reports corrupt rows to the writer for quarantine.
    pub(super) fn with_writer(mut self, writer: mpsc::WeakSender<Msg>) -> JournalReader {
        self.writer = Some(writer);
        self
    }

    /// Rows this reader skipped because their body did not decode.
    pub fn corrupt_seen(&self) -> u64 {
        self.corrupt_seen.get()
    }

    fn report_corrupt(&self, e: &JournalError) {
        let JournalError::Corrupt { seq, reason } = e else {
            return;
        };
        self.corrupt_seen.set(self.corrupt_seen.get() + 1);
        metrics::counter!("journal_corrupt_rows_skipped_total").increment(1);
        tracing::warn!(journal = %self.path.display(), seq, error = %reason, "journal row cannot be decoded; skipped (quarantined when the gateway reads it)");
        if let Some(tx) = self.writer.as_ref().and_then(mpsc::WeakSender::upgrade) {
            // Not awaited: readers are synchronous. A full queue only delays the move
            // until the row is read again.
            let _ = tx.try_send(Msg::Quarantine {
                seq: *seq,
                error: reason.clone(),
            });
        }
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        schema::err(&self.path)
    }

    /// Up to `limit` events with seq > `after`, in seq order, optionally of one class. Rows
    /// that do not decode are skipped and reported (module doc); fewer than `limit` events
    /// means there are no more.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn after(
        &self,
        after: u64,
        class: Option<Class>,
        limit: usize,
    ) -> Result<Vec<Event>, JournalError> {
        self.after_as(after, class, limit, decode_ref)
    }

    /// [`JournalReader::after`] with the caller's decoding of each stored body (TEXT or
    /// BLOB): the uplink feed keeps the JSON as stored instead of parsing it into an
    /// [`Event`]. A decode error must be [`JournalError::Corrupt`]; such rows are skipped and
    /// reported as in `after`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn after_as<T>(
        &self,
        after: u64,
        class: Option<Class>,
        limit: usize,
        decode: impl Fn(u64, ValueRef<'_>) -> Result<T, JournalError>,
    ) -> Result<Vec<T>, JournalError> {
        let mut out = Vec::new();
        let mut from = after;
        while out.len() < limit {
            let want = limit - out.len();
            let (rows, last) = self.page(from, class, want, &mut out, &decode)?;
            if rows < want {
                break;
            }
            from = last;
        }
        Ok(out)
    }

    /// Reads up to `limit` rows after `after` into `out` (decodable ones); returns the rows
    /// read and the last seq read.
    fn page<T>(
        &self,
        after: u64,
        class: Option<Class>,
        limit: usize,
        out: &mut Vec<T>,
        decode: &impl Fn(u64, ValueRef<'_>) -> Result<T, JournalError>,
    ) -> Result<(usize, u64), JournalError> {
        let (sql, class) = match class {
            Some(c) => (
                "SELECT seq, body FROM events WHERE class = ?3 AND seq > ?1 AND seq <= ?4 ORDER BY seq LIMIT ?2",
                i64::from(c.rank()),
            ),
            None => (
                "SELECT seq, body FROM events WHERE seq > ?1 AND seq <= ?4 AND ?3 = ?3 ORDER BY seq LIMIT ?2",
                -1,
            ),
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let mut rows = stmt
            .query(params![after as i64, limit as i64, class, self.bound()])
            .map_err(self.err())?;
        let (mut n, mut last) = (0, after);
        while let Some(r) = rows.next().map_err(self.err())? {
            let seq = r.get::<_, i64>(0).map_err(self.err())? as u64;
            let body = r.get_ref(1).map_err(self.err())?;
            n += 1;
            last = seq;
            match decode(seq, body) {
                Ok(e) => out.push(e),
                Err(e) => self.report_corrupt(&e),
            }
        }
        Ok((n, last))
    }

    /// The event at `seq`, if still retained.
    ///
    /// # Errors
    /// SQLite errors or a corrupt row ([`JournalError::Corrupt`], also reported as in
    /// [`JournalReader::after`]).
    pub fn get(&self, seq: u64) -> Result<Option<Event>, JournalError> {
        if i64::try_from(seq).map_or(true, |s| s > self.bound()) {
            return Ok(None);
        }
        let body: Option<Value> = self
            .conn
            .query_row(
                "SELECT body FROM events WHERE seq = ?1",
                [seq as i64],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        let decoded = body.map(|b| decode_value(seq, &b)).transpose();
        if let Err(e) = &decoded {
            self.report_corrupt(e);
        }
        decoded
    }

    /// The first retained seq received at or after `t` (gateway clock), by binary search
    /// over seq (`received_at` follows seq except across a gateway clock step, where the
    /// answer may be off by the events around the step). `None` if every event is older.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn first_seq_since(
        &self,
        t: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<u64>, JournalError> {
        first_seq_since(&self.conn, t).map_err(self.err())
    }

    /// An uplink's cursor for a class (0 when none is stored).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn cursor(&self, uplink: &str, class: Class) -> Result<u64, JournalError> {
        let seq: Option<i64> = self
            .conn
            .query_row(
                "SELECT seq FROM cursors WHERE uplink = ?1 AND class = ?2",
                params![uplink, class.rank()],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.err())?;
        Ok(seq.unwrap_or(0) as u64)
    }

    /// Events of `class` after the uplink's cursor: its backlog.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn backlog(&self, uplink: &str, class: Class) -> Result<u64, JournalError> {
        let cursor = self.cursor(uplink, class)?;
        let n: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM events WHERE class = ?1 AND seq > ?2 AND seq <= ?3",
                params![class.rank(), cursor as i64, self.bound()],
                |r| r.get(0),
            )
            .map_err(self.err())?;
        Ok(n as u64)
    }

    /// Number of retained events per class rank.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn counts(&self) -> Result<[u64; 5], JournalError> {
        let mut out = [0u64; 5];
        let mut stmt = self
            .conn
            .prepare_cached("SELECT class, count(*) FROM events GROUP BY class")
            .map_err(self.err())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
            .map_err(self.err())?;
        for row in rows {
            let (c, n) = row.map_err(self.err())?;
            if let Some(slot) = usize::try_from(c).ok().and_then(|c| out.get_mut(c)) {
                *slot = n as u64;
            }
        }
        Ok(out)
    }

    /// The last committed seq as stored (the last durable one for a reader of the running
    /// gateway).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn last_seq(&self) -> Result<u64, JournalError> {
        match &self.visible {
            Some(s) => Ok(s.last_seq.load(Ordering::SeqCst)),
            None => schema::last_seq(&self.conn, &self.path),
        }
    }

    /// `PRAGMA integrity_check` result (`"ok"` when healthy).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn integrity_check(&self) -> Result<String, JournalError> {
        self.conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .map_err(self.err())
    }
}

/// See [`JournalReader::first_seq_since`]; shared with retention.
pub(super) fn first_seq_since(
    conn: &Connection,
    t: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<Option<u64>> {
    let at_or_after = |seq: u64| -> rusqlite::Result<Option<(u64, i64)>> {
        conn.query_row(
            "SELECT seq, received_at FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1",
            [seq as i64],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)?)),
        )
        .optional()
    };
    let want = t.timestamp_micros();
    let last: i64 = conn.query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?;
    let (mut lo, mut hi) = (1u64, last as u64 + 1);
    // Invariant: every retained seq < lo was received before t; hi is past the answer.
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match at_or_after(mid)? {
            Some((seq, at)) if at >= want => hi = mid.min(seq),
            Some((seq, _)) => lo = seq + 1,
            None => hi = mid,
        }
    }
    Ok(at_or_after(lo)?.map(|(seq, _)| seq))
}

/// Decodes a stored body (TEXT, or BLOB after a raw edit) into the event at `seq`.
pub(super) fn decode_ref(seq: u64, body: ValueRef<'_>) -> Result<Event, JournalError> {
    let bytes = match body {
        ValueRef::Text(b) | ValueRef::Blob(b) => b,
        other => {
            return Err(JournalError::Corrupt {
                seq,
                reason: format!("body is {:?}, not JSON text", other.data_type()),
            });
        }
    };
    let mut e: Event = serde_json::from_slice(bytes).map_err(|e| JournalError::Corrupt {
        seq,
        reason: e.to_string(),
    })?;
    e.seq = seq;
    Ok(e)
}

/// [`decode_ref`] for an owned value.
pub(super) fn decode_value(seq: u64, body: &Value) -> Result<Event, JournalError> {
    decode_ref(seq, ValueRef::from(body))
}
