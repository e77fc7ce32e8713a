//! Feeds arbitrary bytes, as the city fire-monitoring centre would send them, to the
//! transmitting UITD (`campusgw_gb26875::transmit::UitdState::handle`): every decoded frame
//! gets an answer decision, and every reply it writes must itself encode and decode.
#![no_main]

use bytes::BytesMut;
use campusgw_gb26875::codec::{Address, Frame, FrameDecoder, TimeLabel, Version};
use campusgw_gb26875::transmit::{Identity, UitdState};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let id = Identity {
        uitd: Address::new(889).expect("48 bits"),
        centre: Address::new(88888).expect("48 bits"),
        version: Version::V1_1,
    };
    let mut state = UitdState::new(id);
    let mut decoder = FrameDecoder::new();
    let mut buf = BytesMut::from(data);
    while let Some(item) = decoder.next_item(&mut buf) {
        let Ok(mut frame) = item else { continue };
        // Half the frames addressed to us, so the answers past the address check run too.
        if data.len() % 2 == 0 {
            frame.destination = id.uitd;
        }
        let handled = state.handle(&frame, TimeLabel::default());
        if let Some(reply) = handled.reply {
            let bytes = reply.encode().expect("a reply always encodes");
            assert_eq!(Frame::decode(&bytes).ok(), Some(reply));
        }
    }
});
