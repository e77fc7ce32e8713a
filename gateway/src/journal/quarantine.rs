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

#[cfg(test)]
mod tests {
    use super::*;

    fn journal_with(body: &str) -> (tempfile::TempDir, rusqlite::Connection) {
        let dir = tempfile::tempdir().expect("tempdir");
        let conn = super::super::schema::open_rw(&dir.path().join("j.db"), false).expect("open");
        conn.execute(
            "INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body)
             VALUES (1, x'00', 0, 'fire.alarm', 'd', NULL, 0, ?1)",
            [body],
        )
        .expect("insert");
        (dir, conn)
    }

    #[test]
    fn a_row_that_decodes_is_never_moved_and_a_corrupt_one_is_moved_once() {
        let good = serde_json::to_string(&campusgw_sdk::Event::stamp(
            campusgw_sdk::NewEvent::new(
                campusgw_sdk::event::kinds::FIRE_ALARM,
                campusgw_sdk::Class::LifeSafety,
            ),
            &campusgw_sdk::DeviceId::new("d").expect("id"),
            "t",
            &campusgw_sdk::Location::default(),
        ))
        .expect("json");
        let (_d, mut conn) = journal_with(&good);
        let tx = conn.transaction().expect("tx");
        assert!(!move_row(&tx, 1, "claimed corrupt").expect("move"));
        drop(tx);
        let (_d, mut conn) = journal_with("{not json");
        let tx = conn.transaction().expect("tx");
        assert!(move_row(&tx, 1, "bad").expect("move"));
        assert!(!move_row(&tx, 1, "bad").expect("second move"));
        tx.commit().expect("commit");
        let n: i64 = conn
            .query_row("SELECT count(*) FROM quarantine", [], |r| r.get(0))
            .expect("count");
        assert_eq!(n, 1);
    }
}
