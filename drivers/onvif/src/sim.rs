//! A scriptable, misbehaving ONVIF camera for tests and `campusgw demo`.
//!
//! SOAP 1.2 over HTTP on `127.0.0.1:0` (axum): `GetSystemDateAndTime` (settable clock),
//! `GetServices` (media and events on their own paths, so service routing is exercised),
//! `GetProfiles`, `GetStreamUri`, `GetSnapshotUri`, PullPoint (`CreatePullPointSubscription`
//! with `Initialized` states, long-polling `PullMessages`, `Renew`, `Unsubscribe`, expiry)
//! and `GET /snapshot.jpg` behind HTTP Digest. With a user configured every SOAP call but
//! `GetSystemDateAndTime` needs a WS-UsernameToken whose Created time is within 10 s of the
//! camera's clock, like real firmware. Misbehaviour: [`Misbehaviour`] for SOAP answers,
//! [`JpegMode`] for snapshots, [`SimCamera::reboot`] (subscriptions vanish).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use chrono::{DateTime, Datelike, SecondsFormat, TimeDelta, Timelike, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::auth::{self, password_digest};
use crate::xml::{self, Element};

/// How SOAP answers misbehave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Misbehaviour {
    /// Correct answers.
    #[default]
    None,
    /// Every call answers a SOAP fault (`ter:Action` / "simulated failure").
    Fault,
    /// Every call answers bytes that are not XML.
    Garbage,
    /// Every call answers a billion-laughs document.
    XmlBomb,
    /// Every answer is delayed this long.
    Slow(Duration),
}

/// What `GET /snapshot.jpg` returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum JpegMode {
    /// A small valid JPEG.
    #[default]
    Valid,
    /// The JPEG without its last bytes.
    Truncated,
    /// A valid-looking JPEG of this many bytes.
    Huge(usize),
    /// An HTML page.
    NotJpeg,
    /// A valid JPEG after this delay.
    Slow(Duration),
}

/// Counters a test can wait on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimCounters {
    /// Subscriptions created.
    pub created: u64,
    /// Successful renews.
    pub renewed: u64,
    /// Unsubscribes.
    pub unsubscribed: u64,
    /// Reboots.
    pub reboots: u64,
    /// Snapshot fetches answered with an image.
    pub snapshots: u64,
}

struct Sub {
    queue: VecDeque<String>,
    expires: Instant,
}

#[derive(Default)]
struct Inner {
    clock_offset: TimeDelta,
    misbehave: Misbehaviour,
    jpeg: JpegMode,
    /// (topic, source token, data item) → state.
    properties: BTreeMap<(String, String, String), bool>,
    subs: HashMap<u64, Sub>,
    next_id: u64,
    counters: SimCounters,
    last: Option<String>,
}

struct Shared {
    user: Option<(String, String)>,
    inner: Mutex<Inner>,
    changed: Notify,
    addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.lock().clock_offset
    }
}

/// A running simulated camera; stops when dropped.
pub struct SimCamera {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
    responders: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for SimCamera {
    fn drop(&mut self) {
        self.task.abort();
        for r in self
            .responders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            r.abort();
        }
    }
}

/// Motion topic the simulator announces.
pub const TOPIC_MOTION: &str = "tns1:RuleEngine/CellMotionDetector/Motion";
/// Tamper topic the simulator announces.
pub const TOPIC_TAMPER: &str = "tns1:RuleEngine/TamperDetector/Tamper";
/// Field detector topic.
pub const TOPIC_FIELD: &str = "tns1:RuleEngine/FieldDetector/ObjectsInside";
/// Line crossing topic.
pub const TOPIC_LINE: &str = "tns1:RuleEngine/LineDetector/Crossed";

impl SimCamera {
    /// Starts a camera on `127.0.0.1:0`; `user` = (name, password) turns authentication on.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start(user: Option<(&str, &str)>) -> std::io::Result<SimCamera> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut inner = Inner::default();
        for (t, item) in [
            (TOPIC_MOTION, "IsMotion"),
            (TOPIC_TAMPER, "IsTamper"),
            (TOPIC_FIELD, "IsInside"),
        ] {
            inner
                .properties
                .insert((t.into(), "vsc1".into(), item.into()), false);
        }
        let shared = Arc::new(Shared {
            user: user.map(|(u, p)| (u.to_owned(), p.to_owned())),
            inner: Mutex::new(inner),
            changed: Notify::new(),
            addr,
        });
        let app = Router::new()
            .route("/onvif/{*rest}", post(soap))
            .route("/snapshot.jpg", get(snapshot))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(SimCamera {
            shared,
            task,
            responders: Mutex::default(),
        })
    }

    /// Answers WS-Discovery probes sent to the returned `127.0.0.1` port (unicast) as this
    /// camera, named `name`; garbage and other messages are ignored.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn discovery_responder(&self, name: &str) -> std::io::Result<SocketAddr> {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let addr = sock.local_addr()?;
        self.respond_on(sock, name);
        Ok(addr)
    }

    /// Answers WS-Discovery probes sent to the multicast group 239.255.255.250:3702 on
    /// `interface` as this camera, like a real camera on the device LAN (for tests in a
    /// network namespace of their own).
    ///
    /// # Errors
    /// When the port cannot be bound or the group not joined.
    pub fn multicast_discovery_responder(
        &self,
        name: &str,
        interface: std::net::Ipv4Addr,
    ) -> std::io::Result<()> {
        let group = crate::discovery::MULTICAST;
        let sock = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
        // Several simulated cameras share the well-known port, as cameras on one host would.
        sock.set_reuse_address(true)?;
        sock.bind(&SocketAddr::from((std::net::Ipv4Addr::UNSPECIFIED, group.port())).into())?;
        sock.join_multicast_v4(group.ip(), &interface)?;
        sock.set_nonblocking(true)?;
        let sock = tokio::net::UdpSocket::from_std(sock.into())?;
        self.respond_on(sock, name);
        Ok(())
    }

    fn respond_on(&self, sock: tokio::net::UdpSocket, name: &str) {
        let (xaddr, name) = (self.xaddr(), name.replace(' ', "%20"));
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                let Some(id) = buf.get(..n).and_then(|b| xml::parse(b).ok()).and_then(|d| {
                    d.path(&["Header", "MessageID"])
                        .map(|e| e.text().to_owned())
                }) else {
                    continue;
                };
                let reply = probe_matches(&id, &xaddr, &name);
                let _ = sock.send_to(reply.as_bytes(), from).await;
            }
        });
        self.responders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// The device service URL.
    pub fn xaddr(&self) -> String {
        format!("http://{}/onvif/device_service", self.shared.addr)
    }

    /// Sets the camera clock to ours plus `offset`.
    pub fn set_clock_offset(&self, offset: TimeDelta) {
        self.shared.lock().clock_offset = offset;
    }

    /// Sets how SOAP answers misbehave.
    pub fn misbehave(&self, m: Misbehaviour) {
        self.shared.lock().misbehave = m;
    }

    /// Sets what snapshots return.
    pub fn jpeg(&self, m: JpegMode) {
        self.shared.lock().jpeg = m;
    }

    /// Counters so far.
    pub fn counters(&self) -> SimCounters {
        self.shared.lock().counters
    }

    /// Notifications waiting in live subscriptions.
    pub fn queued(&self) -> usize {
        self.shared
            .lock()
            .subs
            .values()
            .map(|s| s.queue.len())
            .sum()
    }

    /// Live subscriptions.
    pub fn live_subscriptions(&self) -> usize {
        self.shared.lock().subs.len()
    }

    /// Sets a property (`topic`, data `item`) and, if it changed, tells every subscriber.
    pub fn set_property(&self, topic: &str, item: &str, value: bool) {
        let mut g = self.shared.lock();
        let key = (topic.to_owned(), "vsc1".to_owned(), item.to_owned());
        if g.properties.insert(key, value) == Some(value) {
            return;
        }
        let now = Utc::now() + g.clock_offset;
        let n = notification(topic, "vsc1", item, value, Some("Changed"), now);
        push(&mut g, n);
        drop(g);
        self.shared.changed.notify_waiters();
    }

    /// A line crossing (an instant, not a property).
    pub fn cross_line(&self) {
        let mut g = self.shared.lock();
        let now = Utc::now() + g.clock_offset;
        let n = notification(TOPIC_LINE, "vsc1", "ObjectId", true, None, now)
            .replace(r#"Value="true""#, r#"Value="7""#);
        push(&mut g, n);
        drop(g);
        self.shared.changed.notify_waiters();
    }

    /// Sends the last notification again (a re-delivery).
    pub fn resend_last(&self) {
        let mut g = self.shared.lock();
        if let Some(n) = g.last.clone() {
            push(&mut g, n);
        }
        drop(g);
        self.shared.changed.notify_waiters();
    }

    /// A reboot: every subscription is forgotten.
    pub fn reboot(&self) {
        let mut g = self.shared.lock();
        g.subs.clear();
        g.counters.reboots += 1;
        drop(g);
        self.shared.changed.notify_waiters();
    }
}

fn probe_matches(relates_to: &str, xaddr: &str, name: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing" xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery" "#,
            r#"xmlns:dn="http://www.onvif.org/ver10/network/wsdl"><s:Header>"#,
            "<a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/ProbeMatches</a:Action>",
            "<a:MessageID>uuid:sim-reply</a:MessageID><a:RelatesTo>{}</a:RelatesTo>",
            "<a:To>http://schemas.xmlsoap.org/ws/2004/08/addressing/role/anonymous</a:To></s:Header>",
            "<s:Body><d:ProbeMatches><d:ProbeMatch><a:EndpointReference><a:Address>urn:uuid:0b1c3f52-sim-{}</a:Address></a:EndpointReference>",
            "<d:Types>dn:NetworkVideoTransmitter</d:Types>",
            "<d:Scopes>onvif://www.onvif.org/type/video_encoder onvif://www.onvif.org/name/{} onvif://www.onvif.org/hardware/SIM-1</d:Scopes>",
            "<d:XAddrs>{}</d:XAddrs><d:MetadataVersion>1</d:MetadataVersion></d:ProbeMatch></d:ProbeMatches></s:Body></s:Envelope>"
        ),
        xml::escape(relates_to),
        xml::escape(name),
        name,
        xaddr
    )
}

fn push(g: &mut Inner, n: String) {
    for s in g.subs.values_mut() {
        s.queue.push_back(n.clone());
    }
    g.last = Some(n);
}

fn notification(
    topic: &str,
    src: &str,
    item: &str,
    v: bool,
    op: Option<&str>,
    at: DateTime<Utc>,
) -> String {
    let op = op
        .map(|o| format!(r#" PropertyOperation="{o}""#))
        .unwrap_or_default();
    format!(
        concat!(
            r#"<wsnt:NotificationMessage><wsnt:Topic Dialect="http://www.onvif.org/ver10/tev/topicExpression/ConcreteSet">{topic}</wsnt:Topic>"#,
            r#"<wsnt:Message><tt:Message UtcTime="{at}"{op}><tt:Source><tt:SimpleItem Name="VideoSourceConfigurationToken" Value="{src}"/></tt:Source>"#,
            r#"<tt:Data><tt:SimpleItem Name="{item}" Value="{v}"/></tt:Data></tt:Message></wsnt:Message></wsnt:NotificationMessage>"#
        ),
        topic = topic,
        at = at.to_rfc3339_opts(SecondsFormat::Millis, true),
        op = op,
        src = src,
        item = item,
        v = v,
    )
}

fn envelope(body: &str) -> String {
    format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope" "#,
            r#"xmlns:tt="http://www.onvif.org/ver10/schema" xmlns:wsnt="http://docs.oasis-open.org/wsn/b-2" xmlns:tev="http://www.onvif.org/ver10/events/wsdl" "#,
            r#"xmlns:tds="http://www.onvif.org/ver10/device/wsdl" xmlns:trt="http://www.onvif.org/ver10/media/wsdl" xmlns:wsa="http://www.w3.org/2005/08/addressing">"#,
            "<s:Body>{}</s:Body></s:Envelope>"
        ),
        body
    )
}

fn fault(status: StatusCode, subcode: &str, reason: &str) -> Response {
    let b = format!(
        r#"<s:Fault><s:Code><s:Value>s:Sender</s:Value><s:Subcode><s:Value>{subcode}</s:Value></s:Subcode></s:Code><s:Reason><s:Text xml:lang="en">{reason}</s:Text></s:Reason></s:Fault>"#
    );
    soap_response(status, envelope(&b))
}

fn soap_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/soap+xml; charset=utf-8")],
        body,
    )
        .into_response()
}

fn ok(body: String) -> Response {
    soap_response(StatusCode::OK, envelope(&body))
}

async fn soap(State(sh): State<Arc<Shared>>, uri: Uri, body: Bytes) -> Response {
    let mis = sh.lock().misbehave;
    match mis {
        Misbehaviour::None => {}
        Misbehaviour::Slow(d) => tokio::time::sleep(d).await,
        Misbehaviour::Fault => {
            return fault(StatusCode::BAD_REQUEST, "ter:Action", "simulated failure");
        }
        Misbehaviour::Garbage => return (StatusCode::OK, "\u{1}\u{2}<<not xml").into_response(),
        Misbehaviour::XmlBomb => {
            let bomb = r#"<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body>&b;</s:Body></s:Envelope>"#;
            return soap_response(StatusCode::OK, bomb.into());
        }
    }
    let Ok(doc) = xml::parse(&body) else {
        return fault(
            StatusCode::BAD_REQUEST,
            "ter:WellFormed",
            "request is not well-formed",
        );
    };
    let Some(op) = doc.child("Body").and_then(|b| b.children.first()).cloned() else {
        return fault(StatusCode::BAD_REQUEST, "ter:WellFormed", "no body");
    };
    if op.name != "GetSystemDateAndTime" && !authorized(&sh, &doc) {
        return fault(
            StatusCode::BAD_REQUEST,
            "ter:NotAuthorized",
            "Sender not Authorized",
        );
    }
    if let Some(id) = uri.path().strip_prefix("/onvif/subscription/") {
        return subscription(&sh, id.parse().unwrap_or(u64::MAX), &op).await;
    }
    device(&sh, &op)
}

fn authorized(sh: &Shared, doc: &Element) -> bool {
    let Some((user, password)) = &sh.user else {
        return true;
    };
    let Some(tok) = doc.find("UsernameToken") else {
        return false;
    };
    let text = |n: &str| {
        tok.child(n)
            .map(|e| e.text().to_owned())
            .unwrap_or_default()
    };
    let Ok(nonce) = B64.decode(text("Nonce")) else {
        return false;
    };
    let created = text("Created");
    let Ok(at) = DateTime::parse_from_rfc3339(&created) else {
        return false;
    };
    let skew = (at.with_timezone(&Utc) - sh.now()).num_seconds().abs();
    text("Username") == *user
        && skew <= 10
        && password_digest(&nonce, &created, password) == text("Password")
}

fn device(sh: &Shared, op: &Element) -> Response {
    let base = format!("http://{}", sh.addr);
    match op.name.as_str() {
        "GetSystemDateAndTime" => {
            let t = sh.now();
            ok(format!(
                "<tds:GetSystemDateAndTimeResponse><tds:SystemDateAndTime><tt:DateTimeType>NTP</tt:DateTimeType><tt:DaylightSavings>false</tt:DaylightSavings><tt:UTCDateTime><tt:Time><tt:Hour>{}</tt:Hour><tt:Minute>{}</tt:Minute><tt:Second>{}</tt:Second></tt:Time><tt:Date><tt:Year>{}</tt:Year><tt:Month>{}</tt:Month><tt:Day>{}</tt:Day></tt:Date></tt:UTCDateTime></tds:SystemDateAndTime></tds:GetSystemDateAndTimeResponse>",
                t.hour(), t.minute(), t.second(), t.year(), t.month(), t.day()
            ))
        }
        "GetServices" => ok(format!(
            "<tds:GetServicesResponse><tds:Service><tds:Namespace>http://www.onvif.org/ver10/device/wsdl</tds:Namespace><tds:XAddr>{base}/onvif/device_service</tds:XAddr></tds:Service><tds:Service><tds:Namespace>http://www.onvif.org/ver10/media/wsdl</tds:Namespace><tds:XAddr>{base}/onvif/media</tds:XAddr></tds:Service><tds:Service><tds:Namespace>http://www.onvif.org/ver10/events/wsdl</tds:Namespace><tds:XAddr>{base}/onvif/events</tds:XAddr></tds:Service></tds:GetServicesResponse>"
        )),
        "GetProfiles" => ok("<trt:GetProfilesResponse><trt:Profiles token=\"main\" fixed=\"true\"><tt:Name>mainStream</tt:Name></trt:Profiles><trt:Profiles token=\"sub\" fixed=\"true\"><tt:Name>subStream</tt:Name></trt:Profiles></trt:GetProfilesResponse>".into()),
        "GetStreamUri" => {
            let token = op.find("ProfileToken").map(|e| e.text().to_owned()).unwrap_or_default();
            ok(format!("<trt:GetStreamUriResponse><trt:MediaUri><tt:Uri>rtsp://{}/Streaming/{token}?transport=tcp&amp;unicast=true</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetStreamUriResponse>", sh.addr.ip()))
        }
        "GetSnapshotUri" => ok(format!("<trt:GetSnapshotUriResponse><trt:MediaUri><tt:Uri>{base}/snapshot.jpg</tt:Uri><tt:InvalidAfterConnect>false</tt:InvalidAfterConnect><tt:InvalidAfterReboot>false</tt:InvalidAfterReboot><tt:Timeout>PT0S</tt:Timeout></trt:MediaUri></trt:GetSnapshotUriResponse>")),
        "CreatePullPointSubscription" => create(sh, op, &base),
        "GetEventProperties" => ok(EVENT_PROPERTIES.into()),
        other => fault(StatusCode::BAD_REQUEST, "ter:ActionNotSupported", &format!("{other} not supported")),
    }
}

/// The topic set announced: the five analytics topics plus one the driver does not map.
const EVENT_PROPERTIES: &str = concat!(
    "<tev:GetEventPropertiesResponse><wsnt:FixedTopicSet>true</wsnt:FixedTopicSet>",
    r#"<wstop:TopicSet xmlns:wstop="http://docs.oasis-open.org/wsn/t-1" xmlns:tns1="http://www.onvif.org/ver10/topics">"#,
    r#"<tns1:VideoSource wstop:topic="false"><MotionAlarm wstop:topic="true"/></tns1:VideoSource>"#,
    r#"<tns1:RuleEngine wstop:topic="false"><CellMotionDetector wstop:topic="false"><Motion wstop:topic="true"><tt:MessageDescription IsProperty="true"/></Motion></CellMotionDetector>"#,
    r#"<TamperDetector wstop:topic="false"><Tamper wstop:topic="true"/></TamperDetector>"#,
    r#"<FieldDetector wstop:topic="false"><ObjectsInside wstop:topic="true"/></FieldDetector>"#,
    r#"<LineDetector wstop:topic="false"><Crossed wstop:topic="true"/></LineDetector></tns1:RuleEngine>"#,
    r#"<tns1:Monitoring wstop:topic="false"><ProcessorUsage wstop:topic="true"/></tns1:Monitoring>"#,
    "</wstop:TopicSet></tev:GetEventPropertiesResponse>"
);

fn duration_secs(op: &Element, name: &str, default: u64) -> u64 {
    op.find(name)
        .and_then(|e| e.text().strip_prefix("PT")?.strip_suffix('S')?.parse().ok())
        .unwrap_or(default)
}

fn create(sh: &Shared, op: &Element, base: &str) -> Response {
    let secs = duration_secs(op, "InitialTerminationTime", 60);
    let mut g = sh.lock();
    let now = Utc::now() + g.clock_offset;
    g.next_id += 1;
    let id = g.next_id;
    let queue = g
        .properties
        .iter()
        .map(|((t, s, i), v)| notification(t, s, i, *v, Some("Initialized"), now))
        .collect();
    g.subs.insert(
        id,
        Sub {
            queue,
            expires: Instant::now() + Duration::from_secs(secs),
        },
    );
    g.counters.created += 1;
    let term = now + TimeDelta::seconds(i64::try_from(secs).unwrap_or(60));
    ok(format!(
        "<tev:CreatePullPointSubscriptionResponse><tev:SubscriptionReference><wsa:Address>{base}/onvif/subscription/{id}</wsa:Address></tev:SubscriptionReference><wsnt:CurrentTime>{}</wsnt:CurrentTime><wsnt:TerminationTime>{}</wsnt:TerminationTime></tev:CreatePullPointSubscriptionResponse>",
        now.to_rfc3339_opts(SecondsFormat::Secs, true),
        term.to_rfc3339_opts(SecondsFormat::Secs, true)
    ))
}

async fn subscription(sh: &Shared, id: u64, op: &Element) -> Response {
    let gone = || {
        fault(
            StatusCode::BAD_REQUEST,
            "wsrf-rw:ResourceUnknownFault",
            "no such subscription",
        )
    };
    {
        let mut g = sh.lock();
        let expired = g.subs.get(&id).is_some_and(|s| s.expires <= Instant::now());
        if expired {
            g.subs.remove(&id);
        }
        if !g.subs.contains_key(&id) {
            return gone();
        }
    }
    match op.name.as_str() {
        "PullMessages" => pull(sh, id, op).await,
        "Renew" => {
            let secs = duration_secs(op, "TerminationTime", 60);
            let mut g = sh.lock();
            let Some(s) = g.subs.get_mut(&id) else {
                return gone();
            };
            s.expires = Instant::now() + Duration::from_secs(secs);
            g.counters.renewed += 1;
            let term =
                Utc::now() + g.clock_offset + TimeDelta::seconds(i64::try_from(secs).unwrap_or(60));
            ok(format!(
                "<wsnt:RenewResponse><wsnt:TerminationTime>{}</wsnt:TerminationTime></wsnt:RenewResponse>",
                term.to_rfc3339_opts(SecondsFormat::Secs, true)
            ))
        }
        "Unsubscribe" => {
            let mut g = sh.lock();
            g.subs.remove(&id);
            g.counters.unsubscribed += 1;
            ok("<wsnt:UnsubscribeResponse/>".into())
        }
        other => fault(
            StatusCode::BAD_REQUEST,
            "ter:ActionNotSupported",
            &format!("{other} not supported"),
        ),
    }
}

async fn pull(sh: &Shared, id: u64, op: &Element) -> Response {
    // Long-poll, capped so a test's camera never holds a connection for long.
    let wait = Duration::from_secs(duration_secs(op, "Timeout", 1).min(2));
    let limit: usize = op
        .find("MessageLimit")
        .and_then(|e| e.text().parse().ok())
        .unwrap_or(64);
    let deadline = Instant::now() + wait;
    loop {
        let notified = sh.changed.notified();
        {
            let mut g = sh.lock();
            let now = Utc::now() + g.clock_offset;
            let Some(s) = g.subs.get_mut(&id) else {
                return fault(
                    StatusCode::BAD_REQUEST,
                    "wsrf-rw:ResourceUnknownFault",
                    "no such subscription",
                );
            };
            if !s.queue.is_empty() || Instant::now() >= deadline {
                let n = s.queue.len().min(limit);
                let msgs: String = s.queue.drain(..n).collect();
                let t = now.to_rfc3339_opts(SecondsFormat::Secs, true);
                return ok(format!(
                    "<tev:PullMessagesResponse><tev:CurrentTime>{t}</tev:CurrentTime><tev:TerminationTime>{t}</tev:TerminationTime>{msgs}</tev:PullMessagesResponse>"
                ));
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

const REALM: &str = "campusgw-sim";

async fn snapshot(State(sh): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some((user, password)) = &sh.user {
        let ok = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|h| auth::verify_digest(h, user, password, REALM, "GET"));
        if !ok {
            let challenge = format!(
                r#"Digest realm="{REALM}", qop="auth", nonce="{:016x}", opaque="sim""#,
                rand::random::<u64>()
            );
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, challenge)],
            )
                .into_response();
        }
    }
    let mode = {
        let mut g = sh.lock();
        g.counters.snapshots += 1;
        g.jpeg
    };
    let jpeg = crate::snapshot::tiny_jpeg();
    let body = match mode {
        JpegMode::Valid => jpeg,
        JpegMode::Slow(d) => {
            tokio::time::sleep(d).await;
            jpeg
        }
        JpegMode::Truncated => jpeg[..jpeg.len() / 2].to_vec(),
        JpegMode::Huge(n) => {
            let mut v = jpeg[..jpeg.len() - 2].to_vec();
            v.resize(n.saturating_sub(2), 0);
            v.extend([0xFF, 0xD9]);
            v
        }
        JpegMode::NotJpeg => b"<html><body>login</body></html>".to_vec(),
    };
    (StatusCode::OK, [(header::CONTENT_TYPE, "image/jpeg")], body).into_response()
}
