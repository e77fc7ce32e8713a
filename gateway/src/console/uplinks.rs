//! `GET /api/v1/uplinks`: each uplink's state, backlog per class and drain progress;
//! `GET /api/v1/uplinks/{name}/deliveries?event=ID`: which receiver acknowledged an event
//! and when (uplinks that record it: `kind = "dc09"`, `kind = "gb26875"`, `kind = "gb28181"`);
//! `POST /api/v1/uplinks/{name}/duty-check`: an operator answers the fire-monitoring
//! centre's 查岗 (operator-on-duty check) on a `kind = "gb26875"` uplink (operator role;
//! the open check is kept in memory on the uplink's status, see
//! `crate::uplink::gb26875::duty`).
//!
//! Drain progress is measured against the largest backlog seen since the uplink was last
//! empty: 100 % when nothing waits, and while an outage's backlog is being sent it rises
//! from 0 % as the destination confirms (the console's progress bar).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::uplink::gb26875::duty::DutyError;

/// Largest backlog per uplink since it was last empty.
#[derive(Default)]
pub struct DrainTracker(Mutex<HashMap<String, u64>>);

impl DrainTracker {
    /// Notes `backlog` for `uplink`; returns the percent drained (0-100).
    pub fn observe(&self, uplink: &str, backlog: u64) -> u8 {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let peak = m.entry(uplink.to_owned()).or_insert(0);
        if backlog == 0 {
            *peak = 0;
            return 100;
        }
        *peak = (*peak).max(backlog);
        (100 * (*peak - backlog) / *peak) as u8
    }
}

/// One uplink.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UplinkView {
    /// Name.
    pub name: String,
    /// Kind (`mqtt`, `webhook`, `dc09`).
    pub kind: String,
    /// `connecting`, `connected`, `down`, `stopped`.
    pub state: String,
    /// The last failure since the last success.
    pub last_error: Option<String>,
    /// Events published.
    pub published: u64,
    /// Events confirmed.
    pub confirmed: u64,
    /// Events rejected as malformed.
    pub rejected: u64,
    /// Unconfirmed events per class.
    pub backlog: BTreeMap<String, u64>,
    /// Their sum.
    pub backlog_total: u64,
    /// Percent of the current backlog peak already confirmed (100 when empty).
    pub drained_percent: u8,
    /// Age of the oldest unconfirmed event.
    pub oldest_unconfirmed_seconds: Option<f64>,
    /// Age of the oldest undelivered alarm (`life_safety` / `security` event, not about this
    /// uplink's own outage), `null` when none waits.
    pub oldest_undelivered_alarm_seconds: Option<f64>,
    /// An undelivered alarm is older than the uplink's `alarm_delay_threshold`.
    pub alarm_delayed: bool,
}

/// The uplinks now.
pub fn views(s: &ConsoleState) -> Vec<UplinkView> {
    s.uplinks
        .snapshot()
        .into_iter()
        .map(|u| {
            let total: u64 = u.backlog.values().sum();
            let state = serde_json::to_value(u.state)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            UplinkView {
                drained_percent: s.drain.observe(&u.name, total),
                name: u.name,
                kind: u.kind.to_owned(),
                state,
                last_error: u.last_error,
                published: u.published,
                confirmed: u.confirmed,
                rejected: u.rejected,
                backlog: u
                    .backlog
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
                backlog_total: total,
                oldest_unconfirmed_seconds: u.oldest_unconfirmed_seconds,
                oldest_undelivered_alarm_seconds: u.oldest_undelivered_alarm_seconds,
                alarm_delayed: u.alarm_delayed,
            }
        })
        .collect()
}

/// Uplink states, backlogs and drain progress.
#[utoipa::path(get, path = "/api/v1/uplinks", tag = "uplinks",
    responses((status = 200, body = Vec<UplinkView>), (status = 401, body = ErrorBody)))]
pub async fn list(State(s): State<ConsoleState>) -> axum::Json<Vec<UplinkView>> {
    axum::Json(views(&s))
}

/// Which event's deliveries.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// The event id (UUID).
    pub event: String,
}

/// One acknowledgement of an event by a receiver.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    /// The event's journal seq.
    pub seq: u64,
    /// The event id.
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
    /// When the acknowledgement arrived (RFC 3339, the gateway's clock).
    pub acknowledged_at: String,
}

/// Which receiver acknowledged an event, and when (empty: not acknowledged, or an uplink
/// kind that records no receiver).
#[utoipa::path(get, path = "/api/v1/uplinks/{name}/deliveries", tag = "uplinks",
    params(("name" = String, Path, description = "uplink name"), DeliveryQuery),
    responses((status = 200, body = Vec<DeliveryView>), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(s): State<ConsoleState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<axum::Json<Vec<DeliveryView>>, ApiError> {
    if !s.uplinks.snapshot().iter().any(|u| u.name == name) {
        return Err(ApiError::not_found(format!("no uplink named {name:?}")));
    }
    if uuid::Uuid::parse_str(&q.event).is_err() {
        return Err(ApiError::bad_request(format!(
            "event {:?} is not an event id (a UUID)",
            q.event
        )));
    }
    let j = s.journal.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let conn = j.read_connection().map_err(ApiError::internal)?;
        crate::uplink::deliveries::list(&conn, &name, &q.event).map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(axum::Json(
        rows.into_iter()
            .map(|r| DeliveryView {
                seq: r.seq,
                event_id: r.event_id,
                receiver: r.receiver,
                endpoint: r.endpoint,
                address: r.address,
                sequence: r.sequence,
                attempts: r.attempts,
                acknowledged_at: r.acknowledged_at.to_rfc3339(),
            })
            .collect(),
    ))
}

/// An operator's answer to a duty check.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DutyCheckAnswer {
    /// Operator number uploaded to the centre (操作员编号, 0-255; default 1).
    #[serde(default = "first_operator", deserialize_with = "operator_number")]
    #[schema(value_type = u8, minimum = 0, maximum = 255, default = 1)]
    pub operator: u8,
}

fn first_operator() -> u8 {
    1
}

/// 0-255; a JSON number with an integral value (`3.0` is `3`, as JSON Schema's `integer`).
fn operator_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u8, D::Error> {
    let v = f64::deserialize(d)?;
    if v.fract() == 0.0 && (0.0..=255.0).contains(&v) {
        Ok(v as u8)
    } else {
        Err(serde::de::Error::custom(format!(
            "operator {v} is not an operator number 0-255"
        )))
    }
}

/// The duty check answered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DutyCheckView {
    /// The centre's serial of the check.
    pub serial: u16,
    /// Minutes the centre gave to answer (0: none given).
    pub minutes: u8,
    /// When it arrived (RFC 3339).
    pub opened_at: String,
    /// When the answer is due (RFC 3339).
    pub due: String,
    /// Who answered.
    pub answered_by: String,
}

/// Answers the fire-monitoring centre's open 查岗 (operator on duty check): the uplink
/// uploads the answer (GB/T 26875.3 type 24, flag b5) and journals
/// `fire_centre.duty_check_answered` once the centre confirms it.
#[utoipa::path(post, path = "/api/v1/uplinks/{name}/duty-check", tag = "uplinks", request_body = DutyCheckAnswer,
    params(("name" = String, Path, description = "uplink name (kind gb26875)")),
    responses((status = 202, body = DutyCheckView, description = "taken; the uplink uploads it"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn duty_check(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ApiJson(a): ApiJson<DutyCheckAnswer>,
) -> Result<(StatusCode, axum::Json<DutyCheckView>), ApiError> {
    let status = s
        .uplinks
        .0
        .iter()
        .find(|u| u.name == name)
        .ok_or_else(|| ApiError::not_found(format!("no uplink named {name:?}")))?;
    if status.kind != "gb26875" {
        return Err(ApiError::not_found(format!(
            "uplink {name:?} is kind {}; duty checks come from kind gb26875",
            status.kind
        )));
    }
    let by = p.actor();
    let check = status.duty_desk().answer(&by, a.operator).map_err(|e| {
        let code = match e {
            DutyError::NoneOpen => "no_open_check",
            DutyError::Answered(_) => "already_answered",
        };
        ApiError::new(StatusCode::CONFLICT, code, e.to_string())
    })?;
    tracing::info!(uplink = %name, %by, operator = a.operator, serial = check.serial, "duty check answered by an operator");
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(DutyCheckView {
            serial: check.serial,
            minutes: check.minutes,
            opened_at: check.opened_at.to_rfc3339(),
            due: check.due().to_rfc3339(),
            answered_by: by,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_progress_rises_as_the_backlog_peak_is_confirmed() {
        let t = DrainTracker::default();
        assert_eq!(t.observe("county", 0), 100);
        assert_eq!(t.observe("county", 200), 0);
        assert_eq!(t.observe("county", 150), 25);
        assert_eq!(t.observe("county", 50), 75);
        assert_eq!(t.observe("county", 0), 100);
        assert_eq!(t.observe("county", 10), 0, "a new outage starts a new peak");
    }
}
