//! The `driver = "onvif"` device table.
//!
//! ```toml
//! clock_skew_limit = "5s"          # a camera clock off by more raises device.clock_skew
//! request_timeout = "10s"          # per SOAP call
//! pull_timeout = "10s"             # PullMessages long-poll
//! subscription_lifetime = "60s"    # InitialTerminationTime; renewed pull_timeout + request_timeout before it ends
//! [snapshots]
//! dir = "/var/lib/campusgw/snapshots"  # default: <data dir>/snapshots
//! max_image_bytes = 2_000_000
//! max_total_bytes = 500_000_000        # oldest deleted first
//! max_age = "7d"
//! timeout = "10s"
//! [[camera]]
//! device = "cam_gate"
//! location = "main/A/1/gate"
//! xaddr = "https://10.1.5.20/onvif/device_service"
//! user = "campusgw"
//! password_file = "/etc/campusgw/secrets/cam_gate"
//! # allow_http = true             # plain http to a non-loopback camera, explicitly
//! ```
//!
//! `https` is verified against the web PKI roots; there is no switch to turn verification off.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, HumanDuration,
    Location,
};
use reqwest::Url;
use serde::Deserialize;

use crate::driver::{Camera, OnvifDriver};

/// The onvif driver's configuration: a set of cameras.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OnvifConfig {
    /// A camera clock further off than this raises `device.clock_skew`.
    #[serde(default = "secs::<5>")]
    pub clock_skew_limit: HumanDuration,
    /// Timeout of one SOAP call.
    #[serde(default = "secs::<10>")]
    pub request_timeout: HumanDuration,
    /// `PullMessages` long-poll time.
    #[serde(default = "secs::<10>")]
    pub pull_timeout: HumanDuration,
    /// Subscription lifetime asked for; renewed `pull_timeout + request_timeout` before it
    /// ends (at the earliest after a quarter of it).
    #[serde(default = "secs::<60>")]
    pub subscription_lifetime: HumanDuration,
    /// Snapshot storage.
    #[serde(default)]
    pub snapshots: SnapshotConfig,
    /// The cameras.
    #[serde(default)]
    pub camera: Vec<CameraEntry>,
}

fn secs<const N: u64>() -> HumanDuration {
    HumanDuration(Duration::from_secs(N))
}

/// `[snapshots]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotConfig {
    /// Where JPEGs are stored; default `<data dir>/snapshots`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Largest accepted image.
    #[serde(default = "default_max_image")]
    pub max_image_bytes: u64,
    /// Total size kept; the oldest files go first.
    #[serde(default = "default_max_total")]
    pub max_total_bytes: u64,
    /// Files older than this are deleted.
    #[serde(default = "default_max_age")]
    pub max_age: HumanDuration,
    /// Timeout of one snapshot fetch.
    #[serde(default = "secs::<10>")]
    pub timeout: HumanDuration,
}

fn default_max_image() -> u64 {
    2_000_000
}
fn default_max_total() -> u64 {
    500_000_000
}
fn default_max_age() -> HumanDuration {
    HumanDuration(Duration::from_secs(7 * 24 * 3600))
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        SnapshotConfig {
            dir: None,
            max_image_bytes: default_max_image(),
            max_total_bytes: default_max_total(),
            max_age: default_max_age(),
            timeout: secs::<10>(),
        }
    }
}

/// One `[[camera]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraEntry {
    /// The sub-device id its events, health and commands use.
    pub device: DeviceId,
    /// Where it looks.
    #[serde(default)]
    pub location: Option<Location>,
    /// Device service URL (`http(s)://host[:port]/onvif/device_service`).
    pub xaddr: String,
    /// ONVIF user; none means unauthenticated calls.
    #[serde(default)]
    pub user: Option<String>,
    /// File holding the password (first line).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Allow plain http to a camera that is not on loopback.
    #[serde(default)]
    pub allow_http: bool,
}

/// Whether `url` may be used for a camera that allows plain http iff `allow_http`.
pub(crate) fn transport_allowed(url: &Url, allow_http: bool) -> Result<(), String> {
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http || is_loopback(url) => Ok(()),
        "http" => Err(format!(
            "{url} is plain http to a non-loopback host; use https or set allow_http = true"
        )),
        other => Err(format!("scheme {other:?} is not http or https")),
    }
}

fn is_loopback(url: &Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

impl CameraEntry {
    fn validate(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        match Url::parse(&self.xaddr) {
            Err(e) => issues.push(ConfigIssue::new(
                at.key("xaddr"),
                format!("{:?} is not a URL ({e})", self.xaddr),
            )),
            Ok(u) => {
                if let Err(m) = transport_allowed(&u, self.allow_http) {
                    issues.push(ConfigIssue::new(at.key("xaddr"), m));
                }
                if u.host().is_none() {
                    issues.push(ConfigIssue::new(at.key("xaddr"), "the URL has no host"));
                }
            }
        }
        if self.user.is_some() != self.password_file.is_some() {
            issues.push(ConfigIssue::new(
                at.key("password_file"),
                "user and password_file go together: set both or neither",
            ));
        }
    }
}

impl DriverConfig for OnvifConfig {
    const KIND: &'static str = "onvif";
    type Driver = OnvifDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.camera.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("camera"),
                "no [[camera]] configured",
            ));
        }
        let mut seen = HashSet::new();
        for (i, c) in self.camera.iter().enumerate() {
            let p = at.key("camera").index(i);
            if !seen.insert(c.device.as_str()) {
                issues.push(ConfigIssue::new(
                    p.key("device"),
                    format!("camera {:?} is configured twice", c.device.as_str()),
                ));
            }
            c.validate(&p, &mut issues);
        }
        let pull = self.pull_timeout.0;
        if pull.is_zero() || pull > Duration::from_secs(60) {
            issues.push(ConfigIssue::new(
                at.key("pull_timeout"),
                "must be between 1s and 60s",
            ));
        }
        if self.subscription_lifetime.0 < pull.saturating_mul(2) {
            issues.push(ConfigIssue::new(
                at.key("subscription_lifetime"),
                "must be at least twice pull_timeout (a long-poll must fit well within it)",
            ));
        }
        if self.request_timeout.0.is_zero() || self.snapshots.timeout.0.is_zero() {
            issues.push(ConfigIssue::new(
                at.key("request_timeout"),
                "timeouts must not be zero",
            ));
        }
        if self.snapshots.max_image_bytes > self.snapshots.max_total_bytes {
            issues.push(ConfigIssue::new(
                at.key("snapshots").key("max_image_bytes"),
                "is larger than max_total_bytes",
            ));
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<OnvifDriver, BuildError> {
        let mut cameras = Vec::new();
        for c in &self.camera {
            let password = match &c.password_file {
                Some(p) => Some(read_password(p)?),
                None => None,
            };
            let xaddr = Url::parse(&c.xaddr).map_err(|e| BuildError::Invalid(e.to_string()))?;
            cameras.push(Camera {
                device: c.device.clone(),
                location: c.location.clone(),
                xaddr,
                user: c.user.clone(),
                password,
                allow_http: c.allow_http,
            });
        }
        let dir = self.snapshot_dir(&cx.data_dir);
        std::fs::create_dir_all(&dir).map_err(|source| BuildError::Io {
            what: format!("snapshot directory {}", dir.display()),
            source,
        })?;
        OnvifDriver::new(self.clone(), cameras, dir)
    }

    fn media_dir(&self, data_dir: &std::path::Path) -> Option<PathBuf> {
        Some(self.snapshot_dir(data_dir))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.camera
            .iter()
            .map(|c| (c.device.clone(), c.location.clone()))
            .collect()
    }
}

impl OnvifConfig {
    /// Where snapshots go: `[snapshots] dir`, else `<data dir>/snapshots`.
    pub fn snapshot_dir(&self, data_dir: &std::path::Path) -> PathBuf {
        self.snapshots
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("snapshots"))
    }
}

fn read_password(p: &std::path::Path) -> Result<String, BuildError> {
    let s = std::fs::read_to_string(p).map_err(|source| BuildError::Io {
        what: format!("password file {}", p.display()),
        source,
    })?;
    Ok(s.lines().next().unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> OnvifConfig {
        toml::from_str(s).expect("config parses")
    }

    #[test]
    fn plain_http_is_refused_off_loopback_unless_opted_in() {
        let c = parse(
            r#"
            [[camera]]
            device = "a"
            xaddr = "http://10.0.0.5/onvif/device_service"
            [[camera]]
            device = "b"
            xaddr = "http://127.0.0.1:8080/onvif/device_service"
            [[camera]]
            device = "c"
            xaddr = "http://10.0.0.6/onvif/device_service"
            allow_http = true
            "#,
        );
        let issues = c.validate(&FieldPath::root());
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path.to_string(), "camera[0].xaddr");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = parse(
            r#"
            pull_timeout = "0s"
            [[camera]]
            device = "a"
            xaddr = "ftp://x"
            user = "u"
            [[camera]]
            device = "a"
            xaddr = "https://cam/onvif/device_service"
            "#,
        );
        let paths: Vec<String> = c
            .validate(&FieldPath::root())
            .iter()
            .map(|i| i.path.to_string())
            .collect();
        for p in [
            "camera[0].xaddr",
            "camera[0].password_file",
            "camera[1].device",
            "pull_timeout",
        ] {
            assert!(paths.iter().any(|x| x == p), "{p} in {paths:?}");
        }
    }
}
