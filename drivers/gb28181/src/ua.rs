//! The device-side SIP user agent over UDP (GB/T 28181-2016 §9.1 registration, §9.3
//! queries, §9.4 alarms, §9.6 keepalive): REGISTER with digest, MESSAGE requests with a
//! MANSCDP body, and the answers to the platform's MESSAGE requests.
//!
//! One [`DeviceUa`] owns one UDP socket. Its receive task routes responses to the waiting
//! transaction by the top Via branch, answers the platform's requests itself (200 to a
//! MESSAGE and, for a Catalog query, the Catalog response in parts of [`CATALOG_PART`]
//! items; 405 to other methods, live video stays with the cameras) and drops datagrams
//! from anyone but the platform's address (`campusgw_gb28181_dropped_total{reason =
//! "stranger"}`). Garbage (not SIP, or a MESSAGE body that is not MANSCDP, answered 400)
//! is counted (`reason = "garbage"`) and logged at most once a minute.
//!
//! Non-INVITE client transactions (RFC 3261 §17.1.2): the request is retransmitted from
//! T1 = 500 ms doubling to T2 = 4 s until a final answer or `answer_timeout`; a 401/407 is
//! answered once with credentials (CSeq + 1, new branch).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sdk::log::LogLimiter;
use campusgw_sip::digest;
use campusgw_sip::msg::{self, Message, StartLine};
use chrono::{DateTime, Utc};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::id::GbId;
use crate::manscdp::{self, Alarm, CatalogItem, Charset};

/// RFC 3261 T1.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 T2.
const T2: Duration = Duration::from_secs(4);
/// Catalog items per response MESSAGE (a part stays well under a UDP datagram's MTU).
pub const CATALOG_PART: usize = 4;
/// The MANSCDP content type (GB/T 28181-2016 §9.3.1).
pub const CONTENT_TYPE: &str = "Application/MANSCDP+xml";

/// What the UA needs, resolved.
#[derive(Clone)]
pub struct UaSettings {
    /// The platform's SIP server.
    pub platform: SocketAddr,
    /// Its id.
    pub platform_id: GbId,
    /// The SIP domain.
    pub domain: String,
    /// This gateway's id.
    pub device_id: GbId,
    /// Digest user name.
    pub username: String,
    /// Digest password.
    pub password: String,
    /// Local socket address.
    pub bind: SocketAddr,
    /// The platform's charset.
    pub charset: Charset,
    /// Per-request answer wait.
    pub answer_timeout: Duration,
    /// What a Catalog query is answered with.
    pub catalog: Vec<CatalogItem>,
}

impl std::fmt::Debug for UaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UaSettings")
            .field("platform", &self.platform)
            .field("platform_id", &self.platform_id)
            .field("device_id", &self.device_id)
            .field("username", &self.username)
            .field("password", &"***")
            .finish_non_exhaustive()
    }
}

/// Why a request did not get a 2xx.
#[derive(Debug, thiserror::Error)]
pub enum UaError {
    /// The socket could not be opened or written.
    #[error("sip socket: {0}")]
    Socket(#[from] std::io::Error),
    /// No final answer in time (every retransmission unanswered).
    #[error("no answer from the platform at {0} within {1:?}")]
    Timeout(SocketAddr, Duration),
    /// The credentials were refused (or challenged again).
    #[error("the platform refused the credentials ({0} to the authenticated {1})")]
    AuthRejected(u16, &'static str),
    /// Another final answer.
    #[error("the platform answered {code} {reason} to {method}")]
    Refused {
        /// Status code.
        code: u16,
        /// Reason phrase.
        reason: String,
        /// The request's method.
        method: &'static str,
    },
    /// The receive task is gone.
    #[error("the sip user agent stopped")]
    Closed,
}

impl UaError {
    /// Whether the platform seems not to know this device any more (it restarted): a
    /// new REGISTER may fix it.
    pub fn unregistered(&self) -> bool {
        matches!(
            self,
            UaError::Refused {
                code: 401 | 403 | 404 | 407 | 481,
                ..
            }
        ) || matches!(self, UaError::AuthRejected(..))
    }
}

/// A 2xx answer.
#[derive(Debug, Clone)]
pub struct Confirmed {
    /// The status code.
    pub code: u16,
    /// Transmissions of the request that got it (retransmissions and the auth retry
    /// included).
    pub attempts: u32,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The request's Call-ID.
    pub call_id: String,
    /// `Expires` granted (REGISTER).
    pub expires: Option<Duration>,
}

/// What the platform did on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UaEvent {
    /// A Catalog query was answered with `items` items.
    CatalogAnswered {
        /// The query's SN.
        sn: u32,
        /// Items sent.
        items: usize,
        /// Whether every part got its 200.
        complete: bool,
    },
    /// A `Response` MESSAGE (e.g. to an Alarm) arrived and was answered 200.
    Response {
        /// Its CmdType.
        cmd: String,
        /// Its SN.
        sn: Option<u32>,
        /// Its `Result`.
        result: Option<String>,
    },
    /// Another request was answered (its method and CmdType).
    Other(String),
}

/// Counters of what the UA dropped.
#[derive(Debug, Default)]
pub struct UaStats {
    /// Datagrams that were not SIP or not readable MANSCDP.
    pub garbage: AtomicU64,
    /// Datagrams from somewhere other than the platform.
    pub strangers: AtomicU64,
    /// Retransmissions sent.
    pub retransmissions: AtomicU64,
}

/// An auth header to add: (name, value).
type AuthHeader = Option<(&'static str, String)>;
/// Writes a request for (CSeq, branch, credentials).
type BuildRequest<'a> = dyn Fn(u32, &str, AuthHeader) -> Vec<u8> + Sync + 'a;

struct Inner {
    sock: UdpSocket,
    s: UaSettings,
    local: SocketAddr,
    reg_call_id: String,
    reg_tag: String,
    cseq: AtomicU32,
    sn: AtomicU32,
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
    limiter: Mutex<LogLimiter>,
    /// (Call-ID, CSeq) of the platform's recent requests: a retransmission (our 200 was
    /// lost) is answered 200 again but not acted on twice (RFC 3261 §17.2.2).
    seen: Mutex<std::collections::VecDeque<(String, String)>>,
    stats: UaStats,
    events: mpsc::Sender<UaEvent>,
}

/// The user agent; dropping it stops its receive task.
pub struct DeviceUa {
    inner: Arc<Inner>,
    events: mpsc::Receiver<UaEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DeviceUa {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The local address a datagram to `peer` leaves from (for Via and Contact when bound
/// to the unspecified address).
fn route_ip(bound: SocketAddr, peer: SocketAddr) -> IpAddr {
    if !bound.ip().is_unspecified() {
        return bound.ip();
    }
    let any: SocketAddr = if peer.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(peer)?;
            s.local_addr()
        })
        .map_or(bound.ip(), |a| a.ip())
}

fn host(a: SocketAddr) -> String {
    match a {
        SocketAddr::V4(v) => format!("{}:{}", v.ip(), v.port()),
        SocketAddr::V6(v) => format!("[{}]:{}", v.ip(), v.port()),
    }
}

impl DeviceUa {
    /// Opens the socket and starts the receive task (nothing is sent yet).
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub async fn open(s: UaSettings) -> Result<DeviceUa, UaError> {
        let sock = UdpSocket::bind(s.bind).await?;
        let bound = sock.local_addr()?;
        let local = SocketAddr::new(route_ip(bound, s.platform), bound.port());
        let (etx, erx) = mpsc::channel(64);
        let inner = Arc::new(Inner {
            sock,
            s,
            local,
            reg_call_id: format!("{}@campusgw", token()),
            reg_tag: token(),
            cseq: AtomicU32::new(1),
            sn: AtomicU32::new(rand::random::<u32>() % 100_000),
            waiting: Mutex::new(HashMap::new()),
            limiter: Mutex::new(LogLimiter::new(Duration::from_secs(60))),
            seen: Mutex::new(std::collections::VecDeque::new()),
            stats: UaStats::default(),
            events: etx,
        });
        let task = tokio::spawn(receive(inner.clone()));
        Ok(DeviceUa {
            inner,
            events: erx,
            task,
        })
    }

    /// The local SIP address (as in Via and Contact).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local
    }

    /// What was dropped so far.
    pub fn stats(&self) -> &UaStats {
        &self.inner.stats
    }

    /// REGISTER (with digest on a challenge); `expires` zero unregisters.
    ///
    /// # Errors
    /// [`UaError::AuthRejected`] for refused credentials, else as any request.
    pub async fn register(&self, expires: Duration) -> Result<Confirmed, UaError> {
        self.inner.register(expires).await
    }

    /// A Keepalive MESSAGE.
    ///
    /// # Errors
    /// No 2xx.
    pub async fn keepalive(&self) -> Result<Confirmed, UaError> {
        let i = &self.inner;
        let body = manscdp::keepalive(i.s.charset, i.next_sn(), &i.s.device_id);
        i.message(body).await
    }

    /// An Alarm MESSAGE; the platform's 2xx confirms it.
    ///
    /// # Errors
    /// No 2xx.
    pub async fn alarm(&self, a: &Alarm) -> Result<Confirmed, UaError> {
        let i = &self.inner;
        i.message(manscdp::alarm(i.s.charset, a)).await
    }

    /// The next thing the platform did on its own (cancel-safe).
    pub async fn next_event(&mut self) -> Option<UaEvent> {
        self.events.recv().await
    }
}

impl Inner {
    fn next_sn(&self) -> u32 {
        self.sn.fetch_add(1, Ordering::Relaxed) % 1_000_000_000
    }

    fn platform_uri(&self) -> String {
        format!("sip:{}@{}", self.s.platform_id, self.s.domain)
    }

    fn our_uri(&self) -> String {
        format!("sip:{}@{}", self.s.device_id, self.s.domain)
    }

    fn common(
        &self,
        branch: &str,
        call_id: &str,
        cseq: u32,
        method: &str,
    ) -> Vec<(&'static str, String)> {
        vec![
            (
                "Via",
                format!("SIP/2.0/UDP {};rport;branch={branch}", host(self.local)),
            ),
            ("Max-Forwards", "70".into()),
            ("Call-ID", call_id.to_owned()),
            ("CSeq", format!("{cseq} {method}")),
            ("User-Agent", "campusgw".into()),
        ]
    }

    async fn register(&self, expires: Duration) -> Result<Confirmed, UaError> {
        let uri = self.platform_uri();
        let me = self.our_uri();
        let from = format!("<{me}>;tag={}", self.reg_tag);
        let to = format!("<{me}>");
        let contact = format!("<sip:{}@{}>", self.s.device_id, host(self.local));
        let secs = expires.as_secs().to_string();
        let build = |cseq: u32, branch: &str, auth: Option<(&'static str, String)>| {
            let mut h = self.common(branch, &self.reg_call_id, cseq, "REGISTER");
            h.push(("From", from.clone()));
            h.push(("To", to.clone()));
            h.push(("Contact", contact.clone()));
            h.push(("Expires", secs.clone()));
            h.extend(auth);
            msg::write(&format!("REGISTER {uri} SIP/2.0"), &h, "")
        };
        let (m, attempts) = self.with_auth("REGISTER", &uri, &build).await?;
        let granted = m
            .header("expires")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .or_else(|| {
                m.header("contact")
                    .and_then(|c| msg::param(c, "expires"))
                    .and_then(|v| v.parse().ok())
            })
            .map(Duration::from_secs);
        Ok(Confirmed {
            code: m.code().unwrap_or(200),
            attempts,
            at: Utc::now(),
            call_id: self.reg_call_id.clone(),
            expires: granted,
        })
    }

    async fn message(&self, body: Vec<u8>) -> Result<Confirmed, UaError> {
        let uri = self.platform_uri();
        let call_id = format!("{}@campusgw", token());
        let from = format!("<{}>;tag={}", self.our_uri(), token());
        let to = format!("<{uri}>");
        let build = |cseq: u32, branch: &str, auth: Option<(&'static str, String)>| {
            let mut h = self.common(branch, &call_id, cseq, "MESSAGE");
            h.push(("From", from.clone()));
            h.push(("To", to.clone()));
            h.push(("Content-Type", CONTENT_TYPE.into()));
            h.extend(auth);
            msg::write(&format!("MESSAGE {uri} SIP/2.0"), &h, &body)
        };
        let (m, attempts) = self.with_auth("MESSAGE", &uri, &build).await?;
        Ok(Confirmed {
            code: m.code().unwrap_or(200),
            attempts,
            at: Utc::now(),
            call_id,
            expires: None,
        })
    }

    /// One request, answered once with credentials after a challenge.
    async fn with_auth(
        &self,
        method: &'static str,
        uri: &str,
        build: &BuildRequest<'_>,
    ) -> Result<(Message, u32), UaError> {
        let cseq = self.cseq.fetch_add(1, Ordering::Relaxed);
        let branch = format!("z9hG4bK{}", token());
        let (m, mut attempts) = self.transact(&branch, build(cseq, &branch, None)).await?;
        let code = m.code().unwrap_or(0);
        let m = if code == 401 || code == 407 {
            let (want, give) = if code == 401 {
                ("www-authenticate", "Authorization")
            } else {
                ("proxy-authenticate", "Proxy-Authorization")
            };
            let Some(c) = m.header(want).and_then(digest::parse_challenge) else {
                return Err(UaError::Refused {
                    code,
                    reason: "challenge without a usable Digest".into(),
                    method,
                });
            };
            let auth = digest::authorization(
                &c,
                &self.s.username,
                &self.s.password,
                method,
                uri,
                &token(),
            );
            let cseq = self.cseq.fetch_add(1, Ordering::Relaxed);
            let branch = format!("z9hG4bK{}", token());
            let (m2, more) = self
                .transact(&branch, build(cseq, &branch, Some((give, auth))))
                .await?;
            attempts += more;
            match m2.code().unwrap_or(0) {
                401 | 403 | 407 => {
                    return Err(UaError::AuthRejected(m2.code().unwrap_or(0), method));
                }
                _ => m2,
            }
        } else {
            m
        };
        let code = m.code().unwrap_or(0);
        if (200..300).contains(&code) {
            return Ok((m, attempts));
        }
        let reason = match &m.start {
            StartLine::Response { reason, .. } => reason.chars().take(80).collect(),
            StartLine::Request { .. } => String::new(),
        };
        Err(UaError::Refused {
            code,
            reason,
            method,
        })
    }

    /// Sends `bytes` (retransmitting) until a final answer on `branch`.
    async fn transact(&self, branch: &str, bytes: Vec<u8>) -> Result<(Message, u32), UaError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.lock_waiting().insert(branch.to_owned(), tx);
        struct Unwait<'a>(&'a Inner, String);
        impl Drop for Unwait<'_> {
            fn drop(&mut self) {
                self.0.lock_waiting().remove(&self.1);
            }
        }
        let _unwait = Unwait(self, branch.to_owned());
        let deadline = Instant::now() + self.s.answer_timeout;
        let mut every = T1;
        let mut attempts = 1u32;
        self.sock.send_to(&bytes, self.s.platform).await?;
        let mut next = Instant::now() + every;
        loop {
            tokio::select! {
                got = rx.recv() => {
                    let Some(m) = got else { return Err(UaError::Closed) };
                    if m.code().is_some_and(|c| c >= 200) {
                        return Ok((m, attempts));
                    }
                    // provisional: keep retransmitting at T2 (§17.1.2.2)
                    every = T2;
                }
                () = tokio::time::sleep_until(next.min(deadline)) => {
                    if Instant::now() >= deadline {
                        return Err(UaError::Timeout(self.s.platform, self.s.answer_timeout));
                    }
                    self.sock.send_to(&bytes, self.s.platform).await?;
                    self.stats.retransmissions.fetch_add(1, Ordering::Relaxed);
                    attempts += 1;
                    every = (every * 2).min(T2);
                    next = Instant::now() + every;
                }
            }
        }
    }

    fn lock_waiting(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Message>>> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn garbage(&self, from: SocketAddr, why: &str) {
        self.stats.garbage.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("campusgw_gb28181_dropped_total", "reason" => "garbage").increment(1);
        let allowed = self
            .limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow();
        if let Some(held) = allowed {
            tracing::warn!(%from, why, held_back = held, "unreadable datagram from the GB/T 28181 platform dropped");
        }
    }

    async fn reply(&self, m: &Message, code: u16, reason: &str, extra: &[(&'static str, String)]) {
        let mut h: Vec<(&str, String)> = m.all("via").map(|v| ("Via", v.to_owned())).collect();
        for (n, k) in [("From", "from"), ("Call-ID", "call-id"), ("CSeq", "cseq")] {
            if let Some(v) = m.header(k) {
                h.push((n, v.to_owned()));
            }
        }
        if let Some(t) = m.header("to") {
            let to = if msg::param(t, "tag").is_some() {
                t.to_owned()
            } else {
                format!("{t};tag={}", token())
            };
            h.push(("To", to));
        }
        h.push(("User-Agent", "campusgw".into()));
        h.extend(extra.iter().cloned());
        let bytes = msg::write(&format!("SIP/2.0 {code} {reason}"), &h, "");
        if let Err(e) = self.sock.send_to(&bytes, self.s.platform).await {
            tracing::debug!(error = %e, "answer to the platform not sent");
        }
    }

    /// A request from the platform.
    async fn request(self: &Arc<Self>, m: Message, from: SocketAddr) {
        match m.method().unwrap_or_default() {
            "MESSAGE" => {}
            "ACK" => return,
            "OPTIONS" => {
                return self
                    .reply(&m, 200, "OK", &[("Allow", "MESSAGE, OPTIONS".into())])
                    .await;
            }
            other => {
                // INVITE (live video) goes to the cameras' own registrations.
                tracing::debug!(
                    method = other,
                    "platform request not handled by the gateway: 405"
                );
                return self
                    .reply(
                        &m,
                        405,
                        "Method Not Allowed",
                        &[("Allow", "MESSAGE, OPTIONS".into())],
                    )
                    .await;
            }
        }
        let doc = match manscdp::parse(&m.body) {
            Ok(d) => d,
            Err(e) => {
                self.garbage(from, &e.to_string());
                return self.reply(&m, 400, "Bad Request", &[]).await;
            }
        };
        self.reply(&m, 200, "OK", &[]).await;
        if !self.first_time(&m) {
            tracing::debug!("retransmitted platform request answered again, not acted on");
            return;
        }
        match (doc.kind(), doc.cmd_type.as_str()) {
            ("Query", "Catalog") => {
                let me = self.clone();
                let sn = doc.sn.unwrap_or(0);
                tokio::spawn(async move { me.answer_catalog(sn).await });
            }
            ("Response", cmd) => {
                let _ = self.events.try_send(UaEvent::Response {
                    cmd: cmd.to_owned(),
                    sn: doc.sn,
                    result: doc.root.text_of("Result").map(str::to_owned),
                });
            }
            (root, cmd) => {
                tracing::debug!(root, cmd, "platform MESSAGE answered 200, not acted on");
                let _ = self
                    .events
                    .try_send(UaEvent::Other(format!("{root}/{cmd}")));
            }
        }
    }

    /// Whether this request (Call-ID, CSeq) is new; remembers the last 32.
    fn first_time(&self, m: &Message) -> bool {
        let key = (
            m.call_id().unwrap_or_default().to_owned(),
            m.header("cseq").unwrap_or_default().to_owned(),
        );
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if seen.contains(&key) {
            return false;
        }
        if seen.len() == 32 {
            seen.pop_front();
        }
        seen.push_back(key);
        true
    }

    async fn answer_catalog(&self, sn: u32) {
        let items = &self.s.catalog;
        let mut complete = true;
        let parts: Vec<&[CatalogItem]> = if items.is_empty() {
            vec![&[]]
        } else {
            items.chunks(CATALOG_PART).collect()
        };
        for part in parts {
            let body =
                manscdp::catalog_response(self.s.charset, sn, &self.s.device_id, items.len(), part);
            if let Err(e) = self.message(body).await {
                tracing::warn!(error = %e, sn, "catalog response part not confirmed by the platform");
                complete = false;
                break;
            }
        }
        let _ = self.events.try_send(UaEvent::CatalogAnswered {
            sn,
            items: items.len(),
            complete,
        });
    }
}

async fn receive(inner: Arc<Inner>) {
    let mut buf = vec![0u8; msg::MAX_MESSAGE + 1];
    loop {
        let (n, from) = match inner.sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                // ICMP errors surface here on some systems; the socket stays usable
                tracing::debug!(error = %e, "sip receive error");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if from != inner.s.platform {
            inner.stats.strangers.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("campusgw_gb28181_dropped_total", "reason" => "stranger")
                .increment(1);
            continue;
        }
        let m = match msg::parse(&buf[..n]) {
            Ok(m) => m,
            Err(e) => {
                inner.garbage(from, &e.to_string());
                continue;
            }
        };
        if m.code().is_some() {
            let tx = m
                .branch()
                .and_then(|b| inner.lock_waiting().get(b).cloned());
            match tx {
                Some(tx) => {
                    let _ = tx.send(m);
                }
                None => tracing::debug!("late or unknown sip response dropped"),
            }
        } else {
            inner.request(m, from).await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn a_platform_that_forgot_the_device_is_told_apart_from_one_that_refuses_the_content() {
        let r = |code| UaError::Refused {
            code,
            reason: String::new(),
            method: "MESSAGE",
        };
        assert!(r(403).unregistered());
        assert!(r(401).unregistered());
        assert!(!r(400).unregistered());
        assert!(!r(500).unregistered());
        assert!(!UaError::Timeout(([127, 0, 0, 1], 1).into(), T1).unregistered());
    }
}
