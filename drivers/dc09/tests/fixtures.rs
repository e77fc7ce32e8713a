//! Every reference frame in `fixtures/frames.tsv` decodes, has the fields its name says,
//! and re-encodes byte for byte.

use campusgw_dc09::{
    Account, Data, Dc09Error, FixedPad, Frame, Key, KeyEncoding, MessageId, Qualifier, crc16,
    decode,
};

struct Fixture {
    name: String,
    body: String,
    crc: String,
    len: String,
}

impl Fixture {
    fn wire(&self) -> Vec<u8> {
        format!("\n{}{}{}\r", self.crc, self.len, self.body).into_bytes()
    }
}

fn fixtures() -> Vec<Fixture> {
    let text = include_str!("../fixtures/frames.tsv");
    let rows: Vec<Fixture> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(f.len(), 4, "four columns in {l:?}");
            Fixture {
                name: f[0].into(),
                body: f[1].into(),
                crc: f[2].into(),
                len: f[3].into(),
            }
        })
        .collect();
    assert_eq!(rows.len(), 11);
    rows
}

fn key() -> Key {
    Key::parse("0123456789ABCDEF", KeyEncoding::Text).expect("16 characters")
}

#[test]
fn the_fixture_crcs_and_lengths_are_crc16_arc_and_the_byte_count() {
    assert_eq!(crc16(b"123456789"), 0xBB3D, "CRC-16/ARC check value");
    for f in fixtures() {
        assert_eq!(
            format!("{:04X}", crc16(f.body.as_bytes())),
            f.crc,
            "{}",
            f.name
        );
        assert_eq!(format!("{:04X}", f.body.len()), f.len, "{}", f.name);
    }
}

#[test]
fn every_fixture_frame_decodes_and_reencodes_byte_identically() {
    for f in fixtures() {
        let opened = decode(&f.wire(), Some(&key())).unwrap_or_else(|e| panic!("{}: {e}", f.name));
        let again = opened
            .message
            .encode_with(
                Some(&key()),
                &mut FixedPad(opened.pad.clone().unwrap_or_default()),
            )
            .unwrap_or_else(|e| panic!("{}: {e}", f.name));
        assert_eq!(
            String::from_utf8_lossy(&again),
            String::from_utf8_lossy(&f.wire()),
            "{}",
            f.name
        );
    }
}

#[test]
fn every_fixture_body_decodes_without_its_envelope_too() {
    for f in fixtures() {
        let whole = decode(&f.wire(), Some(&key())).expect("wire form");
        for partial in [
            f.body.clone(),
            format!("\n{}\r", f.body),
            format!("{}{}{}", f.crc, f.len, f.body),
        ] {
            let got = decode(partial.as_bytes(), Some(&key()))
                .unwrap_or_else(|e| panic!("{}: {e}", f.name));
            assert_eq!(got, whole, "{}", f.name);
        }
    }
}

#[test]
fn the_fixture_frames_have_the_fields_their_names_say() {
    let by_name = |n: &str| {
        let f = fixtures()
            .into_iter()
            .find(|f| f.name == n)
            .expect("fixture");
        decode(&f.wire(), Some(&key())).expect("decodes")
    };
    let fire = by_name("adm_cid_fire");
    assert_eq!(fire.message.id, MessageId::AdmCid);
    assert_eq!(fire.message.sequence.value(), 1);
    assert_eq!(fire.message.account, Account::Number("1234".into()));
    let Data::ContactId(c) = &fire.message.data else {
        panic!("contact id")
    };
    assert_eq!(
        (
            c.event.qualifier,
            c.event.code,
            c.event.partition,
            c.event.zone
        ),
        (Qualifier::New, 110, 1, 3)
    );
    assert_eq!(
        fire.message.timestamp.map(|t| t.to_string()).as_deref(),
        Some("10:15:30,09-01-2025")
    );

    let with_rcv = by_name("sia_dcs_with_receiver").message;
    assert_eq!(
        (with_rcv.receiver.as_deref(), with_rcv.prefix.as_deref()),
        (Some("F3"), Some("77"))
    );
    let Data::Sia(s) = &with_rcv.data else {
        panic!("sia data")
    };
    assert_eq!(s.events().collect::<Vec<_>>(), vec![("RR", "")]);
    assert_eq!(s.blocks, vec!["Atest".to_string()]);

    let nak = by_name("nak").message;
    assert_eq!((nak.id, nak.sequence.value()), (MessageId::Nak, 0));
    assert_eq!(
        (nak.prefix.as_deref(), &nak.account),
        (Some("0"), &Account::Placeholder("0".into()))
    );

    let sealed = by_name("encrypted_sia_dcs_aes128");
    assert!(sealed.message.encrypted);
    assert_eq!(sealed.pad.as_deref(), Some(&b"ABCDEFGHIJ"[..]));
    let Data::Sia(s) = &sealed.message.data else {
        panic!("sia data")
    };
    assert_eq!(
        (s.modifier("ri"), s.events().collect::<Vec<_>>()),
        (Some("1"), vec![("FA", "003")])
    );

    let ack = by_name("encrypted_ack_aes128");
    assert_eq!(
        (ack.message.id, ack.message.encrypted, ack.pad.as_deref()),
        (MessageId::Ack, true, Some(&b"QRSTUVWXYZ"[..]))
    );
}

#[test]
fn an_encrypted_fixture_needs_its_key_and_refuses_a_wrong_one() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "encrypted_sia_dcs_aes128")
        .expect("fixture");
    let frame = Frame::decode(&f.wire()).expect("envelope and header are in clear");
    assert!(frame.is_sealed());
    assert_eq!(frame.header().account.as_number(), Some("1234"));
    assert_eq!(
        frame.clone().open(None),
        Err(Dc09Error::KeyRequired {
            account: "1234".into()
        })
    );
    let wrong = Key::parse("FEDCBA9876543210", KeyEncoding::Text).expect("key");
    assert!(matches!(
        frame.open(Some(&wrong)),
        Err(Dc09Error::Decrypt(_))
    ));
}

#[test]
fn a_corrupted_fixture_frame_is_refused_for_its_crc_or_length() {
    let f = fixtures()
        .into_iter()
        .find(|f| f.name == "adm_cid_silent_panic")
        .expect("fixture");
    let mut wire = f.wire();
    let i = wire.len() - 5;
    wire[i] = b'9';
    assert!(matches!(decode(&wire, None), Err(Dc09Error::Crc { .. })));
    let short = format!("\n{}{}{}\r", f.crc, f.len, &f.body[1..]);
    assert!(matches!(
        decode(short.as_bytes(), None),
        Err(Dc09Error::Length { .. })
    ));
}
