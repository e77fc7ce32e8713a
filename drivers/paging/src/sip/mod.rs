//! A minimal SIP user agent client over UDP: exactly INVITE (with digest auth), ACK, BYE and
//! CANCEL, which is all paging needs (RFC 3261 §§8, 12-13, 17.1, 22).
//!
//! # Why hand-written and not `rsipstack`
//! PROTOCOLS §5 names `rsipstack` 0.7 as the best Rust SIP stack. `cargo info rsipstack`
//! (0.7.14, MIT, checked 2026-12-02) shows a full stack whose default features pull in
//! rustls, tokio-tungstenite (WebSocket transport) and hickory-resolver (SRV lookup), none of
//! which is in this workspace's lock file; it was not built here in the time of issue 15.
//! A paging UAC never receives calls, never re-INVITEs, registers nowhere and talks UDP to
//! devices on the school LAN, so the part of RFC 3261 it needs (four methods, digest) is
//! small enough to read in one sitting, and it is tested against `sipp` (tests/sipp.rs) and
//! fuzzed (`fuzz/fuzz_targets/sip_parse.rs`). Revisit rsipstack (with
//! `default-features = false`) if TLS/SRTP, TCP or registration to a PBX is asked for.
//!
//! # What is implemented
//! - INVITE client transaction over UDP (§17.1.1): retransmission from T1 = 500 ms doubling
//!   to T2 = 4 s until a provisional answer, an overall `timeout` (not 64*T1: an evacuation
//!   cannot wait 32 s for one silent speaker), CANCEL when given up after a provisional.
//! - Digest auth (§22.2): one retry of the INVITE with `Authorization` or
//!   `Proxy-Authorization` after a 401/407, CSeq + 1, new branch.
//! - ACK of non-2xx finals in the transaction (same branch) and of 2xx end-to-end (new
//!   branch, to the Contact), re-sent for every retransmitted 2xx.
//! - BYE both ways: we send it to hang up; a BYE from the speaker (hung up mid-message) is
//!   answered 200 and reported to the call. Other requests get 405, unknown dialogs 481.
//! - The next hop is always the configured speaker address (no DNS SRV, no Record-Route):
//!   speakers and paging gateways are reached directly on the LAN.
//!
//! One [`SipEndpoint`] (one UDP socket) serves every call of a driver; its receive loop
//! routes answers by Call-ID, so a speaker sending garbage or nothing delays only its own
//! call, which ends at its timeout.

mod sdp;

/// Digest authentication, from `campusgw-sip`.
pub use campusgw_sip::digest;

/// The SIP message codec (from `campusgw-sip`) and paging's SDP offer and answer.
pub mod msg {
    pub use super::sdp::{SdpAnswer, sdp_answer, sdp_offer};
    pub use campusgw_sip::msg::*;
}

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rtp::Codec;
use msg::{Message, SdpAnswer};

/// RFC 3261 §17.1.1.1: T1, the RTT estimate.
const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.2.2: T2, the cap of non-INVITE retransmission intervals.
const T2: Duration = Duration::from_secs(4);
/// How long a BYE or CANCEL waits for its answer; the call is gone either way.
const NON_INVITE_TIMEOUT: Duration = Duration::from_secs(4);

/// The auto-answer headers a vendor's devices understand (PROTOCOLS §5).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// `Call-Info: <sip:us>;answer-after=0` and
    /// `Alert-Info: <http://127.0.0.1>;info=alert-autoanswer;delay=0` (most devices).
    #[default]
    Generic,
    /// Yealink: `Call-Info ...;answer-after=0` and `Alert-Info: Auto Answer`.
    Yealink,
    /// Polycom: `Alert-Info: Ring-Answer`.
    Polycom,
    /// RFC 5373: `Answer-Mode: Auto` (with Call-Info for devices that want both).
    AnswerMode,
    /// `;intercom=true` on the Request-URI, plus Call-Info.
    Intercom,
}

impl Profile {
    fn headers(self, us: &str) -> Vec<(&'static str, String)> {
        let call_info = ("Call-Info", format!("<{us}>;answer-after=0"));
        match self {
            Profile::Generic => vec![
                call_info,
                (
                    "Alert-Info",
                    "<http://127.0.0.1>;info=alert-autoanswer;delay=0".to_owned(),
                ),
            ],
            Profile::Yealink => vec![call_info, ("Alert-Info", "Auto Answer".to_owned())],
            Profile::Polycom => vec![("Alert-Info", "Ring-Answer".to_owned())],
            Profile::AnswerMode => vec![call_info, ("Answer-Mode", "Auto".to_owned())],
            Profile::Intercom => vec![call_info],
        }
    }
}

/// One speaker to call.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its SIP URI (`sip:spk1@10.0.0.21:5060`).
    pub uri: String,
    /// Where its SIP datagrams go.
    pub addr: SocketAddr,
    /// Its auto-answer dialect.
    pub profile: Profile,
    /// Digest credentials, if it challenges.
    pub auth: Option<Credentials>,
}

/// A digest user and password; `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
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

/// Why a call did not come up (or ended).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No final answer in time (silent, stalled or only garbage).
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The speaker said no.
    #[error("refused: {0} {1}")]
    Refused(u16, String),
    /// Challenged without credentials, or the credentials were refused.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// The answer's SDP is unusable.
    #[error("bad sdp answer: {0}")]
    Sdp(&'static str),
    /// The socket failed.
    #[error("transport: {0}")]
    Transport(String),
    /// We gave up (zone stopped).
    #[error("cancelled")]
    Cancelled,
}

/// The SIP side of a driver: one UDP socket and the calls on it.
pub struct SipEndpoint {
    socket: UdpSocket,
    local: SocketAddr,
    user: String,
    calls: Mutex<HashMap<String, mpsc::UnboundedSender<Message>>>,
}

fn random_token() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// The local address the kernel would use towards `to` (no packet is sent).
fn local_ip_towards(bound: IpAddr, to: SocketAddr) -> IpAddr {
    if !bound.is_unspecified() {
        return bound;
    }
    let any: SocketAddr = if to.is_ipv4() {
        SocketAddr::from(([0, 0, 0, 0], 0))
    } else {
        SocketAddr::from(([0u16; 8], 0))
    };
    std::net::UdpSocket::bind(any)
        .and_then(|s| {
            s.connect(to)?;
            s.local_addr()
        })
        .map_or(bound, |a| a.ip())
}

/// The media we offer.
#[derive(Debug, Clone)]
pub struct Offer {
    /// The RTP port we send from (a send-only stream still names one).
    pub rtp_port: u16,
    /// Codecs, preferred first.
    pub codecs: Vec<Codec>,
    /// Give up on a speaker that has not answered within this.
    pub timeout: Duration,
}

/// An established call.
pub struct Call {
    ep: Arc<SipEndpoint>,
    target: Target,
    call_id: String,
    from: String,
    to: String,
    remote_uri: String,
    cseq: u32,
    ack: Vec<u8>,
    rx: mpsc::UnboundedReceiver<Message>,
    /// Where to send RTP and in which codec.
    pub media: SdpAnswer,
}

impl SipEndpoint {
    /// Binds the SIP socket.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(addr: SocketAddr, user: &str) -> std::io::Result<Arc<SipEndpoint>> {
        let socket = UdpSocket::bind(addr).await?;
        let local = socket.local_addr()?;
        Ok(Arc::new(SipEndpoint {
            socket,
            local,
            user: user.to_owned(),
            calls: Mutex::new(HashMap::new()),
        }))
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Receives and routes datagrams until `shutdown`.
    pub async fn serve(self: Arc<Self>, shutdown: CancellationToken) {
        let mut buf = vec![0u8; msg::MAX_MESSAGE + 1];
        loop {
            let (n, from) = tokio::select! {
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok(x) => x,
                    // ICMP port unreachable from a dead speaker surfaces here on Linux.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => {
                        // Anything else may repeat at once: do not spin on it.
                        tracing::warn!(error = %e, "sip socket receive failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                },
                () = shutdown.cancelled() => return,
            };
            match msg::parse(&buf[..n]) {
                Ok(m) => self.route(m, from).await,
                Err(e) => tracing::debug!(peer = %from, error = %e, "sip datagram dropped"),
            }
        }
    }

    async fn route(&self, m: Message, from: SocketAddr) {
        let call = m.call_id().and_then(|id| {
            self.calls
                .lock()
                .expect("calls lock is never poisoned")
                .get(id)
                .cloned()
        });
        match (m.method(), call) {
            (None, Some(tx)) => {
                let _ = tx.send(m);
            }
            (None, None) | (Some("ACK"), _) => {}
            (Some("BYE"), Some(tx)) => {
                self.reply(&m, 200, "OK", from).await;
                let _ = tx.send(m);
            }
            (Some("BYE" | "CANCEL"), None) => {
                self.reply(&m, 481, "Call/Transaction Does Not Exist", from)
                    .await;
            }
            (Some("OPTIONS"), _) => self.reply(&m, 200, "OK", from).await,
            (Some(_), _) => self.reply(&m, 405, "Method Not Allowed", from).await,
        }
    }

    async fn reply(&self, req: &Message, code: u16, reason: &str, to: SocketAddr) {
        let mut h: Vec<(&str, String)> = req.all("via").map(|v| ("Via", v.to_owned())).collect();
        for (name, key) in [
            ("From", "from"),
            ("To", "to"),
            ("Call-ID", "call-id"),
            ("CSeq", "cseq"),
        ] {
            if let Some(v) = req.header(key) {
                h.push((name, v.to_owned()));
            }
        }
        let bytes = msg::write(&format!("SIP/2.0 {code} {reason}"), &h, "");
        let _ = self.socket.send_to(&bytes, to).await;
    }

    fn register(&self, call_id: &str) -> mpsc::UnboundedReceiver<Message> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.calls
            .lock()
            .expect("calls lock is never poisoned")
            .insert(call_id.to_owned(), tx);
        rx
    }

    fn forget(&self, call_id: &str) {
        self.calls
            .lock()
            .expect("calls lock is never poisoned")
            .remove(call_id);
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) -> Result<(), CallError> {
        self.socket
            .send_to(bytes, to)
            .await
            .map(|_| ())
            .map_err(|e| CallError::Transport(e.to_string()))
    }

    /// Calls `target` and waits for it to answer.
    ///
    /// # Errors
    /// [`CallError`] when the speaker does not answer, refuses, fails auth or offers no
    /// usable media; [`CallError::Cancelled`] when `cancel` fires first.
    pub async fn invite(
        self: &Arc<Self>,
        target: &Target,
        offer: &Offer,
        cancel: &CancellationToken,
    ) -> Result<Call, CallError> {
        let call_id = format!("{}@campusgw", random_token());
        let rx = self.register(&call_id);
        let mut inv = Invite::new(self, target, offer, call_id.clone());
        let r = inv.run(rx, cancel).await;
        if r.is_err() {
            self.forget(&call_id);
        }
        r
    }
}

/// One INVITE transaction (and its authenticated retry).
struct Invite<'a> {
    ep: &'a Arc<SipEndpoint>,
    target: &'a Target,
    offer: &'a Offer,
    call_id: String,
    ip: IpAddr,
    from: String,
    uri: String,
    cseq: u32,
    branch: String,
    auth: Option<(&'static str, String)>,
}

impl<'a> Invite<'a> {
    fn new(
        ep: &'a Arc<SipEndpoint>,
        target: &'a Target,
        offer: &'a Offer,
        call_id: String,
    ) -> Self {
        let ip = local_ip_towards(ep.local.ip(), target.addr);
        let uri = if target.profile == Profile::Intercom {
            format!("{};intercom=true", target.uri)
        } else {
            target.uri.clone()
        };
        Invite {
            from: format!(
                "<sip:{}@{}>;tag={}",
                ep.user,
                sock(ip, ep.local.port()),
                random_token()
            ),
            ep,
            target,
            offer,
            call_id,
            ip,
            uri,
            cseq: 1,
            branch: branch(),
            auth: None,
        }
    }

    fn via(&self, branch: &str) -> String {
        format!(
            "SIP/2.0/UDP {};branch={branch};rport",
            sock(self.ip, self.ep.local.port())
        )
    }

    fn request(&self) -> Vec<u8> {
        let contact = format!(
            "sip:{}@{}",
            self.ep.user,
            sock(self.ip, self.ep.local.port())
        );
        let mut h = vec![
            ("Via", self.via(&self.branch)),
            ("Max-Forwards", "70".to_owned()),
            ("From", self.from.clone()),
            ("To", format!("<{}>", self.target.uri)),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} INVITE", self.cseq)),
            ("Contact", format!("<{contact}>")),
            ("Allow", "INVITE, ACK, BYE, CANCEL, OPTIONS".to_owned()),
            ("User-Agent", "campusgw".to_owned()),
            ("Content-Type", "application/sdp".to_owned()),
        ];
        h.extend(self.target.profile.headers(&contact));
        if let Some((name, v)) = &self.auth {
            h.push((name, v.clone()));
        }
        let sdp = msg::sdp_offer(
            self.ip,
            self.offer.rtp_port,
            rand::random::<u32>().into(),
            &self.offer.codecs,
        );
        msg::write(&format!("INVITE {} SIP/2.0", self.uri), &h, &sdp)
    }

    /// The in-transaction ACK of a non-2xx final answer (§17.1.1.3).
    fn ack_failure(&self, resp: &Message) -> Vec<u8> {
        let h = vec![
            ("Via", self.via(&self.branch)),
            ("Max-Forwards", "70".to_owned()),
            ("From", self.from.clone()),
            ("To", resp.header("to").unwrap_or_default().to_owned()),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} ACK", self.cseq)),
        ];
        msg::write(&format!("ACK {} SIP/2.0", self.uri), &h, "")
    }

    fn cancel(&self) -> Vec<u8> {
        let h = vec![
            ("Via", self.via(&self.branch)),
            ("Max-Forwards", "70".to_owned()),
            ("From", self.from.clone()),
            ("To", format!("<{}>", self.target.uri)),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} CANCEL", self.cseq)),
        ];
        msg::write(&format!("CANCEL {} SIP/2.0", self.uri), &h, "")
    }

    async fn run(
        &mut self,
        mut rx: mpsc::UnboundedReceiver<Message>,
        cancel: &CancellationToken,
    ) -> Result<Call, CallError> {
        let deadline = Instant::now() + self.offer.timeout;
        let mut req = self.request();
        self.ep.send(&req, self.target.addr).await?;
        let mut interval = T1;
        let mut next = Instant::now() + interval;
        let mut provisional = false;
        loop {
            let wake = if provisional {
                deadline
            } else {
                next.min(deadline)
            };
            let m = tokio::select! {
                m = rx.recv() => m.ok_or(CallError::Cancelled)?,
                () = tokio::time::sleep_until(wake) => {
                    if Instant::now() >= deadline {
                        return Err(self.give_up(provisional, &mut rx, CallError::Timeout(self.offer.timeout)).await);
                    }
                    self.ep.send(&req, self.target.addr).await?;
                    interval = (interval * 2).min(T2);
                    next = Instant::now() + interval;
                    continue;
                }
                () = cancel.cancelled() => {
                    return Err(self.give_up(provisional, &mut rx, CallError::Cancelled).await);
                }
            };
            let Some(code) = m.code() else { continue };
            if m.cseq() != Some((self.cseq, "INVITE")) {
                continue;
            }
            match code {
                100..=199 => provisional = true,
                200..=299 => return self.answered(m, rx).await,
                401 | 407 if self.auth.is_none() => {
                    self.ep
                        .send(&self.ack_failure(&m), self.target.addr)
                        .await?;
                    self.authenticate(&m, code)?;
                    req = self.request();
                    self.ep.send(&req, self.target.addr).await?;
                    (interval, provisional) = (T1, false);
                    next = Instant::now() + interval;
                }
                _ => {
                    self.ep
                        .send(&self.ack_failure(&m), self.target.addr)
                        .await?;
                    return Err(match code {
                        401 | 407 => CallError::Auth(format!("credentials refused ({code})")),
                        // Devices answer a wrong digest with 403 as often as with a new 401.
                        403 if self.auth.is_some() => {
                            CallError::Auth(format!("credentials refused ({code} {})", reason(&m)))
                        }
                        _ => CallError::Refused(code, reason(&m)),
                    });
                }
            }
        }
    }

    fn authenticate(&mut self, m: &Message, code: u16) -> Result<(), CallError> {
        let (ask, answer) = if code == 401 {
            ("www-authenticate", "Authorization")
        } else {
            ("proxy-authenticate", "Proxy-Authorization")
        };
        let Some(Credentials { user, password }) = &self.target.auth else {
            return Err(CallError::Auth(format!(
                "challenged ({code}) but no credentials are configured"
            )));
        };
        let c = m
            .header(ask)
            .and_then(digest::parse_challenge)
            .ok_or_else(|| CallError::Auth("unreadable challenge".to_owned()))?;
        let h = digest::authorization(&c, user, password, "INVITE", &self.uri, &random_token());
        self.auth = Some((answer, h));
        self.cseq += 1;
        self.branch = branch();
        Ok(())
    }

    /// After a provisional answer the INVITE is cancelled (§9.1); the 487 is ACKed.
    async fn give_up(
        &self,
        provisional: bool,
        rx: &mut mpsc::UnboundedReceiver<Message>,
        why: CallError,
    ) -> CallError {
        if provisional && self.ep.send(&self.cancel(), self.target.addr).await.is_ok() {
            let until = Instant::now() + NON_INVITE_TIMEOUT;
            while let Ok(Some(m)) = tokio::time::timeout_at(until, rx.recv()).await {
                if m.cseq() == Some((self.cseq, "INVITE")) && m.code().is_some_and(|c| c >= 300) {
                    let _ = self.ep.send(&self.ack_failure(&m), self.target.addr).await;
                    break;
                }
            }
        }
        why
    }

    async fn answered(
        &self,
        m: Message,
        rx: mpsc::UnboundedReceiver<Message>,
    ) -> Result<Call, CallError> {
        let to = m.header("to").unwrap_or_default().to_owned();
        let remote_uri = m.contact_uri().unwrap_or(&self.target.uri).to_owned();
        let h = vec![
            ("Via", self.via(&branch())),
            ("Max-Forwards", "70".to_owned()),
            ("From", self.from.clone()),
            ("To", to.clone()),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} ACK", self.cseq)),
        ];
        let ack = msg::write(&format!("ACK {remote_uri} SIP/2.0"), &h, "");
        self.ep.send(&ack, self.target.addr).await?;
        let mut call = Call {
            ep: self.ep.clone(),
            target: self.target.clone(),
            call_id: self.call_id.clone(),
            from: self.from.clone(),
            to,
            remote_uri,
            cseq: self.cseq,
            ack,
            rx,
            media: SdpAnswer {
                addr: self.target.addr.ip(),
                port: 0,
                codec: Codec::Pcma,
            },
        };
        match msg::sdp_answer(&m.body_text(), &self.offer.codecs) {
            Ok(media) => {
                call.media = media;
                Ok(call)
            }
            Err(why) => {
                // The dialog exists: end it before reporting.
                call.hang_up().await;
                Err(CallError::Sdp(why))
            }
        }
    }
}

fn sock(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}

fn branch() -> String {
    // RFC 3261 §8.1.1.7: the magic cookie marks an RFC 3261 branch.
    format!("z9hG4bK{}", random_token())
}

fn reason(m: &Message) -> String {
    match &m.start {
        msg::StartLine::Response { reason, .. } => reason.clone(),
        msg::StartLine::Request { .. } => String::new(),
    }
}

impl Call {
    /// Resolves when the speaker hangs up (sends BYE); re-ACKs retransmitted 2xx meanwhile.
    pub async fn remote_hangup(&mut self) {
        while let Some(m) = self.rx.recv().await {
            if m.method() == Some("BYE") {
                return;
            }
            if m.code().is_some_and(|c| (200..300).contains(&c))
                && m.cseq().is_some_and(|(_, x)| x == "INVITE")
            {
                let _ = self.ep.send(&self.ack, self.target.addr).await;
            }
        }
    }

    /// Sends BYE and waits (bounded) for its answer.
    pub async fn hang_up(mut self) {
        self.cseq += 1;
        let ip = local_ip_towards(self.ep.local.ip(), self.target.addr);
        let h = vec![
            (
                "Via",
                format!(
                    "SIP/2.0/UDP {};branch={};rport",
                    sock(ip, self.ep.local.port()),
                    branch()
                ),
            ),
            ("Max-Forwards", "70".to_owned()),
            ("From", self.from.clone()),
            ("To", self.to.clone()),
            ("Call-ID", self.call_id.clone()),
            ("CSeq", format!("{} BYE", self.cseq)),
        ];
        let bye = msg::write(&format!("BYE {} SIP/2.0", self.remote_uri), &h, "");
        let until = Instant::now() + NON_INVITE_TIMEOUT;
        let mut interval = T1;
        'send: while Instant::now() < until {
            if self.ep.send(&bye, self.target.addr).await.is_err() {
                break;
            }
            let next = (Instant::now() + interval).min(until);
            interval = (interval * 2).min(T2);
            while let Ok(m) = tokio::time::timeout_at(next, self.rx.recv()).await {
                match m {
                    Some(m)
                        if m.cseq() == Some((self.cseq, "BYE"))
                            && m.code().is_some_and(|c| c >= 200) =>
                    {
                        break 'send;
                    }
                    Some(_) => {}
                    None => break 'send,
                }
            }
        }
        self.ep.forget(&self.call_id);
    }

    /// The speaker's URI.
    pub fn uri(&self) -> &str {
        &self.target.uri
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.ep.forget(&self.call_id);
    }
}
