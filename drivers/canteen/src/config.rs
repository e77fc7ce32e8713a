//! `driver = "canteen"`: the device table, validated purely.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use campusgw_sdk::{BuildContext, BuildError, ConfigIssue, DriverConfig, FieldPath};
use chrono::{FixedOffset, NaiveTime};
use serde::Deserialize;

use crate::driver::{CanteenDriver, Settings, TerminalAuth};
use crate::ledger::{MealPeriod, Rules};

/// The driver kind.
pub const KIND: &str = "canteen";

/// Default largest amount of one sale, cents (200 yuan: no school meal costs more).
pub const DEFAULT_MAX_AMOUNT_CENTS: i64 = 20_000;

/// Default connection cap.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;

/// One terminal.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TerminalEntry {
    /// Its id, as it sends it.
    pub id: String,
    /// SHA-256 of its token, hex (`printf %s TOKEN | sha256sum`): the token is never stored.
    pub token_sha256: String,
}

/// One meal period.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MealEntry {
    /// Name.
    pub name: String,
    /// `HH:MM` local, inclusive.
    pub start: String,
    /// `HH:MM` local, exclusive.
    pub end: String,
    /// Per-meal limit for accounts without their own.
    #[serde(default)]
    pub limit_cents: Option<i64>,
}

/// The canteen device table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanteenConfig {
    /// Where terminals connect.
    pub listen: SocketAddr,
    /// PEM certificate chain for HTTPS.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Plain HTTP off loopback: only when set (tokens then cross the LAN in clear).
    #[serde(default)]
    pub allow_http: bool,
    /// The school's UTC offset, `+08:00`.
    #[serde(default = "default_offset")]
    pub utc_offset: String,
    /// Largest amount of one sale, cents; larger is `amount_invalid` and a security event.
    #[serde(default = "default_max_amount")]
    pub max_amount_cents: i64,
    /// Daily limit for accounts without their own.
    #[serde(default)]
    pub daily_limit_cents: Option<i64>,
    /// A card list (JSON, the platform's change format) applied at start, once per change id.
    #[serde(default)]
    pub card_list: Option<PathBuf>,
    /// Connections served at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// The terminals accepted.
    #[serde(default)]
    pub terminals: Vec<TerminalEntry>,
    /// Meal periods (none: any time).
    #[serde(default)]
    pub meals: Vec<MealEntry>,
}

fn default_offset() -> String {
    "+08:00".into()
}

fn default_max_amount() -> i64 {
    DEFAULT_MAX_AMOUNT_CENTS
}

fn default_max_connections() -> usize {
    DEFAULT_MAX_CONNECTIONS
}

fn parse_offset(s: &str) -> Option<FixedOffset> {
    s.parse::<FixedOffset>().ok()
}

fn parse_time(s: &str) -> Option<NaiveTime> {
    NaiveTime::parse_from_str(s, "%H:%M").ok()
}

fn parse_hash(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl CanteenConfig {
    fn rules(&self) -> Rules {
        Rules {
            offset: parse_offset(&self.utc_offset)
                .unwrap_or_else(|| FixedOffset::east_opt(8 * 3600).expect("valid offset")),
            meals: self
                .meals
                .iter()
                .filter_map(|m| {
                    Some(MealPeriod {
                        name: m.name.clone(),
                        start: parse_time(&m.start)?,
                        end: parse_time(&m.end)?,
                        limit_cents: m.limit_cents,
                    })
                })
                .collect(),
            daily_limit_cents: self.daily_limit_cents,
        }
    }

    fn check_listener(&self, at: &FieldPath, out: &mut Vec<ConfigIssue>) {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => out.push(ConfigIssue::new(
                at.key("tls_key"),
                "tls_cert is set without tls_key; give both (PEM files)",
            )),
            (None, Some(_)) => out.push(ConfigIssue::new(
                at.key("tls_cert"),
                "tls_key is set without tls_cert; give both (PEM files)",
            )),
            (None, None) if !self.listen.ip().is_loopback() && !self.allow_http => {
                out.push(ConfigIssue::new(
                    at.key("listen"),
                    "terminals would send their tokens in clear: set tls_cert and tls_key, or allow_http = true to accept plain HTTP on the LAN",
                ));
            }
            _ => {}
        }
        if self.max_connections == 0 {
            out.push(ConfigIssue::new(
                at.key("max_connections"),
                "must be at least 1",
            ));
        }
    }

    fn check_money(&self, at: &FieldPath, out: &mut Vec<ConfigIssue>) {
        if parse_offset(&self.utc_offset).is_none() {
            out.push(ConfigIssue::new(
                at.key("utc_offset"),
                format!(
                    "{:?} is not a UTC offset; write e.g. \"+08:00\"",
                    self.utc_offset
                ),
            ));
        }
        if !(1..=10_000_000).contains(&self.max_amount_cents) {
            out.push(ConfigIssue::new(
                at.key("max_amount_cents"),
                "must be 1-10000000 (cents)",
            ));
        }
        if self.daily_limit_cents.is_some_and(|d| d <= 0) {
            out.push(ConfigIssue::new(
                at.key("daily_limit_cents"),
                "must be positive (cents), or left out for no limit",
            ));
        }
    }

    fn check_terminals(&self, at: &FieldPath, out: &mut Vec<ConfigIssue>) {
        if self.terminals.is_empty() {
            out.push(ConfigIssue::new(
                at.key("terminals"),
                "no terminal is configured; add [[device.terminals]] with id and token_sha256",
            ));
        }
        let mut seen = HashSet::new();
        for (i, t) in self.terminals.iter().enumerate() {
            let p = at.key("terminals").index(i);
            if let Err(e) = crate::proto::terminal_id(&t.id) {
                out.push(ConfigIssue::new(p.key("id"), e));
            }
            if !seen.insert(t.id.as_str()) {
                out.push(ConfigIssue::new(
                    p.key("id"),
                    format!("terminal {:?} is listed twice", t.id),
                ));
            }
            if parse_hash(&t.token_sha256).is_none() {
                out.push(ConfigIssue::new(
                    p.key("token_sha256"),
                    "must be 64 hex digits: the SHA-256 of the token (printf %s TOKEN | sha256sum)",
                ));
            }
        }
    }

    fn check_meals(&self, at: &FieldPath, out: &mut Vec<ConfigIssue>) {
        let mut seen = HashSet::new();
        let mut spans = Vec::new();
        for (i, m) in self.meals.iter().enumerate() {
            let p = at.key("meals").index(i);
            if !seen.insert(m.name.as_str()) || m.name.is_empty() {
                out.push(ConfigIssue::new(
                    p.key("name"),
                    format!("meal name {:?} is empty or listed twice", m.name),
                ));
            }
            let (s, e) = (parse_time(&m.start), parse_time(&m.end));
            if s.is_none() {
                out.push(ConfigIssue::new(
                    p.key("start"),
                    "write the time as \"HH:MM\"",
                ));
            }
            if e.is_none() {
                out.push(ConfigIssue::new(
                    p.key("end"),
                    "write the time as \"HH:MM\"",
                ));
            }
            if let (Some(s), Some(e)) = (s, e) {
                if s >= e {
                    out.push(ConfigIssue::new(p.key("end"), "must be after start"));
                } else if spans.iter().any(|(a, b)| s < *b && *a < e) {
                    out.push(ConfigIssue::new(
                        p.key("start"),
                        "overlaps another meal period",
                    ));
                }
                spans.push((s, e));
            }
            if m.limit_cents.is_some_and(|l| l <= 0) {
                out.push(ConfigIssue::new(
                    p.key("limit_cents"),
                    "must be positive (cents)",
                ));
            }
        }
    }
}

impl DriverConfig for CanteenConfig {
    const KIND: &'static str = KIND;
    type Driver = CanteenDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        self.check_listener(at, &mut out);
        self.check_money(at, &mut out);
        self.check_terminals(at, &mut out);
        self.check_meals(at, &mut out);
        out
    }

    fn build(&self, cx: &BuildContext) -> Result<CanteenDriver, BuildError> {
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => Some(
                crate::driver::load_tls(c, k).map_err(|e| BuildError::Invalid(e.to_string()))?,
            ),
            _ => None,
        };
        let card_list = match &self.card_list {
            Some(p) => {
                let text = std::fs::read(p).map_err(|source| BuildError::Io {
                    what: format!("card list {}", p.display()),
                    source,
                })?;
                let list: crate::sync::ChangeSet = serde_json::from_slice(&text)
                    .map_err(|e| BuildError::Invalid(format!("card list {}: {e}", p.display())))?;
                list.changes
            }
            None => Vec::new(),
        };
        let terminals = self
            .terminals
            .iter()
            .filter_map(|t| {
                Some(TerminalAuth {
                    id: t.id.clone(),
                    token_sha256: parse_hash(&t.token_sha256)?,
                })
            })
            .collect();
        Ok(CanteenDriver::new(Settings {
            listen: self.listen,
            tls,
            ledger_path: cx.data_dir.join(format!("canteen-{}.db", cx.device)),
            rules: self.rules(),
            max_amount_cents: self.max_amount_cents,
            max_connections: self.max_connections,
            terminals,
            card_list,
            clock: crate::driver::system_clock(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> CanteenConfig {
        toml::from_str(s).unwrap()
    }

    const HASH: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    #[test]
    fn a_good_config_has_no_issues() {
        let c = parse(&format!(
            r#"listen = "127.0.0.1:8443"
               [[terminals]]
               id = "t01"
               token_sha256 = "{HASH}"
               [[meals]]
               name = "lunch"
               start = "11:00"
               end = "13:30"
               limit_cents = 2500"#
        ));
        assert_eq!(c.validate(&FieldPath::root()), vec![]);
        assert_eq!(c.rules().meals.len(), 1);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c = parse(
            r#"listen = "0.0.0.0:8443"
               utc_offset = "CST"
               max_amount_cents = -1
               [[terminals]]
               id = "t 1"
               token_sha256 = "secret"
               [[terminals]]
               id = "t 1"
               token_sha256 = "abc"
               [[meals]]
               name = "lunch"
               start = "13:00"
               end = "11:00"
               [[meals]]
               name = "lunch"
               start = "25:00"
               end = "12:00""#,
        );
        let issues: Vec<String> = c
            .validate(&FieldPath::root().key("device").index(0))
            .iter()
            .map(ToString::to_string)
            .collect();
        for want in [
            "device[0].listen: terminals would send their tokens in clear",
            "device[0].utc_offset:",
            "device[0].max_amount_cents:",
            "device[0].terminals[0].id:",
            "device[0].terminals[1].id: terminal \"t 1\" is listed twice",
            "device[0].terminals[0].token_sha256:",
            "device[0].meals[0].end: must be after start",
            "device[0].meals[1].name:",
            "device[0].meals[1].start:",
        ] {
            assert!(
                issues.iter().any(|i| i.starts_with(want)),
                "{want} in {issues:#?}"
            );
        }
    }

    #[test]
    fn plain_http_off_loopback_needs_the_opt_in_and_no_terminals_is_refused() {
        let c = parse(
            r#"listen = "0.0.0.0:8443"
                          allow_http = true"#,
        );
        let issues = c.validate(&FieldPath::root());
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path.to_string(), "terminals");
    }
}
