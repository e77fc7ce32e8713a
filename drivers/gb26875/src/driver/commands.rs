//! Centre-initiated commands: argument parsing, routing to the UITD's connection, results.

use std::sync::Arc;

use campusgw_sdk::{CommandRequest, CommandStatus};
use chrono::Utc;
use serde_json::Value;
use tokio::sync::oneshot;

use super::Shared;
use crate::codec::{Adu, CommandByte, ComponentAddress, ComponentRef, Frame, SystemRef, TimeLabel};
use crate::inspect::frame_to_json;

/// A command for a connection to send.
pub(crate) struct Outgoing {
    pub(crate) command: CommandByte,
    pub(crate) data: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Answer>,
}

/// How a command sent on a connection ended.
pub(crate) enum Answer {
    Frame(Frame),
    Timeout,
    NotConnected,
    Invalid(String),
}

/// Turns a command into the frame command byte and ADU to send.
/// The command kinds a UITD takes; any other is `Unsupported`.
const SUPPORTED: [&str; 5] = [
    "fire.sync_clock",
    "fire.duty_check",
    "fire.read_uitd_status",
    "fire.read_system_status",
    "fire.read_component_status",
];

fn plan(kind: &str, args: &Value) -> Result<(CommandByte, Adu), String> {
    Ok(match kind {
        "fire.sync_clock" => (
            CommandByte::Control,
            Adu::SyncUitdClock(vec![TimeLabel::from_utc(Utc::now())]),
        ),
        "fire.duty_check" => {
            let minutes = opt_u8(args, "minutes")?.unwrap_or(10);
            (CommandByte::Control, Adu::DutyCheck(vec![minutes]))
        }
        "fire.read_uitd_status" => (CommandByte::Request, Adu::ReadUitdStatus(vec![0])),
        "fire.read_system_status" => (
            CommandByte::Request,
            Adu::ReadSystemStatus(vec![system(args)?]),
        ),
        "fire.read_component_status" => {
            let component_address = component(args)?;
            (
                CommandByte::Request,
                Adu::ReadComponentStatus(vec![ComponentRef {
                    system: system(args)?,
                    component_address,
                }]),
            )
        }
        other => {
            return Err(format!(
                "unsupported command {other:?}: gb26875 supports fire.sync_clock, fire.duty_check, fire.read_uitd_status, fire.read_system_status, fire.read_component_status"
            ));
        }
    })
}

fn opt_u8(args: &Value, key: &str) -> Result<Option<u8>, String> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("argument {key} = {v} is not an integer 0-255")),
    }
}

fn system(args: &Value) -> Result<SystemRef, String> {
    let need = |k| opt_u8(args, k)?.ok_or_else(|| format!("argument {k} (0-255) is required"));
    Ok(SystemRef {
        system_type: need("system_type")?,
        system_address: need("system_address")?,
    })
}

fn component(args: &Value) -> Result<ComponentAddress, String> {
    let text = match args.get("component_address") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(
                "argument component_address (\"zone-point\" or an integer) is required".into(),
            );
        }
    };
    ComponentAddress::parse(&text)
        .ok_or_else(|| format!("component_address {text:?} is not \"zone-point\" or an integer"))
}

/// Runs one command to completion and answers it.
pub(crate) async fn execute(shared: Arc<Shared>, req: CommandRequest) {
    let (status, detail) = run(&shared, &req).await;
    req.respond(status, detail);
}

async fn run(shared: &Shared, req: &CommandRequest) -> (CommandStatus, String) {
    let kind = req.command.kind.as_str();
    if !SUPPORTED.contains(&kind) {
        return (
            CommandStatus::Unsupported,
            format!(
                "unsupported command {kind:?}: gb26875 supports {}",
                SUPPORTED.join(", ")
            ),
        );
    }
    let (command, adu) = match plan(kind, &req.command.args) {
        Ok(p) => p,
        Err(e) => return (CommandStatus::Rejected, e),
    };
    let Some(uitd) = shared.devices.get(&req.device) else {
        return (
            CommandStatus::Rejected,
            format!("{} is not a uitd of this listener", req.device),
        );
    };
    let Some(outbox) = shared.outbox(*uitd) else {
        return (
            CommandStatus::Failed,
            format!("uitd {} ({}) is not connected", req.device, uitd),
        );
    };
    let data = match adu.encode() {
        Ok(d) => d,
        Err(e) => return (CommandStatus::Rejected, e.to_string()),
    };
    let (tx, rx) = oneshot::channel();
    if outbox
        .send(Outgoing {
            command,
            data,
            reply: tx,
        })
        .await
        .is_err()
    {
        return (
            CommandStatus::Failed,
            format!("uitd {} disconnected", req.device),
        );
    }
    let attempts = u32::from(shared.retries) + 1;
    let budget = shared.response_timeout * attempts + std::time::Duration::from_secs(1);
    match tokio::time::timeout(budget, rx).await {
        Ok(Ok(Answer::Frame(f))) if f.command == CommandByte::Deny => (
            CommandStatus::Rejected,
            format!("uitd denied the command: {}", frame_to_json(&f)),
        ),
        Ok(Ok(Answer::Frame(f))) => (CommandStatus::Succeeded, frame_to_json(&f).to_string()),
        Ok(Ok(Answer::Invalid(e))) => (CommandStatus::Rejected, e),
        Ok(Ok(Answer::NotConnected)) | Ok(Err(_)) => (
            CommandStatus::Failed,
            format!("uitd {} disconnected before answering", req.device),
        ),
        Ok(Ok(Answer::Timeout)) | Err(_) => (
            CommandStatus::Failed,
            format!(
                "no answer from uitd {} after {attempts} attempts of {:?}",
                req.device, shared.response_timeout
            ),
        ),
    }
}
