//! The one TOML configuration file: parsing, validation, and error reporting with lines.
//!
//! ```toml
//! [gateway]
//! id = "school-042"            # also the MQTT client id and event source for gateway events
//! name = "第一中学"
//! data_dir = "/var/lib/campusgw"
//! [gateway.journal]
//! retention = "30d"
//! quota = "2GiB"
//! dedup_window = "10m"         # a repeat of a device message within this is a retransmission
//! access_retention = "7d"      # optional: access events (person ids) kept for less
//!
//! [[campus]]                    # the location tree
//! id = "main"
//! [[campus.building]]
//! id = "A"
//! [[campus.building.floor]]
//! id = "1"
//! zones = ["east", "west"]
//!
//! [[device]]                    # common keys; every other key belongs to the driver
//! id = "fire_panel_a"
//! driver = "modbus_tcp"
//! location = "main/A/1/east"    # campus/building/floor/zone[/point], checked against the tree
//! offline_after = "30s"         # optional silence timeout
//! address = "192.0.2.10:502"
//!
//! [access]
//! roster = "/etc/campusgw/roster.csv"   # person_id,name,role: names for the muster list
//!
//! [console]
//! listen = "0.0.0.0:8443"       # not loopback: needs the TLS files below
//! tls_cert_file = "/etc/campusgw/console.crt"   # PEM chain, leaf first
//! tls_key_file = "/etc/campusgw/console.key"    # PEM private key
//! max_connections = 256         # more are accepted and closed at once
//! header_timeout = "10s"        # request headers must arrive within this
//! idle_timeout = "30s"          # a connection without traffic is closed
//! ```
//!
//! Validation is gathered: every problem is reported at once with its field path and the
//! line it is on, and a "did you mean" where a near name exists. `campusgw check-config`
//! runs exactly this code.

mod locate;
mod model;
mod split;
mod units;

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use campusgw_sdk::config::suggest;
use campusgw_sdk::{ConfigIssue, FieldPath};
use serde::de::DeserializeOwned;

pub use model::DEFAULT_CONSOLE_MAX_CONNECTIONS;
pub use model::{
    AccessSection, BuildingDef, CampusDef, Config, ConsoleSection, DeviceConfig, FloorDef,
    GatewaySection, JournalSection, UplinkConfig,
};
pub use units::{ByteSize, HumanDuration};

use crate::registry;

/// Keys of a `[[device]]` table that the gateway reads; the rest go to the driver.
pub const DEVICE_COMMON_KEYS: [&str; 4] = ["id", "driver", "location", "offline_after"];

const TOP_LEVEL_KEYS: [&str; 7] = [
    "gateway", "campus", "device", "console", "uplink", "rules", "access",
];

/// A refused configuration: every problem, located.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub path: PathBuf,
    /// Problems with their 1-based line (0 when unknown).
    pub problems: Vec<(usize, ConfigIssue)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        writeln!(
            f,
            "{} has {n} problem{}",
            self.path.display(),
            if n == 1 { "" } else { "s" }
        )?;
        for (line, issue) in &self.problems {
            let place = if issue.path == FieldPath::root() {
                "file".to_owned()
            } else {
                issue.path.to_string()
            };
            if *line > 0 {
                writeln!(f, "  {place} (line {line}): {}", issue.message)?;
            } else {
                writeln!(f, "  {place}: {}", issue.message)?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates a config file.
///
/// # Errors
/// [`ConfigError`] listing every problem, or the read error as its single problem.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        problems: vec![(
            0,
            ConfigIssue::new(FieldPath::root(), format!("cannot read the file: {e}")),
        )],
    })?;
    let mut config = parse(&text, path)?;
    config.source = Some(path.to_owned());
    Ok(config)
}

/// Validates config text; `path` is used for messages and to resolve a relative data_dir.
///
/// # Errors
/// [`ConfigError`] listing every problem.
pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
    let located = |issues: Vec<ConfigIssue>| ConfigError {
        path: path.to_owned(),
        problems: issues
            .into_iter()
            .map(|i| (locate::line_of(text, &i.path), i))
            .collect(),
    };
    // Fast path: one device table at a time (see `split`); anything it cannot vouch for,
    // including any TOML error, is parsed whole so the messages stay those of the document.
    if let Some(pieces) = split::split(text)
        && let Ok(root) = toml::from_str::<toml::Table>(&pieces.rest)
        && !root.contains_key("device")
    {
        let mut issues = Vec::new();
        let devices = Devices::Pieces(text, &pieces.devices);
        if let Ok(cfg) = build(root, devices, &mut issues) {
            return match cfg {
                Some(c) if issues.is_empty() => Ok(c),
                _ => Err(located(issues)),
            };
        }
    }
    let root: toml::Table = match toml::from_str(text) {
        Ok(t) => t,
        Err(e) => {
            let line = e.span().map_or(0, |s| locate::line_at(text, s.start));
            return Err(ConfigError {
                path: path.to_owned(),
                problems: vec![(
                    line,
                    ConfigIssue::new(
                        FieldPath::root(),
                        format!("not valid TOML: {}", e.message()),
                    ),
                )],
            });
        }
    };
    let mut issues = Vec::new();
    let mut root = root;
    let devices = Devices::Value(root.remove("device"));
    match build(root, devices, &mut issues) {
        Ok(Some(c)) if issues.is_empty() => Ok(c),
        _ => Err(located(issues)),
    }
}

/// Where the `[[device]]` tables come from.
enum Devices<'a> {
    /// The whole document's `device` value.
    Value(Option<toml::Value>),
    /// Each device's own piece of the document (`split`), parsed one at a time.
    Pieces(&'a str, &'a [std::ops::Range<usize>]),
}

/// A device piece that does not parse on its own: parse the document whole instead.
struct WholeDocument;

fn build(
    mut root: toml::Table,
    device_tables: Devices<'_>,
    issues: &mut Vec<ConfigIssue>,
) -> Result<Option<Config>, WholeDocument> {
    let top = FieldPath::root();
    for key in root.keys() {
        if !TOP_LEVEL_KEYS.contains(&key.as_str()) {
            issues.push(unknown_key(&top.key(key), key, &TOP_LEVEL_KEYS));
        }
    }
    let gateway: Option<GatewaySection> = section(&mut root, "gateway", true, issues);
    let console: Option<ConsoleSection> = section(&mut root, "console", true, issues);
    if let Some(c) = &console {
        c.check(issues);
    }
    let campuses: Vec<CampusDef> = section(&mut root, "campus", false, issues).unwrap_or_default();
    model::check_tree(&campuses, issues);
    let devices = devices(device_tables, &campuses, issues)?;
    let uplinks = uplinks(root.remove("uplink"), issues);
    let rules: Option<crate::rules::config::RulesSection> =
        section(&mut root, "rules", false, issues);
    if let Some(r) = &rules {
        r.check(issues);
    }
    let access: Option<AccessSection> = section(&mut root, "access", false, issues);
    if let Some(g) = &gateway
        && let Err(m) = campusgw_sdk::DeviceId::new(g.id.clone())
    {
        issues.push(ConfigIssue::new(top.key("gateway").key("id"), m));
    }
    if let Some(g) = &gateway {
        let w = g.journal.dedup_window.0;
        if w < MIN_DEDUP_WINDOW || w > MAX_DEDUP_WINDOW {
            issues.push(ConfigIssue::new(
                top.key("gateway").key("journal").key("dedup_window"),
                "must be between 1s and 24h (default 10m): shorter takes device retransmissions for new alarms, longer can merge a repeated alarm from a device without a clock",
            ));
        }
    }
    if let Some(g) = &gateway
        && let Some(a) = g.journal.access_retention
        && (a.0 < std::time::Duration::from_secs(3600) || a.0 > g.journal.retention.0)
    {
        issues.push(ConfigIssue::new(
            top.key("gateway").key("journal").key("access_retention"),
            "must be between 1h and retention: shorter loses the day's muster list (presence is folded from access events), longer is cut by retention anyway",
        ));
    }
    let (Some(gateway), Some(console)) = (gateway, console) else {
        return Ok(None);
    };
    Ok(Some(Config {
        gateway,
        console,
        campuses,
        devices,
        uplinks,
        rules,
        access,
        source: None,
    }))
}

/// Bounds of `[gateway.journal] dedup_window` (ADR 0003).
const MIN_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_DEDUP_WINDOW: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Deserializes `root[key]`, recording problems with their paths.
fn section<T: DeserializeOwned>(
    root: &mut toml::Table,
    key: &str,
    required: bool,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    let at = FieldPath::root().key(key);
    match root.remove(key) {
        Some(v) => typed_value(v, &at, issues),
        None if required => {
            issues.push(ConfigIssue::new(at, format!("missing [{key}] section")));
            None
        }
        None => None,
    }
}

/// Deserializes a value into `T`; a failure becomes an issue at the failing field.
pub(crate) fn typed_value<T: DeserializeOwned>(
    v: toml::Value,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(v) {
        Ok(t) => Some(t),
        Err(e) => {
            let path = at.join_dotted(&e.path().to_string());
            let mut message = serde_message(e.inner());
            // serde echoes the offending value (`invalid type: integer `123456789``): never
            // for a password, token or key, of which a mistyped one is still mostly right.
            let secret = e.path().iter().any(|seg| {
                matches!(seg, serde_path_to_error::Segment::Map { key } if crate::secrets::is_secret_key(key))
            });
            if secret {
                message = crate::secrets::scrub_values(&message);
            }
            issues.push(ConfigIssue::new(path, message));
            None
        }
    }
}

fn serde_message(e: &toml::de::Error) -> String {
    let m = e.message().trim_end_matches('.').to_owned();
    // serde says "unknown field `x`, expected one of ..."; keep it, it names the fix.
    m.replace('\n', " ")
}

fn unknown_key(at: &FieldPath, key: &str, known: &[&str]) -> ConfigIssue {
    let hint = suggest(key, known.iter().copied())
        .map(|s| format!(" (did you mean \"{s}\"?)"))
        .unwrap_or_default();
    ConfigIssue::new(
        at.clone(),
        format!(
            "unknown key \"{key}\"{hint}; expected one of {}",
            known.join(", ")
        ),
    )
}

fn devices(
    tables: Devices<'_>,
    campuses: &[CampusDef],
    issues: &mut Vec<ConfigIssue>,
) -> Result<Vec<DeviceConfig>, WholeDocument> {
    let at = FieldPath::root().key("device");
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    match tables {
        Devices::Value(None) => {}
        Devices::Value(Some(toml::Value::Array(items))) => {
            for (i, item) in items.into_iter().enumerate() {
                device(item, &at.index(i), campuses, &mut seen, &mut out, issues);
            }
        }
        Devices::Value(Some(_)) => issues.push(ConfigIssue::new(at, "expected [[device]] tables")),
        Devices::Pieces(text, pieces) => {
            for (i, piece) in pieces.iter().enumerate() {
                // Parsed and dropped one by one: the peak is one device's tree.
                let mut t: toml::Table =
                    toml::from_str(&text[piece.clone()]).map_err(|_| WholeDocument)?;
                let item = match t.remove("device") {
                    Some(toml::Value::Array(mut a)) if a.len() == 1 && t.is_empty() => a.remove(0),
                    _ => return Err(WholeDocument),
                };
                device(item, &at.index(i), campuses, &mut seen, &mut out, issues);
            }
        }
    }
    Ok(out)
}

fn device(
    item: toml::Value,
    at: &FieldPath,
    campuses: &[CampusDef],
    seen: &mut HashSet<campusgw_sdk::DeviceId>,
    out: &mut Vec<DeviceConfig>,
    issues: &mut Vec<ConfigIssue>,
) {
    let toml::Value::Table(t) = item else {
        issues.push(ConfigIssue::new(at.clone(), "expected a table"));
        return;
    };
    if let Some(d) = model::device(t, at, campuses, issues) {
        for id in std::iter::once(d.id.clone())
            .chain(d.factory.sub_devices().into_iter().map(|(id, _)| id))
        {
            if !seen.insert(id.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("id"),
                    format!("device id \"{id}\" is used twice; device ids must be unique"),
                ));
            }
        }
        for (id, loc) in d.factory.sub_devices() {
            if let Some(loc) = loc {
                model::check_location(&loc, campuses, at, &format!("device \"{id}\""), issues);
            }
        }
        out.push(d);
    }
}

fn uplinks(v: Option<toml::Value>, issues: &mut Vec<ConfigIssue>) -> Vec<UplinkConfig> {
    let Some(v) = v else { return Vec::new() };
    let at = FieldPath::root().key("uplink");
    let toml::Value::Array(items) = v else {
        issues.push(ConfigIssue::new(at, "expected [[uplink]] tables"));
        return Vec::new();
    };
    let mut out: Vec<UplinkConfig> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let at = at.index(i);
        match registry::parse_uplink(item, &at) {
            Ok(u) if out.iter().any(|o| o.name == u.name) => issues.push(ConfigIssue::new(
                at.key("name"),
                format!("uplink name \"{}\" is used twice; each uplink needs its own name (it keys its delivery cursor)", u.name),
            )),
            Ok(u) => out.push(u),
            Err(mut e) => issues.append(&mut e),
        }
    }
    out
}

#[cfg(test)]
mod tests;
