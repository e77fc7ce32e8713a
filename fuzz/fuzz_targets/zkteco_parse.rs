//! Feeds arbitrary bytes to every ZKTeco PUSH parser of `drivers/zkteco` (upload bodies,
//! rtlog and rtstate records, devicecmd results, query strings, command lines and
//! `CONTROL DEVICE`) and maps every record to events; nothing may panic, a mapped rtlog event
//! always carries its de-duplication key, and a parsed command re-encodes to itself.
#![no_main]

use campusgw_sdk::{DeviceId, Location};
use campusgw_zkteco::map::{self, DoorPlace, DoorStates};
use campusgw_zkteco::proto::{self, RtLog, RtState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let doors = [DoorPlace {
        n: 1,
        device: DeviceId::new("fuzz_door").expect("valid id"),
        location: Location::default(),
        boundary: Some("campus".into()),
        direction: None,
    }];
    let mut states = DoorStates::default();
    if let Ok((records, _bad)) = proto::parse_records(data) {
        for (n, r) in records.iter().enumerate() {
            if let Ok(l) = RtLog::from_record(n, r) {
                if let Some(e) = map::map_rtlog("FUZZ", &l, &doors) {
                    assert!(e.origin_ref.is_some());
                }
            }
            if let Ok(s) = RtState::from_record(n, r) {
                let _ = map::map_rtstate("FUZZ", &s, &mut states, &doors);
            }
        }
    }
    let _ = proto::parse_results(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = proto::parse_query(text);
        let _ = proto::parse_options(text);
        for line in text.lines() {
            if let Some((_, cmd)) = proto::parse_command_line(line) {
                if let Some(c) = proto::parse_control(cmd) {
                    let again = proto::control_device(c.op, c.door, c.target, c.value);
                    assert_eq!(proto::parse_control(&again), Some(c));
                }
            }
        }
    }
});
