//! Maintenance and drills (issue 11, item 5): `GET /api/v1/modes` lists what is in force,
//! `POST /api/v1/maintenance`, `/api/v1/maintenance/clear`, `/api/v1/drill` and
//! `/api/v1/drill/clear` set and end them. As with rule switches, the console never changes
//! the engine: it journals `maintenance.set|clear` and `drill.set|clear` (class operations,
//! with who did it), which the rules runner applies in order with everything else, so the
//! journal is the audit trail. The list is folded from those same events, newest last, and
//! shows only what has not expired.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiJson, ErrorBody};

/// The longest a maintenance or drill may be set for; longer holds are refused, so a
/// forgotten one ends by itself.
const LONGEST: Duration = Duration::days(7);

/// A zone or device in maintenance: linkage and police forwarding held, events still
/// journaled and shown.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MaintenanceInfo {
    /// The scope (`building:A`, `zone:A/1/east`, `device:ID`, ...).
    pub scope: String,
    /// When it ends by itself.
    #[schema(value_type = String, format = DateTime)]
    pub until: DateTime<Utc>,
    /// Who set it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// The journal seq of the `maintenance.set` event.
    pub seq: u64,
}

/// A building in drill mode: evacuation broadcast and doors as for fire, no police.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrillInfo {
    /// The building id.
    pub building: String,
    /// When it ends by itself.
    #[schema(value_type = String, format = DateTime)]
    pub until: DateTime<Utc>,
    /// Who set it.
    pub by: String,
    /// The journal seq of the `drill.set` event.
    pub seq: u64,
}

/// What is in force now.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Modes {
    /// Scopes in maintenance.
    pub maintenance: Vec<MaintenanceInfo>,
    /// Buildings in drill mode.
    pub drills: Vec<DrillInfo>,
}

/// `POST /api/v1/maintenance`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRequest {
    /// The scope, as in rules: `building:A`, `floor:A/3`, `zone:A/3/east`, `device:ID`.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^(all|campus:[^/\u0000-\u001f\u007f-\u009f]+|building:[^/\u0000-\u001f\u007f-\u009f]+|floor:[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+|zone:[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+|device:[^\u0000-\u001f\u007f-\u009f]+)$"
    )]
    pub scope: String,
    /// When it ends (RFC 3339; in the future, at most 7 days ahead, else 409).
    #[schema(value_type = String, format = DateTime)]
    pub until: DateTime<Utc>,
    /// Why (shown on the console and in the journal; 1-500 characters, not only spaces).
    #[schema(
        min_length = 1,
        max_length = 500,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub reason: String,
}

/// `POST /api/v1/maintenance/clear`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRequest {
    /// The scope to take out of maintenance (as in [`MaintenanceRequest::scope`]).
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^(all|campus:[^/\u0000-\u001f\u007f-\u009f]+|building:[^/\u0000-\u001f\u007f-\u009f]+|floor:[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+|zone:[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+/[^/\u0000-\u001f\u007f-\u009f]+|device:[^\u0000-\u001f\u007f-\u009f]+)$"
    )]
    pub scope: String,
}

/// `POST /api/v1/drill`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DrillRequest {
    /// The building id.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub building: String,
    /// When it ends (RFC 3339; in the future, at most 7 days ahead, else 409).
    #[schema(value_type = String, format = DateTime)]
    pub until: DateTime<Utc>,
}

/// `POST /api/v1/drill/clear`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildingRequest {
    /// The building whose drill ends.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$"
    )]
    pub building: String,
}

/// Folds the journal's `maintenance.*` and `drill.*` events into what is in force at `now`
/// (blocking).
fn fold(journal: &crate::journal::Journal, now: DateTime<Utc>) -> Result<Modes, ApiError> {
    let conn = journal.read_connection().map_err(ApiError::internal)?;
    // Only the last 7 days can hold anything in force (LONGEST), so the scan is bounded.
    let since = (now - LONGEST - Duration::days(1)).timestamp_micros();
    let mut stmt = conn
        .prepare(
            "SELECT seq, kind, json_extract(body, '$.payload') FROM events
             WHERE kind IN ('maintenance.set', 'maintenance.clear', 'drill.set', 'drill.clear')
               AND received_at >= ?1 ORDER BY seq",
        )
        .map_err(ApiError::internal)?;
    let rows = stmt
        .query_map([since], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
            ))
        })
        .map_err(ApiError::internal)?;
    let mut maintenance = BTreeMap::new();
    let mut drills = BTreeMap::new();
    for row in rows {
        let (seq, kind, payload) = row.map_err(ApiError::internal)?;
        let p: serde_json::Value = payload
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let text = |k: &str| p.get(k).and_then(|v| v.as_str()).unwrap_or("").to_owned();
        let until = p
            .get("until")
            .and_then(|v| v.as_str())
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        let seq = u64::try_from(seq).unwrap_or(0);
        match (kind.as_str(), until) {
            ("maintenance.set", Some(until)) => {
                maintenance.insert(
                    text("scope"),
                    MaintenanceInfo {
                        scope: text("scope"),
                        until,
                        by: text("by"),
                        reason: text("reason"),
                        seq,
                    },
                );
            }
            ("maintenance.clear", _) => {
                maintenance.remove(&text("scope"));
            }
            ("drill.set", Some(until)) => {
                drills.insert(
                    text("building"),
                    DrillInfo {
                        building: text("building"),
                        until,
                        by: text("by"),
                        seq,
                    },
                );
            }
            ("drill.clear", _) => {
                drills.remove(&text("building"));
            }
            _ => {}
        }
    }
    Ok(Modes {
        maintenance: maintenance
            .into_values()
            .filter(|m| m.until > now)
            .collect(),
        drills: drills.into_values().filter(|d| d.until > now).collect(),
    })
}

/// What is in force now.
///
/// # Errors
/// Storage trouble.
pub async fn current(s: &ConsoleState) -> Result<Modes, ApiError> {
    let j = s.journal.clone();
    tokio::task::spawn_blocking(move || fold(&j, Utc::now()))
        .await
        .map_err(ApiError::internal)?
}

/// A well-formed `until` that the clock rules out is a conflict with the present (409),
/// not a malformed request.
fn check_until(until: DateTime<Utc>) -> Result<(), ApiError> {
    let now = Utc::now();
    let out = |m: &str| ApiError::new(StatusCode::CONFLICT, "until_out_of_range", m);
    if until <= now {
        return Err(out("until must be in the future"));
    }
    if until > now + LONGEST {
        return Err(out(
            "until may be at most 7 days ahead; set it again when it ends",
        ));
    }
    Ok(())
}

fn check_text(what: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.trim().is_empty() || v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{what} must be 1-{max} characters without control characters"
        )));
    }
    Ok(())
}

fn check_scope(scope: &str) -> Result<(), ApiError> {
    check_text("scope", scope, 200)?;
    campusgw_rules::check_scope(scope).map_err(ApiError::bad_request)
}

/// Maintenance and drills in force.
#[utoipa::path(get, path = "/api/v1/modes", tag = "modes",
    responses((status = 200, body = Modes), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn list(State(s): State<ConsoleState>) -> Result<axum::Json<Modes>, ApiError> {
    current(&s).await.map(axum::Json)
}

/// Puts a scope in maintenance (operator): journals `maintenance.set {scope, until, by, reason}`.
#[utoipa::path(post, path = "/api/v1/maintenance", tag = "modes", request_body = MaintenanceRequest,
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "until is past or over 7 days ahead"), (status = 503, body = ErrorBody)))]
pub async fn set_maintenance(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(r): ApiJson<MaintenanceRequest>,
) -> Result<StatusCode, ApiError> {
    check_scope(&r.scope)?;
    check_until(r.until)?;
    check_text("reason", &r.reason, 500)?;
    let payload = serde_json::json!({
        "scope": r.scope, "until": r.until, "by": p.actor(), "reason": r.reason,
    });
    s.journal_operation("maintenance.set", payload).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Ends a scope's maintenance (operator): journals `maintenance.clear {scope, by}`.
#[utoipa::path(post, path = "/api/v1/maintenance/clear", tag = "modes", request_body = ScopeRequest,
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn clear_maintenance(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(r): ApiJson<ScopeRequest>,
) -> Result<StatusCode, ApiError> {
    check_scope(&r.scope)?;
    let payload = serde_json::json!({ "scope": r.scope, "by": p.actor() });
    s.journal_operation("maintenance.clear", payload).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Puts a building in drill mode (operator): journals `drill.set {building, until, by}`.
#[utoipa::path(post, path = "/api/v1/drill", tag = "modes", request_body = DrillRequest,
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "until is past or over 7 days ahead"), (status = 503, body = ErrorBody)))]
pub async fn set_drill(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(r): ApiJson<DrillRequest>,
) -> Result<StatusCode, ApiError> {
    check_text("building", &r.building, 100)?;
    check_until(r.until)?;
    let payload = serde_json::json!({ "building": r.building, "until": r.until, "by": p.actor() });
    s.journal_operation("drill.set", payload).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Ends a building's drill (operator): journals `drill.clear {building, by}`.
#[utoipa::path(post, path = "/api/v1/drill/clear", tag = "modes", request_body = BuildingRequest,
    responses((status = 202, description = "journaled; the engine applies it"), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn clear_drill(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(r): ApiJson<BuildingRequest>,
) -> Result<StatusCode, ApiError> {
    check_text("building", &r.building, 100)?;
    let payload = serde_json::json!({ "building": r.building, "by": p.actor() });
    s.journal_operation("drill.clear", payload).await?;
    Ok(StatusCode::ACCEPTED)
}
