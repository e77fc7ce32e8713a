//! The dc09 receiver: panels and panic buttons send DC-09 frames over TCP or UDP; each
//! event is journaled and only then ACKed.
//!
//! Per frame ([`Shared::handle`], the same for both transports):
//! 1. over the source's token bucket → no reply at all (the panel retransmits later; an
//!    accepted frame is never dropped, a flood only waits);
//! 2. envelope, CRC, LEN, header bad → `NAK` with our clock (rate-limited log, counter);
//! 3. account not configured and `unknown_account = "refuse"` → `DUH`;
//! 4. encrypted and no key, or undecryptable → `NAK` (rate-limited log, counter);
//! 5. timestamp outside the window (or missing on an encrypted message) → `NAK` with our
//!    clock, from which the panel corrects its own;
//! 6. `NULL` → the account's device is online → `ACK`;
//! 7. event codes → kinds with [`crate::mapping`]; an unknown code → `DUH` (or
//!    `dc09.unknown` with `unknown_code = "accept"`); the events are emitted in one
//!    transaction with `origin_ref` = [`crate::Message::content_key`] (ADR 0003, window
//!    dedup: a retransmission, even with a restarted sequence or a new timestamp, is the
//!    same event) and the `ACK` (encrypted like the request) is written only after the
//!    journal committed them. A failed emit gets no reply: the panel retransmits.
//!
//! Supervision: an account with `supervision` not heard from (any valid frame) for that
//! long is reported `Offline`; its next frame reports it `Online`.
//!
//! TCP: many frames per connection, a half frame waits for its rest, bytes before a `<LF>`
//! are skipped, at most `max_connections` connections and `max_connections_per_source` per
//! IP. UDP: one datagram is one frame, the reply goes to the sender.

mod net;
mod observe;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_sdk::{
    Class, DeviceHealth, DeviceId, Driver, DriverContext, DriverError, Kind, Location, NewEvent,
};
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::{AccountEntry, Dc09Config, UnknownAccountPolicy, UnknownCodePolicy};
use crate::crypto::{Key, PadSource};
use crate::data::{Data, Qualifier};
use crate::frame::{Frame, Message, MessageId};
use crate::mapping;
use crate::time::TimeWindow;

use observe::LogLimiter;

pub(crate) use net::next_frame;

/// What the driver knows of one configured account.
#[derive(Debug, Clone)]
pub struct AccountProfile {
    device: DeviceId,
    location: Option<Location>,
    key: Option<Key>,
    supervision: Option<Duration>,
    zones: HashMap<u16, (Option<String>, Option<Location>)>,
    users: HashMap<u16, String>,
}

impl AccountProfile {
    pub(crate) fn new(a: &AccountEntry, key: Option<Key>) -> AccountProfile {
        AccountProfile {
            device: a.device.clone(),
            location: a.location.clone(),
            key,
            supervision: a.supervision.map(|d| d.0),
            zones: a
                .zone
                .iter()
                .map(|z| (z.number, (z.name.clone(), z.location.clone())))
                .collect(),
            users: a.user.iter().map(|u| (u.number, u.name.clone())).collect(),
        }
    }
}

/// The bound addresses of a running receiver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bound {
    /// The TCP listener's address, when configured.
    pub tcp: Option<SocketAddr>,
    /// The UDP socket's address, when configured.
    pub udp: Option<SocketAddr>,
}

/// The running dc09 receiver (built by [`Dc09Config`]).
#[derive(Debug)]
pub struct Dc09Driver {
    config: Dc09Config,
    tcp: Option<SocketAddr>,
    udp: Option<SocketAddr>,
    accounts: HashMap<String, AccountProfile>,
    bound: watch::Sender<Option<Bound>>,
}

impl Dc09Driver {
    pub(crate) fn new(
        config: Dc09Config,
        tcp: Option<SocketAddr>,
        udp: Option<SocketAddr>,
        profiles: Vec<AccountProfile>,
    ) -> Dc09Driver {
        let accounts = config
            .account
            .iter()
            .map(|a| a.account.to_ascii_uppercase())
            .zip(profiles)
            .collect();
        Dc09Driver {
            config,
            tcp,
            udp,
            accounts,
            bound: watch::channel(None).0,
        }
    }

    /// The addresses actually bound, once both sockets are (port 0 in tests and demos).
    pub fn local_addr(&self) -> watch::Receiver<Option<Bound>> {
        self.bound.subscribe()
    }
}

/// A token bucket per source IP.
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Liveness {
    device: DeviceId,
    timeout: Duration,
    last_seen: Instant,
    online: Option<bool>,
}

/// State shared by the transports.
pub(crate) struct Shared {
    cx: DriverContext,
    accounts: HashMap<String, AccountProfile>,
    unknown_account: UnknownAccountPolicy,
    unknown_code: UnknownCodePolicy,
    window: TimeWindow,
    rate: f64,
    burst: f64,
    pub(crate) max_connections: usize,
    pub(crate) max_per_source: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
    pub(crate) connections: Mutex<HashMap<IpAddr, usize>>,
    liveness: Mutex<HashMap<String, Liveness>>,
    limit: Mutex<LogLimiter>,
}

/// A reply to write, or none (rate limited, reply frames, failed emit).
pub(crate) type Reply = Option<Vec<u8>>;

/// The biggest number of per-IP buckets kept; beyond it full (idle) buckets are forgotten.
const MAX_BUCKETS: usize = 4096;

fn random_pad() -> impl PadSource {
    |buf: &mut [u8]| rand::fill(buf)
}

impl Shared {
    fn new(d: &Dc09Driver, cx: DriverContext) -> Shared {
        let now = Instant::now();
        let liveness = d
            .accounts
            .iter()
            .filter_map(|(acct, p)| {
                Some((
                    acct.clone(),
                    Liveness {
                        device: p.device.clone(),
                        timeout: p.supervision?,
                        last_seen: now,
                        online: None,
                    },
                ))
            })
            .collect();
        Shared {
            cx,
            accounts: d.accounts.clone(),
            unknown_account: d.config.unknown_account,
            unknown_code: d.config.unknown_code,
            window: d.config.time_window(),
            rate: f64::from(d.config.frames_per_second),
            burst: f64::from(d.config.frame_burst),
            max_connections: d.config.max_connections,
            max_per_source: d.config.max_connections_per_source,
            buckets: Mutex::new(HashMap::new()),
            connections: Mutex::new(HashMap::new()),
            liveness: Mutex::new(liveness),
            limit: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        }
    }

    fn lock_limit(&self) -> std::sync::MutexGuard<'_, LogLimiter> {
        self.limit
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a token from `ip`'s bucket; false when it is empty.
    fn admit(&self, ip: IpAddr) -> bool {
        let now = Instant::now();
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&ip) {
            let (rate, burst) = (self.rate, self.burst);
            buckets.retain(|_, b| b.tokens + now.duration_since(b.at).as_secs_f64() * rate < burst);
        }
        let b = buckets.entry(ip).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * self.rate).min(self.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A valid frame came from `account`: activity, Online on a change.
    fn saw(&self, account: &str, device: &DeviceId) {
        self.cx.activity(device);
        let mut live = self
            .liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(l) = live.get_mut(account) {
            l.last_seen = Instant::now();
            if l.online != Some(true) {
                l.online = Some(true);
                self.cx.report_health(&l.device, DeviceHealth::Online);
            }
        }
    }

    /// Reports Offline every supervised account silent past its interval.
    fn check_silence(&self) {
        let now = Instant::now();
        let mut live = self
            .liveness
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (acct, l) in live.iter_mut() {
            let silent = now.duration_since(l.last_seen);
            if silent >= l.timeout && l.online != Some(false) {
                l.online = Some(false);
                observe::account_silent(acct, silent);
                let why = format!("no dc09 message for {}s (supervision)", silent.as_secs());
                self.cx.report_health(&l.device, DeviceHealth::Offline(why));
            }
        }
    }

    fn nak(&self) -> Reply {
        Message::nak(Utc::now()).encode().ok()
    }

    /// Handles one frame from `peer`; returns the reply to send.
    pub(crate) async fn handle(&self, bytes: &[u8], peer: SocketAddr) -> Reply {
        if !self.admit(peer.ip()) {
            observe::rate_limited(peer, &mut self.lock_limit());
            return None;
        }
        let frame = match Frame::decode(bytes) {
            Ok(f) => f,
            Err(e) => {
                observe::bad_frame(peer, &e, &mut self.lock_limit());
                return self.nak();
            }
        };
        let header = frame.header();
        if header.id.is_reply() {
            // A receiver's reply sent to us: nothing to answer (answering could loop).
            observe::unexpected_reply(peer, header.id, &mut self.lock_limit());
            return None;
        }
        let acct = header
            .account
            .as_number()
            .map(str::to_ascii_uppercase)
            .unwrap_or_default();
        let profile = self.accounts.get(&acct);
        if profile.is_none() && self.unknown_account == UnknownAccountPolicy::Refuse {
            observe::unknown_account(peer, &acct, &mut self.lock_limit());
            return Message::duh(header, Utc::now()).encode().ok();
        }
        let key = profile.and_then(|p| p.key.as_ref());
        let opened = match frame.open(key) {
            Ok(o) => o,
            Err(e) => {
                observe::undecryptable(peer, &acct, &e, &mut self.lock_limit());
                return self.nak();
            }
        };
        let msg = opened.message;
        let now = Utc::now();
        let window = if msg.encrypted {
            self.window.check_present(msg.timestamp, now)
        } else {
            msg.timestamp.map_or(Ok(()), |t| self.window.check(t, now))
        };
        if let Err(e) = window {
            observe::outside_window(peer, &acct, &e, &mut self.lock_limit());
            return self.nak();
        }
        let device = profile.map_or_else(|| self.cx.device().clone(), |p| p.device.clone());
        self.saw(&acct, &device);
        match msg.id {
            MessageId::Null => self.ack(&msg, key),
            MessageId::AdmCid | MessageId::SiaDcs => {
                self.on_event(&msg, &acct, profile, &device, key, peer)
                    .await
            }
            // Replies were answered above; nothing else is defined.
            _ => Message::duh(&msg, now).encode().ok(),
        }
    }

    fn ack(&self, msg: &Message, key: Option<&Key>) -> Reply {
        let ack = Message::ack(msg, Utc::now());
        match ack.encode_with(key, &mut random_pad()) {
            Ok(b) => Some(b),
            Err(e) => {
                observe::encode_failed(&e);
                None
            }
        }
    }

    async fn on_event(
        &self,
        msg: &Message,
        acct: &str,
        profile: Option<&AccountProfile>,
        device: &DeviceId,
        key: Option<&Key>,
        peer: SocketAddr,
    ) -> Reply {
        let Ok(content) = msg.content_key() else {
            return Message::duh(msg, Utc::now()).encode().ok();
        };
        let items = describe(msg);
        let unknown = items.iter().any(|i| i.mapped.is_none());
        if items.is_empty() || (unknown && self.unknown_code == UnknownCodePolicy::Duh) {
            observe::unknown_code(peer, acct, &content, &mut self.lock_limit());
            return Message::duh(msg, Utc::now()).encode().ok();
        }
        let several = items.len() > 1;
        let events: Vec<NewEvent> = items
            .into_iter()
            .enumerate()
            .map(|(n, item)| {
                let origin = if several {
                    format!("{content}#{n}")
                } else {
                    content.clone()
                };
                item.into_event(msg, acct, profile, device, origin)
            })
            .collect();
        match self.cx.emit_all(events).await {
            Ok(receipts) => {
                observe::journaled(acct, receipts.iter().filter(|r| r.duplicate).count());
                self.ack(msg, key)
            }
            Err(e) => {
                // Not durable: no ACK, so the panel retransmits (DC-09's retry is the recovery).
                observe::emit_failed(acct, &e);
                None
            }
        }
    }
}

/// One event found in a message's data.
struct Item {
    mapped: Option<mapping::Mapped>,
    code: String,
    qualifier: Option<Qualifier>,
    partition: Option<String>,
    /// The zone (or user, for open/close codes) number.
    zone: Option<u16>,
    user: Option<u16>,
}

fn describe(msg: &Message) -> Vec<Item> {
    match &msg.data {
        Data::ContactId(c) => {
            let e = c.event;
            // Open/close codes carry the user number in ZZZ.
            let opening = matches!(e.code, 400..=409 | 441 | 442);
            vec![Item {
                mapped: mapping::contact_id(&e),
                code: format!("{:03}", e.code),
                qualifier: Some(e.qualifier),
                partition: Some(format!("{:02}", e.partition)),
                zone: (!opening).then_some(e.zone),
                user: opening.then_some(e.zone),
            }]
        }
        Data::Sia(s) => {
            let mut partition = s.modifier("ri").map(str::to_owned);
            let user = s.modifier("id").and_then(|u| u.parse().ok());
            let mut events: Vec<(&str, &str)> = s.events().collect();
            // dc09_spt writes `Nri1PA2` (no `/` between the area and the event); read the
            // event out of the area's value when the data has no event of its own.
            if events.is_empty()
                && let Some((area, code, address)) = s.modifier("ri").and_then(split_area_event)
            {
                partition = Some(area.to_owned());
                events.push((code, address));
            }
            events
                .into_iter()
                .map(|(code, address)| Item {
                    mapped: mapping::sia(code),
                    code: code.to_owned(),
                    qualifier: None,
                    partition: partition.clone(),
                    zone: address.parse().ok(),
                    user,
                })
                .collect()
        }
        Data::Empty | Data::Text { .. } => Vec::new(),
    }
}

/// `1PA2` → (`1`, `PA`, `2`): digits, two uppercase letters, the rest.
fn split_area_event(v: &str) -> Option<(&str, &str, &str)> {
    let digits = v.bytes().take_while(u8::is_ascii_digit).count();
    let (area, rest) = v.split_at_checked(digits)?;
    let code = rest
        .get(..2)
        .filter(|c| c.bytes().all(|b| b.is_ascii_uppercase()))?;
    Some((area, code, rest.get(2..).unwrap_or_default()))
}

impl Item {
    fn into_event(
        self,
        msg: &Message,
        acct: &str,
        profile: Option<&AccountProfile>,
        device: &DeviceId,
        origin: String,
    ) -> NewEvent {
        let (kind, class) = match self.mapped {
            Some(m) => (m.kind, m.class),
            None => (Kind::from_static("dc09.unknown"), Class::Security),
        };
        let zone = self
            .zone
            .and_then(|z| profile.and_then(|p| p.zones.get(&z)).map(|e| (z, e)));
        let user_name = self
            .user
            .and_then(|u| profile.and_then(|p| p.users.get(&u)).cloned());
        let location = zone
            .and_then(|(_, (_, l))| l.clone())
            .or_else(|| profile.and_then(|p| p.location.clone()));
        let mut payload = json!({
            "account": acct,
            "format": msg.id.as_str(),
            "code": self.code,
            "sequence": msg.sequence.value(),
            "encrypted": msg.encrypted,
        });
        let mut put = |k: &str, v: Value| {
            if let Value::Object(m) = &mut payload {
                m.insert(k.to_owned(), v);
            }
        };
        if let Some(q) = self.qualifier {
            put("qualifier", json!(q));
        }
        if let Some(p) = self.partition {
            put("partition", json!(p));
        }
        if let Some(z) = self.zone {
            put("zone", json!(z));
        }
        if let Some((_, (Some(name), _))) = &zone {
            put("zone_name", json!(name));
        }
        if let Some(u) = self.user {
            put("user", json!(u));
        }
        if let Some(n) = user_name {
            put("user_name", json!(n));
        }
        let mut e = NewEvent::new(kind, class)
            .payload(payload)
            .origin_ref(origin)
            .device(device.clone());
        if let Some(l) = location {
            e = e.location(l);
        }
        if let Some(t) = msg.timestamp {
            e = e.occurred_at(t.at());
        }
        e
    }
}

impl Driver for Dc09Driver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let shared = Arc::new(Shared::new(&self, cx.clone()));
        let Some((tcp, udp)) = net::bind(&self, &cx).await else {
            return Ok(());
        };
        self.bound.send_replace(Some(Bound {
            tcp: tcp.as_ref().and_then(|l| l.local_addr().ok()),
            udp: udp.as_ref().and_then(|u| u.local_addr().ok()),
        }));
        cx.report_health(cx.device(), DeviceHealth::Online);
        if let Some(u) = udp {
            tokio::spawn(net::serve_udp(shared.clone(), u));
        }
        if let Some(l) = tcp {
            tokio::spawn(net::serve_tcp(shared.clone(), l));
        }
        let shortest = shared
            .accounts
            .values()
            .filter_map(|p| p.supervision)
            .min()
            .unwrap_or(Duration::from_secs(4));
        let tick = (shortest / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let mut watchdog = tokio::time::interval(tick);
        loop {
            tokio::select! {
                _ = watchdog.tick() => shared.check_silence(),
                // No commands are defined for DC-09 panels; answer any so none waits.
                cmd = cx.next_command() => match cmd {
                    Some(req) => req.respond(campusgw_sdk::CommandStatus::Unsupported, "dc09 panels take no commands"),
                    None => break,
                },
                () = cx.shutdown().cancelled() => break,
            }
        }
        Ok(())
    }
}
