#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::*;
use crate::codec::{ComponentStatus, Description, SystemStatus, UitdStatus, Version};

fn frame() -> Frame {
    Frame {
        serial: 7,
        version: Version::V1_1,
        time: TimeLabel::from_bytes([32, 58, 9, 26, 9, 12]),
        source: Address::new(889).unwrap(),
        destination: Address::new(88888).unwrap(),
        command: crate::codec::CommandByte::SendData,
        data: Vec::new(),
    }
}

/// The link id the tests' frames arrive on.
const LINK: LinkId = LinkId(0xfeed);

/// [`frame`] carrying `adu`'s bytes, as the driver hands frames to the mapping.
fn frame_of(adu: &Adu) -> Frame {
    Frame {
        data: adu.encode().unwrap(),
        ..frame()
    }
}

fn component(status: u16) -> Adu {
    Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: ComponentAddress::from_parts(10, 2),
        status,
        description: Description::new("3楼东 烟感"),
        time: TimeLabel::from_bytes([2, 58, 9, 26, 9, 12]),
    }])
}

fn profile() -> UitdProfile {
    UitdProfile {
        device: Some(DeviceId::new("uitd_a").unwrap()),
        location: Some(Location {
            building: Some("A".into()),
            ..Location::default()
        }),
        components: vec![ComponentPlace {
            system_address: None,
            address: ComponentAddress::from_parts(10, 2),
            location: Location {
                building: Some("A".into()),
                point: Some("smoke-10-2".into()),
                ..Location::default()
            },
        }],
    }
}

#[test]
fn a_smoke_detector_fire_becomes_a_located_life_safety_alarm_in_utc() {
    let evs = events_for(
        &frame_of(&component(0x0002)),
        &component(0x0002),
        &profile(),
        false,
        LINK,
    );
    assert_eq!(evs.len(), 1);
    let e = &evs[0];
    assert_eq!(
        (e.kind.as_str(), e.class),
        ("fire.alarm", Class::LifeSafety)
    );
    assert_eq!(e.device.as_ref().unwrap().as_str(), "uitd_a");
    assert_eq!(
        e.location.as_ref().unwrap().point.as_deref(),
        Some("smoke-10-2")
    );
    assert_eq!(
        e.occurred_at.unwrap().to_rfc3339(),
        "2012-09-26T01:58:02+00:00"
    );
    let key = e.origin_ref.as_deref().unwrap();
    assert!(
        key.starts_with("889:")
            && key.ends_with(":0:fire")
            && key.len() == "889:".len() + 32 + ":0:fire".len(),
        "{key}"
    );
    assert_eq!(e.payload["component_type_name"], "smoke detector");
    assert_eq!(e.payload["component_type_name_zh"], "感烟火灾探测器");
    assert_eq!(e.payload["component_address"], "10-2");
    assert_eq!(e.payload["description"], "3楼东 烟感");
    let raw = e.payload["description_hex"].as_str().unwrap();
    assert_eq!(raw.len(), 62, "31 bytes");
    assert_eq!(e.payload["system_type_name_zh"], "火灾报警系统");
}

#[test]
fn each_abnormal_bit_is_its_own_event_and_a_clean_word_is_a_reset() {
    let kinds: Vec<String> = events_for(
        &frame_of(&component(0x0106)),
        &component(0x0106),
        &profile(),
        false,
        LINK,
    )
    .iter()
    .map(|e| e.kind.to_string())
    .collect();
    assert_eq!(kinds, ["fire.alarm", "fire.fault", "fire.power_fault"]);
    let reset = events_for(
        &frame_of(&component(0x0001)),
        &component(0x0001),
        &profile(),
        false,
        LINK,
    );
    assert_eq!(reset[0].kind.as_str(), "fire.reset");
    assert_eq!(reset[0].class, Class::LifeSafety);
    assert_eq!(reset[0].payload["condition"], "normal");
}

#[test]
fn system_reset_bit_and_bus_fault_map_as_documented() {
    let adu = Adu::SystemStatus(vec![SystemStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        status: (1 << 13) | (1 << 10),
        time: TimeLabel::default(),
    }]);
    let kinds: Vec<String> = events_for(&frame_of(&adu), &adu, &profile(), false, LINK)
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["fire.fault", "fire.reset"]);
}

#[test]
fn uitd_heartbeat_status_gives_no_event_unless_recovering() {
    let normal = Adu::UitdStatus(vec![UitdStatus {
        status: 0x01,
        time: TimeLabel::default(),
    }]);
    assert!(events_for(&frame_of(&normal), &normal, &profile(), false, LINK).is_empty());
    let back = events_for(&frame_of(&normal), &normal, &profile(), true, LINK);
    assert_eq!(back[0].kind.as_str(), "fire.uitd_status");
    let power = Adu::UitdStatus(vec![UitdStatus {
        status: 0x08,
        time: TimeLabel::default(),
    }]);
    let e = &events_for(&frame_of(&power), &power, &profile(), false, LINK)[0];
    assert_eq!(
        (e.kind.as_str(), e.class),
        ("fire.uitd_power_fault", Class::Security)
    );
}

#[test]
fn operator_actions_are_operations_events() {
    let adu = Adu::UitdOperation(vec![crate::codec::UitdOperation {
        flags: 0x20,
        operator: 1,
        time: TimeLabel::default(),
    }]);
    let e = &events_for(&frame_of(&adu), &adu, &profile(), false, LINK)[0];
    assert_eq!(
        (e.kind.as_str(), e.class),
        ("fire.operation", Class::Operations)
    );
    assert_eq!(e.payload["action"], "duty_check_answered");
}

fn component_at(zone: u16, point: u16, status: u16, time: TimeLabel) -> Adu {
    Adu::ComponentStatus(vec![ComponentStatus {
        system: SystemRef {
            system_type: 1,
            system_address: 1,
        },
        component_type: 40,
        component_address: ComponentAddress::from_parts(zone, point),
        status,
        description: Description::new("烟感"),
        time,
    }])
}

fn key_of(adu: &Adu, serial: u16, frame_time: TimeLabel, link: LinkId) -> String {
    let frame = Frame {
        serial,
        time: frame_time,
        ..frame_of(adu)
    };
    let evs = events_for(&frame, adu, &profile(), false, link);
    evs[0].origin_ref.clone().unwrap()
}

#[test]
fn a_retransmission_renumbered_and_restamped_after_a_reconnect_has_the_same_key() {
    let adu = component(0x0002);
    let first = key_of(&adu, 7, TimeLabel::from_bytes([1, 0, 10, 1, 6, 26]), LINK);
    let again = key_of(
        &adu,
        1,
        TimeLabel::from_bytes([9, 5, 10, 1, 6, 26]),
        LinkId(2),
    );
    assert_eq!(first, again);
}

#[test]
fn another_detectors_alarm_with_the_same_serial_and_time_never_shares_a_key() {
    let t = TimeLabel::from_bytes([2, 58, 9, 26, 9, 12]);
    let a = key_of(&component_at(10, 2, 0x0002, t), 7, t, LINK);
    let b = key_of(&component_at(20, 7, 0x0002, t), 7, t, LINK);
    assert_ne!(a, b);
    // The same detector alarming again later (another object time label) is a new message.
    let later = TimeLabel::from_bytes([3, 58, 9, 26, 9, 12]);
    assert_ne!(a, key_of(&component_at(10, 2, 0x0002, later), 7, t, LINK));
}

#[test]
fn with_a_zero_clock_the_key_also_names_the_connection_and_serial() {
    let zero = TimeLabel::default();
    let adu = component_at(10, 2, 0x0002, zero);
    // Retransmitted on the same connection with the same serial: one message.
    assert_eq!(key_of(&adu, 5, zero, LINK), key_of(&adu, 5, zero, LINK));
    // Fire, reset, fire at one detector with no clock: the content repeats, the serial moves.
    assert_ne!(key_of(&adu, 5, zero, LINK), key_of(&adu, 7, zero, LINK));
    // After a reconnect (new link), even a restarted serial never merges with the past.
    assert_ne!(
        key_of(&adu, 5, zero, LINK),
        key_of(&adu, 5, zero, LinkId(99))
    );
    // A clock stuck before 2010 is no clock either.
    let stale = TimeLabel::from_bytes([0, 0, 0, 1, 1, 0]);
    let adu = component_at(10, 2, 0x0002, stale);
    assert_ne!(
        key_of(&adu, 5, stale, LINK),
        key_of(&adu, 5, stale, LinkId(99))
    );
}
