//! The parsers and the topic mapping against responses captured from real cameras
//! (`fixtures/README.md` names each source).
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use campusgw_onvif::client::{CameraClient, http_client};
use campusgw_onvif::events::{self, PropertyStates};
use campusgw_onvif::soap::{self, PropertyOperation, SoapError};
use campusgw_sdk::DeviceId;
use chrono::{DateTime, Utc};
use reqwest::Url;

fn fixture(name: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(p).unwrap()
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn a_hikvision_pull_answer_of_initialized_states_is_parsed_and_raises_no_alarm() {
    let notes =
        soap::parse_pull_messages(&fixture("hikvision_pull_messages_initialized.xml")).unwrap();
    assert_eq!(notes.len(), 8);
    assert!(
        notes
            .iter()
            .all(|n| n.operation == Some(PropertyOperation::Initialized))
    );
    let motion = &notes[1];
    assert_eq!(motion.topic, "tns1:RuleEngine/CellMotionDetector/Motion");
    assert_eq!(
        motion.data,
        vec![("IsMotion".to_owned(), "false".to_owned())]
    );
    assert_eq!(motion.source.len(), 3);
    assert_eq!(motion.time, Some(utc("2025-04-18T20:34:05Z")));

    let cam = DeviceId::new("hik").unwrap();
    let mut states = PropertyStates::default();
    let evs: Vec<_> = notes
        .iter()
        .filter_map(|n| events::map(n, &cam, None, &mut states))
        .collect();
    assert!(
        evs.is_empty(),
        "initial states are state, not alarms: {evs:?}"
    );
    let known: Vec<String> = states.snapshot().into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        known.len(),
        4,
        "motion alarm, cell motion, tamper, field: {known:?}"
    );
}

#[test]
fn a_hikvision_subscription_address_is_pinned_to_the_configured_camera_host() {
    let sub =
        soap::parse_subscription(&fixture("hikvision_create_pull_point_subscription.xml")).unwrap();
    assert_eq!(
        sub.address,
        "http://192.168.8.120/onvif/Events/PullSubManager_20250415T164937Z_0"
    );
    assert_eq!(sub.termination_time, Some(utc("2025-04-15T16:50:37Z")));
    let base = Url::parse("http://127.0.0.1:8080/onvif/device_service").unwrap();
    let client = CameraClient::new(http_client().unwrap(), base, None, false);
    let pinned = client.pin(&sub.address).unwrap();
    assert_eq!(
        pinned.as_str(),
        "http://127.0.0.1:8080/onvif/Events/PullSubManager_20250415T164937Z_0"
    );
}

#[test]
fn a_fault_with_nested_subcodes_reports_the_first_subcode_and_the_reason() {
    let e = soap::parse_media_uri(&fixture("soap_fault_no_profile.xml")).unwrap_err();
    match &e {
        SoapError::Fault {
            code,
            subcode,
            reason,
        } => {
            assert_eq!(code, "env:Sender");
            assert_eq!(subcode.as_deref(), Some("ter:InvalidArgVal"));
            assert_eq!(reason, "Argument Value Invalid");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_axis_clock_answer_gives_its_utc_time_not_its_local_time() {
    let t =
        soap::parse_system_date_and_time(&fixture("axis_get_system_date_and_time.xml")).unwrap();
    assert_eq!(t, utc("2024-07-09T19:49:06Z"));
}
