//! The `driver = "zkteco_push"` device table: one iclock server and the controllers it
//! accepts, each with its doors.
//!
//! ```toml
//! [[device]]
//! id = "zk_push"
//! driver = "zkteco_push"
//! location = "main"
//! listen = "0.0.0.0:8088"            # the controllers' "server address / port"
//! allow_http = true                  # required off loopback: PUSH firmware speaks plain HTTP
//! # request_delay = "1s"             # RequestDelay handed to the controllers = command latency
//! # command_deadline = "10s"         # no poll + result within this: the command is Failed
//! # max_body_bytes = 65536           # larger uploads are refused (413)
//! # max_connections = 256            # more are accepted and closed at once
//! [[device.controllers]]
//! sn = "CGXK201760001"               # the controller's serial number (SN=)
//! device = "zk_gate"
//! location = "main/gate/1/turnstiles"
//! [[device.controllers.doors]]
//! n = 1                              # eventaddr / the BB of CONTROL DEVICE (1-10)
//! device = "zk_gate_1"
//! location = "main/gate/1/turnstiles/in"   # every level down to the zone, then the point
//! escape_route = true                # default true: fire egress wins over lockdown
//! boundary = "campus"                # or "building:A": passages here update presence
//! # direction = "in"                 # a one-way gate; default: the event's inoutstatus
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::config::HumanDuration;
use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, Location,
};
use serde::Deserialize;

use crate::driver::{Controller, Settings, ZktecoDriver};
use crate::map::DoorPlace;
use crate::proto::valid_sn;

/// The driver kind.
pub const KIND: &str = "zkteco_push";
/// Highest door number of a PUSH controller (BB of CONTROL DEVICE: 01-10).
pub const MAX_DOOR: u8 = 10;

/// One iclock server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZktecoConfig {
    /// `host:port` to listen on.
    pub listen: String,
    /// Plain HTTP off loopback (the controllers speak nothing else): must be opted in.
    #[serde(default)]
    pub allow_http: bool,
    /// The `RequestDelay` handed to controllers: how often they poll for commands.
    #[serde(default = "default_request_delay")]
    pub request_delay: HumanDuration,
    /// A command not polled and answered within this is `Failed`.
    #[serde(default = "default_deadline")]
    pub command_deadline: HumanDuration,
    /// Largest request body accepted.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Connections served at once (controllers open one per request, some keep it alive).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The controllers accepted (any other serial is refused).
    #[serde(default)]
    pub controllers: Vec<ControllerEntry>,
}

/// One `[[device.controllers]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ControllerEntry {
    /// Its serial number.
    pub sn: String,
    /// Its device id.
    pub device: DeviceId,
    /// Its location.
    #[serde(default)]
    pub location: Option<Location>,
    /// Its doors.
    #[serde(default)]
    pub doors: Vec<DoorEntry>,
}

/// One `[[device.controllers.doors]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DoorEntry {
    /// Door number on the controller (1-10).
    pub n: u8,
    /// Its device id.
    pub device: DeviceId,
    /// Its location.
    #[serde(default)]
    pub location: Option<Location>,
    /// On an escape route: never locked while fire egress is active.
    #[serde(default = "default_true")]
    pub escape_route: bool,
    /// `campus` or `building:<name>`.
    #[serde(default)]
    pub boundary: Option<String>,
    /// `in` or `out` for a one-way boundary.
    #[serde(default)]
    pub direction: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_request_delay() -> HumanDuration {
    HumanDuration(Duration::from_secs(1))
}
fn default_deadline() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}
fn default_max_body() -> usize {
    64 * 1024
}
/// Default `max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

/// Checks a boundary value (`campus`, `building:<name>`); shared with the gateway.
pub fn check_boundary(b: &str) -> Result<(), String> {
    match b.split_once(':') {
        None if b == "campus" => Ok(()),
        Some(("building", name)) if !name.is_empty() && !name.contains(['/', ':']) => Ok(()),
        _ => Err(format!(
            "boundary {b:?} is not \"campus\" or \"building:<name>\" (e.g. \"building:A\")"
        )),
    }
}

impl ZktecoConfig {
    fn check_doors(&self, at: &FieldPath, issues: &mut Vec<ConfigIssue>) {
        let mut sns = HashSet::new();
        let mut ids = HashSet::new();
        for (ci, c) in self.controllers.iter().enumerate() {
            let at = at.key("controllers").index(ci);
            if !valid_sn(&c.sn) {
                issues.push(ConfigIssue::new(
                    at.key("sn"),
                    format!("serial {:?} must be 1-32 letters, digits, '-' or '_'", c.sn),
                ));
            }
            if !sns.insert(c.sn.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("sn"),
                    format!("serial {:?} is listed twice", c.sn),
                ));
            }
            if !ids.insert(c.device.clone()) {
                issues.push(ConfigIssue::new(
                    at.key("device"),
                    format!("device {:?} is listed twice", c.device.as_str()),
                ));
            }
            let mut numbers = HashSet::new();
            for (di, d) in c.doors.iter().enumerate() {
                let at = at.key("doors").index(di);
                if d.n == 0 || d.n > MAX_DOOR {
                    issues.push(ConfigIssue::new(
                        at.key("n"),
                        format!("door number {} is out of range (1-{MAX_DOOR})", d.n),
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
                if let Some(Err(e)) = d.boundary.as_deref().map(check_boundary) {
                    issues.push(ConfigIssue::new(at.key("boundary"), e));
                }
                if let Some(dir) = &d.direction {
                    if dir != "in" && dir != "out" {
                        issues.push(ConfigIssue::new(
                            at.key("direction"),
                            format!("direction {dir:?} must be \"in\" or \"out\""),
                        ));
                    } else if d.boundary.is_none() {
                        issues.push(ConfigIssue::new(
                            at.key("direction"),
                            "direction only means something on a boundary; add boundary = \"campus\" or \"building:<name>\"",
                        ));
                    }
                }
            }
        }
    }
}

impl DriverConfig for ZktecoConfig {
    const KIND: &'static str = KIND;
    type Driver = ZktecoDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match self.listen.parse::<SocketAddr>() {
            Err(_) => issues.push(ConfigIssue::new(
                at.key("listen"),
                format!("{:?} is not host:port (e.g. \"0.0.0.0:8088\")", self.listen),
            )),
            Ok(a) if !a.ip().is_loopback() && !self.allow_http => {
                issues.push(ConfigIssue::new(
                    at.key("listen"),
                    format!(
                        "PUSH controllers talk plain HTTP: listening on {a} exposes access \
                         events and door commands to the LAN unencrypted; put the controllers \
                         on their own VLAN and set allow_http = true, or listen on loopback \
                         behind a TLS proxy"
                    ),
                ));
            }
            Ok(_) => {}
        }
        let rd = self.request_delay.0;
        if rd < Duration::from_secs(1) || rd > Duration::from_secs(60) {
            issues.push(ConfigIssue::new(
                at.key("request_delay"),
                format!(
                    "{} is out of range (1s-60s; controllers count RequestDelay in whole \
                     seconds, and lockdown needs it low: 1s)",
                    self.request_delay
                ),
            ));
        }
        if self.command_deadline.0 <= rd {
            issues.push(ConfigIssue::new(
                at.key("command_deadline"),
                format!(
                    "{} must be longer than request_delay ({}): a controller needs one poll \
                     to fetch a command",
                    self.command_deadline, self.request_delay
                ),
            ));
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            issues.push(ConfigIssue::new(
                at.key("max_body_bytes"),
                format!("{} is out of range (1024-16777216)", self.max_body_bytes),
            ));
        }
        if !(1..=10_000).contains(&self.max_connections) {
            issues.push(ConfigIssue::new(
                at.key("max_connections"),
                format!("{} is out of range (1-10000)", self.max_connections),
            ));
        }
        if self.controllers.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("controllers"),
                "no controllers: add [[device.controllers]] with each controller's sn (unknown serials are refused)",
            ));
        }
        self.check_doors(at, &mut issues);
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<ZktecoDriver, BuildError> {
        let listen = self.listen.parse().map_err(|_| {
            BuildError::Invalid(format!("listen {:?} is not host:port", self.listen))
        })?;
        let controllers = self
            .controllers
            .iter()
            .map(|c| {
                let loc = c.location.clone().unwrap_or_else(|| cx.location.clone());
                Controller {
                    sn: c.sn.clone(),
                    device: c.device.clone(),
                    location: loc.clone(),
                    doors: c
                        .doors
                        .iter()
                        .map(|d| DoorPlace {
                            n: d.n,
                            device: d.device.clone(),
                            location: d.location.clone().unwrap_or_else(|| loc.clone()),
                            boundary: d.boundary.clone(),
                            direction: d.direction.clone(),
                        })
                        .collect(),
                }
            })
            .collect();
        Ok(ZktecoDriver::new(Settings {
            listen,
            request_delay: self.request_delay.0,
            command_deadline: self.command_deadline.0,
            max_body: self.max_body_bytes,
            max_connections: self.max_connections,
            controllers,
        }))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        let mut out = Vec::new();
        for c in &self.controllers {
            out.push((c.device.clone(), c.location.clone()));
            for d in &c.doors {
                out.push((d.device.clone(), d.location.clone().or(c.location.clone())));
            }
        }
        out
    }

    fn escape_routes(&self) -> Vec<DeviceId> {
        self.controllers
            .iter()
            .flat_map(|c| c.doors.iter())
            .filter(|d| d.escape_route)
            .map(|d| d.device.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> ZktecoConfig {
        toml::from_str(&format!(
            r#"{extra}
            [[controllers]]
            sn = "SN1"
            device = "zk1"
            [[controllers.doors]]
            n = 1
            device = "zk1_d1"
            boundary = "building:A"
            [[controllers.doors]]
            n = 2
            device = "zk1_d2"
            escape_route = false
            "#
        ))
        .expect("parses")
    }

    fn problems(c: &ZktecoConfig) -> Vec<String> {
        c.validate(&FieldPath::root().key("device").index(0))
            .into_iter()
            .map(|i| i.to_string())
            .collect()
    }

    #[test]
    fn plain_http_off_loopback_must_be_opted_in() {
        assert!(problems(&parse(r#"listen = "127.0.0.1:0""#)).is_empty());
        let p = problems(&parse(r#"listen = "0.0.0.0:8088""#));
        assert!(
            p[0].starts_with("device[0].listen") && p[0].contains("allow_http"),
            "{p:?}"
        );
        assert!(problems(&parse("listen = \"0.0.0.0:8088\"\nallow_http = true")).is_empty());
        assert!(!problems(&parse(r#"listen = "nowhere""#)).is_empty());
    }

    #[test]
    fn bad_doors_boundaries_delays_and_serials_are_reported_with_their_paths() {
        let mut c =
            parse("listen = \"127.0.0.1:0\"\nrequest_delay = \"30s\"\ncommand_deadline = \"10s\"");
        c.controllers[0].doors[1].n = 1;
        c.controllers[0].doors[0].boundary = Some("floor:3".into());
        c.controllers[0].sn = "bad sn".into();
        c.controllers[0].doors[1].direction = Some("up".into());
        let p = problems(&c);
        for want in [
            "device[0].command_deadline",
            "device[0].controllers[0].doors[1].n",
            "device[0].controllers[0].doors[0].boundary",
            "device[0].controllers[0].sn",
            "device[0].controllers[0].doors[1].direction",
        ] {
            assert!(p.iter().any(|x| x.starts_with(want)), "{want} in {p:?}");
        }
    }

    #[test]
    fn escape_route_defaults_to_true_and_every_door_is_a_sub_device() {
        let c = parse(r#"listen = "127.0.0.1:0""#);
        assert_eq!(c.escape_routes(), vec![DeviceId::new("zk1_d1").unwrap()]);
        assert_eq!(c.sub_devices().len(), 3);
        assert!(check_boundary("campus").is_ok() && check_boundary("building:B").is_ok());
        assert!(check_boundary("building:").is_err() && check_boundary("x").is_err());
    }
}
