//! `kind = "gb26875"`: fire alarms to the city fire-monitoring centre (城市消防远程监控中心).
//! campusgw acts as the school's user information transmission device (UITD) toward the
//! centre over TCP, GB/T 26875.3-2011, through `campusgw_gb26875::transmit` (numbering,
//! confirm wait, retransmission of the same bytes, answers to the centre's requests,
//! heartbeats), on the uplink contract ([`super::contract`]).
//!
//! ```toml
//! [[uplink]]
//! name = "fire_centre"
//! kind = "gb26875"
//! centres = ["119.city.example:9000", "119-backup.city.example:9000"]  # primary first
//! uitd_address = 889             # this school's transmission device, as the centre assigned
//! centre_address = 88888         # the centre's address
//! allow_plaintext = true         # required for a centre not on loopback: GB/T 26875.3 is unencrypted
//! confirm_timeout = "10s"        # per attempt, at most 10 s (§6.5); retries = 3 after the first
//! connect_timeout = "5s"
//! heartbeat = "30s"              # empty upload; unconfirmed until the next one: reconnect
//! default_system = { system_type = 1, system_address = 1 }   # events no rule places
//! [[uplink.component]]           # device or location → system and component
//! location = "main/A/3"          # or device = "gym_panel"
//! component_type = 40            # smoke detector (GB/T 26875.3 component type table)
//! component_address = "10-2"     # zone-point, or the raw 32-bit integer
//! system_address = 1             # optional: system_type / system_address of default_system
//! description = "3楼东 烟感"      # optional, at most 31 bytes GB18030
//! # classes / kinds as for every uplink; default: life_safety, security, operations and
//! # the kinds of [`mapping::DEFAULT_KINDS`] (alarms, faults, resets, restores, operations)
//! ```
//!
//! Outcomes (the rules of [`super::delivery`]):
//! - the centre's confirm (command 3): *delivered*; which centre, the serial, the attempts
//!   and the time are recorded in `uplink_deliveries` ([`super::deliveries`]) before the
//!   cursor moves;
//! - a deny (command 6) on the first attempt and every retransmission: *rejected* (the
//!   centre refuses this content), so a `life_safety` or `security` event is kept, listed
//!   and raised as `uplink.rejected`; an event whose kind has no GB/T 26875.3 object is
//!   rejected the same way, naming the kind;
//! - no confirm to any attempt, a lost connection, no centre reachable: *retry* (reason
//!   `timeout` or `network`), `uplink.down` once per outage, the event is sent again on a
//!   new connection after the back-off (with the same ADU: the centre can recognise it).
//!
//! The centre's requests are answered by the transmitter on its own (status reads from the
//! last status uploaded; clock sync confirmed, the gateway's clock left to NTP and the
//! difference journaled as `fire_centre.clock_sync`). A 查岗 (operator-on-duty check) is
//! confirmed, journaled as `fire_centre.duty_check` and kept open on the uplink's status
//! ([`duty`], in memory) until an operator answers it through
//! `POST /api/v1/uplinks/{name}/duty-check`; the answer is uploaded as a UITD operation
//! (type 24, flag b5) and journaled as `fire_centre.duty_check_answered` once confirmed.
//! A check still unanswered when due (the centre's minutes, 10 when it gave none) is
//! journaled once as `fire_centre.duty_check_missed` (class `security`); it can still be
//! answered late.

pub mod config;
pub mod duty;
pub mod mapping;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use campusgw_gb26875::codec::{Adu, TimeLabel, UitdOperation};
use campusgw_gb26875::transmit::{CentreLink, Inbound, Receipt, TransmitError, UitdState};
use campusgw_sdk::{Class, Kind, NewEvent};
use chrono::Utc;
use serde_json::json;

pub use config::Gb26875UplinkConfig;

use super::UplinkContext;
use super::contract::{Answer, Link, Round, Sent, Transport, UplinkError, UplinkFactory};
use super::deliveries::{DeliveryRecord, record};
use super::delivery::{Delivery, RetryReason};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use duty::{DutyAnswer, DutyCheck};
use mapping::{DEFAULT_KINDS, Placement, Routed};

/// Classes forwarded when the table names neither `classes` nor `kinds`.
pub const DEFAULT_CLASSES: &[Class] = &[Class::LifeSafety, Class::Security, Class::Operations];

/// The duty check event: the centre asks whether an operator is on duty.
pub const DUTY_CHECK: Kind = Kind::from_static("fire_centre.duty_check");
/// The duty check was answered and the centre confirmed the answer.
pub const DUTY_CHECK_ANSWERED: Kind = Kind::from_static("fire_centre.duty_check_answered");
/// Nobody answered a duty check before it was due (class `security`).
pub const DUTY_CHECK_MISSED: Kind = Kind::from_static("fire_centre.duty_check_missed");
/// The centre set the clock (not applied: the difference is reported).
pub const CLOCK_SYNC: Kind = Kind::from_static("fire_centre.clock_sync");

/// GB/T 26875.3-2011 UITD operation flag b5: 查岗应答 (duty check answered).
const DUTY_ANSWERED: u8 = 1 << 5;

impl UplinkFactory for Gb26875UplinkConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }
    fn plaintext(&self) -> bool {
        true
    }
    fn shown_url(&self) -> String {
        format!("gb26875://{}", self.transmit.centres.join(","))
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
            status: status.clone(),
            backoff: self.backoff,
            stats_every: Duration::from_secs(5),
        };
        let centres = Centres {
            state: Arc::new(Mutex::new(UitdState::new(self.transmit.identity))),
            settings: Arc::new(self.transmit.clone()),
            cfg: self,
            cx,
            status,
        };
        Box::pin(super::retry::run(centres, setup))
    }
}

/// The [`Transport`]: the UITD state (statuses uploaded) kept across connections.
struct Centres {
    cfg: Arc<Gb26875UplinkConfig>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    settings: Arc<campusgw_gb26875::transmit::TransmitSettings>,
    state: Arc<Mutex<UitdState>>,
}

/// A link: one TCP connection and the event being sent.
struct Session {
    cfg: Arc<Gb26875UplinkConfig>,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    link: CentreLink,
    pending: Option<Outgoing>,
}

impl Transport for Centres {
    type Link = Session;

    async fn connect(&mut self) -> Result<Session, UplinkError> {
        let link = CentreLink::connect(self.settings.clone(), self.state.clone())
            .await
            .map_err(|e| failure(&e))?;
        Ok(Session {
            cfg: self.cfg.clone(),
            cx: self.cx.clone(),
            status: self.status.clone(),
            link,
            pending: None,
        })
    }
}

impl Link for Session {
    fn room(&mut self, _feed: &mut Feed) -> usize {
        usize::from(self.pending.is_none())
    }

    fn busy(&self) -> bool {
        self.pending.is_some() || self.status.duty_desk().answer_waiting()
    }

    fn send(&mut self, mut events: Vec<Outgoing>) -> Result<(), UplinkError> {
        self.status.published(events.len() as u64);
        self.pending = events.pop();
        Ok(())
    }

    async fn next(&mut self, _feed: &mut Feed) -> Round {
        if let Some(a) = self.status.duty_desk().pending_answer() {
            return self.answer_duty_check(a).await;
        }
        if let Some(o) = self.pending.take() {
            return self.deliver(&o).await;
        }
        let desk = self.status.clone();
        let overdue = desk.duty_desk().unanswered(Utc::now());
        let due_in = overdue.as_ref().map(|(_, left)| *left);
        tokio::select! {
            () = tokio::time::sleep(due_in.unwrap_or_default()), if due_in.is_some() => {
                if let Some((check, _)) = overdue {
                    self.missed(&check);
                }
                Round::default()
            }
            got = self.link.next_inbound() => match got {
                Ok(i) => {
                    self.inbound(i);
                    Round::default()
                }
                Err(e) => Round::failed(failure(&e)),
            },
            () = desk.duty_desk().answered() => Round::default(),
        }
    }

    async fn close(self) {
        self.link.close().await;
    }
}

impl Session {
    fn journal(&self, kind: Kind, payload: serde_json::Value) {
        let mut p = payload;
        if let Some(o) = p.as_object_mut() {
            o.insert("uplink".into(), json!(self.cfg.name));
            o.insert("centre".into(), json!(self.link.endpoint));
        }
        super::journal_event(&self.cx, NewEvent::new(kind, Class::Operations).payload(p));
    }

    /// What the centre sent besides answers.
    fn inbound(&mut self, i: Inbound) {
        match i {
            Inbound::DutyCheck { serial, minutes } => {
                let check = DutyCheck {
                    serial,
                    minutes,
                    opened_at: Utc::now(),
                };
                tracing::warn!(uplink = %self.cfg.name, serial, minutes, "the fire-monitoring centre asks whether an operator is on duty (查岗): answer it in the console");
                self.journal(
                    DUTY_CHECK,
                    json!({"serial": serial, "minutes": minutes, "due": check.due()}),
                );
                self.status.duty_desk().open(check);
            }
            Inbound::ClockSync { time } => {
                let offset = time
                    .to_utc()
                    .map(|t| (t - Utc::now()).num_milliseconds() as f64 / 1000.0);
                tracing::info!(uplink = %self.cfg.name, centre_time = %time, offset_seconds = ?offset, "clock sync from the fire-monitoring centre confirmed; the gateway clock follows NTP");
                self.journal(
                    CLOCK_SYNC,
                    json!({"centre_time": time.to_string(), "offset_seconds": offset}),
                );
            }
            Inbound::Answered(t) => {
                tracing::debug!(uplink = %self.cfg.name, type_flag = t, "status read from the centre answered");
            }
            Inbound::Refused(_) | Inbound::Confirmed(_) | Inbound::Denied(_) => {}
        }
    }

    /// The open check's due time passed without an operator's answer: raised once.
    fn missed(&self, check: &DutyCheck) {
        tracing::warn!(uplink = %self.cfg.name, serial = check.serial, "nobody answered the fire-monitoring centre's duty check (查岗) in time");
        let p = json!({"serial": check.serial, "minutes": check.minutes, "due": check.due(),
                       "uplink": self.cfg.name, "centre": self.link.endpoint});
        super::journal_event(
            &self.cx,
            NewEvent::new(DUTY_CHECK_MISSED, Class::Security).payload(p),
        );
        self.status.duty_desk().mark_missed(check);
    }

    async fn answer_duty_check(&mut self, a: DutyAnswer) -> Round {
        let adu = Adu::UitdOperation(vec![UitdOperation {
            flags: DUTY_ANSWERED,
            operator: a.operator,
            time: TimeLabel::from_utc(Utc::now()),
        }]);
        match self.link.upload(&adu).await {
            Ok(r) => {
                let late = Utc::now() > a.check.due();
                tracing::info!(uplink = %self.cfg.name, by = %a.by, operator = a.operator, late, "duty check answer confirmed by the centre");
                self.journal(
                    DUTY_CHECK_ANSWERED,
                    json!({"serial": a.check.serial, "by": a.by, "operator": a.operator,
                           "late": late, "attempts": r.attempts}),
                );
                self.status.duty_desk().uploaded(&a.check);
                Round {
                    proven: true,
                    ..Round::default()
                }
            }
            Err(TransmitError::Denied { .. }) => {
                tracing::warn!(uplink = %self.cfg.name, "the centre denied the duty check answer; it stays open");
                self.status.duty_desk().open(a.check);
                Round::default()
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
        let routed: Routed = match serde_json::from_slice(&o.event.json) {
            Ok(r) => r,
            Err(e) => return rejected(format!("event not readable for gb26875: {e}")),
        };
        let placement = Placement {
            rules: &self.cfg.components,
            default_system: self.cfg.default_system,
        };
        let adu = match placement.adu(&routed) {
            Ok(a) => a,
            Err(e) => return rejected(e.to_string()),
        };
        match self.link.upload(&adu).await {
            Ok(receipt) => {
                self.record(o, &receipt).await;
                answer(Delivery::Delivered)
            }
            Err(e @ (TransmitError::Denied { .. } | TransmitError::Encode(_))) => {
                rejected(e.to_string())
            }
            Err(e) => Round::failed(failure(&e)),
        }
    }

    /// Records which centre confirmed (before the loop moves the cursor). A failed write
    /// is logged: the confirm stands, and the cursor store would fail the same way.
    async fn record(&self, o: &Outgoing, r: &Receipt) {
        tracing::info!(uplink = %self.cfg.name, seq = o.seq, id = %o.event.id, centre = r.centre, endpoint = %r.endpoint, serial = r.serial, attempts = r.attempts, "fire-monitoring centre confirmed the upload");
        let rec = DeliveryRecord {
            uplink: self.cfg.name.clone(),
            seq: o.seq,
            event_id: o.event.id.to_string(),
            receiver: u32::try_from(r.centre).unwrap_or(u32::MAX),
            endpoint: r.endpoint.clone(),
            address: r.address.to_string(),
            sequence: u32::from(r.serial),
            attempts: r.attempts,
            acknowledged_at: r.confirmed_at,
        };
        if let Err(e) = self.cx.journal.exec(record(rec)).await {
            tracing::warn!(uplink = %self.cfg.name, seq = o.seq, error = %e, "delivery record not stored");
        }
    }
}

/// A transmit error a later attempt may fix, as a retry.
fn failure(e: &TransmitError) -> UplinkError {
    let reason = match e {
        TransmitError::NoConfirm { .. } => RetryReason::Timeout,
        TransmitError::Unreachable(_) | TransmitError::Closed(_) => RetryReason::Network,
        TransmitError::Denied { .. } | TransmitError::Encode(_) => RetryReason::Config,
    };
    UplinkError::retry(reason, e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use campusgw_sdk::{ConfigIssue, FieldPath};

    fn parse(extra: &str) -> Result<crate::config::UplinkConfig, Vec<ConfigIssue>> {
        let text = format!(
            "name = \"fire_centre\"\nkind = \"gb26875\"\nuitd_address = 889\ncentre_address = 88888\n{extra}"
        );
        super::super::parse(
            toml::from_str(&text).unwrap(),
            &FieldPath::root().key("uplink").index(0),
        )
    }

    #[test]
    fn the_default_filter_sends_fire_alarms_faults_and_resets_but_not_analog_values() {
        let u = parse("centres = [\"127.0.0.1:9000\"]").unwrap();
        for k in [
            "fire.alarm",
            "fire.fault",
            "fire.reset",
            "fire.alarm.restore",
        ] {
            assert!(u.filter.wants_kind(&Kind::new(k).unwrap()), "{k}");
        }
        assert!(!u.filter.wants_kind(&Kind::new("fire.analog").unwrap()));
        assert!(!u.filter.wants_kind(&Kind::new("panic.alarm").unwrap()));
        assert!(!u.filter.wants_class(Class::Telemetry));
    }

    #[test]
    fn a_remote_centre_needs_allow_plaintext() {
        let e = parse("centres = [\"192.0.2.1:9000\"]").err().unwrap();
        assert_eq!(e[0].path.to_string(), "uplink[0].centres[0]", "{e:?}");
        assert!(e[0].message.contains("allow_plaintext"), "{e:?}");
        assert!(parse("centres = [\"192.0.2.1:9000\"]\nallow_plaintext = true").is_ok());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let e = parse(
            "centres = [\"nohost\"]\nconfirm_timeout = \"30s\"\n[[component]]\ncomponent_type = 40\ncomponent_address = \"x-y\"\ndescription = \"一二三四五六七八九十一二三四五六\"\n",
        )
        .err().unwrap();
        let paths: Vec<String> = e.iter().map(|i| i.path.to_string()).collect();
        for want in [
            "uplink[0].centres[0]",
            "uplink[0].confirm_timeout",
            "uplink[0].component[0]",
            "uplink[0].component[0].component_address",
            "uplink[0].component[0].description",
        ] {
            assert!(
                paths.iter().any(|p| p == want),
                "{want} missing from {paths:?}"
            );
        }
        let e = parse("centres = []\nretry = 3").err().unwrap();
        assert!(
            e.iter()
                .any(|i| i.path.to_string().starts_with("uplink[0]")),
            "{e:?}"
        );
    }
}
