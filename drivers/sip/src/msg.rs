//! SIP messages (RFC 3261 §7): a pure parser for what arrives over UDP and a writer for the
//! requests and responses campusgw sends.
//!
//! The parser never panics and allocates only after the datagram is known to be within
//! [`MAX_MESSAGE`]. It accepts compact header names (RFC 3261 §7.3.3), LWS after the colon,
//! CRLF or bare LF line ends (a firmware quirk seen on cheap speakers), and a body cut to
//! `Content-Length`. Anything else is an error the caller counts and drops.

use std::borrow::Cow;
use std::fmt::Write as _;

/// A UDP datagram bigger than this is not SIP we accept (RFC 3261 §18.1.1 keeps UDP
/// messages under the path MTU; 8 KiB is generous).
pub const MAX_MESSAGE: usize = 8192;
/// Headers per message at most.
const MAX_HEADERS: usize = 64;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine {
    /// `METHOD uri SIP/2.0`
    Request {
        /// INVITE, BYE, ...
        method: String,
        /// Request-URI.
        uri: String,
    },
    /// `SIP/2.0 code reason`
    Response {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
    },
}

/// A parsed SIP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Request or status line.
    pub start: StartLine,
    /// Headers in order, names in their long lowercase form.
    pub headers: Vec<(String, String)>,
    /// The body, as bytes (GB/T 28181 bodies are often GB2312).
    pub body: Vec<u8>,
}

/// Why bytes are not a SIP message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Over [`MAX_MESSAGE`].
    #[error("message too large ({0} bytes)")]
    TooLarge(usize),
    /// Start line or headers not UTF-8, or no line structure.
    #[error("not a sip message: {0}")]
    Malformed(&'static str),
    /// The status code is not three digits.
    #[error("bad status code")]
    BadStatus,
}

/// RFC 3261 §7.3.3 compact forms.
fn long_name(name: &str) -> String {
    let n = name.trim().to_ascii_lowercase();
    match n.as_str() {
        "v" => "via",
        "f" => "from",
        "t" => "to",
        "i" => "call-id",
        "m" => "contact",
        "l" => "content-length",
        "c" => "content-type",
        "k" => "supported",
        _ => return n,
    }
    .to_owned()
}

/// Parses one datagram.
///
/// # Errors
/// [`ParseError`] when it is not a SIP/2.0 message.
pub fn parse(bytes: &[u8]) -> Result<Message, ParseError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(ParseError::TooLarge(bytes.len()));
    }
    let (head, rest) = split_head(bytes).ok_or(ParseError::Malformed("no end of headers"))?;
    let head = std::str::from_utf8(head).map_err(|_| ParseError::Malformed("not utf-8"))?;
    let mut lines = head.lines();
    let start = parse_start(lines.next().ok_or(ParseError::Malformed("empty"))?)?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with([' ', '\t']) {
            // RFC 3261 §7.3.1: a folded continuation line
            let last = headers
                .last_mut()
                .ok_or(ParseError::Malformed("continuation first"))?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (name, value) = line
            .split_once(':')
            .ok_or(ParseError::Malformed("header without colon"))?;
        if headers.len() == MAX_HEADERS {
            return Err(ParseError::Malformed("too many headers"));
        }
        headers.push((long_name(name), value.trim().to_owned()));
    }
    let mut m = Message {
        start,
        headers,
        body: Vec::new(),
    };
    let len = match m.header("content-length") {
        Some(v) => v
            .parse::<usize>()
            .map_err(|_| ParseError::Malformed("bad content-length"))?,
        None => rest.len(),
    };
    m.body = rest[..len.min(rest.len())].to_vec();
    Ok(m)
}

fn split_head(b: &[u8]) -> Option<(&[u8], &[u8])> {
    if let Some(i) = b.windows(4).position(|w| w == b"\r\n\r\n") {
        return Some((&b[..i], &b[i + 4..]));
    }
    b.windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (&b[..i], &b[i + 2..]))
}

fn parse_start(line: &str) -> Result<StartLine, ParseError> {
    let mut parts = line.trim_end().splitn(3, ' ');
    let a = parts.next().unwrap_or_default();
    let b = parts
        .next()
        .ok_or(ParseError::Malformed("short start line"))?;
    let c = parts.next().unwrap_or_default();
    if a == "SIP/2.0" {
        if b.len() != 3 {
            return Err(ParseError::BadStatus);
        }
        let code = b.parse::<u16>().map_err(|_| ParseError::BadStatus)?;
        if !(100..700).contains(&code) {
            return Err(ParseError::BadStatus);
        }
        return Ok(StartLine::Response {
            code,
            reason: c.to_owned(),
        });
    }
    if c != "SIP/2.0" || a.is_empty() || !a.bytes().all(|x| x.is_ascii_uppercase()) {
        return Err(ParseError::Malformed("not a sip/2.0 start line"));
    }
    Ok(StartLine::Request {
        method: a.to_owned(),
        uri: b.to_owned(),
    })
}

impl Message {
    /// The first value of a header (long lowercase name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of a header, in order.
    pub fn all(&self, name: &str) -> impl Iterator<Item = &str> {
        self.headers
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The status code of a response.
    pub fn code(&self) -> Option<u16> {
        match self.start {
            StartLine::Response { code, .. } => Some(code),
            StartLine::Request { .. } => None,
        }
    }

    /// The method of a request.
    pub fn method(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { method, .. } => Some(method),
            StartLine::Response { .. } => None,
        }
    }

    /// `Call-ID`.
    pub fn call_id(&self) -> Option<&str> {
        self.header("call-id")
    }

    /// CSeq number and method.
    pub fn cseq(&self) -> Option<(u32, &str)> {
        let (n, m) = self.header("cseq")?.split_once(' ')?;
        Some((n.trim().parse().ok()?, m.trim()))
    }

    /// The `tag` parameter of the To header.
    pub fn to_tag(&self) -> Option<&str> {
        param(self.header("to")?, "tag")
    }

    /// The body as text (invalid UTF-8 replaced): for bodies that are ASCII, such as SDP.
    pub fn body_text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    /// The Request-URI of a request.
    pub fn request_uri(&self) -> Option<&str> {
        match &self.start {
            StartLine::Request { uri, .. } => Some(uri),
            StartLine::Response { .. } => None,
        }
    }

    /// The `branch` parameter of the top Via.
    pub fn branch(&self) -> Option<&str> {
        param(self.header("via")?, "branch")
    }

    /// The URI inside the Contact header.
    pub fn contact_uri(&self) -> Option<&str> {
        name_addr_uri(self.header("contact")?)
    }
}

/// A `;name=value` parameter of a header value (outside `<...>`).
pub fn param<'a>(value: &'a str, name: &str) -> Option<&'a str> {
    let after = value.rfind('>').map_or(value, |i| &value[i + 1..]);
    after.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The URI of a name-addr (`"x" <sip:a@b>;p`) or addr-spec (`sip:a@b;p`).
pub fn name_addr_uri(v: &str) -> Option<&str> {
    match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => Some(&v[a + 1..b]),
        _ => v.split(';').next().map(str::trim).filter(|s| !s.is_empty()),
    }
}

/// Writes a message: start line, headers (with Content-Length), blank line, body.
pub fn write(start: &str, headers: &[(&str, String)], body: impl AsRef<[u8]>) -> Vec<u8> {
    let body = body.as_ref();
    let mut s = String::with_capacity(512 + body.len());
    s.push_str(start);
    s.push_str("\r\n");
    for (n, v) in headers {
        // writing to a String cannot fail
        let _ = write!(s, "{n}: {v}\r\n");
    }
    let _ = write!(s, "Content-Length: {}\r\n\r\n", body.len());
    let mut out = s.into_bytes();
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_response_with_compact_headers_and_bare_line_feeds_parses() {
        let raw = "SIP/2.0 200 OK\nv: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\nt: <sip:a@b>;tag=77\ni: abc\nCSeq: 2 INVITE\nm: <sip:spk@10.0.0.9:5062>\nl: 4\n\nv=0\nextra";
        let m = parse(raw.as_bytes()).unwrap();
        assert_eq!(m.code(), Some(200));
        assert_eq!(m.call_id(), Some("abc"));
        assert_eq!(m.cseq(), Some((2, "INVITE")));
        assert_eq!(m.to_tag(), Some("77"));
        assert_eq!(m.contact_uri(), Some("sip:spk@10.0.0.9:5062"));
        assert_eq!(m.body, b"v=0\n");
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        for raw in [
            &b""[..],
            b"hello",
            b"SIP/2.0 2000 OK\r\n\r\n",
            b"SIP/2.0 abc OK\r\n\r\n",
            b"invite sip:x SIP/2.0\r\n\r\n",
            b"SIP/2.0 200 OK\r\nno colon\r\n\r\n",
            b"SIP/2.0 200 OK\r\nContent-Length: x\r\n\r\n",
            &[0xFF, 0xFE, b'\r', b'\n', b'\r', b'\n'],
        ] {
            assert!(parse(raw).is_err(), "{raw:?}");
        }
        assert_eq!(
            parse(&[b'a'; MAX_MESSAGE + 1]),
            Err(ParseError::TooLarge(MAX_MESSAGE + 1))
        );
    }

    #[test]
    fn a_gb2312_body_is_kept_as_bytes_and_written_back_unchanged() {
        let body: &[u8] = b"<Notify><AlarmDescription>\xd2\xbb\xbc\xfc</AlarmDescription></Notify>";
        let raw = write(
            "MESSAGE sip:34020000002000000001@3402000000 SIP/2.0",
            &[
                ("Call-ID", "c1".to_owned()),
                ("CSeq", "20 MESSAGE".to_owned()),
            ],
            body,
        );
        let m = parse(&raw).unwrap();
        assert_eq!(m.method(), Some("MESSAGE"));
        assert_eq!(m.request_uri(), Some("sip:34020000002000000001@3402000000"));
        assert_eq!(m.body, body);
        assert_eq!(m.cseq(), Some((20, "MESSAGE")));
    }

    proptest::proptest! {
        #[test]
        fn the_parser_never_panics_on_arbitrary_bytes(b in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(m) = parse(&b) {
                let _ = (m.cseq(), m.to_tag(), m.contact_uri(), m.branch(), m.body_text());
            }
        }

        #[test]
        fn the_parser_never_panics_on_damaged_answers(cut in 0usize..300, flip in 0usize..300, byte in proptest::num::u8::ANY) {
            let mut b = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx\r\nTo: <sip:a@b>;tag=1\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 40\r\n\r\nv=0\r\nc=IN IP4 1.2.3.4\r\nm=audio 5 RTP/AVP 8\r\n".to_vec();
            let n = b.len();
            b[flip % n] = byte;
            b.truncate(cut.min(n));
            if let Ok(m) = parse(&b) {
                assert!(m.body.len() <= n);
            }
        }
    }
}
