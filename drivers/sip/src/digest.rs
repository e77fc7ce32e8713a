//! HTTP digest authentication as SIP uses it (RFC 3261 §22.4, RFC 2617 §3.2.2; MD5 and
//! `qop=auth`, which is what IP speakers and paging gateways implement).

use md5::{Digest, Md5};

/// The parameters of a `WWW-Authenticate` / `Proxy-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// Whether `qop` offers `auth`.
    pub qop_auth: bool,
    /// `algorithm` (only MD5 is answered).
    pub algorithm: Option<String>,
}

/// Parses a `Digest` challenge; `None` for another scheme or one without realm and nonce.
pub fn parse_challenge(value: &str) -> Option<Challenge> {
    let rest = value.trim().strip_prefix("Digest")?.trim_start();
    let mut c = Challenge::default();
    for (k, v) in params(rest) {
        match k.to_ascii_lowercase().as_str() {
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "opaque" => c.opaque = Some(v),
            "qop" => c.qop_auth = v.split(',').any(|q| q.trim() == "auth"),
            "algorithm" => c.algorithm = Some(v),
            _ => {}
        }
    }
    // RFC 2617 §3.2.1: values are tokens or quoted strings; one holding a quote or a
    // backslash could not be echoed back inside our quoted answer, so it is refused.
    let bad = |v: &str| v.contains(['"', '\\']);
    if bad(&c.realm) || bad(&c.nonce) || c.opaque.as_deref().is_some_and(bad) {
        return None;
    }
    (!c.nonce.is_empty()).then_some(c)
}

/// `k=v, k="v, w"` pairs.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_owned(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.push((key, value));
        rest = next;
    }
    out
}

fn md5_hex(s: &str) -> String {
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Authorization` header value answering `c` for `method uri`.
pub fn authorization(
    c: &Challenge,
    user: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
) -> String {
    let ha1 = md5_hex(&format!("{user}:{}:{password}", c.realm));
    let ha2 = md5_hex(&format!("{method}:{uri}"));
    let mut h = format!(
        "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm=MD5",
        c.realm, c.nonce
    );
    if c.qop_auth {
        let nc = "00000001";
        let response = md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", c.nonce));
        h.push_str(&format!(
            ", response=\"{response}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
        ));
    } else {
        let response = md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce));
        h.push_str(&format!(", response=\"{response}\""));
    }
    if let Some(o) = &c.opaque {
        h.push_str(&format!(", opaque=\"{o}\""));
    }
    h
}

/// Whether an `Authorization` header value answers `c` correctly (for the simulator).
pub fn verify(header: &str, c: &Challenge, user: &str, password: &str, method: &str) -> bool {
    let Some(rest) = header.trim().strip_prefix("Digest") else {
        return false;
    };
    let p: std::collections::HashMap<String, String> = params(rest).into_iter().collect();
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("username") != user || get("nonce") != c.nonce {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{}:{password}", c.realm));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let want = if get("qop") == "auth" {
        md5_hex(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            c.nonce,
            get("nc"),
            get("cnonce")
        ))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", c.nonce))
    };
    get("response") == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc2617_example_gives_its_published_response() {
        // RFC 2617 §3.5 (with qop=auth, method GET): response 6629fae49393a05397450978507c4ef1
        let c = parse_challenge(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        assert!(c.qop_auth);
        let h = authorization(
            &c,
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert!(
            h.contains("response=\"6629fae49393a05397450978507c4ef1\""),
            "{h}"
        );
        assert!(h.contains("opaque=\"5ccc069c403ebaf9f0171e9517f40e41\""));
        assert!(verify(&h, &c, "Mufasa", "Circle Of Life", "GET"));
        assert!(!verify(&h, &c, "Mufasa", "wrong", "GET"));
    }

    #[test]
    fn a_challenge_without_qop_is_answered_the_rfc2069_way() {
        let c = parse_challenge(r#"Digest realm="paging", nonce="abc""#).unwrap();
        let h = authorization(&c, "u", "p", "INVITE", "sip:spk@10.0.0.9", "x");
        assert!(!h.contains("qop"));
        assert!(verify(&h, &c, "u", "p", "INVITE"));
        assert!(parse_challenge("Basic realm=\"x\"").is_none());
        // found by fuzz/sip_parse: an unquoted value with a quote in it
        assert!(parse_challenge("Digest realm=\"r\", nonce=+n\"").is_none());
    }
}
