//! `GET /api/v1/events`: the journal with filters (class, kind, device, building / floor /
//! zone, received time) and cursor paging by seq.
//!
//! Newest first by default: `before` (a seq) continues where a page ended, and each page
//! says its `next` cursor. `after` instead reads oldest first from a seq (what a client
//! catching up uses). Location filters match the event's `location` fields exactly.

use axum::extract::State;
use campusgw_sdk::{Class, Event};
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::error::{ApiError, ApiPath, ApiQuery, ErrorBody};

/// Most events one page returns.
pub const MAX_PAGE: u32 = 500;

/// Filters and cursor.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// `life_safety`, `security`, `operations`, `business` or `telemetry`.
    #[param(pattern = "^(life_safety|security|operations|business|telemetry)$")]
    pub class: Option<String>,
    /// Exact kind (`fire.alarm`) or a family with a trailing `.*` (`fire.*`).
    pub kind: Option<String>,
    /// Device id.
    pub device: Option<String>,
    /// Building id.
    pub building: Option<String>,
    /// Floor id.
    pub floor: Option<String>,
    /// Zone id.
    pub zone: Option<String>,
    /// Received at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Received before (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Seqs below this (newest first unless `after` is given too).
    pub before: Option<u64>,
    /// Oldest first, seqs above this (with `before`: the range between).
    pub after: Option<u64>,
    /// Page size (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

/// A page of events.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventPage {
    /// Events (docs/event-schema.md), with their seq.
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
    /// The cursor of the next page (as `after` when `after` was given, else as `before`),
    /// if there may be more.
    pub next: Option<u64>,
}

struct Sql {
    clauses: Vec<String>,
    params: Vec<Value>,
}

impl Sql {
    fn add(&mut self, clause: &str, v: Value) {
        self.params.push(v);
        self.clauses
            .push(clause.replace('?', &format!("?{}", self.params.len())));
    }
}

fn build(q: &EventQuery, durable: u64) -> Result<(String, Vec<Value>, u32), ApiError> {
    let mut sql = Sql {
        clauses: Vec::new(),
        params: Vec::new(),
    };
    if let Some(c) = &q.class {
        let class: Class =
            serde_json::from_value(serde_json::Value::String(c.clone())).map_err(|_| {
                ApiError::bad_request(format!(
                    "class {c:?}: expected life_safety, security, operations, business or telemetry"
                ))
            })?;
        sql.add("class = ?", Value::Integer(i64::from(class.rank())));
    }
    if let Some(k) = &q.kind {
        match k.strip_suffix(".*") {
            Some(family) => sql.add(
                "kind LIKE ?",
                Value::Text(format!("{}.%", family.replace(['%', '_'], ""))),
            ),
            None => sql.add("kind = ?", Value::Text(k.clone())),
        }
    }
    if let Some(d) = &q.device {
        sql.add("device = ?", Value::Text(d.clone()));
    }
    for (field, v) in [
        ("building", &q.building),
        ("floor", &q.floor),
        ("zone", &q.zone),
    ] {
        if let Some(v) = v {
            sql.add(
                &format!("json_extract(body, '$.location.{field}') = ?"),
                Value::Text(v.clone()),
            );
        }
    }
    if let Some(t) = q.since {
        sql.add("received_at >= ?", Value::Integer(t.timestamp_micros()));
    }
    if let Some(t) = q.until {
        sql.add("received_at < ?", Value::Integer(t.timestamp_micros()));
    }
    let seq = |name: &str, v: u64| {
        i64::try_from(v).map_err(|_| ApiError::bad_request(format!("{name} {v} is beyond any seq")))
    };
    if let Some(b) = q.before {
        sql.add("seq < ?", Value::Integer(seq("before", b)?));
    }
    if let Some(a) = q.after {
        sql.add("seq > ?", Value::Integer(seq("after", a)?));
    }
    // Only what is durable (journal/durable.rs): a page never shows an event that a power
    // cut could still take back, nor gives out a cursor past it.
    sql.add(
        "seq <= ?",
        Value::Integer(i64::try_from(durable).unwrap_or(i64::MAX)),
    );
    let ascending = q.after.is_some();
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(format!("limit must be 1-{MAX_PAGE}")));
    }
    let filter = if sql.clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", sql.clauses.join(" AND "))
    };
    let order = if ascending { "ASC" } else { "DESC" };
    let text = format!("SELECT seq, body FROM events {filter} ORDER BY seq {order} LIMIT {limit}");
    Ok((text, sql.params, limit))
}

/// Reads events matching `q` (blocking; call from `spawn_blocking`).
///
/// # Errors
/// Bad filters (400) or storage trouble.
pub fn query(journal: &crate::journal::Journal, q: &EventQuery) -> Result<EventPage, ApiError> {
    let durable = journal
        .status()
        .last_seq
        .load(std::sync::atomic::Ordering::SeqCst);
    let (text, params, limit) = build(q, durable)?;
    let conn = journal.read_connection().map_err(ApiError::internal)?;
    let mut stmt = conn.prepare(&text).map_err(ApiError::internal)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })
        .map_err(ApiError::internal)?;
    let mut events = Vec::new();
    let mut last = None;
    for row in rows {
        let (seq, body) = row.map_err(ApiError::internal)?;
        last = Some(seq as u64);
        // A row that does not decode is the journal's to quarantine; the list skips it.
        if let Ok(mut e) = serde_json::from_str::<Event>(&body) {
            e.seq = seq as u64;
            events.push(e);
        }
    }
    let full = last.is_some() && events.len() as u32 >= limit;
    Ok(EventPage {
        next: last.filter(|_| full),
        events,
    })
}

async fn run_query(s: &ConsoleState, q: EventQuery) -> Result<EventPage, ApiError> {
    let j = s.journal.clone();
    tokio::task::spawn_blocking(move || query(&j, &q))
        .await
        .map_err(ApiError::internal)?
}

/// Events, newest first, filtered.
#[utoipa::path(get, path = "/api/v1/events", tag = "events", params(EventQuery),
    responses((status = 200, body = EventPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn list(
    State(s): State<ConsoleState>,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<axum::Json<EventPage>, ApiError> {
    run_query(&s, q).await.map(axum::Json)
}

/// One event by seq.
#[utoipa::path(get, path = "/api/v1/events/{seq}", tag = "events",
    params(("seq" = u64, Path, description = "journal seq")),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn one(
    State(s): State<ConsoleState>,
    ApiPath(seq): ApiPath<u64>,
) -> Result<axum::Json<Event>, ApiError> {
    let j = s.journal.clone();
    let found = tokio::task::spawn_blocking(move || j.reader().and_then(|r| r.get(seq)))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    found.map(axum::Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "no event with seq {seq} (never, or deleted by retention)"
        ))
    })
}
