//! Feeds arbitrary bytes to every ONVIF parser of `drivers/onvif` (the bounded XML reader,
//! faults, clock, services, profiles, media URIs, subscriptions, renew, pull answers,
//! WS-Discovery ProbeMatches) and maps every parsed notification to events; nothing may
//! panic, and a mapped event always carries its de-duplication key.
#![no_main]

use campusgw_onvif::events::{self, PropertyStates};
use campusgw_onvif::soap;
use campusgw_sdk::DeviceId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = campusgw_onvif::xml::parse(data);
    let _ = soap::parse_system_date_and_time(data);
    let _ = soap::parse_services(data);
    let _ = soap::parse_profiles(data);
    let _ = soap::parse_media_uri(data);
    let _ = soap::parse_subscription(data);
    let _ = soap::parse_renew(data);
    let _ = soap::parse_event_properties(data);
    let _ = campusgw_onvif::discovery::parse_probe_matches(data);
    if let Ok(notes) = soap::parse_pull_messages(data) {
        let cam = DeviceId::new("fuzz_cam").expect("valid id");
        let mut states = PropertyStates::default();
        for n in &notes {
            if let Some(e) = events::map(n, &cam, None, &mut states) {
                assert!(e.origin_ref.is_some());
            }
        }
    }
});
