//! Interop: every frame in `tests/data/frames.tsv` (a public vendor appendix, checksums
//! verified independently; sources in `tests/data/README.md`) decodes to its expected
//! fields, re-encodes byte for byte, and the frames campusgw builds (confirm, deny,
//! requests) equal the fixtures.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::path::PathBuf;

use campusgw_gb26875::codec::{Address, Adu, CommandByte, Frame, TimeLabel, Version};
use campusgw_gb26875::decode_hex_to_json;
use serde_json::Value;

struct Row {
    name: String,
    bytes: Vec<u8>,
    hex: String,
    expected: String,
}

fn rows() -> Vec<Row> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/frames.tsv");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let rows: Vec<Row> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            assert_eq!(cols.len(), 4, "bad fixture line {l:?}");
            Row {
                name: cols[0].to_owned(),
                bytes: campusgw_gb26875::parse_hex(cols[2]).unwrap(),
                hex: cols[2].to_owned(),
                expected: cols[3].to_owned(),
            }
        })
        .collect();
    assert!(rows.len() >= 10, "fixtures missing: {}", rows.len());
    rows
}

fn by_name(name: &str) -> Vec<u8> {
    rows().into_iter().find(|r| r.name == name).unwrap().bytes
}

/// The value before any `(comment)`: `40(smoke)` → `40`, `0x0002(fire)` → `0x0002`.
fn bare(v: &str) -> &str {
    v.split('(').next().unwrap_or(v)
}

fn num(v: &str) -> u64 {
    let v = bare(v);
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).unwrap(),
        None => v.parse().unwrap(),
    }
}

/// Checks one `key=value` of the fixture's expected decoding against the JSON decoding.
fn check(row: &Row, j: &Value, key: &str, value: &str) {
    let obj = &j["adu"]["objects"][0];
    let ctx = format!("{}: {key}={value} in {j:#}", row.name);
    match key {
        "cmd" => assert_eq!(j["command_byte"], num(value), "{ctx}"),
        "serial" => assert_eq!(j["serial"], num(value), "{ctx}"),
        "version" => {
            assert_eq!(j["version"], value, "{ctx}");
            if j["type_flag"] == 25 {
                assert_eq!(format!("{}.{}", obj[0], obj[1]), value, "{ctx}");
            }
        }
        "sent" => assert_eq!(j["time"], format!("{value}+08:00"), "{ctx}"),
        "src" => assert_eq!(j["source"], num(value), "{ctx}"),
        "dst" => assert_eq!(j["destination"], num(value), "{ctx}"),
        "type" => assert_eq!(j["type_flag"], num(value), "{ctx}"),
        "count" => assert_eq!(
            j["adu"]["objects"].as_array().unwrap().len() as u64,
            num(value),
            "{ctx}"
        ),
        "sys_type" => assert_eq!(obj["system"]["system_type"], num(value), "{ctx}"),
        "sys_addr" => assert_eq!(obj["system"]["system_address"], num(value), "{ctx}"),
        "comp_type" => assert_eq!(obj["component_type"], num(value), "{ctx}"),
        "comp_addr" => {
            let raw = u32::from_str_radix(value, 16).unwrap().swap_bytes();
            let want = format!("{}-{}", raw & 0xFFFF, raw >> 16);
            assert_eq!(obj["component_address"], want, "{ctx}");
        }
        "status" | "uitd_status" => assert_eq!(obj["status"], num(value), "{ctx}"),
        "event_time" => assert_eq!(obj["time"], format!("{value}+08:00"), "{ctx}"),
        "time" => assert_eq!(obj, &Value::from(format!("{value}+08:00")), "{ctx}"),
        "op_flags" => assert_eq!(obj["flags"], num(value), "{ctx}"),
        "operator" => assert_eq!(obj["operator"], num(value), "{ctx}"),
        other => panic!("{}: fixture key {other:?} not understood", row.name),
    }
}

#[test]
fn every_fixture_frame_decodes_to_its_expected_fields() {
    for row in rows() {
        let j = decode_hex_to_json(&row.hex).unwrap_or_else(|e| panic!("{}: {e}", row.name));
        for token in row.expected.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) => check(&row, &j, k, v),
                None if token == "empty" => assert_eq!(j["adu_length"], 0, "{}", row.name),
                None => {}
            }
        }
    }
}

#[test]
fn every_fixture_frame_re_encodes_byte_for_byte() {
    for row in rows() {
        let frame = Frame::decode(&row.bytes).unwrap();
        assert_eq!(frame.encode().unwrap(), row.bytes, "{}", row.name);
        if let Some(adu) = frame.adu().unwrap() {
            assert_eq!(adu.encode().unwrap(), frame.data, "{}", row.name);
        }
    }
}

#[test]
fn our_confirm_and_deny_equal_the_fixtures() {
    let alarm = Frame::decode(&by_name("fire_alarm_smoke_detector")).unwrap();
    // The centre stamped its reply three seconds after the UITD's send time.
    let at = TimeLabel {
        second: 0x23,
        ..alarm.time
    };
    assert_eq!(
        alarm.reply(CommandByte::Confirm, at).encode().unwrap(),
        by_name("centre_confirm")
    );
    assert_eq!(
        alarm.reply(CommandByte::Deny, at).encode().unwrap(),
        by_name("centre_deny")
    );
}

fn centre_request(command: CommandByte, adu: Adu) -> Vec<u8> {
    Frame {
        serial: 1,
        version: Version::V1_1,
        time: TimeLabel::from_bytes([0x20, 0x3A, 0x09, 0x1A, 0x09, 0x0C]),
        source: Address::new(88888).unwrap(),
        destination: Address::new(889).unwrap(),
        command,
        data: adu.encode().unwrap(),
    }
    .encode()
    .unwrap()
}

#[test]
fn our_requests_equal_the_fixtures() {
    let clock = TimeLabel::from_bytes([0x02, 0x3A, 0x09, 0x1A, 0x09, 0x0C]);
    assert_eq!(
        centre_request(CommandByte::Request, Adu::ReadUitdStatus(vec![0])),
        by_name("centre_read_uitd_status")
    );
    assert_eq!(
        centre_request(CommandByte::Control, Adu::SyncUitdClock(vec![clock])),
        by_name("centre_sync_clock")
    );
    assert_eq!(
        centre_request(CommandByte::Control, Adu::DutyCheck(vec![10])),
        by_name("centre_duty_check")
    );
}

#[test]
fn the_fire_alarm_fixture_maps_to_one_fire_alarm_event() {
    let j = decode_hex_to_json(&rows()[0].hex).unwrap();
    let events = j["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["kind"], "fire.alarm");
    assert_eq!(events[0]["class"], "life_safety");
    assert_eq!(
        events[0]["payload"]["component_type_name"],
        "smoke detector"
    );
}

#[test]
fn decode_hex_reports_bad_input() {
    assert!(decode_hex_to_json("40 4").is_err());
    assert!(decode_hex_to_json("zz").is_err());
    let mut bad = by_name("centre_confirm");
    bad[27] ^= 1;
    let hex: String = bad.iter().map(|b| format!("{b:02x}")).collect();
    let e = decode_hex_to_json(&hex).unwrap_err();
    assert!(e.to_string().contains("checksum"), "{e}");
}
