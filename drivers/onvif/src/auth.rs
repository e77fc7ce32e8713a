//! Camera authentication: WS-UsernameToken (in the SOAP header) and HTTP Digest.
//!
//! ONVIF Core §5.12 requires WS-UsernameToken with `PasswordDigest`; many cameras also (or
//! only) accept HTTP Digest (RFC 7616). The driver sends a UsernameToken on every call and
//! answers a `401` carrying a Digest challenge by retrying once with an `Authorization`
//! header (the challenge is kept for the next calls).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, SecondsFormat, Utc};
use md5::Md5;
use sha1::{Digest, Sha1};

use crate::xml::escape;

/// OASIS WSS UsernameToken Profile 1.0: the `Type` of a digest password.
const PASSWORD_DIGEST: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest";
/// OASIS WSS SOAP Message Security 1.0: the `EncodingType` of a Base64 nonce.
const BASE64_BINARY: &str = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary";

/// `Base64(SHA1(nonce ‖ created ‖ password))` (WSS UsernameToken Profile 1.0 §3.1).
pub fn password_digest(nonce: &[u8], created: &str, password: &str) -> String {
    let mut h = Sha1::new();
    h.update(nonce);
    h.update(created.as_bytes());
    h.update(password.as_bytes());
    B64.encode(h.finalize())
}

/// The `<wsse:Security>` header for one request; `created` is the camera's clock as we
/// estimate it (our clock plus the measured skew), since cameras reject tokens whose
/// Created time is far from their own.
pub fn username_token_header(
    user: &str,
    password: &str,
    nonce: &[u8; 16],
    created: DateTime<Utc>,
) -> String {
    let created = created.to_rfc3339_opts(SecondsFormat::Secs, true);
    let digest = password_digest(nonce, &created, password);
    format!(
        concat!(
            r#"<wsse:Security s:mustUnderstand="1" xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" "#,
            r#"xmlns:wsu="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd">"#,
            r#"<wsse:UsernameToken><wsse:Username>{user}</wsse:Username>"#,
            r#"<wsse:Password Type="{pt}">{digest}</wsse:Password>"#,
            r#"<wsse:Nonce EncodingType="{et}">{nonce}</wsse:Nonce>"#,
            r#"<wsu:Created>{created}</wsu:Created></wsse:UsernameToken></wsse:Security>"#
        ),
        user = escape(user),
        pt = PASSWORD_DIGEST,
        digest = digest,
        et = BASE64_BINARY,
        nonce = B64.encode(nonce),
        created = created,
    )
}

/// A parsed `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestChallenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back.
    pub opaque: Option<String>,
    /// Whether `qop` offers `auth`.
    pub qop_auth: bool,
    /// Requests answered with this challenge so far (the `nc` counter).
    pub count: u32,
}

impl DigestChallenge {
    /// Parses a `WWW-Authenticate` value; `None` unless it is an MD5 Digest challenge.
    pub fn parse(header: &str) -> Option<DigestChallenge> {
        let rest = header.trim().strip_prefix("Digest")?.trim();
        let mut realm = None;
        let mut nonce = None;
        let mut opaque = None;
        let mut qop_auth = false;
        for (k, v) in params(rest) {
            match k.to_ascii_lowercase().as_str() {
                "realm" => realm = Some(v),
                "nonce" => nonce = Some(v),
                "opaque" => opaque = Some(v),
                "qop" => qop_auth = v.split(',').any(|q| q.trim() == "auth"),
                // SHA-256 digest is rare on cameras; we only offer MD5 and say so by refusing.
                "algorithm" if !v.eq_ignore_ascii_case("MD5") => return None,
                _ => {}
            }
        }
        Some(DigestChallenge {
            realm: realm?,
            nonce: nonce?,
            opaque,
            qop_auth,
            count: 0,
        })
    }

    /// The `Authorization` header value for `method uri` (RFC 7616 §3.4.1, MD5).
    pub fn authorization(
        &mut self,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        cnonce: &str,
    ) -> String {
        self.count = self.count.wrapping_add(1);
        let ha1 = md5_hex(&format!("{user}:{}:{password}", self.realm));
        let ha2 = md5_hex(&format!("{method}:{uri}"));
        let nc = format!("{:08x}", self.count);
        let mut h = format!(
            "Digest username=\"{user}\", realm=\"{}\", nonce=\"{}\", uri=\"{uri}\", algorithm=MD5",
            self.realm, self.nonce
        );
        let response = if self.qop_auth {
            h.push_str(&format!(", qop=auth, nc={nc}, cnonce=\"{cnonce}\""));
            md5_hex(&format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce))
        } else {
            md5_hex(&format!("{ha1}:{}:{ha2}", self.nonce))
        };
        h.push_str(&format!(", response=\"{response}\""));
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        h
    }
}

/// Checks an `Authorization: Digest ...` header (MD5, `qop=auth` or none) against the
/// credentials; the server side, used by the simulator.
pub fn verify_digest(header: &str, user: &str, password: &str, realm: &str, method: &str) -> bool {
    let Some(rest) = header.trim().strip_prefix("Digest") else {
        return false;
    };
    let p: std::collections::HashMap<String, String> = params(rest).into_iter().collect();
    let get = |k: &str| p.get(k).map(String::as_str).unwrap_or_default();
    if get("username") != user || get("realm") != realm {
        return false;
    }
    let ha1 = md5_hex(&format!("{user}:{realm}:{password}"));
    let ha2 = md5_hex(&format!("{method}:{}", get("uri")));
    let expected = if get("qop") == "auth" {
        md5_hex(&format!(
            "{ha1}:{}:{}:{}:auth:{ha2}",
            get("nonce"),
            get("nc"),
            get("cnonce")
        ))
    } else {
        md5_hex(&format!("{ha1}:{}:{ha2}", get("nonce")))
    };
    get("response") == expected
}

/// Splits `k=v, k="v, w"` auth parameters.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once('=') {
        let k = k.trim().trim_start_matches(',').trim().to_owned();
        let after = after.trim_start();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.split_once('"') {
                Some((v, n)) => (v.to_owned(), n),
                None => (q.to_owned(), ""),
            }
        } else {
            match after.split_once(',') {
                Some((v, n)) => (v.trim().to_owned(), n),
                None => (after.trim().to_owned(), ""),
            }
        };
        out.push((k, v));
        rest = next;
    }
    out
}

fn md5_hex(s: &str) -> String {
    let d = Md5::digest(s.as_bytes());
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_programmers_guide_username_token_vector_gives_its_digest() {
        // ONVIF Application Programmer's Guide §6.1.1.3.
        let nonce = B64.decode("LKqI6G/AikKCQrN0zqZFlg==").expect("base64");
        let d = password_digest(&nonce, "2010-09-16T07:50:45Z", "userpassword");
        assert_eq!(d, "tuOSpGlFlIXsozq4HFNeeGeFLEI=");
    }

    #[test]
    fn the_rfc_2617_digest_example_gives_its_response() {
        // RFC 2617 §3.5 (MD5, qop=auth).
        let mut c = DigestChallenge::parse(
            r#"Digest realm="testrealm@host.com", qop="auth,auth-int", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .expect("challenge");
        let h = c.authorization(
            "Mufasa",
            "Circle Of Life",
            "GET",
            "/dir/index.html",
            "0a4f113b",
        );
        assert!(
            h.contains(r#"response="6629fae49393a05397450978507c4ef1""#),
            "{h}"
        );
        assert!(h.contains("nc=00000001"));
    }

    #[test]
    fn a_basic_or_sha256_challenge_is_not_taken_for_md5_digest() {
        assert!(DigestChallenge::parse(r#"Basic realm="x""#).is_none());
        assert!(
            DigestChallenge::parse(r#"Digest realm="x", nonce="n", algorithm=SHA-256"#).is_none()
        );
    }
}
