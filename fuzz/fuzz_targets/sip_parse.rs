//! Feeds arbitrary bytes to the paging UAC's SIP parser (what speakers send back over UDP),
//! then to the header helpers, the SDP answer reader and the digest challenge parser the UAC
//! applies to a parsed answer; none may panic.
#![no_main]

use campusgw_paging::rtp::Codec;
use campusgw_paging::sip::{digest, msg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = msg::parse(data) {
        let _ = (m.code(), m.method(), m.call_id(), m.cseq(), m.to_tag(), m.contact_uri());
        let _ = msg::sdp_answer(&m.body_text(), &[Codec::Pcma, Codec::Pcmu]);
        if let Some(v) = m.header("www-authenticate") {
            if let Some(c) = digest::parse_challenge(v) {
                let h = digest::authorization(&c, "u", "p", "INVITE", "sip:x@127.0.0.1", "c");
                assert!(digest::verify(&h, &c, "u", "p", "INVITE"));
            }
        }
    }
});
