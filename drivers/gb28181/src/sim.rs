//! A simulated GB/T 28181 platform (the SIP server side) for tests and `campusgw demo`:
//! challenges REGISTER with a digest (401), accepts the right credentials (200 with
//! `Expires`), refuses wrong ones (403), answers Keepalive and Alarm MESSAGEs with 200
//! (an Alarm also with a `<Response>` MESSAGE), sends Catalog queries on request and
//! records what it got. It can misbehave: go silent, refuse alarms with a code, answer
//! MESSAGEs from a device it does not know with 403 (what a restarted platform does) and
//! restart (forget every registration, rebind the same port).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sip::digest::{self, Challenge};
use campusgw_sip::msg::{self, Message};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::id::GbId;
use crate::manscdp::{self, Charset};

/// The platform's identity and the one device it accepts.
#[derive(Clone)]
pub struct SimSettings {
    /// Its SIP server id.
    pub platform_id: GbId,
    /// The device's user name (its id).
    pub username: String,
    /// The device's password.
    pub password: String,
    /// Expires granted.
    pub expires: u64,
    /// Charset of what it sends.
    pub charset: Charset,
}

/// One Alarm as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedAlarm {
    /// SN.
    pub sn: Option<u32>,
    /// DeviceID.
    pub device_id: String,
    /// AlarmPriority.
    pub priority: String,
    /// AlarmMethod.
    pub method: String,
    /// AlarmTime.
    pub time: String,
    /// AlarmDescription.
    pub description: String,
    /// The XML declaration's encoding.
    pub declared: String,
    /// Whether the raw body was valid UTF-8.
    pub utf8: bool,
    /// When it arrived (and was answered 200).
    pub at: std::time::Instant,
}

/// Misbehaviour switches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Answers as a platform should.
    #[default]
    Normal,
    /// Drops every datagram.
    Silent,
    /// Answers Alarm MESSAGEs with this code.
    RefuseAlarms(u16),
}

/// What the platform saw.
#[derive(Debug, Clone, Default)]
pub struct SimState {
    /// REGISTER requests (all, challenged or not).
    pub registers: u32,
    /// Successful registrations.
    pub registrations: u32,
    /// REGISTERs with wrong credentials.
    pub bad_auth: u32,
    /// The registered device's address, when registered.
    pub registered: Option<SocketAddr>,
    /// Keepalives answered.
    pub keepalives: u32,
    /// Alarms answered 200, in order.
    pub alarms: Vec<ReceivedAlarm>,
    /// MESSAGEs refused because the device was not registered.
    pub unknown_device: u32,
    /// Catalog items received (DeviceID, Name, ParentID).
    pub catalog: Vec<(String, String, String)>,
    /// SumNum of the last catalog response.
    pub catalog_sum: Option<usize>,
    /// Datagrams that were not SIP or MANSCDP.
    pub garbage: u32,
    /// Restarts.
    pub restarts: u32,
}

struct Shared {
    s: SimSettings,
    mode: Mode,
    state: SimState,
    nonce: String,
    sn: u32,
    /// Recent requests answered, (Call-ID, CSeq) → the answer: a retransmission gets the
    /// same answer again and is not counted twice (RFC 3261 §17.2.2).
    answered: std::collections::VecDeque<((String, String), Vec<u8>)>,
}

/// A running simulated platform.
pub struct PlatformSim {
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    changed: watch::Sender<u64>,
    sock: Arc<UdpSocket>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PlatformSim {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn token() -> String {
    format!("{:012x}", rand::random::<u64>() >> 16)
}

impl PlatformSim {
    /// Binds `bind` (e.g. `127.0.0.1:0`) and starts answering.
    ///
    /// # Errors
    /// The socket cannot be bound.
    pub async fn start(s: SimSettings, bind: SocketAddr) -> std::io::Result<PlatformSim> {
        let sock = Arc::new(UdpSocket::bind(bind).await?);
        let addr = sock.local_addr()?;
        let shared = Arc::new(Mutex::new(Shared {
            s,
            mode: Mode::Normal,
            state: SimState::default(),
            nonce: token(),
            sn: 1,
            answered: std::collections::VecDeque::new(),
        }));
        let (changed, _) = watch::channel(0);
        let task = tokio::spawn(serve(sock.clone(), shared.clone(), changed.clone()));
        Ok(PlatformSim {
            addr,
            shared,
            changed,
            sock,
            task,
        })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A copy of what it saw.
    pub fn state(&self) -> SimState {
        self.lock().state.clone()
    }

    /// Sets how it behaves.
    pub fn set_mode(&self, m: Mode) {
        self.lock().mode = m;
    }

    /// Waits until `f` holds (or `timeout`); returns the last state seen and whether it held.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        f: impl Fn(&SimState) -> bool,
    ) -> (SimState, bool) {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let s = self.state();
            if f(&s) {
                return (s, true);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let s = self.state();
                let ok = f(&s);
                return (s, ok);
            }
        }
    }

    /// Stops answering, forgets the registration and listens again on the same port
    /// after `down` (alarms sent meanwhile go unanswered).
    ///
    /// # Errors
    /// The port could not be bound again.
    pub async fn restart(&mut self, down: Duration) -> std::io::Result<()> {
        self.task.abort();
        let _ = (&mut self.task).await;
        // the task held the only other handle: the port is free once this one is replaced
        self.sock = Arc::new(UdpSocket::bind(("0.0.0.0", 0)).await?);
        tokio::time::sleep(down).await;
        let sock = Arc::new(UdpSocket::bind(self.addr).await?);
        {
            let mut g = self.lock();
            g.state.registered = None;
            g.state.restarts += 1;
            g.nonce = token();
        }
        self.sock = sock.clone();
        self.task = tokio::spawn(serve(sock, self.shared.clone(), self.changed.clone()));
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Sends a Catalog query to the registered device; false when none is registered.
    pub async fn query_catalog(&self) -> bool {
        let (to, bytes) = {
            let mut g = self.lock();
            let Some(to) = g.state.registered else {
                return false;
            };
            g.sn += 1;
            let device = GbId::new(&g.s.username).unwrap_or_else(|_| g.s.platform_id.clone());
            let body = manscdp::catalog_query(g.s.charset, g.sn, &device);
            let domain = g.s.platform_id.domain().to_owned();
            let h = vec![
                (
                    "Via",
                    format!("SIP/2.0/UDP {};branch=z9hG4bK{}", self.addr, token()),
                ),
                (
                    "From",
                    format!("<sip:{}@{domain}>;tag={}", g.s.platform_id, token()),
                ),
                ("To", format!("<sip:{}@{domain}>", g.s.username)),
                ("Call-ID", format!("{}@sim", token())),
                ("CSeq", format!("{} MESSAGE", g.sn)),
                ("Max-Forwards", "70".into()),
                ("Content-Type", "Application/MANSCDP+xml".into()),
            ];
            (
                to,
                msg::write(
                    &format!("MESSAGE sip:{}@{domain} SIP/2.0", g.s.username),
                    &h,
                    body,
                ),
            )
        };
        self.sock.send_to(&bytes, to).await.is_ok()
    }
}

fn reply(m: &Message, code: u16, reason: &str, extra: &[(&str, String)]) -> Vec<u8> {
    let mut h: Vec<(&str, String)> = m.all("via").map(|v| ("Via", v.to_owned())).collect();
    for (n, k) in [("From", "from"), ("Call-ID", "call-id"), ("CSeq", "cseq")] {
        if let Some(v) = m.header(k) {
            h.push((n, v.to_owned()));
        }
    }
    if let Some(t) = m.header("to") {
        h.push((
            "To",
            if t.contains("tag=") {
                t.to_owned()
            } else {
                format!("{t};tag=sim")
            },
        ));
    }
    h.extend(extra.iter().map(|(n, v)| (*n, v.clone())));
    msg::write(&format!("SIP/2.0 {code} {reason}"), &h, "")
}

async fn serve(sock: Arc<UdpSocket>, shared: Arc<Mutex<Shared>>, changed: watch::Sender<u64>) {
    let mut buf = vec![0u8; msg::MAX_MESSAGE + 1];
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let out = {
            let mut g = shared
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            handle(&mut g, &buf[..n], from)
        };
        for (bytes, to) in out {
            let _ = sock.send_to(&bytes, to).await;
        }
        changed.send_modify(|n| *n += 1);
    }
}

fn handle(g: &mut Shared, raw: &[u8], from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
    if g.mode == Mode::Silent {
        return vec![];
    }
    let Ok(m) = msg::parse(raw) else {
        g.state.garbage += 1;
        return vec![];
    };
    if m.code().is_some() {
        return vec![]; // answers to our Catalog query and Alarm responses
    }
    let key = (
        m.call_id().unwrap_or_default().to_owned(),
        m.header("cseq").unwrap_or_default().to_owned(),
    );
    if let Some((_, again)) = g.answered.iter().find(|(k, _)| *k == key) {
        return vec![(again.clone(), from)];
    }
    let out = answer(g, &m, from);
    if let Some((first, _)) = out.first() {
        if g.answered.len() == 64 {
            g.answered.pop_front();
        }
        g.answered.push_back((key, first.clone()));
    }
    out
}

fn answer(g: &mut Shared, m: &Message, from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
    match m.method().unwrap_or_default() {
        "REGISTER" => {
            g.state.registers += 1;
            let c = Challenge {
                realm: g.s.platform_id.domain().to_owned(),
                nonce: g.nonce.clone(),
                opaque: None,
                qop_auth: false,
                algorithm: Some("MD5".into()),
            };
            match m.header("authorization") {
                None => {
                    let www = format!(
                        "Digest realm=\"{}\", nonce=\"{}\", algorithm=MD5",
                        c.realm, c.nonce
                    );
                    vec![(
                        reply(m, 401, "Unauthorized", &[("WWW-Authenticate", www)]),
                        from,
                    )]
                }
                Some(a) if digest::verify(a, &c, &g.s.username, &g.s.password, "REGISTER") => {
                    let expires = m
                        .header("expires")
                        .and_then(|e| e.parse::<u64>().ok())
                        .unwrap_or(g.s.expires)
                        .min(g.s.expires);
                    if expires == 0 {
                        g.state.registered = None;
                    } else {
                        g.state.registered = Some(from);
                        g.state.registrations += 1;
                    }
                    let date = chrono::Utc::now()
                        .format("%Y-%m-%dT%H:%M:%S%.3f")
                        .to_string();
                    vec![(
                        reply(
                            m,
                            200,
                            "OK",
                            &[("Expires", expires.to_string()), ("Date", date)],
                        ),
                        from,
                    )]
                }
                Some(_) => {
                    g.state.bad_auth += 1;
                    vec![(reply(m, 403, "Forbidden", &[]), from)]
                }
            }
        }
        "MESSAGE" => message(g, m, from),
        _ => vec![(reply(m, 405, "Method Not Allowed", &[]), from)],
    }
}

fn message(g: &mut Shared, m: &Message, from: SocketAddr) -> Vec<(Vec<u8>, SocketAddr)> {
    let Ok(doc) = manscdp::parse(&m.body) else {
        g.state.garbage += 1;
        return vec![(reply(m, 400, "Bad Request", &[]), from)];
    };
    if g.state.registered != Some(from) {
        g.state.unknown_device += 1;
        return vec![(reply(m, 403, "Forbidden", &[]), from)];
    }
    match (doc.kind(), doc.cmd_type.as_str()) {
        ("Notify", "Keepalive") => g.state.keepalives += 1,
        ("Notify", "Alarm") => {
            if let Mode::RefuseAlarms(code) = g.mode {
                return vec![(reply(m, code, "Refused", &[]), from)];
            }
            let head = String::from_utf8_lossy(&m.body[..m.body.len().min(60)]).into_owned();
            let declared = head
                .split("encoding=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or_default()
                .to_owned();
            let t = |k: &str| doc.root.text_of(k).unwrap_or_default().to_owned();
            let sn = doc.sn;
            let device = doc.device_id.clone().unwrap_or_default();
            g.state.alarms.push(ReceivedAlarm {
                sn,
                device_id: device.clone(),
                priority: t("AlarmPriority"),
                method: t("AlarmMethod"),
                time: t("AlarmTime"),
                description: t("AlarmDescription"),
                declared,
                utf8: std::str::from_utf8(&m.body).is_ok(),
                at: std::time::Instant::now(),
            });
            let ok = reply(m, 200, "OK", &[]);
            // the platform's own answer, as a MESSAGE (§9.4.2)
            let body =
                manscdp::result_response(g.s.charset, "Alarm", sn.unwrap_or(0), &device, true);
            let domain = g.s.platform_id.domain().to_owned();
            let h = vec![
                (
                    "Via",
                    format!("SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK{}", token()),
                ),
                (
                    "From",
                    format!("<sip:{}@{domain}>;tag={}", g.s.platform_id, token()),
                ),
                ("To", format!("<sip:{}@{domain}>", g.s.username)),
                ("Call-ID", format!("{}@sim", token())),
                ("CSeq", "1 MESSAGE".into()),
                ("Content-Type", "Application/MANSCDP+xml".into()),
            ];
            let resp = msg::write(
                &format!("MESSAGE sip:{}@{domain} SIP/2.0", g.s.username),
                &h,
                body,
            );
            return vec![(ok, from), (resp, from)];
        }
        ("Response", "Catalog") => {
            g.state.catalog_sum = doc.root.text_of("SumNum").and_then(|s| s.parse().ok());
            if let Some(list) = doc.root.child("DeviceList") {
                for i in &list.children {
                    let t = |k: &str| i.text_of(k).unwrap_or_default().to_owned();
                    g.state
                        .catalog
                        .push((t("DeviceID"), t("Name"), t("ParentID")));
                }
            }
        }
        _ => {}
    }
    vec![(reply(m, 200, "OK", &[]), from)]
}
