//! Feeds arbitrary bytes to the DL/T 645-2007 codec: the one-frame decoder, the streaming
//! decoder in uneven chunks (as a serial line delivers them), the read and read-address
//! answer parsers and every data identifier's value decoder; asserts a decoded frame
//! re-encodes to bytes that decode to the same frame.
#![no_main]

use campusgw_dlt645::codec::{Decoder, Frame, ReadAnswer};
use campusgw_dlt645::ids::QUANTITIES;
use libfuzzer_sys::fuzz_target;

fn check(frame: &Frame) {
    let again = Frame::decode(&frame.encode(4)).expect("an encoded frame decodes");
    assert_eq!(&again, frame);
    let _ = frame.address_answer();
    if let Ok(ReadAnswer::Data { value, .. }) = frame.read_answer() {
        for q in QUANTITIES {
            let _ = q.decode(&value);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        check(&frame);
    }
    let mut d = Decoder::new();
    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    for chunk in data.chunks(step) {
        d.push(chunk);
        while let Some(r) = d.next_frame() {
            if let Ok(frame) = r {
                check(&frame);
            }
        }
    }
    let _ = d.finish();
});
