//! Events a destination rejected (DESIGN §4 "Outcomes"): table `rejected`, one row per
//! `(uplink, seq)`.
//!
//! - An uplink records a rejected `life_safety` or `security` event through the writer
//!   thread ([`Journal::record_rejected`], its own transaction, durable before it returns)
//!   and only then moves its cursor past the event. Retention never deletes a seq listed
//!   here ([`super::retention`]).
//! - `campusgw uplink retry-rejected` sets `retry_requested = 1` on rows
//!   ([`request_retry`]). It runs beside a live gateway, so it opens a *second* connection
//!   and writes only that flag, in one short transaction with a busy timeout: SQLite WAL
//!   serialises it with the writer thread's commits, and nothing the writer owns (events,
//!   seqs, cursors, `meta`) is touched, so the one-writer invariant for events holds. A
//!   request table polled by the writer would add a second moving part for the same effect.
//! - The uplink polls the flagged rows ([`RejectedReader::requested`]), resends those
//!   events before anything else of their class, and on delivery removes the row
//!   ([`Journal::clear_rejected`]); rejected again, the row is rewritten with the new
//!   reason and the flag cleared.

use std::path::Path;
use std::time::Duration;

use campusgw_sdk::Class;
use rusqlite::{Connection, params};
use serde::Serialize;
use tokio::sync::oneshot;

use super::{Journal, JournalError, schema, writer};

/// A write to the `rejected` table, applied by the writer thread.
#[derive(Debug)]
pub(super) enum RejectedOp {
    Record {
        uplink: String,
        seq: u64,
        class: Class,
        reason: String,
    },
    Clear {
        uplink: String,
        seqs: Vec<u64>,
    },
}

impl RejectedOp {
    /// Applies the write in its own transaction (committed, with the journal's fsync,
    /// before this returns).
    pub(super) fn apply(&self, conn: &Connection) -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        match self {
            RejectedOp::Record {
                uplink,
                seq,
                class,
                reason,
            } => {
                tx.execute(
                    "INSERT INTO rejected (uplink, seq, class, reason, rejected_at, retry_requested)
                     VALUES (?1, ?2, ?3, ?4, ?5, 0)
                     ON CONFLICT (uplink, seq) DO UPDATE SET reason = excluded.reason,
                         rejected_at = excluded.rejected_at, retry_requested = 0",
                    params![
                        uplink,
                        *seq as i64,
                        class.rank(),
                        reason,
                        chrono::Utc::now().timestamp_micros()
                    ],
                )?;
            }
            RejectedOp::Clear { uplink, seqs } => {
                for s in seqs {
                    tx.execute(
                        "DELETE FROM rejected WHERE uplink = ?1 AND seq = ?2",
                        params![uplink, *s as i64],
                    )?;
                }
            }
        }
        tx.commit()
    }
}

impl Journal {
    /// Records that `uplink`'s destination rejected event `seq`; resolves once durable.
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone, [`JournalError::Sqlite`] if the
    /// write failed (the caller must then not move its cursor past the event).
    pub async fn record_rejected(
        &self,
        uplink: &str,
        seq: u64,
        class: Class,
        reason: &str,
    ) -> Result<(), JournalError> {
        self.rejected_op(RejectedOp::Record {
            uplink: uplink.to_owned(),
            seq,
            class,
            reason: reason.to_owned(),
        })
        .await
    }

    /// Removes delivered events from `uplink`'s rejected list.
    ///
    /// # Errors
    /// As [`Journal::record_rejected`].
    pub async fn clear_rejected(&self, uplink: &str, seqs: Vec<u64>) -> Result<(), JournalError> {
        self.rejected_op(RejectedOp::Clear {
            uplink: uplink.to_owned(),
            seqs,
        })
        .await
    }

    async fn rejected_op(&self, op: RejectedOp) -> Result<(), JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Msg::Rejected { op, reply })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// A read connection for the rejected list.
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if the database cannot be opened.
    pub fn rejected_reader(&self) -> Result<RejectedReader, JournalError> {
        RejectedReader::open(&self.path)
    }
}

/// One listed rejection, as `campusgw uplink rejected` prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectedEvent {
    /// The uplink whose destination rejected it.
    pub uplink: String,
    /// The event's seq.
    pub seq: u64,
    /// Its class.
    pub class: Class,
    /// Its kind (`None` if the event is no longer in the journal).
    pub kind: Option<String>,
    /// Its id.
    pub id: Option<String>,
    /// The destination's words.
    pub reason: String,
    /// When it was rejected (RFC 3339).
    pub rejected_at: String,
    /// An operator asked for it to be sent again.
    pub retry_requested: bool,
}

/// A read-only connection to the rejected list.
pub struct RejectedReader {
    conn: Connection,
    path: std::path::PathBuf,
}

impl RejectedReader {
    /// Opens the journal at `path` read-only.
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if it cannot be opened.
    pub fn open(path: &Path) -> Result<RejectedReader, JournalError> {
        Ok(RejectedReader {
            conn: schema::open_ro(path)?,
            path: path.to_owned(),
        })
    }

    /// Every listed rejection, optionally of one uplink, by uplink and seq.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn list(&self, uplink: Option<&str>) -> Result<Vec<RejectedEvent>, JournalError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT r.uplink, r.seq, r.class, r.reason, r.rejected_at, r.retry_requested,
                        e.kind, e.id
                 FROM rejected r LEFT JOIN events e ON e.seq = r.seq
                 WHERE ?1 IS NULL OR r.uplink = ?1 ORDER BY r.uplink, r.seq",
            )
            .map_err(schema::err(&self.path))?;
        let rows = stmt
            .query_map([uplink], |r| {
                let rank: u8 = r.get(2)?;
                let at: i64 = r.get(4)?;
                let id: Option<Vec<u8>> = r.get(7)?;
                Ok(RejectedEvent {
                    uplink: r.get(0)?,
                    seq: r.get::<_, i64>(1)? as u64,
                    class: Class::from_rank(rank).unwrap_or(Class::LifeSafety),
                    reason: r.get(3)?,
                    rejected_at: chrono::DateTime::from_timestamp_micros(at)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_default(),
                    retry_requested: r.get::<_, i64>(5)? != 0,
                    kind: r.get(6)?,
                    id: id
                        .and_then(|b| uuid::Uuid::from_slice(&b).ok())
                        .map(|u| u.to_string()),
                })
            })
            .map_err(schema::err(&self.path))?;
        rows.collect::<Result<_, _>>()
            .map_err(schema::err(&self.path))
    }

    /// Seqs of `uplink`'s rejected events an operator asked to resend, in seq order.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn requested(&self, uplink: &str) -> Result<Vec<u64>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq FROM rejected WHERE uplink = ?1 AND retry_requested = 1 ORDER BY seq",
            )
            .map_err(schema::err(&self.path))?;
        let rows = stmt
            .query_map([uplink], |r| r.get::<_, i64>(0))
            .map_err(schema::err(&self.path))?;
        rows.map(|r| r.map(|s| s as u64))
            .collect::<Result<_, _>>()
            .map_err(schema::err(&self.path))
    }
}

/// Which rejected events an operator asks to resend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetrySelection {
    /// Every listed event of the uplink.
    All,
    /// These seqs.
    Seqs(Vec<u64>),
}

/// Marks rejected events of `uplink` for resend from a second connection (safe while the
/// gateway runs; see the module doc). Returns how many rows were marked.
///
/// # Errors
/// [`JournalError::Sqlite`] if the database cannot be opened or written (a busy database is
/// waited on for up to 10 s), [`JournalError::Maintenance`] if its schema predates the
/// `retry_requested` column (start the gateway once to migrate it).
pub fn request_retry(
    path: &Path,
    uplink: &str,
    which: &RetrySelection,
) -> Result<usize, JournalError> {
    let err = schema::err(path);
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let mut conn = Connection::open_with_flags(path, flags).map_err(&err)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(&err)?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(&err)?;
    if version < 3 {
        return Err(JournalError::Maintenance(format!(
            "journal {} has schema version {version}; start the gateway once to migrate it",
            path.display()
        )));
    }
    // IMMEDIATE: take the write lock up front, so a busy writer is waited on here rather
    // than failing the upgrade from a read lock.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let mut n = 0;
    match which {
        RetrySelection::All => {
            n += tx
                .execute(
                    "UPDATE rejected SET retry_requested = 1 WHERE uplink = ?1",
                    [uplink],
                )
                .map_err(&err)?;
        }
        RetrySelection::Seqs(seqs) => {
            for s in seqs {
                n += tx
                    .execute(
                        "UPDATE rejected SET retry_requested = 1 WHERE uplink = ?1 AND seq = ?2",
                        params![uplink, *s as i64],
                    )
                    .map_err(&err)?;
            }
        }
    }
    tx.commit().map_err(&err)?;
    Ok(n)
}
