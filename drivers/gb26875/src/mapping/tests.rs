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
    let evs = events_for(&frame(), &component(0x0002), &profile(), false);
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
    assert_eq!(e.origin_ref.as_deref(), Some("889:7:0c091a093a02:0:fire"));
    assert_eq!(e.payload["component_type_name"], "smoke detector");
    assert_eq!(e.payload["component_type_name_zh"], "感烟火灾探测器");
    assert_eq!(e.payload["component_address"], "10-2");
    assert_eq!(e.payload["description"], "3楼东 烟感");
    assert_eq!(e.payload["system_type_name_zh"], "火灾报警系统");
}

#[test]
fn each_abnormal_bit_is_its_own_event_and_a_clean_word_is_a_reset() {
    let kinds: Vec<String> = events_for(&frame(), &component(0x0106), &profile(), false)
        .iter()
        .map(|e| e.kind.to_string())
        .collect();
    assert_eq!(kinds, ["fire.alarm", "fire.fault", "fire.power_fault"]);
    let reset = events_for(&frame(), &component(0x0001), &profile(), false);
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
    let kinds: Vec<String> = events_for(&frame(), &adu, &profile(), false)
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
    assert!(events_for(&frame(), &normal, &profile(), false).is_empty());
    let back = events_for(&frame(), &normal, &profile(), true);
    assert_eq!(back[0].kind.as_str(), "fire.uitd_status");
    let power = Adu::UitdStatus(vec![UitdStatus {
        status: 0x08,
        time: TimeLabel::default(),
    }]);
    let e = &events_for(&frame(), &power, &profile(), false)[0];
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
    let e = &events_for(&frame(), &adu, &profile(), false)[0];
    assert_eq!(
        (e.kind.as_str(), e.class),
        ("fire.operation", Class::Operations)
    );
    assert_eq!(e.payload["action"], "duty_check_answered");
}
