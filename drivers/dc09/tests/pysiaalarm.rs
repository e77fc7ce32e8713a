//! Interop with pysiaalarm 3.2.2, an independent DC-09 receiver (the one Home Assistant
//! uses), both ways: it parses and accepts the frames our encoder writes (plain, AES-128,
//! AES-256), and our decoder reads the ACK / NAK it answers with.
//!
//! Needs a python with the pysiaalarm release `scripts/test` pins: `$CAMPUSGW_PYTHON` (set by
//! `scripts/test`), else the project's `.venv/bin/python`, else `python3`. Without it the
//! test fails saying so; it does not pass silently. The peer script is
//! `tests/pysiaalarm_peer.py`.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use campusgw_dc09::{
    Account, CidData, CidEvent, Data, FixedPad, Key, KeyEncoding, Message, MessageId, Qualifier,
    Sequence, SiaData, TimeWindow, Timestamp, decode,
};
use chrono::{Duration, Utc};
use serde_json::{Value, json};

mod support;

/// Sends each `(frame, key)` to pysiaalarm and returns its verdicts, in order.
fn pysiaalarm(frames: &[(Vec<u8>, Option<&str>)]) -> Vec<Value> {
    let python = support::python_with("pysiaalarm");
    let mut child = Command::new(&python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/pysiaalarm_peer.py"
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pysiaalarm_peer.py");
    let mut stdin = child.stdin.take().expect("piped stdin");
    for (frame, key) in frames {
        // pysiaalarm's servers strip the LF and CR before `SIAEvent.from_line`.
        let inner = String::from_utf8(frame[1..frame.len() - 1].to_vec()).expect("ascii");
        let line = json!({"frame": inner, "key": key, "account": "1234"});
        writeln!(stdin, "{line}").expect("write to the peer");
    }
    drop(stdin);
    let out: Vec<Value> = BufReader::new(child.stdout.take().expect("piped stdout"))
        .lines()
        .map(|l| serde_json::from_str(&l.expect("read the peer")).expect("json line"))
        .collect();
    assert!(
        child.wait().expect("peer exits").success(),
        "the peer script failed"
    );
    assert_eq!(out.len(), frames.len(), "one verdict per frame: {out:?}");
    out
}

fn cid(seq: u16, code: u16, zone: u16, encrypted: bool, ts: Timestamp) -> Message {
    Message {
        encrypted,
        receiver: Some("0".into()),
        data: Data::ContactId(CidData {
            account: Some("1234".into()),
            event: CidEvent {
                qualifier: Qualifier::New,
                code,
                partition: 1,
                zone,
            },
        }),
        timestamp: Some(ts),
        ..Message::new(
            MessageId::AdmCid,
            Sequence::new(seq).expect("seq"),
            Account::Number("1234".into()),
        )
    }
}

const KEY128: &str = "0123456789ABCDEF";
const KEY256: &str = "0123456789ABCDEF0123456789abcdef";

#[test]
fn pysiaalarm_accepts_our_plain_and_encrypted_frames_and_we_read_its_replies() {
    let now = Utc::now();
    let ts = Timestamp::new(now);
    let k128 = Key::parse(KEY128, KeyEncoding::Text).expect("key");
    let k256 = Key::parse(KEY256, KeyEncoding::Text).expect("key");
    let mut pad = FixedPad(b"padding-chars".to_vec());
    let sia = Message {
        id: MessageId::SiaDcs,
        data: Data::Sia(SiaData::event(Some("1234".into()), "1", "FA", "003")),
        ..cid(2, 0, 0, true, ts)
    };
    let frames = vec![
        (cid(4, 122, 17, false, ts).encode().expect("plain"), None),
        (
            sia.encode_with(Some(&k128), &mut pad).expect("aes-128"),
            Some(KEY128),
        ),
        (
            cid(5, 120, 9, true, ts)
                .encode_with(Some(&k256), &mut pad)
                .expect("aes-256"),
            Some(KEY256),
        ),
    ];
    let verdicts = pysiaalarm(&frames);

    let expect = [
        ("ADM-CID", "0004", "HA", "017", None),
        ("SIA-DCS", "0002", "FA", "1", Some(&k128)),
        ("ADM-CID", "0005", "PA", "009", Some(&k256)),
    ];
    for (v, (ty, seq, code, ri, key)) in verdicts.iter().zip(expect) {
        assert_eq!(v["valid_message"], true, "pysiaalarm checks our CRC: {v}");
        assert_eq!(v["valid_timestamp"], true, "{v}");
        assert_eq!(
            (v["message_type"].as_str(), v["sequence"].as_str()),
            (Some(ty), Some(seq)),
            "{v}"
        );
        assert_eq!(
            (v["code"].as_str(), v["ri"].as_str()),
            (Some(code), Some(ri)),
            "{v}"
        );
        assert_eq!(
            (v["receiver"].as_str(), v["line"].as_str()),
            (Some("R0"), Some("L0")),
            "{v}"
        );
        assert_eq!(v["response"], "ACK", "{v}");

        let reply = decode(v["reply"].as_str().expect("reply").as_bytes(), key)
            .expect("we decode pysiaalarm's ACK");
        let ack = reply.message;
        assert_eq!(
            (ack.id, ack.sequence.value().to_string()),
            (MessageId::Ack, seq.trim_start_matches('0').to_string())
        );
        assert_eq!(ack.account, Account::Number("1234".into()));
        assert_eq!(
            ack.encrypted,
            key.is_some(),
            "an encrypted frame gets an encrypted ACK"
        );
        if key.is_some() {
            let window = TimeWindow {
                past: 600,
                future: 600,
            };
            window
                .check_present(ack.timestamp, now)
                .expect("the encrypted ACK carries pysiaalarm's clock");
        }
    }
}

#[test]
fn pysiaalarm_naks_a_stale_frame_and_refuses_a_bad_crc_and_we_read_its_nak() {
    let now = Utc::now();
    let stale = cid(
        6,
        130,
        2,
        false,
        Timestamp::new(now - Duration::seconds(120)),
    )
    .encode()
    .expect("plain");
    let mut bad_crc = cid(7, 130, 2, false, Timestamp::new(now))
        .encode()
        .expect("plain");
    bad_crc[1] = if bad_crc[1] == b'0' { b'1' } else { b'0' };
    let verdicts = pysiaalarm(&[(stale, None), (bad_crc, None)]);

    assert_eq!(
        (
            verdicts[0]["valid_timestamp"].as_bool(),
            verdicts[0]["response"].as_str()
        ),
        (Some(false), Some("NAK"))
    );
    let nak = decode(
        verdicts[0]["reply"].as_str().expect("reply").as_bytes(),
        None,
    )
    .expect("we decode pysiaalarm's NAK")
    .message;
    assert_eq!(
        (nak.id, nak.sequence.value(), &nak.account),
        (MessageId::Nak, 0, &Account::Placeholder("0".into()))
    );
    TimeWindow {
        past: 600,
        future: 600,
    }
    .check_present(nak.timestamp, now)
    .expect("the NAK carries pysiaalarm's clock");

    assert_eq!(
        verdicts[1]["valid_message"], false,
        "pysiaalarm checks the CRC too: {}",
        verdicts[1]
    );
}
