//! The typed configuration and per-section checks.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::config::suggest;
use campusgw_sdk::{ConfigIssue, DeviceId, FieldPath, Location};
use serde::Deserialize;

use super::units::{ByteSize, HumanDuration};
use super::{DEVICE_COMMON_KEYS, typed_value};
use crate::journal::RetentionPolicy;
use crate::registry::{self, DriverFactory};

/// A validated configuration.
pub struct Config {
    /// `[gateway]`.
    pub gateway: GatewaySection,
    /// `[console]`.
    pub console: ConsoleSection,
    /// The location tree.
    pub campuses: Vec<CampusDef>,
    /// `[[device]]` entries, validated by their drivers.
    pub devices: Vec<DeviceConfig>,
    /// `[[uplink]]` entries.
    pub uplinks: Vec<UplinkConfig>,
    /// `[rules]`, if the gateway runs rules.
    pub rules: Option<crate::rules::config::RulesSection>,
    /// `[access]`: presence and the muster list.
    pub access: Option<AccessSection>,
    /// The file it was read from ([`super::load`]); `None` when parsed from text. The
    /// console's bulk import writes to it.
    pub source: Option<std::path::PathBuf>,
}

/// `[access]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    /// The roster CSV (`person_id,name,role`): the only source of names on the muster list
    /// (`crate::presence`). Read at start; a bad line stops the start with its line number.
    #[serde(default)]
    pub roster: Option<std::path::PathBuf>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// Unique per gateway: event source, MQTT client id, topics.
    pub id: String,
    /// Display name (the school).
    pub name: String,
    /// Where the journal and state live.
    pub data_dir: PathBuf,
    /// Journal retention and quota.
    #[serde(default)]
    pub journal: JournalSection,
}

/// `[gateway.journal]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JournalSection {
    /// Delivered events older than this are deleted (default 30 days).
    #[serde(default = "default_retention")]
    pub retention: HumanDuration,
    /// Event data quota (default 2 GiB); see `journal::retention`.
    #[serde(default = "default_quota")]
    pub quota: ByteSize,
    /// How long a repeat of a device message is recognised as a retransmission (default
    /// 10 minutes; ADR 0003).
    #[serde(default = "default_dedup_window")]
    pub dedup_window: HumanDuration,
    /// Delivered `access.granted` / `access.denied` events (they name a person) older than
    /// this are deleted even when `retention` is longer (default: `retention`).
    #[serde(default)]
    pub access_retention: Option<HumanDuration>,
}

fn default_dedup_window() -> HumanDuration {
    HumanDuration(crate::journal::DEFAULT_DEDUP_WINDOW)
}

fn default_retention() -> HumanDuration {
    HumanDuration(RetentionPolicy::default().max_age)
}

fn default_quota() -> ByteSize {
    ByteSize(RetentionPolicy::default().quota_bytes)
}

impl Default for JournalSection {
    fn default() -> Self {
        JournalSection {
            retention: default_retention(),
            quota: default_quota(),
            dedup_window: default_dedup_window(),
            access_retention: None,
        }
    }
}

impl JournalSection {
    /// As the journal's policy.
    pub fn policy(&self) -> RetentionPolicy {
        RetentionPolicy {
            max_age: self.retention.0,
            quota_bytes: self.quota.0,
        }
    }
}

/// `[console]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleSection {
    /// Address of the HTTP API and console. Plain HTTP only on a loopback address; any
    /// other needs `tls_cert_file` and `tls_key_file`.
    pub listen: SocketAddr,
    /// Connections served at once; one more is accepted and closed at once (counted).
    #[serde(default = "default_console_max_connections")]
    pub max_connections: usize,
    /// A request whose headers have not arrived within this is closed (slowloris).
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// A connection with no traffic for this long is closed.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: HumanDuration,
    /// PEM certificate chain (leaf first) for HTTPS.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// Without certificate files: generate a self-signed certificate at first start and
    /// keep it in `data_dir/console-tls/` (browsers ask to trust it once).
    #[serde(default)]
    pub tls_self_signed: bool,
}

/// Default of `[console] max_connections`.
pub const DEFAULT_CONSOLE_MAX_CONNECTIONS: usize = 256;

fn default_console_max_connections() -> usize {
    DEFAULT_CONSOLE_MAX_CONNECTIONS
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_idle_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

impl ConsoleSection {
    /// Problems of this section (paths under `console`).
    pub(super) fn check(&self, issues: &mut Vec<ConfigIssue>) {
        let at = FieldPath::root().key("console");
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), Some(_)) => true,
            (None, None) => false,
            (Some(_), None) => {
                issues.push(ConfigIssue::new(
                    at.key("tls_cert_file"),
                    "tls_cert_file needs tls_key_file (the PEM private key) too",
                ));
                true
            }
            (None, Some(_)) => {
                issues.push(ConfigIssue::new(
                    at.key("tls_key_file"),
                    "tls_key_file needs tls_cert_file (the PEM certificate chain) too",
                ));
                true
            }
        };
        if !tls && !self.tls_self_signed && !self.listen.ip().is_loopback() {
            issues.push(ConfigIssue::new(
                at.key("listen"),
                format!(
                    "{} is not a loopback address and the console has no TLS: anyone on the LAN could read and change it; set tls_cert_file and tls_key_file (or tls_self_signed = true), or listen on 127.0.0.1:{}",
                    self.listen,
                    self.listen.port()
                ),
            ));
        }
        if self.max_connections == 0 {
            issues.push(ConfigIssue::new(
                at.key("max_connections"),
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("header_timeout", self.header_timeout.0),
            ("idle_timeout", self.idle_timeout.0),
        ] {
            if d.is_zero() {
                issues.push(ConfigIssue::new(at.key(key), "must be more than 0s"));
            }
        }
    }
}

/// `[[campus]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampusDef {
    /// Id used in location paths.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Buildings.
    #[serde(default)]
    pub building: Vec<BuildingDef>,
}

/// `[[campus.building]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildingDef {
    /// Id used in location paths.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Floors.
    #[serde(default)]
    pub floor: Vec<FloorDef>,
}

/// `[[campus.building.floor]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloorDef {
    /// Id used in location paths.
    pub id: String,
    /// Display name.
    #[serde(default)]
    pub name: Option<String>,
    /// Zone ids on this floor.
    #[serde(default)]
    pub zones: Vec<String>,
}

/// A `[[device]]` entry.
#[derive(Clone)]
pub struct DeviceConfig {
    /// Its id.
    pub id: DeviceId,
    /// Its driver kind.
    pub driver: &'static str,
    /// Where it is.
    pub location: Location,
    /// Silence after which it is reported offline.
    pub offline_after: Option<Duration>,
    /// The validated driver config, ready to build.
    pub factory: Arc<dyn DriverFactory>,
    /// Connections its listener may hold at once (0: it has no listener); part of the
    /// descriptor budget (`crate::fds`).
    pub inbound_connections: usize,
}

/// An `[[uplink]]` entry, validated by `crate::uplink::config`.
#[derive(Clone)]
pub struct UplinkConfig {
    /// Unique name, the cursor key.
    pub name: String,
    /// Its kind.
    pub kind: &'static str,
    /// The classes and kinds it forwards.
    pub filter: crate::uplink::Filter,
    /// The settings of its kind.
    pub settings: crate::uplink::UplinkSettings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceCommon {
    id: DeviceId,
    driver: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    offline_after: Option<HumanDuration>,
}

/// Validates one `[[device]]` table: the common keys here, the rest by its driver.
pub(super) fn device(
    mut t: toml::Table,
    at: &FieldPath,
    campuses: &[CampusDef],
    issues: &mut Vec<ConfigIssue>,
) -> Option<DeviceConfig> {
    let mut common = toml::Table::new();
    for k in DEVICE_COMMON_KEYS {
        if let Some(v) = t.remove(k) {
            common.insert(k.to_owned(), v);
        }
    }
    let common: DeviceCommon = typed_value(toml::Value::Table(common), at, issues)?;
    let location = match &common.location {
        Some(p) => resolve_location(p, campuses, &at.key("location"), issues)?,
        None => Location::default(),
    };
    // The driver validates `max_connections`; here it only sizes the descriptor budget.
    let inbound_connections = match common.driver.as_str() {
        "gb26875" => t
            .get("max_connections")
            .and_then(toml::Value::as_integer)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(campusgw_gb26875::DEFAULT_MAX_CONNECTIONS),
        "zkteco_push" => t
            .get("max_connections")
            .and_then(toml::Value::as_integer)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(campusgw_zkteco::DEFAULT_MAX_CONNECTIONS),
        _ => 0,
    };
    let factory = registry::parse_driver(&common.driver, toml::Value::Table(t), at, issues)?;
    Some(DeviceConfig {
        id: common.id,
        driver: factory.kind(),
        location,
        offline_after: common.offline_after.map(|d| d.0),
        factory,
        inbound_connections,
    })
}

/// Resolves `campus/building/floor/zone[/point]` against the tree.
pub(super) fn resolve_location(
    path: &str,
    campuses: &[CampusDef],
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<Location> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut loc = Location::default();
    let fail = |issues: &mut Vec<ConfigIssue>, level: &str, name: &str, known: Vec<&str>| {
        let hint = suggest(name, known.iter().copied())
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        issues.push(ConfigIssue::new(
            at.clone(),
            format!(
                "location \"{path}\": unknown {level} \"{name}\"{hint}; known: {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        ));
        None
    };
    if parts.is_empty() || parts.len() > 5 || parts.iter().any(|p| p.is_empty()) {
        issues.push(ConfigIssue::new(
            at.clone(),
            format!("location \"{path}\" must read campus/building/floor/zone[/point]"),
        ));
        return None;
    }
    let Some(c) = campuses.iter().find(|c| c.id == parts[0]) else {
        return fail(
            issues,
            "campus",
            parts[0],
            campuses.iter().map(|c| c.id.as_str()).collect(),
        );
    };
    loc.campus = Some(c.id.clone());
    let Some(bname) = parts.get(1) else {
        return Some(loc);
    };
    let Some(b) = c.building.iter().find(|b| b.id == *bname) else {
        return fail(
            issues,
            "building",
            bname,
            c.building.iter().map(|b| b.id.as_str()).collect(),
        );
    };
    loc.building = Some(b.id.clone());
    let Some(fname) = parts.get(2) else {
        return Some(loc);
    };
    let Some(f) = b.floor.iter().find(|f| f.id == *fname) else {
        return fail(
            issues,
            "floor",
            fname,
            b.floor.iter().map(|f| f.id.as_str()).collect(),
        );
    };
    loc.floor = Some(f.id.clone());
    let Some(zname) = parts.get(3) else {
        return Some(loc);
    };
    if !f.zones.iter().any(|z| z == zname) {
        return fail(
            issues,
            "zone",
            zname,
            f.zones.iter().map(String::as_str).collect(),
        );
    }
    loc.zone = Some((*zname).to_owned());
    loc.point = parts.get(4).map(|p| (*p).to_owned());
    Some(loc)
}

/// Checks a location a driver declared (e.g. a sub-device's) against the tree: it must
/// name its levels from the campus down, each existing.
pub(super) fn check_location(
    loc: &Location,
    campuses: &[CampusDef],
    at: &FieldPath,
    whose: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let levels = loc.levels();
    let contiguous = levels
        .iter()
        .skip_while(|l| l.is_some())
        .all(Option::is_none);
    if levels[0].is_none() || !contiguous {
        issues.push(ConfigIssue::new(
            at.clone(),
            format!("{whose}: location \"{loc}\" must name every level from the campus down, e.g. \"main/A/1/east\""),
        ));
        return;
    }
    let mut found = Vec::new();
    if resolve_location(&loc.to_string(), campuses, at, &mut found).is_none() {
        for f in found {
            issues.push(ConfigIssue::new(f.path, format!("{whose}: {}", f.message)));
        }
    }
}

/// Ids unique at each level of the tree.
pub(super) fn check_tree(campuses: &[CampusDef], issues: &mut Vec<ConfigIssue>) {
    let at = FieldPath::root().key("campus");
    dupes(
        campuses.iter().map(|c| c.id.as_str()),
        &at,
        "campus",
        issues,
    );
    for (ci, c) in campuses.iter().enumerate() {
        let at = at.index(ci).key("building");
        dupes(
            c.building.iter().map(|b| b.id.as_str()),
            &at,
            "building",
            issues,
        );
        for (bi, b) in c.building.iter().enumerate() {
            let at = at.index(bi).key("floor");
            dupes(b.floor.iter().map(|f| f.id.as_str()), &at, "floor", issues);
            for (fi, f) in b.floor.iter().enumerate() {
                dupes(
                    f.zones.iter().map(String::as_str),
                    &at.index(fi).key("zones"),
                    "zone",
                    issues,
                );
            }
        }
    }
}

fn dupes<'a>(
    ids: impl Iterator<Item = &'a str>,
    at: &FieldPath,
    what: &str,
    issues: &mut Vec<ConfigIssue>,
) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if id.is_empty() || id.contains('/') {
            issues.push(ConfigIssue::new(
                at.index(i),
                format!("{what} id \"{id}\" must be non-empty and without '/'"),
            ));
        }
        if !seen.insert(id) {
            issues.push(ConfigIssue::new(
                at.index(i),
                format!("{what} id \"{id}\" is used twice"),
            ));
        }
    }
}
