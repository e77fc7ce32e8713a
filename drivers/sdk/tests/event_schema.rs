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
        ("schema", serde_json::json!(2)),
    ] {
        let mut j = good.clone();
        j[field] = bad;
        assert!(!v.is_valid(&j), "{field} accepted");
    }
    let mut j = good.clone();
    j["extra"] = serde_json::json!(1);
    assert!(!v.is_valid(&j));
}
