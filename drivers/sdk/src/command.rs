//! Commands: what the gateway asks a device to do (DESIGN §3), and their results.
//!
//! The command types live in `campusgw-model` and are re-exported here; only
//! [`CommandRequest`], which carries a tokio reply channel, is defined in the sdk. The gateway
//! resolves scopes and hands each driver a [`CommandRequest`] for one of its devices. The
//! driver answers through [`CommandRequest::respond`]; the gateway journals the result as a
//! `command.result` event.

use tokio::sync::oneshot;

pub use campusgw_model::command::*;

use crate::event::DeviceId;

/// A command handed to a driver for one of its devices, with the channel to answer on.
#[derive(Debug)]
pub struct CommandRequest {
    /// The command.
    pub command: Command,
    /// The device (resolved from the command's target) that should execute it.
    pub device: DeviceId,
    reply: oneshot::Sender<CommandResult>,
}

impl CommandRequest {
    /// Pairs a command with the receiver its result will arrive on.
    pub fn new(
        command: Command,
        device: DeviceId,
    ) -> (CommandRequest, oneshot::Receiver<CommandResult>) {
        let (reply, rx) = oneshot::channel();
        (
            CommandRequest {
                command,
                device,
                reply,
            },
            rx,
        )
    }

    /// Answers the command. A dropped request reads as `Failed` to the issuer.
    pub fn respond(self, status: CommandStatus, detail: impl Into<String>) {
        let result = CommandResult {
            command_id: self.command.id,
            device: self.device,
            status,
            detail: detail.into(),
        };
        // The issuer may have given up waiting; the result is still journaled by the gateway
        // from its own side, so a closed channel is not an error here.
        let _ = self.reply.send(result);
    }
}
