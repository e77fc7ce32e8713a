//! The codec against frames published on public pages (tests/fixtures/README.md names
//! each source): every field of each read answer decoded, every checksum verified.
#![allow(clippy::unwrap_used, missing_docs)]

use campusgw_dlt645::codec::{self, Address, Control, Decoder, Frame, Function, ReadAnswer};
use campusgw_dlt645::ids;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    include_str!("fixtures/frames.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().unwrap().to_owned();
            let _source = parts.next().unwrap();
            let bytes = parts.map(|b| u8::from_str_radix(b, 16).unwrap()).collect();
            (name, bytes)
        })
        .collect()
}

fn frame(name: &str) -> (Vec<u8>, Frame) {
    let (_, bytes) = fixtures().into_iter().find(|(n, _)| n == name).unwrap();
    let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    (bytes, f)
}

/// The published checksum is the sum of the frame from its first 68 through the data.
#[test]
fn every_published_checksum_is_the_sum_of_its_frame() {
    let all = fixtures();
    assert_eq!(all.len(), 11);
    for (name, bytes) in all {
        let start = bytes.iter().position(|b| *b == codec::START).unwrap();
        let n = bytes.len();
        assert_eq!(bytes[n - 1], codec::END, "{name}");
        assert_eq!(
            codec::checksum(&bytes[start..n - 2]),
            bytes[n - 2],
            "{name}"
        );
        let f = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let preamble = start;
        assert_eq!(f.encode(preamble), bytes, "{name} re-encodes byte for byte");
    }
}

#[test]
fn the_wildcard_read_address_request_decodes() {
    let (_, f) = frame("read_address_request");
    assert_eq!(f.address, Address::WILDCARD);
    assert_eq!(f.control, Control(0x13));
    assert!(!f.control.from_meter());
    assert_eq!(f.control.function(), Function::ReadAddress);
    assert!(f.data.is_empty());
    assert_eq!(f, Frame::read_address());
}

fn answer(name: &str) -> (Frame, u32, Vec<u8>) {
    let (_, f) = frame(name);
    assert!(f.control.from_meter(), "{name}");
    assert!(!f.control.abnormal(), "{name}");
    assert!(!f.control.following(), "{name}");
    assert_eq!(f.control, Control(0x91), "{name}");
    let ReadAnswer::Data {
        id,
        value,
        following,
    } = f.read_answer().unwrap()
    else {
        panic!("{name}: not data")
    };
    assert!(!following);
    (f, id, value)
}

#[test]
fn forward_energy_answer_of_meter_000102030425_is_1206_42_kwh() {
    let (_, req) = frame("energy_request_000102030425");
    assert_eq!(req.address.to_string(), "000102030425");
    assert_eq!(
        req,
        Frame::read_data("000102030425".parse().unwrap(), 0x0001_0000)
    );
    let (f, id, value) = answer("energy_answer_000102030425");
    assert_eq!(f.address.to_string(), "000102030425");
    assert_eq!(id, 0x0001_0000);
    assert_eq!(value, vec![0x42, 0x06, 0x12, 0x00]);
    let q = ids::by_id(id).unwrap();
    assert_eq!((q.name, q.unit), ("energy_active_forward_total", "kWh"));
    assert_eq!(q.decode(&value).unwrap(), 1206.42);
}

#[test]
fn meter_000000000161_answers_energy_reverse_energy_and_phase_a_voltage() {
    for (name, id, v) in [
        ("energy_answer_000000000161", 0x0001_0000, 0.26),
        ("reverse_energy_answer_000000000161", 0x0002_0000, 1.26),
        ("voltage_a_answer_000000000161", 0x0201_0100, 100.1),
    ] {
        let (f, got, value) = answer(name);
        assert_eq!(f.address.to_string(), "000000000161", "{name}");
        assert_eq!(got, id, "{name}");
        assert_eq!(ids::by_id(id).unwrap().decode(&value).unwrap(), v, "{name}");
    }
    let (_, req) = frame("voltage_a_request_000000000161");
    assert_eq!(req, Frame::read_data("161".parse().unwrap(), 0x0201_0100));
}

#[test]
fn the_voltage_block_answer_holds_three_phases_in_the_voltage_format() {
    let (_, req) = frame("voltage_block_request_652022122018");
    assert_eq!(req.data, vec![0x00, 0xFF, 0x01, 0x02]);
    let (f, id, value) = answer("voltage_block_answer_652022122018");
    assert_eq!(f.address.to_string(), "652022122018");
    assert_eq!(id, 0x0201_FF00);
    let v = ids::by_name("voltage_a").unwrap();
    let phases: Vec<f64> = value.chunks(2).map(|c| v.decode(c).unwrap()).collect();
    assert_eq!(phases, vec![0.0, 0.0, 239.4]);
    let (f, id, value) = answer("combined_energy_answer_652022122003");
    assert_eq!(f.address.to_string(), "652022122003");
    assert_eq!((id, value), (0, vec![0, 0, 0, 0]));
}

#[test]
fn published_frames_back_to_back_with_noise_stream_through_the_decoder() {
    let mut d = Decoder::new();
    let mut n = 0;
    for (_, bytes) in fixtures() {
        d.push(&[0x00, 0x55]);
        d.push(&bytes);
        while let Some(r) = d.next_frame() {
            n += usize::from(r.is_ok());
        }
    }
    assert_eq!(n, 11);
    assert_eq!(d.finish(), None);
}
