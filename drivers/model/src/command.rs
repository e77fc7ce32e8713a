//! Commands: what the gateway asks a device to do (DESIGN §3), and their results.
//!
//! A command is addressed to a device or to a location scope (`building:A`); the gateway
//! resolves scopes and hands each driver a `CommandRequest` (in `campusgw-sdk`, which owns the
//! reply channel) for one of its devices. The gateway journals the result as a
//! `command.result` event.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::{DeviceId, Kind};

/// A dotted command name: `door.unlock`, `relay.set`, `broadcast.play`, ...
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CommandKind(Kind);

impl CommandKind {
    /// Open the door.
    pub const DOOR_UNLOCK: CommandKind = CommandKind(Kind::from_static("door.unlock"));
    /// Lock the door.
    pub const DOOR_LOCK: CommandKind = CommandKind(Kind::from_static("door.lock"));
    /// Set a relay / coil (`{"point": "...", "on": true}`).
    pub const RELAY_SET: CommandKind = CommandKind(Kind::from_static("relay.set"));
    /// Write a register (`{"point": "...", "value": 21.5}`).
    pub const REGISTER_WRITE: CommandKind = CommandKind(Kind::from_static("register.write"));
    /// Start an announcement.
    pub const BROADCAST_PLAY: CommandKind = CommandKind(Kind::from_static("broadcast.play"));
    /// Stop an announcement.
    pub const BROADCAST_STOP: CommandKind = CommandKind(Kind::from_static("broadcast.stop"));
    /// Take a snapshot.
    pub const CAMERA_SNAPSHOT: CommandKind = CommandKind(Kind::from_static("camera.snapshot"));

    /// Parses a command kind (same rules as [`Kind`]).
    ///
    /// # Errors
    /// The [`Kind`] validation message.
    pub fn new(s: impl Into<String>) -> Result<CommandKind, crate::event::KindError> {
        Kind::new(s).map(CommandKind)
    }

    /// The dotted name.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl fmt::Display for CommandKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whom a command is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// One device.
    Device(DeviceId),
    /// Every device able to execute it within a location scope such as `building:A`.
    Scope(String),
}

/// A command, as issued by a rule, an operator or the county platform.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    /// Unique id, echoed in the result.
    pub id: uuid::Uuid,
    /// What to do.
    pub kind: CommandKind,
    /// For whom.
    pub target: Target,
    /// Kind-specific arguments.
    #[serde(default)]
    pub args: serde_json::Value,
    /// Who asked: `rule:fire_unlock`, `operator:alice`, `county`.
    pub issued_by: String,
    /// When it was issued.
    pub issued_at: DateTime<Utc>,
}

impl Command {
    /// A new command with a fresh id.
    pub fn new(kind: CommandKind, target: Target, args: serde_json::Value, by: &str) -> Command {
        Command {
            id: uuid::Uuid::now_v7(),
            kind,
            target,
            args,
            issued_by: by.to_owned(),
            issued_at: Utc::now(),
        }
    }
}

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// The device did it (and confirmed, where the protocol can).
    Succeeded,
    /// The device could not be reached or timed out: may be retried.
    Failed,
    /// The device or driver refused it (unknown point, bad arguments, device said no).
    Rejected,
    /// The device takes no commands of this kind at all (a smoke detector asked to unlock):
    /// not a failure of a command sent to a scope, which reaches every device there.
    Unsupported,
}

/// The result of one command on one device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    /// The command's id.
    pub command_id: uuid::Uuid,
    /// The device that executed it.
    pub device: DeviceId,
    /// Outcome.
    pub status: CommandStatus,
    /// Human-readable detail: the error, or what was done.
    pub detail: String,
}
