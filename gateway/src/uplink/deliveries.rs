//! Per-event delivery records (journal migration 8): which receiver acknowledged an event
//! and when. Written by uplinks whose destination names the receiver (`kind = "dc09"`),
//! before the event's cursor may move; read by the console
//! (`GET /api/v1/uplinks/{name}/deliveries?event=ID`).
//!
//! One row per acknowledgement: an event acknowledged again after a restart (at-least-once)
//! has one row per ACK. Rows are small and kept with the journal.

use rusqlite::{Connection, params};
use serde::Serialize;

use crate::journal::ExecOp;

/// Migration 8 (`gateway/src/journal/schema.rs`).
pub const MIGRATION: &str = "CREATE TABLE uplink_deliveries (
         uplink TEXT NOT NULL,
         seq INTEGER NOT NULL,
         event_id TEXT NOT NULL,
         receiver INTEGER NOT NULL,
         endpoint TEXT NOT NULL,
         address TEXT NOT NULL,
         sequence INTEGER NOT NULL,
         attempts INTEGER NOT NULL,
         acknowledged_at INTEGER NOT NULL,
         PRIMARY KEY (uplink, seq, acknowledged_at)) WITHOUT ROWID;
     CREATE INDEX uplink_deliveries_by_event ON uplink_deliveries (event_id);";

/// One acknowledgement of one event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryRecord {
    /// The uplink.
    pub uplink: String,
    /// The event's journal seq.
    pub seq: u64,
    /// The event's id.
    pub event_id: String,
    /// Which receiver: 0 the primary, 1 the first backup, ...
    pub receiver: u32,
    /// The receiver as configured (`host:port`).
    pub endpoint: String,
    /// The address it was reached at.
    pub address: String,
    /// The protocol's message number (DC-09 sequence).
    pub sequence: u32,
    /// Frames sent for it.
    pub attempts: u32,
    /// When the acknowledgement arrived (our clock).
    pub acknowledged_at: chrono::DateTime<chrono::Utc>,
}

/// The write of `r`, for [`crate::journal::Journal::exec`].
pub fn record(r: DeliveryRecord) -> ExecOp {
    Box::new(move |tx| {
        tx.execute(
            "INSERT OR REPLACE INTO uplink_deliveries (uplink, seq, event_id, receiver, endpoint,
                 address, sequence, attempts, acknowledged_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                r.uplink,
                r.seq as i64,
                r.event_id,
                r.receiver,
                r.endpoint,
                r.address,
                r.sequence,
                r.attempts,
                r.acknowledged_at.timestamp_micros(),
            ],
        )
        .map(|_| ())
    })
}

/// The records of `uplink` for event `event_id`, oldest first.
///
/// # Errors
/// SQLite errors (the table exists from migration 8 on).
pub fn list(
    conn: &Connection,
    uplink: &str,
    event_id: &str,
) -> rusqlite::Result<Vec<DeliveryRecord>> {
    let mut st = conn.prepare_cached(
        "SELECT uplink, seq, event_id, receiver, endpoint, address, sequence, attempts,
                acknowledged_at
         FROM uplink_deliveries WHERE event_id = ?1 AND uplink = ?2 ORDER BY acknowledged_at",
    )?;
    let rows = st.query_map(params![event_id, uplink], |row| {
        let micros: i64 = row.get(8)?;
        Ok(DeliveryRecord {
            uplink: row.get(0)?,
            seq: u64::try_from(row.get::<_, i64>(1)?).unwrap_or_default(),
            event_id: row.get(2)?,
            receiver: row.get(3)?,
            endpoint: row.get(4)?,
            address: row.get(5)?,
            sequence: row.get(6)?,
            attempts: row.get(7)?,
            acknowledged_at: chrono::DateTime::from_timestamp_micros(micros).unwrap_or_default(),
        })
    })?;
    rows.collect()
}
