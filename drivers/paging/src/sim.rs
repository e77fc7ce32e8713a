//! Simulated IP speakers for tests and `campusgw demo`: a SIP speaker that auto-answers (or
//! refuses, stalls, answers garbage, challenges, hangs up mid-message) and checks the RTP it
//! receives, and a multicast listener that checks a group's stream.
//!
//! What they heard is a [`Heard`] / [`RtpReport`] behind a `watch` channel, so tests wait on
//! conditions (`wait_until`) instead of sleeping. The RTP check, per SSRC: sequence numbers
//! must advance by one (`seq_gaps` counts the rest), timestamps by a positive multiple of
//! 160 (`timestamp_errors`), payloads be 160 bytes of PT 0 or 8; `max_drift_ms` is how far
//! arrival time ran from RTP time (reported for benchmarks, never asserted in tests).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::rtp;
use crate::sip::digest::{self, Challenge};
use crate::sip::msg::{self, Message};

/// Payloads kept in [`RtpReport::recent`].
const RECENT: usize = 100;

/// How a simulated speaker behaves when called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Answers 200 with SDP at once.
    Answer,
    /// Answers with this final status (486 Busy Here, 603 Decline...).
    Refuse(u16),
    /// Never answers.
    Stall,
    /// Answers every INVITE with bytes that are not SIP.
    Garbage,
    /// Answers, then sends BYE after this long.
    HangUpAfter(Duration),
    /// Challenges with digest auth (401) and answers only correct credentials.
    Challenge {
        /// Expected user.
        user: String,
        /// Expected password.
        password: String,
    },
}

/// What a stream of RTP looked like.
#[derive(Debug, Clone, Default)]
pub struct RtpReport {
    /// Packets received (parsable or not).
    pub packets: u64,
    /// Packets that were not RTP.
    pub bad_packets: u64,
    /// Payload types seen.
    pub payload_types: BTreeSet<u8>,
    /// SSRCs seen.
    pub ssrcs: BTreeSet<u32>,
    /// Sequence numbers that did not follow the previous one of their SSRC.
    pub seq_gaps: u64,
    /// Timestamp steps that were not a positive multiple of 160.
    pub timestamp_errors: u64,
    /// Payloads that were not 160 bytes.
    pub wrong_size: u64,
    /// Largest |arrival time - RTP time| since each stream's first packet, in ms.
    pub max_drift_ms: f64,
    /// The last payloads, newest last.
    pub recent: VecDeque<Vec<u8>>,
    /// |inter-arrival time - 20 ms| per packet of a stream, in µs (the first
    /// [`MAX_JITTER_SAMPLES`]; for benchmarks).
    pub jitter_us: Vec<u32>,
}

/// Jitter samples kept per report.
pub const MAX_JITTER_SAMPLES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct StreamState {
    seq: u16,
    ts: u32,
    first_ts: u32,
    first_at: Instant,
    last_at: Option<Instant>,
}

/// Checks packets into a report.
#[derive(Debug, Default)]
pub struct RtpCheck {
    streams: HashMap<u32, StreamState>,
}

impl RtpCheck {
    /// Accounts one datagram received at `at`.
    pub fn on_packet(&mut self, bytes: &[u8], at: Instant, r: &mut RtpReport) {
        r.packets += 1;
        let Ok(p) = rtp::parse(bytes) else {
            r.bad_packets += 1;
            return;
        };
        r.payload_types.insert(p.payload_type);
        r.ssrcs.insert(p.ssrc);
        if p.payload.len() != rtp::SAMPLES_PER_PACKET {
            r.wrong_size += 1;
        }
        if r.recent.len() == RECENT {
            r.recent.pop_front();
        }
        r.recent.push_back(p.payload.to_vec());
        let st = self.streams.entry(p.ssrc).or_insert(StreamState {
            seq: p.seq.wrapping_sub(1),
            ts: p.timestamp.wrapping_sub(160),
            first_ts: p.timestamp,
            first_at: at,
            last_at: None,
        });
        if let Some(last) = st.last_at
            && r.jitter_us.len() < MAX_JITTER_SAMPLES
        {
            let gap = at.duration_since(last).as_micros() as i64;
            let dev = (gap - rtp::PACKET_INTERVAL.as_micros() as i64).unsigned_abs();
            r.jitter_us.push(u32::try_from(dev).unwrap_or(u32::MAX));
        }
        st.last_at = Some(at);
        if p.seq != st.seq.wrapping_add(1) {
            r.seq_gaps += 1;
        }
        let step = p.timestamp.wrapping_sub(st.ts);
        if step == 0 || step % 160 != 0 || step > 160 * 50 * 60 {
            r.timestamp_errors += 1;
        }
        let media = f64::from(p.timestamp.wrapping_sub(st.first_ts)) / 8.0;
        let wall = at.duration_since(st.first_at).as_secs_f64() * 1000.0;
        r.max_drift_ms = r.max_drift_ms.max((wall - media).abs());
        st.seq = p.seq;
        st.ts = p.timestamp;
    }
}

/// What a simulated speaker saw.
#[derive(Debug, Clone, Default)]
pub struct Heard {
    /// INVITEs received (retransmissions included).
    pub invites: u32,
    /// Calls answered 200.
    pub answered: u32,
    /// ACKs received.
    pub acks: u32,
    /// BYEs received.
    pub byes: u32,
    /// CANCELs received.
    pub cancels: u32,
    /// BYEs the speaker sent.
    pub hung_up: u32,
    /// INVITEs whose credentials were right / wrong.
    pub auth_ok: u32,
    /// INVITEs whose credentials were wrong.
    pub auth_failed: u32,
    /// Auto-answer headers of the last INVITE (`Call-Info: ...`, `Alert-Info: ...`, ...).
    pub auto_answer: Vec<String>,
    /// The Request-URI of the last INVITE.
    pub request_uri: String,
    /// The SDP offer of the last INVITE.
    pub offer: String,
    /// The RTP it received.
    pub rtp: RtpReport,
}

/// A simulated SIP speaker on 127.0.0.1.
pub struct SpeakerSim {
    sip: SocketAddr,
    heard: watch::Receiver<Heard>,
    stop: CancellationToken,
}

impl Drop for SpeakerSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl SpeakerSim {
    /// Starts a speaker.
    ///
    /// # Errors
    /// If its sockets cannot be bound.
    pub async fn start(behaviour: Behaviour) -> std::io::Result<SpeakerSim> {
        let sip = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let rtp_sock = UdpSocket::bind("127.0.0.1:0").await?;
        let rtp_port = rtp_sock.local_addr()?.port();
        let (tx, rx) = watch::channel(Heard::default());
        let tx = Arc::new(tx);
        let stop = CancellationToken::new();
        let addr = sip.local_addr()?;
        tokio::spawn(receive_rtp(rtp_sock, tx.clone(), stop.clone()));
        let sim = Sip {
            sock: sip,
            behaviour,
            rtp_port,
            tx,
            answers: HashMap::new(),
            nonce: format!("{:x}", rand::random::<u64>()),
            stop: stop.clone(),
        };
        tokio::spawn(sim.serve());
        Ok(SpeakerSim {
            sip: addr,
            heard: rx,
            stop,
        })
    }

    /// Its SIP URI.
    pub fn uri(&self) -> String {
        format!("sip:spk@{}", self.sip)
    }

    /// What it heard so far.
    pub fn heard(&self) -> Heard {
        self.heard.borrow().clone()
    }

    /// Waits until `pred` holds; returns what it heard then.
    ///
    /// # Errors
    /// What it heard, if `pred` did not hold within `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&Heard) -> bool,
    ) -> Result<Heard, Box<Heard>> {
        let mut rx = self.heard.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|h| pred(h))).await {
            Ok(Ok(h)) => Ok(h.clone()),
            _ => Err(Box::new(self.heard())),
        }
    }
}

async fn receive_rtp(sock: UdpSocket, tx: Arc<watch::Sender<Heard>>, stop: CancellationToken) {
    let mut check = RtpCheck::default();
    let mut buf = [0u8; 2048];
    loop {
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                let Ok((n, _)) = r else { continue };
                let at = Instant::now();
                tx.send_modify(|h| check.on_packet(&buf[..n], at, &mut h.rtp));
            }
            () = stop.cancelled() => return,
        }
    }
}

struct Sip {
    sock: Arc<UdpSocket>,
    behaviour: Behaviour,
    rtp_port: u16,
    tx: Arc<watch::Sender<Heard>>,
    /// Final answers by (Call-ID, CSeq), re-sent to retransmitted INVITEs.
    answers: HashMap<(String, u32), Vec<u8>>,
    nonce: String,
    stop: CancellationToken,
}

fn response(
    req: &Message,
    code: u16,
    reason: &str,
    tag: &str,
    extra: &[(&str, String)],
    body: &str,
) -> Vec<u8> {
    let mut h: Vec<(&str, String)> = req.all("via").map(|v| ("Via", v.to_owned())).collect();
    h.push(("From", req.header("from").unwrap_or_default().to_owned()));
    let to = req.header("to").unwrap_or_default();
    let to = if to.contains("tag=") || code == 100 {
        to.to_owned()
    } else {
        format!("{to};tag={tag}")
    };
    h.push(("To", to));
    h.push(("Call-ID", req.call_id().unwrap_or_default().to_owned()));
    h.push(("CSeq", req.header("cseq").unwrap_or_default().to_owned()));
    h.extend(extra.iter().cloned());
    msg::write(&format!("SIP/2.0 {code} {reason}"), &h, body)
}

impl Sip {
    async fn serve(mut self) {
        let mut buf = vec![0u8; 65536];
        loop {
            let (n, from) = tokio::select! {
                r = self.sock.recv_from(&mut buf) => match r { Ok(x) => x, Err(_) => continue },
                () = self.stop.cancelled() => return,
            };
            let Ok(m) = msg::parse(&buf[..n]) else {
                continue;
            };
            self.on_request(m, from).await;
        }
    }

    async fn send(&self, bytes: &[u8], to: SocketAddr) {
        let _ = self.sock.send_to(bytes, to).await;
    }

    async fn on_request(&mut self, m: Message, from: SocketAddr) {
        let tag = "simtag";
        match m.method() {
            Some("INVITE") => self.on_invite(m, from).await,
            Some("ACK") => self.tx.send_modify(|h| h.acks += 1),
            Some("BYE") => {
                self.tx.send_modify(|h| h.byes += 1);
                self.send(&response(&m, 200, "OK", tag, &[], ""), from)
                    .await;
            }
            Some("CANCEL") => {
                self.tx.send_modify(|h| h.cancels += 1);
                self.send(&response(&m, 200, "OK", tag, &[], ""), from)
                    .await;
                let mut inv = m.clone();
                if let Some((n, _)) = m.cseq() {
                    for (k, v) in &mut inv.headers {
                        if k == "cseq" {
                            *v = format!("{n} INVITE");
                        }
                    }
                }
                self.send(
                    &response(&inv, 487, "Request Terminated", tag, &[], ""),
                    from,
                )
                .await;
            }
            _ => {}
        }
    }

    async fn on_invite(&mut self, m: Message, from: SocketAddr) {
        let key = (
            m.call_id().unwrap_or_default().to_owned(),
            m.cseq().map_or(0, |c| c.0),
        );
        let uri = match &m.start {
            msg::StartLine::Request { uri, .. } => uri.clone(),
            msg::StartLine::Response { .. } => String::new(),
        };
        let auto: Vec<String> = m
            .headers
            .iter()
            .filter(|(n, _)| matches!(n.as_str(), "call-info" | "alert-info" | "answer-mode"))
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        self.tx.send_modify(|h| {
            h.invites += 1;
            h.auto_answer = auto;
            h.request_uri = uri.clone();
            h.offer = m.body_text().into_owned();
        });
        if let Some(prev) = self.answers.get(&key) {
            let prev = prev.clone();
            self.send(&prev, from).await;
            return;
        }
        let tag = format!("sim{:x}", rand::random::<u32>());
        let answer = match self.behaviour.clone() {
            Behaviour::Stall => return,
            Behaviour::Garbage => {
                self.send(b"SIP/2.0 2OO 0K\r\n\x00\xff garbage \r\n\r\n", from)
                    .await;
                self.send(&[0xde, 0xad, 0xbe, 0xef], from).await;
                return;
            }
            Behaviour::Refuse(code) => response(&m, code, "Refused", &tag, &[], ""),
            Behaviour::Challenge { user, password } => {
                let c = Challenge {
                    realm: "sim".into(),
                    nonce: self.nonce.clone(),
                    opaque: None,
                    qop_auth: true,
                    algorithm: None,
                };
                match m.header("authorization") {
                    None => {
                        let www = format!(
                            "Digest realm=\"sim\", nonce=\"{}\", qop=\"auth\", algorithm=MD5",
                            self.nonce
                        );
                        response(
                            &m,
                            401,
                            "Unauthorized",
                            &tag,
                            &[("WWW-Authenticate", www)],
                            "",
                        )
                    }
                    Some(a) if digest::verify(a, &c, &user, &password, "INVITE") => {
                        self.tx.send_modify(|h| h.auth_ok += 1);
                        self.ok(&m, &tag)
                    }
                    Some(_) => {
                        self.tx.send_modify(|h| h.auth_failed += 1);
                        response(&m, 403, "Forbidden", &tag, &[], "")
                    }
                }
            }
            Behaviour::Answer => self.ok(&m, &tag),
            Behaviour::HangUpAfter(d) => {
                let ok = self.ok(&m, &tag);
                tokio::spawn(hang_up_later(
                    self.sock.clone(),
                    m.clone(),
                    tag.clone(),
                    from,
                    d,
                    self.tx.clone(),
                ));
                ok
            }
        };
        self.send(&response(&m, 100, "Trying", &tag, &[], ""), from)
            .await;
        self.send(&answer, from).await;
        self.answers.insert(key, answer);
    }

    fn ok(&self, m: &Message, tag: &str) -> Vec<u8> {
        // PCMA if offered, else PCMU (as a Chinese installation would choose).
        let offered: Vec<u8> = m
            .body_text()
            .lines()
            .find_map(|l| l.strip_prefix("m=audio "))
            .map(|l| {
                l.split_whitespace()
                    .skip(2)
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default();
        let pt = if offered.contains(&8) { 8 } else { 0 };
        let sdp = format!(
            "v=0\r\no=sim 1 1 IN IP4 127.0.0.1\r\ns=sim\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {} RTP/AVP {pt}\r\na=recvonly\r\n",
            self.rtp_port
        );
        let contact = format!(
            "<sip:spk@{}>",
            self.sock
                .local_addr()
                .map_or_else(|_| "127.0.0.1".into(), |a| a.to_string())
        );
        self.tx.send_modify(|h| h.answered += 1);
        response(
            m,
            200,
            "OK",
            tag,
            &[
                ("Contact", contact),
                ("Content-Type", "application/sdp".into()),
            ],
            &sdp,
        )
    }
}

async fn hang_up_later(
    sock: Arc<UdpSocket>,
    invite: Message,
    tag: String,
    to: SocketAddr,
    after: Duration,
    tx: Arc<watch::Sender<Heard>>,
) {
    tokio::time::sleep(after).await;
    let local = sock
        .local_addr()
        .map_or_else(|_| "127.0.0.1".into(), |a| a.to_string());
    let target = invite
        .header("contact")
        .and_then(msg::name_addr_uri)
        .unwrap_or("sip:campusgw@127.0.0.1")
        .to_owned();
    let h = vec![
        (
            "Via",
            format!(
                "SIP/2.0/UDP {local};branch=z9hG4bKsim{:x}",
                rand::random::<u32>()
            ),
        ),
        (
            "From",
            format!("{};tag={tag}", invite.header("to").unwrap_or_default()),
        ),
        ("To", invite.header("from").unwrap_or_default().to_owned()),
        ("Call-ID", invite.call_id().unwrap_or_default().to_owned()),
        ("CSeq", "1 BYE".to_owned()),
    ];
    let _ = sock
        .send_to(&msg::write(&format!("BYE {target} SIP/2.0"), &h, ""), to)
        .await;
    tx.send_modify(|h| h.hung_up += 1);
}

/// Listens to a multicast group and checks its RTP.
pub struct MulticastListener {
    report: watch::Receiver<RtpReport>,
    stop: CancellationToken,
}

impl Drop for MulticastListener {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl MulticastListener {
    /// Joins `group` on `interface` (any if unspecified).
    ///
    /// # Errors
    /// If the socket cannot be bound or the group joined.
    pub fn start(group: SocketAddrV4, interface: Ipv4Addr) -> std::io::Result<MulticastListener> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        s.set_reuse_address(true)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, group.port())).into())?;
        s.join_multicast_v4(group.ip(), &interface)?;
        s.set_nonblocking(true)?;
        let sock = UdpSocket::from_std(s.into())?;
        let (tx, rx) = watch::channel(RtpReport::default());
        let stop = CancellationToken::new();
        let st = stop.clone();
        tokio::spawn(async move {
            let mut check = RtpCheck::default();
            let mut buf = [0u8; 2048];
            loop {
                tokio::select! {
                    r = sock.recv_from(&mut buf) => {
                        let Ok((n, _)) = r else { continue };
                        let at = Instant::now();
                        tx.send_modify(|r| check.on_packet(&buf[..n], at, r));
                    }
                    () = st.cancelled() => return,
                }
            }
        });
        Ok(MulticastListener { report: rx, stop })
    }

    /// What it heard so far.
    pub fn report(&self) -> RtpReport {
        self.report.borrow().clone()
    }

    /// Waits until `pred` holds.
    ///
    /// # Errors
    /// The report, if `pred` did not hold within `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        pred: impl Fn(&RtpReport) -> bool,
    ) -> Result<RtpReport, Box<RtpReport>> {
        let mut rx = self.report.clone();
        match tokio::time::timeout(timeout, rx.wait_for(|h| pred(h))).await {
            Ok(Ok(h)) => Ok(h.clone()),
            _ => Err(Box::new(self.report())),
        }
    }
}

/// Frames of `a` that `b` does not contain (to tell programs apart by what a speaker heard).
pub fn distinct_frames(
    a: &crate::audio::Program,
    b: &crate::audio::Program,
    codec: rtp::Codec,
) -> BTreeSet<Vec<u8>> {
    let of_b: BTreeSet<&[u8]> = (0..b.frames()).map(|i| b.frame(codec, i)).collect();
    (0..a.frames())
        .map(|i| a.frame(codec, i))
        .filter(|f| !of_b.contains(f))
        .map(<[u8]>::to_vec)
        .collect()
}
