//! Access-control state across vendors: fire egress, lockdown, and the rule that egress wins.
//!
//! # Why "egress wins"
//! People must be able to leave a burning building. GB 50016-2014 requires evacuation doors to
//! open from the inside without a key in a fire, and GB 50116-2013 makes unlocking the
//! access-controlled doors of the fire area part of the fire linkage. A panic lockdown is about
//! keeping an intruder out; a fire is about getting everyone out, and a locked escape door in a
//! fire kills. So while fire egress is active for a scope, a `door.lock` that would lock an
//! escape-route door in it is refused (`Rejected`, with the reason), and the refusal is
//! journaled like every command result. Doors that are not escape routes (a server room, the
//! cash office) still lock. Which doors are escape routes is per door in the driver config
//! (`escape_route`, default true: the safe side when someone forgets the flag).
//!
//! This lives in the gateway's command router, not in a driver, because lockdown and egress
//! are commands to scopes that cross controllers and vendors; one place decides for all.
//!
//! # What starts and ends egress and lockdown
//! - Egress starts with a `door.unlock` whose `args.egress` is true (operator "egress mode")
//!   or that a fire rule issued (`issued_by` starting with `rule:fire`, as the default pack's
//!   `fire_confirmed` does). The router then sets `args.egress = true`, so drivers hold the
//!   doors open (ISAPI `alwaysOpen`) instead of a momentary open that relocks after seconds.
//! - Lockdown starts with a `door.lock` to a scope.
//! - A `door.release` (back to normal) ends every egress or lockdown whose doors it covers.
//! - Each change is journaled: `access.egress` and `access.lockdown` with
//!   `{"state": "active" | "released", "scope", "by", "at"}` (class security; `at`: when
//!   the activation began, or when it was released).
//!
//! # Durable state
//! The state lives in memory and is rebuilt from those journaled `access.egress` /
//! `access.lockdown` events when the gateway starts ([`AccessPolicy::restore`], called by
//! `crate::app` before any command is routed): a lockdown, who started it and when, and
//! a fire egress (with its refusal to lock escape doors) survive a restart or a crash,
//! until a `door.release` ends them. The doors an activation covers are resolved again from
//! its scope against the current configuration. No table is needed: the journal is the
//! record (the events are class security, kept by its retention; an activation older than
//! that retention is forgotten at the next start, and is logged when restored).

use std::collections::BTreeSet;
use std::sync::Mutex;

use campusgw_sdk::{Command, DeviceId, Event, Target};
use chrono::{DateTime, Utc};
use serde::Serialize;

/// `door.unlock`.
pub const UNLOCK: &str = "door.unlock";
/// `door.lock`.
pub const LOCK: &str = "door.lock";
/// `door.release`.
pub const RELEASE: &str = "door.release";

/// One active egress or lockdown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Activation {
    /// The target it was issued to (`building:A`, `device:door_1`).
    pub scope: String,
    /// Who issued it.
    pub by: String,
    /// When.
    pub since: DateTime<Utc>,
    /// The devices it covered when issued.
    #[serde(skip)]
    pub devices: BTreeSet<DeviceId>,
}

/// What the console shows.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessSnapshot {
    /// Active fire egress.
    pub egress: Vec<Activation>,
    /// Active lockdowns.
    pub lockdown: Vec<Activation>,
}

/// A state change to journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `access.egress` or `access.lockdown`.
    pub kind: &'static str,
    /// `active` or `released`.
    pub state: &'static str,
    /// The scope.
    pub scope: String,
    /// Who.
    pub by: String,
    /// When the activation began (`active`) or ended (`released`).
    pub at: DateTime<Utc>,
}

/// Escape-route doors and the current egress / lockdown state.
#[derive(Debug, Default)]
pub struct AccessPolicy {
    escape: BTreeSet<DeviceId>,
    state: Mutex<AccessSnapshot>,
}

/// The scope text of a target.
pub fn scope_text(t: &Target) -> String {
    match t {
        Target::Device(d) => format!("device:{d}"),
        Target::Scope(s) => s.clone(),
    }
}

/// The target a scope text names (the inverse of [`scope_text`]).
pub fn target_of(scope: &str) -> Target {
    match scope.strip_prefix("device:").map(DeviceId::new) {
        Some(Ok(d)) => Target::Device(d),
        _ => Target::Scope(scope.to_owned()),
    }
}

/// Whether a command starts fire egress.
pub fn is_egress(c: &Command) -> bool {
    c.kind.as_str() == UNLOCK
        && (c.args.get("egress").and_then(|v| v.as_bool()) == Some(true)
            || c.issued_by.starts_with("rule:fire"))
}

impl AccessPolicy {
    /// Marks a device as on an escape route.
    pub fn add_escape_route(&mut self, d: DeviceId) {
        self.escape.insert(d);
    }

    /// Whether `d` is on an escape route.
    pub fn is_escape_route(&self, d: &DeviceId) -> bool {
        self.escape.contains(d)
    }

    /// The current state.
    pub fn snapshot(&self) -> AccessSnapshot {
        self.state.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// The reason `d` must not be locked now, if any.
    pub fn refusal(&self, d: &DeviceId) -> Option<String> {
        if !self.escape.contains(d) {
            return None;
        }
        let s = self.state.lock().ok()?;
        s.egress.iter().find(|e| e.devices.contains(d)).map(|e| {
            format!(
                "refused: fire egress is active for {} since {} (by {}); {d} is on an escape \
                 route and stays unlocked (life safety: people must be able to leave); \
                 end egress with door.release",
                e.scope,
                e.since.to_rfc3339(),
                e.by
            )
        })
    }

    /// Rebuilds the state from journaled `access.egress` / `access.lockdown` events
    /// (oldest first; events of other kinds are skipped); `resolve` gives the devices a
    /// scope covers now. Returns how many activations are in force afterwards.
    pub fn restore(&self, events: &[Event], resolve: impl Fn(&Target) -> Vec<DeviceId>) -> usize {
        let Ok(mut guard) = self.state.lock() else {
            return 0;
        };
        let s = &mut *guard;
        for e in events {
            let list = match e.kind.as_str() {
                "access.egress" => &mut s.egress,
                "access.lockdown" => &mut s.lockdown,
                _ => continue,
            };
            let text = |k: &str| e.payload.get(k).and_then(|v| v.as_str());
            let Some(scope) = text("scope") else {
                continue;
            };
            match text("state") {
                Some("active") if !list.iter().any(|a| a.scope == scope) => {
                    list.push(Activation {
                        scope: scope.to_owned(),
                        by: text("by").unwrap_or_default().to_owned(),
                        since: text("at")
                            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                            .map_or(e.occurred_at.unwrap_or(e.received_at), |t| {
                                t.with_timezone(&Utc)
                            }),
                        devices: resolve(&target_of(scope)).into_iter().collect(),
                    });
                }
                Some("released") => list.retain(|a| a.scope != scope),
                _ => {}
            }
        }
        s.egress.len() + s.lockdown.len()
    }

    /// Records what `c`, addressed to `devices`, starts or ends; returns the changes.
    pub fn apply(&self, c: &Command, devices: &[DeviceId]) -> Vec<Change> {
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        let s = &mut *guard;
        let covered: BTreeSet<DeviceId> = devices.iter().cloned().collect();
        let now = Utc::now();
        let act = || Activation {
            scope: scope_text(&c.target),
            by: c.issued_by.clone(),
            since: now,
            devices: covered.clone(),
        };
        let change = |kind, state, a: &Activation| Change {
            kind,
            state,
            scope: a.scope.clone(),
            by: c.issued_by.clone(),
            at: if state == "active" { a.since } else { now },
        };
        let mut out = Vec::new();
        match c.kind.as_str() {
            UNLOCK if is_egress(c) => {
                let a = act();
                if !s.egress.iter().any(|e| e.scope == a.scope) {
                    out.push(change("access.egress", "active", &a));
                    s.egress.push(a);
                }
            }
            LOCK if matches!(c.target, Target::Scope(_)) => {
                let a = act();
                if !s.lockdown.iter().any(|e| e.scope == a.scope) {
                    out.push(change("access.lockdown", "active", &a));
                    s.lockdown.push(a);
                }
            }
            RELEASE => {
                for (kind, list) in [
                    ("access.egress", &mut s.egress),
                    ("access.lockdown", &mut s.lockdown),
                ] {
                    list.retain(|a| {
                        let ends = a.devices.is_subset(&covered);
                        if ends {
                            out.push(change(kind, "released", a));
                        }
                        !ends
                    });
                }
            }
            _ => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use campusgw_sdk::CommandKind;

    fn id(s: &str) -> DeviceId {
        DeviceId::new(s).expect("valid id")
    }

    fn cmd(kind: &str, scope: &str, by: &str) -> Command {
        Command::new(
            CommandKind::new(kind).expect("kind"),
            Target::Scope(scope.into()),
            serde_json::Value::Null,
            by,
        )
    }

    #[test]
    fn a_fire_unlock_makes_escape_doors_refuse_to_lock_until_released() {
        let mut p = AccessPolicy::default();
        p.add_escape_route(id("exit_a"));
        let doors = [id("exit_a"), id("office_a")];
        assert_eq!(p.refusal(&id("exit_a")), None);
        let ch = p.apply(&cmd(UNLOCK, "building:A", "rule:fire_confirmed"), &doors);
        assert_eq!(ch[0].kind, "access.egress");
        assert!(p.refusal(&id("exit_a")).is_some());
        assert_eq!(p.refusal(&id("office_a")), None, "not an escape route");
        let ch = p.apply(&cmd(LOCK, "campus:main", "rule:panic_lockdown"), &doors);
        assert_eq!((ch[0].kind, ch[0].state), ("access.lockdown", "active"));
        let ch = p.apply(&cmd(RELEASE, "campus:main", "operator:alice"), &doors);
        assert_eq!(ch.len(), 2, "{ch:?}");
        assert_eq!(p.refusal(&id("exit_a")), None);
        assert_eq!(p.snapshot(), AccessSnapshot::default());
    }

    fn journaled(c: &Change) -> Event {
        Event::stamp(
            campusgw_sdk::NewEvent::new(
                campusgw_sdk::Kind::new(c.kind).expect("kind"),
                campusgw_sdk::Class::Security,
            )
            .payload(
                serde_json::json!({ "state": c.state, "scope": c.scope, "by": c.by, "at": c.at }),
            ),
            &id("gw"),
            "gateway",
            &campusgw_sdk::Location::default(),
        )
    }

    #[test]
    fn the_state_is_rebuilt_from_its_journaled_changes_and_a_release_ends_it() {
        let doors = [id("exit_a"), id("office_a")];
        let policy = || {
            let mut p = AccessPolicy::default();
            p.add_escape_route(id("exit_a"));
            p
        };
        let p = policy();
        let mut log = Vec::new();
        for (c, covered) in [
            (cmd(LOCK, "campus:main", "operator:alice"), &doors[..]),
            (
                cmd(UNLOCK, "building:A", "rule:fire_confirmed"),
                &doors[..1],
            ),
        ] {
            log.extend(p.apply(&c, covered).iter().map(journaled));
        }
        let resolve = |t: &Target| match t {
            Target::Scope(s) if s == "building:A" => doors[..1].to_vec(),
            _ => doors.to_vec(),
        };
        let restored = policy();
        assert_eq!(restored.restore(&log, resolve), 2);
        assert_eq!(
            restored.snapshot(),
            p.snapshot(),
            "who, when and which doors"
        );
        assert!(
            restored.refusal(&id("exit_a")).is_some(),
            "egress still guards the exit"
        );

        // Releasing the exit door ends the egress (it covered only that door), not the lockdown.
        let ch = p.apply(
            &cmd(RELEASE, "device:exit_a", "operator:carol"),
            &doors[..1],
        );
        assert_eq!(ch.len(), 1, "{ch:?}");
        log.extend(ch.iter().map(journaled));
        let restored = policy();
        assert_eq!(restored.restore(&log, resolve), 1);
        let snap = restored.snapshot();
        assert!(snap.egress.is_empty());
        assert_eq!(snap.lockdown.len(), 1);
        assert_eq!(snap.lockdown[0].scope, "campus:main");
        assert_eq!(snap.lockdown[0].by, "operator:alice");
        assert_eq!(snap.lockdown[0].since, p.snapshot().lockdown[0].since);
        assert_eq!(restored.refusal(&id("exit_a")), None);
        assert_eq!(target_of("device:door_1"), Target::Device(id("door_1")));
        assert_eq!(
            target_of("campus:main"),
            Target::Scope("campus:main".into())
        );
    }

    #[test]
    fn an_ordinary_unlock_is_not_egress_and_a_narrower_release_ends_nothing_wider() {
        let mut p = AccessPolicy::default();
        p.add_escape_route(id("d1"));
        p.apply(&cmd(UNLOCK, "building:A", "operator:bob"), &[id("d1")]);
        assert_eq!(p.refusal(&id("d1")), None);
        p.apply(
            &cmd(UNLOCK, "building:A", "rule:fire_confirmed"),
            &[id("d1"), id("d2")],
        );
        assert!(
            p.apply(&cmd(RELEASE, "zone:A/1/x", "op"), &[id("d1")])
                .is_empty()
        );
        assert!(p.refusal(&id("d1")).is_some());
    }
}
