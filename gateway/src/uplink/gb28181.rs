//! `kind = "gb28181"`: alarms to the police video platform (公安视频图像信息平台) over GB/T
//! 28181, campusgw acting as one device (`campusgw_gb28181::ua`) whose Catalog lists the
//! school's alarm inputs and links its cameras, on the uplink contract
//! ([`super::contract`]).
//!
//! ```toml
//! [[uplink]]
//! name = "police_video"
//! kind = "gb28181"
//! platform = "10.20.0.5:5060"
//! platform_id = "34020000002000000001"
//! device_id = "34020000001180000001"
//! password_file = "/etc/campusgw/gb28181.pass"
//! charset = "gb2312"             # or "utf-8"
//! allow_plaintext = true         # required for a platform not on loopback: SIP/UDP is unencrypted
//! [[uplink.alarm_input]]
//! id = "34020000001340000001"
//! name = "门卫室一键报警"
//! device = "guard_button"
//! [[uplink.camera]]
//! id = "34020000001320000001"
//! name = "校门口"
//! # the other keys and their defaults: campusgw_gb28181::config
//! ```
//!
//! Link: a connect opens the UDP socket and REGISTERs (401 → credentials → 200); the
//! registration is refreshed at half of what was granted; a Keepalive MESSAGE goes every
//! `keepalive`, and `keepalive_misses` unanswered in a row end the link (a new one
//! registers again). The platform's Catalog queries are answered by the user agent.
//!
//! Outcomes (the rules of [`super::delivery`]):
//! - the platform's 2xx to the Alarm MESSAGE: *delivered*, recorded in `uplink_deliveries`
//!   (endpoint, alarm input id, SN, attempts) before the cursor moves;
//! - 401/403/404/481 (a restarted platform that forgot the device): *retry*; the next link
//!   registers first, then the alarm goes again with the same SN (the journal seq);
//! - another 4xx (the platform refuses this content): *rejected*, so a `life_safety` or
//!   `security` event is kept, listed and raised as `uplink.rejected`;
//! - no answer, 5xx/6xx, a socket error: *retry* (`timeout` or `network`), `uplink.down`
//!   once per outage.

use std::sync::Arc;
use std::time::Duration;

use campusgw_gb28181::GbId;
use campusgw_gb28181::config::{AlarmInput, PlatformConfig};
use campusgw_gb28181::manscdp::{Alarm, CatalogItem};
use campusgw_gb28181::ua::{Confirmed, DeviceUa, UaError, UaEvent, UaSettings};
use campusgw_sdk::{Class, ConfigIssue, DeviceId, FieldPath, Kind, Location};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use tokio::time::Instant;

use super::UplinkContext;
use super::config::{UplinkSettings, is_loopback_host};
use super::contract::{
    Answer, Link, Round, Sent, Transport, UplinkError, UplinkFactory, UplinkKindConfig,
};
use super::deliveries::{DeliveryRecord, record};
use super::delivery::{Delivery, RetryReason};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use crate::config::typed_value;

/// Kinds forwarded when the table names no `kinds`.
pub const DEFAULT_KINDS: &[&str] = &[
    "panic.alarm",
    "intrusion.alarm",
    "fire.alarm",
    "tamper.alarm",
    "door.forced",
];

/// Classes forwarded when the table names neither `classes` nor `kinds`.
pub const DEFAULT_CLASSES: &[Class] = &[Class::LifeSafety, Class::Security];

/// A validated `kind = "gb28181"` uplink.
#[derive(Debug, Clone)]
pub struct Gb28181UplinkConfig {
    /// Cursor key and metric label.
    pub name: String,
    /// The platform table.
    pub platform: PlatformConfig,
    /// Retry back-off bounds (default 1 s .. 60 s).
    pub backoff: (Duration, Duration),
}

impl UplinkKindConfig for Gb28181UplinkConfig {
    const KIND: &'static str = "gb28181";

    fn validate(
        mut table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Gb28181UplinkConfig> {
        let allow_plaintext = match table.remove("allow_plaintext") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => {
                issues.push(ConfigIssue::new(
                    at.key("allow_plaintext"),
                    "allow_plaintext is true or false",
                ));
                false
            }
        };
        let platform: PlatformConfig = typed_value(toml::Value::Table(table), at, issues)?;
        let mut problems = platform.validate(at);
        if let Some(f) = &platform.password_file
            && f.is_file()
            && let Err(m) = crate::secrets::check_private_file(f)
        {
            problems.push(ConfigIssue::new(at.key("password_file"), m));
        }
        let valid = problems.is_empty();
        issues.extend(problems);
        if valid && !allow_plaintext && !is_loopback_host(platform.platform_host()) {
            issues.push(ConfigIssue::new(
                at.key("allow_plaintext"),
                format!(
                    "alarms and the digest exchange with {} travel unencrypted (SIP over UDP; GB 35114 is not implemented): set allow_plaintext = true if the path to the platform is a trusted private network",
                    platform.platform
                ),
            ));
            return None;
        }
        valid.then(|| Gb28181UplinkConfig {
            name: name.to_owned(),
            platform,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        })
    }

    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::Gb28181(self)
    }
}

impl UplinkFactory for Gb28181UplinkConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }
    fn plaintext(&self) -> bool {
        true
    }
    fn shown_url(&self) -> String {
        format!(
            "gb28181://{}@{}",
            self.platform.device_id, self.platform.platform
        )
    }
    fn default_filter(&self) -> Option<(Vec<Class>, Vec<String>)> {
        Some((
            DEFAULT_CLASSES.to_vec(),
            DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        ))
    }
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> campusgw_sdk::driver::BoxFuture<'static, ()> {
        let setup = super::retry::Setup {
            name: self.name.clone(),
            filter,
            cx: cx.clone(),
            status: status.clone(),
            backoff: self.backoff,
            stats_every: Duration::from_secs(5),
        };
        let platform = Platform {
            cfg: self,
            cx,
            status,
        };
        Box::pin(super::retry::run(platform, setup))
    }
}

/// The [`Transport`].
struct Platform {
    cfg: Arc<Gb28181UplinkConfig>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
}

/// A link: one registered user agent, the alarm being sent and the timers.
struct Session {
    cfg: Arc<Gb28181UplinkConfig>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    ua: DeviceUa,
    endpoint: String,
    pending: Option<Outgoing>,
    next_keepalive: Instant,
    refresh_at: Instant,
    misses: u32,
}

/// The Catalog: alarm inputs, then cameras, all children of the gateway.
pub fn catalog(p: &PlatformConfig) -> Vec<CatalogItem> {
    let place = |l: &Option<Location>| l.as_ref().map(ToString::to_string).unwrap_or_default();
    let inputs = p.alarm_input.iter().map(|a| CatalogItem {
        id: a.id.clone(),
        name: a.name.clone(),
        address: a
            .location
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| a.device.as_ref().map(ToString::to_string))
            .unwrap_or_default(),
        parent: p.device_id.clone(),
        online: true,
    });
    let cameras = p.camera.iter().map(|c| CatalogItem {
        id: c.id.clone(),
        name: c.name.clone(),
        address: place(&c.location),
        parent: p.device_id.clone(),
        online: true,
    });
    inputs.chain(cameras).collect()
}

fn ua_failure(e: &UaError) -> UplinkError {
    let reason = match e {
        UaError::Timeout(..) => RetryReason::Timeout,
        UaError::AuthRejected(..) => RetryReason::Auth,
        UaError::Refused { code, .. } if *code >= 500 => RetryReason::Server,
        UaError::Refused { .. } => RetryReason::Refused,
        UaError::Socket(_) | UaError::Closed => RetryReason::Network,
    };
    let detail = if e.unregistered() && !matches!(e, UaError::AuthRejected(..)) {
        format!("{e}: the platform does not know this device (restarted?); registering again")
    } else {
        e.to_string()
    };
    UplinkError::retry(reason, detail)
}

impl Transport for Platform {
    type Link = Session;

    async fn connect(&mut self) -> Result<Session, UplinkError> {
        let p = &self.cfg.platform;
        let password = p.password().map_err(|e| {
            UplinkError::retry(
                RetryReason::Config,
                format!("{e}; nothing is sent without it"),
            )
        })?;
        let platform = tokio::net::lookup_host(&p.platform)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| {
                UplinkError::retry(
                    RetryReason::Network,
                    format!("cannot resolve the platform {}", p.platform),
                )
            })?;
        let bind = p
            .bind
            .parse()
            .map_err(|_| UplinkError::retry(RetryReason::Config, "bind is not ip:port"))?;
        let settings = UaSettings {
            platform,
            platform_id: p.platform_id.clone(),
            domain: p.domain(),
            device_id: p.device_id.clone(),
            username: p
                .username
                .clone()
                .unwrap_or_else(|| p.device_id.to_string()),
            password,
            bind,
            charset: p.charset,
            answer_timeout: p.answer_timeout.0,
            catalog: catalog(p),
        };
        let ua = DeviceUa::open(settings)
            .await
            .map_err(|e| UplinkError::retry(RetryReason::Network, e.to_string()))?;
        let reg = ua.register(p.expires.0).await.map_err(|e| ua_failure(&e))?;
        tracing::info!(uplink = %self.cfg.name, platform = %platform, local = %ua.local_addr(), attempts = reg.attempts, expires = ?reg.expires, "registered with the GB/T 28181 platform");
        let now = Instant::now();
        Ok(Session {
            cfg: self.cfg.clone(),
            cx: self.cx.clone(),
            status: self.status.clone(),
            endpoint: platform.to_string(),
            refresh_at: now + refresh_after(reg.expires.unwrap_or(p.expires.0)),
            next_keepalive: now + p.keepalive.0,
            ua,
            pending: None,
            misses: 0,
        })
    }
}

/// Refresh at half the granted expiry (at least 5 s later).
fn refresh_after(granted: Duration) -> Duration {
    (granted / 2).max(Duration::from_secs(5))
}

impl Link for Session {
    fn room(&mut self, _feed: &mut Feed) -> usize {
        usize::from(self.pending.is_none())
    }

    fn busy(&self) -> bool {
        let now = Instant::now();
        self.pending.is_some() || self.next_keepalive <= now || self.refresh_at <= now
    }

    fn send(&mut self, mut events: Vec<Outgoing>) -> Result<(), UplinkError> {
        self.status.published(events.len() as u64);
        self.pending = events.pop();
        Ok(())
    }

    async fn next(&mut self, _feed: &mut Feed) -> Round {
        if let Some(o) = self.pending.take() {
            return self.deliver(&o).await;
        }
        let now = Instant::now();
        let p = &self.cfg.platform;
        if self.refresh_at <= now {
            return match self.ua.register(p.expires.0).await {
                Ok(r) => {
                    self.refresh_at =
                        Instant::now() + refresh_after(r.expires.unwrap_or(p.expires.0));
                    tracing::debug!(uplink = %self.cfg.name, "registration refreshed");
                    Round {
                        proven: true,
                        ..Round::default()
                    }
                }
                Err(e) => Round::failed(ua_failure(&e)),
            };
        }
        if self.next_keepalive <= now {
            self.next_keepalive = now + p.keepalive.0;
            return match self.ua.keepalive().await {
                Ok(_) => {
                    self.misses = 0;
                    Round {
                        proven: true,
                        ..Round::default()
                    }
                }
                Err(e) if e.unregistered() => Round::failed(ua_failure(&e)),
                Err(e) => {
                    self.misses += 1;
                    tracing::warn!(uplink = %self.cfg.name, misses = self.misses, error = %e, "keepalive not answered by the GB/T 28181 platform");
                    if self.misses >= p.keepalive_misses {
                        Round::failed(ua_failure(&e))
                    } else {
                        Round::default()
                    }
                }
            };
        }
        let wake = self.next_keepalive.min(self.refresh_at);
        tokio::select! {
            () = tokio::time::sleep_until(wake) => Round::default(),
            ev = self.ua.next_event() => {
                match ev {
                    Some(UaEvent::CatalogAnswered { sn, items, complete }) => {
                        tracing::info!(uplink = %self.cfg.name, sn, items, complete, "catalog query of the platform answered");
                    }
                    Some(UaEvent::Response { cmd, sn, result }) => {
                        tracing::debug!(uplink = %self.cfg.name, cmd, sn, result, "platform response received");
                    }
                    Some(UaEvent::Other(what)) => {
                        tracing::debug!(uplink = %self.cfg.name, what, "platform request answered");
                    }
                    None => return Round::failed(UplinkError::retry(RetryReason::Network, "the sip user agent stopped")),
                }
                Round::default()
            }
        }
    }

    async fn close(self) {
        // a clean goodbye: unregister, best effort, never holding up the shutdown long
        let bye = self.ua.register(Duration::ZERO);
        let _ = tokio::time::timeout(Duration::from_secs(1), bye).await;
    }
}

/// The few fields of an event's JSON form an alarm is made from.
#[derive(Deserialize)]
pub struct Routed {
    /// Its kind.
    pub kind: Kind,
    /// Its source.
    pub source: campusgw_sdk::Source,
    /// Where.
    #[serde(default)]
    pub location: Location,
    /// The device's clock.
    #[serde(default)]
    pub occurred_at: Option<DateTime<Utc>>,
    /// The gateway's clock.
    pub received_at: DateTime<Utc>,
}

/// The alarm input an event is reported as: a device match first, then the most specific
/// location whose named levels all equal the event's.
pub fn input_for<'a>(
    inputs: &'a [AlarmInput],
    device: &DeviceId,
    location: &Location,
) -> Option<&'a AlarmInput> {
    if let Some(a) = inputs.iter().find(|a| a.device.as_ref() == Some(device)) {
        return Some(a);
    }
    let mut best: Option<(usize, &AlarmInput)> = None;
    for a in inputs {
        let Some(want) = &a.location else { continue };
        let mut named = 0;
        let mut all = true;
        for (w, have) in want.levels().into_iter().zip(location.levels()) {
            if let Some(w) = w {
                if Some(w) != have {
                    all = false;
                    break;
                }
                named += 1;
            }
        }
        if all && best.is_none_or(|(n, _)| named > n) {
            best = Some((named, a));
        }
    }
    best.map(|(_, a)| a)
}

/// The default `AlarmPriority` of a kind: 1 most urgent.
pub fn priority_of(kind: &str) -> u8 {
    let k = kind.split('.').next().unwrap_or_default();
    match k {
        "panic" | "fire" | "duress" => 1,
        "intrusion" | "door" => 2,
        "tamper" => 3,
        _ => 4,
    }
}

/// The MANSCDP alarm for an event (SN: its journal seq).
pub fn alarm_for(p: &PlatformConfig, e: &Routed, seq: u64) -> Alarm {
    let input = input_for(&p.alarm_input, &e.source.device, &e.location);
    let id: GbId = input.map_or_else(|| p.device_id.clone(), |a| a.id.clone());
    let kind = e.kind.as_str();
    let fault = kind.contains("fault");
    let time = e
        .occurred_at
        .unwrap_or(e.received_at)
        .with_timezone(&p.offset())
        .format("%Y-%m-%dT%H:%M:%S")
        .to_string();
    let mut description = input.map(|a| a.name.clone()).unwrap_or_default();
    let place = e.location.to_string();
    for part in [kind, place.as_str(), e.source.device.as_str()] {
        if !part.is_empty() {
            if !description.is_empty() {
                description.push(' ');
            }
            description.push_str(part);
        }
    }
    Alarm {
        sn: u32::try_from(seq % 1_000_000_000).unwrap_or(0),
        device: id,
        priority: input
            .and_then(|a| a.priority)
            .unwrap_or_else(|| priority_of(kind)),
        method: input
            .and_then(|a| a.method)
            .unwrap_or(if fault { 6 } else { 2 }),
        time,
        description,
        alarm_type: None,
    }
}

impl Session {
    /// Sends one alarm and answers for it.
    async fn deliver(&mut self, o: &Outgoing) -> Round {
        let sent = Sent::of(o);
        let answer = |delivery| Round {
            answers: vec![Answer { sent, delivery }],
            ..Round::default()
        };
        let routed: Routed = match serde_json::from_slice(&o.event.json) {
            Ok(r) => r,
            Err(e) => {
                return answer(Delivery::Rejected {
                    reason: format!("event not readable for gb28181: {e}"),
                });
            }
        };
        let alarm = alarm_for(&self.cfg.platform, &routed, o.seq);
        match self.ua.alarm(&alarm).await {
            Ok(c) => {
                self.next_keepalive = Instant::now() + self.cfg.platform.keepalive.0;
                self.record(o, &alarm, &c).await;
                answer(Delivery::Delivered)
            }
            Err(UaError::Refused { code, reason, .. })
                if (400..500).contains(&code)
                    && !matches!(code, 401 | 403 | 404 | 407 | 408 | 481) =>
            {
                answer(Delivery::Rejected {
                    reason: format!(
                        "the GB/T 28181 platform answered {code} {reason} to the alarm"
                    ),
                })
            }
            Err(e) => Round::failed(ua_failure(&e)),
        }
    }

    /// Records which alarm input and SN the platform confirmed (before the cursor moves).
    async fn record(&self, o: &Outgoing, a: &Alarm, c: &Confirmed) {
        tracing::info!(uplink = %self.cfg.name, seq = o.seq, id = %o.event.id, device = %a.device, sn = a.sn, attempts = c.attempts, "GB/T 28181 platform confirmed the alarm");
        let rec = DeliveryRecord {
            uplink: self.cfg.name.clone(),
            seq: o.seq,
            event_id: o.event.id.to_string(),
            receiver: 0,
            endpoint: self.endpoint.clone(),
            address: a.device.to_string(),
            sequence: a.sn,
            attempts: c.attempts,
            acknowledged_at: c.at,
        };
        if let Err(e) = self.cx.journal.exec(record(rec)).await {
            tracing::warn!(uplink = %self.cfg.name, seq = o.seq, error = %e, "delivery record not stored");
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::config::UplinkConfig, Vec<ConfigIssue>> {
        let text = format!(
            "name = \"police\"\nkind = \"gb28181\"\nplatform_id = \"34020000002000000001\"\ndevice_id = \"34020000001180000001\"\n{extra}"
        );
        super::super::parse(
            toml::from_str(&text).unwrap(),
            &FieldPath::root().key("uplink").index(0),
        )
    }

    #[test]
    fn a_remote_platform_needs_allow_plaintext_and_a_password() {
        let e = parse("platform = \"192.0.2.1:5060\"\npassword = \"x\"")
            .err()
            .unwrap();
        assert_eq!(e[0].path.to_string(), "uplink[0].allow_plaintext", "{e:?}");
        assert!(
            parse("platform = \"192.0.2.1:5060\"\npassword = \"x\"\nallow_plaintext = true")
                .is_ok()
        );
        let e = parse("platform = \"127.0.0.1:5060\"").err().unwrap();
        assert!(
            e.iter()
                .any(|i| i.path.to_string() == "uplink[0].password_file"),
            "{e:?}"
        );
        let e = parse(
            "platform = \"127.0.0.1:5060\"\npassword = \"x\"\n[[alarm_input]]\nid = \"123\"\nname = \"gate\"\ndevice = \"d\"",
        )
        .err()
        .unwrap();
        assert!(e.iter().any(|i| i.message.contains("20 digits")), "{e:?}");
    }

    #[test]
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("gb28181.pass");
        std::fs::write(&f, "s3cret\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let table = format!(
            "platform = \"127.0.0.1:5060\"\npassword_file = \"{}\"",
            f.display()
        );
        let e = parse(&table).err().unwrap();
        assert_eq!(e[0].path.to_string(), "uplink[0].password_file", "{e:?}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(parse(&table).is_ok());
    }

    #[test]
    fn the_default_filter_sends_panic_intrusion_and_fire_alarms() {
        let u = parse("platform = \"127.0.0.1:5060\"\npassword = \"x\"").unwrap();
        for k in DEFAULT_KINDS {
            assert!(u.filter.wants_kind(&Kind::new(*k).unwrap()), "{k}");
        }
        assert!(!u.filter.wants_kind(&Kind::new("sensor.readings").unwrap()));
    }

    #[test]
    fn an_alarm_takes_its_inputs_id_priority_and_local_time() {
        let p: PlatformConfig = toml::from_str(
            "platform = \"127.0.0.1:5060\"\nplatform_id = \"34020000002000000001\"\ndevice_id = \"34020000001180000001\"\npassword = \"x\"\n[[alarm_input]]\nid = \"34020000001340000001\"\nname = \"门卫室一键报警\"\ndevice = \"guard_button\"\n[[alarm_input]]\nid = \"34020000001340000002\"\nname = \"A栋周界\"\nlocation = \"main/A\"\npriority = 3\n",
        )
        .unwrap();
        let e: Routed = serde_json::from_value(serde_json::json!({
            "kind": "panic.alarm", "source": {"device": "guard_button", "driver": "modbus_tcp"},
            "location": "main/gate", "occurred_at": null, "received_at": "2026-12-03T01:02:03Z"
        }))
        .unwrap();
        let a = alarm_for(&p, &e, 42);
        assert_eq!(a.device.as_str(), "34020000001340000001");
        assert_eq!((a.sn, a.priority, a.method), (42, 1, 2));
        assert_eq!(a.time, "2026-12-03T09:02:03");
        assert!(
            a.description.starts_with("门卫室一键报警 panic.alarm"),
            "{}",
            a.description
        );
        let e: Routed = serde_json::from_value(serde_json::json!({
            "kind": "intrusion.alarm", "source": {"device": "zone_7", "driver": "dc09"},
            "location": "main/A/2", "received_at": "2026-12-03T01:02:03Z"
        }))
        .unwrap();
        let a = alarm_for(&p, &e, 43);
        assert_eq!((a.device.as_str(), a.priority), ("34020000001340000002", 3));
        let e: Routed = serde_json::from_value(serde_json::json!({
            "kind": "fire.alarm", "source": {"device": "panel", "driver": "gb26875"},
            "received_at": "2026-12-03T01:02:03Z"
        }))
        .unwrap();
        let a = alarm_for(&p, &e, 44);
        assert_eq!((a.device.as_str(), a.priority), ("34020000001180000001", 1));
        assert_eq!(catalog(&p).len(), 2);
    }
}
