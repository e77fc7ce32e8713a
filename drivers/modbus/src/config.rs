//! The three driver kinds' config tables: `modbus_tcp`, `modbus_rtu`, `modbus_rtu_over_tcp`.
//!
//! Each is deserialized from a device's TOML table after the gateway removed its common
//! keys (`id`, `driver`, `location`, `offline_after`), so none of those names is used here.
//! The kinds differ only in how the link is opened ([`Endpoint`]); the polling settings and
//! `[[points]]` are shared. Validation is pure and reports every problem with its path.

use std::fmt;
use std::time::Duration;

use campusgw_sdk::{BuildContext, BuildError, ConfigIssue, DriverConfig, FieldPath};
use serde::Deserialize;

use crate::driver::ModbusDriver;
use crate::points::{PointConfig, PointMap};

pub use campusgw_sdk::config::HumanDuration;

fn default_unit() -> u8 {
    1
}
fn default_poll_interval() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_request_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}

/// Serial parity for `modbus_rtu`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit (default; Modbus over serial then wants 2 stop bits, though many
    /// devices accept 1).
    #[default]
    None,
    /// Even parity (the Modbus serial line default).
    Even,
    /// Odd parity.
    Odd,
}

/// Serial line settings for `modbus_rtu`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SerialSettings {
    /// Device path, e.g. `/dev/ttyUSB0`.
    pub path: String,
    /// Baud rate.
    pub baud: u32,
    /// Parity.
    pub parity: Parity,
    /// 5-8.
    pub data_bits: u8,
    /// 1 or 2.
    pub stop_bits: u8,
}

/// How a driver instance reaches its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// Modbus TCP (MBAP framing) to `host:port`.
    Tcp(String),
    /// RTU framing (address + PDU + CRC) over a TCP socket to a serial server.
    RtuOverTcp(String),
    /// RTU over a local serial line.
    Serial(SerialSettings),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "tcp://{a}"),
            Endpoint::RtuOverTcp(a) => write!(f, "rtu+tcp://{a}"),
            Endpoint::Serial(s) => write!(f, "serial://{}@{}", s.path, s.baud),
        }
    }
}

/// Settings every kind shares.
#[derive(Debug, Clone, PartialEq)]
pub struct PollSettings {
    /// Unit (slave) id.
    pub unit: u8,
    /// Time between poll cycles.
    pub poll_interval: Duration,
    /// Deadline for each request (and for connecting).
    pub request_timeout: Duration,
}

fn check_address(a: &str, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
    let ok = a
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0));
    if !ok {
        issues.push(ConfigIssue::new(
            at.key("address"),
            format!("invalid address {a:?}: expected host:port, e.g. \"10.0.0.5:502\""),
        ));
    }
}

fn check_common(
    unit: (u8, std::ops::RangeInclusive<u8>),
    intervals: [(&str, HumanDuration); 2],
    points: &[PointConfig],
    at: &FieldPath,
) -> (Vec<ConfigIssue>, Option<PointMap>) {
    let mut issues = Vec::new();
    if !unit.1.contains(&unit.0) {
        issues.push(ConfigIssue::new(
            at.key("unit"),
            format!(
                "unit {} is out of range ({}-{})",
                unit.0,
                unit.1.start(),
                unit.1.end()
            ),
        ));
    }
    for (key, d) in intervals {
        if d.0.is_zero() {
            issues.push(ConfigIssue::new(
                at.key(key),
                format!("`{key}` must be greater than zero"),
            ));
        }
    }
    match PointMap::compile(points, &at.key("points")) {
        Ok(map) => (issues, Some(map)),
        Err(more) => {
            issues.extend(more);
            (issues, None)
        }
    }
}

fn settings(
    unit: u8,
    poll_interval: HumanDuration,
    request_timeout: HumanDuration,
) -> PollSettings {
    PollSettings {
        unit,
        poll_interval: poll_interval.0,
        request_timeout: request_timeout.0,
    }
}

fn build_driver(
    endpoint: Endpoint,
    settings: PollSettings,
    points: &[PointConfig],
    cx: &BuildContext,
) -> Result<ModbusDriver, BuildError> {
    let map = PointMap::compile(points, &FieldPath::root().key("points")).map_err(|issues| {
        let text: Vec<String> = issues.iter().map(ToString::to_string).collect();
        BuildError::Invalid(text.join("; "))
    })?;
    Ok(ModbusDriver::new(
        cx.device.clone(),
        endpoint,
        settings,
        map,
    ))
}

/// `driver = "modbus_tcp"`: Modbus TCP to a device or gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusTcpConfig {
    /// `host:port`, e.g. `"10.0.0.5:502"`.
    pub address: String,
    /// Unit id (MBAP unit identifier), default 1; 255 or 0 for many native TCP devices.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Time between polls, default `"1s"`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Deadline per request and for connecting, default `"1s"`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The register map.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

impl DriverConfig for ModbusTcpConfig {
    const KIND: &'static str = "modbus_tcp";
    type Driver = ModbusDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let intervals = [
            ("poll_interval", self.poll_interval),
            ("request_timeout", self.request_timeout),
        ];
        let (mut issues, _) = check_common((self.unit, 0..=255), intervals, &self.points, at);
        check_address(&self.address, at, &mut issues);
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<ModbusDriver, BuildError> {
        build_driver(
            Endpoint::Tcp(self.address.clone()),
            settings(self.unit, self.poll_interval, self.request_timeout),
            &self.points,
            cx,
        )
    }
}

/// `driver = "modbus_rtu_over_tcp"`: RTU frames through a TCP serial server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuOverTcpConfig {
    /// `host:port` of the serial server.
    pub address: String,
    /// Slave address on the serial bus, 1-247, default 1.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Time between polls, default `"1s"`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Deadline per request and for connecting, default `"1s"`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The register map.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

impl DriverConfig for ModbusRtuOverTcpConfig {
    const KIND: &'static str = "modbus_rtu_over_tcp";
    type Driver = ModbusDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let intervals = [
            ("poll_interval", self.poll_interval),
            ("request_timeout", self.request_timeout),
        ];
        let (mut issues, _) = check_common((self.unit, 1..=247), intervals, &self.points, at);
        check_address(&self.address, at, &mut issues);
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<ModbusDriver, BuildError> {
        build_driver(
            Endpoint::RtuOverTcp(self.address.clone()),
            settings(self.unit, self.poll_interval, self.request_timeout),
            &self.points,
            cx,
        )
    }
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}

/// `driver = "modbus_rtu"`: RTU over a local serial port (RS-485 adapter).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModbusRtuConfig {
    /// Serial device, e.g. `"/dev/ttyUSB0"`.
    pub path: String,
    /// Baud rate, default 9600.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// `none` (default), `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// 5-8, default 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// 1 (default) or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Slave address, 1-247, default 1.
    #[serde(default = "default_unit")]
    pub unit: u8,
    /// Time between polls, default `"1s"`.
    #[serde(default = "default_poll_interval")]
    pub poll_interval: HumanDuration,
    /// Deadline per request and for opening the port, default `"1s"`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: HumanDuration,
    /// The register map.
    #[serde(default)]
    pub points: Vec<PointConfig>,
}

impl DriverConfig for ModbusRtuConfig {
    const KIND: &'static str = "modbus_rtu";
    type Driver = ModbusDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let intervals = [
            ("poll_interval", self.poll_interval),
            ("request_timeout", self.request_timeout),
        ];
        let (mut issues, _) = check_common((self.unit, 1..=247), intervals, &self.points, at);
        if self.path.trim().is_empty() {
            issues.push(ConfigIssue::new(
                at.key("path"),
                "serial `path` is empty: e.g. \"/dev/ttyUSB0\"",
            ));
        }
        if self.baud == 0 {
            issues.push(ConfigIssue::new(
                at.key("baud"),
                "`baud` must be greater than zero, e.g. 9600",
            ));
        }
        if !(5..=8).contains(&self.data_bits) {
            issues.push(ConfigIssue::new(
                at.key("data_bits"),
                format!("data_bits {} is not 5, 6, 7 or 8", self.data_bits),
            ));
        }
        if !(1..=2).contains(&self.stop_bits) {
            issues.push(ConfigIssue::new(
                at.key("stop_bits"),
                format!("stop_bits {} is not 1 or 2", self.stop_bits),
            ));
        }
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<ModbusDriver, BuildError> {
        let serial = SerialSettings {
            path: self.path.clone(),
            baud: self.baud,
            parity: self.parity,
            data_bits: self.data_bits,
            stop_bits: self.stop_bits,
        };
        build_driver(
            Endpoint::Serial(serial),
            settings(self.unit, self.poll_interval, self.request_timeout),
            &self.points,
            cx,
        )
    }
}

#[cfg(test)]
mod tests;
