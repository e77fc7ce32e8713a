//! Commands from the county platform on `{prefix}/{gateway_id}/commands/{id}`.
//!
//! # Wire format (docs/uplinks.md, "County commands", is the reference)
//! ```json
//! {"body": "<the command as JSON text>", "signature": "<base64 Ed25519 signature of body's UTF-8 bytes>"}
//! ```
//! The body, once the signature checks out against one of the configured public keys:
//! ```json
//! {"gateway": "school-042", "id": "c-17", "kind": "status" | "resync" | "relay.set" | ...,
//!  "issued_at": "2025-01-01T08:00:00Z", "nonce": "unique string",
//!  "target": "device id or scope (device commands)", "args": {}}
//! ```
//! Signing the body's exact bytes avoids any JSON canonicalisation. A command is executed
//! only if: the message is at most `max_bytes`; the signature verifies; `gateway` is this
//! gateway's id (a command captured at one school cannot be replayed at another sharing
//! the key); `id` equals the topic's last level; `issued_at` is within `window` of the
//! gateway clock; the nonce was never accepted while its command could still be valid
//! (remembered in the journal, table `county_nonces`, so a restart does not forget it); and
//! an `allow` rule names its kind and, for a device command, its exact target. Anything else
//! is refused with a reply naming the reason, and never executed.
//!
//! Refusals are counted (`campusgw_uplink_commands_refused_total{uplink, reason}`) and
//! summarised in at most one journaled `county.commands_refused` event a minute
//! ([`RefusalSummary`]), so junk on the commands topic costs no fsync per message.
//!
//! Kinds: `status` (the heartbeat document), `resync` (`args.from_seq`: republish from that
//! seq, or `args.from_time` (RFC 3339): from the first event the gateway received at or
//! after that time; cursors never move back), and device command kinds (`relay.set`, ...) passed to the
//! [`CommandRouter`](crate::commands::CommandRouter) with `target`.
//!
//! ```toml
//! [uplink.commands]
//! public_keys = ["<base64 32-byte Ed25519 public key>"]
//! allow = ["status", "resync",
//!          { kind = "relay.set", targets = ["fire_panel_a"] },
//!          { kind = "door.unlock", targets = ["building:A"] }]
//! window = "5m"          # default; at most 1h
//! max_bytes = 16384      # default; at most 1 MiB
//! ```
//! A device command kind given as a plain string is a config error: every target it may
//! reach must be listed (`target = "all"` only where `"all"` is listed).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use campusgw_sdk::command::CommandKind;
use campusgw_sdk::{Command, ConfigIssue, DeviceId, FieldPath, Target};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, SigningKey, Verifier, VerifyingKey};
use serde::Deserialize;

use crate::config::{HumanDuration, typed_value};
use crate::journal::nonces::StoredNonce;

/// Replay-cache capacity. When it is full of nonces whose commands are still valid, new
/// commands are refused (forgetting a valid nonce would let its command run twice).
const NONCE_CAP: usize = 100_000;

/// The longest accepted `window`: a longer one keeps a captured command usable longer.
pub const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// The largest accepted `max_bytes`.
pub const MAX_MAX_BYTES: usize = 1024 * 1024;

/// At most one `county.commands_refused` event is journaled per this period.
pub const SUMMARY_PERIOD: Duration = Duration::from_secs(60);

/// Message ids listed in a refusal summary.
const SUMMARY_IDS: usize = 5;

/// One `allow` entry: a kind and, for device commands, the targets it may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    /// `status`, `resync` or a device command kind.
    pub kind: String,
    /// Exact targets (device ids or scopes such as `building:A` or `all`); empty for
    /// `status` and `resync`, which take none.
    pub targets: Vec<String>,
}

/// Which county commands are accepted.
#[derive(Debug, Clone)]
pub struct CommandPolicy {
    /// Keys whose signatures are accepted.
    pub keys: Vec<VerifyingKey>,
    /// Kinds (and targets) allowed.
    pub allow: Vec<AllowRule>,
    /// Largest accepted |now - issued_at|.
    pub window: Duration,
    /// Largest accepted message.
    pub max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRaw {
    public_keys: Vec<String>,
    allow: Vec<toml::Value>,
    window: Option<HumanDuration>,
    max_bytes: Option<usize>,
}

fn targetless(kind: &str) -> bool {
    kind == "status" || kind == "resync"
}

fn parse_rule(v: &toml::Value, at: &FieldPath, issues: &mut Vec<ConfigIssue>) -> Option<AllowRule> {
    let check_kind = |k: &str, issues: &mut Vec<ConfigIssue>, at: &FieldPath| {
        let ok = targetless(k) || CommandKind::new(k.to_owned()).is_ok();
        if !ok {
            issues.push(ConfigIssue::new(
                at.clone(),
                format!("invalid command kind {k:?}"),
            ));
        }
        ok
    };
    match v {
        toml::Value::String(k) => {
            if !check_kind(k, issues, at) {
                return None;
            }
            if !targetless(k) {
                issues.push(ConfigIssue::new(
                    at.clone(),
                    format!(
                        "device command {k:?} needs the targets it may reach: write \
                         {{ kind = {k:?}, targets = [\"device_id\", \"building:A\"] }} \
                         (\"all\" only if every device may receive it)"
                    ),
                ));
                return None;
            }
            Some(AllowRule {
                kind: k.clone(),
                targets: Vec::new(),
            })
        }
        toml::Value::Table(t) => {
            for key in t.keys() {
                if key != "kind" && key != "targets" {
                    issues.push(ConfigIssue::new(
                        at.key(key),
                        format!("unknown key {key:?}; an allow rule has `kind` and `targets`"),
                    ));
                }
            }
            let Some(kind) = t.get("kind").and_then(toml::Value::as_str) else {
                issues.push(ConfigIssue::new(
                    at.key("kind"),
                    "an allow rule needs `kind = \"...\"` (a string)",
                ));
                return None;
            };
            if !check_kind(kind, issues, &at.key("kind")) {
                return None;
            }
            let targets: Vec<String> = match t.get("targets") {
                None => Vec::new(),
                Some(toml::Value::Array(a)) => {
                    let mut out = Vec::new();
                    for (i, x) in a.iter().enumerate() {
                        match x.as_str() {
                            Some(s) if !s.is_empty() => out.push(s.to_owned()),
                            _ => issues.push(ConfigIssue::new(
                                at.key("targets").index(i),
                                "a target is a non-empty string (device id or scope)",
                            )),
                        }
                    }
                    out
                }
                Some(_) => {
                    issues.push(ConfigIssue::new(
                        at.key("targets"),
                        "targets is a list of strings",
                    ));
                    return None;
                }
            };
            if targetless(kind) && !targets.is_empty() {
                issues.push(ConfigIssue::new(
                    at.key("targets"),
                    format!("{kind:?} takes no target; write it as the plain string {kind:?}"),
                ));
                return None;
            }
            if !targetless(kind) && targets.is_empty() {
                issues.push(ConfigIssue::new(
                    at.key("targets"),
                    format!("device command {kind:?} needs at least one target"),
                ));
                return None;
            }
            Some(AllowRule {
                kind: kind.to_owned(),
                targets,
            })
        }
        _ => {
            issues.push(ConfigIssue::new(
                at.clone(),
                "an allow entry is a kind (\"status\") or { kind = \"...\", targets = [...] }",
            ));
            None
        }
    }
}

impl CommandPolicy {
    /// Parses an `[uplink.commands]` table on its own (tools and tests).
    ///
    /// # Errors
    /// Every problem found, located under `at`.
    pub fn from_toml(v: toml::Value, at: &FieldPath) -> Result<CommandPolicy, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        match CommandPolicy::parse(v, at, &mut issues) {
            Some(p) if issues.is_empty() => Ok(p),
            _ => Err(issues),
        }
    }

    pub(crate) fn parse(
        v: toml::Value,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<CommandPolicy> {
        let raw: PolicyRaw = typed_value(v, at, issues)?;
        let mut keys = Vec::new();
        for (i, k) in raw.public_keys.iter().enumerate() {
            match parse_key(k) {
                Ok(k) => keys.push(k),
                Err(m) => issues.push(ConfigIssue::new(at.key("public_keys").index(i), m)),
            }
        }
        if raw.public_keys.is_empty() {
            issues.push(ConfigIssue::new(
                at.key("public_keys"),
                "at least one public key is needed to accept commands",
            ));
        }
        let mut allow = Vec::new();
        for (i, v) in raw.allow.iter().enumerate() {
            if let Some(r) = parse_rule(v, &at.key("allow").index(i), issues) {
                allow.push(r);
            }
        }
        let window = raw.window.map_or(Duration::from_secs(300), |d| d.0);
        if window > MAX_WINDOW || window.is_zero() {
            issues.push(ConfigIssue::new(
                at.key("window"),
                format!(
                    "window of {} is out of range: between 1s and 1h (a longer window keeps a \
                     captured command usable longer)",
                    humantime::format_duration(window)
                ),
            ));
        }
        let max_bytes = raw.max_bytes.unwrap_or(16 * 1024);
        if max_bytes > MAX_MAX_BYTES || max_bytes == 0 {
            issues.push(ConfigIssue::new(
                at.key("max_bytes"),
                format!("max_bytes of {max_bytes} is out of range: 1 to 1048576 (1 MiB)"),
            ));
        }
        Some(CommandPolicy {
            keys,
            allow,
            window,
            max_bytes,
        })
    }
}

fn parse_key(s: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(s.trim())
        .map_err(|e| format!("public key is not base64: {e}"))?;
    let arr: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "an Ed25519 public key is 32 bytes".to_owned())?;
    VerifyingKey::from_bytes(&arr).map_err(|e| format!("not an Ed25519 public key: {e}"))
}

/// Where a resync starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResyncFrom {
    /// This journal seq.
    Seq(u64),
    /// The first event the gateway received at or after this time.
    Time(chrono::DateTime<chrono::Utc>),
}

/// A verified, allowed county command.
#[derive(Debug, Clone, PartialEq)]
pub enum CountyCommand {
    /// Reply with the status document.
    Status,
    /// Republish from a seq or a time.
    Resync(ResyncFrom),
    /// Pass to the device that the target names.
    Device(Command),
}

/// A command that passed every check, with what must be made durable before it runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    /// What to do.
    pub command: CountyCommand,
    /// Its nonce (to be stored in the journal: [`crate::journal::Journal::remember_nonce`]).
    pub nonce: String,
    /// Its `issued_at`.
    pub issued_at: DateTime<Utc>,
    /// When its nonce may be forgotten (`issued_at + window`).
    pub expires_at: DateTime<Utc>,
}

/// Why a command was refused (the metric label and the summary's key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefusalReason {
    /// Larger than `max_bytes`.
    TooLarge,
    /// Not the envelope, or a body that is not a command.
    Malformed,
    /// No signature, or none of the keys verifies it.
    BadSignature,
    /// The topic's last level is no usable id.
    BadTopic,
    /// The body names another gateway.
    WrongGateway,
    /// The body id is not the topic id.
    IdMismatch,
    /// `issued_at` outside the window.
    OutsideWindow,
    /// Kind or target not allowed.
    NotAllowed,
    /// Arguments or target unusable.
    BadCommand,
    /// The nonce was already accepted.
    Replay,
    /// Replay protection cannot work (cache full, journal unreadable or unwritable).
    Unavailable,
}

impl RefusalReason {
    /// Refused before its signature was verified: anyone with access to the broker could
    /// have sent it.
    pub fn is_unauthenticated(self) -> bool {
        matches!(
            self,
            RefusalReason::TooLarge
                | RefusalReason::Malformed
                | RefusalReason::BadSignature
                | RefusalReason::BadTopic
        )
    }

    /// The label (`too_large`, `malformed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::TooLarge => "too_large",
            RefusalReason::Malformed => "malformed",
            RefusalReason::BadSignature => "bad_signature",
            RefusalReason::BadTopic => "bad_topic",
            RefusalReason::WrongGateway => "wrong_gateway",
            RefusalReason::IdMismatch => "id_mismatch",
            RefusalReason::OutsideWindow => "outside_window",
            RefusalReason::NotAllowed => "not_allowed",
            RefusalReason::BadCommand => "bad_command",
            RefusalReason::Replay => "replay",
            RefusalReason::Unavailable => "unavailable",
        }
    }
}

/// A refused command: the reason's label and the sentence for the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Which kind of refusal.
    pub reason: RefusalReason,
    /// What to tell the county.
    pub message: String,
}

fn refuse<T>(reason: RefusalReason, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        reason,
        message: message.into(),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    body: String,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    gateway: String,
    id: String,
    kind: String,
    issued_at: DateTime<Utc>,
    nonce: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
}

/// Verifies county commands and remembers nonces (in memory; the uplink also stores each
/// accepted nonce in the journal and [`CommandGate::preload`]s them at start).
pub struct CommandGate {
    policy: CommandPolicy,
    gateway: String,
    seen: Mutex<ReplayCache>,
}

#[derive(Default)]
struct ReplayCache {
    /// Nonce -> when it may be forgotten.
    by_nonce: HashMap<String, DateTime<Utc>>,
    /// Replay protection is off (journal unreadable): refuse everything.
    unavailable: Option<String>,
}

impl CommandGate {
    /// A gate applying `policy` for the gateway `gateway` (the id a body must name).
    pub fn new(policy: CommandPolicy, gateway: &str) -> CommandGate {
        CommandGate {
            policy,
            gateway: gateway.to_owned(),
            seen: Mutex::new(ReplayCache::default()),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, ReplayCache> {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers nonces stored by an earlier run; `Err` (the journal could not be read)
    /// makes the gate refuse every command: without them a replay could not be recognised.
    pub fn preload(&self, stored: Result<Vec<StoredNonce>, String>) {
        let mut c = self.cache();
        match stored {
            Ok(v) => {
                for n in v {
                    c.by_nonce.insert(n.nonce, n.expires_at);
                }
            }
            Err(e) => c.unavailable = Some(e),
        }
    }

    /// Checks a message that arrived on `commands/{topic_id}` at `now`. An accepted nonce
    /// is remembered in memory at once (even if storing it in the journal later fails, this
    /// process still refuses its replay).
    ///
    /// # Errors
    /// The reason it is refused, for the reply.
    pub fn verify(
        &self,
        topic_id: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Accepted, Refusal> {
        use RefusalReason as R;
        if payload.len() > self.policy.max_bytes {
            return refuse(
                R::TooLarge,
                format!(
                    "message of {} bytes exceeds the limit of {} bytes",
                    payload.len(),
                    self.policy.max_bytes
                ),
            );
        }
        let env: Envelope = match serde_json::from_slice(payload) {
            Ok(e) => e,
            Err(e) => {
                return refuse(
                    R::Malformed,
                    format!(
                        "malformed command: {e}; expected {{\"body\": \"...\", \"signature\": \"...\"}}"
                    ),
                );
            }
        };
        let Some(sig) = B64
            .decode(env.signature.trim())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
        else {
            return refuse(
                R::BadSignature,
                "signature is not a base64 Ed25519 signature",
            );
        };
        if !self
            .policy
            .keys
            .iter()
            .any(|k| k.verify(env.body.as_bytes(), &sig).is_ok())
        {
            return refuse(
                R::BadSignature,
                "signature does not verify against any configured public key",
            );
        }
        let body: Body = match serde_json::from_str(&env.body) {
            Ok(b) => b,
            Err(e) => return refuse(R::Malformed, format!("malformed command body: {e}")),
        };
        if body.gateway != self.gateway {
            return refuse(
                R::WrongGateway,
                format!(
                    "command is for gateway {:?}, not this gateway {:?}",
                    body.gateway, self.gateway
                ),
            );
        }
        if body.id != topic_id {
            return refuse(
                R::IdMismatch,
                format!(
                    "body id {:?} does not match the topic id {topic_id:?}",
                    body.id
                ),
            );
        }
        let window =
            chrono::Duration::from_std(self.policy.window).unwrap_or(chrono::Duration::MAX);
        if (now - body.issued_at).abs() > window {
            return refuse(
                R::OutsideWindow,
                format!(
                    "issued_at {} is outside the accepted window of {} around the gateway clock {}",
                    body.issued_at,
                    humantime::format_duration(self.policy.window),
                    now
                ),
            );
        }
        self.allowed(&body)?;
        let command = interpret(&body).map_err(|m| Refusal {
            reason: R::BadCommand,
            message: m,
        })?;
        let expires_at = body.issued_at + window;
        self.remember(&body.nonce, expires_at, now)?;
        Ok(Accepted {
            command,
            nonce: body.nonce,
            issued_at: body.issued_at,
            expires_at,
        })
    }

    fn allowed(&self, body: &Body) -> Result<(), Refusal> {
        let Some(rule) = self.policy.allow.iter().find(|r| r.kind == body.kind) else {
            return refuse(
                RefusalReason::NotAllowed,
                format!(
                    "command kind {:?} is not allowed by this gateway's config",
                    body.kind
                ),
            );
        };
        if targetless(&rule.kind) {
            return Ok(());
        }
        match body.target.as_deref() {
            Some(t) if rule.targets.iter().any(|a| a == t) => Ok(()),
            Some(t) => refuse(
                RefusalReason::NotAllowed,
                format!(
                    "target {t:?} is not allowed for {:?} by this gateway's config",
                    body.kind
                ),
            ),
            None => refuse(RefusalReason::BadCommand, "a device command needs a target"),
        }
    }

    fn remember(
        &self,
        nonce: &str,
        expires_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Refusal> {
        if nonce.is_empty() || nonce.len() > 128 {
            return refuse(
                RefusalReason::BadCommand,
                "nonce must be 1 to 128 characters",
            );
        }
        let mut c = self.cache();
        if let Some(why) = &c.unavailable {
            return refuse(
                RefusalReason::Unavailable,
                format!("replay protection unavailable ({why}); no command is accepted"),
            );
        }
        if c.by_nonce.get(nonce).is_some_and(|t| *t >= now) {
            return refuse(
                RefusalReason::Replay,
                format!("nonce {nonce:?} was already used (replay refused)"),
            );
        }
        if c.by_nonce.len() >= NONCE_CAP {
            c.by_nonce.retain(|_, t| *t >= now);
            if c.by_nonce.len() >= NONCE_CAP {
                return refuse(
                    RefusalReason::Unavailable,
                    "too many commands within the window; refused until older nonces expire",
                );
            }
        }
        c.by_nonce.insert(nonce.to_owned(), expires_at);
        Ok(())
    }
}

/// Counts refusals and hands out at most one summary per [`SUMMARY_PERIOD`] to journal
/// (`county.commands_refused`: counts by reason and the first few message ids).
#[derive(Default)]
pub struct RefusalSummary {
    state: Mutex<SummaryState>,
}

#[derive(Default)]
struct SummaryState {
    last: Option<Instant>,
    counts: BTreeMap<&'static str, u64>,
    first: Vec<serde_json::Value>,
    since: Option<DateTime<Utc>>,
}

impl SummaryState {
    fn take(&mut self, now: Instant) -> Option<serde_json::Value> {
        if self.counts.is_empty() {
            return None;
        }
        self.last = Some(now);
        let total: u64 = self.counts.values().sum();
        let doc = serde_json::json!({
            "refused": total,
            "by_reason": std::mem::take(&mut self.counts),
            "first": std::mem::take(&mut self.first),
            "since": self.since.take(),
        });
        Some(doc)
    }
}

impl RefusalSummary {
    /// Counts a refusal of message `id`; returns the summary to journal now when none was
    /// handed out within the last period.
    pub fn note(&self, id: &str, r: &Refusal, now: Instant) -> Option<serde_json::Value> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *s.counts.entry(r.reason.as_str()).or_default() += 1;
        s.since.get_or_insert_with(Utc::now);
        if s.first.len() < SUMMARY_IDS {
            // Ids come from the topic: cut, so a summary stays small whatever was sent.
            let id: String = id.chars().take(128).collect();
            s.first
                .push(serde_json::json!({"id": id, "reason": r.reason.as_str()}));
        }
        let due = s
            .last
            .is_none_or(|t| now.duration_since(t) >= SUMMARY_PERIOD);
        if due { s.take(now) } else { None }
    }

    /// The pending summary if a period has passed since the last one (or `force`).
    pub fn due(&self, now: Instant, force: bool) -> Option<serde_json::Value> {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let due = force
            || s.last
                .is_none_or(|t| now.duration_since(t) >= SUMMARY_PERIOD);
        if due { s.take(now) } else { None }
    }
}

fn interpret(b: &Body) -> Result<CountyCommand, String> {
    match b.kind.as_str() {
        "status" => Ok(CountyCommand::Status),
        "resync" => {
            let seq = b.args.get("from_seq").and_then(serde_json::Value::as_u64);
            let time = b.args.get("from_time").and_then(serde_json::Value::as_str);
            match (seq, time) {
                (Some(n), None) => Ok(CountyCommand::Resync(ResyncFrom::Seq(n))),
                (None, Some(t)) => chrono::DateTime::parse_from_rfc3339(t)
                    .map(|t| CountyCommand::Resync(ResyncFrom::Time(t.with_timezone(&chrono::Utc))))
                    .map_err(|e| format!("resync args.from_time {t:?} is not an RFC 3339 time: {e}")),
                _ => Err("resync needs exactly one of args.from_seq (a journal seq) or args.from_time (RFC 3339)".into()),
            }
        }
        kind => {
            let kind = CommandKind::new(kind.to_owned()).map_err(|e| e.to_string())?;
            let target = match b.target.as_deref() {
                None => return Err("a device command needs a target".into()),
                Some(t) if t == "all" || t.contains(':') => Target::Scope(t.to_owned()),
                Some(t) => Target::Device(DeviceId::new(t.to_owned())?),
            };
            Ok(CountyCommand::Device(Command::new(
                kind,
                target,
                b.args.clone(),
                "county",
            )))
        }
    }
}

/// Signs a command body: the envelope JSON, ready to publish. The body is serialised once
/// and those exact bytes are signed and sent (no canonicalisation).
pub fn sign(body: &serde_json::Value, key: &SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let text = body.to_string();
    let sig = key.sign(text.as_bytes());
    serde_json::json!({ "body": text, "signature": B64.encode(sig.to_bytes()) })
        .to_string()
        .into_bytes()
}

/// The base64 public key of `key`, as `public_keys` lists it.
pub fn public_key_b64(key: &SigningKey) -> String {
    B64.encode(key.verifying_key().to_bytes())
}

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The OS random source failed.
    #[error("cannot get random bytes from the OS: {0}")]
    Random(String),
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file holds no base64 32-byte Ed25519 private key.
    #[error(
        "{0}: not a campusgw county key file (one line: the base64 32-byte Ed25519 private key)"
    )]
    Format(std::path::PathBuf),
}

/// A fresh private key from the OS random source.
///
/// # Errors
/// [`KeyFileError::Random`] if the OS gives no randomness.
pub fn generate_key() -> Result<SigningKey, KeyFileError> {
    use rand::TryRngCore;
    let mut seed = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut seed)
        .map_err(|e| KeyFileError::Random(e.to_string()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Writes `key` to a new file `path`, mode 0600 (never overwrites).
///
/// # Errors
/// [`KeyFileError::Io`] if the file exists or cannot be written.
pub fn write_key_file(path: &Path, key: &SigningKey) -> Result<(), KeyFileError> {
    use std::io::Write;
    let io = |source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path).map_err(io)?;
    writeln!(f, "{}", B64.encode(key.to_bytes())).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Reads a key file written by [`write_key_file`].
///
/// # Errors
/// [`KeyFileError`] if unreadable or not a key.
pub fn read_key_file(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.to_owned(),
        source,
    })?;
    let seed: [u8; 32] = B64
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| KeyFileError::Format(path.to_owned()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// Test shorthand: the command or the refusal's message.
#[cfg(test)]
fn check(
    g: &CommandGate,
    id: &str,
    payload: &[u8],
    now: DateTime<Utc>,
) -> Result<CountyCommand, String> {
    g.verify(id, payload, now)
        .map(|a| a.command)
        .map_err(|r| r.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(key: &ed25519_dalek::SigningKey) -> CommandGate {
        CommandGate::new(
            CommandPolicy {
                keys: vec![key.verifying_key()],
                allow: vec![
                    AllowRule {
                        kind: "status".into(),
                        targets: vec![],
                    },
                    AllowRule {
                        kind: "relay.set".into(),
                        targets: vec!["relay_1".into()],
                    },
                ],
                window: Duration::from_secs(300),
                max_bytes: 4096,
            },
            "gw",
        )
    }

    proptest::proptest! {
        /// The commands topic is reachable by anyone with a broker account: any bytes are
        /// refused with a reason, never a panic.
        #[test]
        fn arbitrary_bytes_on_the_commands_topic_are_refused_never_panic(
            payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)
        ) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
            let g = gate(&key);
            proptest::prop_assert!(g.verify("c1", &payload, Utc::now()).is_err());
        }

        /// A signed command with any one byte changed is refused (or, when the change
        /// leaves the JSON meaning intact, e.g. an escape, accepted as the same command).
        #[test]
        fn a_signed_command_with_one_byte_changed_is_never_taken_for_another(
            at in 0usize..400, byte in proptest::prelude::any::<u8>()
        ) {
            let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
            let g = gate(&key);
            let mut msg = sign(&body("c1", "relay.set", Utc::now(), "n-1"), &key);
            let i = at % msg.len();
            let changed = msg[i] != byte;
            msg[i] = byte;
            if let Ok(a) = g.verify("c1", &msg, Utc::now()) {
                proptest::prop_assert!(!changed || format!("{a:?}").contains("relay_1"), "{a:?}");
            }
        }
    }

    fn body(id: &str, kind: &str, at: DateTime<Utc>, nonce: &str) -> serde_json::Value {
        serde_json::json!({"gateway": "gw", "id": id, "kind": kind, "issued_at": at, "nonce": nonce, "target": "relay_1", "args": {"on": true}})
    }

    #[test]
    fn signed_fresh_allowed_commands_pass_and_others_are_refused_with_reasons() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let ok = sign(&body("c1", "relay.set", now, "n1"), &key);
        assert!(matches!(
            check(&g, "c1", &ok, now),
            Ok(CountyCommand::Device(_))
        ));
        let replay = check(&g, "c1", &ok, now).expect_err("replay");
        assert!(replay.contains("replay"), "{replay}");
        let forged = sign(&body("c2", "status", now, "n2"), &other);
        assert!(
            check(&g, "c2", &forged, now)
                .expect_err("forged")
                .contains("signature")
        );
        let old = sign(
            &body("c3", "status", now - chrono::Duration::minutes(10), "n3"),
            &key,
        );
        assert!(
            check(&g, "c3", &old, now)
                .expect_err("expired")
                .contains("window")
        );
        let denied = sign(&body("c4", "door.unlock", now, "n4"), &key);
        assert!(
            check(&g, "c4", &denied, now)
                .expect_err("denied")
                .contains("not allowed")
        );
        assert!(
            check(&g, "c5", b"{not json", now)
                .expect_err("garbage")
                .contains("malformed")
        );
        let big = vec![b' '; 5000];
        assert!(
            check(&g, "c6", &big, now)
                .expect_err("big")
                .contains("exceeds")
        );
        let wrong_topic = sign(&body("c7", "status", now, "n7"), &key);
        assert!(
            check(&g, "c8", &wrong_topic, now)
                .expect_err("topic")
                .contains("topic")
        );
    }

    #[test]
    fn resync_starts_from_a_seq_or_a_time_and_nothing_else() {
        let at = |args: serde_json::Value| {
            let b: Body = serde_json::from_value(serde_json::json!({
                "gateway": "gw", "id": "r", "kind": "resync", "issued_at": Utc::now(), "nonce": "n", "args": args
            }))
            .expect("valid body");
            interpret(&b)
        };
        assert_eq!(
            at(serde_json::json!({"from_seq": 42})),
            Ok(CountyCommand::Resync(ResyncFrom::Seq(42)))
        );
        let t = "2026-11-26T08:00:00+08:00";
        let want = DateTime::parse_from_rfc3339(t)
            .expect("valid")
            .with_timezone(&Utc);
        assert_eq!(
            at(serde_json::json!({"from_time": t})),
            Ok(CountyCommand::Resync(ResyncFrom::Time(want)))
        );
        assert!(at(serde_json::json!({"from_time": "yesterday"})).is_err());
        assert!(at(serde_json::json!({})).is_err());
        assert!(at(serde_json::json!({"from_seq": 1, "from_time": t})).is_err());
    }
}

/// Future-dated commands (issue 7, item 8): the window applies both ways around the
/// gateway clock, and a nonce is remembered for as long as its command could be valid.
#[cfg(test)]
mod future_dated_tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(300);

    fn gate(key: &ed25519_dalek::SigningKey) -> CommandGate {
        CommandGate::new(
            CommandPolicy {
                keys: vec![key.verifying_key()],
                allow: vec![AllowRule {
                    kind: "status".into(),
                    targets: vec![],
                }],
                window: WINDOW,
                max_bytes: 4096,
            },
            "gw",
        )
    }

    fn status_at(id: &str, at: DateTime<Utc>, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        let body = serde_json::json!({"gateway": "gw", "id": id, "kind": "status", "issued_at": at, "nonce": id});
        sign(&body, key)
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    #[test]
    fn a_signed_command_issued_beyond_the_window_in_the_future_is_refused() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let early = status_at("f1", now + secs(301), &key);
        let why = check(&g, "f1", &early, now).expect_err("future-dated");
        assert!(why.contains("outside the accepted window"), "{why}");
        let far = status_at("f2", now + chrono::Duration::days(365), &key);
        assert!(check(&g, "f2", &far, now).is_err(), "a year ahead");
    }

    #[test]
    fn a_signed_command_issued_just_inside_the_window_in_the_future_is_accepted() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let inside = status_at("f3", now + secs(299), &key);
        assert_eq!(check(&g, "f3", &inside, now), Ok(CountyCommand::Status));
        let edge = status_at("f4", now + secs(300), &key);
        assert_eq!(
            check(&g, "f4", &edge, now),
            Ok(CountyCommand::Status),
            "the window's edge is inside it"
        );
    }

    /// A command dated `window` ahead stays valid until `2 × window` after it arrived; its
    /// nonce must be remembered that long, or a replay near the end would run it twice.
    #[test]
    fn a_future_dated_command_cannot_be_replayed_while_its_issued_at_is_still_inside_the_window() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let cmd = status_at("f5", now + secs(299), &key);
        assert_eq!(check(&g, "f5", &cmd, now), Ok(CountyCommand::Status));
        let later = now + secs(598);
        let why = check(&g, "f5", &cmd, later).expect_err("replay");
        assert!(why.contains("replay"), "{why}");
    }
}
