//! The `driver = "hikvision_isapi"` device table: one access controller and its doors.
//!
//! ```toml
//! [[device]]
//! id = "acs_main_gate"
//! driver = "hikvision_isapi"
//! location = "main/gate"
//! host = "https://10.0.3.20"          # http:// only for loopback or with allow_http = true
//! user = "campusgw"
//! password_file = "/etc/campusgw/secrets/acs_main_gate"   # first line is the password
//! # allow_http = false
//! # ca_file = "/etc/campusgw/acs-ca.pem"   # the controller's own CA (self-signed devices)
//! # request_timeout = "5s"           # per door command / clock read
//! # heartbeat_timeout = "60s"        # a stream silent this long is reconnected
//! # max_part_bytes = 65536           # larger alertStream parts are refused (pictures!)
//! # max_clock_skew = "30s"           # device.clock_skew above this
//! # clock_check_interval = "1h"
//! [[device.doors]]
//! n = 1
//! device = "door_main_gate"
//! location = { campus = "main", building = "gate", point = "gate-1" }
//! escape_route = true                # default: true (fire egress wins over lockdown)
//! boundary = "campus"                # or "building:A": passages update presence
//! # direction = "in"                 # one-way gate; default: reader parity / attendanceStatus
//! ```
//!
//! TLS is always verified (webpki roots, or `ca_file`); there is no switch to turn that off.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use campusgw_sdk::config::HumanDuration;
use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, Location,
};
use serde::Deserialize;

use crate::alert::DoorPlace;
use crate::driver::{HikvisionDriver, Settings};

/// The driver kind.
pub const KIND: &str = "hikvision_isapi";

/// ISAPI's "all doors" door number (`RemoteControl/door/65535`).
pub const ALL_DOORS: u32 = 65535;

/// One controller.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HikvisionConfig {
    /// `https://host[:port]` (or `http://` where allowed).
    pub host: String,
    /// The ISAPI user.
    pub user: String,
    /// A file whose first line is the password.
    pub password_file: PathBuf,
    /// Allow `http://` to a non-loopback host (the school LAN is not trusted: off by default).
    #[serde(default)]
    pub allow_http: bool,
    /// Extra CA certificates (PEM) for controllers with their own CA.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Per request (door command, clock read).
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// A stream without a valid part for this long is reconnected.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: HumanDuration,
    /// Largest alertStream part accepted.
    #[serde(default = "default_max_part")]
    pub max_part_bytes: usize,
    /// A device clock off by more than this raises `device.clock_skew`.
    #[serde(default = "default_skew")]
    pub max_clock_skew: HumanDuration,
    /// How often the clock is read.
    #[serde(default = "default_clock_interval")]
    pub clock_check_interval: HumanDuration,
    /// The controller's doors.
    #[serde(default)]
    pub doors: Vec<DoorEntry>,
}

/// One `[[device.doors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorEntry {
    /// The door number on the controller (1-based).
    pub n: u32,
    /// Its device id (commands address it; its events carry it).
    pub device: DeviceId,
    /// Its location.
    #[serde(default)]
    pub location: Option<Location>,
    /// On an escape route: a lockdown never locks it while fire egress is active.
    #[serde(default = "default_true")]
    pub escape_route: bool,
    /// `campus` or `building:<name>`: passages here update presence (the muster list).
    #[serde(default)]
    pub boundary: Option<String>,
    /// `in` or `out` for a one-way boundary (default: from the reader / attendance status).
    #[serde(default)]
    pub direction: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_heartbeat_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}
fn default_max_part() -> usize {
    64 * 1024
}
fn default_skew() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_clock_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(3600))
}

/// Whether `host` may be spoken to over plain http: loopback only, unless opted in.
fn http_allowed(host: &str, opt_in: bool) -> bool {
    if opt_in {
        return true;
    }
    let rest = host.trim_start_matches("http://");
    let name = rest.split(['/', ':']).next().unwrap_or("");
    let name = if rest.starts_with('[') {
        rest.trim_start_matches('[').split(']').next().unwrap_or("")
    } else {
        name
    };
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl HikvisionConfig {
    fn check_host(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        let h = self.host.as_str();
        if let Some(rest) = h.strip_prefix("http://") {
            if !http_allowed(h, self.allow_http) {
                issues.push(ConfigIssue::new(
                    at.key("host"),
                    format!(
                        "plain http to {rest:?} sends the password digest and door commands \
                         unencrypted; use https:// or set allow_http = true"
                    ),
                ));
            }
        } else if !h.starts_with("https://") {
            issues.push(ConfigIssue::new(
                at.key("host"),
                format!("{h:?} must start with https:// (or http:// for loopback)"),
            ));
        }
    }

    fn check_doors(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        let mut numbers = HashSet::new();
        let mut ids = HashSet::new();
        for (i, d) in self.doors.iter().enumerate() {
            let at = at.key("doors").index(i);
            if d.n == 0 || d.n >= ALL_DOORS {
                issues.push(ConfigIssue::new(
                    at.key("n"),
                    format!("door number {} is out of range (1-65534)", d.n),
                ));
            }
            if !numbers.insert(d.n) {
                issues.push(ConfigIssue::new(
                    at.key("n"),
                    format!("door {} is listed twice", d.n),
                ));
            }
            if !ids.insert(d.device.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("device"),
                    format!("device {:?} is listed twice", d.device.as_str()),
                ));
            }
            if let Some(b) = &d.boundary
                && !valid_boundary(b)
            {
                issues.push(ConfigIssue::new(
                    at.key("boundary"),
                    format!(
                        "boundary {b:?} is not \"campus\" or \"building:<name>\" (e.g. \"building:A\")"
                    ),
                ));
            }
            if let Some(dir) = &d.direction
                && dir != "in"
                && dir != "out"
            {
                issues.push(ConfigIssue::new(
                    at.key("direction"),
                    format!("direction {dir:?} must be \"in\" or \"out\""),
                ));
            }
        }
    }

    /// The doors with their locations (the controller's own location when a door has none).
    pub fn door_places(&self, controller: &Location) -> Vec<DoorPlace> {
        self.doors
            .iter()
            .map(|d| DoorPlace {
                n: d.n,
                device: d.device.clone(),
                location: d.location.clone().unwrap_or_else(|| controller.clone()),
                boundary: d.boundary.clone(),
                direction: d.direction.clone(),
            })
            .collect()
    }
}

/// `campus` or `building:<name>` (the same rule as the zkteco driver's).
fn valid_boundary(b: &str) -> bool {
    match b.split_once(':') {
        None => b == "campus",
        Some((level, name)) => {
            level == "building" && !name.is_empty() && !name.contains(['/', ':'])
        }
    }
}

/// The gateway's rule for secret files (`campusgw::secrets`), restated here because a driver
/// crate cannot depend on the gateway: others may not read it, the group may not write it.
#[cfg(unix)]
fn check_private(path: &PathBuf) -> Result<(), BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)
        .map_err(|source| BuildError::Io {
            what: format!("password_file {}", path.display()),
            source,
        })?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o027 == 0 {
        return Ok(());
    }
    Err(BuildError::Invalid(format!(
        "password_file {} has mode {mode:04o} (others can read it or its group can write it); \
         run `chmod {:04o} {}`",
        path.display(),
        mode & 0o740,
        path.display()
    )))
}

#[cfg(not(unix))]
fn check_private(_path: &PathBuf) -> Result<(), BuildError> {
    Ok(())
}

fn read_password(path: &PathBuf) -> Result<String, BuildError> {
    check_private(path)?;
    let text = std::fs::read_to_string(path).map_err(|source| BuildError::Io {
        what: format!("password_file {}", path.display()),
        source,
    })?;
    let line = text.lines().next().unwrap_or("").trim_end().to_owned();
    if line.is_empty() {
        return Err(BuildError::Invalid(format!(
            "password_file {} is empty",
            path.display()
        )));
    }
    Ok(line)
}

impl DriverConfig for HikvisionConfig {
    const KIND: &'static str = KIND;
    type Driver = HikvisionDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        self.check_host(at, &mut issues);
        self.check_doors(at, &mut issues);
        if self.user.is_empty() {
            issues.push(ConfigIssue::new(at.key("user"), "user is empty"));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_part_bytes) {
            issues.push(ConfigIssue::new(
                at.key("max_part_bytes"),
                format!("{} is out of range (1024-16777216)", self.max_part_bytes),
            ));
        }
        if self.request_timeout.0.is_zero() || self.heartbeat_timeout.0.is_zero() {
            issues.push(ConfigIssue::new(
                at.key("request_timeout"),
                "timeouts must be above zero",
            ));
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<HikvisionDriver, BuildError> {
        let password = read_password(&self.password_file)?;
        let ca = match &self.ca_file {
            Some(p) => Some(std::fs::read(p).map_err(|source| BuildError::Io {
                what: format!("ca_file {}", p.display()),
                source,
            })?),
            None => None,
        };
        let settings = Settings {
            base: self.host.trim_end_matches('/').to_owned(),
            user: self.user.clone(),
            password,
            ca_pem: ca,
            request_timeout: self.request_timeout.0,
            heartbeat_timeout: self.heartbeat_timeout.0,
            max_part: self.max_part_bytes,
            max_skew: self.max_clock_skew.0,
            clock_interval: self.clock_check_interval.0,
            doors: self.door_places(&cx.location),
        };
        HikvisionDriver::new(settings)
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.doors
            .iter()
            .map(|d| (d.device.clone(), d.location.clone()))
            .collect()
    }

    fn escape_routes(&self) -> Vec<DeviceId> {
        self.doors
            .iter()
            .filter(|d| d.escape_route)
            .map(|d| d.device.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> HikvisionConfig {
        toml::from_str(&format!(
            r#"user = "u"
            password_file = "/p"
            {extra}
            [[doors]]
            n = 1
            device = "d1"
            [[doors]]
            n = 2
            device = "d2"
            escape_route = false
            "#
        ))
        .expect("parses")
    }

    fn problems(c: &HikvisionConfig) -> Vec<String> {
        c.validate(&FieldPath::root())
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn plain_http_is_refused_unless_loopback_or_opted_in() {
        assert!(problems(&parse(r#"host = "https://10.0.0.5""#)).is_empty());
        assert!(problems(&parse(r#"host = "http://127.0.0.1:8080""#)).is_empty());
        assert!(problems(&parse(r#"host = "http://[::1]:8080""#)).is_empty());
        let p = problems(&parse(r#"host = "http://10.0.0.5""#));
        assert!(p[0].contains("allow_http"), "{p:?}");
        assert!(problems(&parse("host = \"http://10.0.0.5\"\nallow_http = true")).is_empty());
        assert!(!problems(&parse(r#"host = "ftp://x""#)).is_empty());
    }

    #[test]
    fn escape_route_defaults_to_true_per_door() {
        let c = parse(r#"host = "https://a""#);
        assert_eq!(c.escape_routes(), vec![DeviceId::new("d1").unwrap()]);
        assert_eq!(c.sub_devices().len(), 2);
    }

    #[test]
    fn duplicate_and_out_of_range_doors_are_reported() {
        let mut c = parse(r#"host = "https://a""#);
        c.doors[1].n = 1;
        c.doors.push(DoorEntry {
            n: 65535,
            device: DeviceId::new("d1").unwrap(),
            location: None,
            escape_route: true,
            boundary: Some("floor:1".into()),
            direction: None,
        });
        let p = problems(&c);
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
