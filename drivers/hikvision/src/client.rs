//! The ISAPI HTTP client: rustls (always verified), Digest auth with a cached challenge.
//!
//! The first request goes without credentials; the 401's challenge is kept and answered on
//! every later request with a rising `nc`, so a steady state costs one round trip per
//! request. A 401 to an answered challenge is retried once with the new challenge (nonce
//! expired, `stale=true`); a second one is [`IsapiError::Auth`]: a wrong user or password.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::digest::{Challenge, Credentials};

/// Why an ISAPI request did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum IsapiError {
    /// No connection, connection lost, or no answer in time.
    #[error("controller unreachable: {0}")]
    Transport(String),
    /// Credentials refused.
    #[error("authentication refused (wrong user or password?)")]
    Auth,
    /// The challenge could not be answered.
    #[error("cannot answer the controller's challenge: {0}")]
    Challenge(String),
    /// The client could not be set up (TLS roots).
    #[error("http client: {0}")]
    Setup(String),
}

impl IsapiError {
    /// Transport faults are retried with back-off; auth and setup need an operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, IsapiError::Transport(_))
    }
}

struct Auth {
    challenge: Challenge,
    nc: u32,
}

/// A client for one controller.
pub struct IsapiClient {
    http: reqwest::Client,
    base: String,
    user: String,
    password: String,
    auth: Mutex<Option<Auth>>,
}

impl std::fmt::Debug for IsapiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IsapiClient")
            .field("base", &self.base)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

fn tls(ca_pem: Option<&[u8]>) -> Result<rustls::ClientConfig, IsapiError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(pem) = ca_pem {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        for c in CertificateDer::pem_slice_iter(pem) {
            let c = c.map_err(|e| IsapiError::Setup(format!("ca_file: {e}")))?;
            roots
                .add(c)
                .map_err(|e| IsapiError::Setup(format!("ca_file: {e}")))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IsapiError::Setup(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

fn cnonce() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl IsapiClient {
    /// A client for `base` (`https://host:port`).
    ///
    /// # Errors
    /// [`IsapiError::Setup`] when the TLS roots cannot be loaded.
    pub fn new(
        base: &str,
        user: &str,
        password: &str,
        ca_pem: Option<&[u8]>,
        connect_timeout: Duration,
    ) -> Result<IsapiClient, IsapiError> {
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls(ca_pem)?)
            .connect_timeout(connect_timeout)
            .tcp_nodelay(true)
            .build()
            .map_err(|e| IsapiError::Setup(e.to_string()))?;
        Ok(IsapiClient {
            http,
            base: base.to_owned(),
            user: user.to_owned(),
            password: password.to_owned(),
            auth: Mutex::new(None),
        })
    }

    fn authorization(&self, method: &Method, path: &str) -> Option<String> {
        let mut guard = self.auth.lock().ok()?;
        let a = guard.as_mut()?;
        a.nc = a.nc.wrapping_add(1);
        let c = Credentials::answer(
            &a.challenge,
            &self.user,
            &self.password,
            method.as_str(),
            path,
            a.nc,
            &cnonce(),
        );
        Some(c.to_header())
    }

    fn remember(&self, resp: &reqwest::Response) -> Result<(), IsapiError> {
        let header = resp
            .headers()
            .get_all(reqwest::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.trim_start().to_ascii_lowercase().starts_with("digest"))
            .ok_or_else(|| IsapiError::Challenge("401 without a Digest challenge".into()))?;
        let challenge =
            Challenge::parse(header).map_err(|e| IsapiError::Challenge(e.to_string()))?;
        if let Ok(mut g) = self.auth.lock() {
            *g = Some(Auth { challenge, nc: 0 });
        }
        Ok(())
    }

    /// Sends one request, answering a Digest challenge; `timeout` bounds the whole exchange
    /// up to the response headers (`None` for the long-lived alertStream).
    ///
    /// # Errors
    /// [`IsapiError`].
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, IsapiError> {
        for _ in 0..2 {
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base));
            if let Some(t) = timeout {
                req = req.timeout(t);
            }
            if let Some(b) = &body {
                req = req
                    .header(reqwest::header::CONTENT_TYPE, "application/xml")
                    .body(b.clone());
            }
            if let Some(h) = self.authorization(&method, path) {
                req = req.header(reqwest::header::AUTHORIZATION, h);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| IsapiError::Transport(error_chain(&e)))?;
            if resp.status() != StatusCode::UNAUTHORIZED {
                return Ok(resp);
            }
            // Answer the new challenge once (first contact, or our nonce expired); a 401 to
            // that answer too means the credentials are wrong.
            self.remember(&resp)?;
        }
        Err(IsapiError::Auth)
    }
}

/// The error with its causes ("error sending request: connection refused").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
