//! `GET /api/v1/access/muster?building=B` (who may still be inside, for the evacuation roll
//! call) and `GET /api/v1/access/state` (lockdown and fire egress in force, and each door's
//! last command result). Both read [`crate::presence`]: the journal, caught up on every call.
//! Names and roles come from the roster only and appear nowhere but in these answers.

use std::sync::Arc;

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::presence::{DoorResult, Muster};

/// Which building.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MusterQuery {
    /// Building id (`A`); absent: everyone who may be on campus.
    #[param(pattern = "^[^:/]{1,64}$")]
    pub building: Option<String>,
}

/// An egress or lockdown in force.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ActivationView {
    /// The scope it was issued to (`campus:main`, `building:A`).
    pub scope: String,
    /// Who issued it.
    pub by: String,
    /// Since when.
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
}

/// Access control now.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AccessState {
    /// Whether any lockdown is in force.
    pub lockdown_active: bool,
    /// Lockdowns in force.
    pub lockdown: Vec<ActivationView>,
    /// Fire egress in force (wins over lockdown on escape-route doors).
    pub egress: Vec<ActivationView>,
    /// Each door's last command result.
    pub doors: Vec<DoorResult>,
}

/// Who may still be inside a building (or on campus), with roster names and roles.
#[utoipa::path(get, path = "/api/v1/access/muster", tag = "access", params(MusterQuery),
    responses((status = 200, body = Muster), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody)))]
pub async fn muster(
    State(s): State<ConsoleState>,
    ApiQuery(q): ApiQuery<MusterQuery>,
) -> Result<axum::Json<Muster>, ApiError> {
    if let Some(b) = &q.building
        && (b.is_empty() || b.chars().count() > 64 || b.contains([':', '/']))
    {
        return Err(ApiError::bad_request(format!(
            "building {b:?} is not a building id (e.g. ?building=A)"
        )));
    }
    let p = Arc::clone(&s.presence);
    tokio::task::spawn_blocking(move || p.muster(q.building.as_deref()))
        .await
        .map_err(ApiError::internal)?
        .map(axum::Json)
        .map_err(ApiError::internal)
}

/// Lockdown and egress in force, and the last result of every door command.
#[utoipa::path(get, path = "/api/v1/access/state", tag = "access",
    responses((status = 200, body = AccessState), (status = 401, body = ErrorBody)))]
pub async fn state(State(s): State<ConsoleState>) -> Result<axum::Json<AccessState>, ApiError> {
    let snap = s
        .commands
        .as_ref()
        .map(|c| c.access().snapshot())
        .unwrap_or_default();
    let view = |v: &[crate::access::Activation]| -> Vec<ActivationView> {
        v.iter()
            .map(|a| ActivationView {
                scope: a.scope.clone(),
                by: a.by.clone(),
                since: a.since,
            })
            .collect()
    };
    let p = Arc::clone(&s.presence);
    let doors = tokio::task::spawn_blocking(move || p.door_results())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    Ok(axum::Json(AccessState {
        lockdown_active: !snap.lockdown.is_empty(),
        lockdown: view(&snap.lockdown),
        egress: view(&snap.egress),
        doors,
    }))
}
