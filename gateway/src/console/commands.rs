//! `POST /api/v1/commands`: manual broadcast, door unlock / lock, lockdown and release,
//! through the gateway's `CommandRouter` (operator role).
//!
//! Lockdown, and unlocking every door of a scope ("unlock all"), need a second
//! confirmation: the first call answers 202 with a `confirm` token (bound to the caller,
//! the action and the target; single use; valid [`CONFIRM_FOR`]); the same request sent
//! again with that token executes. Each executed command is journaled as an
//! `audit.command` event before it runs, and each device's result as `command.result`
//! (by the router).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use campusgw_sdk::command::CommandResult;
use campusgw_sdk::{Command, CommandKind, Target};
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::auth::Principal;
use super::error::{ApiError, ApiJson, ErrorBody};

/// How long a confirmation token is valid.
pub const CONFIRM_FOR: Duration = Duration::from_secs(60);
/// How long the router waits for each device's result.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Start an announcement (`broadcast.play`; args e.g. `{"message": "..."}`).
    Broadcast,
    /// Stop an announcement (`broadcast.stop`).
    BroadcastStop,
    /// Unlock doors (`door.unlock`); a scope target is "unlock all" and needs confirmation.
    DoorUnlock,
    /// Lock doors (`door.lock`).
    DoorLock,
    /// Lock every door of a scope (`door.lock`); needs confirmation.
    Lockdown,
    /// End a lockdown: doors back to their normal state (`door.release`).
    Release,
}

impl Action {
    fn kind(self) -> CommandKind {
        match self {
            Action::Broadcast => CommandKind::BROADCAST_PLAY,
            Action::BroadcastStop => CommandKind::BROADCAST_STOP,
            Action::DoorUnlock => CommandKind::DOOR_UNLOCK,
            Action::DoorLock | Action::Lockdown => CommandKind::DOOR_LOCK,
            Action::Release => CommandKind::new("door.release").expect("static kind is valid"),
        }
    }

    fn needs_confirmation(self, target: &Target) -> bool {
        match self {
            Action::Lockdown => true,
            Action::DoorUnlock => matches!(target, Target::Scope(_)),
            _ => false,
        }
    }
}

/// The target's documented shape (the SDK's `Target`: `{"device": ID}` or `{"scope": S}`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum TargetDoc {
    /// One device.
    Device(DeviceTarget),
    /// A location scope.
    Scope(ScopeTarget),
}

/// One device.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeviceTarget {
    /// Its id.
    #[schema(pattern = "^[A-Za-z0-9_.-]{1,64}$")]
    pub device: String,
}

/// A location scope.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeTarget {
    /// `all`, `campus:ID`, `building:ID`, `floor:B/F`, `zone:B/F/Z`.
    pub scope: String,
}

/// A command request.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandRequest {
    /// What to do.
    pub action: Action,
    /// `{"device": "ID"}` or `{"scope": "building:A"}` (`all`, `campus:…`, `floor:A/2`, `zone:A/2/east`).
    #[schema(value_type = TargetDoc)]
    pub target: Target,
    /// Kind-specific arguments (an object).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub args: Option<serde_json::Map<String, serde_json::Value>>,
    /// The token from the first answer, for actions that need a second confirmation.
    #[serde(default)]
    pub confirm: Option<String>,
}

/// The first answer to an action that needs confirmation.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ConfirmationNeeded {
    /// Send the same request again with `"confirm": TOKEN`.
    pub confirm: String,
    /// What will happen.
    pub summary: String,
    /// Devices the target names now.
    pub devices: usize,
    /// Seconds the token stays valid.
    pub expires_in_seconds: u64,
}

/// An executed command.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CommandOutcome {
    /// The command's id (in every `command.result` event).
    pub command_id: String,
    /// Each device's result.
    #[schema(value_type = Vec<Object>)]
    pub results: Vec<CommandResult>,
}

/// Confirmation tokens waiting for their second call.
#[derive(Default)]
pub struct Confirmations(Mutex<HashMap<String, (String, Instant)>>);

impl Confirmations {
    fn issue(&self, fingerprint: String) -> String {
        let token = super::auth::random_token();
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (_, at)| at.elapsed() < CONFIRM_FOR);
        m.insert(token.clone(), (fingerprint, Instant::now()));
        token
    }

    fn redeem(&self, token: &str, fingerprint: &str) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.remove(token) {
            Some((f, at)) => f == fingerprint && at.elapsed() < CONFIRM_FOR,
            None => false,
        }
    }
}

fn fingerprint(p: &Principal, r: &CommandRequest) -> String {
    let target = serde_json::to_string(&r.target).unwrap_or_default();
    let args = serde_json::to_string(&r.args).unwrap_or_default();
    format!("{}|{:?}|{target}|{args}", p.actor(), r.action)
}

/// Sends a command (operator). Lockdown and unlock-all answer 202 first (see the module doc).
#[utoipa::path(post, path = "/api/v1/commands", tag = "commands", request_body = CommandRequest,
    responses((status = 200, body = CommandOutcome), (status = 202, body = ConfirmationNeeded),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn send(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<CommandRequest>,
) -> Result<Response, ApiError> {
    let Some(router) = s.commands.clone() else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_commands",
            "this gateway has no command routing",
        ));
    };
    let fp = fingerprint(&p, &req);
    if req.action.needs_confirmation(&req.target) {
        match &req.confirm {
            None => {
                let devices = router.resolve(&req.target).len();
                let summary = format!(
                    "{:?} on {} ({devices} devices): send again with this confirm token to execute",
                    req.action,
                    serde_json::to_string(&req.target).unwrap_or_default()
                );
                let body = ConfirmationNeeded {
                    confirm: s.confirms.issue(fp),
                    summary,
                    devices,
                    expires_in_seconds: CONFIRM_FOR.as_secs(),
                };
                return Ok((StatusCode::ACCEPTED, axum::Json(body)).into_response());
            }
            Some(t) if !s.confirms.redeem(t, &fp) => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "bad_confirmation",
                    "confirm token unknown, used, expired, or for another request: start again without it",
                ));
            }
            Some(_) => {}
        }
    }
    let command = Command::new(
        req.action.kind(),
        req.target.clone(),
        req.args
            .clone()
            .map_or(serde_json::Value::Null, serde_json::Value::Object),
        &p.actor(),
    );
    s.journal_operation(
        "audit.command",
        serde_json::json!({ "by": p.actor(), "action": req.action, "command": command }),
    )
    .await?;
    let id = command.id.to_string();
    let results = router.execute(command, RESULT_TIMEOUT).await;
    Ok(axum::Json(CommandOutcome {
        command_id: id,
        results,
    })
    .into_response())
}
