//! Uplinks: forwarding the journal to destinations outside the school (DESIGN §1, §4
//! "Delivery"), each with its own per-class cursors in the journal.
//!
//! # Contract
//! - Events are read from the journal past the uplink's cursor, never from memory only:
//!   a restart or a cut of any length loses nothing ([`feed`]).
//! - A cursor advances only when the destination confirmed (MQTT PUBACK, HTTP 2xx), and
//!   only over a contiguous confirmed prefix of its class. Delivery is at-least-once; a
//!   resend carries the same event `id` for de-duplication.
//! - Priority: a pending `life_safety` event goes before older `telemetry`; within a class,
//!   journal order.
//! - A server certificate that fails verification is never accepted: the failure is named
//!   in the log and `/healthz`, counted (`campusgw_uplink_failures_total{reason="certificate"}`),
//!   journaled once per outage as an `uplink.down` event (class `security`), and retried
//!   with back-off and jitter.
//!
//! # Config
//! ```toml
//! [[uplink]]
//! name = "county"                 # cursor key; letters, digits, '_' and '-'
//! kind = "mqtt"
//! url = "mqtts://platform.example:8883"   # mqtt:// (1883) or mqtts:// (8883)
//! protocol = "3.1.1"              # default; or "5" (features used: see [`mqtt_link`])
//! ca_file = "/etc/campusgw/county-ca.pem" # optional: default is the web PKI roots
//! client_cert = "/etc/campusgw/client.pem" # optional, with client_key: mutual TLS
//! client_key = "/etc/campusgw/client.key"
//! username = "school-042"         # optional; password_file preferred over password
//! password_file = "/etc/campusgw/county.pass"
//! topic_prefix = "campusgw"       # default
//! inflight = 100                  # unconfirmed publishes at most (default)
//! keep_alive = "30s"              # default
//! heartbeat = "30s"               # retained status refresh (default)
//! ack_timeout = "60s"             # no PUBACK this long with publishes outstanding: reconnect
//! classes = ["life_safety", "security", "operations", "business", "telemetry"]  # optional
//! kinds = ["fire.*", "door.forced"]  # optional: "kind", "family.*" or "*"
//! [uplink.commands]               # optional: accept signed county commands
//! public_keys = ["<base64 Ed25519 public key>"]
//! allow = ["status", "resync", "relay.set"]
//! window = "5m"
//!
//! [[uplink]]
//! name = "archive"
//! kind = "webhook"
//! url = "https://archive.example/ingest"
//! token_file = "/etc/campusgw/archive.token"   # bearer token (or token = "...")
//! ca_file = "..."                 # optional; client_cert / client_key for mutual TLS
//! batch = 100                     # events per POST (default)
//! timeout = "10s"                 # default
//! ```
//!
//! # MQTT (see [`mqtt`])
//! MQTT 3.1.1 (default) or MQTT 5 (`protocol = "5"`: session expiry of a day with
//! `clean_start = false`, `content_type = "application/json"` on publishes, PUBACK reason
//! codes >= 0x80 reject the event like a webhook 4xx; nothing else of MQTT 5 is used), client
//! id `{gateway_id}.{uplink name}`, persistent session (`clean_session = false`), keep-alive
//! as configured. A connect (TCP, TLS, CONNACK) is bounded by 5 s; a broker withholding
//! PUBACKs for `ack_timeout` is reported as `stalled` and reconnected. Topics:
//! - `{prefix}/{gateway_id}/events/{class}/{kind}`: QoS 1, payload the event JSON
//!   (`"schema": 1`, docs/event-schema.md).
//! - `{prefix}/{gateway_id}/status`: retained, QoS 1; `{"status":"online",...}` on connect
//!   and every heartbeat (backlog per class, oldest unconfirmed age, in-flight count, driver
//!   states, version); the last will and a clean shutdown set `{"status":"offline",...}`.
//! - `{prefix}/{gateway_id}/commands/{id}` (subscribed, QoS 1) and
//!   `{prefix}/{gateway_id}/replies/{id}`: signed county commands ([`county_commands`]).

pub mod bench;
pub mod config;
pub mod county_commands;
pub mod feed;
pub mod filter;
pub mod mqtt;
pub mod mqtt_link;
pub mod status;
pub mod tls;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{DeviceId, Event, Location, NewEvent};
use tokio_util::sync::CancellationToken;

pub use config::{UplinkSettings, parse};
pub use filter::Filter;
pub use status::{UplinkBoard, UplinkSnapshot, UplinkStatus};

use crate::commands::CommandRouter;
use crate::config::UplinkConfig;
use crate::journal::{Journal, UplinkSpec};
use crate::supervisor::DriverStates;

/// What every uplink needs from the gateway.
#[derive(Clone)]
pub struct UplinkContext {
    /// The journal to read from and write uplink events into.
    pub journal: Journal,
    /// The gateway id (client id, topics, source of uplink events).
    pub gateway_id: DeviceId,
    /// Routes pass-through device commands from the county.
    pub commands: Option<Arc<CommandRouter>>,
    /// Driver states for the heartbeat.
    pub drivers: Option<DriverStates>,
    /// Fires at shutdown.
    pub shutdown: CancellationToken,
}

/// The running uplinks.
pub struct Uplinks {
    /// Their states, for `/healthz`.
    pub board: UplinkBoard,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// What the journal must know of the configured uplinks (for retention).
pub fn journal_specs(configs: &[UplinkConfig]) -> Vec<UplinkSpec> {
    configs
        .iter()
        .map(|u| UplinkSpec {
            name: u.name.clone(),
            classes: u.filter.wanted_classes().to_vec(),
        })
        .collect()
}

/// Starts every configured uplink; they stop when `cx.shutdown` fires.
pub fn start(configs: &[UplinkConfig], cx: &UplinkContext) -> Uplinks {
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for u in configs {
        let status = UplinkStatus::new(&u.name, u.kind);
        statuses.push(status.clone());
        let task = match &u.settings {
            UplinkSettings::Mqtt(c) => {
                let up = mqtt::MqttUplink::new(c.clone(), u.filter.clone(), cx.clone(), status);
                tokio::spawn(up.run())
            }
            UplinkSettings::Webhook(c) => {
                let up =
                    webhook::WebhookUplink::new(c.clone(), u.filter.clone(), cx.clone(), status);
                tokio::spawn(up.run())
            }
        };
        tasks.push(task);
    }
    Uplinks {
        board: UplinkBoard(Arc::new(statuses)),
        tasks,
    }
}

impl Uplinks {
    /// Waits up to `timeout` for the uplinks to stop (after shutdown fired), storing their
    /// final cursors; aborts the rest.
    pub async fn join(self, timeout: Duration) {
        for t in self.tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(timeout, t).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Exponential back-off with equal jitter: attempt 0 waits `[base/2, base]`, doubling up
/// to `max`.
pub(crate) fn backoff((base, max): (Duration, Duration), attempt: u32) -> Duration {
    let full = base.saturating_mul(1u32 << attempt.min(16)).min(max);
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// Journals a gateway event from an uplink without blocking the caller.
pub(crate) fn journal_event(cx: &UplinkContext, new: NewEvent) {
    let e = Event::stamp(new, &cx.gateway_id, "uplink", &Location::default());
    let j = cx.journal.clone();
    tokio::spawn(async move {
        if let Err(err) = j.append(vec![e]).await {
            tracing::warn!(error = %err, "uplink event not journaled");
        }
    });
}

/// The tasks every uplink runs beside its transport: the cursor saver (fed through
/// [`Background::cursors`]) and the backlog/age refresher.
pub(crate) struct Background {
    /// Confirmed cursors per class rank, stored by the saver as they move.
    pub cursors: tokio::sync::watch::Sender<[u64; 5]>,
    saver: tokio::task::JoinHandle<()>,
    stats: tokio::task::JoinHandle<()>,
}

impl Background {
    /// Starts both tasks for an uplink whose feed is `feed`.
    pub(crate) fn start(
        cx: &UplinkContext,
        name: &str,
        filter: &Filter,
        status: Arc<UplinkStatus>,
        feed: &feed::Feed,
        stats_every: Duration,
    ) -> Background {
        let (cursors, rx) = tokio::sync::watch::channel(feed.cursors());
        let saver = tokio::spawn(feed::save_cursors(cx.journal.clone(), name.to_owned(), rx));
        let stats = spawn_stats(cx, name, filter, status, stats_every);
        Background {
            cursors,
            saver,
            stats,
        }
    }

    /// Stores the last cursors (waiting up to 5 s) and stops the refresher.
    pub(crate) async fn stop(self) {
        drop(self.cursors);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.saver).await;
        self.stats.abort();
    }
}

/// Refreshes backlog and oldest-unconfirmed age every `every` (at most 5 s apart).
fn spawn_stats(
    cx: &UplinkContext,
    name: &str,
    filter: &Filter,
    status: Arc<UplinkStatus>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let journal = cx.journal.clone();
    let name = name.to_owned();
    let classes = filter.wanted_classes().to_vec();
    let every = every.min(Duration::from_secs(5));
    tokio::spawn(async move {
        let mut reader = None;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let r = match reader.take() {
                Some(r) => Ok(r),
                None => journal.reader(),
            };
            let Ok(r) = r else { continue };
            let (name, classes) = (name.clone(), classes.clone());
            let done = tokio::task::spawn_blocking(move || {
                let m = status::measure(&r, &name, &classes);
                (r, m)
            })
            .await;
            if let Ok((r, m)) = done {
                reader = Some(r);
                if let Ok((backlog, oldest, cursors)) = m {
                    status.set_backlog(backlog, oldest, cursors);
                }
            }
        }
    })
}
