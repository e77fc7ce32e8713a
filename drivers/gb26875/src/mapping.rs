//! Upload ADUs → campusgw events. Pure: the caller passes the UITD's profile and the one
//! piece of state the rules need (whether the UITD's last status was abnormal).
//!
//! | ADU type | condition | kind | class |
//! |---|---|---|---|
//! | 1, 2 | bit 1 fire (火警) | `fire.alarm` | life_safety |
//! | 1, 2 | bit 2 fault; type 1 bit 10 bus fault | `fire.fault` | security |
//! | 1, 2 | bit 3 disabled (屏蔽) | `fire.disabled` | security |
//! | 1, 2 | bit 4 supervisory (监管) | `fire.supervisory` | security |
//! | 1, 2 | bit 5 started (启动) | `fire.started` | operations |
//! | 1, 2 | bit 6 feedback (反馈) | `fire.feedback` | operations |
//! | 1, 2 | type 2 bit 8 power; type 1 bits 8/9 main/backup power | `fire.power_fault` | security |
//! | 1 | bit 12 configuration changed | `fire.config_changed` | operations |
//! | 1 | bit 13 reset (复位) | `fire.reset` | life_safety |
//! | 1, 2 | none of the bits above set: a return to normal | `fire.reset` | life_safety |
//! | 3 | analog value | `fire.analog` | telemetry |
//! | 4, 24 | each operation flag set (reset, silence, manual alarm, self-test, ...) | `fire.operation` | operations |
//! | 5, 25 | software version | `fire.version` | operations |
//! | 6, 26 | configuration text | `fire.config` | operations |
//! | 7 | component configuration | `fire.component_config` | operations |
//! | 8, 28 | device clock | `fire.clock` | operations |
//! | 21 | bit 1 fire | `fire.alarm` | life_safety |
//! | 21 | bits 2 fault, 5 link fault, 6 monitored-line fault | `fire.uitd_fault` | security |
//! | 21 | bits 3 / 4 main / backup power fault | `fire.uitd_power_fault` | security |
//! | 21 | normal, and the previous status from this UITD was abnormal | `fire.uitd_status` | operations |
//! | 21 | normal otherwise (a heartbeat) | no event, activity only | |
//! | other | reserved, user-defined or request types | `fire.raw_data` | operations |
//!
//! One event per set bit, so an object with fire and fault gives two events. `fire.reset`
//! is life_safety, not operations, because uplinks send a higher class first: a reset in a
//! lower class could overtake the alarm it clears. The "return to normal" rule is stateless:
//! UITDs upload component status on change, so a status word with no abnormal bit means the
//! component recovered. Bit 0 (1 = normal, 0 = test) is reported in the payload only: the
//! vendor vectors send fire with bit 0 clear.
//!
//! # Duplicates (`origin_ref`, ADR 0003)
//! A UITD retransmits an upload it saw no confirm for, also after a reconnect, and many
//! restart their 16-bit serial on every connection or reboot (it also wraps), so the serial
//! says nothing about which message a frame is. The key is the message's content instead:
//! `{uitd}:{digest}:{object index}:{condition}`, where `digest` is the first 16 bytes of the
//! SHA-256 of the ADU bytes (type flag, count and every object with its own time label), in
//! hex. A retransmission, renumbered or restamped (the frame's own time label is not part of
//! the ADU), has the same key; a different alarm, whose object or time label differs, never
//! does. The journal takes a repeat of the key within its window (default 10 minutes) for a
//! retransmission ([`Dedup::Window`](campusgw_sdk::Dedup)).
//!
//! When an object's time label cannot tell two occurrences apart (zero, invalid or before
//! 2010: a UITD whose clock was never set, or objects without a time label) the same content
//! may be a new alarm (fire, reset, fire again at one detector), so the key also carries the
//! connection's random link id and the frame serial:
//! `{uitd}:{digest}:{object index}:{condition}:{link}:{serial}`. Retransmissions on the same
//! connection are still recognised; one renumbered after a reconnect is stored a second time.
//! The wire holds nothing that tells such a retransmission from a new alarm, and a duplicate
//! (which downstream can see by content) is preferred to a lost alarm.

use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::codec::names::{self, Bit};
use crate::codec::{Address, Adu, ComponentAddress, Frame, SystemRef, TimeLabel};

/// Event kinds this driver emits.
pub mod kinds {
    use campusgw_sdk::Kind;
    /// Fire alarm (火警).
    pub const ALARM: Kind = Kind::from_static("fire.alarm");
    /// Fault (故障).
    pub const FAULT: Kind = Kind::from_static("fire.fault");
    /// Disabled / masked (屏蔽).
    pub const DISABLED: Kind = Kind::from_static("fire.disabled");
    /// Supervisory (监管).
    pub const SUPERVISORY: Kind = Kind::from_static("fire.supervisory");
    /// Linkage started (启动).
    pub const STARTED: Kind = Kind::from_static("fire.started");
    /// Linkage feedback (反馈).
    pub const FEEDBACK: Kind = Kind::from_static("fire.feedback");
    /// Power fault (电源故障).
    pub const POWER_FAULT: Kind = Kind::from_static("fire.power_fault");
    /// Reset or return to normal (复位).
    pub const RESET: Kind = Kind::from_static("fire.reset");
    /// Configuration changed (配置改变).
    pub const CONFIG_CHANGED: Kind = Kind::from_static("fire.config_changed");
    /// Analog value (模拟量).
    pub const ANALOG: Kind = Kind::from_static("fire.analog");
    /// Operator action (操作信息).
    pub const OPERATION: Kind = Kind::from_static("fire.operation");
    /// Software version (软件版本).
    pub const VERSION: Kind = Kind::from_static("fire.version");
    /// Configuration text (配置情况).
    pub const CONFIG: Kind = Kind::from_static("fire.config");
    /// Component configuration (部件配置情况).
    pub const COMPONENT_CONFIG: Kind = Kind::from_static("fire.component_config");
    /// Device clock (系统时间).
    pub const CLOCK: Kind = Kind::from_static("fire.clock");
    /// UITD back to normal.
    pub const UITD_STATUS: Kind = Kind::from_static("fire.uitd_status");
    /// UITD fault (装置故障, link or line fault).
    pub const UITD_FAULT: Kind = Kind::from_static("fire.uitd_fault");
    /// UITD power fault.
    pub const UITD_POWER_FAULT: Kind = Kind::from_static("fire.uitd_power_fault");
    /// Data of a type campusgw does not interpret, kept raw.
    pub const RAW_DATA: Kind = Kind::from_static("fire.raw_data");
}

/// Where a component is, from the config's `[[uitd.components]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentPlace {
    /// Only for this system address; `None` for any.
    pub system_address: Option<u8>,
    /// The component.
    pub address: ComponentAddress,
    /// Its location.
    pub location: Location,
}

/// What the mapping knows about one UITD.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UitdProfile {
    /// The sub-device its events are attributed to; `None` = the listener's device.
    pub device: Option<DeviceId>,
    /// Its location; `None` = the listener's.
    pub location: Option<Location>,
    /// Component locations.
    pub components: Vec<ComponentPlace>,
}

impl UitdProfile {
    fn place(&self, system: SystemRef, address: ComponentAddress) -> Option<Location> {
        self.components
            .iter()
            .find(|c| {
                c.address == address && c.system_address.is_none_or(|a| a == system.system_address)
            })
            .map(|c| c.location.clone())
            .or_else(|| self.location.clone())
    }
}

/// UITD status bits meaning something is wrong (b1-b6).
pub const UITD_ABNORMAL_MASK: u8 = 0b0111_1110;

/// The events for one upload frame.
pub fn events_for(
    frame: &Frame,
    adu: &Adu,
    profile: &UitdProfile,
    uitd_was_abnormal: bool,
    link: LinkId,
) -> Vec<NewEvent> {
    let m = Mapper {
        frame,
        profile,
        link,
        digest: digest(&frame.data),
    };
    match adu {
        Adu::SystemStatus(objs) => objs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                m.status(
                    i,
                    o.time,
                    o.status,
                    system_json(o.system),
                    SYSTEM_EVENTS,
                    o.system,
                    None,
                )
            })
            .collect(),
        Adu::ComponentStatus(objs) => objs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                let mut p = system_json(o.system);
                p.extend(component_json(o.component_type, o.component_address));
                p.insert("description".into(), json!(o.description.text()));
                // The 31 bytes as sent, so an uplink can relay the object unchanged.
                p.insert("description_hex".into(), json!(hex(&o.description.0)));
                m.status(
                    i,
                    o.time,
                    o.status,
                    p,
                    COMPONENT_EVENTS,
                    o.system,
                    Some(o.component_address),
                )
            })
            .collect(),
        Adu::ComponentAnalog(objs) => objs
            .iter()
            .enumerate()
            .map(|(i, o)| m.analog(i, o))
            .collect(),
        Adu::SystemOperation(objs) => objs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                let mut p = system_json(o.system);
                p.insert("operator".into(), json!(o.operator));
                m.operations(i, o.time, o.flags, names::OPERATION_BITS, p)
            })
            .collect(),
        Adu::UitdOperation(objs) => objs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| {
                let mut p = serde_json::Map::new();
                p.insert("operator".into(), json!(o.operator));
                m.operations(i, o.time, o.flags, names::UITD_OPERATION_BITS, p)
            })
            .collect(),
        Adu::UitdStatus(objs) => objs
            .iter()
            .enumerate()
            .flat_map(|(i, o)| m.uitd_status(i, o.time, o.status, uitd_was_abnormal))
            .collect(),
        _ => m.plain(adu),
    }
}

/// The events a frame would give for an unconfigured UITD (for `campusgw decode`).
pub fn preview(frame: &Frame, adu: &Adu) -> Vec<NewEvent> {
    events_for(frame, adu, &UitdProfile::default(), false, LinkId(0))
}

/// Lowercase hex of `b`.
fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(2 * b.len()), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

/// The first 16 bytes of the SHA-256 of the ADU, in hex.
fn digest(adu: &[u8]) -> String {
    use std::fmt::Write;
    let hash = Sha256::digest(adu);
    hash.iter()
        .take(16)
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

type EventBit = (u8, &'static str, Kind, Class);

const SYSTEM_EVENTS: &[EventBit] = &[
    (1, "fire", kinds::ALARM, Class::LifeSafety),
    (2, "fault", kinds::FAULT, Class::Security),
    (3, "disabled", kinds::DISABLED, Class::Security),
    (4, "supervisory", kinds::SUPERVISORY, Class::Security),
    (5, "started", kinds::STARTED, Class::Operations),
    (6, "feedback", kinds::FEEDBACK, Class::Operations),
    (8, "main_power_fault", kinds::POWER_FAULT, Class::Security),
    (9, "backup_power_fault", kinds::POWER_FAULT, Class::Security),
    (10, "bus_fault", kinds::FAULT, Class::Security),
    (
        12,
        "config_changed",
        kinds::CONFIG_CHANGED,
        Class::Operations,
    ),
    (13, "reset", kinds::RESET, Class::LifeSafety),
];

const COMPONENT_EVENTS: &[EventBit] = &[
    (1, "fire", kinds::ALARM, Class::LifeSafety),
    (2, "fault", kinds::FAULT, Class::Security),
    (3, "disabled", kinds::DISABLED, Class::Security),
    (4, "supervisory", kinds::SUPERVISORY, Class::Security),
    (5, "started", kinds::STARTED, Class::Operations),
    (6, "feedback", kinds::FEEDBACK, Class::Operations),
    (8, "power_fault", kinds::POWER_FAULT, Class::Security),
];

const UITD_EVENTS: &[EventBit] = &[
    (1, "fire", kinds::ALARM, Class::LifeSafety),
    (2, "fault", kinds::UITD_FAULT, Class::Security),
    (
        3,
        "main_power_fault",
        kinds::UITD_POWER_FAULT,
        Class::Security,
    ),
    (
        4,
        "backup_power_fault",
        kinds::UITD_POWER_FAULT,
        Class::Security,
    ),
    (5, "link_fault", kinds::UITD_FAULT, Class::Security),
    (6, "line_fault", kinds::UITD_FAULT, Class::Security),
];

type Obj = serde_json::Map<String, Value>;

fn system_json(s: SystemRef) -> Obj {
    let (en, zh) = names::system_type(s.system_type);
    let v = json!({
        "system_type": s.system_type,
        "system_type_name": en,
        "system_type_name_zh": zh,
        "system_address": s.system_address,
    });
    v.as_object().cloned().unwrap_or_default()
}

fn component_json(component_type: u8, address: ComponentAddress) -> Obj {
    let (en, zh) = names::component_type(component_type);
    let v = json!({
        "component_type": component_type,
        "component_type_name": en,
        "component_type_name_zh": zh,
        "component_address": address.to_string(),
        "component_address_raw": address.0,
        "component_zone": address.zone(),
        "component_point": address.point(),
    });
    v.as_object().cloned().unwrap_or_default()
}

fn bit_names(table: &[Bit], tag: &str) -> (&'static str, &'static str) {
    table
        .iter()
        .find(|(_, t, ..)| *t == tag)
        .map_or(("returned to normal", "恢复正常"), |(_, _, en, zh)| {
            (*en, *zh)
        })
}

/// The connection a frame arrived on: a random id per connection, part of the key of frames
/// whose content alone cannot identify them (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkId(pub u64);

impl LinkId {
    /// A fresh random id for a new connection.
    pub fn random() -> LinkId {
        LinkId(rand::random())
    }
}

/// Object time labels from before this year (two digits after 2000) are taken for an unset
/// clock: they cannot tell two occurrences of the same content apart.
const FIRST_PLAUSIBLE_YEAR: u8 = 10;

struct Mapper<'a> {
    frame: &'a Frame,
    profile: &'a UitdProfile,
    link: LinkId,
    digest: String,
}

impl Mapper<'_> {
    fn uitd(&self) -> Address {
        self.frame.source
    }

    /// The message key of one event (module doc, "Duplicates").
    fn key(&self, index: usize, tag: &str, time: Option<TimeLabel>) -> String {
        let clock_set =
            time.is_some_and(|t| t.year >= FIRST_PLAUSIBLE_YEAR && TimeLabel::to_utc(t).is_some());
        let base = format!("{}:{}:{index}:{tag}", self.uitd(), self.digest);
        if clock_set {
            base
        } else {
            format!("{base}:{:016x}:{}", self.link.0, self.frame.serial)
        }
    }

    /// One event with the common payload and origin ref.
    fn event(
        &self,
        kind: Kind,
        class: Class,
        index: usize,
        time: Option<TimeLabel>,
        tag: &str,
        mut payload: Obj,
    ) -> NewEvent {
        payload.insert("uitd_address".into(), json!(self.uitd().value()));
        payload.insert("serial".into(), json!(self.frame.serial));
        payload.insert("frame_time".into(), json!(self.frame.time));
        if let Some(time) = time {
            payload.insert("device_time".into(), json!(time));
        }
        let mut e = NewEvent::new(kind, class)
            .payload(Value::Object(payload))
            .origin_ref(self.key(index, tag, time));
        if let Some(at) = time.and_then(TimeLabel::to_utc) {
            e = e.occurred_at(at);
        }
        if let Some(d) = &self.profile.device {
            e = e.device(d.clone());
        }
        if let Some(l) = &self.profile.location {
            e = e.location(l.clone());
        }
        e
    }

    #[allow(clippy::too_many_arguments)] // the status word and where it belongs
    fn status(
        &self,
        index: usize,
        time: TimeLabel,
        word: u16,
        base: Obj,
        table: &[EventBit],
        system: SystemRef,
        comp: Option<ComponentAddress>,
    ) -> Vec<NewEvent> {
        let bits = if comp.is_some() {
            names::COMPONENT_STATUS_BITS
        } else {
            names::SYSTEM_STATUS_BITS
        };
        let mut base = base;
        base.insert("status".into(), json!(word));
        base.insert("status_flags".into(), json!(names::set_bits(bits, word)));
        base.insert("normal_operation".into(), json!(word & 1 != 0));
        let set: Vec<&EventBit> = table
            .iter()
            .filter(|(b, ..)| word & (1 << b) != 0)
            .collect();
        let conditions: Vec<(&str, Kind, Class)> = if set.is_empty() {
            vec![("normal", kinds::RESET, Class::LifeSafety)]
        } else {
            set.iter()
                .map(|(_, tag, k, c)| (*tag, k.clone(), *c))
                .collect()
        };
        let location = comp.and_then(|a| self.profile.place(system, a));
        conditions
            .into_iter()
            .map(|(tag, kind, class)| {
                let (en, zh) = bit_names(bits, tag);
                let mut p = base.clone();
                p.insert("condition".into(), json!(tag));
                p.insert("condition_name".into(), json!(en));
                p.insert("condition_name_zh".into(), json!(zh));
                let mut e = self.event(kind, class, index, Some(time), tag, p);
                if let Some(l) = &location {
                    e = e.location(l.clone());
                }
                e
            })
            .collect()
    }

    fn analog(&self, index: usize, o: &crate::codec::AnalogValue) -> NewEvent {
        let ((en, zh), step, unit) = names::analog_type(o.analog_type);
        let mut p = system_json(o.system);
        p.extend(component_json(o.component_type, o.component_address));
        p.insert("analog_type".into(), json!(o.analog_type));
        p.insert("analog_type_name".into(), json!(en));
        p.insert("analog_type_name_zh".into(), json!(zh));
        p.insert("raw_value".into(), json!(o.value));
        p.insert("value".into(), json!(f64::from(o.value) * step));
        p.insert("unit".into(), json!(unit));
        let mut e = self.event(
            kinds::ANALOG,
            Class::Telemetry,
            index,
            Some(o.time),
            "analog",
            p,
        );
        if let Some(l) = self.profile.place(o.system, o.component_address) {
            e = e.location(l);
        }
        e
    }

    fn operations(
        &self,
        index: usize,
        time: TimeLabel,
        flags: u8,
        table: &[Bit],
        base: Obj,
    ) -> Vec<NewEvent> {
        let mut set = names::set_bits(table, u16::from(flags));
        if set.is_empty() {
            set.push("none");
        }
        set.into_iter()
            .map(|tag| {
                let (en, zh) = table
                    .iter()
                    .find(|(_, t, ..)| *t == tag)
                    .map_or(("none", "无"), |(_, _, en, zh)| (*en, *zh));
                let mut p = base.clone();
                p.insert("flags".into(), json!(flags));
                p.insert("action".into(), json!(tag));
                p.insert("action_name".into(), json!(en));
                p.insert("action_name_zh".into(), json!(zh));
                self.event(
                    kinds::OPERATION,
                    Class::Operations,
                    index,
                    Some(time),
                    tag,
                    p,
                )
            })
            .collect()
    }

    fn uitd_status(
        &self,
        index: usize,
        time: TimeLabel,
        status: u8,
        was_abnormal: bool,
    ) -> Vec<NewEvent> {
        let mut base = Obj::new();
        base.insert("status".into(), json!(status));
        base.insert(
            "status_flags".into(),
            json!(names::set_bits(names::UITD_STATUS_BITS, u16::from(status))),
        );
        let set: Vec<&EventBit> = UITD_EVENTS
            .iter()
            .filter(|(b, ..)| status & (1 << b) != 0)
            .collect();
        if set.is_empty() {
            if !was_abnormal {
                return Vec::new();
            }
            let mut p = base;
            p.insert("condition".into(), json!("normal"));
            return vec![self.event(
                kinds::UITD_STATUS,
                Class::Operations,
                index,
                Some(time),
                "normal",
                p,
            )];
        }
        set.into_iter()
            .map(|(_, tag, kind, class)| {
                let (en, zh) = bit_names(names::UITD_STATUS_BITS, tag);
                let mut p = base.clone();
                p.insert("condition".into(), json!(tag));
                p.insert("condition_name".into(), json!(en));
                p.insert("condition_name_zh".into(), json!(zh));
                self.event(kind.clone(), *class, index, Some(time), tag, p)
            })
            .collect()
    }

    /// Version, configuration, clock and uninterpreted data: one event per ADU.
    fn plain(&self, adu: &Adu) -> Vec<NewEvent> {
        let kind = match adu {
            Adu::SystemVersion(_) | Adu::UitdVersion(_) => kinds::VERSION,
            Adu::SystemConfig(_) | Adu::UitdConfig(_) => kinds::CONFIG,
            Adu::ComponentConfig(_) => kinds::COMPONENT_CONFIG,
            Adu::SystemTime(_) | Adu::UitdTime(_) => kinds::CLOCK,
            _ => kinds::RAW_DATA,
        };
        let mut p = Obj::new();
        p.insert("type_flag".into(), json!(adu.type_flag()));
        p.insert(
            "data".into(),
            serde_json::to_value(adu).unwrap_or(Value::Null),
        );
        let tag = format!("t{}", adu.type_flag());
        vec![self.event(kind, Class::Operations, 0, None, &tag, p)]
    }
}

#[cfg(test)]
mod tests;
