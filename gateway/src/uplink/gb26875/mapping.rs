//! Gateway events → GB/T 26875.3-2011 upload objects. Pure.
//!
//! | kind | status bits sent (GB/T 26875.3 §5.2.2 system / component status) |
//! |---|---|
//! | `fire.alarm` | b1 fire (火警) |
//! | `fire.fault` | b2 fault (故障) |
//! | `fire.disabled` | b3 disabled (屏蔽) |
//! | `fire.supervisory` | b4 supervisory (监管) |
//! | `fire.started` | b5 started (启动) |
//! | `fire.feedback` | b6 feedback (反馈) |
//! | `fire.power_fault` | b8 (main) power fault |
//! | `fire.reset` | system: b13 reset (复位); component: no abnormal bit (returned to normal) |
//! | `fire.*.restore`, `fire.fault_cleared` | no abnormal bit (returned to normal) |
//! | `fire.operation` | type 4 operation record: the payload's `flags`, or the bit of its `action` |
//!
//! Bit 0 (1 = normal operation, 0 = test) is set, so a centre never takes a real alarm for
//! a test. Where: a `[[uplink.component]]` rule for the event's device wins, then the rule
//! whose location names the most levels that all equal the event's; the event becomes a
//! component status object (type 2) of that rule's system and component. Without a rule,
//! an event from a GB/T 26875 UITD (`driver = "gb26875"`) keeps the system, component,
//! status word and description bytes it arrived with (its payload: the object is relayed
//! byte for byte); any other becomes a system
//! status object (type 1) of the default system. The object's time label is the event's
//! `occurred_at` (its `received_at` when the device gave none) in CST, so an event sent
//! again after a reconnect carries the same ADU and the centre can recognise the repeat.

use campusgw_gb26875::codec::{
    Adu, ComponentAddress, ComponentStatus, Description, SystemOperation, SystemRef, SystemStatus,
    TimeLabel,
};
use campusgw_sdk::{DeviceId, Kind, Location, Source};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use super::config::ComponentRule;

/// Kinds the uplink forwards when the table names no `kinds`.
pub const DEFAULT_KINDS: &[&str] = &[
    "fire.alarm",
    "fire.alarm.restore",
    "fire.fault",
    "fire.fault.restore",
    "fire.fault_cleared",
    "fire.reset",
    "fire.disabled",
    "fire.supervisory",
    "fire.started",
    "fire.feedback",
    "fire.power_fault",
    "fire.operation",
];

/// The fields of an event's JSON form the upload is made from.
#[derive(Debug, Deserialize)]
pub struct Routed {
    /// Kind.
    pub kind: Kind,
    /// Device and driver.
    pub source: Source,
    /// Where.
    #[serde(default)]
    pub location: Location,
    /// Payload.
    #[serde(default)]
    pub payload: Value,
    /// Device time.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Gateway time.
    pub received_at: DateTime<Utc>,
}

/// GB/T 26875.3-2011 §5.2.2: status bit 0, 1 = normal operation (0 = test).
const NORMAL: u16 = 1;
/// System status bit 13: reset (复位).
const SYSTEM_RESET: u16 = 1 << 13;

/// What a kind says about the status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// This abnormal bit.
    Bit(u8),
    /// A reset.
    Reset,
    /// Back to normal.
    Normal,
}

fn status_of(kind: &str) -> Option<Status> {
    Some(match kind {
        "fire.alarm" => Status::Bit(1),
        "fire.fault" => Status::Bit(2),
        "fire.disabled" => Status::Bit(3),
        "fire.supervisory" => Status::Bit(4),
        "fire.started" => Status::Bit(5),
        "fire.feedback" => Status::Bit(6),
        "fire.power_fault" => Status::Bit(8),
        "fire.reset" => Status::Reset,
        // `fire.fault_cleared`: the off-edge kind Modbus panel outputs are configured with.
        "fire.fault_cleared" => Status::Normal,
        k if k.starts_with("fire.") && k.ends_with(".restore") => Status::Normal,
        _ => return None,
    })
}

/// GB/T 26875.3-2011 operation flags by the `action` tag of `fire.operation` events.
const OPERATION_ACTIONS: &[(&str, u8)] = &[
    ("reset", 0),
    ("silence", 1),
    ("manual_alarm", 2),
    ("alarm_cleared", 3),
    ("self_test", 4),
    ("confirm", 5),
    ("test", 6),
];

/// Why an event has no upload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unmapped {
    /// The kind has no GB/T 26875.3 status or operation.
    #[error("kind {0} has no GB/T 26875.3 status or operation object")]
    Kind(String),
    /// A `fire.operation` without a known action.
    #[error("fire.operation without a GB/T 26875.3 action (payload flags or action)")]
    Operation,
}

/// How events are placed: the rules and the default system.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// `[[uplink.component]]` rules.
    pub rules: &'a [ComponentRule],
    /// The system of events no rule places.
    pub default_system: SystemRef,
}

impl Placement<'_> {
    /// The rule for an event from `device` at `location` (see the module doc).
    pub fn rule(&self, device: &DeviceId, location: &Location) -> Option<&ComponentRule> {
        if let Some(r) = self
            .rules
            .iter()
            .find(|r| r.device.as_ref() == Some(device))
        {
            return Some(r);
        }
        let mut best: Option<(usize, &ComponentRule)> = None;
        for r in self.rules {
            let Some(want) = &r.location else { continue };
            let mut named = 0;
            let mut all = true;
            for (w, have) in want.levels().into_iter().zip(location.levels()) {
                if let Some(w) = w {
                    if Some(w) != have {
                        all = false;
                        break;
                    }
                    named += 1;
                }
            }
            if all && best.is_none_or(|(n, _)| named > n) {
                best = Some((named, r));
            }
        }
        best.map(|(_, r)| r)
    }

    /// The upload ADU for `e`.
    ///
    /// # Errors
    /// [`Unmapped`] for a kind without a GB/T 26875.3 object.
    pub fn adu(&self, e: &Routed) -> Result<Adu, Unmapped> {
        let time = TimeLabel::from_utc(e.occurred_at.unwrap_or(e.received_at));
        let kind = e.kind.as_str();
        if kind == "fire.operation" {
            return self.operation(e, time);
        }
        let status = status_of(kind).ok_or_else(|| Unmapped::Kind(kind.to_owned()))?;
        if let Some(r) = self.rule(&e.source.device, &e.location) {
            return Ok(component(
                r.system,
                r.component_type,
                r.component_address,
                word(status, false),
                r.description,
                time,
            ));
        }
        if e.source.driver == "gb26875"
            && let Some(adu) = relayed(&e.payload, time)
        {
            return Ok(adu);
        }
        Ok(Adu::SystemStatus(vec![SystemStatus {
            system: self.default_system,
            status: word(status, true),
            time,
        }]))
    }

    fn operation(&self, e: &Routed, time: TimeLabel) -> Result<Adu, Unmapped> {
        let p = &e.payload;
        let flags = match p.get("flags").and_then(Value::as_u64) {
            Some(f) if e.source.driver == "gb26875" => u8::try_from(f).ok(),
            _ => p
                .get("action")
                .and_then(Value::as_str)
                .and_then(|a| OPERATION_ACTIONS.iter().find(|(t, _)| *t == a))
                .map(|(_, bit)| 1u8 << bit),
        }
        .ok_or(Unmapped::Operation)?;
        let system = self
            .rule(&e.source.device, &e.location)
            .map(|r| r.system)
            .or_else(|| system_in(p))
            .unwrap_or(self.default_system);
        let operator = p
            .get("operator")
            .and_then(Value::as_u64)
            .and_then(|o| u8::try_from(o).ok())
            .unwrap_or(0);
        Ok(Adu::SystemOperation(vec![SystemOperation {
            system,
            flags,
            operator,
            time,
        }]))
    }
}

fn word(status: Status, system: bool) -> u16 {
    match status {
        Status::Bit(b) => NORMAL | (1 << b),
        Status::Reset if system => NORMAL | SYSTEM_RESET,
        Status::Reset | Status::Normal => NORMAL,
    }
}

fn component(
    system: SystemRef,
    component_type: u8,
    component_address: ComponentAddress,
    status: u16,
    description: Description,
    time: TimeLabel,
) -> Adu {
    Adu::ComponentStatus(vec![ComponentStatus {
        system,
        component_type,
        component_address,
        status,
        description,
        time,
    }])
}

fn small<T: TryFrom<u64>>(p: &Value, key: &str) -> Option<T> {
    p.get(key)
        .and_then(Value::as_u64)
        .and_then(|v| T::try_from(v).ok())
}

fn system_in(p: &Value) -> Option<SystemRef> {
    Some(SystemRef {
        system_type: small(p, "system_type")?,
        system_address: small(p, "system_address")?,
    })
}

/// The 31 description bytes from their hex (`description_hex` of the receiver).
fn description_bytes(hex: &str) -> Option<Description> {
    let mut raw = [0u8; campusgw_gb26875::codec::DESCRIPTION_LEN];
    if hex.len() != 2 * raw.len() || !hex.is_ascii() {
        return None;
    }
    for (i, b) in raw.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(Description(raw))
}

/// The object a GB/T 26875 UITD's event arrived as, from its payload (the receiver's
/// `system_type`, `system_address`, `component_type`, `component_address_raw`, `status`,
/// `description_hex`, else `description`), so its ADU is the one the UITD sent.
fn relayed(p: &Value, time: TimeLabel) -> Option<Adu> {
    let system = system_in(p)?;
    let status: u16 = small(p, "status")?;
    match (
        small::<u8>(p, "component_type"),
        small::<u32>(p, "component_address_raw"),
    ) {
        (Some(ct), Some(ca)) => {
            let description = p
                .get("description_hex")
                .and_then(Value::as_str)
                .and_then(description_bytes)
                .unwrap_or_else(|| {
                    Description::new(p.get("description").and_then(Value::as_str).unwrap_or(""))
                });
            Some(component(
                system,
                ct,
                ComponentAddress(ca),
                status,
                description,
                time,
            ))
        }
        _ => Some(Adu::SystemStatus(vec![SystemStatus {
            system,
            status,
            time,
        }])),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use serde_json::json;

    fn routed(kind: &str, driver: &str, device: &str, location: &str, payload: Value) -> Routed {
        serde_json::from_value(json!({
            "kind": kind,
            "source": {"device": device, "driver": driver},
            "location": location,
            "payload": payload,
            "occurred_at": "2012-09-26T01:58:02Z",
            "received_at": "2012-09-26T01:58:03Z",
        }))
        .unwrap()
    }

    fn rule(device: Option<&str>, location: Option<&str>, addr: u16) -> ComponentRule {
        ComponentRule {
            device: device.map(|d| DeviceId::new(d).unwrap()),
            location: location.map(|l| Location::from_path(l).unwrap()),
            system: SystemRef {
                system_type: 1,
                system_address: 2,
            },
            component_type: 40,
            component_address: ComponentAddress::from_parts(10, addr),
            description: Description::new("3楼东 烟感"),
        }
    }

    const SYS: SystemRef = SystemRef {
        system_type: 1,
        system_address: 1,
    };

    #[test]
    fn a_device_rule_wins_then_the_most_specific_location() {
        let rules = [
            rule(None, Some("main/A"), 1),
            rule(None, Some("main/A/3"), 2),
            rule(Some("gym_panel"), None, 3),
        ];
        let p = Placement {
            rules: &rules,
            default_system: SYS,
        };
        let loc = Location::from_path("main/A/3").unwrap();
        let addr = |d: &str, l: &Location| {
            p.rule(&DeviceId::new(d).unwrap(), l)
                .map(|r| r.component_address.point())
        };
        assert_eq!(addr("gym_panel", &loc), Some(3));
        assert_eq!(addr("panel_a", &loc), Some(2));
        assert_eq!(
            addr("panel_a", &Location::from_path("main/A/1").unwrap()),
            Some(1)
        );
        assert_eq!(
            addr("panel_a", &Location::from_path("main/B").unwrap()),
            None
        );
    }

    #[test]
    fn a_modbus_fire_alarm_at_a_mapped_place_is_a_component_fire_with_its_time() {
        let rules = [rule(None, Some("main/A/3"), 2)];
        let p = Placement {
            rules: &rules,
            default_system: SYS,
        };
        let e = routed(
            "fire.alarm",
            "modbus_tcp",
            "panel",
            "main/A/3/east",
            json!({}),
        );
        let Adu::ComponentStatus(o) = p.adu(&e).unwrap() else {
            panic!("component status")
        };
        assert_eq!(o[0].status, 0x0003);
        assert_eq!(o[0].component_address, ComponentAddress::from_parts(10, 2));
        assert_eq!(o[0].system.system_address, 2);
        assert_eq!(o[0].time.to_bytes(), [0x02, 0x3A, 0x09, 0x1A, 0x09, 0x0C]);
        let e = routed("fire.reset", "modbus_tcp", "panel", "main/A/3", json!({}));
        let Adu::ComponentStatus(o) = p.adu(&e).unwrap() else {
            panic!("component status")
        };
        assert_eq!(o[0].status, 0x0001, "returned to normal");
    }

    #[test]
    fn an_unplaced_dc09_fire_code_is_a_system_status_of_the_default_system() {
        let p = Placement {
            rules: &[],
            default_system: SYS,
        };
        let e = routed("fire.alarm", "dc09", "guard", "main", json!({"code": 110}));
        assert_eq!(
            p.adu(&e).unwrap(),
            Adu::SystemStatus(vec![SystemStatus {
                system: SYS,
                status: 0x0003,
                time: TimeLabel::from_bytes([0x02, 0x3A, 0x09, 0x1A, 0x09, 0x0C]),
            }])
        );
        let e = routed("fire.reset", "dc09", "guard", "main", json!({}));
        let Adu::SystemStatus(o) = p.adu(&e).unwrap() else {
            panic!("system status")
        };
        assert_eq!(o[0].status, 0x2001);
        for k in ["fire.alarm.restore", "fire.fault_cleared"] {
            let e = routed(k, "dc09", "guard", "main", json!({}));
            let Adu::SystemStatus(o) = p.adu(&e).unwrap() else {
                panic!("system status")
            };
            assert_eq!(o[0].status, 0x0001, "{k}");
        }
    }

    #[test]
    fn a_uitd_event_keeps_its_system_component_and_status_word() {
        let p = Placement {
            rules: &[],
            default_system: SYS,
        };
        let payload = json!({"system_type": 1, "system_address": 1, "component_type": 40,
            "component_address_raw": 0x0002_000A_u32, "status": 2, "description": "3楼东"});
        let e = routed("fire.alarm", "gb26875", "uitd", "main", payload);
        let Adu::ComponentStatus(o) = p.adu(&e).unwrap() else {
            panic!("component status")
        };
        assert_eq!(o[0].status, 0x0002, "the word as the UITD sent it");
        assert_eq!(o[0].component_address, ComponentAddress::from_parts(10, 2));
        assert_eq!(o[0].description.text(), "3楼东");
    }

    #[test]
    fn operations_carry_their_flag_and_other_kinds_are_unmapped() {
        let p = Placement {
            rules: &[],
            default_system: SYS,
        };
        let e = routed(
            "fire.operation",
            "modbus_tcp",
            "panel",
            "main",
            json!({"action": "silence", "operator": 3}),
        );
        let Adu::SystemOperation(o) = p.adu(&e).unwrap() else {
            panic!("operation")
        };
        assert_eq!((o[0].flags, o[0].operator), (0x02, 3));
        let e = routed("fire.operation", "modbus_tcp", "panel", "main", json!({}));
        assert_eq!(p.adu(&e), Err(Unmapped::Operation));
        let e = routed("fire.analog", "gb26875", "uitd", "main", json!({}));
        assert!(matches!(p.adu(&e), Err(Unmapped::Kind(_))));
    }
}
