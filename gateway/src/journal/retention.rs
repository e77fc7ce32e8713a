//! Retention age and the disk quota, class-aware (DESIGN §4 "Retention").
//!
//! An event is *delivered* when every uplink that wants its class has a cursor at or past
//! its seq (a class no uplink wants counts as delivered) and, where a rules runner runs
//! (`JournalOptions::rules_consumer`), the runner's cursor (`rules_state`) is past it too:
//! the runner wants every class, so a fire alarm is never deleted before the rules saw it.
//! Until the runner stored its first cursor nothing counts as consumed by it. Maintenance:
//! 1. deletes delivered events older than the retention age;
//! 2. while the database is over its quota, evicts oldest-first by tier:
//!    1. `telemetry` (delivered or not),
//!    2. delivered `business`,
//!    3. delivered `operations`,
//!    4. undelivered `business` except card transactions (`pos.transaction` and every
//!       `canteen.*` kind: sales, refusals and sync conflicts are money and its audit trail),
//!    5. undelivered `operations`,
//!    6. delivered `security` and `life_safety`;
//! 3. never evicts undelivered `life_safety`, `security` or card transactions: if the
//!    database is still over quota, it reports `over_quota` and the writer journals a
//!    `storage.critical` event (and `storage.recovered` once under quota again);
//! 4. never deletes, for age or quota, an event listed in `rejected` (a destination's
//!    verdict an operator must see and may retry; only `life_safety` and `security`
//!    events are listed, see [`super::rejected`]): [`KEPT`] is part of every condition.
//!
//! The quota counts event data: each event's JSON body plus [`ROW_OVERHEAD`] bytes for its
//! row and index entries, kept as a running total (`meta.data_bytes`) updated in the same
//! transactions that insert and delete. Page counts would be the wrong measure: evicting
//! one class leaves pages partly filled (rows of classes interleave), so pages are not
//! freed even though the space is reused by later inserts. The file on disk can exceed the
//! quota by B-tree slack and the WAL; size the quota at about half the space you give the
//! journal.

use std::time::Duration;

use campusgw_sdk::Class;
use rusqlite::{Connection, params};

use super::JournalOptions;

/// How long events are kept and how much disk they may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delivered events older than this are deleted.
    pub max_age: Duration,
    /// Upper bound of the database's used bytes.
    pub quota_bytes: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        RetentionPolicy {
            max_age: Duration::from_secs(30 * 86_400),
            quota_bytes: 2 << 30,
        }
    }
}

/// What a maintenance run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct MaintenanceReport {
    /// Deleted for age.
    pub expired: u64,
    /// Evicted for quota, per tier (1-6).
    pub evicted: [u64; 6],
    /// Used bytes after the run.
    pub used_bytes: u64,
    /// Still over quota: only protected events remain (meaningful when `more` is false).
    pub over_quota: bool,
    /// The pass stopped at its budget; run another.
    pub more: bool,
    /// Passes this report sums up.
    pub passes: u32,
}

/// Rows one maintenance pass may delete.
pub const PASS_BUDGET: u64 = 500;

/// Rows per DELETE statement (one short transaction each).
const CHUNK: u64 = 500;

/// The SQL condition selecting each eviction tier, oldest first by seq. `{0}..{4}` are
/// the delivered watermarks of the classes by rank (integers, substituted).
const TIERS: [&str; 6] = [
    "class = 4",
    "class = 3 AND seq <= {3}",
    "class = 2 AND seq <= {2}",
    "class = 3 AND kind <> 'pos.transaction' AND kind NOT LIKE 'canteen.%'",
    "class = 2",
    "((class = 1 AND seq <= {1}) OR (class = 0 AND seq <= {0}))",
];

/// Excludes the events listed in `rejected` from every deletion (the list is short: a
/// destination rejecting alarms is an incident, not a flow).
pub const KEPT: &str = "seq NOT IN (SELECT seq FROM rejected)";

/// Runs retention and quota enforcement.
///
/// # Errors
/// SQLite errors.
pub fn run(
    conn: &Connection,
    opts: &JournalOptions,
    now: chrono::DateTime<chrono::Utc>,
) -> rusqlite::Result<MaintenanceReport> {
    let marks = watermarks(conn, opts)?;
    let mut report = MaintenanceReport {
        passes: 1,
        ..MaintenanceReport::default()
    };
    let mut budget = PASS_BUDGET;
    let cutoff =
        now - chrono::Duration::from_std(opts.retention.max_age).unwrap_or(chrono::Duration::MAX);
    // Everything before the first event received at or after the cutoff is old enough.
    let young = super::reader::first_seq_since(conn, cutoff)?.map_or(i64::MAX, |s| s as i64);
    for c in Class::ALL {
        let upto = marks[usize::from(c.rank())].min(young.saturating_sub(1));
        let cond = format!("class = {} AND seq <= {upto}", c.rank());
        report.expired += delete_chunks(conn, &cond, &mut budget, || false)?;
    }
    // Access events name a person: they may be kept for less than everything else. Same
    // rule as above (delivered and old enough), limited to those kinds.
    if let Some(age) = opts.access_retention {
        let cutoff = now - chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
        let young = super::reader::first_seq_since(conn, cutoff)?.map_or(i64::MAX, |s| s as i64);
        let rank = Class::Business.rank();
        let upto = marks[usize::from(rank)].min(young.saturating_sub(1));
        let cond = format!(
            "class = {rank} AND seq <= {upto} AND kind IN ('access.granted', 'access.denied')"
        );
        report.expired += delete_chunks(conn, &cond, &mut budget, || false)?;
    }
    let quota = opts.retention.quota_bytes;
    // Aim 10% below the quota so eviction does not run on every batch.
    let target = quota / 10 * 9;
    if used_bytes(conn)? > quota {
        for (tier, cond) in TIERS.iter().enumerate() {
            let mut cond = (*cond).to_owned();
            for (rank, mark) in marks.iter().enumerate() {
                cond = cond.replace(&format!("{{{rank}}}"), &mark.to_string());
            }
            let under = || used_bytes(conn).map_or(true, |u| u <= target);
            report.evicted[tier] += delete_chunks(conn, &cond, &mut budget, under)?;
        }
    }
    report.more = budget == 0;
    report.used_bytes = used_bytes(conn)?;
    report.over_quota = report.used_bytes > quota;
    if report.expired > 0 || report.evicted.iter().any(|n| *n > 0) {
        tracing::info!(expired = report.expired, evicted = ?report.evicted, used_bytes = report.used_bytes, more = report.more, "journal maintenance");
        metrics::counter!("journal_expired_total").increment(report.expired);
        metrics::counter!("journal_evicted_total").increment(report.evicted.iter().sum());
    }
    metrics::gauge!("journal_used_bytes").set(report.used_bytes as f64);
    Ok(report)
}

/// Deletes the oldest rows matching `cond` in chunks until none match, `done()` holds, or
/// the budget is spent; returns the rows deleted.
fn delete_chunks(
    conn: &Connection,
    cond: &str,
    budget: &mut u64,
    done: impl Fn() -> bool,
) -> rusqlite::Result<u64> {
    let mut total = 0;
    while *budget > 0 && !done() {
        let sql = format!(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ({cond}) AND {KEPT} ORDER BY seq LIMIT {})
             RETURNING length(body)",
            CHUNK.min(*budget)
        );
        let tx = conn.unchecked_transaction()?;
        let (n, bytes) = delete_returning(&tx, &sql, [])?;
        add_data_bytes(&tx, -bytes)?;
        tx.commit()?;
        total += n;
        *budget = budget.saturating_sub(n);
        if n == 0 {
            break;
        }
    }
    Ok(total)
}

impl MaintenanceReport {
    /// Adds a later pass's work to this report.
    pub fn absorb(&mut self, later: MaintenanceReport) {
        self.expired += later.expired;
        for (a, b) in self.evicted.iter_mut().zip(later.evicted) {
            *a += b;
        }
        self.used_bytes = later.used_bytes;
        self.over_quota = later.over_quota;
        self.more = later.more;
        self.passes += later.passes;
    }
}

/// Bytes counted per event row on top of its JSON body: row header, key, indexed
/// columns and the two index entries.
pub const ROW_OVERHEAD: i64 = 96;

/// Event data bytes counted against the quota (see the module doc).
///
/// # Errors
/// SQLite errors.
pub fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
    let v: i64 = conn.query_row("SELECT value FROM meta WHERE key = 'data_bytes'", [], |r| {
        r.get(0)
    })?;
    Ok(v.max(0) as u64)
}

/// Adjusts the running data size.
pub(super) fn add_data_bytes(conn: &Connection, delta: i64) -> rusqlite::Result<()> {
    if delta != 0 {
        conn.execute(
            "UPDATE meta SET value = value + ?1 WHERE key = 'data_bytes'",
            [delta],
        )?;
    }
    Ok(())
}

/// Runs a `DELETE ... RETURNING length(body)`; returns rows and bytes (with overhead).
fn delete_returning(
    conn: &Connection,
    sql: &str,
    p: impl rusqlite::Params,
) -> rusqlite::Result<(u64, i64)> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(p)?;
    let (mut n, mut bytes) = (0u64, 0i64);
    while let Some(r) = rows.next()? {
        n += 1;
        bytes += ROW_OVERHEAD + r.get::<_, i64>(0)?;
    }
    Ok((n, bytes))
}

/// The delivered watermark per class rank: `min(cursor)` over uplinks wanting the class
/// and the rules runner (every class, when it runs); `i64::MAX` where none does.
fn watermarks(conn: &Connection, opts: &JournalOptions) -> rusqlite::Result<[i64; 5]> {
    let mut marks = [i64::MAX; 5];
    if opts.rules_consumer {
        let rules: i64 = conn
            .query_row(
                "SELECT cursor FROM rules_state WHERE consumer = ?1",
                ["rules"], // `rules::CONSUMER`; the journal sits below the runner
                |r| r.get(0),
            )
            .unwrap_or(0);
        marks = [rules; 5];
    }
    let mut stmt =
        conn.prepare_cached("SELECT seq FROM cursors WHERE uplink = ?1 AND class = ?2")?;
    for u in &opts.uplinks {
        for c in &u.classes {
            let seq: i64 = stmt
                .query_row(params![u.name, c.rank()], |r| r.get(0))
                .unwrap_or(0);
            let m = &mut marks[usize::from(c.rank())];
            *m = (*m).min(seq);
        }
    }
    Ok(marks)
}
