//! Opening, pragmas and migrations.

use std::path::Path;

use rusqlite::Connection;

use super::JournalError;

/// Migrations in order; `user_version` = number applied.
const MIGRATIONS: &[&str] = &[
    // 1: initial schema
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
     INSERT INTO meta (key, value) VALUES ('next_seq', 1), ('data_bytes', 0);
     CREATE TABLE events (
         seq INTEGER PRIMARY KEY,
         id BLOB NOT NULL,
         class INTEGER NOT NULL,
         kind TEXT NOT NULL,
         device TEXT NOT NULL,
         origin_ref TEXT,
         received_at INTEGER NOT NULL,
         body TEXT NOT NULL);
     CREATE INDEX events_by_class ON events (class, seq);
     CREATE UNIQUE INDEX events_by_origin ON events (device, origin_ref) WHERE origin_ref IS NOT NULL;
     CREATE TABLE cursors (
         uplink TEXT NOT NULL,
         class INTEGER NOT NULL,
         seq INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (uplink, class)) WITHOUT ROWID;",
    // 2: duplicates are recognised within a window of receive time, not for a row's
    // lifetime (ADR 0003), so the origin index is no longer unique; events a destination
    // rejected are listed per uplink; rows that cannot be decoded are quarantined.
    "DROP INDEX events_by_origin;
     CREATE INDEX events_by_origin ON events (device, origin_ref) WHERE origin_ref IS NOT NULL;
     CREATE TABLE rejected (
         uplink TEXT NOT NULL,
         seq INTEGER NOT NULL,
         class INTEGER NOT NULL,
         reason TEXT NOT NULL,
         rejected_at INTEGER NOT NULL,
         PRIMARY KEY (uplink, seq)) WITHOUT ROWID;
     CREATE TABLE quarantine (
         seq INTEGER PRIMARY KEY,
         body BLOB,
         error TEXT NOT NULL,
         quarantined_at INTEGER NOT NULL);",
    // 3: an operator asks for a rejected event to be sent again (`campusgw uplink
    // retry-rejected`, a second connection writing only this flag); the uplink resends it.
    "ALTER TABLE rejected ADD COLUMN retry_requested INTEGER NOT NULL DEFAULT 0;",
    // 4: nonces of accepted county commands, kept while their command could still be
    // valid, so a replay is refused after a restart too (see `nonces.rs`).
    "CREATE TABLE county_nonces (
         nonce TEXT PRIMARY KEY,
         issued_at INTEGER NOT NULL,
         expires_at INTEGER NOT NULL) WITHOUT ROWID;",
    // 5: the rules runner (see `rules.rs`): its cursor and the engine's state snapshot,
    // written in the same transaction as what they caused; the alarms projection with
    // each alarm's change log; the log of rule actions (commands, notifications, forwards)
    // with their status, attempts and result.
    "CREATE TABLE rules_state (
         consumer TEXT PRIMARY KEY,
         cursor INTEGER NOT NULL,
         state TEXT NOT NULL,
         updated_at INTEGER NOT NULL) WITHOUT ROWID;
     CREATE TABLE alarms (
         id TEXT PRIMARY KEY,
         rule TEXT NOT NULL,
         severity TEXT NOT NULL,
         state TEXT NOT NULL,
         class INTEGER NOT NULL,
         building TEXT,
         floor TEXT,
         zone TEXT,
         title TEXT NOT NULL,
         raised_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         updated_seq INTEGER NOT NULL,
         body TEXT NOT NULL) WITHOUT ROWID;
     CREATE INDEX alarms_by_raised ON alarms (raised_at);
     CREATE TABLE alarm_log (
         seq INTEGER PRIMARY KEY,
         alarm TEXT NOT NULL,
         change TEXT NOT NULL,
         at INTEGER NOT NULL,
         body TEXT NOT NULL);
     CREATE INDEX alarm_log_by_alarm ON alarm_log (alarm, seq);
     CREATE TABLE rule_actions (
         id INTEGER PRIMARY KEY,
         key TEXT NOT NULL UNIQUE,
         rule TEXT NOT NULL,
         cause_seq INTEGER NOT NULL,
         alarm TEXT,
         kind TEXT NOT NULL,
         action TEXT NOT NULL,
         status TEXT NOT NULL,
         attempts INTEGER NOT NULL DEFAULT 0,
         result TEXT,
         created_at INTEGER NOT NULL,
         updated_at INTEGER NOT NULL);
     CREATE INDEX rule_actions_open ON rule_actions (status) WHERE status IN ('pending', 'retrying');
     CREATE INDEX rule_actions_by_cause ON rule_actions (rule, cause_seq);",
    // 6: the operator console (gateway/src/console/store.rs): users with argon2id hashes,
    // sessions and API tokens stored as SHA-256 of the token (never the token).
    crate::console::store::MIGRATION,
    // 7: the duplicate check rides on the insert (ADR 0003, issue 7): the newest row of
    // each (device, origin_ref) is marked `live`, and a unique index over live keys makes
    // the insert itself find a repeat, instead of a separate probe per keyed event. An older
    // row of the key keeps its origin_ref (shown in exports) but leaves the index.
    "ALTER TABLE events ADD COLUMN live INTEGER;
     UPDATE events SET live = 1 WHERE seq IN (
         SELECT max(seq) FROM events WHERE origin_ref IS NOT NULL GROUP BY device, origin_ref);
     DROP INDEX events_by_origin;
     CREATE UNIQUE INDEX events_by_live_origin ON events (device, origin_ref) WHERE live = 1;",
    // 8: per-event delivery records of uplinks that name the receiver that acknowledged
    // (the police uplink, `kind = "dc09"`): gateway/src/uplink/deliveries.rs.
    crate::uplink::deliveries::MIGRATION,
];

pub(super) fn err(path: &Path) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
    move |source| JournalError::Sqlite {
        path: path.to_owned(),
        source,
    }
}

/// Opens the writer's connection: WAL, synced by the writer's sync stage (nothing at all
/// with `sync_off`, a test aid), migrated.
pub(super) fn open_rw(path: &Path, sync_off: bool) -> Result<Connection, JournalError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| JournalError::Sqlite {
            path: path.to_owned(),
            source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
        })?;
    }
    let mut conn = Connection::open(path).map_err(err(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err(path))?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err(path))?;
    // NORMAL: COMMIT writes the WAL without syncing it; the writer's sync stage
    // (durable.rs) fsyncs the WAL after every commit and before anything is answered or
    // shown, which is the durability contract, while the writer goes on inserting. This
    // connection is only ever the writer's (check.rs opens it for `Journal::open`).
    let synchronous = if sync_off { "OFF" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", synchronous)
        .map_err(err(path))?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .map_err(err(path))?;
    // The writer never checkpoints inside a commit: that would copy WAL pages into the
    // database file and fsync it while every emitter waits (checkpoint.rs does it from
    // its own thread). SQLite's default is a checkpoint at 1000 WAL pages, i.e. every
    // other commit of a busy journal.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(err(path))?;
    // The writer's multi-row inserts (one statement per run length) beside its other
    // statements and the rules runner's.
    conn.set_prepared_statement_cache_capacity(64);
    migrate(&mut conn, path)?;
    Ok(conn)
}

/// Opens a read-only connection.
pub(super) fn open_ro(path: &Path) -> Result<Connection, JournalError> {
    let flags =
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(err(path))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err(path))?;
    // Readers walk the seq index forward (feeds, tails, pages): a page is read once, and the
    // kernel's page cache holds the file anyway. SQLite's default 2 MiB cache per reader
    // was a quarter of the heap with a 1,000,000-event backlog (bench/README.md, session 8).
    conn.pragma_update(None, "cache_size", READER_CACHE_KIB)
        .map_err(err(path))?;
    Ok(conn)
}

/// A reader connection's page cache, in KiB as SQLite's negative `cache_size` counts it.
const READER_CACHE_KIB: i64 = -256;

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), JournalError> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(err(path))?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(JournalError::TooNew {
            path: path.to_owned(),
            found: version,
            supported,
        });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(err(path))?;
        tx.execute_batch(sql).map_err(err(path))?;
        tx.pragma_update(None, "user_version", n as i64 + 1)
            .map_err(err(path))?;
        tx.commit().map_err(err(path))?;
        tracing::info!(path = %path.display(), version = n + 1, "journal schema migrated");
    }
    Ok(())
}

/// The last committed seq (0 for an empty journal).
pub(super) fn last_seq(conn: &Connection, path: &Path) -> Result<u64, JournalError> {
    let next: i64 = conn
        .query_row("SELECT value FROM meta WHERE key = 'next_seq'", [], |r| {
            r.get(0)
        })
        .map_err(err(path))?;
    Ok(u64::try_from(next - 1).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_7_marks_the_newest_row_of_each_key_live_and_only_that_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("j.db");
        let conn = Connection::open(&path).expect("open");
        for sql in &MIGRATIONS[..4] {
            conn.execute_batch(sql).expect("old schema");
        }
        conn.pragma_update(None, "user_version", 4)
            .expect("version");
        for (seq, device, key) in [
            (1, "uitd_a", Some("k1")),
            (2, "uitd_a", Some("k1")),
            (3, "uitd_b", Some("k1")),
            (4, "uitd_a", None),
            (5, "uitd_a", Some("k2")),
        ] {
            conn.execute(
                "INSERT INTO events (seq, id, class, kind, device, origin_ref, received_at, body)
                 VALUES (?1, x'00', 0, 'fire.alarm', ?2, ?3, 0, '{}')",
                rusqlite::params![seq, device, key],
            )
            .expect("row");
        }
        drop(conn);
        let conn = open_rw(&path, true).expect("migrated");
        let live: Vec<i64> = conn
            .prepare("SELECT seq FROM events WHERE live = 1 ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("live rows");
        assert_eq!(live, vec![2, 3, 5]);
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("version");
        assert_eq!(version, MIGRATIONS.len() as i64);
    }
}
