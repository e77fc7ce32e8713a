//! Feeds arbitrary bytes to the SIA DC-09 decoder (plain and encrypted, with an AES-128
//! key): the frame decoder, the opener, the `campusgw decode dc09` JSON path and the
//! content key; asserts a decoded message re-encodes to a frame that decodes to the same
//! message (with the same pad).
#![no_main]

use campusgw_dc09::{FixedPad, Frame, Key, KeyEncoding, decode, inspect};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let key = Key::parse("0123456789ABCDEF", KeyEncoding::Text).expect("16-character key");
    if let Ok(frame) = Frame::decode(data) {
        let _ = frame.header().content_key();
        if let Ok(opened) = frame.open(Some(&key)) {
            let pad = opened.pad.clone().unwrap_or_default();
            let wire = opened
                .message
                .encode_with(Some(&key), &mut FixedPad(pad))
                .expect("a decoded message encodes");
            let again = decode(&wire, Some(&key)).expect("an encoded message decodes");
            assert_eq!(again, opened);
        }
    }
    let _ = inspect::decode_to_json(&String::from_utf8_lossy(data), Some(&key));
});
