//! The JSON form of an [`Event`], written by hand, byte for byte as `serde_json` writes it.
//!
//! Why by hand: every event is serialized once on its way into the journal, and there
//! `serde_json` was a fifth of all instructions of `campusgw bench ingest` (callgrind). It
//! escapes each key and string through its per-byte escape table and one writer call per
//! fragment, although the keys are constants and almost every value (ids, kinds, device
//! names, timestamps) contains nothing to escape. No crate writes serde's exact output
//! faster; the journal needs the exact output because uplinks send stored bodies as they
//! are. So here the keys are literals, a string is checked for anything to escape in one
//! pass and copied whole when clean, and the rare string that needs escaping, as well as
//! the shape of numbers (`itoa`, `zmij`, the crates `serde_json` itself uses), is left to
//! the same code `serde_json` runs. A property test compares the two on arbitrary events.

use serde_json::Value;

use crate::event::{Event, Location, rfc3339};

/// `e` as `serde_json::to_string(e)` writes it, but with `seq` in place of `e.seq`.
pub(crate) fn event_json(e: &Event, seq: u64) -> String {
    let mut out = String::with_capacity(estimate(e));
    out.push_str("{\"schema\":");
    out.push_str(itoa::Buffer::new().format(e.schema));
    out.push_str(",\"id\":\"");
    out.push_str(
        e.id.hyphenated()
            .encode_lower(&mut uuid::Uuid::encode_buffer()),
    );
    out.push_str("\",\"seq\":");
    out.push_str(itoa::Buffer::new().format(seq));
    out.push_str(",\"occurred_at\":");
    match &e.occurred_at {
        Some(t) => push_time(&mut out, t),
        None => out.push_str("null"),
    }
    out.push_str(",\"received_at\":");
    push_time(&mut out, &e.received_at);
    out.push_str(",\"source\":{\"device\":");
    push_str(&mut out, e.source.device.as_str());
    out.push_str(",\"driver\":");
    push_str(&mut out, &e.source.driver);
    out.push_str("},\"kind\":");
    push_str(&mut out, e.kind.as_str());
    out.push_str(",\"class\":\"");
    // Class names are snake_case constants: nothing to escape.
    out.push_str(e.class.as_str());
    out.push_str("\",\"location\":");
    push_location(&mut out, &e.location);
    out.push_str(",\"payload\":");
    push_value(&mut out, &e.payload);
    out.push_str(",\"origin_ref\":");
    match &e.origin_ref {
        Some(r) => push_str(&mut out, r),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

/// Enough for the fixed part (keys, id, timestamps) and the variable strings, so the body
/// is written into one allocation in the common case.
fn estimate(e: &Event) -> usize {
    let l = &e.location;
    let location: usize = l.levels().iter().flatten().map(|s| s.len() + 12).sum();
    let payload = match &e.payload {
        Value::Object(m) => m.len() * 24 + 2,
        _ => 16,
    };
    256 + e.source.device.as_str().len()
        + e.source.driver.len()
        + e.kind.as_str().len()
        + e.origin_ref.as_ref().map_or(0, String::len)
        + location
        + payload
}

fn push_time(out: &mut String, t: &chrono::DateTime<chrono::Utc>) {
    let mut buf = [0u8; 30];
    match rfc3339::write(t, &mut buf) {
        // RFC 3339 text is digits and `-:.TZ`: nothing to escape.
        Some(text) => {
            out.push('"');
            out.push_str(text);
            out.push('"');
        }
        None => push_serde(out, t),
    }
}

fn push_location(out: &mut String, l: &Location) {
    out.push('{');
    let mut first = true;
    for (key, value) in [
        ("\"campus\":", &l.campus),
        ("\"building\":", &l.building),
        ("\"floor\":", &l.floor),
        ("\"zone\":", &l.zone),
        ("\"point\":", &l.point),
    ] {
        // Absent levels are skipped, as `skip_serializing_if` does.
        if let Some(v) = value {
            if !first {
                out.push(',');
            }
            first = false;
            out.push_str(key);
            push_str(out, v);
        }
    }
    out.push('}');
}

fn push_value(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => push_number(out, n),
        Value::String(s) => push_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                push_str(out, k);
                out.push(':');
                push_value(out, item);
            }
            out.push('}');
        }
    }
}

/// Integers through `itoa` and finite floats through `zmij`, as `serde_json` writes them
/// (a `Number` is never NaN or infinite).
fn push_number(out: &mut String, n: &serde_json::Number) {
    if let Some(u) = n.as_u64() {
        out.push_str(itoa::Buffer::new().format(u));
    } else if let Some(i) = n.as_i64() {
        out.push_str(itoa::Buffer::new().format(i));
    } else if let Some(f) = n.as_f64() {
        out.push_str(zmij::Buffer::new().format_finite(f));
    }
}

/// A JSON string: copied whole between quotes when it holds nothing to escape (quote,
/// backslash, control characters: the only bytes `serde_json` escapes), else escaped by
/// `serde_json`.
fn push_str(out: &mut String, s: &str) {
    // A fold without early exit, so the compiler can check many bytes per instruction.
    let clean = s
        .bytes()
        .fold(true, |ok, b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if clean {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        push_serde(out, s);
    }
}

/// The rare paths (strings to escape, floats, years beyond 9999): `serde_json` itself.
fn push_serde<T: serde::Serialize + ?Sized>(out: &mut String, v: &T) {
    match serde_json::to_string(v) {
        Ok(text) => out.push_str(&text),
        // Strings, numbers and timestamps always serialize; keep the body valid JSON.
        Err(_) => out.push_str("null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Class, DeviceId, Kind, NewEvent};
    use chrono::{TimeZone, Utc};
    use proptest::prelude::*;

    fn text() -> impl Strategy<Value = String> {
        // Plain names, the escaped characters, and non-ASCII (which is not escaped).
        prop_oneof![
            "[a-z0-9_.-]{0,12}",
            "[\\x00-\\x1f\"\\\\a-z]{0,6}",
            "[\\u{80}-\\u{10ffff}a ]{0,6}",
            any::<String>(),
        ]
    }

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(text(), inner, 0..5)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn time() -> impl Strategy<Value = chrono::DateTime<Utc>> {
        // Years 0..=9999 plus a few chrono writes with a sign; every fraction width.
        (-400_000_000_000i64..400_000_000_000i64, 0u32..2_000_000_000)
            .prop_filter_map("valid", |(s, n)| Utc.timestamp_opt(s, n).single())
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            (
                any::<u128>(),
                any::<u64>(),
                prop::option::of(time()),
                time(),
            ),
            ("[a-z][a-z0-9_-]{0,10}", text()),
            prop::sample::select(Class::ALL.to_vec()),
            prop::collection::vec(prop::option::of(text()), 5),
            value(),
            prop::option::of(text()),
        )
            .prop_map(
                |((id, seq, occurred, received), (device, driver), class, levels, payload, r)| {
                    let location = Location {
                        campus: levels[0].clone(),
                        building: levels[1].clone(),
                        floor: levels[2].clone(),
                        zone: levels[3].clone(),
                        point: levels[4].clone(),
                    };
                    let mut new = NewEvent::new(Kind::from_static("fire.alarm"), class)
                        .payload(payload)
                        .location(location);
                    new.occurred_at = occurred;
                    new.origin_ref = r;
                    let device = DeviceId::new(device).expect("generated ids are valid");
                    let mut e = Event::stamp(new, &device, &driver, &Location::default());
                    e.id = uuid::Uuid::from_u128(id);
                    e.seq = seq;
                    e.received_at = received;
                    e
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_hand_written_body_is_byte_for_byte_what_serde_json_writes(e in event()) {
            prop_assert_eq!(event_json(&e, e.seq), serde_json::to_string(&e).unwrap());
        }

        #[test]
        fn the_body_with_another_seq_is_the_event_with_that_seq(e in event(), seq in any::<u64>()) {
            let mut want = e.clone();
            want.seq = seq;
            prop_assert_eq!(event_json(&e, seq), serde_json::to_string(&want).unwrap());
        }
    }
}
