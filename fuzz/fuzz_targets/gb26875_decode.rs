//! Feeds arbitrary bytes to the GB/T 26875.3 parsers: the one-frame decoder, the ADU
//! decoder, the streaming decoder in chunks whose sizes come from the input, and the
//! mapping of every decoded upload to events (with their de-duplication keys).
#![no_main]

use bytes::BytesMut;
use campusgw_gb26875::codec::{Adu, Frame, FrameDecoder, MAX_FRAME_LEN};
use campusgw_gb26875::mapping::{LinkId, UitdProfile, events_for};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        if let Ok(Some(adu)) = frame.adu() {
            for e in events_for(&frame, &adu, &UitdProfile::default(), data.len() % 2 == 0, LinkId(1)) {
                assert!(e.origin_ref.is_some(), "every upload event carries a key");
            }
        }
        assert_eq!(frame.encode().ok().as_deref(), Some(data));
    }
    let _ = Adu::decode(data);

    let step = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        while let Some(item) = decoder.next_item(&mut buf) {
            if let Ok(frame) = item {
                let _ = frame.adu();
            }
        }
        assert!(buf.len() < MAX_FRAME_LEN);
    }
});
