//! The `[[uplink]] kind = "gb26875"` table: parsed once, every problem reported with its
//! field path and what to change (the TOML form is in the parent module's doc).

use std::sync::Arc;
use std::time::Duration;

use campusgw_gb26875::codec::{
    Address, ComponentAddress, DESCRIPTION_LEN, Description, MAX_ADDRESS, SystemRef, Version,
};
use campusgw_gb26875::transmit::{Identity, TransmitSettings};
use campusgw_sdk::{ConfigIssue, DeviceId, FieldPath, HumanDuration, Location};
use serde::Deserialize;

use crate::config::typed_value;
use crate::uplink::config::{UplinkSettings, is_loopback_host};
use crate::uplink::contract::UplinkKindConfig;

/// The table as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    centres: Vec<String>,
    uitd_address: u64,
    centre_address: u64,
    #[serde(default)]
    allow_plaintext: bool,
    #[serde(default = "default_confirm_timeout")]
    confirm_timeout: HumanDuration,
    #[serde(default = "default_retries")]
    retries: u8,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: HumanDuration,
    #[serde(default = "default_heartbeat")]
    heartbeat: HumanDuration,
    #[serde(default)]
    default_system: Option<SystemTable>,
    #[serde(default)]
    component: Vec<ComponentTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SystemTable {
    system_type: u8,
    system_address: u8,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentTable {
    #[serde(default)]
    device: Option<DeviceId>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    system_type: Option<u8>,
    #[serde(default)]
    system_address: Option<u8>,
    component_type: u8,
    component_address: AddressText,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum AddressText {
    Raw(u32),
    Text(String),
}

fn default_confirm_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_retries() -> u8 {
    3
}
fn default_connect_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}
fn default_heartbeat() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

/// GB/T 26875.3-2011 §6.5: the confirm timeout should not exceed 10 s.
const MAX_CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// GB/T 26875.3-2011 system type 1: fire alarm system (火灾报警系统).
const FIRE_ALARM_SYSTEM: u8 = 1;

/// Where the events of a device or a place are reported: system and component.
#[derive(Debug, Clone, PartialEq)]
pub struct ComponentRule {
    /// Events from this device (wins over any location rule).
    pub device: Option<DeviceId>,
    /// Events at this location or below it.
    pub location: Option<Location>,
    /// The system (the default system's when the table names none).
    pub system: SystemRef,
    /// Component type code (GB/T 26875.3 table, e.g. 40 smoke detector).
    pub component_type: u8,
    /// Component address.
    pub component_address: ComponentAddress,
    /// Description (部件说明), GB18030, at most 31 bytes.
    pub description: Description,
}

/// A validated `kind = "gb26875"` uplink.
#[derive(Debug, Clone)]
pub struct Gb26875UplinkConfig {
    /// Cursor key and metric label.
    pub name: String,
    /// Centres, addresses, timeouts.
    pub transmit: TransmitSettings,
    /// The system of events no component rule places (default: fire alarm system 1).
    pub default_system: SystemRef,
    /// Device or location → system and component.
    pub components: Vec<ComponentRule>,
    /// Retry back-off bounds (default 1 s .. 60 s).
    pub backoff: (Duration, Duration),
}

impl UplinkKindConfig for Gb26875UplinkConfig {
    const KIND: &'static str = "gb26875";

    fn validate(
        table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Gb26875UplinkConfig> {
        let t: Table = typed_value(toml::Value::Table(table), at, issues)?;
        let before = issues.len();
        check_centres(&t, at, issues);
        let identity = identity(&t, at, issues);
        check_timing(&t, at, issues);
        let default_system = t.default_system.as_ref().map_or(
            SystemRef {
                system_type: FIRE_ALARM_SYSTEM,
                system_address: 1,
            },
            |s| SystemRef {
                system_type: s.system_type,
                system_address: s.system_address,
            },
        );
        let components = components(&t.component, default_system, at, issues);
        if issues.len() > before {
            return None;
        }
        let mut transmit = TransmitSettings::new(t.centres, identity?);
        transmit.confirm_timeout = t.confirm_timeout.0;
        transmit.retries = t.retries;
        transmit.connect_timeout = t.connect_timeout.0;
        transmit.heartbeat = t.heartbeat.0;
        Some(Gb26875UplinkConfig {
            name: name.to_owned(),
            transmit,
            default_system,
            components,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        })
    }

    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::Gb26875(self)
    }
}

fn check_centres(t: &Table, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
    if t.centres.is_empty() {
        issues.push(ConfigIssue::new(
            at.key("centres"),
            "give at least one centre as \"host:port\" (primary first, then backups)",
        ));
    }
    for (i, c) in t.centres.iter().enumerate() {
        let at = at.key("centres").index(i);
        let Some((host, port)) = c.rsplit_once(':') else {
            issues.push(ConfigIssue::new(
                at,
                format!("{c:?} has no port: write \"host:port\""),
            ));
            continue;
        };
        if host.is_empty() || !port.parse::<u16>().is_ok_and(|p| p > 0) {
            issues.push(ConfigIssue::new(
                at,
                format!("{c:?} is not \"host:port\" with a port 1-65535"),
            ));
        } else if !t.allow_plaintext && !is_loopback_host(host) {
            issues.push(ConfigIssue::new(
                at,
                format!(
                    "GB/T 26875.3 frames are not encrypted: alarms to {c} would cross the network in the clear; route them over the centre's private line or VPN and set allow_plaintext = true"
                ),
            ));
        }
    }
}

fn identity(t: &Table, at: &FieldPath, issues: &mut Vec<ConfigIssue>) -> Option<Identity> {
    let addr = |v: u64, key: &str, issues: &mut Vec<ConfigIssue>| {
        let a = Address::new(v);
        if a.is_none() {
            issues.push(ConfigIssue::new(
                at.key(key),
                format!("{v} exceeds the 48-bit address range (at most {MAX_ADDRESS})"),
            ));
        }
        a
    };
    let uitd = addr(t.uitd_address, "uitd_address", issues);
    let centre = addr(t.centre_address, "centre_address", issues);
    if t.uitd_address == t.centre_address {
        issues.push(ConfigIssue::new(
            at.key("uitd_address"),
            "uitd_address equals centre_address: use the address the centre assigned to this school's transmission device",
        ));
    }
    Some(Identity {
        uitd: uitd?,
        centre: centre?,
        version: Version::V1_1,
    })
}

fn check_timing(t: &Table, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
    let c = t.confirm_timeout.0;
    if c.is_zero() || c > MAX_CONFIRM_TIMEOUT {
        issues.push(ConfigIssue::new(
            at.key("confirm_timeout"),
            format!(
                "{t} is outside 1ms-10s (GB/T 26875.3 §6.5: at most 10 s)",
                t = t.confirm_timeout
            ),
        ));
    }
    if t.retries > 10 {
        issues.push(ConfigIssue::new(
            at.key("retries"),
            format!(
                "{} retransmissions is too many: at most 10 (the standard recommends 3)",
                t.retries
            ),
        ));
    }
    if t.connect_timeout.0.is_zero() {
        issues.push(ConfigIssue::new(
            at.key("connect_timeout"),
            "must be above 0",
        ));
    }
    let h = t.heartbeat.0;
    if h < Duration::from_millis(100) || h > Duration::from_secs(600) {
        issues.push(ConfigIssue::new(
            at.key("heartbeat"),
            format!(
                "{} is outside 100ms-10m (centres expect one every 20-30 s)",
                t.heartbeat
            ),
        ));
    }
}

fn components(
    tables: &[ComponentTable],
    default_system: SystemRef,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Vec<ComponentRule> {
    let mut out: Vec<ComponentRule> = Vec::new();
    for (i, c) in tables.iter().enumerate() {
        let at = at.key("component").index(i);
        match (&c.device, &c.location) {
            (None, None) => issues.push(ConfigIssue::new(
                at.clone(),
                "give device = \"...\" or location = \"campus/building/...\" (which events this component stands for)",
            )),
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                at.key("location"),
                "give device or location, not both (a device rule always wins)",
            )),
            _ => {}
        }
        if let Some(d) = &c.device
            && out.iter().any(|r| r.device.as_ref() == Some(d))
        {
            issues.push(ConfigIssue::new(
                at.key("device"),
                format!("device {d} already has a component rule above"),
            ));
        }
        let address = match &c.component_address {
            AddressText::Raw(v) => Some(ComponentAddress(*v)),
            AddressText::Text(s) => ComponentAddress::parse(s),
        };
        if address.is_none() {
            issues.push(ConfigIssue::new(
                at.key("component_address"),
                "write zone-point such as \"10-2\" (each 0-65535) or the raw 32-bit integer",
            ));
        }
        let text = c.description.as_deref().unwrap_or("");
        let (encoded, _, _) = encoding_rs::GB18030.encode(text);
        if encoded.len() > DESCRIPTION_LEN {
            issues.push(ConfigIssue::new(
                at.key("description"),
                format!("{text:?} is {} bytes in GB18030; at most {DESCRIPTION_LEN} (about 15 Chinese characters)", encoded.len()),
            ));
        }
        let system = SystemRef {
            system_type: c.system_type.unwrap_or(default_system.system_type),
            system_address: c.system_address.unwrap_or(default_system.system_address),
        };
        if let Some(component_address) = address {
            out.push(ComponentRule {
                device: c.device.clone(),
                location: c.location.clone(),
                system,
                component_type: c.component_type,
                component_address,
                description: Description::new(text),
            });
        }
    }
    out
}
