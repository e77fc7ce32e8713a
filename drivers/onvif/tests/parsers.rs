//! The network-facing parsers never panic, on random bytes and on damaged real answers (the
//! same entry points as `fuzz/fuzz_targets/onvif_parse.rs`, run on every `cargo test`).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use campusgw_onvif::events::{self, PropertyStates};
use campusgw_onvif::{discovery, soap, xml};
use campusgw_sdk::DeviceId;
use proptest::prelude::*;

fn all_parsers(data: &[u8]) {
    let _ = xml::parse(data);
    let _ = soap::parse_system_date_and_time(data);
    let _ = soap::parse_services(data);
    let _ = soap::parse_profiles(data);
    let _ = soap::parse_media_uri(data);
    let _ = soap::parse_subscription(data);
    let _ = soap::parse_renew(data);
    let _ = soap::parse_event_properties(data);
    let _ = discovery::parse_probe_matches(data);
    if let Ok(notes) = soap::parse_pull_messages(data) {
        let cam = DeviceId::new("cam").unwrap();
        let mut states = PropertyStates::default();
        for n in &notes {
            if let Some(e) = events::map(n, &cam, None, &mut states) {
                assert!(e.origin_ref.is_some());
            }
        }
    }
}

fn real_answer() -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("hikvision_pull_messages_initialized.xml");
    std::fs::read(p).unwrap()
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic_any_parser(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        all_parsers(&data);
    }

    #[test]
    fn a_real_answer_cut_or_damaged_anywhere_never_panics_any_parser(
        cut in 0usize..8625,
        flips in proptest::collection::vec((0usize..8625, any::<u8>()), 0..8),
    ) {
        let mut data = real_answer();
        for (at, b) in flips {
            if let Some(x) = data.get_mut(at) {
                *x = b;
            }
        }
        data.truncate(cut);
        all_parsers(&data);
    }
}
