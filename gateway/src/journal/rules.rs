//! What the rules runner keeps in the journal (migration 5), and the one write that keeps
//! it consistent: [`Journal::rules_step`].
//!
//! # Tables
//! ```sql
//! CREATE TABLE rules_state (consumer TEXT PRIMARY KEY,  -- 'rules'
//!                           cursor INTEGER NOT NULL,    -- last event seq the engine consumed
//!                           state TEXT NOT NULL,        -- the engine's EngineState (JSON)
//!                           updated_at INTEGER NOT NULL) WITHOUT ROWID;
//! CREATE TABLE alarms (id TEXT PRIMARY KEY, rule, severity, state, class INTEGER,
//!                      building, floor, zone, title, raised_at, updated_at (unix µs),
//!                      updated_seq INTEGER,             -- seq of the alarm.* event that wrote it
//!                      body TEXT) WITHOUT ROWID;        -- the Alarm as JSON
//! CREATE TABLE alarm_log (seq INTEGER PRIMARY KEY,      -- the alarm.* event's seq
//!                         alarm, change, at, body);     -- raised|updated|escalated|acknowledged|resolved
//! CREATE TABLE rule_actions (id INTEGER PRIMARY KEY, key TEXT UNIQUE, rule, cause_seq, alarm,
//!                            kind, action TEXT,         -- the action as JSON
//!                            status,                    -- pending|retrying|done|failed|gave_up|skipped
//!                            attempts, result, created_at, updated_at);
//! ```
//!
//! # Crash guarantee
//! A [`RulesStep`] (the derived events, the cursor, the engine state, the alarm rows, the
//! new action rows and action status updates) is written by the writer thread in one
//! transaction of its own, committed with fsync before its future resolves. So after
//! SIGKILL the engine restarts from a state that matches its cursor exactly: the events up
//! to the cursor were consumed and everything they caused is recorded (actions as
//! `pending` until their outcome is written); nothing after the cursor was.

use campusgw_sdk::{Class, Event};
use rusqlite::{Connection, OptionalExtension, params};
use tokio::sync::oneshot;

use super::{Journal, JournalError, schema, writer};

/// One alarm row of the projection, written with the `alarm.*` event at `event_index`.
#[derive(Debug, Clone)]
pub struct AlarmRow {
    /// Alarm id (deterministic: replaying the same events gives the same id).
    pub id: String,
    /// The rule that raised it.
    pub rule: String,
    /// `critical`, `major`, `minor`, `info`.
    pub severity: String,
    /// `raised`, `acknowledged`, `resolved`.
    pub state: String,
    /// The alarm's class.
    pub class: Class,
    /// Location levels for filtering.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Headline.
    pub title: String,
    /// When it was raised (unix µs).
    pub raised_at: i64,
    /// `raised`, `updated`, `escalated`, `acknowledged`, `resolved`.
    pub change: String,
    /// The alarm as JSON.
    pub body: String,
    /// Index into [`RulesStep::events`] of the `alarm.*` event recording this change.
    pub event_index: usize,
}

/// A new rule action, logged before it is carried out.
#[derive(Debug, Clone)]
pub struct ActionRow {
    /// Unique per action the engine produced (so a replay cannot log it twice).
    pub key: String,
    /// The rule.
    pub rule: String,
    /// The event that caused it.
    pub cause_seq: u64,
    /// The alarm it belongs to, if known.
    pub alarm: Option<String>,
    /// `command`, `notify`, `forward`.
    pub kind: String,
    /// The action as JSON.
    pub action: String,
    /// Initial status (`pending`, or `skipped` for what is not carried out).
    pub status: String,
}

/// The outcome of an attempt at an action.
#[derive(Debug, Clone)]
pub struct ActionUpdate {
    /// The action's row id.
    pub id: i64,
    /// New status.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// What happened (JSON).
    pub result: Option<String>,
}

/// Everything one engine step caused, written atomically.
#[derive(Debug, Default)]
pub struct RulesStep {
    /// Which consumer (`rules`).
    pub consumer: String,
    /// New cursor, or `None` to leave it (an action update alone).
    pub cursor: Option<u64>,
    /// The engine state after the step (JSON), stored with the cursor.
    pub state: Option<String>,
    /// Derived events to journal (`alarm.*`, emitted events), in order.
    pub events: Vec<Event>,
    /// Alarm rows to upsert.
    pub alarms: Vec<AlarmRow>,
    /// New actions.
    pub actions: Vec<ActionRow>,
    /// Outcomes of earlier actions.
    pub updates: Vec<ActionUpdate>,
}

/// What a committed step assigned.
#[derive(Debug, Clone, Default)]
pub struct StepReceipt {
    /// The seq of each of [`RulesStep::events`].
    pub seqs: Vec<u64>,
    /// The row id of each of [`RulesStep::actions`] (an existing row's id if its key was
    /// already logged).
    pub action_ids: Vec<i64>,
}

/// A stored action.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredAction {
    /// Row id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The cause.
    pub cause_seq: u64,
    /// The alarm, if any.
    pub alarm: Option<String>,
    /// `command`, `notify`, `forward`.
    pub kind: String,
    /// The action (JSON).
    pub action: serde_json::Value,
    /// Status.
    pub status: String,
    /// Attempts.
    pub attempts: u32,
    /// Result (JSON), if any.
    pub result: Option<serde_json::Value>,
    /// Created (unix µs).
    pub created_at: i64,
    /// Last changed (unix µs).
    pub updated_at: i64,
}

/// One row of an alarm's change log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AlarmLogEntry {
    /// The `alarm.*` event's seq.
    pub seq: u64,
    /// `raised`, `acknowledged`, ...
    pub change: String,
    /// When (unix µs).
    pub at: i64,
    /// The alarm as it was then.
    pub body: serde_json::Value,
}

/// A stored alarm row.
#[derive(Debug, Clone)]
pub struct StoredAlarm {
    /// Id.
    pub id: String,
    /// The rule.
    pub rule: String,
    /// Severity.
    pub severity: String,
    /// State.
    pub state: String,
    /// Class.
    pub class: Class,
    /// Building.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Headline.
    pub title: String,
    /// Raised (unix µs).
    pub raised_at: i64,
    /// Last change (unix µs).
    pub updated_at: i64,
    /// Seq of the last `alarm.*` event.
    pub updated_seq: u64,
    /// The alarm as JSON.
    pub body: serde_json::Value,
}

/// Filter for [`RulesReader::alarms`].
#[derive(Debug, Clone, Default)]
pub struct AlarmQuery {
    /// Only these states.
    pub states: Vec<String>,
    /// Only this severity.
    pub severity: Option<String>,
    /// Only this building.
    pub building: Option<String>,
    /// Raised at or after (unix µs).
    pub since: Option<i64>,
    /// Raised strictly before this `(raised_at, id)` (pagination cursor).
    pub before: Option<(i64, String)>,
    /// At most this many.
    pub limit: usize,
}

impl Journal {
    /// Writes a rules step in one transaction (module doc); resolves once durable.
    ///
    /// # Errors
    /// [`JournalError::Closed`] if the writer is gone, SQLite errors (nothing written).
    pub async fn rules_step(&self, mut step: RulesStep) -> Result<StepReceipt, JournalError> {
        for e in &mut step.events {
            e.seq = 0;
        }
        let bodies = step.events.iter().map(writer::body_of).collect();
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(writer::Msg::RulesStep {
                step: Box::new(step),
                bodies,
                reply,
            })
            .await
            .map_err(|_| JournalError::Closed)?;
        rx.await.map_err(|_| JournalError::Closed)?
    }

    /// A read connection for the rules tables.
    ///
    /// # Errors
    /// [`JournalError`] if the database cannot be opened.
    pub fn rules_reader(&self) -> Result<RulesReader, JournalError> {
        Ok(RulesReader {
            conn: schema::open_ro(&self.path)?,
            path: self.path.clone(),
        })
    }
}

/// Writes `step` inside `tx`, its events from seq `first`; returns the receipt and the
/// data bytes added. Called by the writer thread only.
pub(super) fn write_step(
    tx: &rusqlite::Transaction<'_>,
    step: &mut RulesStep,
    bodies: &[String],
    first: u64,
    now: i64,
) -> rusqlite::Result<(StepReceipt, i64)> {
    let mut receipt = StepReceipt::default();
    let mut bytes = 0;
    {
        let mut ins = tx.prepare_cached(writer::INSERT_EVENT)?;
        for (i, (e, body)) in step.events.iter_mut().zip(bodies).enumerate() {
            let seq = first + i as u64;
            e.seq = seq;
            bytes += writer::insert_row(&mut ins, e, body, seq)?;
            receipt.seqs.push(seq);
        }
    }
    if let (Some(cursor), Some(state)) = (step.cursor, &step.state) {
        tx.prepare_cached(
            "INSERT INTO rules_state (consumer, cursor, state, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (consumer) DO UPDATE SET cursor = excluded.cursor, state = excluded.state,
             updated_at = excluded.updated_at",
        )?
        .execute(params![step.consumer, cursor as i64, state, now])?;
    }
    write_alarms(tx, &step.alarms, &receipt.seqs, now)?;
    receipt.action_ids = write_actions(tx, &step.actions, &step.updates, now)?;
    Ok((receipt, bytes))
}

fn write_alarms(
    tx: &rusqlite::Transaction<'_>,
    alarms: &[AlarmRow],
    seqs: &[u64],
    now: i64,
) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(
        "INSERT INTO alarms (id, rule, severity, state, class, building, floor, zone, title,
                             raised_at, updated_at, updated_seq, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (id) DO UPDATE SET severity = excluded.severity, state = excluded.state,
             title = excluded.title, updated_at = excluded.updated_at,
             updated_seq = excluded.updated_seq, body = excluded.body",
    )?;
    let mut log = tx.prepare_cached(
        "INSERT OR REPLACE INTO alarm_log (seq, alarm, change, at, body) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for a in alarms {
        let seq = seqs.get(a.event_index).copied().unwrap_or(0) as i64;
        up.execute(params![
            a.id,
            a.rule,
            a.severity,
            a.state,
            a.class.rank(),
            a.building,
            a.floor,
            a.zone,
            a.title,
            a.raised_at,
            now,
            seq,
            a.body
        ])?;
        log.execute(params![seq, a.id, a.change, now, a.body])?;
    }
    Ok(())
}

fn write_actions(
    tx: &rusqlite::Transaction<'_>,
    actions: &[ActionRow],
    updates: &[ActionUpdate],
    now: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut ins = tx.prepare_cached(
        "INSERT INTO rule_actions (key, rule, cause_seq, alarm, kind, action, status, attempts,
                                   created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 0, ?8, ?8) ON CONFLICT (key) DO NOTHING",
    )?;
    let mut find = tx.prepare_cached("SELECT id FROM rule_actions WHERE key = ?1")?;
    let mut ids = Vec::with_capacity(actions.len());
    for a in actions {
        ins.execute(params![
            a.key,
            a.rule,
            a.cause_seq as i64,
            a.alarm,
            a.kind,
            a.action,
            a.status,
            now
        ])?;
        ids.push(find.query_row([&a.key], |r| r.get(0))?);
    }
    let mut upd = tx.prepare_cached(
        "UPDATE rule_actions SET status = ?2, attempts = ?3, result = ?4, updated_at = ?5 WHERE id = ?1",
    )?;
    for u in updates {
        upd.execute(params![u.id, u.status, u.attempts, u.result, now])?;
    }
    Ok(ids)
}

/// Read-only access to the rules tables (its own connection).
pub struct RulesReader {
    conn: Connection,
    path: std::path::PathBuf,
}

impl RulesReader {
    /// Opens a reader on a journal file (tools and tests; the gateway uses
    /// [`Journal::rules_reader`]).
    ///
    /// # Errors
    /// [`JournalError::Sqlite`] if the file cannot be opened.
    pub fn open(path: &std::path::Path) -> Result<RulesReader, JournalError> {
        Ok(RulesReader {
            conn: schema::open_ro(path)?,
            path: path.to_owned(),
        })
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> JournalError + '_ {
        schema::err(&self.path)
    }

    /// The consumer's cursor and engine state, if it ever stored one.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn state(&self, consumer: &str) -> Result<Option<(u64, String)>, JournalError> {
        self.conn
            .query_row(
                "SELECT cursor, state FROM rules_state WHERE consumer = ?1",
                [consumer],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, String>(1)?)),
            )
            .optional()
            .map_err(self.err())
    }

    /// Actions not finished (`pending`, `retrying`), oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn open_actions(&self) -> Result<Vec<StoredAction>, JournalError> {
        self.actions_where("status IN ('pending', 'retrying') ORDER BY id", params![])
    }

    /// Every action caused by `cause_seq` under `rule`.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn actions_for(
        &self,
        rule: &str,
        cause_seq: u64,
    ) -> Result<Vec<StoredAction>, JournalError> {
        self.actions_where(
            "rule = ?1 AND cause_seq = ?2 ORDER BY id",
            params![rule, cause_seq as i64],
        )
    }

    /// Actions logged for an alarm.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn actions_of_alarm(&self, alarm: &str) -> Result<Vec<StoredAction>, JournalError> {
        self.actions_where("alarm = ?1 ORDER BY id", params![alarm])
    }

    /// Forward rows for `uplink` not yet settled (`queued`), oldest first: what the
    /// uplink's feed still has to send (`uplink/feed.rs`, "Forwards").
    ///
    /// # Errors
    /// SQLite errors.
    pub fn queued_forwards(&self, uplink: &str) -> Result<Vec<StoredAction>, JournalError> {
        self.actions_where(
            "kind = 'forward' AND status = 'queued' AND json_extract(action, '$.uplink') = ?1 ORDER BY id",
            params![uplink],
        )
    }

    /// Every action, oldest first (tests, `campusgw rules actions`).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn all_actions(&self) -> Result<Vec<StoredAction>, JournalError> {
        self.actions_where("1 = 1 ORDER BY id", params![])
    }

    fn actions_where(
        &self,
        clause: &str,
        p: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<StoredAction>, JournalError> {
        let sql = format!(
            "SELECT id, rule, cause_seq, alarm, kind, action, status, attempts, result,
                    created_at, updated_at FROM rule_actions WHERE {clause}"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(p, |r| {
                Ok(StoredAction {
                    id: r.get(0)?,
                    rule: r.get(1)?,
                    cause_seq: r.get::<_, i64>(2)? as u64,
                    alarm: r.get(3)?,
                    kind: r.get(4)?,
                    action: json_col(r.get::<_, String>(5)?),
                    status: r.get(6)?,
                    attempts: r.get(7)?,
                    result: r.get::<_, Option<String>>(8)?.map(json_col),
                    created_at: r.get(9)?,
                    updated_at: r.get(10)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// One alarm row.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn alarm(&self, id: &str) -> Result<Option<StoredAlarm>, JournalError> {
        self.conn
            .query_row(
                &format!("{ALARM_COLUMNS} WHERE id = ?1"),
                [id],
                stored_alarm,
            )
            .optional()
            .map_err(self.err())
    }

    /// Alarms matching `q`, newest raised first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn alarms(&self, q: &AlarmQuery) -> Result<Vec<StoredAlarm>, JournalError> {
        let mut sql = format!("{ALARM_COLUMNS} WHERE 1 = 1");
        let mut p: Vec<rusqlite::types::Value> = Vec::new();
        if !q.states.is_empty() {
            let marks: Vec<String> = q
                .states
                .iter()
                .map(|s| {
                    p.push(s.clone().into());
                    format!("?{}", p.len())
                })
                .collect();
            sql += &format!(" AND state IN ({})", marks.join(", "));
        }
        let mut add = |col: &str, v: rusqlite::types::Value, p: &mut Vec<_>| {
            p.push(v);
            sql += &format!(" AND {col} ?{}", p.len());
        };
        if let Some(s) = &q.severity {
            add("severity =", s.clone().into(), &mut p);
        }
        if let Some(b) = &q.building {
            add("building =", b.clone().into(), &mut p);
        }
        if let Some(t) = q.since {
            add("raised_at >=", t.into(), &mut p);
        }
        if let Some((t, id)) = &q.before {
            p.push((*t).into());
            p.push(id.clone().into());
            sql += &format!(
                " AND (raised_at < ?{a} OR (raised_at = ?{a} AND id < ?{b}))",
                a = p.len() - 1,
                b = p.len()
            );
        }
        sql += &format!(" ORDER BY raised_at DESC, id DESC LIMIT {}", q.limit.max(1));
        let mut stmt = self.conn.prepare(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(p), stored_alarm)
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    /// An alarm's change log, oldest first.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn alarm_log(&self, id: &str) -> Result<Vec<AlarmLogEntry>, JournalError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, change, at, body FROM alarm_log WHERE alarm = ?1 ORDER BY seq",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([id], |r| {
                Ok(AlarmLogEntry {
                    seq: r.get::<_, i64>(0)? as u64,
                    change: r.get(1)?,
                    at: r.get(2)?,
                    body: json_col(r.get::<_, String>(3)?),
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

const ALARM_COLUMNS: &str = "SELECT id, rule, severity, state, class, building, floor, zone, \
     title, raised_at, updated_at, updated_seq, body FROM alarms";

fn stored_alarm(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredAlarm> {
    Ok(StoredAlarm {
        id: r.get(0)?,
        rule: r.get(1)?,
        severity: r.get(2)?,
        state: r.get(3)?,
        class: Class::from_rank(r.get::<_, u8>(4)?).unwrap_or(Class::Operations),
        building: r.get(5)?,
        floor: r.get(6)?,
        zone: r.get(7)?,
        title: r.get(8)?,
        raised_at: r.get(9)?,
        updated_at: r.get(10)?,
        updated_seq: r.get::<_, i64>(11)? as u64,
        body: json_col(r.get::<_, String>(12)?),
    })
}

/// Stored JSON; text that is not JSON (a hand edit) is kept as a string, never a panic.
fn json_col(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
}
