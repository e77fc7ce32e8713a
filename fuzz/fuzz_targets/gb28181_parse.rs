//! Feeds arbitrary bytes to what the GB/T 28181 user agent reads from the platform: the SIP
//! parser (`campusgw-sip`), the digest challenge parser, and the MANSCDP reader (charset
//! detection, bounded XML tree) applied to the body; none may panic.
#![no_main]

use campusgw_gb28181::manscdp;
use campusgw_sip::{digest, msg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = msg::parse(data) {
        let _ = (m.code(), m.method(), m.branch(), m.cseq(), m.request_uri());
        if let Some(v) = m.header("www-authenticate") {
            if let Some(c) = digest::parse_challenge(v) {
                let h = digest::authorization(&c, "u", "p", "REGISTER", "sip:x@3402000000", "c");
                assert!(digest::verify(&h, &c, "u", "p", "REGISTER"));
            }
        }
        if let Ok(d) = manscdp::parse(&m.body) {
            let _ = (d.kind(), d.root.text_of("SumNum"));
        }
    }
    // the body alone, as the reader also sees it
    let _ = manscdp::parse(data);
});
