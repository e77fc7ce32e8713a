//! Feeds arbitrary bytes to the Hikvision ISAPI parsers of `drivers/hikvision`: the
//! alertStream multipart splitter (the input cut at every 7th byte, then whole), each part it
//! yields parsed as XML and as JSON and mapped to events, and the `ResponseStatus` leaf
//! reader; nothing may panic, no part exceeds the splitter's bound, and a mapped event always
//! carries its de-duplication key.
#![no_main]

use bytes::Bytes;
use campusgw_hikvision::alert::{self, Mapped};
use campusgw_hikvision::multipart::{Part, Piece, Splitter};
use libfuzzer_sys::fuzz_target;

const MAX_PART: usize = 4096;

fn check(part: &Part) {
    assert!(part.body.len() <= MAX_PART);
    if let Ok(a) = alert::parse_part(part) {
        if let Mapped::Event(e) = alert::map(&a, &[]) {
            assert!(e.origin_ref.is_some());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut split = Splitter::new("MIME_boundary", MAX_PART);
    for chunk in data.chunks(7) {
        for piece in split.push(chunk) {
            if let Piece::Part(p) = piece {
                check(&p);
            }
        }
    }
    for ct in ["application/xml", "application/json", ""] {
        check(&Part {
            content_type: ct.into(),
            body: Bytes::copy_from_slice(&data[..data.len().min(MAX_PART)]),
        });
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = campusgw_hikvision::command::xml_leaf(text, "statusCode");
        let _ = campusgw_hikvision::multipart::boundary_of(text);
    }
});
