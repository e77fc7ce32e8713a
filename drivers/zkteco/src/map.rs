//! rtlog / rtstate records → campusgw events.
//!
//! # Event codes (`event=` of an rtlog line)
//! Names from the public community list in `honghaijs6/PushSDK`
//! (`src/middleware/iclock/ultils/constants.js`), which names the codes of ZKTeco's Security
//! PUSH appendix; the direction (`inoutstatus` 0 in, 1 out) is from the same list. ZKTeco's
//! own appendix (PROTOCOLS R15 App. 2) was not available to check against, so the README
//! marks each code "confirmed (community list)" or "unconfirmed".
//!
//! | codes | kind | class |
//! |---|---|---|
//! | 0 normal verify open, 1 verify in passage mode, 2 first-person open, 3 multi-person open, 4 emergency password, 222 background verification success | `access.granted` | business |
//! | 20 interval too short, 21 door inactive time zone, 22 illegal time zone, 23 access denied, 24 anti-passback, 25 interlock, 27 unregistered person, 29 expired, 38 card reported lost, 39 blacklisted, 41 verify mode error, 42 Wiegand format error, 44 background verify failed, 45 background verify timed out, 48 multi-person verify failed | `access.denied` | business |
//! | 200 door opened correctly | `door.opened` | business |
//! | 201 door closed correctly | `door.closed` | business |
//! | 102 opened forcefully | `door.forced` | security |
//! | 28 open door timeout | `door.held_open` | security |
//! | 100 tamper alarm | `device.tamper` | security |
//! | 101 duress open alarm | `panic.alarm` (`reason: "duress"`) | life_safety |
//! | 105 cannot connect to server, 220 auxiliary input disconnected, 221 auxiliary input shorted | `device.fault` | operations |
//!
//! Everything else (remote open/close echoes, passage-mode changes, exit button, device
//! started) is ignored and counted: the command results already journal what campusgw did.
//!
//! # rtstate
//! Each door's sensor and alarm bits are kept per controller; a change of sensor is
//! `door.opened` / `door.closed`, a rising forced or tamper bit is `door.forced` /
//! `device.tamper`. The bit layout is unconfirmed (see [`crate::proto::RtState`]).
//!
//! # origin_ref (ADR 0003, `Dedup::Window`)
//! `zk:<sn>:<time>:<event>:<door>:<pin>:<card>:<inout>:<index>`: the controller's own event
//! time plus the content plus its log index. A retransmitted upload (the controller did not
//! get our `OK`) has all of them equal and is recognised; the log index alone restarts after a
//! controller reset, so it only separates two identical swipes in the same second, never
//! names an event by itself. rtstate changes use `zkst:<sn>:<time>:<door>:<what>`.

use campusgw_sdk::{Class, DeviceId, Kind, Location, NewEvent};
use chrono::{NaiveDateTime, TimeZone, Utc};
use serde_json::json;

use crate::proto::{ALARM_FORCED, ALARM_TAMPER, RtLog, RtState, Sensor};

/// A door of a controller, as configured.
#[derive(Debug, Clone, PartialEq)]
pub struct DoorPlace {
    /// Its number on the controller (`eventaddr`, the BB of `CONTROL DEVICE`).
    pub n: u8,
    /// Its device id.
    pub device: DeviceId,
    /// Its location.
    pub location: Location,
    /// `campus` or `building:<name>` when the door is a boundary.
    pub boundary: Option<String>,
    /// Fixed passage direction of a one-way boundary (overrides `inoutstatus`).
    pub direction: Option<String>,
}

/// The kind and class of an rtlog event code.
pub fn kind_of(code: u32) -> Option<(&'static str, Class)> {
    Some(match code {
        0..=4 | 222 => ("access.granted", Class::Business),
        20..=25 | 27 | 29 | 38 | 39 | 41 | 42 | 44 | 45 | 48 => ("access.denied", Class::Business),
        200 => ("door.opened", Class::Business),
        201 => ("door.closed", Class::Business),
        102 => ("door.forced", Class::Security),
        28 => ("door.held_open", Class::Security),
        100 => ("device.tamper", Class::Security),
        101 => ("panic.alarm", Class::LifeSafety),
        105 | 220 | 221 => ("device.fault", Class::Operations),
        _ => return None,
    })
}

/// The controller's local time as UTC, when it reads (the controller's clock is set from our
/// HTTP `Date`, i.e. UTC; a controller set to local time shifts `occurred_at`, never
/// `received_at`).
fn occurred(time: &str) -> Option<chrono::DateTime<Utc>> {
    NaiveDateTime::parse_from_str(time, "%Y-%m-%d %H:%M:%S")
        .ok()
        .and_then(|t| Utc.from_local_datetime(&t).single())
}

/// Maps one rtlog line of controller `sn`; `None` for codes campusgw ignores.
pub fn map_rtlog(sn: &str, l: &RtLog, doors: &[DoorPlace]) -> Option<NewEvent> {
    let (kind, class) = kind_of(l.event)?;
    let door = doors.iter().find(|d| u32::from(d.n) == l.door);
    let direction = door
        .and_then(|d| d.direction.clone())
        .or_else(|| match l.inout {
            Some(0) => Some("in".to_owned()),
            Some(1) => Some("out".to_owned()),
            _ => None,
        });
    let mut payload = json!({
        "person_id": l.pin,
        "card_no": l.card,
        "verify_mode": l.verify.map(|v| v.to_string()),
        "door": l.door,
        "direction": direction,
        "event_code": l.event,
        "log_index": l.index,
        "serial": sn,
        "boundary": door.and_then(|d| d.boundary.clone()),
    });
    if l.event == 101 {
        payload["reason"] = json!("duress");
    }
    let origin = format!(
        "zk:{sn}:{}:{}:{}:{}:{}:{}:{}",
        l.time,
        l.event,
        l.door,
        l.pin.as_deref().unwrap_or(""),
        l.card.as_deref().unwrap_or(""),
        l.inout.map(|v| v.to_string()).unwrap_or_default(),
        l.index.map(|v| v.to_string()).unwrap_or_default(),
    );
    let mut ev = NewEvent::new(Kind::from_static(kind), class)
        .payload(payload)
        .origin_ref(origin);
    if let Some(t) = occurred(&l.time) {
        ev = ev.occurred_at(t);
    }
    if let Some(d) = door {
        ev = ev.device(d.device.clone()).location(d.location.clone());
    }
    Some(ev)
}

/// The last rtstate seen from one controller.
#[derive(Debug, Clone, Default)]
pub struct DoorStates {
    sensors: Vec<Sensor>,
    alarms: Vec<u8>,
}

/// Maps an rtstate line against the previous one; updates `prev`.
pub fn map_rtstate(
    sn: &str,
    s: &RtState,
    prev: &mut DoorStates,
    doors: &[DoorPlace],
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    for d in doors {
        let i = usize::from(d.n.saturating_sub(1));
        let mk = |kind: &'static str, class, what: &str| {
            let mut ev = NewEvent::new(Kind::from_static(kind), class)
                .payload(json!({
                    "door": d.n,
                    "serial": sn,
                    "source": "rtstate",
                    "boundary": d.boundary,
                }))
                .origin_ref(format!("zkst:{sn}:{}:{}:{what}", s.time, d.n))
                .device(d.device.clone())
                .location(d.location.clone());
            if let Some(t) = occurred(&s.time) {
                ev = ev.occurred_at(t);
            }
            ev
        };
        let now = s.sensors.get(i).copied().unwrap_or(Sensor::None);
        let before = prev.sensors.get(i).copied().unwrap_or(Sensor::None);
        if now != before {
            match now {
                Sensor::Open => out.push(mk("door.opened", Class::Business, "open")),
                Sensor::Closed if before == Sensor::Open => {
                    out.push(mk("door.closed", Class::Business, "closed"));
                }
                _ => {}
            }
        }
        let a = s.alarms.get(i).copied().unwrap_or(0);
        let was = prev.alarms.get(i).copied().unwrap_or(0);
        let rising = a & !was;
        if rising & ALARM_FORCED != 0 {
            out.push(mk("door.forced", Class::Security, "forced"));
        }
        if rising & ALARM_TAMPER != 0 {
            out.push(mk("device.tamper", Class::Security, "tamper"));
        }
    }
    prev.sensors.clone_from(&s.sensors);
    prev.alarms.clone_from(&s.alarms);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::parse_line;

    fn doors() -> Vec<DoorPlace> {
        vec![DoorPlace {
            n: 1,
            device: DeviceId::new("gate_1").unwrap(),
            location: Location::from_path("main/gate").unwrap(),
            boundary: Some("campus".into()),
            direction: None,
        }]
    }

    #[test]
    fn a_card_swipe_maps_to_access_granted_on_its_door_with_direction() {
        let r = parse_line(1, "time=2026-12-03 07:30:00\tpin=S1001\tcardno=123456\teventaddr=1\tevent=0\tinoutstatus=1\tverifytype=4\tindex=9").unwrap();
        let ev = map_rtlog("SN1", &RtLog::from_record(1, &r).unwrap(), &doors()).unwrap();
        assert_eq!(ev.kind.as_str(), "access.granted");
        assert_eq!(ev.device.as_ref().map(DeviceId::as_str), Some("gate_1"));
        assert_eq!(ev.payload["person_id"], "S1001");
        assert_eq!(ev.payload["direction"], "out");
        assert_eq!(ev.payload["boundary"], "campus");
        assert_eq!(
            ev.origin_ref.as_deref(),
            Some("zk:SN1:2026-12-03 07:30:00:0:1:S1001:123456:1:9")
        );
        assert!(ev.occurred_at.is_some());
    }

    #[test]
    fn codes_map_to_the_isapi_kinds_and_unknown_codes_are_ignored() {
        for (code, kind) in [
            (23, "access.denied"),
            (102, "door.forced"),
            (28, "door.held_open"),
            (100, "device.tamper"),
            (200, "door.opened"),
            (201, "door.closed"),
            (101, "panic.alarm"),
        ] {
            assert_eq!(kind_of(code).map(|k| k.0), Some(kind), "{code}");
        }
        assert_eq!(kind_of(8), None);
        assert_eq!(kind_of(9999), None);
    }

    #[test]
    fn rtstate_changes_become_door_events_once() {
        let mut prev = DoorStates::default();
        let line = |sensor: &str, alarm: &str| {
            let r = parse_line(
                1,
                &format!("time=2026-12-03 07:30:00\tsensor={sensor}\talarm={alarm}"),
            )
            .unwrap();
            RtState::from_record(1, &r).unwrap()
        };
        assert!(map_rtstate("S", &line("01", "00"), &mut prev, &doors()).is_empty());
        let ev = map_rtstate("S", &line("02", "01"), &mut prev, &doors());
        let kinds: Vec<_> = ev.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["door.opened", "door.forced"]);
        assert!(map_rtstate("S", &line("02", "01"), &mut prev, &doors()).is_empty());
        let ev = map_rtstate("S", &line("01", "00"), &mut prev, &doors());
        assert_eq!(ev[0].kind.as_str(), "door.closed");
    }
}
