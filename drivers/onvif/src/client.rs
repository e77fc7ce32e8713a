//! One camera's SOAP client: HTTP POST with WS-UsernameToken, HTTP Digest on a `401`
//! challenge, the clock skew applied to every token, bounded bodies and timeouts.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use reqwest::{Method, StatusCode, Url};

use crate::auth::{DigestChallenge, username_token_header};
use crate::config::transport_allowed;
use crate::soap::{self, SoapError};
use crate::xml::MAX_DOCUMENT;

/// Why a call to a camera failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The camera could not be reached, or did not answer in time.
    #[error("camera unreachable: {0}")]
    Transport(String),
    /// It answered with an HTTP status and no SOAP content we could read.
    #[error("http status {0}")]
    Status(u16),
    /// The answer was too large.
    #[error("answer larger than {0} bytes")]
    TooLarge(u64),
    /// The camera said no, or said something we refuse.
    #[error(transparent)]
    Soap(#[from] SoapError),
    /// A URL the camera gave us is not one we may use.
    #[error("refused url: {0}")]
    Url(String),
}

/// Credentials.
#[derive(Clone)]
pub struct Credentials {
    /// User.
    pub user: String,
    /// Password.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Credentials {{ user: {:?}, password: <redacted> }}",
            self.user
        )
    }
}

/// A camera's HTTP side.
#[derive(Debug)]
pub struct CameraClient {
    http: reqwest::Client,
    creds: Option<Credentials>,
    digest: Option<DigestChallenge>,
    /// Camera clock minus ours.
    skew: TimeDelta,
    allow_http: bool,
    /// The configured device service URL: the host every other URL is pinned to.
    base: Url,
}

/// Builds the HTTP client all cameras of a driver share.
///
/// # Errors
/// When the TLS stack cannot be set up.
pub fn http_client() -> Result<reqwest::Client, String> {
    // One process-wide provider; the gateway installs the same one at start (it is a no-op
    // then), tests and tools get it here.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(2)
        .build()
        .map_err(|e| e.to_string())
}

impl CameraClient {
    /// A client for the camera at `base`.
    pub fn new(
        http: reqwest::Client,
        base: Url,
        creds: Option<Credentials>,
        allow_http: bool,
    ) -> CameraClient {
        CameraClient {
            http,
            creds,
            digest: None,
            skew: TimeDelta::zero(),
            allow_http,
            base,
        }
    }

    /// The configured device service URL.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The camera's clock as we estimate it.
    pub fn camera_now(&self) -> DateTime<Utc> {
        Utc::now() + self.skew
    }

    /// Sets the measured skew (camera minus gateway).
    pub fn set_skew(&mut self, skew: TimeDelta) {
        self.skew = skew;
    }

    /// A URL the camera handed us (service or media address), pinned to the configured host:
    /// a camera must not steer the gateway to other hosts, and cameras behind NAT often
    /// report addresses that are not reachable.
    ///
    /// # Errors
    /// [`CallError::Url`] for an unparsable URL or a scheme we may not use.
    pub fn pin(&self, given: &str) -> Result<Url, CallError> {
        let mut u =
            Url::parse(given.trim()).map_err(|e| CallError::Url(format!("{given:?}: {e}")))?;
        if u.host_str() != self.base.host_str() {
            u.set_host(self.base.host_str())
                .map_err(|e| CallError::Url(e.to_string()))?;
            if u.scheme() == self.base.scheme() {
                u.set_port(self.base.port())
                    .map_err(|()| CallError::Url("cannot set port".into()))?;
            }
        }
        transport_allowed(&u, self.allow_http).map_err(CallError::Url)?;
        Ok(u)
    }

    /// Calls `body` at `url` without a UsernameToken (`GetSystemDateAndTime`).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn call_anonymous(
        &mut self,
        url: &Url,
        body: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let env = soap::envelope("", None, body);
        self.post(url, None, env, timeout).await
    }

    /// Calls `body` at `url` with a UsernameToken (and WS-Addressing if `action` is set).
    ///
    /// # Errors
    /// [`CallError`].
    pub async fn call(
        &mut self,
        url: &Url,
        action: Option<&str>,
        body: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let security = match &self.creds {
            Some(c) => {
                let nonce: [u8; 16] = rand::random();
                username_token_header(&c.user, &c.password, &nonce, self.camera_now())
            }
            None => String::new(),
        };
        let env = soap::envelope(&security, action.map(|a| (a, url.as_str())), body);
        self.post(url, action, env, timeout).await
    }

    async fn post(
        &mut self,
        url: &Url,
        action: Option<&str>,
        env: String,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        let ct = match action {
            Some(a) => format!("application/soap+xml; charset=utf-8; action=\"{a}\""),
            None => "application/soap+xml; charset=utf-8".into(),
        };
        let (status, body) = self
            .send(
                Method::POST,
                url,
                Some((ct, env)),
                timeout,
                MAX_DOCUMENT as u64,
            )
            .await?;
        if status.is_success() {
            return Ok(body);
        }
        // A SOAP fault comes with 400 or 500 and says more than the status; anything else
        // (an HTML login page, an empty 401) is reported by its status.
        match soap::body(&body) {
            Err(fault @ SoapError::Fault { .. }) => Err(fault.into()),
            _ => Err(CallError::Status(status.as_u16())),
        }
    }

    /// Sends one request, answering one Digest challenge; returns the status and a body of
    /// at most `limit` bytes.
    ///
    /// # Errors
    /// [`CallError::Transport`] on timeouts and I/O, [`CallError::TooLarge`] over `limit`.
    pub async fn send(
        &mut self,
        method: Method,
        url: &Url,
        body: Option<(String, String)>,
        timeout: Duration,
        limit: u64,
    ) -> Result<(StatusCode, Vec<u8>), CallError> {
        let fut = async {
            let mut resp = self.request(method.clone(), url, body.clone()).await?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                let challenge = resp
                    .headers()
                    .get_all(WWW_AUTHENTICATE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .find_map(DigestChallenge::parse);
                if let Some(c) = challenge {
                    self.digest = Some(c);
                    resp = self.request(method, url, body).await?;
                }
            }
            let status = resp.status();
            Ok((status, read_limited(resp, limit).await?))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| CallError::Transport(format!("no answer within {timeout:?}")))?
    }

    async fn request(
        &mut self,
        method: Method,
        url: &Url,
        body: Option<(String, String)>,
    ) -> Result<reqwest::Response, CallError> {
        let mut rb = self.http.request(method.clone(), url.clone());
        if let (Some(d), Some(c)) = (self.digest.as_mut(), self.creds.as_ref()) {
            let cnonce = format!("{:016x}", rand::random::<u64>());
            let uri = match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            };
            rb = rb.header(
                AUTHORIZATION,
                d.authorization(&c.user, &c.password, method.as_str(), &uri, &cnonce),
            );
        }
        if let Some((ct, b)) = body {
            rb = rb.header(CONTENT_TYPE, ct).body(b);
        }
        rb.send()
            .await
            .map_err(|e| CallError::Transport(without_url(&e)))
    }
}

/// Reads a body, refusing (before allocating) anything over `limit`.
async fn read_limited(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, CallError> {
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(CallError::TooLarge(limit));
    }
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| CallError::Transport(without_url(&e)))?
    {
        if out.len() as u64 + chunk.len() as u64 > limit {
            return Err(CallError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// reqwest's message without the URL (which may carry credentials in a query), with causes.
fn without_url(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else if e.is_body() || e.is_decode() {
        "broken body"
    } else {
        "request failed"
    };
    let mut s = what.to_owned();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str, allow_http: bool) -> CameraClient {
        let base = Url::parse(base).expect("url");
        CameraClient::new(http_client().expect("client"), base, None, allow_http)
    }

    #[test]
    fn a_camera_cannot_steer_us_to_another_host_or_down_to_plain_http() {
        let c = client("https://10.1.5.20/onvif/device_service", false);
        let pinned = c
            .pin("https://203.0.113.9/onvif/Events/sub1")
            .expect("pinned");
        assert_eq!(pinned.as_str(), "https://10.1.5.20/onvif/Events/sub1");
        assert!(matches!(
            c.pin("http://10.1.5.20/snapshot.jpg"),
            Err(CallError::Url(_))
        ));
        assert!(matches!(
            c.pin("file:///etc/passwd"),
            Err(CallError::Url(_))
        ));
        let opted_in = client("https://10.1.5.20/onvif/device_service", true);
        assert!(opted_in.pin("http://10.1.5.20/snapshot.jpg").is_ok());
    }
}
