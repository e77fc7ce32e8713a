//! Commands from the county platform on `{prefix}/{gateway_id}/commands/{id}`.
//!
//! # Wire format
//! ```json
//! {"body": "<the command as JSON text>", "signature": "<base64 Ed25519 signature of body's UTF-8 bytes>"}
//! ```
//! The body, once the signature checks out against one of the configured public keys:
//! ```json
//! {"id": "c-17", "kind": "status" | "resync" | "relay.set" | ..., "issued_at": "2025-01-01T08:00:00Z",
//!  "nonce": "unique string", "target": "device id or scope (device commands)", "args": {}}
//! ```
//! Signing the body's exact bytes avoids any JSON canonicalisation. A command is executed
//! only if: the message is at most `max_bytes`; the signature verifies; `id` equals the
//! topic's last level; `issued_at` is within `window` of the gateway clock; the nonce was
//! not seen within the window (replays refused); and `kind` is in `allow`. Anything else
//! is refused with a reply naming the reason, and never executed.
//!
//! Kinds: `status` (the heartbeat document), `resync` (`args.from_seq`: republish from that
//! seq, or `args.from_time` (RFC 3339): from the first event the gateway received at or
//! after that time; cursors never move back), and device command kinds (`relay.set`, ...) passed to the
//! [`CommandRouter`](crate::commands::CommandRouter) with `target`.
//!
//! ```toml
//! [uplink.commands]
//! public_keys = ["<base64 32-byte Ed25519 public key>"]
//! allow = ["status", "resync", "relay.set"]
//! window = "5m"          # default
//! max_bytes = 16384      # default
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use campusgw_sdk::command::CommandKind;
use campusgw_sdk::{Command, ConfigIssue, DeviceId, FieldPath, Target};
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde::Deserialize;

use crate::config::{HumanDuration, typed_value};

/// Replay-cache capacity; beyond it the oldest nonces are forgotten (they are also past
/// the window by then unless the platform floods signed commands).
const NONCE_CAP: usize = 100_000;

/// Which county commands are accepted.
#[derive(Debug, Clone)]
pub struct CommandPolicy {
    /// Keys whose signatures are accepted.
    pub keys: Vec<VerifyingKey>,
    /// Command kinds allowed (`status`, `resync`, device command kinds).
    pub allow: Vec<String>,
    /// Largest accepted |now - issued_at|.
    pub window: Duration,
    /// Largest accepted message.
    pub max_bytes: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRaw {
    public_keys: Vec<String>,
    allow: Vec<String>,
    window: Option<HumanDuration>,
    max_bytes: Option<usize>,
}

impl CommandPolicy {
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
        for (i, k) in raw.allow.iter().enumerate() {
            if k != "status" && k != "resync" && CommandKind::new(k.clone()).is_err() {
                issues.push(ConfigIssue::new(
                    at.key("allow").index(i),
                    format!("invalid command kind {k:?}"),
                ));
            }
        }
        Some(CommandPolicy {
            keys,
            allow: raw.allow,
            window: raw.window.map_or(Duration::from_secs(300), |d| d.0),
            max_bytes: raw.max_bytes.unwrap_or(16 * 1024),
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    body: String,
    signature: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    id: String,
    kind: String,
    issued_at: DateTime<Utc>,
    nonce: String,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    args: serde_json::Value,
}

/// Verifies county commands and remembers nonces.
pub struct CommandGate {
    policy: CommandPolicy,
    seen: Mutex<ReplayCache>,
}

#[derive(Default)]
struct ReplayCache {
    by_nonce: HashMap<String, DateTime<Utc>>,
    order: VecDeque<(DateTime<Utc>, String)>,
}

impl CommandGate {
    /// A gate applying `policy`.
    pub fn new(policy: CommandPolicy) -> CommandGate {
        CommandGate {
            policy,
            seen: Mutex::new(ReplayCache::default()),
        }
    }

    /// Checks a message that arrived on `commands/{topic_id}` at `now`.
    ///
    /// # Errors
    /// The reason it is refused, for the reply.
    pub fn verify(
        &self,
        topic_id: &str,
        payload: &[u8],
        now: DateTime<Utc>,
    ) -> Result<CountyCommand, String> {
        if payload.len() > self.policy.max_bytes {
            return Err(format!(
                "message of {} bytes exceeds the limit of {} bytes",
                payload.len(),
                self.policy.max_bytes
            ));
        }
        let env: Envelope = serde_json::from_slice(payload).map_err(|e| {
            format!(
                "malformed command: {e}; expected {{\"body\": \"...\", \"signature\": \"...\"}}"
            )
        })?;
        let sig = B64
            .decode(env.signature.trim())
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .map(|b| Signature::from_bytes(&b))
            .ok_or("signature is not a base64 Ed25519 signature")?;
        if !self
            .policy
            .keys
            .iter()
            .any(|k| k.verify(env.body.as_bytes(), &sig).is_ok())
        {
            return Err("signature does not verify against any configured public key".into());
        }
        let body: Body =
            serde_json::from_str(&env.body).map_err(|e| format!("malformed command body: {e}"))?;
        if body.id != topic_id {
            return Err(format!(
                "body id {:?} does not match the topic id {topic_id:?}",
                body.id
            ));
        }
        let skew = (now - body.issued_at).abs();
        let window =
            chrono::Duration::from_std(self.policy.window).unwrap_or(chrono::Duration::MAX);
        if skew > window {
            return Err(format!(
                "issued_at {} is outside the accepted window of {} around the gateway clock {}",
                body.issued_at,
                humantime::format_duration(self.policy.window),
                now
            ));
        }
        if !self.policy.allow.contains(&body.kind) {
            return Err(format!(
                "command kind {:?} is not allowed by this gateway's config",
                body.kind
            ));
        }
        let cmd = interpret(&body)?;
        self.remember(&body.nonce, now, window)?;
        Ok(cmd)
    }

    fn remember(
        &self,
        nonce: &str,
        now: DateTime<Utc>,
        window: chrono::Duration,
    ) -> Result<(), String> {
        if nonce.is_empty() || nonce.len() > 128 {
            return Err("nonce must be 1 to 128 characters".into());
        }
        let mut c = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while let Some((t, n)) = c.order.front().cloned() {
            if now - t <= window * 2 && c.order.len() < NONCE_CAP {
                break;
            }
            c.order.pop_front();
            if c.by_nonce.get(&n) == Some(&t) {
                c.by_nonce.remove(&n);
            }
        }
        if c.by_nonce.contains_key(nonce) {
            return Err(format!("nonce {nonce:?} was already used (replay refused)"));
        }
        c.by_nonce.insert(nonce.to_owned(), now);
        c.order.push_back((now, nonce.to_owned()));
        Ok(())
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

/// Signs a command body (for tests and the platform side's tooling): the envelope JSON.
pub fn sign(body: &serde_json::Value, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let text = body.to_string();
    let sig = key.sign(text.as_bytes());
    serde_json::json!({ "body": text, "signature": B64.encode(sig.to_bytes()) })
        .to_string()
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(key: &ed25519_dalek::SigningKey) -> CommandGate {
        CommandGate::new(CommandPolicy {
            keys: vec![key.verifying_key()],
            allow: vec!["status".into(), "relay.set".into()],
            window: Duration::from_secs(300),
            max_bytes: 4096,
        })
    }

    fn body(id: &str, kind: &str, at: DateTime<Utc>, nonce: &str) -> serde_json::Value {
        serde_json::json!({"id": id, "kind": kind, "issued_at": at, "nonce": nonce, "target": "relay_1", "args": {"on": true}})
    }

    #[test]
    fn signed_fresh_allowed_commands_pass_and_others_are_refused_with_reasons() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let ok = sign(&body("c1", "relay.set", now, "n1"), &key);
        assert!(matches!(
            g.verify("c1", &ok, now),
            Ok(CountyCommand::Device(_))
        ));
        let replay = g.verify("c1", &ok, now).expect_err("replay");
        assert!(replay.contains("replay"), "{replay}");
        let forged = sign(&body("c2", "status", now, "n2"), &other);
        assert!(
            g.verify("c2", &forged, now)
                .expect_err("forged")
                .contains("signature")
        );
        let old = sign(
            &body("c3", "status", now - chrono::Duration::minutes(10), "n3"),
            &key,
        );
        assert!(
            g.verify("c3", &old, now)
                .expect_err("expired")
                .contains("window")
        );
        let denied = sign(&body("c4", "door.unlock", now, "n4"), &key);
        assert!(
            g.verify("c4", &denied, now)
                .expect_err("denied")
                .contains("not allowed")
        );
        assert!(
            g.verify("c5", b"{not json", now)
                .expect_err("garbage")
                .contains("malformed")
        );
        let big = vec![b' '; 5000];
        assert!(
            g.verify("c6", &big, now)
                .expect_err("big")
                .contains("exceeds")
        );
        let wrong_topic = sign(&body("c7", "status", now, "n7"), &key);
        assert!(
            g.verify("c8", &wrong_topic, now)
                .expect_err("topic")
                .contains("topic")
        );
    }

    #[test]
    fn resync_starts_from_a_seq_or_a_time_and_nothing_else() {
        let at = |args: serde_json::Value| {
            let b: Body = serde_json::from_value(serde_json::json!({
                "id": "r", "kind": "resync", "issued_at": Utc::now(), "nonce": "n", "args": args
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
        CommandGate::new(CommandPolicy {
            keys: vec![key.verifying_key()],
            allow: vec!["status".into()],
            window: WINDOW,
            max_bytes: 4096,
        })
    }

    fn status_at(id: &str, at: DateTime<Utc>, key: &ed25519_dalek::SigningKey) -> Vec<u8> {
        let body = serde_json::json!({"id": id, "kind": "status", "issued_at": at, "nonce": id});
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
        let why = g.verify("f1", &early, now).expect_err("future-dated");
        assert!(why.contains("outside the accepted window"), "{why}");
        let far = status_at("f2", now + chrono::Duration::days(365), &key);
        assert!(g.verify("f2", &far, now).is_err(), "a year ahead");
    }

    #[test]
    fn a_signed_command_issued_just_inside_the_window_in_the_future_is_accepted() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let g = gate(&key);
        let now = Utc::now();
        let inside = status_at("f3", now + secs(299), &key);
        assert_eq!(g.verify("f3", &inside, now), Ok(CountyCommand::Status));
        let edge = status_at("f4", now + secs(300), &key);
        assert_eq!(
            g.verify("f4", &edge, now),
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
        assert_eq!(g.verify("f5", &cmd, now), Ok(CountyCommand::Status));
        let later = now + secs(598);
        let why = g.verify("f5", &cmd, later).expect_err("replay");
        assert!(why.contains("replay"), "{why}");
    }
}
