//! The `driver = "gb26875"` device table.
//!
//! ```toml
//! listen = "0.0.0.0:9000"
//! centre_address = 88888          # our 48-bit address
//! unknown_uitd = "refuse"         # refuse | accept
//! heartbeat_timeout = "90s"
//! response_timeout = "10s"        # centre-initiated commands, per attempt (<= 10 s)
//! retries = 3
//! max_connections = 512           # connections at once; more are accepted and closed
//! identify_timeout = "10s"        # a peer must send a valid frame within this
//! write_timeout = "10s"           # a peer that does not read for this long is closed
//! max_denies_per_second = 5       # per connection; further denies are dropped and counted
//! [[uitd]]
//! address = 889
//! device = "uitd_bldg_a"
//! peers = ["10.1.2.0/24", "10.1.2.7"]   # optional: only from these networks/hosts
//! location = { building = "A" }
//! [[uitd.components]]
//! address = "10-2"                # zone-point (low 16 bits - high 16 bits) or the raw integer
//! system_address = 1              # optional: only this facility system
//! location = { building = "A", floor = "3", zone = "east", point = "smoke-10-2" }
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, Location,
};
use serde::{Deserialize, Deserializer};

use crate::codec::{Address, ComponentAddress, MAX_ADDRESS};
use crate::driver::Gb26875Driver;
use crate::mapping::{ComponentPlace, UitdProfile};

/// The gb26875 listener's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gb26875Config {
    /// `host:port` to listen on.
    pub listen: String,
    /// The centre's 48-bit address, the source of every frame we send.
    pub centre_address: u64,
    /// What to do with a UITD whose address is not configured.
    #[serde(default)]
    pub unknown_uitd: UnknownUitdPolicy,
    /// Silence after which a UITD is reported offline and its connection closed.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: ConfigDuration,
    /// How long a centre-initiated command waits for its answer, per attempt.
    #[serde(default = "default_response_timeout")]
    pub response_timeout: ConfigDuration,
    /// Retransmissions of a centre-initiated command after the first attempt.
    #[serde(default = "default_retries")]
    pub retries: u8,
    /// Connections served at once; one more is accepted and closed at once (counted).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends no valid frame within this is closed.
    #[serde(default = "default_identify_timeout")]
    pub identify_timeout: ConfigDuration,
    /// A write not done within this closes the connection (a peer that never reads).
    #[serde(default = "default_write_timeout")]
    pub write_timeout: ConfigDuration,
    /// Denies sent per connection per second at most; the rest are dropped and counted.
    #[serde(default = "default_max_denies_per_second")]
    pub max_denies_per_second: u32,
    /// The UITDs this listener accepts.
    #[serde(default)]
    pub uitd: Vec<UitdEntry>,
}

/// Default of `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn default_identify_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_write_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_max_denies_per_second() -> u32 {
    5
}

/// Policy for UITDs not listed in `[[uitd]]`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnknownUitdPolicy {
    /// Log, count and close the connection.
    #[default]
    Refuse,
    /// Accept; events are attributed to the listener's own device.
    Accept,
}

/// One `[[uitd]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UitdEntry {
    /// Its 48-bit address (the frames' source address).
    pub address: u64,
    /// The sub-device id its events and health are reported under.
    pub device: DeviceId,
    /// Its location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Component address → location.
    #[serde(default)]
    pub components: Vec<ComponentEntry>,
    /// If set, frames from this address are only accepted from these networks or hosts
    /// (`"10.1.2.0/24"`, `"10.1.2.7"`); from anywhere else the connection is refused.
    #[serde(default)]
    pub peers: Option<Vec<String>>,
}

/// Parses one `peers` entry: a CIDR or a single address.
pub(crate) fn parse_peer(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
}

/// One `[[uitd.components]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentEntry {
    /// `"zone-point"` or the raw 32-bit value.
    pub address: ComponentAddressText,
    /// Only this facility system address; any if absent.
    #[serde(default)]
    pub system_address: Option<u8>,
    /// Where the component is.
    pub location: Location,
}

/// A component address as written in the config: `"10-2"` or an integer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComponentAddressText(pub String);

impl<'de> Deserialize<'de> for ComponentAddressText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(u64),
            Text(String),
        }
        Ok(ComponentAddressText(match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            Raw::Text(s) => s,
        }))
    }
}

/// Durations use the SDK's one config grammar (text like `"90s"`, or integer seconds).
pub use campusgw_sdk::config::HumanDuration as ConfigDuration;

fn default_heartbeat_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(90))
}

fn default_response_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_retries() -> u8 {
    3
}

/// GB/T 26875.3-2011 retransmission (PROTOCOLS §1): the confirm timeout should not exceed
/// 10 s.
const MAX_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);

impl Gb26875Config {
    fn check_uitd(&self, i: usize, u: &UitdEntry, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        let at = at.key("uitd").index(i);
        if u.address > MAX_ADDRESS {
            issues.push(ConfigIssue::new(
                at.key("address"),
                format!("address {} exceeds 48 bits (max {MAX_ADDRESS})", u.address),
            ));
        }
        if u.address == self.centre_address {
            issues.push(ConfigIssue::new(
                at.key("address"),
                format!("address {} is the centre_address", u.address),
            ));
        }
        for (j, p) in u.peers.iter().flatten().enumerate() {
            if parse_peer(p).is_none() {
                issues.push(ConfigIssue::new(
                    at.key("peers").index(j),
                    format!("{p:?} is neither an address nor a network like \"10.1.2.0/24\""),
                ));
            }
        }
        if u.peers.as_ref().is_some_and(Vec::is_empty) {
            issues.push(ConfigIssue::new(
                at.key("peers"),
                "an empty list would refuse this uitd everywhere; remove the key to allow any peer",
            ));
        }
        let mut seen = HashSet::new();
        for (j, c) in u.components.iter().enumerate() {
            let path = at.key("components").index(j).key("address");
            match ComponentAddress::parse(&c.address.0) {
                None => issues.push(ConfigIssue::new(
                    path,
                    format!(
                        "component address {:?} is neither \"zone-point\" (each 0-65535) nor an integer 0-4294967295",
                        c.address.0
                    ),
                )),
                Some(a) if !seen.insert((c.system_address, a)) => issues.push(ConfigIssue::new(
                    path,
                    format!("component address {:?} is listed twice", c.address.0),
                )),
                Some(_) => {}
            }
        }
    }

    /// The `peers` allow list of each configured UITD that has one, by address.
    pub(crate) fn peer_lists(&self) -> Vec<(Address, Vec<ipnet::IpNet>)> {
        self.uitd
            .iter()
            .filter_map(|u| {
                let nets = u.peers.as_ref()?.iter().filter_map(|p| parse_peer(p));
                Some((Address::new(u.address)?, nets.collect()))
            })
            .collect()
    }

    /// The mapping profile of each configured UITD, by address.
    pub(crate) fn profiles(&self) -> Vec<(Address, UitdProfile)> {
        self.uitd
            .iter()
            .filter_map(|u| {
                let components = u
                    .components
                    .iter()
                    .filter_map(|c| {
                        Some(ComponentPlace {
                            system_address: c.system_address,
                            address: ComponentAddress::parse(&c.address.0)?,
                            location: c.location.clone(),
                        })
                    })
                    .collect();
                let profile = UitdProfile {
                    device: Some(u.device.clone()),
                    location: u.location.clone(),
                    components,
                };
                Some((Address::new(u.address)?, profile))
            })
            .collect()
    }
}

impl DriverConfig for Gb26875Config {
    const KIND: &'static str = "gb26875";
    type Driver = Gb26875Driver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.listen.parse::<SocketAddr>().is_err() {
            issues.push(ConfigIssue::new(
                at.key("listen"),
                format!(
                    "{:?} is not host:port with a numeric ip, like \"0.0.0.0:9000\"",
                    self.listen
                ),
            ));
        }
        if self.centre_address > MAX_ADDRESS {
            issues.push(ConfigIssue::new(
                at.key("centre_address"),
                format!(
                    "{} exceeds 48 bits (max {MAX_ADDRESS})",
                    self.centre_address
                ),
            ));
        }
        if self.heartbeat_timeout.0.is_zero() {
            issues.push(ConfigIssue::new(
                at.key("heartbeat_timeout"),
                "must be more than 0s",
            ));
        }
        let rt = self.response_timeout.0;
        if rt.is_zero() || rt > MAX_RESPONSE_TIMEOUT {
            issues.push(ConfigIssue::new(
                at.key("response_timeout"),
                format!("{rt:?} is outside 1ms-10s (GB/T 26875.3 allows at most 10 s)"),
            ));
        }
        if self.max_connections == 0 {
            issues.push(ConfigIssue::new(
                at.key("max_connections"),
                "must be at least 1",
            ));
        }
        for (key, d) in [
            ("identify_timeout", self.identify_timeout.0),
            ("write_timeout", self.write_timeout.0),
        ] {
            if d.is_zero() {
                issues.push(ConfigIssue::new(at.key(key), "must be more than 0s"));
            }
        }
        if self.max_denies_per_second == 0 {
            issues.push(ConfigIssue::new(
                at.key("max_denies_per_second"),
                "must be at least 1 (a bad frame is answered with a deny so the uitd retransmits)",
            ));
        }
        if self.retries > 10 {
            issues.push(ConfigIssue::new(
                at.key("retries"),
                format!("{} retries is more than 10", self.retries),
            ));
        }
        let (mut addrs, mut devices) = (HashSet::new(), HashSet::new());
        for (i, u) in self.uitd.iter().enumerate() {
            if !addrs.insert(u.address) {
                issues.push(ConfigIssue::new(
                    at.key("uitd").index(i).key("address"),
                    format!("address {} is listed twice", u.address),
                ));
            }
            if !devices.insert(u.device.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("uitd").index(i).key("device"),
                    format!("device {:?} is listed twice", u.device.as_str()),
                ));
            }
            self.check_uitd(i, u, at, &mut issues);
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<Gb26875Driver, BuildError> {
        let listen = self.listen.parse().map_err(|_| {
            BuildError::Invalid(format!("listen {:?} is not host:port", self.listen))
        })?;
        let centre = Address::new(self.centre_address)
            .ok_or_else(|| BuildError::Invalid("centre_address exceeds 48 bits".into()))?;
        let _ = cx;
        Ok(Gb26875Driver::new(self.clone(), listen, centre))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.uitd
            .iter()
            .map(|u| (u.device.clone(), u.location.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn parse(text: &str) -> Gb26875Config {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let c = parse(
            r#"
            listen = "0.0.0.0:9000"
            centre_address = 88888
            unknown_uitd = "refuse"
            heartbeat_timeout = "90s"
            [[uitd]]
            address = 889
            device = "uitd_bldg_a"
            location = { building = "A" }
            [[uitd.components]]
            address = "10-2"
            location = { building = "A", floor = "3", zone = "east", point = "smoke-10-2" }
            [[uitd.components]]
            address = 131083
            location = { point = "x" }
            "#,
        );
        assert!(c.validate(&FieldPath::root()).is_empty());
        assert_eq!(c.heartbeat_timeout.0, Duration::from_secs(90));
        assert_eq!(c.sub_devices()[0].0.as_str(), "uitd_bldg_a");
        let p = &c.profiles()[0].1;
        assert_eq!(p.components[0].address, ComponentAddress::from_parts(10, 2));
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = parse(
            r#"
            listen = "nowhere"
            centre_address = 88888
            response_timeout = "30s"
            [[uitd]]
            address = 88888
            device = "a"
            [[uitd.components]]
            address = "x-1"
            location = {}
            [[uitd]]
            address = 88888
            device = "a"
            "#,
        );
        let issues: Vec<String> = c
            .validate(&FieldPath::root().key("device").index(0))
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "device[0].listen",
            "device[0].response_timeout",
            "device[0].uitd[0].address",
            "device[0].uitd[0].components[0].address",
            "device[0].uitd[1].address",
            "device[0].uitd[1].device",
        ] {
            assert!(
                issues.iter().any(|i| i.starts_with(want)),
                "{want} missing in {issues:#?}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_bad_durations_are_rejected() {
        assert!(
            toml::from_str::<Gb26875Config>(
                "listen = \"0.0.0.0:1\"\ncentre_address = 1\nlisten_port = 3"
            )
            .is_err()
        );
        let e = toml::from_str::<Gb26875Config>(
            "listen = \"0.0.0.0:1\"\ncentre_address = 1\nheartbeat_timeout = \"9 fortnights\"",
        )
        .unwrap_err();
        assert!(e.to_string().contains("9 fortnights"), "{e}");
        assert_eq!(
            "250ms".parse::<ConfigDuration>(),
            Ok(ConfigDuration(Duration::from_millis(250)))
        );
    }
}
