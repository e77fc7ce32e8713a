//! Commands: what the gateway asks a device to do (DESIGN §3), and their results.
//!
//! The command types live in `campusgw-model` and are re-exported here; only
//! [`CommandRequest`], which carries a tokio reply channel, is defined in the sdk. The gateway
//! resolves scopes and hands each driver a [`CommandRequest`] for one of its devices. The
//! driver answers through [`CommandRequest::respond`]; the gateway journals the result as a
//! `command.result` event.

use std::sync::OnceLock;

use tokio::sync::{Mutex, Notify, mpsc, oneshot};

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

/// Commands queued per driver instance once its channel exists.
pub const INBOX_CAPACITY: usize = 64;

/// The command inbox of one driver instance, shared by the gateway's router (sending) and
/// the instance across its restarts (receiving).
///
/// Its channel is created when the first command arrives, not when the device is
/// configured: most devices never receive a command, and a tokio channel allocates its
/// first block of slots (~5.7 KB for [`CommandRequest`]) up front, 11 MB for 2,000 devices.
#[derive(Debug, Default)]
pub struct CommandInbox {
    chan: OnceLock<Chan>,
    created: Notify,
}

#[derive(Debug)]
struct Chan {
    tx: mpsc::Sender<CommandRequest>,
    rx: Mutex<mpsc::Receiver<CommandRequest>>,
}

impl CommandInbox {
    /// An inbox without a channel yet.
    pub fn new() -> CommandInbox {
        CommandInbox::default()
    }

    /// Whether a command has ever been sent here (the channel exists).
    pub fn is_created(&self) -> bool {
        self.chan.get().is_some()
    }

    /// Queues a command, waiting while [`INBOX_CAPACITY`] commands are queued.
    ///
    /// # Errors
    /// Never today (the inbox keeps a sender, so the channel stays open); the request is
    /// returned if that ever changes.
    pub async fn send(&self, req: CommandRequest) -> Result<(), CommandRequest> {
        let chan = self.chan.get_or_init(|| {
            let (tx, rx) = mpsc::channel(INBOX_CAPACITY);
            Chan {
                tx,
                rx: Mutex::new(rx),
            }
        });
        // Wakes a receiver that was waiting for the channel to exist.
        self.created.notify_waiters();
        chan.tx.send(req).await.map_err(|e| e.0)
    }

    /// The next command; waits (without allocating a channel) until one is sent.
    pub async fn recv(&self) -> Option<CommandRequest> {
        loop {
            if let Some(chan) = self.chan.get() {
                return chan.rx.lock().await.recv().await;
            }
            let created = self.created.notified();
            tokio::pin!(created);
            // Registered before the second look, so a channel created in between wakes us.
            created.as_mut().enable();
            if self.chan.get().is_none() {
                created.await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::command::{Command, CommandKind, Target};

    fn request(device: &DeviceId) -> (CommandRequest, oneshot::Receiver<CommandResult>) {
        let cmd = Command::new(
            CommandKind::new("door.unlock").expect("valid kind"),
            Target::Device(device.clone()),
            serde_json::Value::Null,
            "test",
        );
        CommandRequest::new(cmd, device.clone())
    }

    #[tokio::test]
    async fn an_inbox_creates_its_channel_only_when_the_first_command_arrives() {
        let inbox = Arc::new(CommandInbox::new());
        let device = DeviceId::new("d1").expect("valid id");
        let waiting = tokio::spawn({
            let inbox = inbox.clone();
            async move { inbox.recv().await }
        });
        // A receiver waiting for commands does not create the channel either.
        tokio::task::yield_now().await;
        assert!(!inbox.is_created());
        let (req, _reply) = request(&device);
        inbox.send(req).await.expect("inbox open");
        assert!(inbox.is_created());
        let got = tokio::time::timeout(Duration::from_secs(30), waiting)
            .await
            .expect("the waiting receiver got the first command")
            .expect("receiver task");
        assert_eq!(got.map(|r| r.device), Some(device));
    }
}
