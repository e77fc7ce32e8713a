//! The `driver = "dc09"` device table: a DC-09 receiver for panels and panic buttons.
//!
//! ```toml
//! listen_tcp = "0.0.0.0:9010"      # at least one of listen_tcp / listen_udp
//! listen_udp = "0.0.0.0:9010"
//! unknown_account = "accept"       # accept (events on the listener's device) | refuse (DUH)
//! unknown_code = "duh"             # duh (answer DUH, journal nothing) | accept (journal dc09.unknown)
//! time_window_past = "40s"         # a message may lag our clock this much
//! time_window_future = "20s"       # and lead it this much; else NAK with our time
//! max_connections = 256            # TCP connections at once
//! max_connections_per_source = 16  # TCP connections at once from one IP
//! frames_per_second = 20           # per source IP (token bucket); over it: no reply, panel retries
//! frame_burst = 40
//! [[account]]
//! account = "1234"                 # 3-16 hex digits, as the panel sends it after #
//! device = "guard_room_panic"
//! location = { building = "A", point = "guard room" }
//! key = "0123456789abcdef"         # optional AES key: 16/24/32 characters (key_encoding = "text")
//! key_encoding = "text"            # text | hex (32/48/64 hex digits)
//! # key_file = "/etc/campusgw/dc09-1234.key"   # instead of key: the file's first line
//! supervision = "90s"              # optional: silent longer than this → offline
//! [[account.zone]]
//! number = 3
//! name = "lab door"
//! location = { building = "Lab", zone = "east" }
//! [[account.user]]
//! number = 12
//! name = "guard Wang"
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, HumanDuration,
    Location,
};
use serde::Deserialize;

use crate::crypto::KeyEncoding;
use crate::driver::{AccountProfile, Dc09Driver};
use crate::frame::is_hex_account;
use crate::settings::{KeyLoadError, KeySource, parse_listen_addr};
use crate::time::TimeWindow;

/// The dc09 receiver's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dc09Config {
    /// `host:port` to accept TCP connections on.
    #[serde(default)]
    pub listen_tcp: Option<String>,
    /// `host:port` to receive UDP datagrams on.
    #[serde(default)]
    pub listen_udp: Option<String>,
    /// What to do with a message from an account not listed in `[[account]]`.
    #[serde(default)]
    pub unknown_account: UnknownAccountPolicy,
    /// What to do with an event code the mapping tables do not know.
    #[serde(default)]
    pub unknown_code: UnknownCodePolicy,
    /// How far a message's timestamp may lag our clock.
    #[serde(default = "default_past")]
    pub time_window_past: HumanDuration,
    /// How far a message's timestamp may lead our clock.
    #[serde(default = "default_future")]
    pub time_window_future: HumanDuration,
    /// TCP connections served at once; more are accepted and closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// TCP connections served at once from one source address.
    #[serde(default = "default_max_per_source")]
    pub max_connections_per_source: usize,
    /// Frames answered per second per source IP, sustained (token bucket rate).
    #[serde(default = "default_fps")]
    pub frames_per_second: u32,
    /// Frames a source may send at once above the rate (token bucket size).
    #[serde(default = "default_burst")]
    pub frame_burst: u32,
    /// The panels and panic buttons this receiver knows.
    #[serde(default)]
    pub account: Vec<AccountEntry>,
}

/// Policy for accounts not listed in `[[account]]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownAccountPolicy {
    /// Journal its events on the listener's own device (with the account in the payload):
    /// a panic from a panel nobody configured still reaches the guard room. Encrypted
    /// messages of unknown accounts cannot be read and are NAKed.
    #[default]
    Accept,
    /// Answer DUH and journal nothing.
    Refuse,
}

/// Policy for event codes the mapping tables do not know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownCodePolicy {
    /// Answer DUH (the panel may report it elsewhere) and journal nothing.
    #[default]
    Duh,
    /// Journal it as `dc09.unknown` (security) and ACK.
    Accept,
}

/// One `[[account]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountEntry {
    /// The account number as sent after `#`: 3-16 hex digits (matched case-insensitively).
    pub account: String,
    /// The sub-device its events and health are reported under.
    pub device: DeviceId,
    /// Its location (zones without one use it).
    #[serde(default)]
    pub location: Option<Location>,
    /// The AES key, when the account encrypts.
    #[serde(default)]
    pub key: Option<String>,
    /// How `key` (or the first line of `key_file`) is written.
    #[serde(default)]
    pub key_encoding: KeyEncoding,
    /// A file whose first line is the key (instead of `key`, to keep keys out of the config).
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Silence longer than this (no event, no NULL) reports the device offline.
    #[serde(default)]
    pub supervision: Option<HumanDuration>,
    /// Zone numbers → names and locations.
    #[serde(default)]
    pub zone: Vec<ZoneEntry>,
    /// User numbers → names.
    #[serde(default)]
    pub user: Vec<UserEntry>,
}

/// One `[[account.zone]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneEntry {
    /// The zone number (Contact ID ZZZ, SIA event address).
    pub number: u16,
    /// A name for people.
    #[serde(default)]
    pub name: Option<String>,
    /// Where the zone is.
    #[serde(default)]
    pub location: Option<Location>,
}

/// One `[[account.user]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    /// The user number (Contact ID ZZZ of open/close codes, SIA `id` modifier).
    pub number: u16,
    /// Who it is.
    pub name: String,
}

fn default_past() -> HumanDuration {
    HumanDuration(Duration::from_secs(u64::from(TimeWindow::default().past)))
}
fn default_future() -> HumanDuration {
    HumanDuration(Duration::from_secs(u64::from(TimeWindow::default().future)))
}
fn default_max_connections() -> usize {
    256
}
fn default_max_per_source() -> usize {
    16
}
fn default_fps() -> u32 {
    20
}
fn default_burst() -> u32 {
    40
}

/// The largest window bound we accept: a day (beyond that replay protection is gone).
const MAX_WINDOW: Duration = Duration::from_secs(86_400);

impl Dc09Config {
    fn check_account(&self, i: usize, a: &AccountEntry, at: &FieldPath) -> Vec<ConfigIssue> {
        let at = at.key("account").index(i);
        let mut issues = Vec::new();
        if !is_hex_account(&a.account) {
            issues.push(ConfigIssue::new(
                at.key("account"),
                format!(
                    "{:?} is not 3-16 hex digits; write the account as the panel sends it after #",
                    a.account
                ),
            ));
        }
        issues.extend(a.key_source().issues(&at));
        if a.supervision.is_some_and(|d| d.0 < Duration::from_secs(1)) {
            issues.push(ConfigIssue::new(
                at.key("supervision"),
                "must be at least 1s (or remove it to not supervise this account)",
            ));
        }
        let mut zones = HashSet::new();
        for (j, z) in a.zone.iter().enumerate() {
            if !zones.insert(z.number) {
                issues.push(ConfigIssue::new(
                    at.key("zone").index(j).key("number"),
                    format!("zone {} is listed twice", z.number),
                ));
            }
        }
        let mut users = HashSet::new();
        for (j, u) in a.user.iter().enumerate() {
            if !users.insert(u.number) {
                issues.push(ConfigIssue::new(
                    at.key("user").index(j).key("number"),
                    format!("user {} is listed twice", u.number),
                ));
            }
        }
        issues
    }

    /// The receiver's time window.
    pub fn time_window(&self) -> TimeWindow {
        let secs = |d: HumanDuration| u32::try_from(d.0.as_secs()).unwrap_or(u32::MAX);
        TimeWindow {
            past: secs(self.time_window_past),
            future: secs(self.time_window_future),
        }
    }
}

fn parse_addr(s: &Option<String>) -> Result<Option<SocketAddr>, String> {
    parse_listen_addr(s.as_deref())
}

impl AccountEntry {
    fn key_source(&self) -> KeySource<'_> {
        KeySource {
            key: self.key.as_deref(),
            key_file: self.key_file.as_deref(),
            encoding: self.key_encoding,
        }
    }
}

impl DriverConfig for Dc09Config {
    const KIND: &'static str = "dc09";
    type Driver = Dc09Driver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        for (key, v) in [
            ("listen_tcp", &self.listen_tcp),
            ("listen_udp", &self.listen_udp),
        ] {
            if let Err(e) = parse_addr(v) {
                issues.push(ConfigIssue::new(at.key(key), e));
            }
        }
        if self.listen_tcp.is_none() && self.listen_udp.is_none() {
            issues.push(ConfigIssue::new(
                at.key("listen_tcp"),
                "give listen_tcp or listen_udp (or both), like \"0.0.0.0:9010\"",
            ));
        }
        for (key, d) in [
            ("time_window_past", self.time_window_past),
            ("time_window_future", self.time_window_future),
        ] {
            if d.0 > MAX_WINDOW {
                issues.push(ConfigIssue::new(
                    at.key(key),
                    format!("{d} is more than 24h; a window that wide no longer stops replays"),
                ));
            }
        }
        for (key, n) in [
            ("max_connections", self.max_connections),
            (
                "max_connections_per_source",
                self.max_connections_per_source,
            ),
            ("frames_per_second", self.frames_per_second as usize),
            ("frame_burst", self.frame_burst as usize),
        ] {
            if n == 0 {
                issues.push(ConfigIssue::new(at.key(key), "must be at least 1"));
            }
        }
        let (mut accounts, mut devices) = (HashSet::new(), HashSet::new());
        for (i, a) in self.account.iter().enumerate() {
            if !accounts.insert(a.account.to_ascii_uppercase()) {
                issues.push(ConfigIssue::new(
                    at.key("account").index(i).key("account"),
                    format!("account {:?} is listed twice", a.account),
                ));
            }
            if !devices.insert(a.device.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("account").index(i).key("device"),
                    format!("device {:?} is listed twice", a.device.as_str()),
                ));
            }
            issues.extend(self.check_account(i, a, at));
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<Dc09Driver, BuildError> {
        let tcp = parse_addr(&self.listen_tcp).map_err(BuildError::Invalid)?;
        let udp = parse_addr(&self.listen_udp).map_err(BuildError::Invalid)?;
        let mut profiles = Vec::new();
        for a in &self.account {
            let key = a.key_source().load().map_err(|e| match e {
                KeyLoadError::Io { path, source } => BuildError::Io {
                    what: format!("key_file {} of account {}", path.display(), a.account),
                    source,
                },
                KeyLoadError::Key(e) => BuildError::Invalid(format!("account {}: {e}", a.account)),
            })?;
            profiles.push(AccountProfile::new(a, key));
        }
        let _ = cx;
        Ok(Dc09Driver::new(self.clone(), tcp, udp, profiles))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.account
            .iter()
            .map(|a| (a.device.clone(), a.location.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn parse(text: &str) -> Dc09Config {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let example = crate::tests::doc_toml_example(include_str!("config.rs"));
        let c = parse(&example);
        assert!(
            c.validate(&FieldPath::root()).is_empty(),
            "{:?}",
            c.validate(&FieldPath::root())
        );
        assert_eq!(
            c.time_window(),
            TimeWindow {
                past: 40,
                future: 20
            }
        );
        assert_eq!(c.account[0].zone[0].number, 3);
        assert_eq!(c.sub_devices()[0].0.as_str(), "guard_room_panic");
    }

    #[test]
    fn every_problem_is_reported_with_its_path_and_what_to_change() {
        let c = parse(
            r#"
            listen_tcp = "nowhere"
            frames_per_second = 0
            time_window_past = "2d"
            [[account]]
            account = "12"
            device = "a"
            key = "short"
            supervision = "0s"
            [[account.zone]]
            number = 1
            [[account.zone]]
            number = 1
            [[account]]
            account = "ABC"
            device = "a"
            key = "0123456789abcdef"
            key_file = "/k"
            "#,
        );
        let issues: Vec<String> = c
            .validate(&FieldPath::root().key("device").index(0))
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "device[0].listen_tcp",
            "device[0].frames_per_second",
            "device[0].time_window_past",
            "device[0].account[0].account",
            "device[0].account[0].key",
            "device[0].account[0].supervision",
            "device[0].account[0].zone[1].number",
            "device[0].account[1].device",
            "device[0].account[1].key_file",
        ] {
            assert!(
                issues.iter().any(|i| i.starts_with(want)),
                "{want} missing in {issues:#?}"
            );
        }
        let none = parse("");
        assert!(
            none.validate(&FieldPath::root())
                .iter()
                .any(|i| i.message.contains("listen_tcp or listen_udp"))
        );
    }

    #[test]
    fn hex_keys_and_key_files_are_read() {
        let dir = std::env::temp_dir().join(format!("dc09-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("k");
        std::fs::write(&file, "00112233445566778899AABBCCDDEEFF\n").unwrap();
        let c = parse(&format!(
            r#"
            listen_udp = "127.0.0.1:0"
            [[account]]
            account = "1234"
            device = "a"
            key_encoding = "hex"
            key_file = {:?}
            "#,
            file.display().to_string()
        ));
        assert!(c.validate(&FieldPath::root()).is_empty());
        let bcx = BuildContext {
            device: DeviceId::new("rx").unwrap(),
            location: Location::default(),
            data_dir: dir.clone(),
        };
        assert!(c.build(&bcx).is_ok());
        std::fs::write(&file, "not hex\n").unwrap();
        assert!(c.build(&bcx).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
