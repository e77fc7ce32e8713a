//! Nonces of accepted county commands (table `county_nonces`, migration 4), so that a
//! captured command is refused after a restart as well as before it.
//!
//! Why nonces and not a per-key high-water mark of `issued_at`: the county may send two
//! commands within a second and the broker may deliver them in either order; a mark would
//! refuse the older one although it is genuine. A nonce row is needed only while its command
//! could still pass the `issued_at` window (`expires_at = issued_at + window`); the window
//! is at most one hour, so the table stays small. Rows are written through the writer
//! thread ([`Journal::remember_nonce`], one small transaction that also prunes expired
//! rows, durable before it answers), and read at uplink start ([`Journal::load_nonces`])
//! on a read connection.

use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Journal, JournalError, schema, writer};

/// Inserts `nonce` unless present and deletes rows that expired before `now_us`; returns
/// whether the nonce was new. Its own transaction (committed, fsync'd, before it returns).
pub(super) fn remember(
    conn: &Connection,
    nonce: &str,
    issued_at_us: i64,
    expires_at_us: i64,
    now_us: i64,
) -> rusqlite::Result<bool> {
    let tx = conn.unchecked_transaction()?;
    tx.execute(
        "DELETE FROM county_nonces WHERE expires_at < ?1",
        params![now_us],
    )?;
    let existing: Option<i64> = tx
        .query_row(
            "SELECT expires_at FROM county_nonces WHERE nonce = ?1",
            params![nonce],
            |r| r.get(0),
        )
        .optional()?;
    let fresh = existing.is_none();
    if fresh {
        tx.execute(
            "INSERT INTO county_nonces (nonce, issued_at, expires_at) VALUES (?1, ?2, ?3)",
            params![nonce, issued_at_us, expires_at_us],
        )?;
    }
    tx.commit()?;
    Ok(fresh)
}

/// A remembered nonce: the nonce and when it may be forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNonce {
    /// The command's nonce.
    pub nonce: String,
    /// After this time the command's `issued_at` is outside the window anyway.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

impl Journal {
    /// Records an accepted county command's nonce; resolves once durable with whether the
    /// nonce was new (`false`: it was already used, a replay).
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone, [`JournalError::Sqlite`] if the
    /// write failed (the command must then not run).
    pub async fn remember_nonce(
        &self,
        nonce: &str,
        issued_at: chrono::DateTime<chrono::Utc>,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, JournalError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Msg::Nonce {
                nonce: nonce.to_owned(),
                issued_at_us: issued_at.timestamp_micros(),
                expires_at_us: expires_at.timestamp_micros(),
                reply,
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// The nonces that have not expired at `now` (read connection; for uplink start).
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if the database cannot be read.
    pub fn load_nonces(
        &self,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Vec<StoredNonce>, JournalError> {
        let conn = schema::open_ro(&self.path)?;
        let mut st = conn
            .prepare("SELECT nonce, expires_at FROM county_nonces WHERE expires_at >= ?1")
            .map_err(schema::err(&self.path))?;
        let rows = st
            .query_map(params![now.timestamp_micros()], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
            })
            .map_err(schema::err(&self.path))?;
        let mut out = Vec::new();
        for row in rows {
            let (nonce, exp) = row.map_err(schema::err(&self.path))?;
            if let Some(expires_at) = chrono::DateTime::from_timestamp_micros(exp) {
                out.push(StoredNonce { nonce, expires_at });
            }
        }
        Ok(out)
    }
}
