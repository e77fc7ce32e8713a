//! Rows whose body cannot be decoded: moved out of `events` into `quarantine`.
//!
//! A reader that meets such a row skips it and asks the writer (through
//! [`super::writer::Msg::Quarantine`]) to move it. The writer re-reads the row and moves it
//! only if it still fails to decode, so a reader can never make the writer delete a good
//! event; in the same transaction it journals one `journal.corrupt` event (class
//! `security`, payload `seq`, `error`). A row already moved is not moved or reported again,
//! however many readers met it. The move subtracts the row from `meta.data_bytes` as
//! retention does, and a quarantined row no longer counts in any backlog.

use rusqlite::types::Value;
use rusqlite::{OptionalExtension, Transaction, params};

use super::reader;
use super::retention;

/// Moves event `seq` into `quarantine` if it is still there and still fails to decode.
/// Returns whether it moved.
///
/// # Errors
/// SQLite errors (the caller's transaction is then rolled back).
pub(super) fn move_row(tx: &Transaction<'_>, seq: u64, error: &str) -> rusqlite::Result<bool> {
    let body: Option<Value> = tx
        .query_row(
            "SELECT body FROM events WHERE seq = ?1",
            [seq as i64],
            |r| r.get(0),
        )
        .optional()?;
    let Some(body) = body else {
        return Ok(false);
    };
    let bytes = match &body {
        Value::Text(t) => Some(t.as_bytes().to_vec()),
        Value::Blob(b) => Some(b.clone()),
        _ => None,
    };
    if reader::decode_value(seq, &body).is_ok() {
        return Ok(false);
    }
    tx.execute(
        "INSERT OR REPLACE INTO quarantine (seq, body, error, quarantined_at) VALUES (?1, ?2, ?3, ?4)",
        params![
            seq as i64,
            bytes,
            error,
            chrono::Utc::now().timestamp_micros()
        ],
    )?;
    let len: i64 = tx.query_row(
        "DELETE FROM events WHERE seq = ?1 RETURNING coalesce(length(body), 0)",
        [seq as i64],
        |r| r.get(0),
    )?;
    retention::add_data_bytes(tx, -(retention::ROW_OVERHEAD + len))?;
    Ok(true)
}
