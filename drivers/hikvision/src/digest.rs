//! HTTP Digest access authentication (RFC 7616, compatible with RFC 2617): MD5 and SHA-256,
//! `qop=auth`, with the client's `nc` counter and a fresh `cnonce` per request.
//!
//! Hand-written rather than taken from the `digest_auth` crate (0.3.1): that crate pulls a
//! third `rand` major version (0.8) into a tree that already has 0.9 and 0.10, its home is a
//! personal git host with releases years apart, and the simulator needs the server side
//! (verifying a response) too. What is here is small: parse a challenge without panicking
//! on any header, compute `response = H(H(A1):nonce:nc:cnonce:qop:H(A2))`, and render or
//! parse an `Authorization` header. The RFC 7616 §3.9.1 vectors are in the tests.
//!
//! `qop=auth-int` and the `-sess` algorithms are not offered by ISAPI devices (they send
//! `qop="auth"`, `algorithm="MD5"`); a challenge asking only for them is refused.

use md5::Md5;
use sha2::{Digest as _, Sha256};

/// The hash a challenge names (RFC 7616 §3.3 `algorithm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `MD5` (the default when the parameter is absent).
    Md5,
    /// `SHA-256`.
    Sha256,
}

impl Algorithm {
    fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex(&Sha256::digest(data.as_bytes())),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Why a Digest header could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// Not a `Digest` header at all (e.g. `Basic`).
    #[error("not a digest challenge: {0:?}")]
    NotDigest(String),
    /// A required parameter is missing.
    #[error("digest header lacks {0}")]
    Missing(&'static str),
    /// An algorithm or qop we do not implement.
    #[error("unsupported digest {what} {value:?}")]
    Unsupported {
        /// `algorithm` or `qop`.
        what: &'static str,
        /// Its value.
        value: String,
    },
}

/// A server's `WWW-Authenticate: Digest ...` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `opaque`, echoed back if present.
    pub opaque: Option<String>,
    /// The hash.
    pub algorithm: Algorithm,
    /// `stale=true`: the nonce expired, the password was fine.
    pub stale: bool,
}

/// Splits `k=v, k="v, with comma"` pairs; keys lowercased, quotes and `\` escapes removed.
fn params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars
            .by_ref()
            .take_while(|c| *c != '=')
            .collect::<String>()
            .trim()
            .to_ascii_lowercase();
        if key.is_empty() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars
                .by_ref()
                .take_while(|c| *c != ',')
                .collect::<String>()
                .trim()
                .to_owned();
        }
        out.push((key, value));
    }
}

fn strip_scheme(header: &str) -> Option<&str> {
    let h = header.trim_start();
    let (scheme, rest) = h.split_at(h.find(char::is_whitespace).unwrap_or(h.len()));
    scheme.eq_ignore_ascii_case("digest").then_some(rest)
}

impl Challenge {
    /// Parses one `WWW-Authenticate` value.
    ///
    /// # Errors
    /// [`DigestError`] for another scheme, a missing realm or nonce, or a qop/algorithm
    /// this module does not implement.
    pub fn parse(header: &str) -> Result<Challenge, DigestError> {
        let rest = strip_scheme(header).ok_or_else(|| DigestError::NotDigest(header.into()))?;
        let p = params(rest);
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
        let algorithm = match get("algorithm").as_deref() {
            None => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("md5") => Algorithm::Md5,
            Some(a) if a.eq_ignore_ascii_case("sha-256") => Algorithm::Sha256,
            Some(a) => {
                return Err(DigestError::Unsupported {
                    what: "algorithm",
                    value: a.into(),
                });
            }
        };
        if let Some(q) = get("qop")
            && !q.split(',').any(|x| x.trim() == "auth")
        {
            return Err(DigestError::Unsupported {
                what: "qop",
                value: q,
            });
        }
        Ok(Challenge {
            realm: get("realm").ok_or(DigestError::Missing("realm"))?,
            nonce: get("nonce").ok_or(DigestError::Missing("nonce"))?,
            opaque: get("opaque"),
            algorithm,
            stale: get("stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
        })
    }

    /// The `WWW-Authenticate` value a server sends for this challenge.
    pub fn to_header(&self) -> String {
        let mut h = format!(
            "Digest realm=\"{}\", qop=\"auth\", algorithm={}, nonce=\"{}\"",
            self.realm,
            self.algorithm.name(),
            self.nonce
        );
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        if self.stale {
            h.push_str(", stale=true");
        }
        h
    }
}

/// The client's answer to a challenge: the fields of an `Authorization: Digest` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `username`.
    pub username: String,
    /// `realm`.
    pub realm: String,
    /// `nonce`.
    pub nonce: String,
    /// `uri` (the request target, path and query).
    pub uri: String,
    /// `nc`, the 8-hex-digit count of requests made with this nonce.
    pub nc: u32,
    /// `cnonce`.
    pub cnonce: String,
    /// `response`.
    pub response: String,
    /// `opaque`.
    pub opaque: Option<String>,
    /// The hash.
    pub algorithm: Algorithm,
}

/// `H(H(A1):nonce:nc:cnonce:auth:H(A2))` with `A1 = user:realm:password`,
/// `A2 = method:uri` (RFC 7616 §3.4.1-3.4.3, qop=auth).
#[allow(clippy::too_many_arguments)] // the RFC's own inputs, named as it names them
pub fn response(
    alg: Algorithm,
    user: &str,
    realm: &str,
    password: &str,
    method: &str,
    uri: &str,
    nonce: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let ha1 = alg.hash(&format!("{user}:{realm}:{password}"));
    let ha2 = alg.hash(&format!("{method}:{uri}"));
    alg.hash(&format!("{ha1}:{nonce}:{nc:08x}:{cnonce}:auth:{ha2}"))
}

impl Credentials {
    /// Answers `challenge` for one request.
    pub fn answer(
        challenge: &Challenge,
        user: &str,
        password: &str,
        method: &str,
        uri: &str,
        nc: u32,
        cnonce: &str,
    ) -> Credentials {
        let c = challenge;
        Credentials {
            username: user.into(),
            realm: c.realm.clone(),
            nonce: c.nonce.clone(),
            uri: uri.into(),
            nc,
            cnonce: cnonce.into(),
            response: response(
                c.algorithm,
                user,
                &c.realm,
                password,
                method,
                uri,
                &c.nonce,
                nc,
                cnonce,
            ),
            opaque: c.opaque.clone(),
            algorithm: c.algorithm,
        }
    }

    /// The `Authorization` header value.
    pub fn to_header(&self) -> String {
        let mut h = format!(
            "Digest username=\"{}\", realm=\"{}\", nonce=\"{}\", uri=\"{}\", algorithm={}, \
             qop=auth, nc={:08x}, cnonce=\"{}\", response=\"{}\"",
            self.username,
            self.realm,
            self.nonce,
            self.uri,
            self.algorithm.name(),
            self.nc,
            self.cnonce,
            self.response
        );
        if let Some(o) = &self.opaque {
            h.push_str(&format!(", opaque=\"{o}\""));
        }
        h
    }

    /// Parses an `Authorization: Digest` value (server side).
    ///
    /// # Errors
    /// [`DigestError`] when it is not Digest or lacks a field.
    pub fn parse(header: &str) -> Result<Credentials, DigestError> {
        let rest = strip_scheme(header).ok_or_else(|| DigestError::NotDigest(header.into()))?;
        let p = params(rest);
        let get = |k: &'static str| {
            p.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .ok_or(DigestError::Missing(k))
        };
        let algorithm = match get("algorithm") {
            Ok(a) if a.eq_ignore_ascii_case("sha-256") => Algorithm::Sha256,
            _ => Algorithm::Md5,
        };
        let nc = u32::from_str_radix(&get("nc")?, 16).map_err(|_| DigestError::Missing("nc"))?;
        Ok(Credentials {
            username: get("username")?,
            realm: get("realm")?,
            nonce: get("nonce")?,
            uri: get("uri")?,
            nc,
            cnonce: get("cnonce")?,
            response: get("response")?,
            opaque: get("opaque").ok(),
            algorithm,
        })
    }

    /// Whether these credentials prove knowledge of `password` for `method`.
    pub fn verify(&self, password: &str, method: &str) -> bool {
        let want = response(
            self.algorithm,
            &self.username,
            &self.realm,
            password,
            method,
            &self.uri,
            &self.nonce,
            self.nc,
            &self.cnonce,
        );
        // Not secret-dependent timing in a way that matters: the simulator only.
        want == self.response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7616 §3.9.1: the same request answered with MD5 and with SHA-256.
    const NONCE: &str = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v";
    const CNONCE: &str = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ";

    fn rfc_challenge(alg: &str) -> Challenge {
        Challenge::parse(&format!(
            "Digest realm=\"http-auth@example.org\", qop=\"auth, auth-int\", \
             algorithm={alg}, nonce=\"{NONCE}\", opaque=\"FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS\""
        ))
        .expect("the RFC's challenge parses")
    }

    #[test]
    fn the_rfc_7616_md5_and_sha256_examples_give_the_rfcs_responses() {
        for (alg, want) in [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            (
                "SHA-256",
                "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
            ),
        ] {
            let c = rfc_challenge(alg);
            let cred = Credentials::answer(
                &c,
                "Mufasa",
                "Circle of Life",
                "GET",
                "/dir/index.html",
                1,
                CNONCE,
            );
            assert_eq!(cred.response, want, "{alg}");
            let back = Credentials::parse(&cred.to_header()).expect("our header parses");
            assert_eq!(back, cred);
            assert!(back.verify("Circle of Life", "GET"));
            assert!(!back.verify("circle of life", "GET"));
        }
    }

    #[test]
    fn other_schemes_and_unsupported_parameters_are_refused_without_panicking() {
        assert!(matches!(
            Challenge::parse("Basic realm=\"x\""),
            Err(DigestError::NotDigest(_))
        ));
        assert_eq!(
            Challenge::parse("Digest realm=\"x\""),
            Err(DigestError::Missing("nonce"))
        );
        assert!(matches!(
            Challenge::parse("Digest realm=\"x\", nonce=\"n\", qop=\"auth-int\""),
            Err(DigestError::Unsupported { what: "qop", .. })
        ));
        for junk in [
            "",
            "Digest",
            "Digest ,,,",
            "Digest a=\"unterminated",
            "Digest ===",
        ] {
            let _ = Challenge::parse(junk);
            let _ = Credentials::parse(junk);
        }
    }

    #[test]
    fn a_hikvision_style_challenge_parses() {
        let c = Challenge::parse(
            "Digest qop=\"auth\", realm=\"DS-K1T671\", nonce=\"4e5468694d7a\", stale=\"FALSE\"",
        )
        .unwrap();
        assert_eq!(
            (c.realm.as_str(), c.algorithm, c.stale),
            ("DS-K1T671", Algorithm::Md5, false)
        );
    }
}
