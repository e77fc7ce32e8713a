#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use bytes::BytesMut;
use proptest::prelude::*;

use super::*;

/// PROTOCOLS §1.3: the smoke-detector fire alarm.
const FIRE_ALARM: &str = "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 30 00 02 02 01 01 01 28 0A 00 02 00 02 00 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 20 00 02 3A 09 1A 09 0C 46 23 23";
/// PROTOCOLS §1.3: UITD main-power fault, type 21.
const UITD_POWER: &str = "40 40 01 00 01 01 20 3A 09 1A 09 0C 79 03 00 00 00 00 38 5B 01 00 00 00 09 00 02 15 01 08 02 3A 09 1A 09 0C 42 23 23";

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect()
}

fn drain(dec: &mut FrameDecoder, buf: &mut BytesMut) -> Vec<Result<Frame, FrameError>> {
    std::iter::from_fn(|| dec.next_item(buf)).collect()
}

#[test]
fn fire_alarm_frame_decodes_and_re_encodes_identically() {
    let bytes = hex(FIRE_ALARM);
    let f = Frame::decode(&bytes).unwrap();
    assert_eq!(f.serial, 1);
    assert_eq!(f.command, CommandByte::SendData);
    assert_eq!(f.source.value(), 889);
    assert_eq!(f.destination.value(), 88888);
    assert_eq!(f.time.to_string(), "2012-09-26T09:58:32+08:00");
    assert_eq!(f.encode().unwrap(), bytes);
    let Some(Adu::ComponentStatus(objs)) = f.adu().unwrap() else {
        panic!("not a component status")
    };
    assert_eq!(
        objs[0].component_address,
        ComponentAddress::from_parts(10, 2)
    );
    assert_eq!(objs[0].component_address.to_string(), "10-2");
    assert_eq!(objs[0].description.text(), "");
}

#[test]
fn time_labels_are_read_as_china_standard_time() {
    let t = TimeLabel::from_bytes([4, 0, 9, 2, 7, 21]);
    assert_eq!(t.to_utc().unwrap().timestamp(), 1_625_187_604);
    assert_eq!(TimeLabel::from_utc(t.to_utc().unwrap()), t);
    assert_eq!(TimeLabel::from_bytes([0, 0, 0, 31, 2, 12]).to_utc(), None);
}

#[test]
fn descriptions_decode_gb18030_and_trim_padding() {
    let d = Description::new("3楼东 烟感");
    assert_eq!(d.text(), "3楼东 烟感");
    let mut raw = [b' '; DESCRIPTION_LEN];
    raw[0] = 0xD1; // 烟 in GB18030
    raw[1] = 0xCC;
    raw[30] = 0;
    assert_eq!(Description(raw).text(), "烟");
    let long = Description::new(&"火".repeat(40));
    assert_eq!(long.text(), "火".repeat(15));
}

#[test]
fn component_addresses_parse_both_forms() {
    assert_eq!(
        ComponentAddress::parse("10-2"),
        Some(ComponentAddress(0x0002_000A))
    );
    assert_eq!(
        ComponentAddress::parse("131082"),
        Some(ComponentAddress(0x0002_000A))
    );
    assert_eq!(ComponentAddress::parse("x-2"), None);
    assert_eq!(ComponentAddress::parse("70000-1"), None);
}

#[test]
fn decode_reports_each_check_failure_with_the_serial() {
    let good = hex(FIRE_ALARM);
    let mut bad_sum = good.clone();
    bad_sum[75] ^= 1;
    assert!(matches!(
        Frame::decode(&bad_sum),
        Err(FrameError::BadChecksum { .. })
    ));
    assert_eq!(Frame::decode(&bad_sum).unwrap_err().serial(), Some(1));
    let mut bad_end = good.clone();
    bad_end[77] = 0;
    assert_eq!(Frame::decode(&bad_end).unwrap_err().reason(), "bad_end");
    let mut big = good.clone();
    big[24..26].copy_from_slice(&1025u16.to_le_bytes());
    assert_eq!(
        Frame::decode(&big).unwrap_err().reason(),
        "length_too_large"
    );
    assert_eq!(
        Frame::decode(&good[..40]).unwrap_err().reason(),
        "length_mismatch"
    );
    assert_eq!(
        Frame::decode(&good[..20]).unwrap_err().reason(),
        "too_short"
    );
    let mut bad_cmd = hex(UITD_POWER);
    bad_cmd[26] = 7;
    let sum = checksum(&bad_cmd[2..36]);
    bad_cmd[36] = sum;
    assert_eq!(
        Frame::decode(&bad_cmd).unwrap_err().reason(),
        "unknown_command"
    );
}

#[test]
fn adu_layout_errors_are_reported_not_panicked() {
    assert!(matches!(Adu::decode(&[2]), Err(AduError::TooShort { .. })));
    assert!(matches!(
        Adu::decode(&[2, 1, 0, 0]),
        Err(AduError::Truncated { .. })
    ));
    assert!(matches!(
        Adu::decode(&[81, 1, 0, 0]),
        Err(AduError::TrailingBytes { .. })
    ));
    assert_eq!(
        Adu::decode(&[200, 3, 1, 2]).unwrap(),
        Adu::Other {
            type_flag: 200,
            count: 3,
            body: vec![1, 2]
        }
    );
}

#[test]
fn stream_yields_a_frame_split_at_every_byte_boundary() {
    let bytes = hex(FIRE_ALARM);
    for cut in 0..=bytes.len() {
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::from(&bytes[..cut]);
        let first = drain(&mut dec, &mut buf);
        buf.extend_from_slice(&bytes[cut..]);
        let second = drain(&mut dec, &mut buf);
        let all: Vec<_> = first.into_iter().chain(second).collect();
        assert_eq!(all.len(), 1, "cut at {cut}");
        assert!(all[0].is_ok(), "cut at {cut}");
        assert!(buf.is_empty());
    }
}

#[test]
fn stream_yields_concatenated_frames_in_order_skipping_garbage() {
    let mut wire = b"\x00\x01@garbage".to_vec();
    wire.extend(hex(FIRE_ALARM));
    wire.extend(b"##@x");
    wire.extend(hex(UITD_POWER));
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let items = drain(&mut dec, &mut buf);
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(Result::is_ok));
    assert_eq!(dec.skipped(), 14);
}

#[test]
fn stream_recovers_a_frame_right_after_a_stray_at_sign() {
    let mut wire = b"@".to_vec();
    wire.extend(hex(FIRE_ALARM));
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let items = drain(&mut dec, &mut buf);
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
    assert!(buf.is_empty());
}

#[test]
fn stream_reports_a_bad_checksum_and_continues_with_the_next_frame() {
    let mut bad = hex(FIRE_ALARM);
    bad[75] = 0;
    let mut wire = bad;
    wire.extend(hex(UITD_POWER));
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let items = drain(&mut dec, &mut buf);
    assert_eq!(items.len(), 2);
    let e = items[0].as_ref().unwrap_err();
    assert_eq!((e.reason(), e.serial()), ("bad_checksum", Some(1)));
    assert_eq!(
        Frame::deny_for(e.header().unwrap(), TimeLabel::default())
            .destination
            .value(),
        889
    );
    assert!(items[1].is_ok());
}

#[test]
fn stream_rejects_an_oversized_length_without_waiting_for_it() {
    let mut big = hex(FIRE_ALARM);
    big[24..26].copy_from_slice(&0xFFFFu16.to_le_bytes());
    let mut wire = big;
    wire.extend(hex(UITD_POWER));
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let items = drain(&mut dec, &mut buf);
    assert_eq!(items[0].as_ref().unwrap_err().reason(), "length_too_large");
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
    assert!(buf.is_empty());
}

#[test]
fn stream_holds_a_truncated_frame_and_drops_it_at_eof() {
    use tokio_util::codec::Decoder;
    let bytes = hex(FIRE_ALARM);
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&bytes[..50]);
    assert!(dec.decode(&mut buf).unwrap().is_none());
    assert_eq!(buf.len(), 50);
    assert!(dec.decode_eof(&mut buf).unwrap().is_none());
    assert!(buf.is_empty());
}

#[test]
fn stream_finds_a_frame_after_a_bad_end_marker() {
    let mut broken = hex(FIRE_ALARM);
    broken.truncate(60); // a frame cut short, then a whole one: the end marker check fails
    let mut wire = broken;
    wire.extend(hex(UITD_POWER));
    wire.extend(vec![0u8; 40]);
    let mut dec = FrameDecoder::new();
    let mut buf = BytesMut::from(&wire[..]);
    let items = drain(&mut dec, &mut buf);
    assert_eq!(items[0].as_ref().unwrap_err().reason(), "bad_end");
    assert_eq!(items.iter().filter(|i| i.is_ok()).count(), 1);
}

fn arb_time() -> impl Strategy<Value = TimeLabel> {
    any::<[u8; 6]>().prop_map(TimeLabel::from_bytes)
}

fn arb_command() -> impl Strategy<Value = CommandByte> {
    prop_oneof![(1u8..=6), (128u8..=255)]
        .prop_map(|b| CommandByte::from_u8(b).expect("valid range"))
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        any::<u16>(),
        any::<[u8; 2]>(),
        arb_time(),
        0..=MAX_ADDRESS,
        0..=MAX_ADDRESS,
        arb_command(),
        prop::collection::vec(any::<u8>(), 0..=MAX_ADU_LEN),
    )
        .prop_map(|(serial, v, time, s, d, command, data)| Frame {
            serial,
            version: Version {
                major: v[0],
                user: v[1],
            },
            time,
            source: Address::new(s).expect("48-bit"),
            destination: Address::new(d).expect("48-bit"),
            command,
            data,
        })
}

fn arb_system() -> impl Strategy<Value = SystemRef> {
    (any::<u8>(), any::<u8>()).prop_map(|(system_type, system_address)| SystemRef {
        system_type,
        system_address,
    })
}

fn arb_adu() -> impl Strategy<Value = Adu> {
    let n = 0..4usize;
    let addr = any::<u32>().prop_map(ComponentAddress);
    let desc = "[a-z 0-9火灾烟感楼]{0,12}".prop_map(|s| Description::new(&s));
    let comp = (arb_system(), addr.clone()).prop_map(|(system, component_address)| ComponentRef {
        system,
        component_address,
    });
    prop_oneof![
        prop::collection::vec(
            (arb_system(), any::<u16>(), arb_time()).prop_map(|(system, status, time)| {
                SystemStatus {
                    system,
                    status,
                    time,
                }
            }),
            n.clone()
        )
        .prop_map(Adu::SystemStatus),
        prop::collection::vec(
            (
                arb_system(),
                any::<u8>(),
                addr.clone(),
                any::<u16>(),
                desc.clone(),
                arb_time()
            )
                .prop_map(
                    |(system, component_type, component_address, status, description, time)| {
                        ComponentStatus {
                            system,
                            component_type,
                            component_address,
                            status,
                            description,
                            time,
                        }
                    }
                ),
            n.clone()
        )
        .prop_map(Adu::ComponentStatus),
        prop::collection::vec(
            (
                arb_system(),
                any::<u8>(),
                addr.clone(),
                any::<u8>(),
                any::<i16>(),
                arb_time()
            )
                .prop_map(
                    |(system, component_type, component_address, analog_type, value, time)| {
                        AnalogValue {
                            system,
                            component_type,
                            component_address,
                            analog_type,
                            value,
                            time,
                        }
                    }
                ),
            n.clone()
        )
        .prop_map(Adu::ComponentAnalog),
        prop::collection::vec(
            ("[a-z火]{0,20}", arb_system()).prop_map(|(t, system)| SystemConfig {
                system,
                text: Text::new(&t)
            }),
            n.clone()
        )
        .prop_map(Adu::SystemConfig),
        prop::collection::vec(
            (any::<u8>(), any::<u8>(), arb_time()).prop_map(|(flags, operator, time)| {
                UitdOperation {
                    flags,
                    operator,
                    time,
                }
            }),
            n.clone()
        )
        .prop_map(Adu::UitdOperation),
        prop::collection::vec(
            (any::<u8>(), arb_time()).prop_map(|(status, time)| UitdStatus { status, time }),
            n.clone()
        )
        .prop_map(Adu::UitdStatus),
        prop::collection::vec(comp, n.clone()).prop_map(Adu::ReadComponentStatus),
        prop::collection::vec(arb_system(), n.clone()).prop_map(Adu::ReadSystemStatus),
        prop::collection::vec(arb_time(), n.clone()).prop_map(Adu::SyncUitdClock),
        prop::collection::vec(any::<u8>(), n.clone()).prop_map(Adu::DutyCheck),
        prop::collection::vec(
            (any::<u8>(), arb_time()).prop_map(|(count, since)| RecordQuery { count, since }),
            n
        )
        .prop_map(Adu::ReadUitdOperations),
        (
            128u8..=254,
            any::<u8>(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(type_flag, count, body)| Adu::Other {
                type_flag,
                count,
                body
            }),
    ]
}

proptest! {
    #[test]
    fn any_frame_round_trips(frame in arb_frame()) {
        let bytes = frame.encode().unwrap();
        prop_assert_eq!(Frame::decode(&bytes).unwrap(), frame);
    }

    #[test]
    fn any_adu_round_trips(adu in arb_adu()) {
        let bytes = adu.encode().unwrap();
        prop_assert_eq!(Adu::decode(&bytes).unwrap(), adu);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_the_buffer_stays_bounded(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..20)
    ) {
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        for c in chunks {
            buf.extend_from_slice(&c);
            while let Some(item) = dec.next_item(&mut buf) {
                if let Ok(f) = item {
                    let _ = f.adu();
                }
            }
            prop_assert!(buf.len() < MAX_FRAME_LEN);
        }
    }

    #[test]
    fn frames_survive_any_chunking_with_garbage_between(
        frames in prop::collection::vec(arb_frame(), 1..5),
        garbage in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no @", |b| *b != b'@'), 0..20), 5),
        cuts in prop::collection::vec(1usize..200, 0..40),
    ) {
        let mut wire = Vec::new();
        for (f, g) in frames.iter().zip(garbage.iter().cycle()) {
            wire.extend_from_slice(g);
            wire.extend(f.encode().unwrap());
        }
        let mut dec = FrameDecoder::new();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut rest = &wire[..];
        for c in cuts.into_iter().chain(std::iter::repeat(usize::MAX)) {
            if rest.is_empty() { break; }
            let (head, tail) = rest.split_at(c.min(rest.len()));
            rest = tail;
            buf.extend_from_slice(head);
            out.extend(drain(&mut dec, &mut buf));
        }
        let got: Vec<Frame> = out.into_iter().collect::<Result<_, _>>().unwrap();
        prop_assert_eq!(got, frames);
    }
}
