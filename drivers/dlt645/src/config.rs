//! The `driver = "dlt645"` config table: one RS-485 bus and the meters on it.
//!
//! ```toml
//! [[device]]
//! id = "meters_bldg_a"
//! driver = "dlt645"
//! address = "10.0.0.20:4001"     # a serial server (RS-485 to TCP), or:
//! # path = "/dev/ttyUSB0"        # a local serial port
//! baud = 2400                    # 8 data bits, even parity, 1 stop bit by default
//! poll_interval = "30s"
//! request_timeout = "500ms"
//! time_sync = "1h"               # optional broadcast time sync (08H)
//! [[device.meters]]
//! device = "meter_a101"
//! address = "000102030425"       # as on the name plate
//! location = "campus/A/1"
//! points = ["energy_active_forward_total", "power_active_total", "voltage_a"]
//! ```
//!
//! Deserialized after the gateway removed its common keys (`id`, `driver`, `location`,
//! `offline_after`). Validation is pure and reports every problem with its path.

use std::collections::HashSet;
use std::time::Duration;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, HumanDuration,
    Location,
};
use chrono::FixedOffset;
use serde::Deserialize;

use crate::codec::Address;
use crate::driver::{Dlt645Driver, Meter, Settings};
use crate::ids::{self, Quantity};

/// Serial parity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    None,
    /// Even parity: DL/T 645-2007 §3 (byte format: start, 8 data, even parity, stop).
    #[default]
    Even,
    /// Odd parity.
    Odd,
}

fn default_baud() -> u32 {
    2400
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_millis(500))
}
fn default_preamble() -> u8 {
    4
}
fn default_time_zone() -> String {
    "+08:00".into()
}

/// `driver = "dlt645"`: one bus of DL/T 645-2007 meters.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dlt645Config {
    /// `host:port` of a serial server (transparent RS-485 to TCP); or set `path`.
    #[serde(default)]
    pub address: Option<String>,
    /// A local serial port, e.g. `/dev/ttyUSB0`; or set `address`.
    #[serde(default)]
    pub path: Option<String>,
    /// Baud rate, default 2400 (the usual factory setting of DL/T 645 meters).
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// Parity, default `even`.
    #[serde(default)]
    pub parity: Parity,
    /// Time between poll cycles (one cycle reads every meter once), default `"30s"`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Deadline for each answer and for opening the link, default `"500ms"`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// `FE` wake-up bytes before each request, 0-4, default 4.
    #[serde(default = "default_preamble")]
    pub preamble: u8,
    /// Broadcast the time to every meter this often; off when unset.
    #[serde(default)]
    pub time_sync: Option<HumanDuration>,
    /// The meters' clock zone for time sync, default `"+08:00"` (China Standard Time).
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// The meters on the bus, polled in this order.
    #[serde(default)]
    pub meters: Vec<MeterConfig>,
}

/// One `[[meters]]` entry.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeterConfig {
    /// The sub-device id its readings and health are reported under.
    pub device: DeviceId,
    /// Its address as on the name plate (1-12 digits), or `"AAAAAAAAAAAA"` for the only
    /// meter on a bus (its address is then read with `13H` when the link opens).
    pub address: String,
    /// Its location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Points to read, by name from the table in the README; default energy and power.
    #[serde(default)]
    pub points: Option<Vec<String>>,
}

impl MeterConfig {
    fn point_names(&self) -> Vec<&str> {
        match &self.points {
            Some(p) => p.iter().map(String::as_str).collect(),
            None => ids::DEFAULT_POINTS.to_vec(),
        }
    }
}

fn check_host_port(a: &str) -> bool {
    a.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0))
}

impl Dlt645Config {
    fn check_link(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        match (&self.address, &self.path) {
            (Some(_), Some(_)) => issues.push(ConfigIssue::new(
                at.key("path"),
                "set either `address` (a serial server) or `path` (a serial port), not both",
            )),
            (None, None) => issues.push(ConfigIssue::new(
                at.key("address"),
                "no link: set `address = \"host:port\"` of a serial server or `path = \"/dev/ttyUSB0\"`",
            )),
            (Some(a), None) if !check_host_port(a) => issues.push(ConfigIssue::new(
                at.key("address"),
                format!("invalid address {a:?}: expected host:port, e.g. \"10.0.0.20:4001\""),
            )),
            (None, Some(p)) if p.trim().is_empty() => issues.push(ConfigIssue::new(
                at.key("path"),
                "serial `path` is empty: e.g. \"/dev/ttyUSB0\"",
            )),
            _ => {}
        }
        if !(300..=115_200).contains(&self.baud) {
            issues.push(ConfigIssue::new(
                at.key("baud"),
                format!(
                    "baud {} is out of range (300-115200; meters use 1200, 2400, 4800 or 9600)",
                    self.baud
                ),
            ));
        }
        if self.preamble > 4 {
            issues.push(ConfigIssue::new(
                at.key("preamble"),
                format!("preamble {} is more than 4 wake-up bytes", self.preamble),
            ));
        }
    }

    fn check_times(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        for (key, d) in [
            ("poll_interval", Some(self.poll_interval)),
            ("request_timeout", Some(self.request_timeout)),
            ("time_sync", self.time_sync),
        ] {
            if d.is_some_and(|d| d.0.is_zero()) {
                issues.push(ConfigIssue::new(
                    at.key(key),
                    format!("`{key}` must be greater than zero"),
                ));
            }
        }
        if parse_offset(&self.time_zone).is_none() {
            issues.push(ConfigIssue::new(
                at.key("time_zone"),
                format!(
                    "time_zone {:?} is not an offset like \"+08:00\"",
                    self.time_zone
                ),
            ));
        }
    }

    fn check_meter(
        &self,
        i: usize,
        m: &MeterConfig,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) {
        let at = at.key("meters").index(i);
        match m.address.parse::<Address>() {
            Ok(a) if a == Address::WILDCARD && self.meters.len() > 1 => {
                issues.push(ConfigIssue::new(
                    at.key("address"),
                    "the wildcard address is answered by every meter: only for a bus with one meter; write the meter's own address",
                ));
            }
            Ok(_) => {}
            Err(e) => issues.push(ConfigIssue::new(at.key("address"), e)),
        }
        let names = m.point_names();
        if names.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("points"),
                "no points: name at least one, e.g. \"energy_active_forward_total\"",
            ));
        }
        let mut seen = HashSet::new();
        for (j, name) in names.iter().enumerate() {
            if ids::by_name(name).is_none() {
                let hint =
                    campusgw_sdk::config::suggest(name, ids::QUANTITIES.iter().map(|q| q.name))
                        .map(|s| format!(" (did you mean {s:?}?)"))
                        .unwrap_or_default();
                issues.push(ConfigIssue::new(
                    at.key("points").index(j),
                    format!("unknown point {name:?}{hint}; the README lists the data identifiers"),
                ));
            } else if !seen.insert(*name) {
                issues.push(ConfigIssue::new(
                    at.key("points").index(j),
                    format!("point {name:?} is listed twice"),
                ));
            }
        }
    }
}

/// `"+08:00"` / `"-05:30"` / `"Z"` as an offset.
fn parse_offset(s: &str) -> Option<FixedOffset> {
    let s = s.trim();
    if s == "Z" || s == "+00:00" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match s.as_bytes().first()? {
        b'+' => (1, &s[1..]),
        b'-' => (-1, &s[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if h > 14 || m > 59 || h < 0 || m < 0 {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

/// How the driver reaches its bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A serial server: raw bus bytes over TCP.
    Tcp(String),
    /// A local serial port.
    Serial {
        /// Device path.
        path: String,
        /// Baud rate.
        baud: u32,
        /// Parity.
        parity: Parity,
    },
}

impl std::fmt::Display for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Link::Tcp(a) => write!(f, "tcp://{a}"),
            Link::Serial { path, baud, .. } => write!(f, "serial://{path}@{baud}"),
        }
    }
}

impl DriverConfig for Dlt645Config {
    const KIND: &'static str = "dlt645";
    type Driver = Dlt645Driver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        self.check_link(at, &mut issues);
        self.check_times(at, &mut issues);
        if self.meters.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("meters"),
                "no meters: add at least one [[device.meters]] with `device` and `address`",
            ));
        }
        let (mut addrs, mut devices) = (HashSet::new(), HashSet::new());
        for (i, m) in self.meters.iter().enumerate() {
            if !addrs.insert(m.address.trim().trim_start_matches('0').to_owned()) {
                issues.push(ConfigIssue::new(
                    at.key("meters").index(i).key("address"),
                    format!("address {:?} is listed twice on this bus", m.address),
                ));
            }
            if !devices.insert(m.device.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("meters").index(i).key("device"),
                    format!("device {:?} is listed twice", m.device.as_str()),
                ));
            }
            self.check_meter(i, m, at, &mut issues);
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<Dlt645Driver, BuildError> {
        let issues = self.validate(&FieldPath::root());
        if !issues.is_empty() {
            let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
            return Err(BuildError::Invalid(text.join("; ")));
        }
        let link = match (&self.address, &self.path) {
            (Some(a), _) => Link::Tcp(a.clone()),
            (None, Some(p)) => Link::Serial {
                path: p.clone(),
                baud: self.baud,
                parity: self.parity,
            },
            (None, None) => return Err(BuildError::Invalid("no link".into())),
        };
        let mut meters = Vec::with_capacity(self.meters.len());
        for m in &self.meters {
            let address = m.address.parse().map_err(BuildError::Invalid)?;
            let points: Vec<&'static Quantity> = m
                .point_names()
                .iter()
                .filter_map(|n| ids::by_name(n))
                .collect();
            meters.push(Meter::new(
                m.device.clone(),
                m.location.clone(),
                address,
                points,
            ));
        }
        let settings = Settings {
            poll_interval: self.poll_interval.0,
            request_timeout: self.request_timeout.0,
            preamble: usize::from(self.preamble),
            time_sync: self.time_sync.map(|d| d.0),
            time_zone: parse_offset(&self.time_zone)
                .ok_or_else(|| BuildError::Invalid("bad time_zone".into()))?,
        };
        Ok(Dlt645Driver::new(cx.device.clone(), link, settings, meters))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.meters
            .iter()
            .map(|m| (m.device.clone(), m.location.clone()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Dlt645Config {
        toml::from_str(text).expect("config parses")
    }

    #[test]
    fn the_documented_example_parses_and_validates() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.contains("[[device]]"))
            .skip(3)
            .take_while(|l| !l.contains("```"))
            .map(|l| l.trim_start_matches("//!").trim_start())
            .map(|l| l.replace("[[device.meters]]", "[[meters]]"))
            .collect::<Vec<_>>()
            .join("\n");
        let c = parse(&example);
        assert_eq!(c.validate(&FieldPath::root()), vec![]);
        assert_eq!(c.meters[0].address, "000102030425");
        assert_eq!(c.sub_devices()[0].0.as_str(), "meter_a101");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = parse(
            r#"
baud = 0
preamble = 9
time_zone = "CST"
poll_interval = "0s"
[[meters]]
device = "m1"
address = "12x"
points = ["enrgy_active_forward_total", "voltage_a", "voltage_a"]
[[meters]]
device = "m1"
address = "AAAAAAAAAAAA"
"#,
        );
        let issues: Vec<String> = c
            .validate(&FieldPath::root().key("device").index(0))
            .iter()
            .map(ToString::to_string)
            .collect();
        let text = issues.join("\n");
        for want in [
            "device[0].address: no link",
            "device[0].baud: baud 0",
            "device[0].preamble",
            "device[0].poll_interval",
            "device[0].time_zone",
            "device[0].meters[0].address: meter address \"12x\"",
            "device[0].meters[0].points[0]: unknown point \"enrgy_active_forward_total\" (did you mean \"energy_active_forward_total\"?)",
            "device[0].meters[0].points[2]: point \"voltage_a\" is listed twice",
            "device[0].meters[1].device: device \"m1\" is listed twice",
            "device[0].meters[1].address: the wildcard",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn offsets_parse() {
        assert_eq!(parse_offset("+08:00").unwrap().local_minus_utc(), 8 * 3600);
        assert_eq!(
            parse_offset("-05:30").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert!(parse_offset("8").is_none());
    }
}
