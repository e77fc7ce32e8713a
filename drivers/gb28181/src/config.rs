//! The platform table of a `kind = "gb28181"` uplink: where the platform is, the ids it
//! assigned, the credentials, timers and the Catalog (alarm inputs and cameras). Pure:
//! [`PlatformConfig::validate`] reports every problem with its path and what to change;
//! the password file is read only by [`PlatformConfig::password`] (at every connect).
//!
//! ```toml
//! platform = "10.20.0.5:5060"              # the platform's SIP server (UDP)
//! platform_id = "34020000002000000001"     # its SIP server id (type 200)
//! # domain = "3402000000"                  # default: the first 10 digits of platform_id
//! device_id = "34020000001180000001"       # the id the platform assigned to this gateway
//! # username = "..."                       # default: device_id
//! password_file = "/etc/campusgw/gb28181.pass"   # or password = "..." (no default)
//! # bind = "0.0.0.0:5060"                  # local SIP socket; default any address, any port
//! charset = "gb2312"                       # or "utf-8", as the platform expects
//! expires = "3600s"                        # registration, refreshed at half of what is granted
//! keepalive = "60s"                        # Keepalive MESSAGE period
//! keepalive_misses = 3                     # unanswered in a row: re-REGISTER
//! answer_timeout = "5s"                    # per request, retransmitted meanwhile
//! utc_offset = "+08:00"                    # AlarmTime is local time (Beijing by default)
//! [[alarm_input]]
//! id = "34020000001340000001"              # type 134: alarm input
//! name = "门卫室一键报警"
//! device = "guard_button"                  # or location = "main/gate"; events from it use this id
//! # priority = 1                           # 1 (most urgent) .. 4; default by kind
//! # method = 2                             # 1..7; default 2 (device alarm), 6 for faults
//! [[camera]]
//! id = "34020000001320000001"              # the camera's own GB/T 28181 id (it registers itself)
//! name = "校门口"
//! location = "main/gate"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use campusgw_sdk::{ConfigIssue, DeviceId, FieldPath, HumanDuration, Location};
use chrono::FixedOffset;
use serde::Deserialize;

use crate::id::GbId;
use crate::manscdp::Charset;

/// A password that never shows in Debug output or logs.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("\"***\"")
    }
}

/// An alarm input the gateway lists in its Catalog and reports alarms as.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmInput {
    /// Its 20-digit id (type 134).
    pub id: GbId,
    /// `Name` in the Catalog.
    pub name: String,
    /// Events from this device are reported as this input.
    #[serde(default)]
    pub device: Option<DeviceId>,
    /// Or: events at this place (the most specific match wins; a device match first).
    #[serde(default)]
    pub location: Option<Location>,
    /// `AlarmPriority` for its alarms (default by kind: panic and fire 1, intrusion 2).
    #[serde(default)]
    pub priority: Option<u8>,
    /// `AlarmMethod` (default 2 device alarm; 6 device fault for fault kinds).
    #[serde(default)]
    pub method: Option<u8>,
}

/// A camera listed in the Catalog: its video stays with its own (or its NVR's) GB/T 28181
/// registration; the gateway only links its id.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Camera {
    /// The camera's id as the platform knows it.
    pub id: GbId,
    /// `Name`.
    pub name: String,
    /// Where it is (`Address` in the Catalog).
    #[serde(default)]
    pub location: Option<Location>,
}

fn default_bind() -> String {
    "0.0.0.0:0".into()
}
fn default_expires() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}
fn default_keepalive() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_misses() -> u32 {
    3
}
fn default_answer() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_offset() -> String {
    "+08:00".into()
}

/// The platform table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// `host:port` of the platform's SIP server.
    pub platform: String,
    /// The platform's SIP server id.
    pub platform_id: GbId,
    /// SIP domain (default: first 10 digits of `platform_id`).
    #[serde(default)]
    pub domain: Option<String>,
    /// This gateway's id.
    pub device_id: GbId,
    /// Digest user name (default: `device_id`).
    #[serde(default)]
    pub username: Option<String>,
    /// The password (or `password_file`).
    #[serde(default)]
    pub password: Option<Password>,
    /// A file whose first line is the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Local socket address.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// The platform's charset.
    #[serde(default)]
    pub charset: Charset,
    /// Registration expiry asked for.
    #[serde(default = "default_expires")]
    pub expires: HumanDuration,
    /// Keepalive period.
    #[serde(default = "default_keepalive")]
    pub keepalive: HumanDuration,
    /// Keepalives unanswered in a row before the link is renewed.
    #[serde(default = "default_misses")]
    pub keepalive_misses: u32,
    /// Per-request answer wait.
    #[serde(default = "default_answer")]
    pub answer_timeout: HumanDuration,
    /// Offset of `AlarmTime` from UTC.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Alarm inputs.
    #[serde(default)]
    pub alarm_input: Vec<AlarmInput>,
    /// Cameras.
    #[serde(default)]
    pub camera: Vec<Camera>,
}

impl PlatformConfig {
    /// Every problem, with its path under `at` and what to change.
    pub fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut v = Vec::new();
        if host_port(&self.platform).is_none() {
            v.push(ConfigIssue::new(
                at.key("platform"),
                format!("{:?} is not host:port; write the platform's SIP server, e.g. \"10.20.0.5:5060\"", self.platform),
            ));
        }
        if self.bind.parse::<SocketAddr>().is_err() {
            v.push(ConfigIssue::new(
                at.key("bind"),
                format!("{:?} is not ip:port; e.g. \"0.0.0.0:5060\"", self.bind),
            ));
        }
        match (&self.password, &self.password_file) {
            (None, None) => v.push(ConfigIssue::new(
                at.key("password_file"),
                "the platform's digest password is required: set password_file (first line) or password; there is no default",
            )),
            (Some(_), Some(_)) => v.push(ConfigIssue::new(
                at.key("password"),
                "set password or password_file, not both",
            )),
            (Some(p), None) if p.0.is_empty() => {
                v.push(ConfigIssue::new(at.key("password"), "the password is empty"));
            }
            (None, Some(f)) if !f.is_file() => v.push(ConfigIssue::new(
                at.key("password_file"),
                format!("{} does not exist or is not a file", f.display()),
            )),
            _ => {}
        }
        if let Some(d) = &self.domain
            && (d.is_empty() || d.contains([' ', '@', ':', ';', '<', '>']))
        {
            v.push(ConfigIssue::new(
                at.key("domain"),
                "the SIP domain is 10 digits or a host name",
            ));
        }
        if self.expires.0 < Duration::from_secs(60) || self.expires.0 > Duration::from_secs(86400) {
            v.push(ConfigIssue::new(
                at.key("expires"),
                "between 60s and 24h (3600s is usual)",
            ));
        }
        if self.keepalive.0 < Duration::from_secs(5) || self.keepalive.0 > Duration::from_secs(3600)
        {
            v.push(ConfigIssue::new(
                at.key("keepalive"),
                "between 5s and 1h (60s is usual)",
            ));
        }
        if self.keepalive_misses == 0 || self.keepalive_misses > 10 {
            v.push(ConfigIssue::new(
                at.key("keepalive_misses"),
                "between 1 and 10 (3 is usual)",
            ));
        }
        if self.answer_timeout.0 < Duration::from_millis(500)
            || self.answer_timeout.0 > Duration::from_secs(32)
        {
            v.push(ConfigIssue::new(
                at.key("answer_timeout"),
                "between 500ms and 32s (RFC 3261 timer F); an alarm should not wait longer",
            ));
        }
        if self.utc_offset.parse::<FixedOffset>().is_err() {
            v.push(ConfigIssue::new(
                at.key("utc_offset"),
                "an offset such as \"+08:00\"",
            ));
        }
        let mut seen = std::collections::HashSet::new();
        seen.insert(self.device_id.clone());
        for (i, a) in self.alarm_input.iter().enumerate() {
            let p = at.key("alarm_input").index(i);
            if !seen.insert(a.id.clone()) {
                v.push(ConfigIssue::new(
                    p.key("id"),
                    format!("{} is used twice (or is the gateway's own id)", a.id),
                ));
            }
            if a.device.is_none() && a.location.is_none() {
                v.push(ConfigIssue::new(
                    p.clone(),
                    "name the device or the location whose alarms this input reports",
                ));
            }
            if a.priority.is_some_and(|x| !(1..=4).contains(&x)) {
                v.push(ConfigIssue::new(p.key("priority"), "1 (most urgent) to 4"));
            }
            if a.method.is_some_and(|x| !(1..=7).contains(&x)) {
                v.push(ConfigIssue::new(
                    p.key("method"),
                    "1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other",
                ));
            }
            if a.name.trim().is_empty() {
                v.push(ConfigIssue::new(
                    p.key("name"),
                    "the name shown on the platform",
                ));
            }
        }
        for (i, c) in self.camera.iter().enumerate() {
            let p = at.key("camera").index(i);
            if !seen.insert(c.id.clone()) {
                v.push(ConfigIssue::new(
                    p.key("id"),
                    format!("{} is used twice (or is the gateway's own id)", c.id),
                ));
            }
            if c.name.trim().is_empty() {
                v.push(ConfigIssue::new(
                    p.key("name"),
                    "the name shown on the platform",
                ));
            }
        }
        v
    }

    /// The SIP domain.
    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| self.platform_id.domain().to_owned())
    }

    /// The host of `platform`.
    pub fn platform_host(&self) -> &str {
        host_port(&self.platform).map_or("", |(h, _)| h)
    }

    /// The password (read from `password_file` now).
    ///
    /// # Errors
    /// The file cannot be read or its first line is empty.
    pub fn password(&self) -> Result<String, String> {
        if let Some(p) = &self.password {
            return Ok(p.0.clone());
        }
        let Some(f) = &self.password_file else {
            return Err("no password configured".into());
        };
        let text = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read password_file {}: {e}", f.display()))?;
        let line = text.lines().next().unwrap_or_default().trim().to_owned();
        if line.is_empty() {
            return Err(format!("password_file {} is empty", f.display()));
        }
        Ok(line)
    }

    /// The offset of `AlarmTime` (validated; UTC if it were not).
    pub fn offset(&self) -> FixedOffset {
        use chrono::Offset as _;
        self.utc_offset
            .parse()
            .unwrap_or_else(|_| chrono::Utc.fix())
    }
}

/// `host:port` split, `[v6]:port` accepted.
pub fn host_port(s: &str) -> Option<(&str, u16)> {
    let (h, p) = s.rsplit_once(':')?;
    let port: u16 = p.parse().ok().filter(|p| *p != 0)?;
    let h = h.trim_start_matches('[').trim_end_matches(']');
    (!h.is_empty()).then_some((h, port))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn cfg(extra: &str) -> PlatformConfig {
        toml::from_str(&format!(
            "platform = \"127.0.0.1:5060\"\nplatform_id = \"34020000002000000001\"\ndevice_id = \"34020000001180000001\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn no_password_no_start_and_every_bad_field_is_named() {
        let e = cfg("").validate(&FieldPath::root());
        assert!(
            e.iter().any(|i| i.path.to_string() == "password_file"),
            "{e:?}"
        );
        let e = cfg("password = \"x\"\nexpires = \"10s\"\nutc_offset = \"CST\"\n[[alarm_input]]\nid = \"34020000001180000001\"\nname = \"\"\npriority = 9\n[[camera]]\nid = \"34020000001320000001\"\nname = \"gate\"\n")
            .validate(&FieldPath::root());
        let paths: Vec<String> = e.iter().map(|i| i.path.to_string()).collect();
        for want in [
            "expires",
            "utc_offset",
            "alarm_input[0].id",
            "alarm_input[0]",
            "alarm_input[0].priority",
            "alarm_input[0].name",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing from {paths:?}"
            );
        }
        assert!(
            cfg("password = \"x\"")
                .validate(&FieldPath::root())
                .is_empty()
        );
        assert_eq!(cfg("password = \"x\"").domain(), "3402000000");
        assert!(!format!("{:?}", cfg("password = \"s3cret\"")).contains("s3cret"));
    }
}
