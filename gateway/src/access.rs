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
//!   `{"state": "active" | "released", "scope", "by"}` (class security).
//!
//! State is in memory: after a restart no egress is active. A fire rule still firing
//! re-issues its unlock (the rules runner retries and re-evaluates), and the doors
//! themselves stay in `alwaysOpen` until released, so a restart does not relock them.

use std::collections::BTreeSet;
use std::sync::Mutex;

use campusgw_sdk::{Command, DeviceId, Target};
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

    /// Records what `c`, addressed to `devices`, starts or ends; returns the changes.
    pub fn apply(&self, c: &Command, devices: &[DeviceId]) -> Vec<Change> {
        let Ok(mut guard) = self.state.lock() else {
            return Vec::new();
        };
        let s = &mut *guard;
        let covered: BTreeSet<DeviceId> = devices.iter().cloned().collect();
        let act = || Activation {
            scope: scope_text(&c.target),
            by: c.issued_by.clone(),
            since: Utc::now(),
            devices: covered.clone(),
        };
        let change = |kind, state, a: &Activation| Change {
            kind,
            state,
            scope: a.scope.clone(),
            by: c.issued_by.clone(),
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
