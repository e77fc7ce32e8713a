//! `/api/v1/alarms`: list, detail with timeline, acknowledge and resolve with a note,
//! through the rules runner's [`AlarmStore`] (which journals `alarm.acknowledge` /
//! `alarm.resolve`; the engine answers with `alarm.acknowledged` / `alarm.resolved`).

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::alarms::{AlarmDetail, AlarmError, AlarmFilter, AlarmStore, AlarmView};

/// Longest note accepted.
pub const MAX_NOTE_CHARS: usize = 2000;

/// Alarm list filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlarmQuery {
    /// `raised`, `acknowledged`, `resolved`, or `open` (raised or acknowledged).
    #[param(pattern = "^(open|raised|acknowledged|resolved)$")]
    pub state: Option<String>,
    /// `critical`, `major`, `minor`, `info`.
    pub severity: Option<String>,
    /// Building id.
    pub building: Option<String>,
    /// Raised at or after (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Page size (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    #[param(pattern = "^[0-9]{1,18}:.+$")]
    pub cursor: Option<String>,
}

/// A page of alarms, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AlarmPage {
    /// The alarms (each with the engine's full alarm in `alarm`).
    #[schema(value_type = Vec<Object>)]
    pub alarms: Vec<AlarmView>,
    /// Cursor of the next page, if there may be more.
    pub next: Option<String>,
}

/// Acknowledge / resolve body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteRequest {
    /// Why, what was done (shown in the timeline).
    #[serde(default)]
    #[schema(max_length = 2000)]
    pub note: String,
}

fn store(s: &ConsoleState) -> Result<&AlarmStore, ApiError> {
    s.alarms.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_alarms",
            "this gateway runs no rules, so it has no alarms",
        )
    })
}

fn alarm_error(e: AlarmError) -> ApiError {
    match e {
        AlarmError::NotFound { .. } => ApiError::not_found(e.to_string()),
        AlarmError::AlreadyResolved { .. } => {
            ApiError::new(StatusCode::CONFLICT, "already_resolved", e.to_string())
        }
        AlarmError::BadCursor { .. } => ApiError::bad_request(e.to_string()),
        e => ApiError::internal(e),
    }
}

/// Lists alarms (`open` filters out resolved ones).
///
/// # Errors
/// Bad filters, storage trouble.
pub fn list_views(s: &ConsoleState, q: &AlarmQuery) -> Result<AlarmPage, ApiError> {
    let open = q.state.as_deref() == Some("open");
    if let Some(st) = q.state.as_deref()
        && !matches!(st, "open" | "raised" | "acknowledged" | "resolved")
    {
        return Err(ApiError::bad_request(format!(
            "state {st:?}: expected open, raised, acknowledged or resolved"
        )));
    }
    if q.limit.is_some_and(|l| l == 0 || l > 1000) {
        return Err(ApiError::bad_request("limit must be 1-1000"));
    }
    let filter = AlarmFilter {
        state: q.state.clone().filter(|_| !open),
        severity: q.severity.clone(),
        building: q.building.clone(),
        since: q.since,
        limit: q.limit,
        cursor: q.cursor.clone(),
    };
    let limit = q.limit.unwrap_or(100);
    let views = store(s)?.list(&filter).map_err(alarm_error)?;
    let next = (views.len() >= limit)
        .then(|| views.last().map(|v| v.cursor.clone()))
        .flatten();
    let alarms = views
        .into_iter()
        .filter(|v| !open || v.state != "resolved")
        .collect();
    Ok(AlarmPage { alarms, next })
}

/// Alarms, newest first.
#[utoipa::path(get, path = "/api/v1/alarms", tag = "alarms", params(AlarmQuery),
    responses((status = 200, body = AlarmPage), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(
    State(s): State<ConsoleState>,
    ApiQuery(q): ApiQuery<AlarmQuery>,
) -> Result<axum::Json<AlarmPage>, ApiError> {
    list_views(&s, &q).map(axum::Json)
}

/// The alarm and its timeline, or 404.
///
/// # Errors
/// Not found, storage trouble.
pub fn detail(s: &ConsoleState, id: &str) -> Result<AlarmDetail, ApiError> {
    store(s)?
        .get(id)
        .map_err(alarm_error)?
        .ok_or_else(|| ApiError::not_found(format!("no alarm with id {id:?}")))
}

/// One alarm with its timeline (raised, acknowledged by whom, commands sent and results).
#[utoipa::path(get, path = "/api/v1/alarms/{id}", tag = "alarms",
    params(("id" = String, Path, description = "alarm id")),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn one(
    State(s): State<ConsoleState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<AlarmDetail>, ApiError> {
    detail(&s, &id).map(axum::Json)
}

fn check_note(n: &NoteRequest) -> Result<(), ApiError> {
    if n.note.chars().count() > MAX_NOTE_CHARS {
        return Err(ApiError::bad_request(format!(
            "note longer than {MAX_NOTE_CHARS} characters"
        )));
    }
    Ok(())
}

/// What an operator does to an alarm.
#[derive(Debug, Clone, Copy)]
enum Step {
    Acknowledge,
    Resolve,
}

/// The one body of both handlers: the note is checked, then the step is journaled.
async fn operator_step(
    s: &ConsoleState,
    p: &Principal,
    id: &str,
    n: &NoteRequest,
    step: Step,
) -> Result<StatusCode, ApiError> {
    check_note(n)?;
    let alarms = store(s)?;
    let by = p.actor();
    let done = match step {
        Step::Acknowledge => alarms.acknowledge(id, &by, &n.note).await,
        Step::Resolve => alarms.resolve(id, &by, &n.note).await,
    };
    done.map_err(alarm_error)?;
    Ok(StatusCode::ACCEPTED)
}

/// Acknowledges an alarm (operator): journals `alarm.acknowledge {alarm_id, by, note}`.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/acknowledge", tag = "alarms", request_body = NoteRequest,
    params(("id" = String, Path, description = "alarm id")),
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn acknowledge(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(n): ApiJson<NoteRequest>,
) -> Result<StatusCode, ApiError> {
    operator_step(&s, &p, &id, &n, Step::Acknowledge).await
}

/// Resolves an alarm (operator): journals `alarm.resolve {alarm_id, by, note}`.
#[utoipa::path(post, path = "/api/v1/alarms/{id}/resolve", tag = "alarms", request_body = NoteRequest,
    params(("id" = String, Path, description = "alarm id")),
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resolve(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
    ApiJson(n): ApiJson<NoteRequest>,
) -> Result<StatusCode, ApiError> {
    operator_step(&s, &p, &id, &n, Step::Resolve).await
}
