//! [`TransmitConfig`]: where the transmitter sends, as whom, and how patiently. Pure:
//! [`TransmitConfig::validate`] reports every problem with its field path and what to
//! change; only [`crate::transmit::Transmitter::new`] reads a `key_file`.
//!
//! ```toml
//! receivers = ["arc1.example.net:9010", "10.1.2.3:9010"]  # primary first, then backups
//! transport = "tcp"                 # tcp | udp
//! account = "5A01"                  # the school's account at the ARC: 3-16 hex digits
//! receiver_number = "0"             # R field, 1-6 hex digits
//! line_prefix = "0"                 # L field, 1-6 hex digits
//! format = "adm-cid"                # adm-cid (Contact ID) | sia-dcs
//! key = "0123456789abcdef"          # optional AES-128/192/256 key (key_encoding text | hex)
//! key_encoding = "text"
//! # key_file = "/etc/campusgw/arc.key"   # instead of key: the file's first line
//! ack_timeout = "10s"               # wait this long for the reply to one attempt
//! connect_timeout = "5s"
//! retries = 2                       # attempts per receiver per message = retries + 1
//! failover_after = 3                # consecutive failures before the next message starts at the next receiver
//! return_to_primary_after = "5m"    # then try the primary first again
//! supervision = "90s"               # optional: NULL every 90 s (the caller schedules it)
//! default_partition = 1
//! default_zone = 0
//! [[zone]]                          # location prefix → partition / zone (the longest match wins)
//! location = "main/A"
//! partition = 2
//! [[zone]]
//! location = { building = "A", zone = "guard room" }
//! partition = 2
//! zone = 1
//! [[zone]]
//! device = "lab_panel"              # or match the event's device
//! partition = 3
//! zone = 12
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use campusgw_sdk::{ConfigIssue, DeviceId, FieldPath, HumanDuration, Location};
use serde::Deserialize;

use crate::crypto::KeyEncoding;
use crate::frame::is_hex_account;
use crate::settings::KeySource;

/// How DC-09 messages travel (DC-09 allows both; TCP is what ARCs usually run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// One TCP connection, many frames.
    #[default]
    Tcp,
    /// One datagram per frame.
    Udp,
}

/// The data format of event messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum Format {
    /// `ADM-CID`: Contact ID `QEEE GG ZZZ` (SIA DC-05).
    #[default]
    #[serde(rename = "adm-cid", alias = "adm_cid", alias = "ADM-CID")]
    AdmCid,
    /// `SIA-DCS`: SIA DCS `Nri<partition>/<code><zone>` (SIA DC-03).
    #[serde(rename = "sia-dcs", alias = "sia_dcs", alias = "SIA-DCS")]
    SiaDcs,
}

/// One receiver: `ip:port`, `[v6]:port` or `host:port` (resolved at each connect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A numeric address.
    Addr(SocketAddr),
    /// A host name and port, looked up when connecting.
    Host {
        /// The name.
        host: String,
        /// The port.
        port: u16,
    },
}

impl Endpoint {
    /// Parses `ip:port`, `[v6]:port` or `host:port`.
    ///
    /// # Errors
    /// A message saying how to write it.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Ok(a) = s.parse::<SocketAddr>() {
            return Ok(Endpoint::Addr(a));
        }
        let bad = || {
            format!("{s:?} is not host:port, like \"arc.example.net:9010\" or \"10.0.0.5:9010\"")
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if !host_ok {
            return Err(bad());
        }
        Ok(Endpoint::Host {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Addr(a) => write!(f, "{a}"),
            Endpoint::Host { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// One `[[zone]]`: which partition and zone events from a place (or device) are sent as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneRule {
    /// Events at this location or below it (a prefix of campus/building/floor/zone/point).
    #[serde(default)]
    pub location: Option<Location>,
    /// Events from this device (wins over any location rule).
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// Contact ID GG / SIA `ri`: 0-99.
    #[serde(default)]
    pub partition: Option<u8>,
    /// Contact ID ZZZ / the SIA event address: 0-999.
    #[serde(default)]
    pub zone: Option<u16>,
}

/// The transmitter's configuration (see the module doc for the TOML form).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransmitConfig {
    /// Receivers, primary first, then backups.
    pub receivers: Vec<String>,
    /// TCP or UDP.
    #[serde(default)]
    pub transport: Transport,
    /// The account the ARC knows this site by: 3-16 hex digits.
    pub account: String,
    /// The `R` field: 1-6 hex digits.
    #[serde(default = "default_field")]
    pub receiver_number: String,
    /// The `L` field: 1-6 hex digits.
    #[serde(default = "default_field")]
    pub line_prefix: String,
    /// ADM-CID or SIA-DCS.
    #[serde(default)]
    pub format: Format,
    /// The AES key, when messages are encrypted.
    #[serde(default)]
    pub key: Option<String>,
    /// How `key` (or the first line of `key_file`) is written.
    #[serde(default)]
    pub key_encoding: KeyEncoding,
    /// A file whose first line is the key (instead of `key`).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How long to wait for the reply to one attempt.
    #[serde(default = "default_ack_timeout")]
    pub ack_timeout: HumanDuration,
    /// How long a TCP connect (with the name lookup) may take.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: HumanDuration,
    /// Attempts per receiver per message after the first.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Consecutive failures of a receiver after which messages start at the next one.
    #[serde(default = "default_failover_after")]
    pub failover_after: u32,
    /// After a failover, how long until the primary is tried first again.
    #[serde(default = "default_return")]
    pub return_to_primary_after: HumanDuration,
    /// How often the caller should send a NULL ([`crate::transmit::Transmitter::supervise`]).
    #[serde(default)]
    pub supervision: Option<HumanDuration>,
    /// The partition of events no `[[zone]]` rule gives one.
    #[serde(default = "default_partition")]
    pub default_partition: u8,
    /// The zone of events no `[[zone]]` rule gives one.
    #[serde(default)]
    pub default_zone: u16,
    /// Location or device → partition and zone.
    #[serde(default)]
    pub zone: Vec<ZoneRule>,
}

fn default_field() -> String {
    "0".to_owned()
}
fn default_ack_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_retries() -> u32 {
    2
}
fn default_failover_after() -> u32 {
    3
}
fn default_return() -> HumanDuration {
    HumanDuration(Duration::from_secs(300))
}
fn default_partition() -> u8 {
    1
}

/// Contact ID bounds (SIA DC-05: GG two digits, ZZZ three).
const MAX_PARTITION: u8 = 99;
const MAX_ZONE: u16 = 999;

impl TransmitConfig {
    /// A configuration with every default: ADM-CID over TCP, in clear, `R0 L0`.
    pub fn new(receivers: Vec<String>, account: &str) -> TransmitConfig {
        TransmitConfig {
            receivers,
            transport: Transport::Tcp,
            account: account.to_owned(),
            receiver_number: default_field(),
            line_prefix: default_field(),
            format: Format::AdmCid,
            key: None,
            key_encoding: KeyEncoding::Text,
            key_file: None,
            ack_timeout: default_ack_timeout(),
            connect_timeout: default_connect_timeout(),
            retries: default_retries(),
            failover_after: default_failover_after(),
            return_to_primary_after: default_return(),
            supervision: None,
            default_partition: default_partition(),
            default_zone: 0,
            zone: Vec::new(),
        }
    }

    pub(crate) fn key_source(&self) -> KeySource<'_> {
        KeySource {
            key: self.key.as_deref(),
            key_file: self.key_file.as_deref(),
            encoding: self.key_encoding,
        }
    }

    /// Whether messages are encrypted (a key or key file is given).
    pub fn encrypted(&self) -> bool {
        self.key.is_some() || self.key_file.is_some()
    }

    /// The receivers, parsed.
    ///
    /// # Errors
    /// The first one that does not parse, with its index.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>, (usize, String)> {
        self.receivers
            .iter()
            .enumerate()
            .map(|(i, r)| Endpoint::parse(r).map_err(|e| (i, e)))
            .collect()
    }

    /// Every problem, each with its path under `at` and what to change. Pure.
    pub fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.receivers.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("receivers"),
                "list at least one receiver, like [\"arc.example.net:9010\"] (primary first)",
            ));
        }
        for (i, r) in self.receivers.iter().enumerate() {
            if let Err(e) = Endpoint::parse(r) {
                issues.push(ConfigIssue::new(at.key("receivers").index(i), e));
            }
        }
        if !is_hex_account(&self.account) {
            issues.push(ConfigIssue::new(
                at.key("account"),
                format!(
                    "{:?} is not 3-16 hex digits; write the account the ARC gave this site",
                    self.account
                ),
            ));
        }
        for (key, v) in [
            ("receiver_number", &self.receiver_number),
            ("line_prefix", &self.line_prefix),
        ] {
            if !(1..=6).contains(&v.len()) || !v.bytes().all(|b| b.is_ascii_hexdigit()) {
                issues.push(ConfigIssue::new(
                    at.key(key),
                    format!("{v:?} is not 1-6 hex digits (\"0\" when the ARC gave none)"),
                ));
            }
        }
        issues.extend(self.key_source().issues(at));
        self.check_times(at, &mut issues);
        self.check_zones(at, &mut issues);
        issues
    }

    fn check_times(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        let limits = [
            ("ack_timeout", self.ack_timeout.0, 100, 300),
            ("connect_timeout", self.connect_timeout.0, 100, 300),
        ];
        for (key, d, min_ms, max_s) in limits {
            if d < Duration::from_millis(min_ms) || d > Duration::from_secs(max_s) {
                issues.push(ConfigIssue::new(
                    at.key(key),
                    format!("{} is outside {min_ms}ms-{max_s}s", HumanDuration(d)),
                ));
            }
        }
        if self.retries > 10 {
            issues.push(ConfigIssue::new(
                at.key("retries"),
                format!(
                    "{} is more than 10; an alarm should move to a backup sooner",
                    self.retries
                ),
            ));
        }
        if self.failover_after == 0 {
            issues.push(ConfigIssue::new(
                at.key("failover_after"),
                "must be at least 1",
            ));
        }
        if self.return_to_primary_after.0 < Duration::from_secs(1) {
            issues.push(ConfigIssue::new(
                at.key("return_to_primary_after"),
                "must be at least 1s",
            ));
        }
        if self
            .supervision
            .is_some_and(|d| d.0 < Duration::from_secs(1))
        {
            issues.push(ConfigIssue::new(
                at.key("supervision"),
                "must be at least 1s (or remove it to send no NULL)",
            ));
        }
    }

    fn check_zones(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        if self.default_partition > MAX_PARTITION {
            issues.push(ConfigIssue::new(
                at.key("default_partition"),
                format!("{} is above {MAX_PARTITION}", self.default_partition),
            ));
        }
        if self.default_zone > MAX_ZONE {
            issues.push(ConfigIssue::new(
                at.key("default_zone"),
                format!("{} is above {MAX_ZONE}", self.default_zone),
            ));
        }
        for (i, z) in self.zone.iter().enumerate() {
            let at = at.key("zone").index(i);
            if z.location.is_none() && z.device.is_none() {
                issues.push(ConfigIssue::new(
                    at.key("location"),
                    "give location (a prefix such as \"main/A\") or device",
                ));
            }
            if z.partition.is_none() && z.zone.is_none() {
                issues.push(ConfigIssue::new(
                    at.key("partition"),
                    "give partition, zone or both",
                ));
            }
            if z.partition.is_some_and(|p| p > MAX_PARTITION) {
                issues.push(ConfigIssue::new(
                    at.key("partition"),
                    format!("is above {MAX_PARTITION}"),
                ));
            }
            if z.zone.is_some_and(|n| n > MAX_ZONE) {
                issues.push(ConfigIssue::new(
                    at.key("zone"),
                    format!("is above {MAX_ZONE}"),
                ));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_config_parses_and_validates() {
        let example = crate::tests::doc_toml_example(include_str!("config.rs"));
        let c: TransmitConfig = toml::from_str(&example).unwrap();
        assert!(
            c.validate(&FieldPath::root()).is_empty(),
            "{:?}",
            c.validate(&FieldPath::root())
        );
        assert_eq!(c.receivers.len(), 2);
        assert_eq!(c.zone.len(), 3);
    }
}
