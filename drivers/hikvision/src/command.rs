//! Door commands through `PUT /ISAPI/AccessControl/RemoteControl/door/<n>`.
//!
//! | command | `cmd` sent | args |
//! |---|---|---|
//! | `door.unlock` | `open` (the controller relocks after its own open time) | — |
//! | `door.unlock` | `alwaysOpen`, then `resume` after N s | `seconds`: N |
//! | `door.unlock` | `alwaysOpen`, held until `door.release` | `egress`: true (fire egress) |
//! | `door.lock` | `alwaysClose` | — |
//! | `door.hold_open` | `alwaysOpen` | — |
//! | `door.release` | `resume` (back to the door's schedule) | — |
//!
//! A command addressed to the controller's own device goes to door 65535 (all doors); reached
//! through a scope, the controller answers `Unsupported` (its doors get the command one by
//! one, each as its own device). The result is
//! `ResponseStatus/statusCode`: 1 is `Succeeded`; any other code, an HTTP error, a timeout or
//! a connection lost before the whole answer was read is `Failed`, never a success the
//! controller did not confirm. Other command kinds are `Unsupported`. A pending timed
//! `resume` is cancelled by any later command to the same door, so a lockdown issued during
//! a timed unlock is not undone when the timer fires.
//!
//! Commands run concurrently (at most [`PARALLEL`] per controller), so a lockdown of a
//! controller's many doors is not serialised behind one slow answer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sdk::{CommandRequest, CommandStatus, DriverContext};
use reqwest::Method;
use tokio::sync::Semaphore;

use crate::alert::DoorPlace;
use crate::client::{IsapiClient, error_chain};
use crate::config::ALL_DOORS;

/// Door commands in flight per controller.
pub const PARALLEL: usize = 16;

/// The ISAPI XML namespace.
const NS: &str = "http://www.isapi.org/ver20/XMLSchema";

/// The text of the first `<name>` element in `xml` (no DOCTYPE, no entities: see
/// [`crate::alert`]).
pub fn xml_leaf(xml: &str, name: &str) -> Option<String> {
    use quick_xml::events::Event as Xml;
    let mut r = quick_xml::Reader::from_str(xml);
    let mut inside = false;
    loop {
        match r.read_event() {
            Ok(Xml::DocType(_)) | Err(_) | Ok(Xml::Eof) => return None,
            Ok(Xml::Start(e)) => inside = e.local_name().as_ref() == name.as_bytes(),
            Ok(Xml::Text(t)) if inside => return t.decode().ok().map(|s| s.into_owned()),
            Ok(Xml::End(_)) => inside = false,
            Ok(_) => {}
        }
    }
}

/// The body of a RemoteControlDoor request.
pub fn remote_control_body(cmd: &str) -> String {
    format!(
        "<RemoteControlDoor xmlns=\"{NS}\" version=\"2.0\"><cmd>{cmd}</cmd></RemoteControlDoor>"
    )
}

/// The doors of one controller and their pending timers.
pub(crate) struct Doors {
    client: Arc<IsapiClient>,
    doors: Vec<DoorPlace>,
    timeout: Duration,
    /// Per door number: bumped by every command, so a timer knows it was overtaken.
    generation: Mutex<HashMap<u32, u64>>,
    parallel: Semaphore,
}

enum Plan {
    Send(&'static str),
    Timed(Duration),
}

impl Doors {
    pub(crate) fn new(
        client: Arc<IsapiClient>,
        doors: Vec<DoorPlace>,
        timeout: Duration,
    ) -> Arc<Doors> {
        Arc::new(Doors {
            client,
            doors,
            timeout,
            generation: Mutex::new(HashMap::new()),
            parallel: Semaphore::new(PARALLEL),
        })
    }

    pub(crate) async fn serve(self: Arc<Doors>, cx: DriverContext) {
        while let Some(req) = cx.next_command().await {
            let me = self.clone();
            let controller = cx.device().clone();
            tokio::spawn(async move {
                let Ok(_permit) = me.parallel.acquire().await else {
                    return;
                };
                me.handle(req, &controller).await;
            });
        }
    }

    fn bump(&self, n: u32) -> u64 {
        let Ok(mut g) = self.generation.lock() else {
            return 0;
        };
        let e = g.entry(n).or_insert(0);
        *e += 1;
        *e
    }

    fn current(&self, n: u32) -> u64 {
        self.generation
            .lock()
            .ok()
            .and_then(|g| g.get(&n).copied())
            .unwrap_or(0)
    }

    fn plan(req: &CommandRequest) -> Option<Plan> {
        let args = &req.command.args;
        Some(match req.command.kind.as_str() {
            "door.unlock" if args.get("egress").and_then(|v| v.as_bool()) == Some(true) => {
                Plan::Send("alwaysOpen")
            }
            "door.unlock" => match args.get("seconds").and_then(|v| v.as_u64()) {
                Some(s) if s > 0 => Plan::Timed(Duration::from_secs(s)),
                _ => Plan::Send("open"),
            },
            "door.lock" => Plan::Send("alwaysClose"),
            "door.hold_open" => Plan::Send("alwaysOpen"),
            "door.release" => Plan::Send("resume"),
            _ => return None,
        })
    }

    async fn handle(self: &Arc<Doors>, req: CommandRequest, controller: &campusgw_sdk::DeviceId) {
        let n = if &req.device == controller {
            if matches!(req.command.target, campusgw_sdk::Target::Scope(_)) {
                // A scope reaches each door as its own device; answering for all doors
                // again here would double every command and bypass per-door decisions
                // (fire egress keeps escape doors unlocked).
                let detail = "the controller takes all-door commands only when addressed directly";
                req.respond(CommandStatus::Unsupported, detail);
                return;
            }
            ALL_DOORS
        } else if let Some(d) = self.doors.iter().find(|d| d.device == req.device) {
            d.n
        } else {
            let detail = format!("{} is not a door of this controller", req.device);
            req.respond(CommandStatus::Rejected, detail);
            return;
        };
        let Some(plan) = Doors::plan(&req) else {
            let detail = format!("{} is not a door command", req.command.kind);
            req.respond(CommandStatus::Unsupported, detail);
            return;
        };
        let generation = self.bump(n);
        let (status, detail) = match plan {
            Plan::Send(cmd) => self.send(n, cmd).await,
            Plan::Timed(after) => {
                let r = self.send(n, "alwaysOpen").await;
                if r.0 == CommandStatus::Succeeded {
                    self.resume_later(n, generation, after);
                }
                (r.0, format!("{}; resume in {}s", r.1, after.as_secs()))
            }
        };
        req.respond(status, detail);
    }

    fn resume_later(self: &Arc<Doors>, n: u32, generation: u64, after: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            if me.current(n) == generation {
                let (status, detail) = me.send(n, "resume").await;
                if status != CommandStatus::Succeeded {
                    tracing::warn!(door = n, %detail, "timed unlock: resume failed; door may stay open");
                }
            }
        });
    }

    /// One RemoteControl request: (status, detail).
    pub(crate) async fn send(&self, n: u32, cmd: &str) -> (CommandStatus, String) {
        let path = format!("/ISAPI/AccessControl/RemoteControl/door/{n}");
        let body = remote_control_body(cmd);
        let resp = match self
            .client
            .send(Method::PUT, &path, Some(body), Some(self.timeout))
            .await
        {
            Ok(r) => r,
            Err(e) => return (CommandStatus::Failed, format!("{cmd} door {n}: {e}")),
        };
        let http = resp.status();
        // The whole answer must arrive: a connection lost mid-body is not a success.
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                return (
                    CommandStatus::Failed,
                    format!("{cmd} door {n}: answer lost: {}", error_chain(&e)),
                );
            }
        };
        let code = xml_leaf(&text, "statusCode").or_else(|| {
            serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v.get("statusCode").map(|c| c.to_string()))
        });
        match code.as_deref().map(str::trim) {
            Some("1") if http.is_success() => (
                CommandStatus::Succeeded,
                format!("{cmd} door {n}: statusCode 1"),
            ),
            Some(c) => (
                CommandStatus::Failed,
                format!("{cmd} door {n}: HTTP {http}, statusCode {c}"),
            ),
            None => (
                CommandStatus::Failed,
                format!("{cmd} door {n}: HTTP {http} without a ResponseStatus"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_and_clock_come_out_of_isapi_xml() {
        let ok = "<?xml version=\"1.0\"?><ResponseStatus version=\"2.0\" xmlns=\"http://www.isapi.org/ver20/XMLSchema\"><requestURL>/x</requestURL><statusCode>1</statusCode><statusString>OK</statusString></ResponseStatus>";
        assert_eq!(xml_leaf(ok, "statusCode").as_deref(), Some("1"));
        assert_eq!(
            xml_leaf(
                "<!DOCTYPE x><a><statusCode>1</statusCode></a>",
                "statusCode"
            ),
            None
        );
        assert_eq!(xml_leaf("garbage", "statusCode"), None);
    }
}
