//! Serialized events validate against docs/event-schema.json, and the schema rejects
//! what the model cannot represent.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use campusgw_sdk::event::kinds;
use campusgw_sdk::{Class, DeviceId, Event, Location, NewEvent};

fn validator() -> jsonschema::Validator {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/event-schema.json"
    ))
    .expect("docs/event-schema.json exists");
    let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn sample(class: Class, located: bool) -> Event {
    let loc = if located {
        Location {
            campus: Some("main".into()),
            building: Some("A".into()),
            floor: Some("1".into()),
            zone: Some("east".into()),
            point: Some("p1".into()),
        }
    } else {
        Location::default()
    };
    let mut e = Event::stamp(
        NewEvent::new(kinds::FIRE_ALARM, class)
            .payload(serde_json::json!({"x": 1}))
            .origin_ref("r1")
            .occurred_at(chrono::Utc::now()),
        &DeviceId::new("panel").unwrap(),
        "modbus_tcp",
        &loc,
    );
    e.seq = 9;
    e
}

#[test]
fn every_class_and_optional_field_shape_validates() {
    let v = validator();
    for c in Class::ALL {
        for located in [true, false] {
            let mut e = sample(c, located);
            if !located {
                e.occurred_at = None;
                e.origin_ref = None;
            }
            let json = serde_json::to_value(&e).unwrap();
            let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{json}: {errors:?}");
        }
    }
}

#[test]
fn the_schema_rejects_bad_kinds_classes_and_extra_fields() {
    let v = validator();
    let good = serde_json::to_value(sample(Class::LifeSafety, true)).unwrap();
    for (field, bad) in [
        ("kind", serde_json::json!("Fire")),
        ("class", serde_json::json!("urgent")),
        ("seq", serde_json::json!(0)),
        ("schema", serde_json::json!(3)),
    ] {
        let mut j = good.clone();
        j[field] = bad;
        assert!(!v.is_valid(&j), "{field} accepted");
    }
    let mut j = good.clone();
    j["extra"] = serde_json::json!(1);
    assert!(!v.is_valid(&j));
}

fn readings(payload: serde_json::Value) -> serde_json::Value {
    let mut e = Event::stamp(
        NewEvent::new(kinds::SENSOR_READINGS, Class::Telemetry).payload(payload),
        &DeviceId::new("boiler").unwrap(),
        "modbus_tcp",
        &Location::default(),
    );
    e.seq = 3;
    serde_json::to_value(&e).unwrap()
}

#[test]
fn a_sensor_readings_batch_validates_with_and_without_its_optional_maps() {
    let v = validator();
    for payload in [
        serde_json::json!({"points": {"r17": 17263, "boiler_temp": 65.2}}),
        serde_json::json!({"points": {"setpoint": 21.5}, "units": {"setpoint": "°C"},
                           "raw": {"setpoint": 215}, "coalesced": 3}),
    ] {
        let json = readings(payload);
        assert_eq!(json["schema"], campusgw_sdk::EVENT_SCHEMA_VERSION);
        let errors: Vec<String> = v.iter_errors(&json).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{json}: {errors:?}");
    }
}

#[test]
fn the_schema_rejects_a_batch_with_non_numeric_or_per_point_shapes() {
    let v = validator();
    for payload in [
        serde_json::json!({}),
        serde_json::json!({"points": {}}),
        serde_json::json!({"points": {"r1": "17"}}),
        serde_json::json!({"points": {"r1": true}}),
        serde_json::json!({"point": "r1", "value": 1}),
        serde_json::json!({"points": {"r1": 1}, "coalesced": 0}),
    ] {
        assert!(
            !v.is_valid(&readings(payload.clone())),
            "{payload} accepted"
        );
    }
}

#[test]
fn an_event_journaled_under_schema_1_still_decodes_and_validates() {
    let old = r#"{"schema":1,"id":"019a6c1e-4f2b-7c3d-9e1f-2a3b4c5d6e7f","seq":5,
        "occurred_at":null,"received_at":"2026-11-26T01:58:02.113Z",
        "source":{"device":"boiler","driver":"modbus_tcp"},"kind":"sensor.reading",
        "class":"telemetry","location":{},"origin_ref":null,
        "payload":{"point":"boiler_temp","table":"input_register","address":10,
                   "value":65.2,"unit":"°C","raw":65.2}}"#;
    let e: Event = serde_json::from_str(old).expect("a schema 1 reading decodes");
    assert_eq!(e.schema, 1);
    assert_eq!(e.kind, kinds::SENSOR_READING);
    assert!(validator().is_valid(&serde_json::to_value(&e).unwrap()));
}
