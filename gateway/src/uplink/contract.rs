//! The uplink contract: what a kind (`mqtt`, `webhook`, `dc09`, ...) supplies, and the
//! typed error of every uplink path (STYLE "Uplinks have a contract too").
//!
//! A kind is two halves, like a driver (`campusgw_sdk::driver::DriverConfig`):
//! - **config** ([`UplinkKindConfig`]): a pure `validate` of its `[[uplink]]` table that
//!   reports every problem with its field path and what to change, registered in the one
//!   explicit list `crate::registry::UPLINKS`; and an effectful `start` ([`UplinkFactory`])
//!   that the supervisor calls for every (re)start of the task.
//! - **transport** ([`Transport`] and its [`Link`]): "connect", "send these events and
//!   tell me each outcome" ([`Round`]), and "supervise/idle" (heartbeats, stall timers,
//!   commands), nothing else. The one retry loop (`uplink/retry.rs`) owns the feed, the
//!   cursors, the back-off (the SDK's `Backoff`), `uplink.down` / `uplink.up`, the
//!   settlement of rejected events and the resend requests, so those rules (DESIGN §4
//!   "Outcomes", [`super::delivery`]) hold the same way for every kind.
//!
//! A transport never moves a cursor and never journals an outage itself: it only says, per
//! event it was given, [`Delivery::Delivered`] or [`Delivery::Rejected`] (the destination's
//! verdict on that one event), or ends the round with a retry ([`UplinkError`]); an event
//! it answered neither way stays in flight and is sent again after the back-off.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::driver::BoxFuture;
use campusgw_sdk::{Class, ConfigIssue, EventId, FieldPath};

use super::delivery::{Delivery, RetryReason};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::{UplinkContext, UplinkSettings};
use crate::journal::JournalError;

/// Why an uplink attempt failed. Every variant is retried with back-off (the uplink is
/// never stopped for good by one): [`UplinkError::reason`] is the label of the
/// `uplink.down` event and of `campusgw_uplink_failures_total`.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// Link, auth, configuration or capacity trouble, or a destination asking to retry.
    #[error("{detail}")]
    Retry {
        /// The coarse reason.
        reason: RetryReason,
        /// What happened, for the log, `/healthz` and the `uplink.down` payload.
        detail: String,
        /// How long the destination asked us to wait (HTTP `Retry-After`).
        after: Option<Duration>,
    },
    /// The journal could not be read (feed, resend list).
    #[error("{0}")]
    Journal(#[from] JournalError),
    /// A rejected event could not be recorded in the `rejected` list: it stays unsettled
    /// and is sent again, its cursor does not move.
    #[error("cannot record rejected event seq {seq}: {source}")]
    RecordRejected {
        /// The event's seq.
        seq: u64,
        /// The journal's error.
        #[source]
        source: JournalError,
    },
}

impl UplinkError {
    /// A retry for `reason`, with what happened.
    pub fn retry(reason: RetryReason, detail: impl Into<String>) -> UplinkError {
        UplinkError::Retry {
            reason,
            detail: detail.into(),
            after: None,
        }
    }

    /// The retry reason.
    pub fn reason(&self) -> RetryReason {
        match self {
            UplinkError::Retry { reason, .. } => *reason,
            UplinkError::Journal(_) | UplinkError::RecordRejected { .. } => RetryReason::Journal,
        }
    }

    /// The wait the destination asked for, if any (else the back-off decides).
    pub fn after(&self) -> Option<Duration> {
        match self {
            UplinkError::Retry { after, .. } => *after,
            _ => None,
        }
    }
}

/// One `[[uplink]] kind = "..."`: its validated config. The pure half of the contract.
pub trait UplinkKindConfig: UplinkFactory + Sized {
    /// The `kind = "..."` name in the config: a protocol noun.
    const KIND: &'static str;
    /// Pure (no network I/O; files named in the table are only checked for existence and
    /// secret files for their mode): builds the config from the kind's own keys of the
    /// table (the common keys `name`, `kind`, `classes`, `kinds` are taken out before).
    /// Pushes every problem, each with its field path under `at` and what to change;
    /// `None` when there was one.
    fn validate(
        table: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<Self>;
    /// Wraps the validated config for the gateway's config model.
    fn settings(self: Arc<Self>) -> UplinkSettings;
}

/// The effectful half of the contract, object-safe so the supervisor runs any kind.
pub trait UplinkFactory: std::fmt::Debug + Send + Sync + 'static {
    /// Back-off bounds of retries (also of restarts of a crashed task).
    fn backoff(&self) -> (Duration, Duration);
    /// Whether events (and credentials) travel unencrypted.
    fn plaintext(&self) -> bool;
    /// The destination as it may be shown (log, `/healthz`): secrets masked.
    fn shown_url(&self) -> String;
    /// The `classes` and `kinds` used when the table gives neither (`None`: everything).
    fn default_filter(&self) -> Option<(Vec<Class>, Vec<String>)> {
        None
    }
    /// Builds a fresh uplink task: runs until `cx.shutdown` fires, resuming from the
    /// stored cursors.
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> BoxFuture<'static, ()>;
}

/// An event handed to a [`Link`], as its answer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its class (the lane whose cursor it holds back).
    pub class: Class,
    /// Its journal seq.
    pub seq: u64,
    /// Its id.
    pub id: EventId,
    /// An `uplink.rejected` alarm itself (never alarmed about again when rejected).
    pub alarm: bool,
}

impl Sent {
    /// What names `o` in an answer.
    pub fn of(o: &Outgoing) -> Sent {
        Sent {
            class: o.class,
            seq: o.seq,
            id: o.event.id,
            alarm: o.event.kind.as_str() == "uplink.rejected",
        }
    }
}

/// The destination's answer about one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The event.
    pub sent: Sent,
    /// Delivered or rejected (a `Retry` here is treated as the end of the round).
    pub delivery: Delivery,
}

/// What a [`Link`] reports when it wakes the loop.
#[derive(Debug, Default)]
pub struct Round {
    /// Answers about events it was given, in the order they came.
    pub answers: Vec<Answer>,
    /// The link failed or the destination asked to retry: the round ends, everything
    /// unanswered stays in flight and is sent again after the back-off on a new link.
    pub failure: Option<UplinkError>,
    /// The destination confirmed something other than an event (an MQTT status PUBACK):
    /// the link works, ending an outage.
    pub proven: bool,
}

impl Round {
    /// A round that only failed.
    pub fn failed(e: UplinkError) -> Round {
        Round {
            failure: Some(e),
            ..Round::default()
        }
    }
}

/// How a kind reaches its destination: connect, repeatedly.
pub trait Transport: Send + 'static {
    /// One connection (session, client with its credentials).
    type Link: Link;
    /// Opens a link. Called again after every failure, after the back-off, so secrets and
    /// certificates are read anew each time.
    ///
    /// # Errors
    /// Why no link could be made (retried).
    fn connect(&mut self) -> impl Future<Output = Result<Self::Link, UplinkError>> + Send;
}

/// An open link: takes events, reports their outcomes, supervises itself.
pub trait Link: Send {
    /// How many more events it takes now (0 while it cannot take any).
    fn room(&mut self, feed: &mut Feed) -> usize;
    /// Whether it is working on events it holds and must not be interrupted except by
    /// shutdown (an HTTP request in progress); [`Link::next`] is then the only wake-up.
    fn busy(&self) -> bool {
        false
    }
    /// Whether it can send now (resend requests are polled only then).
    fn ready(&self) -> bool {
        true
    }
    /// Hands events over; their outcomes come from [`Link::next`].
    ///
    /// # Errors
    /// The link cannot take them (retried on a new link).
    fn send(&mut self, events: Vec<Outgoing>) -> Result<(), UplinkError>;
    /// Waits until there is something to report (answers, a failure) or until its own
    /// supervision work (heartbeat, commands) is done. Must be cancel-safe unless
    /// [`Link::busy`].
    fn next(&mut self, feed: &mut Feed) -> impl Future<Output = Round> + Send;
    /// A clean goodbye at shutdown.
    fn close(self) -> impl Future<Output = ()> + Send;
}
