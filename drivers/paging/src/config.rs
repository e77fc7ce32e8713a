//! The `driver = "sip_paging"` device table.
//!
//! ```toml
//! bind = "0.0.0.0:5060"          # our SIP socket (RTP goes out from a port per zone)
//! user = "campusgw"              # user part of From/Contact
//! codecs = ["pcma", "pcmu"]      # offered, preferred first
//! profile = "generic"            # auto-answer headers: generic | yealink | polycom | answer_mode | intercom
//! answer_timeout = "5s"          # a speaker not answering within this has failed this attempt
//! retry = { attempts = 3, backoff = "2s" }
//! [[zone]]
//! device = "pa_a_1f"
//! location = "main/A/1"
//! speakers = [
//!   { uri = "sip:spk1@10.0.3.21" },
//!   { uri = "sip:pager@10.0.3.2:5070", profile = "polycom", user = "pa", password = "secret" },
//! ]
//! [messages.evacuation]          # see messages.rs; built-in evacuation, lockdown, bell
//! ```
//!
//! Speaker hosts are IP literals: speakers sit on the school LAN and an evacuation must not
//! wait on DNS.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use campusgw_sdk::{
    BuildContext, BuildError, ConfigIssue, DeviceId, DriverConfig, FieldPath, HumanDuration,
    Location,
};
use serde::Deserialize;

use crate::driver::SipPagingDriver;
use crate::messages::{self, Library, MessageEntry};
use crate::rtp::Codec;
use crate::sip::{Credentials, Profile, Target};

/// The sip_paging driver's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SipPagingConfig {
    /// Local SIP socket.
    #[serde(default = "default_bind")]
    pub bind: String,
    /// User part of From and Contact.
    #[serde(default = "default_user")]
    pub user: String,
    /// Codecs offered, preferred first.
    #[serde(default = "default_codecs")]
    pub codecs: Vec<Codec>,
    /// Default auto-answer dialect.
    #[serde(default)]
    pub profile: Profile,
    /// Per-attempt answer timeout.
    #[serde(default = "default_answer_timeout")]
    pub answer_timeout: HumanDuration,
    /// Retries of a speaker that fails.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The zones.
    #[serde(default)]
    pub zone: Vec<ZoneEntry>,
    /// Message library (added to the built-ins).
    #[serde(default)]
    pub messages: BTreeMap<String, MessageEntry>,
    /// Building id → WAV naming it, for `{building}` segments.
    #[serde(default)]
    pub building_clips: BTreeMap<String, String>,
}

/// How a failing speaker is retried.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all (>= 1); a speaker hanging up mid-message counts as one.
    pub attempts: u32,
    /// First back-off between attempts (doubling, jittered, up to 8x).
    pub backoff: HumanDuration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 3,
            backoff: HumanDuration(Duration::from_secs(2)),
        }
    }
}

/// One `[[zone]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZoneEntry {
    /// The zone's device id (commands address it; events carry it).
    pub device: DeviceId,
    /// Where it is (`building:A` scopes reach it).
    #[serde(default)]
    pub location: Option<Location>,
    /// Its speakers.
    pub speakers: Vec<SpeakerEntry>,
}

/// One speaker or paging gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakerEntry {
    /// `sip:user@ip[:port]`.
    pub uri: String,
    /// Overrides the driver's `profile`.
    #[serde(default)]
    pub profile: Option<Profile>,
    /// Digest user.
    #[serde(default)]
    pub user: Option<String>,
    /// Digest password (not shown by `Debug`).
    #[serde(default)]
    pub password: Option<Password>,
}

/// A password from the config; `Debug` does not show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn default_bind() -> String {
    "0.0.0.0:5060".to_owned()
}
fn default_user() -> String {
    "campusgw".to_owned()
}
fn default_codecs() -> Vec<Codec> {
    vec![Codec::Pcma, Codec::Pcmu]
}
fn default_answer_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(5))
}

/// `sip:user@host:port;params` → host:port (5060 if absent; RFC 3261 §19.1.2).
pub(crate) fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let host_port = rest.rsplit('@').next()?.split([';', '?']).next()?;
    if let Ok(a) = host_port.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = host_port.trim_start_matches('[').trim_end_matches(']');
    host.parse().ok().map(|ip| SocketAddr::new(ip, 5060))
}

impl SpeakerEntry {
    pub(crate) fn target(&self, profile: Profile) -> Option<Target> {
        Some(Target {
            uri: self.uri.clone(),
            addr: uri_addr(&self.uri)?,
            profile: self.profile.unwrap_or(profile),
            auth: self
                .user
                .clone()
                .zip(self.password.clone())
                .map(|(user, p)| Credentials {
                    user,
                    password: p.0,
                }),
        })
    }
}

/// Checks shared by both drivers: unique zone ids.
pub(crate) fn check_zone_ids<'a>(
    ids: impl Iterator<Item = &'a DeviceId>,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) {
    let mut seen = HashSet::new();
    for (i, id) in ids.enumerate() {
        if !seen.insert(id.clone()) {
            issues.push(ConfigIssue::new(
                at.key("zone").index(i).key("device"),
                format!("zone {id} is listed twice"),
            ));
        }
    }
}

/// The buildings that have zones (`None` for zones without one).
pub(crate) fn buildings<'a>(
    locations: impl Iterator<Item = &'a Option<Location>>,
) -> BTreeSet<Option<String>> {
    locations
        .map(|l| l.as_ref().and_then(|l| l.building.clone()))
        .collect()
}

impl DriverConfig for SipPagingConfig {
    const KIND: &'static str = "sip_paging";
    type Driver = SipPagingDriver;

    fn validate(&self, at: &FieldPath) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if self.bind.parse::<SocketAddr>().is_err() {
            issues.push(ConfigIssue::new(
                at.key("bind"),
                format!("{:?} is not ip:port", self.bind),
            ));
        }
        if self.codecs.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("codecs"),
                "offer at least one codec",
            ));
        }
        if self.retry.attempts == 0 {
            issues.push(ConfigIssue::new(
                at.key("retry").key("attempts"),
                "attempts must be at least 1",
            ));
        }
        if self.zone.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("zone"),
                "a sip_paging device needs at least one [[zone]]",
            ));
        }
        check_zone_ids(self.zone.iter().map(|z| &z.device), at, &mut issues);
        for (i, z) in self.zone.iter().enumerate() {
            let at = at.key("zone").index(i);
            if z.speakers.is_empty() {
                issues.push(ConfigIssue::new(
                    at.key("speakers"),
                    "a zone needs at least one speaker",
                ));
            }
            for (j, s) in z.speakers.iter().enumerate() {
                if uri_addr(&s.uri).is_none() {
                    issues.push(ConfigIssue::new(
                        at.key("speakers").index(j).key("uri"),
                        format!("{:?} is not sip:user@ip[:port] (an IP literal)", s.uri),
                    ));
                }
                if s.user.is_some() != s.password.is_some() {
                    issues.push(ConfigIssue::new(
                        at.key("speakers").index(j),
                        "give both user and password, or neither",
                    ));
                }
            }
        }
        issues.extend(messages::validate(&self.messages, &self.building_clips, at));
        issues
    }

    fn build(&self, cx: &BuildContext) -> Result<SipPagingDriver, BuildError> {
        let bind = self
            .bind
            .parse()
            .map_err(|_| BuildError::Invalid(format!("bad bind {:?}", self.bind)))?;
        let library = Library::load(
            &self.messages,
            &self.building_clips,
            &buildings(self.zone.iter().map(|z| &z.location)),
        )?;
        Ok(SipPagingDriver::new(
            self.clone(),
            bind,
            library,
            cx.device.clone(),
        ))
    }

    fn sub_devices(&self) -> Vec<(DeviceId, Option<Location>)> {
        self.zone
            .iter()
            .map(|z| (z.device.clone(), z.location.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_uris_give_their_address_with_the_default_port() {
        assert_eq!(
            uri_addr("sip:spk@10.0.0.9"),
            Some("10.0.0.9:5060".parse().unwrap())
        );
        assert_eq!(
            uri_addr("sip:spk@10.0.0.9:5070;transport=udp"),
            Some("10.0.0.9:5070".parse().unwrap())
        );
        assert_eq!(
            uri_addr("sip:[::1]:5070"),
            Some("[::1]:5070".parse().unwrap())
        );
        assert_eq!(uri_addr("sip:spk@speaker.local"), None);
        assert_eq!(uri_addr("http://x"), None);
    }

    #[test]
    fn debug_output_does_not_show_speaker_passwords() {
        let s: SpeakerEntry =
            toml::from_str("uri = \"sip:a@10.0.0.1\"\nuser = \"pa\"\npassword = \"hunter2\"")
                .unwrap();
        let t = s.target(Profile::Generic).unwrap();
        assert!(!format!("{s:?} {t:?}").contains("hunter2"));
        assert_eq!(t.auth.unwrap().password, "hunter2");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let c: SipPagingConfig = toml::from_str(
            r#"
            bind = "nope"
            codecs = []
            [[zone]]
            device = "z1"
            speakers = [{ uri = "sip:a@host" }, { uri = "sip:b@10.0.0.1", user = "u" }]
            [[zone]]
            device = "z1"
            speakers = []
            "#,
        )
        .unwrap();
        let paths: Vec<String> = c
            .validate(&FieldPath::root())
            .iter()
            .map(|i| i.path.to_string())
            .collect();
        assert_eq!(
            paths,
            [
                "bind",
                "codecs",
                "zone[1].device",
                "zone[0].speakers[0].uri",
                "zone[0].speakers[1]",
                "zone[1].speakers"
            ]
        );
    }
}
