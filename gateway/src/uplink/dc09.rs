//! `kind = "dc09"`: the police uplink. Forwards alarms to one or more alarm receiving
//! centres (ARCs: primary, then backups) as SIA DC-09 (ADM-CID or SIA-DCS), one event per
//! message, through `campusgw_dc09::transmit::Transmitter` (failover, NAK clock
//! correction, retries, supervision NULLs), on the uplink contract ([`super::contract`]).
//!
//! Outcomes (the rules of [`super::delivery`], issue 7):
//! - ACK: *delivered*. The receiver that acknowledged and when are recorded in
//!   `uplink_deliveries` ([`super::deliveries`], migration 8) before the cursor moves.
//! - NAK: the transmitter learns the receiver's clock from its timestamp and resends at
//!   once; NAKs again, timeouts, refused connections and garbage at every receiver:
//!   *retry* (reason `timeout` when every receiver timed out, else `network`), the cursor
//!   stays, `uplink.down` (class `security`) once per outage, resent after the back-off.
//! - DUH: the receiver understood and will not handle this content: *rejected*, so a
//!   `life_safety` or `security` event is kept, listed and raised as `uplink.rejected`. An
//!   event whose kind has no Contact ID / SIA code (a `kinds` pattern wider than the
//!   code table) is rejected the same way, naming the kind.
//! - An unreadable `key_file` stops the uplink before anything is sent (reason
//!   `config`), read again at every retry.
//! - Supervision: with `supervision = "90s"` a NULL is sent whenever that long passed
//!   without a message; a NULL nobody acknowledges opens an outage as a failed event does.
//! - Failover and return (issue 22): a primary that stops answering costs the first alarm
//!   at most `retries + 1` attempts of `ack_timeout` there (fewer with a smaller
//!   `failover_after`) before it goes to the backup; later alarms start at the backup. Once
//!   `return_to_primary_after` has passed, the primary is probed with a NULL *while idle*
//!   (never with an alarm); an ACK makes it current again. A probe gives way to an event
//!   of a class this uplink forwards: it is dropped, the event goes to the current receiver
//!   at once, and the probe is tried a period later. So an alarm never waits on a primary
//!   that may still be dead.
//!
//! Default filter: classes `life_safety` and `security`, kinds [`DEFAULT_KINDS`] (panic,
//! duress, which arrives as `panic.alarm` with code 121, intrusion, tamper, forced door,
//! and their restores). `fire.*` goes to the fire-monitoring centre, not the police: only
//! when `kinds` names it.

use std::sync::Arc;
use std::time::Duration;

use campusgw_dc09::transmit::{AttemptError, Receipt, TransmitConfig, TransmitError, Transmitter};
use campusgw_sdk::{Class, ConfigIssue, FieldPath, Kind, Location, Source};
use serde::Deserialize;

use super::UplinkContext;
use super::config::{UplinkSettings, is_loopback_host};
use super::contract::{
    Answer, Link, Round, Sent, Transport, UplinkError, UplinkFactory, UplinkKindConfig,
};
use super::deliveries::{DeliveryRecord, record};
use super::delivery::{Delivery, RetryReason};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use crate::config::typed_value;

/// Kinds forwarded when the table names no `kinds`.
pub const DEFAULT_KINDS: &[&str] = &[
    "panic.alarm",
    "panic.alarm.restore",
    "intrusion.alarm",
    "intrusion.alarm.restore",
    "tamper.alarm",
    "tamper.alarm.restore",
    "door.forced",
    "door.forced.restore",
];

/// Classes forwarded when the table names neither `classes` nor `kinds`.
pub const DEFAULT_CLASSES: &[Class] = &[Class::LifeSafety, Class::Security];

/// A validated `kind = "dc09"` uplink.
#[derive(Debug, Clone)]
pub struct Dc09UplinkConfig {
    /// Cursor key and metric label.
    pub name: String,
    /// Receivers, account, format, key, timeouts (the transmitter's own table).
    pub transmit: TransmitConfig,
    /// Retry back-off bounds (default 1 s .. 60 s).
    pub backoff: (Duration, Duration),
}

impl UplinkKindConfig for Dc09UplinkConfig {
    const KIND: &'static str = "dc09";

    fn validate(
        mut table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Dc09UplinkConfig> {
        let allow_plaintext = match table.remove("allow_plaintext") {
            None => false,
            Some(toml::Value::Boolean(b)) => b,
            Some(_) => {
                issues.push(ConfigIssue::new(
                    at.key("allow_plaintext"),
                    "allow_plaintext is true or false",
                ));
                false
            }
        };
        let transmit: TransmitConfig = typed_value(toml::Value::Table(table), at, issues)?;
        let problems = transmit.validate(at);
        let valid = problems.is_empty();
        issues.extend(problems);
        if !transmit.encrypted() && !allow_plaintext {
            let remote: Vec<&str> = transmit
                .receivers
                .iter()
                .map(String::as_str)
                .filter(|r| !is_loopback_host(r.rsplit_once(':').map_or(*r, |(h, _)| h)))
                .collect();
            if !remote.is_empty() {
                issues.push(ConfigIssue::new(
                    at.key("key"),
                    format!(
                        "alarms to {} would travel unencrypted: set key or key_file (the AES key agreed with the ARC), or allow_plaintext = true if the whole network path is trusted",
                        remote.join(", ")
                    ),
                ));
                return None;
            }
        }
        valid.then(|| Dc09UplinkConfig {
            name: name.to_owned(),
            transmit,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        })
    }

    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::Dc09(self)
    }
}

impl UplinkFactory for Dc09UplinkConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }
    fn plaintext(&self) -> bool {
        !self.transmit.encrypted()
    }
    fn shown_url(&self) -> String {
        format!("dc09://{}", self.transmit.receivers.join(","))
    }
    fn default_filter(&self) -> Option<(Vec<Class>, Vec<String>)> {
        Some((
            DEFAULT_CLASSES.to_vec(),
            DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        ))
    }
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> campusgw_sdk::driver::BoxFuture<'static, ()> {
        let setup = super::retry::Setup {
            name: self.name.clone(),
            filter,
            cx: cx.clone(),
            status,
            backoff: self.backoff,
            stats_every: Duration::from_secs(5),
        };
        let centres = Centres {
            classes: setup.filter.wanted_classes().to_vec(),
            cfg: self,
            cx,
            status: setup.status.clone(),
            transmitter: Arc::new(tokio::sync::Mutex::new(None)),
        };
        Box::pin(super::retry::run(centres, setup))
    }
}

/// The [`Transport`]: one transmitter (clock offsets, sequence, current receiver) kept
/// across links for the life of the task.
struct Centres {
    cfg: Arc<Dc09UplinkConfig>,
    /// The classes the uplink forwards (an event of one ends a primary probe).
    classes: Vec<Class>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    transmitter: Arc<tokio::sync::Mutex<Option<Transmitter>>>,
}

/// A link: the transmitter, the event being sent, the next NULL.
struct Session {
    cfg: Arc<Dc09UplinkConfig>,
    classes: Vec<Class>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    tx: tokio::sync::OwnedMutexGuard<Option<Transmitter>>,
    pending: Option<Outgoing>,
    next_null: Option<tokio::time::Instant>,
}

impl Transport for Centres {
    type Link = Session;

    async fn connect(&mut self) -> Result<Session, UplinkError> {
        let mut tx = self.transmitter.clone().try_lock_owned().map_err(|_| {
            UplinkError::retry(RetryReason::Crashed, "transmitter held by a stale link")
        })?;
        if tx.is_none() {
            // Reads the key file: done again at every retry until it works.
            let t = Transmitter::new(&self.cfg.transmit).map_err(|e| {
                UplinkError::retry(
                    RetryReason::Config,
                    format!("{e}; nothing is sent without it"),
                )
            })?;
            *tx = Some(t);
        }
        let next_null = tx
            .as_ref()
            .and_then(Transmitter::supervision_interval)
            .map(|d| tokio::time::Instant::now() + d);
        Ok(Session {
            cfg: self.cfg.clone(),
            classes: self.classes.clone(),
            cx: self.cx.clone(),
            status: self.status.clone(),
            tx,
            pending: None,
            next_null,
        })
    }
}

impl Link for Session {
    fn room(&mut self, _feed: &mut Feed) -> usize {
        usize::from(self.pending.is_none())
    }

    fn busy(&self) -> bool {
        // A NULL due is sent before the next event; neither exchange may be cut short. A
        // primary probe due runs inside `next`, which ends it itself for a new event.
        let now = tokio::time::Instant::now();
        self.pending.is_some()
            || self.next_null.is_some_and(|t| t <= now)
            || self.probe_due().is_some_and(|t| t <= now)
    }

    fn send(&mut self, mut events: Vec<Outgoing>) -> Result<(), UplinkError> {
        self.status.published(events.len() as u64);
        self.pending = events.pop();
        Ok(())
    }

    async fn next(&mut self, feed: &mut Feed) -> Round {
        if let Some(o) = self.pending.take() {
            let round = self.deliver(&o).await;
            self.rearm();
            return round;
        }
        let now = tokio::time::Instant::now();
        if self.next_null.is_some_and(|t| t <= now) {
            self.rearm();
            return self.supervise().await;
        }
        let probe = self.probe_due();
        if probe.is_some_and(|t| t <= now) {
            // `busy` kept the loop from filling: an event already waiting goes first, to
            // the current receiver; the probe waits for an idle moment. Heads before the
            // committed seq (the writer publishes them after it): an event this check
            // misses moves a head after `heads` was read, which ends the probe.
            let heads = *self.cx.journal.heads().borrow();
            let committed = *self.cx.journal.committed_seq().borrow();
            return match feed.next(committed) {
                Ok(Some(o)) => {
                    self.status.published(1);
                    let round = self.deliver(&o).await;
                    self.rearm();
                    round
                }
                Ok(None) => self.probe(heads).await,
                Err(e) => Round::failed(e.into()),
            };
        }
        match [self.next_null, probe].into_iter().flatten().min() {
            Some(t) => {
                tokio::time::sleep_until(t).await;
                Round::default()
            }
            None => std::future::pending().await,
        }
    }

    async fn close(self) {}
}

/// The few fields of an event's JSON form the message is made from.
#[derive(Deserialize)]
struct Routed {
    kind: Kind,
    source: Source,
    #[serde(default)]
    location: Location,
    #[serde(default)]
    payload: serde_json::Value,
}

impl Session {
    fn rearm(&mut self) {
        let every = self.tx.as_ref().and_then(Transmitter::supervision_interval);
        self.next_null = every.map(|d| tokio::time::Instant::now() + d);
    }

    fn probe_due(&self) -> Option<tokio::time::Instant> {
        self.tx.as_ref().and_then(Transmitter::primary_probe_due)
    }

    /// One NULL at the primary while on a backup; dropped as soon as an event of a class
    /// this uplink forwards is committed (it goes to the current receiver instead).
    async fn probe(&mut self, seen: crate::journal::heads::Heads) -> Round {
        let mut heads = self.cx.journal.heads();
        heads.mark_changed();
        let classes = self.classes.clone();
        let Some(tx) = self.tx.as_mut() else {
            return Round::default();
        };
        let event_arrives = async {
            loop {
                if heads.changed().await.is_err() {
                    return std::future::pending().await;
                }
                let now = *heads.borrow_and_update();
                if classes
                    .iter()
                    .any(|c| now[usize::from(c.rank())] > seen[usize::from(c.rank())])
                {
                    return;
                }
            }
        };
        tokio::select! {
            r = tx.probe_primary() => match r {
                Ok(true) => {
                    tracing::info!(uplink = %self.cfg.name, "the primary alarm receiving centre acknowledged a probe: back on the primary");
                    Round { proven: true, ..Round::default() }
                }
                Ok(false) => {
                    tracing::info!(uplink = %self.cfg.name, "the primary alarm receiving centre did not acknowledge a probe; staying on the backup");
                    Round::default()
                }
                Err(e) => {
                    tracing::warn!(uplink = %self.cfg.name, error = %e, "cannot probe the primary alarm receiving centre");
                    Round::default()
                }
            },
            () = event_arrives => {
                tracing::debug!(uplink = %self.cfg.name, "primary probe dropped for an event; tried again a period later");
                Round::default()
            }
        }
    }

    async fn supervise(&mut self) -> Round {
        let Some(tx) = self.tx.as_mut() else {
            return Round::failed(UplinkError::retry(RetryReason::Config, "no transmitter"));
        };
        match tx.supervise_current().await {
            Ok(r) => {
                tracing::debug!(uplink = %self.cfg.name, receiver = r.receiver, "supervision NULL acknowledged");
                Round {
                    proven: true,
                    ..Round::default()
                }
            }
            Err(e) => Round::failed(failure(&e)),
        }
    }

    /// Sends one event and answers for it.
    async fn deliver(&mut self, o: &Outgoing) -> Round {
        let sent = Sent::of(o);
        let answer = |delivery| Round {
            answers: vec![Answer { sent, delivery }],
            ..Round::default()
        };
        let rejected = |reason: String| answer(Delivery::Rejected { reason });
        let Some(tx) = self.tx.as_mut() else {
            return Round::failed(UplinkError::retry(RetryReason::Config, "no transmitter"));
        };
        let routed: Routed = match serde_json::from_slice(&o.event.json) {
            Ok(r) => r,
            Err(e) => return rejected(format!("event not readable for dc09: {e}")),
        };
        let message = match tx.map().message(
            &routed.kind,
            &routed.payload,
            &routed.source.device,
            &routed.location,
        ) {
            Ok(m) => m,
            Err(e) => return rejected(e.to_string()),
        };
        match tx.send(&message).await {
            Ok(receipt) => {
                self.record(o, &receipt).await;
                answer(Delivery::Delivered)
            }
            Err(e @ (TransmitError::Refused { .. } | TransmitError::Encode(_))) => {
                rejected(e.to_string())
            }
            Err(e) => Round::failed(failure(&e)),
        }
    }

    /// Records which receiver acknowledged (before the loop moves the cursor). A failed
    /// write is logged: the ACK stands, and the cursor store would fail the same way.
    async fn record(&self, o: &Outgoing, r: &Receipt) {
        tracing::info!(uplink = %self.cfg.name, seq = o.seq, id = %o.event.id, receiver = r.receiver, endpoint = %r.endpoint, sequence = r.sequence.value(), "alarm receiving centre acknowledged the event");
        let rec = DeliveryRecord {
            uplink: self.cfg.name.clone(),
            seq: o.seq,
            event_id: o.event.id.to_string(),
            receiver: u32::try_from(r.receiver).unwrap_or(u32::MAX),
            endpoint: r.endpoint.to_string(),
            address: r.address.to_string(),
            sequence: u32::from(r.sequence.value()),
            attempts: r.attempts,
            acknowledged_at: r.acknowledged_at,
        };
        if let Err(e) = self.cx.journal.exec(record(rec)).await {
            tracing::warn!(uplink = %self.cfg.name, seq = o.seq, error = %e, "delivery record not stored");
        }
    }
}

/// A transmit error that a later attempt may fix, as a retry.
fn failure(e: &TransmitError) -> UplinkError {
    let reason = match e {
        TransmitError::Unreachable { failures }
            if !failures.is_empty()
                && failures.iter().all(|f| {
                    matches!(
                        f.reason,
                        AttemptError::Timeout | AttemptError::ConnectTimeout
                    )
                }) =>
        {
            RetryReason::Timeout
        }
        TransmitError::Unreachable { .. } => RetryReason::Network,
        _ => RetryReason::Config,
    };
    UplinkError::retry(reason, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<crate::config::UplinkConfig, Vec<ConfigIssue>> {
        let text = format!("name = \"police\"\nkind = \"dc09\"\naccount = \"5A01\"\n{extra}");
        super::super::parse(
            toml::from_str(&text).expect("toml"),
            &FieldPath::root().key("uplink").index(0),
        )
    }

    #[test]
    fn the_default_filter_sends_panic_and_intrusion_but_not_fire_or_telemetry() {
        let u = parse("receivers = [\"127.0.0.1:9010\"]").expect("valid");
        for k in [
            "panic.alarm",
            "intrusion.alarm",
            "door.forced",
            "panic.alarm.restore",
        ] {
            assert!(u.filter.wants_kind(&Kind::new(k).expect("kind")), "{k}");
        }
        assert!(!u.filter.wants_kind(&Kind::new("fire.alarm").expect("kind")));
        assert!(!u.filter.wants_class(Class::Telemetry));
        let u = parse("receivers = [\"127.0.0.1:9010\"]\nkinds = [\"fire.*\", \"panic.alarm\"]")
            .expect("valid");
        assert!(u.filter.wants_kind(&Kind::new("fire.alarm").expect("kind")));
    }

    #[test]
    fn plaintext_to_a_remote_receiver_is_refused_unless_allowed_or_keyed() {
        let e = parse("receivers = [\"192.0.2.1:9010\"]")
            .err()
            .expect("refused");
        assert_eq!(e[0].path.to_string(), "uplink[0].key", "{e:?}");
        assert!(e[0].message.contains("allow_plaintext"), "{e:?}");
        assert!(parse("receivers = [\"192.0.2.1:9010\"]\nallow_plaintext = true").is_ok());
        assert!(parse("receivers = [\"192.0.2.1:9010\"]\nkey = \"0123456789abcdef\"").is_ok());
        assert!(parse("receivers = [\"localhost:9010\"]").is_ok());
    }

    #[test]
    fn every_problem_of_the_table_is_reported_with_its_path() {
        let e = parse("receivers = []\nfailover = 3")
            .err()
            .expect("unknown key");
        assert!(
            e.iter()
                .any(|i| i.path.to_string().starts_with("uplink[0]")),
            "{e:?}"
        );
        let e = parse("receivers = [\"nohost\"]")
            .err()
            .expect("bad receiver");
        assert_eq!(e[0].path.to_string(), "uplink[0].receivers[0]", "{e:?}");
    }
}
