//! Routes commands to the drivers that own the addressed devices, waits for their results
//! and journals each result as a `command.result` event.
//!
//! Scope syntax: `all`, `campus:main`, `building:A`, `floor:A/2`, `zone:A/2/east`.
//!
//! Door commands pass the cross-vendor access policy first ([`crate::access`]): while fire
//! egress is active, a `door.lock` to an escape-route door is answered `Rejected` with the
//! reason instead of being sent, and egress / lockdown changes are journaled.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::command::{CommandResult, CommandStatus};
use campusgw_sdk::event::kinds;
use campusgw_sdk::{
    Class, Command, CommandInbox, CommandRequest, DeviceId, Event, Location, NewEvent, Target,
};

use crate::access::{self, AccessPolicy, Change};
use crate::journal::Journal;

struct Route {
    location: Location,
    inbox: Arc<CommandInbox>,
}

/// The gateway's own `access.egress` / `access.lockdown` events, oldest first (blocking).
fn access_events(journal: &Journal, gateway: &DeviceId) -> Result<Vec<Event>, String> {
    let conn = journal.read_connection().map_err(|e| e.to_string())?;
    let durable = journal
        .status()
        .last_seq
        .load(std::sync::atomic::Ordering::SeqCst);
    let mut stmt = conn
        .prepare(
            "SELECT seq, body FROM events WHERE class = ?1 AND seq <= ?2 AND device = ?3 \
         AND kind IN ('access.egress', 'access.lockdown') ORDER BY seq",
        )
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map(
            rusqlite::params![
                i64::from(Class::Security.rank()),
                i64::try_from(durable).unwrap_or(i64::MAX),
                gateway.as_str()
            ],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, body) = row.map_err(|e| e.to_string())?;
        // A row that does not decode is the journal's to quarantine; skipped here.
        if let Ok(mut e) = serde_json::from_str::<Event>(&body)
            && e.source.driver == "gateway"
        {
            e.seq = seq as u64;
            out.push(e);
        }
    }
    Ok(out)
}

/// Device id → the command channel of the driver instance serving it.
pub struct CommandRouter {
    routes: BTreeMap<DeviceId, Route>,
    journal: Journal,
    gateway: DeviceId,
    access: AccessPolicy,
}

impl CommandRouter {
    /// A router journaling results into `journal`, as device `gateway`.
    pub fn new(journal: Journal, gateway: DeviceId) -> CommandRouter {
        CommandRouter {
            routes: BTreeMap::new(),
            journal,
            gateway,
            access: AccessPolicy::default(),
        }
    }

    /// Marks a registered door as on an escape route (see [`crate::access`]).
    pub fn add_escape_route(&mut self, device: DeviceId) {
        self.access.add_escape_route(device);
    }

    /// The fire egress / lockdown state, for the console.
    pub fn access(&self) -> &AccessPolicy {
        &self.access
    }

    /// Rebuilds the fire egress / lockdown state from the journal (see
    /// [`crate::access`]); call once every device is registered, before commands flow.
    /// Returns the activations in force.
    ///
    /// # Errors
    /// The journal's read error (text).
    pub async fn restore_access(&self) -> Result<usize, String> {
        let j = self.journal.clone();
        let gateway = self.gateway.clone();
        let events = tokio::task::spawn_blocking(move || access_events(&j, &gateway))
            .await
            .map_err(|e| e.to_string())??;
        let n = self.access.restore(&events, |t| self.resolve(t));
        for a in self.access.snapshot().lockdown {
            tracing::warn!(scope = %a.scope, by = %a.by, since = %a.since, "lockdown still in force (restored from the journal)");
        }
        for a in self.access.snapshot().egress {
            tracing::warn!(scope = %a.scope, by = %a.by, since = %a.since, "fire egress still in force (restored from the journal)");
        }
        Ok(n)
    }

    /// Adds a device served by the driver behind `inbox`.
    pub fn register(&mut self, device: &DeviceId, location: &Location, inbox: Arc<CommandInbox>) {
        self.routes.insert(
            device.clone(),
            Route {
                location: location.clone(),
                inbox,
            },
        );
    }

    /// The devices a target names.
    pub fn resolve(&self, target: &Target) -> Vec<DeviceId> {
        match target {
            Target::Device(d) => self
                .routes
                .contains_key(d)
                .then(|| d.clone())
                .into_iter()
                .collect(),
            Target::Scope(s) => self
                .routes
                .iter()
                .filter(|(_, r)| scope_matches(s, &r.location))
                .map(|(d, _)| d.clone())
                .collect(),
        }
    }

    /// Executes a command on every device its target names, waiting up to `timeout` for
    /// each result; every result is journaled.
    pub async fn execute(&self, command: Command, timeout: Duration) -> Vec<CommandResult> {
        let devices = self.resolve(&command.target);
        if devices.is_empty() {
            let r = CommandResult {
                command_id: command.id,
                device: self.gateway.clone(),
                status: CommandStatus::Rejected,
                detail: format!("no device matches target {:?}", command.target),
            };
            self.journal_results(&command, std::slice::from_ref(&r))
                .await;
            return vec![r];
        }
        let mut command = command;
        if access::is_egress(&command) {
            // Held open until released, not a momentary open that relocks in seconds.
            if let serde_json::Value::Object(m) = &mut command.args {
                m.insert("egress".into(), true.into());
            } else {
                command.args = serde_json::json!({ "egress": true });
            }
        }
        let mut refused = Vec::new();
        let mut send = Vec::new();
        for d in devices.iter() {
            match (command.kind.as_str() == access::LOCK)
                .then(|| self.access.refusal(d))
                .flatten()
            {
                Some(why) => refused.push(CommandResult {
                    command_id: command.id,
                    device: d.clone(),
                    status: CommandStatus::Rejected,
                    detail: why,
                }),
                None => send.push(d.clone()),
            }
        }
        let changes = self.access.apply(&command, &devices);
        self.journal_access(&changes).await;
        let mut results = self.dispatch(&command, send, timeout).await;
        results.extend(refused);
        self.journal_results(&command, &results).await;
        results
    }

    async fn dispatch(
        &self,
        command: &Command,
        devices: Vec<DeviceId>,
        timeout: Duration,
    ) -> Vec<CommandResult> {
        let mut waits = Vec::new();
        for d in devices {
            let (req, rx) = CommandRequest::new(command.clone(), d.clone());
            let sent = match self.routes.get(&d) {
                Some(r) => r.inbox.send(req).await.is_ok(),
                None => false,
            };
            waits.push((d, sent, rx));
        }
        let mut results = Vec::new();
        for (d, sent, rx) in waits {
            let failed = |detail: &str| CommandResult {
                command_id: command.id,
                device: d.clone(),
                status: CommandStatus::Failed,
                detail: detail.to_owned(),
            };
            let r = if !sent {
                failed("driver is not running")
            } else {
                match tokio::time::timeout(timeout, rx).await {
                    Ok(Ok(r)) => r,
                    Ok(Err(_)) => failed("driver dropped the command (restarting?)"),
                    Err(_) => failed("no result within the command timeout"),
                }
            };
            results.push(r);
        }
        results
    }

    async fn journal_access(&self, changes: &[Change]) {
        if changes.is_empty() {
            return;
        }
        let events = changes
            .iter()
            .filter_map(|c| {
                let kind = campusgw_sdk::Kind::new(c.kind).ok()?;
                let payload = serde_json::json!({
                    "state": c.state,
                    "scope": c.scope,
                    "by": c.by,
                    "at": c.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                });
                Some(Event::stamp(
                    NewEvent::new(kind, Class::Security).payload(payload),
                    &self.gateway,
                    "gateway",
                    &Location::default(),
                ))
            })
            .collect();
        if let Err(e) = self.journal.append(events).await {
            tracing::warn!(error = %e, "access state change not journaled");
        }
    }

    async fn journal_results(&self, command: &Command, results: &[CommandResult]) {
        // A scope reaches every device in it, and most kinds only some drivers take (a
        // `door.lock` to `all` reaches meters and speakers too): their `unsupported` answers
        // are returned to the caller but not journaled one by one, unless no device took
        // the command at all, which is then shown in full.
        let scoped = matches!(command.target, Target::Scope(_));
        let all_unsupported = results
            .iter()
            .all(|r| r.status == CommandStatus::Unsupported);
        let events: Vec<Event> = results
            .iter()
            .filter(|r| !scoped || all_unsupported || r.status != CommandStatus::Unsupported)
            .map(|r| {
                let payload = serde_json::json!({ "command": command, "result": r });
                let loc = self
                    .routes
                    .get(&r.device)
                    .map(|x| x.location.clone())
                    .unwrap_or_default();
                Event::stamp(
                    NewEvent::new(kinds::COMMAND_RESULT, Class::Operations)
                        .payload(payload)
                        .device(r.device.clone()),
                    &self.gateway,
                    "gateway",
                    &loc,
                )
            })
            .collect();
        if let Err(e) = self.journal.append(events).await {
            tracing::warn!(error = %e, command = %command.id, "command results not journaled");
        }
    }
}

/// Whether a scope like `building:A` covers `loc`.
pub fn scope_matches(scope: &str, loc: &Location) -> bool {
    if scope == "all" {
        return true;
    }
    let Some((level, value)) = scope.split_once(':') else {
        return false;
    };
    let parts: Vec<&str> = value.split('/').collect();
    let want: &[Option<&str>] = &loc.levels()[..];
    let (first, n) = match level {
        "campus" => (0, 1),
        "building" => (1, 1),
        "floor" => (1, 2),
        "zone" => (1, 3),
        _ => return false,
    };
    parts.len() == n
        && parts
            .iter()
            .enumerate()
            .all(|(i, p)| want[first + i] == Some(*p))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A driver stand-in: answers every command to `inbox` with `status`.
    fn answer_all(inbox: Arc<CommandInbox>, status: CommandStatus) {
        tokio::spawn(async move {
            while let Some(req) = inbox.recv().await {
                req.respond(status, "stand-in");
            }
        });
    }

    #[tokio::test]
    async fn a_scope_command_journals_the_devices_that_took_it_not_every_unsupported_answer() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = crate::journal::JournalOptions::new(dir.path().join("j.db"));
        o.quick_check = false;
        let (journal, _writer) = Journal::open(o).unwrap();
        let mut router = CommandRouter::new(journal.clone(), DeviceId::new("gw").unwrap());
        let loc = Location::from_path("main/A/1").unwrap();
        for (id, status) in [
            ("door_1", CommandStatus::Succeeded),
            ("meter_1", CommandStatus::Unsupported),
            ("speaker_1", CommandStatus::Unsupported),
            ("meter_b", CommandStatus::Unsupported),
        ] {
            let inbox = Arc::new(CommandInbox::new());
            let loc = if id == "meter_b" {
                Location::from_path("main/B/1").unwrap()
            } else {
                loc.clone()
            };
            router.register(&DeviceId::new(id).unwrap(), &loc, inbox.clone());
            answer_all(inbox, status);
        }
        let journaled = |kind: &str| {
            let kind = kind.to_owned();
            let journal = journal.clone();
            async move {
                let reader = journal.reader().unwrap();
                let mut devices: Vec<String> = reader
                    .after(0, None, 100)
                    .unwrap()
                    .into_iter()
                    .filter(|e| e.payload["command"]["kind"] == kind.as_str())
                    .map(|e| e.source.device.as_str().to_owned())
                    .collect();
                devices.sort();
                devices
            }
        };
        let lock = Command::new(
            campusgw_sdk::CommandKind::new("door.lock").unwrap(),
            Target::Scope("all".into()),
            serde_json::Value::Null,
            "test",
        );
        let results = router.execute(lock, Duration::from_secs(10)).await;
        assert_eq!(results.len(), 4, "the caller still sees every answer");
        assert_eq!(journaled("door.lock").await, ["door_1"]);

        // A command no device in its scope takes is journaled in full: never silent.
        let lock_b = Command::new(
            campusgw_sdk::CommandKind::new("door.unlock").unwrap(),
            Target::Scope("building:B".into()),
            serde_json::Value::Null,
            "test",
        );
        let results = router.execute(lock_b, Duration::from_secs(10)).await;
        assert_eq!(results.len(), 1);
        assert_eq!(journaled("door.unlock").await, ["meter_b"]);
    }

    #[test]
    fn scopes_match_their_level() {
        let loc = Location {
            campus: Some("main".into()),
            building: Some("A".into()),
            floor: Some("2".into()),
            zone: Some("east".into()),
            point: None,
        };
        for s in [
            "all",
            "campus:main",
            "building:A",
            "floor:A/2",
            "zone:A/2/east",
        ] {
            assert!(scope_matches(s, &loc), "{s}");
        }
        for s in [
            "building:B",
            "floor:A/3",
            "floor:2",
            "zone:A/2",
            "room:1",
            "building",
        ] {
            assert!(!scope_matches(s, &loc), "{s}");
        }
    }
}
