//! `[[uplink]]` tables: parsed once, validated with field paths (no network I/O; files named
//! in the table are only checked for existence, and secret files for their mode).
//!
//! Plaintext (`mqtt://`, `http://`) is accepted only to a loopback host (`127.0.0.0/8`,
//! `::1`, `localhost`) unless the uplink sets `allow_plaintext = true`; any other host
//! name counts as remote, since a name can resolve anywhere. TLS options (`ca_file`,
//! `client_cert`, `client_key`) with a plaintext URL are an error rather than ignored.
//! A plaintext uplink, loopback or not, is marked `"plaintext": true` in `/healthz` and
//! logged as a warning at every start.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{Class, ConfigIssue, FieldPath};
use serde::Deserialize;

use crate::config::{HumanDuration, UplinkConfig, typed_value};
use crate::secrets::{check_private_file, redact_url};

use super::contract::{UplinkFactory, UplinkKindConfig};
use super::county_commands::CommandPolicy;
use super::filter::Filter;

/// The validated settings of one uplink, by kind. Behaviour goes through the kind's
/// [`UplinkFactory`] ([`UplinkSettings::factory`]); a new kind adds a variant here, its
/// [`UplinkKindConfig`] impl and one line in `crate::registry::UPLINKS`.
#[derive(Debug, Clone)]
pub enum UplinkSettings {
    /// `kind = "mqtt"`: the county platform.
    Mqtt(Arc<MqttConfig>),
    /// `kind = "webhook"`: HTTPS POST of event batches.
    Webhook(Arc<WebhookConfig>),
    /// `kind = "dc09"`: SIA DC-09 to the police alarm receiving centres.
    Dc09(Arc<super::dc09::Dc09UplinkConfig>),
    /// `kind = "gb26875"`: GB/T 26875.3 to the city fire-monitoring centre.
    Gb26875(Arc<super::gb26875::Gb26875UplinkConfig>),
    /// `kind = "card_platform"`: the campus-card platform of the canteen driver.
    CardPlatform(Arc<super::card_platform::CardPlatformConfig>),
    /// `kind = "gb28181"`: GB/T 28181 alarms to the police video platform.
    Gb28181(Arc<super::gb28181::Gb28181UplinkConfig>),
}

impl UplinkSettings {
    /// Tells an MQTT or webhook uplink where the cameras' snapshot files are (for
    /// `snapshots = "image"`); other kinds send no snapshots.
    pub fn attach_media(&mut self, dirs: &Arc<crate::console::snapshots::MediaDirs>) {
        match self {
            UplinkSettings::Mqtt(c) => Arc::make_mut(c).snapshots.dirs = dirs.clone(),
            UplinkSettings::Webhook(c) => Arc::make_mut(c).snapshots.dirs = dirs.clone(),
            UplinkSettings::Dc09(_)
            | UplinkSettings::Gb26875(_)
            | UplinkSettings::CardPlatform(_)
            | UplinkSettings::Gb28181(_) => {}
        }
    }

    /// The kind's effectful half.
    pub fn factory(&self) -> Arc<dyn UplinkFactory> {
        match self {
            UplinkSettings::Mqtt(c) => c.clone(),
            UplinkSettings::Webhook(c) => c.clone(),
            UplinkSettings::Dc09(c) => c.clone(),
            UplinkSettings::Gb26875(c) => c.clone(),
            UplinkSettings::CardPlatform(c) => c.clone(),
            UplinkSettings::Gb28181(c) => c.clone(),
        }
    }

    /// The retry back-off bounds (also used to restart a crashed uplink task).
    pub fn backoff(&self) -> (Duration, Duration) {
        self.factory().backoff()
    }

    /// Whether events (and credentials) go unencrypted: `mqtt://` or `http://`.
    pub fn plaintext(&self) -> bool {
        self.factory().plaintext()
    }

    /// The destination as it may be shown (log, `/healthz`): secrets in the URL masked.
    pub fn shown_url(&self) -> String {
        self.factory().shown_url()
    }
}

impl UplinkKindConfig for MqttConfig {
    const KIND: &'static str = "mqtt";
    fn validate(
        table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<MqttConfig> {
        mqtt(table, name, at, issues)
    }
    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::Mqtt(self)
    }
}

impl UplinkKindConfig for WebhookConfig {
    const KIND: &'static str = "webhook";
    fn validate(
        table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<WebhookConfig> {
        webhook(table, name, at, issues)
    }
    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::Webhook(self)
    }
}

impl MqttConfig {
    /// The broker as it may be shown.
    pub fn shown_url(&self) -> String {
        let scheme = if self.broker.tls { "mqtts" } else { "mqtt" };
        if self.broker.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.broker.host, self.broker.port)
        } else {
            format!("{scheme}://{}:{}", self.broker.host, self.broker.port)
        }
    }
}

/// A registry entry's parser: the kind's own keys → its settings ([`parse_kind`]).
pub type ParseKindFn =
    fn(toml::Table, &str, &FieldPath, &mut Vec<ConfigIssue>) -> Option<UplinkSettings>;

/// Validates a table as kind `C` (the registry's entry for `C::KIND`).
pub fn parse_kind<C: UplinkKindConfig>(
    t: toml::Table,
    name: &str,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<UplinkSettings> {
    C::validate(t, name, at, issues).map(|c| Arc::new(c).settings())
}

/// Whether `host` (a name or an IP literal without brackets) is this machine: an IP in
/// `127.0.0.0/8`, `::1`, or the name `localhost`. Any other name counts as remote.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Where an MQTT broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    /// Host name or IP (no brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`.
    pub tls: bool,
}

impl BrokerAddr {
    /// Parses `mqtt://host[:port]` or `mqtts://host[:port]` (default ports 1883 / 8883).
    ///
    /// # Errors
    /// A message naming the accepted form.
    pub fn parse(url: &str) -> Result<BrokerAddr, String> {
        let bad = || {
            format!(
                "invalid broker url {:?}: expected mqtt://host[:port] or mqtts://host[:port]",
                redact_url(url)
            )
        };
        let (tls, rest) = if let Some(r) = url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let rest = rest.trim_end_matches('/');
        let default = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
            (h, tail.strip_prefix(':'))
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?,
            None => default,
        };
        if host.contains('@') {
            return Err(format!(
                "broker url {:?} carries credentials: put them in username and password_file instead",
                redact_url(url)
            ));
        }
        if host.is_empty() || host.contains('/') {
            return Err(bad());
        }
        Ok(BrokerAddr {
            host: host.to_owned(),
            port,
            tls,
        })
    }
}

/// TLS material shared by both kinds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM CA bundle; `None` uses the built-in web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain and key for mutual TLS.
    pub client: Option<(PathBuf, PathBuf)>,
}

/// `protocol = "3.1.1" | "5"` of an MQTT uplink.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    /// MQTT 3.1.1 (the default).
    #[default]
    #[serde(rename = "3.1.1")]
    V311,
    /// MQTT 5.0 (the features used are listed in `mqtt_link`).
    #[serde(rename = "5")]
    V5,
}

/// A validated `kind = "mqtt"` uplink.
#[derive(Debug, Clone)]
pub struct MqttConfig {
    /// Cursor key and metric label.
    pub name: String,
    /// The broker.
    pub broker: BrokerAddr,
    /// MQTT 3.1.1 or 5.
    pub protocol: MqttProtocol,
    /// CA and client certificate (used when `broker.tls`).
    pub tls: TlsFiles,
    /// Username and where the password comes from.
    pub credentials: Option<(String, Secret)>,
    /// Topic prefix (default `campusgw`).
    pub topic_prefix: String,
    /// Unconfirmed publishes at most (default 100).
    pub inflight: u16,
    /// MQTT keep-alive (default 30 s).
    pub keep_alive: Duration,
    /// Heartbeat period (default 30 s).
    pub heartbeat: Duration,
    /// A connection with publishes outstanding and no PUBACK for this long is considered
    /// stalled and reconnected (default 60 s).
    pub ack_timeout: Duration,
    /// Reconnect back-off bounds (default 1 s .. 60 s).
    pub backoff: (Duration, Duration),
    /// County commands; `None` means none are accepted (no subscription).
    pub commands: Option<CommandPolicy>,
    /// What is sent of camera snapshots (`snapshots`, `snapshot_max_bytes`).
    pub snapshots: super::snapshots::SnapshotOptions,
}

/// A validated `kind = "webhook"` uplink.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Cursor key and metric label.
    pub name: String,
    /// `http://` or `https://` endpoint.
    pub url: String,
    /// CA and client certificate.
    pub tls: TlsFiles,
    /// Bearer token.
    pub token: Option<Secret>,
    /// Events per POST (default 100).
    pub batch: usize,
    /// Request timeout (default 10 s).
    pub timeout: Duration,
    /// Retry back-off bounds (default 1 s .. 60 s).
    pub backoff: (Duration, Duration),
    /// What is sent of camera snapshots (`snapshots`, `snapshot_max_bytes`).
    pub snapshots: super::snapshots::SnapshotOptions,
}

/// A secret written inline or, preferably, in a file read at start.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// Inline in the config.
    Inline(String),
    /// In this file (trailing newline trimmed).
    File(PathBuf),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Secret::Inline(..)"),
            Secret::File(p) => write!(f, "Secret::File({})", p.display()),
        }
    }
}

impl Secret {
    /// The secret's text. A file is read now (it may have been fixed or rotated), and only
    /// when others cannot read it ([`check_private_file`]).
    ///
    /// # Errors
    /// The read error or the mode problem, naming the file.
    pub fn read(&self) -> Result<String, String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => {
                check_private_file(p)?;
                std::fs::read_to_string(p)
                    .map(|s| s.trim_end_matches(['\r', '\n']).to_owned())
                    .map_err(|e| format!("cannot read {}: {e}", p.display()))
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Common {
    name: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    classes: Option<Vec<Class>>,
    #[serde(default)]
    kinds: Option<Vec<String>>,
    #[serde(default)]
    urgent_classes: Option<Vec<Class>>,
    #[serde(default)]
    urgent_backoff_max: Option<HumanDuration>,
    #[serde(default)]
    alarm_delay_threshold: Option<HumanDuration>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MqttRaw {
    url: String,
    #[serde(default)]
    protocol: MqttProtocol,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<PathBuf>,
    #[serde(default = "default_prefix")]
    topic_prefix: String,
    #[serde(default = "default_inflight")]
    inflight: u16,
    keep_alive: Option<HumanDuration>,
    heartbeat: Option<HumanDuration>,
    ack_timeout: Option<HumanDuration>,
    #[serde(default)]
    allow_plaintext: bool,
    commands: Option<toml::Value>,
    snapshots: Option<super::snapshots::SnapshotMode>,
    snapshot_max_bytes: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookRaw {
    url: String,
    ca_file: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
    token: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default = "default_batch")]
    batch: usize,
    timeout: Option<HumanDuration>,
    #[serde(default)]
    allow_plaintext: bool,
    snapshots: Option<super::snapshots::SnapshotMode>,
    snapshot_max_bytes: Option<u64>,
}

fn default_prefix() -> String {
    "campusgw".to_owned()
}

fn default_inflight() -> u16 {
    100
}

fn default_batch() -> usize {
    100
}

const COMMON_KEYS: [&str; 7] = [
    "name",
    "kind",
    "classes",
    "kinds",
    "urgent_classes",
    "urgent_backoff_max",
    "alarm_delay_threshold",
];

/// Parses one `[[uplink]]` table.
///
/// # Errors
/// Every problem found, each with its field path.
pub fn parse(v: toml::Value, at: &FieldPath) -> Result<UplinkConfig, Vec<ConfigIssue>> {
    let mut issues = Vec::new();
    let toml::Value::Table(mut t) = v else {
        return Err(vec![ConfigIssue::new(at.clone(), "expected a table")]);
    };
    let mut common = toml::Table::new();
    for k in COMMON_KEYS {
        if let Some(v) = t.remove(k) {
            common.insert(k.to_owned(), v);
        }
    }
    let kind = common
        .get("kind")
        .and_then(toml::Value::as_str)
        .unwrap_or("")
        .to_owned();
    let kinds = crate::registry::UPLINKS;
    let Some(&(kind, parse_kind)) = kinds.iter().find(|(k, _)| *k == kind) else {
        let known: Vec<&str> = kinds.iter().map(|(k, _)| *k).collect();
        let hint = campusgw_sdk::config::suggest(&kind, known.iter().copied())
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        return Err(vec![ConfigIssue::new(
            at.key("kind"),
            format!(
                "unknown uplink kind \"{kind}\"{hint}; this build has: {}",
                known.join(", ")
            ),
        )]);
    };
    let common: Option<Common> = typed_value(toml::Value::Table(common), at, &mut issues);
    let name = common.as_ref().map(|c| c.name.clone()).unwrap_or_default();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        issues.push(ConfigIssue::new(
            at.key("name"),
            format!("uplink name {name:?} must be non-empty ASCII letters, digits, '_' or '-'"),
        ));
    }
    let settings = parse_kind(t, &name, at, &mut issues);
    let filter = common.and_then(|c| {
        let urgent = super::filter::UrgentKeys {
            classes: c.urgent_classes,
            backoff_max: c.urgent_backoff_max.map(|d| d.0),
            delay_threshold: c.alarm_delay_threshold.map(|d| d.0),
        };
        let long_cap = settings
            .as_ref()
            .map_or(Duration::from_secs(60), |s| s.factory().backoff().1);
        let (classes, kinds) = match (c.classes, c.kinds, &settings) {
            (None, None, Some(s)) => match s.factory().default_filter() {
                Some((classes, kinds)) => (Some(classes), Some(kinds)),
                None => (None, None),
            },
            (classes, kinds, _) => (classes, kinds),
        };
        Filter::parse(classes, kinds, at, &mut issues)?.with_urgency(
            urgent,
            long_cap,
            at,
            &mut issues,
        )
    });
    match (filter, settings) {
        (Some(filter), Some(settings)) if issues.is_empty() => Ok(UplinkConfig {
            name,
            kind,
            filter,
            settings,
        }),
        _ => Err(issues),
    }
}

fn mqtt(
    t: toml::Table,
    name: &str,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<MqttConfig> {
    let raw: MqttRaw = typed_value(toml::Value::Table(t), at, issues)?;
    let broker = BrokerAddr::parse(&raw.url)
        .map_err(|m| issues.push(ConfigIssue::new(at.key("url"), m)))
        .ok();
    if let Some(b) = &broker {
        let given = tls_keys_given(&raw.ca_file, &raw.client_cert, &raw.client_key);
        let host = if b.host.contains(':') {
            format!("[{}]", b.host)
        } else {
            b.host.clone()
        };
        let plain = Plain {
            scheme: "mqtt://",
            secure: format!("mqtts://{host}:8883"),
            host: &b.host,
            allow: raw.allow_plaintext,
        };
        check_plaintext(!b.tls, &plain, &given, at, issues);
    }
    let tls = tls_files(raw.ca_file, raw.client_cert, raw.client_key, at, issues);
    if raw.inflight == 0 {
        issues.push(ConfigIssue::new(
            at.key("inflight"),
            "inflight must be at least 1",
        ));
    }
    let valid_prefix = !raw.topic_prefix.is_empty()
        && !raw.topic_prefix.contains(['+', '#', '\0'])
        && !raw.topic_prefix.starts_with('/')
        && !raw.topic_prefix.ends_with('/');
    if !valid_prefix {
        issues.push(ConfigIssue::new(
            at.key("topic_prefix"),
            format!(
                "topic_prefix {:?} must be non-empty, without '+', '#' or a leading/trailing '/'",
                raw.topic_prefix
            ),
        ));
    }
    let credentials = match (raw.username, raw.password, raw.password_file) {
        (None, None, None) => None,
        (Some(u), None, None) => Some((u, Secret::Inline(String::new()))),
        (Some(u), Some(p), None) => Some((u, Secret::Inline(p))),
        (Some(u), None, Some(f)) => {
            secret_file(&f, &at.key("password_file"), issues);
            Some((u, Secret::File(f)))
        }
        (None, _, _) => {
            issues.push(ConfigIssue::new(
                at.key("username"),
                "a password needs a username",
            ));
            None
        }
        (Some(_), Some(_), Some(_)) => {
            issues.push(ConfigIssue::new(
                at.key("password"),
                "give password or password_file, not both",
            ));
            None
        }
    };
    let commands = match raw.commands {
        Some(v) => Some(CommandPolicy::parse(v, &at.key("commands"), issues)?),
        None => None,
    };
    let secs = |d: Option<HumanDuration>, dflt: u64| d.map_or(Duration::from_secs(dflt), |d| d.0);
    let snapshots = super::snapshots::SnapshotOptions::parse(
        raw.snapshots,
        raw.snapshot_max_bytes,
        super::snapshots::MQTT_MAX_IMAGE_BYTES,
        at,
        issues,
    );
    Some(MqttConfig {
        name: name.to_owned(),
        broker: broker?,
        protocol: raw.protocol,
        tls,
        credentials,
        topic_prefix: raw.topic_prefix,
        inflight: raw.inflight.max(1),
        keep_alive: secs(raw.keep_alive, 30).max(Duration::from_secs(1)),
        heartbeat: secs(raw.heartbeat, 30).max(Duration::from_millis(100)),
        ack_timeout: secs(raw.ack_timeout, 60).max(Duration::from_millis(100)),
        backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        commands,
        snapshots,
    })
}

pub(super) fn webhook(
    t: toml::Table,
    name: &str,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<WebhookConfig> {
    let raw: WebhookRaw = typed_value(toml::Value::Table(t), at, issues)?;
    let parsed = reqwest::Url::parse(&raw.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"));
    match parsed.as_ref().and_then(|u| u.host_str().map(|h| (u, h))) {
        None => issues.push(ConfigIssue::new(
            at.key("url"),
            format!(
                "invalid webhook url {:?}: expected https://host[:port]/path",
                redact_url(&raw.url)
            ),
        )),
        Some((u, host)) => {
            let given = tls_keys_given(&raw.ca_file, &raw.client_cert, &raw.client_key);
            let mut secure = u.clone();
            // Url::set_scheme only refuses changes between special and non-special schemes.
            let _ = secure.set_scheme("https");
            let plain = Plain {
                scheme: "http://",
                secure: redact_url(secure.as_str()),
                host,
                allow: raw.allow_plaintext,
            };
            check_plaintext(u.scheme() == "http", &plain, &given, at, issues);
        }
    }
    let tls = tls_files(raw.ca_file, raw.client_cert, raw.client_key, at, issues);
    let token = match (raw.token, raw.token_file) {
        (Some(_), Some(_)) => {
            issues.push(ConfigIssue::new(
                at.key("token"),
                "give token or token_file, not both",
            ));
            None
        }
        (Some(t), None) => Some(Secret::Inline(t)),
        (None, Some(f)) => {
            secret_file(&f, &at.key("token_file"), issues);
            Some(Secret::File(f))
        }
        (None, None) => None,
    };
    if raw.batch == 0 || raw.batch > 10_000 {
        issues.push(ConfigIssue::new(
            at.key("batch"),
            "batch must be between 1 and 10000",
        ));
    }
    let snapshots = super::snapshots::SnapshotOptions::parse(
        raw.snapshots,
        raw.snapshot_max_bytes,
        super::snapshots::WEBHOOK_MAX_IMAGE_BYTES,
        at,
        issues,
    );
    Some(WebhookConfig {
        name: name.to_owned(),
        url: raw.url,
        tls,
        token,
        batch: raw.batch.clamp(1, 10_000),
        timeout: raw.timeout.map_or(Duration::from_secs(10), |d| d.0),
        backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        snapshots,
    })
}

fn tls_files(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> TlsFiles {
    if let Some(ca) = &ca {
        exists(ca, &at.key("ca_file"), issues);
    }
    let client = match (cert, key) {
        (Some(c), Some(k)) => {
            exists(&c, &at.key("client_cert"), issues);
            secret_file(&k, &at.key("client_key"), issues);
            Some((c, k))
        }
        (None, None) => None,
        (Some(_), None) => {
            issues.push(ConfigIssue::new(
                at.key("client_key"),
                "client_cert needs client_key",
            ));
            None
        }
        (None, Some(_)) => {
            issues.push(ConfigIssue::new(
                at.key("client_cert"),
                "client_key needs client_cert",
            ));
            None
        }
    };
    TlsFiles {
        ca_file: ca,
        client,
    }
}

/// A plaintext URL's facts, for [`check_plaintext`].
struct Plain<'a> {
    /// `mqtt://` or `http://`.
    scheme: &'static str,
    /// The same destination over TLS, suggested in the message.
    secure: String,
    /// The host, without brackets.
    host: &'a str,
    /// `allow_plaintext = true`.
    allow: bool,
}

fn tls_keys_given(
    ca: &Option<PathBuf>,
    cert: &Option<PathBuf>,
    key: &Option<PathBuf>,
) -> Vec<&'static str> {
    [("ca_file", ca), ("client_cert", cert), ("client_key", key)]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
}

/// TLS options need a TLS URL (they would be ignored); plaintext needs a loopback host or
/// `allow_plaintext = true`.
fn check_plaintext(
    plain: bool,
    p: &Plain<'_>,
    tls_given: &[&'static str],
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) {
    if !plain {
        return;
    }
    for k in tls_given {
        issues.push(ConfigIssue::new(
            at.key(k),
            format!(
                "{k} is only used over TLS but url is {}: use {} (or remove {k})",
                p.scheme, p.secure
            ),
        ));
    }
    if !p.allow && !is_loopback_host(p.host) {
        issues.push(ConfigIssue::new(
            at.key("url"),
            format!(
                "{} sends credentials and events unencrypted to {}, which is not a loopback address: use {}, or set allow_plaintext = true on this uplink if the whole network path is trusted",
                p.scheme, p.host, p.secure
            ),
        ));
    }
}

/// A file holding a secret: it must exist and others may not read it (see
/// [`check_private_file`]).
fn secret_file(p: &Path, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
    if !p.is_file() {
        exists(p, at, issues);
    } else if let Err(m) = check_private_file(p) {
        issues.push(ConfigIssue::new(at.clone(), m));
    }
}

fn exists(p: &Path, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
    if !p.is_file() {
        issues.push(ConfigIssue::new(
            at.clone(),
            format!("no such file {}", p.display()),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_parse_with_default_ports() {
        let a = BrokerAddr::parse("mqtts://platform.example").expect("valid");
        assert_eq!(
            (a.host.as_str(), a.port, a.tls),
            ("platform.example", 8883, true)
        );
        let a = BrokerAddr::parse("mqtt://127.0.0.1:1884").expect("valid");
        assert_eq!((a.host.as_str(), a.port, a.tls), ("127.0.0.1", 1884, false));
        let a = BrokerAddr::parse("mqtt://[::1]:1885").expect("valid");
        assert_eq!((a.host.as_str(), a.port), ("::1", 1885));
        for bad in [
            "http://x",
            "mqtt://",
            "mqtt://h:0",
            "mqtt://h:70000",
            "mqtts://h/x/y",
        ] {
            assert!(BrokerAddr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_loopback_ips_and_localhost_count_as_loopback() {
        for h in [
            "127.0.0.1",
            "127.1.2.3",
            "::1",
            "[::1]",
            "localhost",
            "LOCALHOST",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "192.0.2.1",
            "10.0.0.1",
            "::2",
            "platform.example",
            "localhost.example",
            "h",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn unknown_kind_and_bad_fields_are_reported_with_paths() {
        let v: toml::Value = toml::from_str("kind = \"mqt\"\nname = \"c\"").expect("toml");
        let e = parse(v, &FieldPath::root().key("uplink").index(0))
            .err()
            .expect("bad kind");
        assert!(
            e[0].message.contains("did you mean \"mqtt\""),
            "{:?}",
            e[0].message
        );
        let v: toml::Value =
            toml::from_str("kind = \"mqtt\"\nname = \"c\"\nurl = \"mqtt://h\"\ninflight = \"x\"")
                .expect("toml");
        let e = parse(v, &FieldPath::root().key("uplink").index(0))
            .err()
            .expect("bad inflight");
        assert_eq!(e[0].path.to_string(), "uplink[0].inflight");
    }

    #[test]
    fn protocol_defaults_to_3_1_1_and_accepts_5() {
        let at = FieldPath::root().key("uplink").index(0);
        let cfg = |extra: &str| {
            let text =
                format!("kind = \"mqtt\"\nname = \"c\"\nurl = \"mqtt://localhost\"\n{extra}");
            parse(toml::from_str(&text).expect("toml"), &at)
        };
        let protocol = |r: Result<UplinkConfig, Vec<ConfigIssue>>| match r.ok().map(|u| u.settings)
        {
            Some(UplinkSettings::Mqtt(c)) => Some(c.protocol),
            _ => None,
        };
        assert_eq!(protocol(cfg("")), Some(MqttProtocol::V311));
        assert_eq!(protocol(cfg("protocol = \"5\"")), Some(MqttProtocol::V5));
        assert_eq!(
            protocol(cfg("protocol = \"3.1.1\"")),
            Some(MqttProtocol::V311)
        );
        let e = cfg("protocol = \"4\"").err().expect("bad protocol");
        assert_eq!(e[0].path.to_string(), "uplink[0].protocol", "{e:?}");
    }
}
