//! Feeds arbitrary bytes to the RTP parser the speaker simulator and multicast listener use,
//! and through the simulator's stream check; neither may panic, and a parsed payload lies
//! within the datagram.
#![no_main]

use campusgw_paging::rtp;
use campusgw_paging::sim::{RtpCheck, RtpReport};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = rtp::parse(data) {
        assert!(p.payload.len() + rtp::HEADER_LEN <= data.len());
    }
    let mut check = RtpCheck::default();
    let mut report = RtpReport::default();
    let now = tokio::time::Instant::now();
    for chunk in data.chunks(172) {
        check.on_packet(chunk, now, &mut report);
    }
});
