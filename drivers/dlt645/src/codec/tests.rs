#![allow(clippy::unwrap_used)]

use super::*;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn addresses_print_as_on_the_name_plate_and_travel_low_byte_first() {
    let a: Address = "000102030425".parse().unwrap();
    assert_eq!(a.0, [0x25, 0x04, 0x03, 0x02, 0x01, 0x00]);
    assert_eq!(a.to_string(), "000102030425");
    let short: Address = "12".parse().unwrap();
    assert_eq!(short.0, [0x12, 0, 0, 0, 0, 0]);
    assert_eq!(
        "aaaaaaaaaaaa".parse::<Address>().unwrap(),
        Address::WILDCARD
    );
    for bad in ["", "1234567890123", "12a4", "-1"] {
        assert!(bad.parse::<Address>().is_err(), "{bad:?}");
    }
}

#[test]
fn a_read_request_encodes_with_preamble_offset_and_checksum() {
    let a: Address = "000102030425".parse().unwrap();
    let wire = Frame::read_data(a, 0x0001_0000).encode(2);
    assert_eq!(
        wire,
        hex("FE FE 68 25 04 03 02 01 00 68 11 04 33 33 34 33 E1 16")
    );
    assert_eq!(
        Frame::read_address().encode(0),
        hex("68 AA AA AA AA AA AA 68 13 00 DF 16")
    );
}

#[test]
fn broadcast_time_goes_to_all_nines_with_bcd_seconds_first() {
    let f = Frame::broadcast_time([5, 4, 3, 2, 12, 26]);
    assert_eq!(f.address, Address::BROADCAST);
    assert_eq!(f.control, Control(0x08));
    assert_eq!(f.data, vec![0x05, 0x04, 0x03, 0x02, 0x12, 0x26]);
    assert_eq!(Frame::decode(&f.encode(4)).unwrap(), f);
}

#[test]
fn error_answers_decode_their_error_byte() {
    let a: Address = "1".parse().unwrap();
    let f = Frame::new(a, Control::error(Function::ReadData), vec![0x02]);
    let back = Frame::decode(&f.encode(0)).unwrap();
    assert_eq!(back.control, Control(0xD1));
    let ReadAnswer::Error(e) = back.read_answer().unwrap() else {
        panic!("error answer")
    };
    assert!(e.no_data());
    assert_eq!(e.names(), vec!["no requested data"]);
    assert_eq!(
        ErrorFlags(0x05).names(),
        vec!["other error", "password wrong or not authorised"]
    );
}

#[test]
fn the_decoder_skips_garbage_and_finds_a_frame_inside_a_torn_one() {
    let good = Frame::read_data("7".parse().unwrap(), 0x0201_0100).encode(1);
    let mut torn = good.clone();
    torn.truncate(9); // header cut after C
    let mut d = Decoder::new();
    d.push(&[0x00, 0x13, 0xFE]);
    d.push(&torn);
    d.push(&good);
    let mut frames = Vec::new();
    let mut rejects = Vec::new();
    while let Some(r) = d.next_frame() {
        match r {
            Ok(f) => frames.push(f),
            Err(e) => rejects.push(e.label()),
        }
    }
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].data, vec![0x00, 0x01, 0x01, 0x02]);
    assert_eq!(rejects[0], "garbage");
    assert!(rejects.len() >= 2, "{rejects:?}");
    assert_eq!(d.finish(), None);
}

#[test]
fn a_bad_checksum_and_a_cut_frame_are_rejected() {
    let mut f = Frame::read_data("7".parse().unwrap(), 0x0201_0100).encode(0);
    let n = f.len();
    f[n - 2] ^= 0x01;
    assert!(matches!(Frame::decode(&f), Err(Reject::Checksum { .. })));
    f[n - 2] ^= 0x01;
    f[n - 1] = 0x17;
    assert_eq!(Frame::decode(&f), Err(Reject::BadEnd));
    let mut d = Decoder::new();
    d.push(&f[..n - 3]);
    assert!(d.next_frame().is_none(), "waits for the rest");
    assert_eq!(d.finish(), Some(Reject::Truncated(n - 3)));
}

#[test]
fn answers_are_told_from_requests() {
    let a: Address = "9".parse().unwrap();
    let req = Frame::read_data(a, 0x0001_0000);
    assert!(!req.is_answer(Function::ReadData), "an echo is no answer");
    assert!(req.read_answer().is_err());
    let ans = Frame::new(a, Control(0xB1), vec![0, 0, 1, 0, 0x42, 0, 0, 0]);
    assert_eq!(
        ans.read_answer().unwrap(),
        ReadAnswer::Data {
            id: 0x0001_0000,
            value: vec![0x42, 0, 0, 0],
            following: true
        }
    );
    let short = Frame::new(a, Control(0x91), vec![0, 0]);
    assert_eq!(short.read_answer(), Err(AnswerError::Short(2)));
}

proptest::proptest! {
    #[test]
    fn any_bytes_never_panic_and_frames_round_trip(
        noise in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        data in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
        c in proptest::num::u8::ANY,
        pre in 0usize..5,
    ) {
        let mut d = Decoder::new();
        d.push(&noise);
        while d.next_frame().is_some() {}
        let _ = d.finish();
        let f = Frame::new(Address([1, 2, 3, 4, 5, 6]), Control(c), data);
        proptest::prop_assert_eq!(Frame::decode(&f.encode(pre)).unwrap(), f);
    }
}

proptest::proptest! {
    /// Frames separated by garbage (any byte but 68h, which could start a false header)
    /// and delivered in chunks of any size all come out, in order.
    #[test]
    fn frames_survive_any_chunking_with_garbage_between(
        frames in proptest::collection::vec(
            (proptest::collection::vec(proptest::num::u8::ANY, 0..20), proptest::num::u8::ANY, 0usize..5),
            1..6,
        ),
        garbage in proptest::collection::vec(
            proptest::collection::vec(proptest::strategy::Strategy::prop_filter(proptest::num::u8::ANY, "no start byte", |b| *b != START), 0..8),
            6,
        ),
        chunk in 1usize..40,
    ) {
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for (i, (data, c, pre)) in frames.into_iter().enumerate() {
            wire.extend_from_slice(&garbage[i]);
            let f = Frame::new(Address([0x25, 0x04, 0x03, 0x02, 0x01, 0x00]), Control(c), data);
            wire.extend(f.encode(pre));
            sent.push(f);
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in wire.chunks(chunk) {
            d.push(piece);
            while let Some(r) = d.next_frame() {
                if let Ok(f) = r {
                    got.push(f);
                }
            }
        }
        proptest::prop_assert_eq!(got, sent);
    }
}
