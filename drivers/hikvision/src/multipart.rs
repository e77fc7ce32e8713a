//! An incremental, bounded `multipart/mixed` splitter for the alertStream body (pure: bytes
//! in, parts out; it never panics and never holds more than `max_part` bytes of one part).
//!
//! ISAPI devices write each part as
//! ```text
//! --boundary\r\n
//! Content-Type: application/xml; charset="UTF-8"\r\n
//! Content-Length: 480\r\n
//! \r\n
//! <EventNotificationAlert ...>...</EventNotificationAlert>\r\n
//! ```
//! Some firmware omits `Content-Length`, so a part ends at the next delimiter, not at a
//! length. A part larger than `max_part`, or with headers over [`MAX_HEADERS`] bytes, is
//! discarded up to the next delimiter (keeping only the delimiter's length of tail) and
//! reported as [`Piece::Refused`]; the stream resynchronises instead of reconnecting, so
//! the next good part is not lost.

use bytes::{Buf, Bytes, BytesMut};

/// Longest header block of one part.
pub const MAX_HEADERS: usize = 8 * 1024;

/// One thing the splitter found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A complete part.
    Part(Part),
    /// A part thrown away, with why.
    Refused(Refusal),
}

/// A complete part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Its `Content-Type`, lowercased, without parameters (`application/xml`).
    pub content_type: String,
    /// The body, without the CRLF before the next delimiter.
    pub body: Bytes,
}

/// Why a part was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Body over the limit.
    Oversized,
    /// Header block over [`MAX_HEADERS`] or not `Name: value` lines.
    BadHeaders,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Oversized => "oversized",
            Refusal::BadHeaders => "bad_headers",
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Looking for the first delimiter (preamble).
    Preamble,
    /// Just after a delimiter line; reading headers.
    Headers,
    /// Reading the body of a part (of `len` bytes when it said so).
    Body {
        content_type: String,
        len: Option<usize>,
    },
    /// Throwing bytes away until the next delimiter.
    Discard,
}

/// The splitter state for one stream.
#[derive(Debug)]
pub struct Splitter {
    /// `\r\n--boundary`; the first delimiter may lack the leading CRLF.
    delim: Vec<u8>,
    max_part: usize,
    buf: BytesMut,
    state: State,
}

/// The `boundary` parameter of a `multipart/...` Content-Type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().to_ascii_lowercase().starts_with("multipart/") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        let v = v.trim().trim_matches('"');
        (k.trim().eq_ignore_ascii_case("boundary") && !v.is_empty() && v.len() <= 70)
            .then(|| v.to_owned())
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

impl Splitter {
    /// A splitter for `boundary` keeping at most `max_part` body bytes.
    pub fn new(boundary: &str, max_part: usize) -> Splitter {
        let mut delim = b"\r\n--".to_vec();
        // RFC 2046 §5.1.1: the delimiter line is "--" followed by the boundary as given.
        delim.extend_from_slice(boundary.as_bytes());
        Splitter {
            delim,
            max_part,
            // The first delimiter has no CRLF before it; pretend it had.
            buf: BytesMut::from(&b"\r\n"[..]),
            state: State::Preamble,
        }
    }

    /// Feeds bytes; returns every piece completed by them.
    pub fn push(&mut self, data: &[u8]) -> Vec<Piece> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        while let Some(p) = self.step() {
            out.extend(p);
        }
        out
    }

    /// Consumes through the next delimiter line, if the buffer holds one.
    fn skip_delimiter(&mut self) -> Option<()> {
        let at = find(&self.buf, &self.delim)?;
        // The rest of the delimiter line ("--" closes the body, then CRLF).
        let after = at + self.delim.len();
        let eol = find(&self.buf[after..], b"\n")?;
        self.buf.advance(after + eol + 1);
        self.state = State::Headers;
        Some(())
    }

    /// One transition; `None` when more input is needed. `Some(vec![])` means progress
    /// without a piece.
    fn step(&mut self) -> Option<Option<Piece>> {
        match &self.state {
            State::Preamble | State::Discard => {
                if self.skip_delimiter().is_none() {
                    self.trim_to_tail();
                    return None;
                }
                Some(None)
            }
            State::Headers => self.headers(),
            State::Body { .. } => self.body(),
        }
    }

    /// Keeps only what could be the start of a delimiter (bounded memory while discarding).
    fn trim_to_tail(&mut self) {
        let keep = self.delim.len() + 2 + 70;
        if self.buf.len() > keep {
            self.buf.advance(self.buf.len() - keep);
        }
    }

    fn headers(&mut self) -> Option<Option<Piece>> {
        let Some(end) = find(&self.buf, b"\r\n\r\n") else {
            if self.buf.len() > MAX_HEADERS {
                self.state = State::Discard;
                return Some(Some(Piece::Refused(Refusal::BadHeaders)));
            }
            return None;
        };
        if end > MAX_HEADERS {
            self.state = State::Discard;
            return Some(Some(Piece::Refused(Refusal::BadHeaders)));
        }
        let head = self.buf.split_to(end + 4);
        let text = String::from_utf8_lossy(&head[..end]);
        let mut content_type = String::new();
        let mut len = None;
        for line in text.split("\r\n").filter(|l| !l.is_empty()) {
            let Some((name, value)) = line.split_once(':') else {
                // The header block's CRLFs are consumed: we stand at a line start, where a
                // delimiter may begin at once. Put back the CRLF it is searched with.
                let mut rest = BytesMut::from(&b"\r\n"[..]);
                rest.extend_from_slice(&self.buf);
                self.buf = rest;
                self.state = State::Discard;
                return Some(Some(Piece::Refused(Refusal::BadHeaders)));
            };
            if name.trim().eq_ignore_ascii_case("content-type") {
                let mime = value.split(';').next().unwrap_or("");
                content_type = mime.trim().to_ascii_lowercase();
            } else if name.trim().eq_ignore_ascii_case("content-length") {
                len = value.trim().parse::<usize>().ok();
            }
        }
        if len.is_some_and(|n| n > self.max_part) {
            self.state = State::Discard;
            return Some(Some(Piece::Refused(Refusal::Oversized)));
        }
        self.state = State::Body { content_type, len };
        Some(None)
    }

    fn body(&mut self) -> Option<Option<Piece>> {
        // With a length the part is complete without waiting for the next delimiter, which
        // a device sends only with its next event.
        if let State::Body { len: Some(n), .. } = self.state {
            if self.buf.len() < n {
                return None;
            }
            let body = self.buf.split_to(n).freeze();
            let State::Body { content_type, .. } =
                std::mem::replace(&mut self.state, State::Discard)
            else {
                return None;
            };
            return Some(Some(Piece::Part(Part { content_type, body })));
        }
        match find(&self.buf, &self.delim) {
            Some(at) if at <= self.max_part => {
                let body = self.buf.split_to(at).freeze();
                let State::Body { content_type, .. } =
                    std::mem::replace(&mut self.state, State::Discard)
                else {
                    return None;
                };
                // Discard now consumes exactly the delimiter line and moves to Headers.
                Some(Some(Piece::Part(Part { content_type, body })))
            }
            Some(_) => {
                self.state = State::Discard;
                Some(Some(Piece::Refused(Refusal::Oversized)))
            }
            None if self.buf.len() > self.max_part + self.delim.len() => {
                self.state = State::Discard;
                Some(Some(Piece::Refused(Refusal::Oversized)))
            }
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(ct: &str, body: &str) -> String {
        format!(
            "--b1\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}\r\n",
            body.len()
        )
    }

    fn parts(pieces: &[Piece]) -> Vec<(String, String)> {
        pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Part(p) => Some((
                    p.content_type.clone(),
                    String::from_utf8_lossy(&p.body).into_owned(),
                )),
                Piece::Refused(_) => None,
            })
            .collect()
    }

    #[test]
    fn parts_come_out_whole_whatever_the_chunking() {
        let stream = format!(
            "{}{}--b1",
            part("application/xml; charset=\"UTF-8\"", "<a>1</a>"),
            part("application/json", "{\"x\":1}")
        );
        for chunk in [1, 2, 5, 7, 1000] {
            let mut s = Splitter::new("b1", 1024);
            let mut got = Vec::new();
            for c in stream.as_bytes().chunks(chunk) {
                got.extend(s.push(c));
            }
            // The second part completes only when its closing delimiter arrives.
            assert_eq!(
                parts(&got),
                vec![
                    ("application/xml".into(), "<a>1</a>".into()),
                    ("application/json".into(), "{\"x\":1}".into())
                ],
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn a_part_with_a_length_completes_before_the_next_delimiter_arrives() {
        let mut s = Splitter::new("b1", 1024);
        let got = s.push(part("application/xml", "<a/>").as_bytes());
        assert_eq!(parts(&got), vec![("application/xml".into(), "<a/>".into())]);
        let got = s.push(part("application/xml", "<b/>").as_bytes());
        assert_eq!(parts(&got), vec![("application/xml".into(), "<b/>".into())]);
    }

    #[test]
    fn an_oversized_part_is_refused_and_the_next_part_still_arrives() {
        let big = "x".repeat(5000);
        let stream = format!(
            "{}{}--b1",
            part("application/xml", &big),
            part("application/xml", "<ok/>")
        );
        let mut s = Splitter::new("b1", 1000);
        let mut got = Vec::new();
        for c in stream.as_bytes().chunks(300) {
            got.extend(s.push(c));
        }
        assert!(got.contains(&Piece::Refused(Refusal::Oversized)));
        assert_eq!(
            parts(&got),
            vec![("application/xml".into(), "<ok/>".into())]
        );
        assert!(s.buf.len() < 2000, "memory stays bounded");
    }

    #[test]
    fn garbage_headers_are_refused_and_garbage_without_delimiters_stays_bounded() {
        let stream = format!(
            "--b1\r\nthis is no header\r\n\r\n{}--b1",
            part("application/json", "{}")
        );
        let mut s = Splitter::new("b1", 1000);
        let got = s.push(stream.as_bytes());
        assert!(got.contains(&Piece::Refused(Refusal::BadHeaders)));
        assert_eq!(parts(&got), vec![("application/json".into(), "{}".into())]);
        let mut s = Splitter::new("b1", 1000);
        for _ in 0..1000 {
            s.push(&[0xAB; 1000]);
        }
        assert!(s.buf.len() <= MAX_HEADERS + 1000);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_in_any_chunks_never_panic_and_memory_stays_bounded(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            cut in 1usize..64,
        ) {
            let mut s = Splitter::new("b1", 256);
            for c in data.chunks(cut) {
                for p in s.push(c) {
                    if let Piece::Part(p) = p {
                        proptest::prop_assert!(p.body.len() <= 256);
                    }
                }
                proptest::prop_assert!(s.buf.len() <= MAX_HEADERS + 256 + 128);
            }
        }

        #[test]
        fn the_parts_of_a_valid_stream_survive_any_chunking(
            bodies in proptest::collection::vec("[a-z<>/ ]{0,40}", 1..6),
            cut in 1usize..50,
        ) {
            let mut stream = String::new();
            for b in &bodies {
                stream.push_str(&part("application/xml", b));
            }
            let mut s = Splitter::new("b1", 1024);
            let mut got = Vec::new();
            for c in stream.as_bytes().chunks(cut) {
                got.extend(s.push(c));
            }
            let want: Vec<(String, String)> =
                bodies.iter().map(|b| ("application/xml".to_owned(), b.clone())).collect();
            proptest::prop_assert_eq!(parts(&got), want);
        }
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary_of("multipart/mixed; boundary=boundary").as_deref(),
            Some("boundary")
        );
        assert_eq!(
            boundary_of("multipart/mixed;boundary=\"--MIME_boundary\"").as_deref(),
            Some("--MIME_boundary")
        );
        assert_eq!(boundary_of("application/xml"), None);
        assert_eq!(boundary_of("multipart/mixed"), None);
    }
}
