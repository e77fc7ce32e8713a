//! alertStream parts → [`Alert`] (pure) → campusgw events ([`map`]).
//!
//! A part is XML (`EventNotificationAlert`) or JSON with the same field names. XML is read
//! with quick-xml, which never expands entities; a part with a `DOCTYPE` is refused outright
//! (no internal subset, so no entity bomb can even be declared), and only the five predefined
//! entities and character references are resolved. Depth is capped at [`MAX_DEPTH`]; size is
//! capped by the multipart splitter before a part gets here.
//!
//! # Mapping (`majorEventType` / `subEventType`)
//! Codes are Hikvision's `MAJOR_EVENT` (5) minor types as published in Hikvision's HEOP demo
//! (`EventType.kt`, Apache-2.0, github.com/DeveloperLinus/HEOP_DEMO_V3.1.0_personSource);
//! 5/1 (valid card) and 5/75 (face passed) agree with the ISAPI guide (PROTOCOLS §4); the
//! major types (1 alarm, 2 exception, 3 operation, 5 event) and the tamper codes are from
//! Hikvision's NET_DVR_ACS_ALARM_INFO macro definitions.
//!
//! | major/minor | kind | class |
//! |---|---|---|
//! | 5 / any "verify pass" code (0x01, 0x02, 0x26, 0x4b, 0x9c, ...) | `access.granted` | business |
//! | 5 / any "verify fail", "no right", "invalid card", expired (0x03-0x09, 0x27, 0x4c, ...) | `access.denied` | business |
//! | 5 / 0x19 door open (contact) | `door.opened` | business |
//! | 5 / 0x1a door closed (contact) | `door.closed` | business |
//! | 5 / 0x1b door open abnormal | `door.forced` | security |
//! | 5 / 0x1c door open timeout | `door.held_open` | security |
//! | 1 / 0x404, 0x406 (host / card-reader tamper alarm) | `device.tamper` | security |
//! | 2 / any (exception: network, power, reader offline) | `device.fault` | operations |
//! | `videoloss` inactive, `heartBeat` | heartbeat: online, no event | — |
//!
//! Anything else is ignored (counted). Direction: odd `cardReaderNo` is the entry reader, even
//! the exit reader (Hikvision's reader numbering per door: 2n-1 in, 2n out), unless the part
//! says `attendanceStatus` `checkIn` / `checkOut`.
//!
//! # origin_ref
//! `acs:<serialNo>:<dateTime>`. The serial alone restarts at 1 when the controller reboots,
//! so it would make a new event look like an old one; the device's event time changes with
//! every event, so (serial, time) names one message even across reboots. The journal's window
//! (`Dedup::Window`) bounds the rest: a device whose clock was reset to the same second and
//! serial within the window is the one case left, and it would need both to collide.

use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};
use chrono::{DateTime, Utc};
use quick_xml::events::Event as Xml;
use serde_json::{Value, json};

use crate::multipart::Part;

/// Deepest XML nesting accepted.
pub const MAX_DEPTH: usize = 16;

/// An alert, with the fields campusgw uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alert {
    /// `eventType` (`AccessControllerEvent`, `videoloss`, `heartBeat`, ...).
    pub event_type: String,
    /// `eventState` (`active` / `inactive`).
    pub event_state: String,
    /// `dateTime`, as sent (ISO 8601 with offset).
    pub date_time: String,
    /// `majorEventType`.
    pub major: Option<u32>,
    /// `subEventType`.
    pub minor: Option<u32>,
    /// `employeeNoString` (or `employeeNo`): the person id.
    pub employee_no: Option<String>,
    /// `cardNo`.
    pub card_no: Option<String>,
    /// `currentVerifyMode`.
    pub verify_mode: Option<String>,
    /// `doorNo`.
    pub door_no: Option<u32>,
    /// `cardReaderNo`.
    pub reader_no: Option<u32>,
    /// `serialNo`.
    pub serial_no: Option<u64>,
    /// `attendanceStatus`.
    pub attendance: Option<String>,
}

/// Why a part could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    /// A DOCTYPE (where entity bombs live).
    #[error("xml part carries a DOCTYPE (refused: entity declarations)")]
    Doctype,
    /// An entity other than the five predefined ones.
    #[error("xml part uses an undeclared entity &{0};")]
    Entity(String),
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("xml part nests deeper than {MAX_DEPTH}")]
    TooDeep,
    /// Not well-formed XML.
    #[error("malformed xml: {0}")]
    Xml(String),
    /// Not JSON.
    #[error("malformed json: {0}")]
    Json(String),
    /// Neither XML nor JSON.
    #[error("unexpected part type {0:?}")]
    ContentType(String),
    /// Well-formed but no `eventType`.
    #[error("part has no eventType")]
    NoEventType,
}

impl AlertError {
    /// The metric label.
    pub fn as_str(&self) -> &'static str {
        match self {
            AlertError::Doctype => "doctype",
            AlertError::Entity(_) => "entity",
            AlertError::TooDeep => "too_deep",
            AlertError::Xml(_) => "malformed_xml",
            AlertError::Json(_) => "malformed_json",
            AlertError::ContentType(_) => "content_type",
            AlertError::NoEventType => "no_event_type",
        }
    }
}

/// Parses one part by its content type (bodies that start with `<` or `{` are sniffed when
/// the type is missing).
///
/// # Errors
/// [`AlertError`].
pub fn parse_part(part: &Part) -> Result<Alert, AlertError> {
    let first = part.body.iter().find(|b| !b.is_ascii_whitespace());
    let ct = part.content_type.as_str();
    let alert = if ct.ends_with("xml") || (ct.is_empty() && first == Some(&b'<')) {
        parse_xml(&part.body)?
    } else if ct.ends_with("json") || (ct.is_empty() && first == Some(&b'{')) {
        parse_json(&part.body)?
    } else {
        return Err(AlertError::ContentType(ct.into()));
    };
    if alert.event_type.is_empty() {
        return Err(AlertError::NoEventType);
    }
    Ok(alert)
}

impl Alert {
    fn set(&mut self, key: &str, v: String) {
        let num = |s: &str| s.trim().parse().ok();
        match key {
            "eventType" => self.event_type = v,
            "eventState" => self.event_state = v,
            "dateTime" => self.date_time = v,
            "majorEventType" => self.major = num(&v),
            "subEventType" => self.minor = num(&v),
            "employeeNoString" => self.employee_no = Some(v),
            "employeeNo" if self.employee_no.is_none() => self.employee_no = Some(v),
            "cardNo" => self.card_no = Some(v),
            "currentVerifyMode" => self.verify_mode = Some(v),
            "doorNo" => self.door_no = num(&v),
            "cardReaderNo" => self.reader_no = num(&v),
            "serialNo" => self.serial_no = v.trim().parse().ok(),
            "attendanceStatus" => self.attendance = Some(v),
            _ => {}
        }
    }
}

fn parse_xml(body: &[u8]) -> Result<Alert, AlertError> {
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut alert = Alert::default();
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event() {
            Ok(Xml::DocType(_)) => return Err(AlertError::Doctype),
            Ok(Xml::Start(e)) => {
                if path.len() >= MAX_DEPTH {
                    return Err(AlertError::TooDeep);
                }
                path.push(String::from_utf8_lossy(e.local_name().as_ref()).into_owned());
                text.clear();
            }
            Ok(Xml::Text(t)) => {
                let s = t.decode().map_err(|e| AlertError::Xml(e.to_string()))?;
                text.push_str(&s);
            }
            Ok(Xml::CData(t)) => text.push_str(&String::from_utf8_lossy(&t)),
            Ok(Xml::GeneralRef(r)) => {
                if let Some(c) = r
                    .resolve_char_ref()
                    .map_err(|e| AlertError::Xml(e.to_string()))?
                {
                    text.push(c);
                } else {
                    let name = String::from_utf8_lossy(&r).into_owned();
                    let v = quick_xml::escape::resolve_predefined_entity(&name)
                        .ok_or(AlertError::Entity(name))?;
                    text.push_str(v);
                }
            }
            Ok(Xml::End(_)) => {
                if let Some(name) = path.pop() {
                    alert.set(&name, std::mem::take(&mut text).trim().to_owned());
                }
            }
            Ok(Xml::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(AlertError::Xml(e.to_string())),
        }
    }
    if !path.is_empty() {
        return Err(AlertError::Xml("unclosed element".into()));
    }
    Ok(alert)
}

fn parse_json(body: &[u8]) -> Result<Alert, AlertError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| AlertError::Json(e.to_string()))?;
    let mut alert = Alert::default();
    let mut visit = |obj: &serde_json::Map<String, Value>| {
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            alert.set(k, s);
        }
    };
    let Value::Object(top) = &v else {
        return Err(AlertError::Json("not an object".into()));
    };
    visit(top);
    if let Some(Value::Object(inner)) = top.get("AccessControllerEvent") {
        visit(inner);
    }
    Ok(alert)
}

/// A door of the controller, as configured.
#[derive(Debug, Clone)]
pub struct DoorPlace {
    /// Its door number on the controller.
    pub n: u32,
    /// Its device id.
    pub device: DeviceId,
    /// Its location.
    pub location: Location,
    /// `campus` or `building:<name>` when the door is a presence boundary.
    pub boundary: Option<String>,
    /// Fixed direction of a one-way boundary.
    pub direction: Option<String>,
}

/// What an alert means for campusgw.
#[derive(Debug, Clone, PartialEq)]
pub enum Mapped {
    /// The device is alive; nothing to journal.
    Heartbeat,
    /// An event to journal.
    Event(Box<NewEvent>),
    /// Nothing campusgw maps (counted by the caller).
    Ignored,
}

/// MAJOR_EVENT minor types meaning "verified, passage granted" (EventType.kt).
const GRANTED: &[u32] = &[
    0x01, 0x02, 0x10, 0x26, 0x28, 0x2b, 0x2e, 0x36, 0x39, 0x3c, 0x3f, 0x42, 0x45, 0x48, 0x4b, 0x4d,
    0x65, 0x69, 0x99, 0x9c, 0x9e, 0x9f, 0xb5,
];
/// MAJOR_EVENT minor types meaning "verification failed or not allowed" (EventType.kt).
const DENIED: &[u32] = &[
    0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0c, 0x0d, 0x0e, 0x0f, 0x27, 0x29, 0x2a, 0x2c,
    0x2d, 0x2f, 0x30, 0x31, 0x37, 0x38, 0x3a, 0x3b, 0x3d, 0x3e, 0x40, 0x41, 0x43, 0x44, 0x46, 0x47,
    0x49, 0x4a, 0x4c, 0x4e, 0x4f, 0x50, 0x66, 0x67, 0x68, 0x70, 0x71, 0x75, 0x94, 0x96, 0x97, 0x98,
    0x9a, 0x9b, 0x9d, 0xa0, 0xa1, 0xa2, 0xa3, 0xa4, 0xc3,
];
/// ISAPI major types.
const MAJOR_ALARM: u32 = 1;
const MAJOR_EXCEPTION: u32 = 2;
const MAJOR_EVENT: u32 = 5;
/// `MINOR_HOST_DESMANTLE_ALARM` and `MINOR_CARD_READER_DESMANTLE_ALARM` (防拆), from
/// Hikvision's NET_DVR_ACS_ALARM_INFO macro list (open.hikvision.com); 0x405 and 0x407 are
/// their restores.
const TAMPER: &[u32] = &[0x404, 0x406];

fn kind_of(major: u32, minor: u32) -> Option<(&'static str, Class)> {
    Some(match (major, minor) {
        (MAJOR_EVENT, m) if GRANTED.contains(&m) => ("access.granted", Class::Business),
        (MAJOR_EVENT, m) if DENIED.contains(&m) => ("access.denied", Class::Business),
        (MAJOR_EVENT, 0x19) => ("door.opened", Class::Business),
        (MAJOR_EVENT, 0x1a) => ("door.closed", Class::Business),
        (MAJOR_EVENT, 0x1b) => ("door.forced", Class::Security),
        (MAJOR_EVENT, 0x1c) => ("door.held_open", Class::Security),
        (MAJOR_ALARM, m) if TAMPER.contains(&m) => ("device.tamper", Class::Security),
        (MAJOR_EXCEPTION, _) => ("device.fault", Class::Operations),
        _ => return None,
    })
}

fn direction(a: &Alert) -> Option<&'static str> {
    match a.attendance.as_deref() {
        Some("checkIn" | "breakIn" | "overtimeIn") => return Some("in"),
        Some("checkOut" | "breakOut" | "overtimeOut") => return Some("out"),
        _ => {}
    }
    a.reader_no
        .filter(|n| *n > 0)
        .map(|n| if n % 2 == 1 { "in" } else { "out" })
}

/// Maps an alert to an event for the door it names (or the controller itself).
pub fn map(a: &Alert, doors: &[DoorPlace]) -> Mapped {
    let et = a.event_type.as_str();
    if et.eq_ignore_ascii_case("heartBeat")
        || (et.eq_ignore_ascii_case("videoloss") && a.event_state == "inactive")
    {
        return Mapped::Heartbeat;
    }
    let (Some(major), Some(minor)) = (a.major, a.minor) else {
        return Mapped::Ignored;
    };
    let Some((kind, class)) = kind_of(major, minor) else {
        return Mapped::Ignored;
    };
    let door = a.door_no.and_then(|n| doors.iter().find(|d| d.n == n));
    let payload = json!({
        "person_id": a.employee_no,
        "card_no": a.card_no,
        "verify_mode": a.verify_mode,
        "door": a.door_no,
        "reader": a.reader_no,
        "direction": door
            .and_then(|d| d.direction.clone())
            .or_else(|| direction(a).map(str::to_owned)),
        "boundary": door.and_then(|d| d.boundary.clone()),
        "major": major,
        "minor": minor,
        "serial_no": a.serial_no,
    });
    let mut ev = NewEvent::new(Kind::from_static(kind), class).payload(payload);
    if let Ok(t) = DateTime::parse_from_rfc3339(&a.date_time) {
        ev = ev.occurred_at(t.with_timezone(&Utc));
    }
    let origin = match a.serial_no {
        Some(s) => format!("acs:{s}:{}", a.date_time),
        None => format!("acs:-:{}:{major}:{minor}:{:?}", a.date_time, a.door_no),
    };
    ev = ev.origin_ref(origin);
    if let Some(d) = door {
        ev = ev.device(d.device.clone()).location(d.location.clone());
    }
    Mapped::Event(Box::new(ev))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn xml(body: &str) -> Part {
        Part {
            content_type: "application/xml".into(),
            body: Bytes::from(body.to_owned()),
        }
    }

    const GRANT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<EventNotificationAlert version="2.0" xmlns="http://www.isapi.org/ver20/XMLSchema">
<ipAddress>10.0.0.9</ipAddress><dateTime>2026-12-02T10:00:00+08:00</dateTime>
<eventType>AccessControllerEvent</eventType><eventState>active</eventState>
<AccessControllerEvent><majorEventType>5</majorEventType><subEventType>1</subEventType>
<cardNo>123&amp;4</cardNo><employeeNoString>S1001</employeeNoString><doorNo>2</doorNo>
<cardReaderNo>4</cardReaderNo><currentVerifyMode>cardOrFace</currentVerifyMode>
<serialNo>42</serialNo></AccessControllerEvent></EventNotificationAlert>"#;

    #[test]
    fn an_xml_card_pass_maps_to_access_granted_on_its_door() {
        let a = parse_part(&xml(GRANT)).unwrap();
        assert_eq!(a.card_no.as_deref(), Some("123&4"));
        let doors = [DoorPlace {
            n: 2,
            device: DeviceId::new("door_2").unwrap(),
            location: Location::from_path("main/A").unwrap(),
            boundary: Some("building:A".into()),
            direction: None,
        }];
        let Mapped::Event(ev) = map(&a, &doors) else {
            panic!("not an event")
        };
        assert_eq!(ev.kind.as_str(), "access.granted");
        assert_eq!(ev.device.as_ref().map(DeviceId::as_str), Some("door_2"));
        assert_eq!(ev.payload["person_id"], "S1001");
        assert_eq!(ev.payload["direction"], "out");
        assert_eq!(ev.payload["boundary"], "building:A");
        assert_eq!(ev.payload["verify_mode"], "cardOrFace");
        assert_eq!(
            ev.origin_ref.as_deref(),
            Some("acs:42:2026-12-02T10:00:00+08:00")
        );
        assert!(ev.occurred_at.is_some());
    }

    #[test]
    fn a_json_part_maps_like_the_xml_one() {
        let body = r#"{"dateTime":"2026-12-02T10:00:00+08:00","eventType":"AccessControllerEvent","eventState":"active",
            "AccessControllerEvent":{"majorEventType":5,"subEventType":27,"doorNo":1,"serialNo":7}}"#;
        let p = Part {
            content_type: "application/json".into(),
            body: Bytes::from(body),
        };
        let a = parse_part(&p).unwrap();
        let Mapped::Event(ev) = map(&a, &[]) else {
            panic!()
        };
        assert_eq!(
            (ev.kind.as_str(), ev.class),
            ("door.forced", Class::Security)
        );
    }

    #[test]
    fn heartbeats_are_not_events_and_unknown_codes_are_ignored() {
        let hb = r#"<EventNotificationAlert><eventType>videoloss</eventType><eventState>inactive</eventState></EventNotificationAlert>"#;
        assert_eq!(map(&parse_part(&xml(hb)).unwrap(), &[]), Mapped::Heartbeat);
        let odd = GRANT.replace("<subEventType>1<", "<subEventType>999<");
        assert_eq!(map(&parse_part(&xml(&odd)).unwrap(), &[]), Mapped::Ignored);
    }

    #[test]
    fn doctypes_unknown_entities_deep_nesting_and_garbage_are_refused() {
        let bomb = r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]><EventNotificationAlert><eventType>&lol2;</eventType></EventNotificationAlert>"#;
        assert_eq!(parse_part(&xml(bomb)), Err(AlertError::Doctype));
        let ent = "<EventNotificationAlert><eventType>&lol;</eventType></EventNotificationAlert>";
        assert_eq!(parse_part(&xml(ent)), Err(AlertError::Entity("lol".into())));
        let deep = format!("{}{}", "<a>".repeat(100), "</a>".repeat(100));
        assert_eq!(parse_part(&xml(&deep)), Err(AlertError::TooDeep));
        for junk in ["<a><b></a>", "<<<", "", "<a>"] {
            assert!(parse_part(&xml(junk)).is_err(), "{junk}");
        }
        let p = Part {
            content_type: "image/jpeg".into(),
            body: Bytes::from_static(&[0xff, 0xd8]),
        };
        assert!(matches!(parse_part(&p), Err(AlertError::ContentType(_))));
    }

    proptest::proptest! {
        #[test]
        fn any_part_body_is_parsed_or_refused_without_panicking(
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048),
            json in proptest::prelude::any::<bool>(),
        ) {
            let ct = if json { "application/json" } else { "application/xml" };
            let p = Part { content_type: ct.into(), body: Bytes::from(body) };
            if let Ok(a) = parse_part(&p) {
                let _ = map(&a, &[]);
            }
        }
    }

    #[test]
    fn a_reboot_restarting_the_serial_gives_a_different_origin_ref() {
        let before = parse_part(&xml(GRANT)).unwrap();
        let after = parse_part(&xml(&GRANT.replace("10:00:00", "10:05:13"))).unwrap();
        let r = |a: &Alert| match map(a, &[]) {
            Mapped::Event(e) => e.origin_ref.clone(),
            _ => None,
        };
        assert_eq!(before.serial_no, after.serial_no);
        assert_ne!(r(&before), r(&after));
    }
}
