//! Uplinks: forwarding the journal to destinations outside the school (county platform,
//! police alarm receiving centres; DESIGN §1, §4 "Delivery"), each with its own per-class
//! cursors in the journal.
//!
//! # Contract
//! Every kind implements [`contract`]'s traits: a pure `validate` of its table
//! ([`UplinkKindConfig`], listed in `crate::registry::UPLINKS`), an effectful `start`
//! ([`UplinkFactory`]), and a transport that only connects, sends and reports each
//! event's outcome. The one retry loop (`retry.rs`, the SDK's `Backoff`) applies the rules
//! below for every kind; errors are [`UplinkError`].
//! - Events are read from the journal past the uplink's cursor, never from memory only:
//!   a restart or a cut of any length loses nothing ([`feed`]).
//! - A cursor advances only when the destination confirmed (MQTT PUBACK, HTTP 2xx), and
//!   only over a contiguous confirmed prefix of its class. Delivery is at-least-once; a
//!   resend carries the same event `id` for de-duplication.
//! - Priority: a pending `life_safety` event goes before older `telemetry`; within a class,
//!   journal order.
//! - Every answer maps to one [`Delivery`] ([`delivery`], the same rules for every kind):
//!   *delivered* (the cursor may move); *retry* for link, auth, configuration and capacity
//!   trouble (network, timeout, certificate, tls, HTTP 401/403/407/404/408/429/5xx, MQTT
//!   CONNACK refusals, MQTT 5 PUBACK 0x80/0x83/0x87/0x90/0x97, an unreadable secret file):
//!   the events are kept, the cursor does not move, the uplink backs off with jitter and
//!   sends them again, and the first failure of an outage journals one `uplink.down`
//!   (class `security`, payload `reason` and `detail`), the first delivery after it one
//!   `uplink.up`; *rejected* only for a destination's explicit verdict on one event (HTTP
//!   400/422/413 on a single event, after bisecting the batch; MQTT 5 PUBACK 0x99).
//! - A rejected `life_safety` or `security` event is recorded in the journal's `rejected`
//!   list *before* the cursor moves past it, raised as an `uplink.rejected` alarm (class
//!   `security`, naming the event ids), never deleted by retention, listed by `campusgw
//!   uplink rejected` and resent, before anything else of its class, after `campusgw uplink
//!   retry-rejected` (see [`crate::journal::rejected`]); it leaves the list once delivered.
//!   Rejected events of lower classes are counted and logged.
//! - A missing or unreadable secret (webhook `token_file`, MQTT `password_file`, client
//!   key or certificate) stops that uplink before it sends anything: status `down` with
//!   `last_reason` `config`, `uplink.down`, `/healthz` degraded; the file is read again at
//!   every retry, so fixing it recovers the uplink without a restart.
//! - A server certificate that fails verification is never accepted: the failure is named
//!   in the log and `/healthz`, counted (`campusgw_uplink_failures_total{reason="certificate"}`),
//!   journaled once per outage as an `uplink.down` event, and retried.
//! - Each uplink task runs under a supervisor ([`start`]): a panic or an unexpected return
//!   restarts it with jittered back-off, counted in `campusgw_uplink_restarts_total`, logged,
//!   shown in the status (`restarts`) and journaled as `uplink.down` (reason `crashed`); the
//!   restarted task resumes from the stored cursors.
//!
//! # Config
//! ```toml
//! [[uplink]]
//! name = "county"                 # cursor key; letters, digits, '_' and '-'
//! kind = "mqtt"
//! url = "mqtts://platform.example:8883"   # mqtts:// (8883); mqtt:// (1883) only to loopback
//! allow_plaintext = false         # default; true accepts mqtt:// to another host (warned)
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
//! urgent_classes = ["life_safety"]  # default; may add "security" (see [`urgency`])
//! urgent_backoff_max = "1s"       # default: back-off cap while an urgent event waits
//! alarm_delay_threshold = "30s"   # default: older undelivered alarm → uplink.alarm_delayed
//! snapshots = "reference"         # default; "image" | "none" (see [`snapshots`])
//! snapshot_max_bytes = 500_000    # default; with "image", at most 700_000 on MQTT
//! [uplink.commands]               # optional: accept signed county commands
//! public_keys = ["<base64 Ed25519 public key>"]
//! allow = ["status", "resync", { kind = "relay.set", targets = ["fire_panel_a"] }]
//! window = "5m"
//!
//! [[uplink]]
//! name = "archive"
//! kind = "webhook"
//! url = "https://archive.example/ingest"  # http:// only to loopback or with allow_plaintext
//! token_file = "/etc/campusgw/archive.token"   # bearer token (or token = "...")
//! ca_file = "..."                 # optional; client_cert / client_key for mutual TLS
//! batch = 100                     # events per POST (default)
//! timeout = "10s"                 # default
//! snapshots = "reference"         # default; "image" (at most 8_000_000 bytes) | "none"
//!
//! [[uplink]]
//! name = "police"
//! kind = "dc09"                   # SIA DC-09 to the alarm receiving centres (see [`dc09`])
//! receivers = ["arc1.example.net:9010", "arc2.example.net:9010"]  # primary first
//! transport = "tcp"               # default; or "udp"
//! account = "5A01"                # hex; receiver_number / line_prefix: R and L (default "0")
//! format = "adm-cid"              # default; or "sia-dcs"
//! key_file = "/etc/campusgw/arc.key"  # or key = "..."; key_encoding = "text" | "hex"
//! allow_plaintext = false         # without a key: only loopback receivers unless true
//! ack_timeout = "10s"             # per attempt; retries = 2 per receiver
//! failover_after = 3              # consecutive failures before starting at the next receiver
//! supervision = "90s"             # optional NULL when idle this long
//! # classes / kinds as above; default classes life_safety + security and kinds
//! # panic / intrusion / tamper / forced door (+ restores); fire.* only when named
//! ```
//!
//! # DC-09 (see [`dc09`])
//! One event per message (Contact ID / SIA code from the kind, partition and zone from the
//! device or location by `[[zone]]` rules); ACK → delivered, and which receiver
//! acknowledged and when is recorded ([`deliveries`], journal migration 8; console
//! `GET /api/v1/uplinks/{name}/deliveries?event=ID`) before the cursor moves; a NAK resends
//! with the receiver's clock; DUH → rejected; no receiver answering → retry and
//! `uplink.down`.
//!
//! # MQTT (see [`mqtt`])
//! MQTT 3.1.1 (default) or MQTT 5 (`protocol = "5"`: session expiry of a day with
//! `clean_start = false`, `content_type = "application/json"` on publishes, PUBACK reason
//! codes judged as above; nothing else of MQTT 5 is used), client
//! id `{gateway_id}.{uplink name}`, persistent session (`clean_session = false`), keep-alive
//! as configured. A connect (TCP, TLS, CONNACK) is bounded by 5 s; a broker withholding
//! PUBACKs for `ack_timeout` is reported as `stalled` and reconnected. Topics:
//! - `{prefix}/{gateway_id}/events/{class}/{kind}`: QoS 1, payload the event JSON
//!   (`"schema": 2`, docs/event-schema.md).
//! - `{prefix}/{gateway_id}/status`: retained, QoS 1; `{"status":"online",...}` on connect
//!   and every heartbeat (backlog per class, oldest unconfirmed age, in-flight count, driver
//!   states, version); the last will and a clean shutdown set `{"status":"offline",...}`.
//! - `{prefix}/{gateway_id}/commands/{id}` (subscribed, QoS 1) and
//!   `{prefix}/{gateway_id}/replies/{id}`: signed county commands ([`county_commands`]).

pub mod bench;
pub mod card_platform;
pub mod config;
pub mod contract;
pub mod county_commands;
pub mod dc09;
pub mod deliveries;
pub mod delivery;
pub mod feed;
pub mod filter;
pub mod gb26875;
pub mod gb28181;
pub mod mqtt;
pub mod mqtt_link;
mod outcome;
mod retry;
pub mod snapshots;
pub mod status;
pub mod tls;
pub mod urgency;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{DeviceId, Event, Location, NewEvent};
use tokio_util::sync::CancellationToken;

pub use config::{UplinkSettings, parse};
pub use contract::{UplinkError, UplinkFactory, UplinkKindConfig};
pub use delivery::{Delivery, RetryReason};
pub use filter::Filter;
pub(crate) use outcome::{
    RESEND_POLL, Refused, clear_resent, report_down, report_up, settle_rejected,
};
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

/// Starts every configured uplink, each under its own supervisor ([`supervise`]); they stop
/// when `cx.shutdown` fires.
pub fn start(configs: &[UplinkConfig], cx: &UplinkContext) -> Uplinks {
    let mut statuses = Vec::new();
    let mut tasks = Vec::new();
    for u in configs {
        let status = UplinkStatus::new(&u.name, u.kind);
        if u.settings.plaintext() {
            status.mark_plaintext();
            tracing::warn!(uplink = %u.name, url = %u.settings.shown_url(), "uplink sends events and credentials unencrypted (plaintext url); use mqtts:// or https:// unless the whole network path is trusted");
        }
        statuses.push(status.clone());
        tasks.push(tokio::spawn(supervise(u.clone(), cx.clone(), status)));
    }
    Uplinks {
        board: UplinkBoard(Arc::new(statuses)),
        tasks,
    }
}

/// An uplink task that ran this long is healthy again: its restart back-off resets.
const STABLE_AFTER: Duration = Duration::from_secs(60);

/// Runs one uplink's task and restarts it, with jittered back-off (the uplink's own
/// `backoff` bounds), whenever it panics or returns before shutdown. Each restart is
/// logged, counted in `campusgw_uplink_restarts_total{uplink}`, shown in the uplink's
/// status (`restarts`, `last_error`) and opens an outage (`uplink.down`, reason
/// `crashed`). The restarted task reopens its feed at the stored cursors, so whatever was
/// unconfirmed is sent again. While an urgent event waits the restart delay is capped at
/// `urgent_backoff_max`, as the retry loop's back-off is.
async fn supervise(u: UplinkConfig, cx: UplinkContext, status: Arc<UplinkStatus>) {
    let factory = u.settings.factory();
    let (base, max) = factory.backoff();
    let mut backoff = campusgw_sdk::driver::Backoff::new(base, max);
    let restarts = metrics::counter!("campusgw_uplink_restarts_total", "uplink" => u.name.clone());
    loop {
        let started = tokio::time::Instant::now();
        let run = tokio::spawn(
            factory
                .clone()
                .start(u.filter.clone(), cx.clone(), status.clone()),
        );
        // If the supervisor itself is aborted (join timeout), the task goes with it.
        let guard = AbortOnDrop(run.abort_handle());
        let ended = run.await;
        drop(guard);
        if cx.shutdown.is_cancelled() {
            return;
        }
        let why = match ended {
            Ok(()) => "uplink task returned before shutdown".to_owned(),
            Err(e) if e.is_panic() => {
                format!("uplink task panicked: {}", panic_text(e.into_panic()))
            }
            Err(e) => format!("uplink task ended: {e}"),
        };
        restarts.increment(1);
        let n = status.restarted();
        tracing::error!(uplink = %u.name, restarts = n, error = %why, "uplink task died; restarting it");
        report_down(
            &cx,
            &u.name,
            &status,
            RetryReason::Crashed,
            &format!("{why}; restarting"),
        );
        if started.elapsed() > STABLE_AFTER {
            backoff.reset();
        }
        // As in the retry loop: an urgent event waiting caps the restart delay and one
        // committed meanwhile ends it (`urgency.rs`).
        let mut urgency = urgency::Urgency::new(&cx.journal, &u.name, &u.filter);
        let cursors = stored_cursors(&cx.journal, &u.name);
        let urgent = urgency.pending(cursors);
        let mut delay = backoff.next_delay();
        if urgent {
            let cap = u.filter.urgent_backoff_max();
            delay = delay.min(campusgw_sdk::driver::Backoff::new(cap, cap).next_delay());
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cx.shutdown.cancelled() => return,
            () = urgency.arrives(cursors), if !urgent => {}
        }
    }
}

/// The stored cursors of uplink `name` per class rank (0 where unreadable: then
/// everything counts as pending, which only shortens a wait).
fn stored_cursors(journal: &Journal, name: &str) -> [u64; 5] {
    let mut cursors = [0u64; 5];
    if let Ok(r) = journal.reader() {
        for c in campusgw_sdk::Class::ALL {
            cursors[usize::from(c.rank())] = r.cursor(name, c).unwrap_or(0);
        }
    }
    cursors
}

fn panic_text(p: Box<dyn std::any::Any + Send>) -> String {
    match p.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => p
            .downcast_ref::<&'static str>()
            .map_or_else(|| "(no message)".to_owned(), |s| (*s).to_owned()),
    }
}

/// Aborts a task when dropped (also while unwinding from a panic).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
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
    /// Aborted when the uplink stops or unwinds from a panic.
    _stats: AbortOnDrop,
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
            _stats: AbortOnDrop(stats.abort_handle()),
        }
    }

    /// Stores the last cursors (waiting up to 5 s) and stops the refresher.
    pub(crate) async fn stop(self) {
        drop(self.cursors);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.saver).await;
    }
}

/// Refreshes backlog, oldest-unconfirmed age and the oldest undelivered alarm's age every
/// `every` (at most 5 s apart), and opens or closes an alarm-delay episode
/// (`uplink.alarm_delayed` / `uplink.alarm_delay_cleared`, [`urgency`]).
fn spawn_stats(
    cx: &UplinkContext,
    name: &str,
    filter: &Filter,
    status: Arc<UplinkStatus>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    let cx = cx.clone();
    let name = name.to_owned();
    let filter = filter.clone();
    let classes = filter.wanted_classes().to_vec();
    let alarm_classes: Vec<campusgw_sdk::Class> = [
        campusgw_sdk::Class::LifeSafety,
        campusgw_sdk::Class::Security,
    ]
    .into_iter()
    .filter(|c| filter.wants_class(*c))
    .collect();
    let threshold = filter.alarm_delay_threshold().as_secs_f64();
    let every = every.min(Duration::from_secs(5));
    tokio::spawn(async move {
        let heads = cx.journal.heads();
        let mut reader = None;
        let mut scanner = None;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let r = match reader.take() {
                Some(r) => Ok(r),
                None => cx.journal.reader(),
            };
            let Ok(r) = r else { continue };
            let s = match scanner.take() {
                Some(s) => Ok(s),
                None if alarm_classes.is_empty() => Err(()),
                None => urgency::Scanner::new(&cx.journal, &name, &filter, alarm_classes.clone())
                    .map_err(|_| ()),
            };
            let (n, classes, h) = (name.clone(), classes.clone(), *heads.borrow());
            let done = tokio::task::spawn_blocking(move || {
                let m = status::measure(&r, &n, &classes);
                let mut s = s.ok();
                let alarm = match (&m, s.as_mut()) {
                    (Ok((_, _, cursors)), Some(s)) => s.oldest(*cursors, h).ok(),
                    _ => None,
                };
                (r, s, m, alarm)
            })
            .await;
            let Ok((r, s, m, alarm)) = done else { continue };
            reader = Some(r);
            scanner = s;
            if let Ok((backlog, oldest, cursors)) = m {
                status.set_backlog(backlog, oldest, cursors);
            }
            // None: no alarm waits (or the check failed; the next tick tries again).
            let Some(alarm) = alarm else { continue };
            let age = alarm.map(|p| {
                (chrono::Utc::now() - p.received_at)
                    .num_milliseconds()
                    .max(0) as f64
                    / 1000.0
            });
            status.set_alarm_age(age);
            alarm_delay_episode(&cx, &name, &status, alarm, age, threshold);
        }
    })
}

/// Journals `uplink.alarm_delayed` (class `security`) when the oldest undelivered alarm
/// passes `threshold` seconds, once per episode, and `uplink.alarm_delay_cleared` (class
/// `operations`) when no alarm that old waits any more.
fn alarm_delay_episode(
    cx: &UplinkContext,
    name: &str,
    status: &UplinkStatus,
    alarm: Option<urgency::Pending>,
    age: Option<f64>,
    threshold: f64,
) {
    let over = age.is_some_and(|a| a >= threshold);
    if !status.set_alarm_delayed(over) {
        return;
    }
    let new = if let (true, Some(p), Some(age)) = (over, alarm, age) {
        tracing::error!(uplink = %name, seq = p.seq, age_seconds = age, "uplink.alarm_delayed: an alarm has waited longer than alarm_delay_threshold for this uplink");
        let payload = serde_json::json!({
            "uplink": name,
            "seq": p.seq,
            "class": p.class.as_str(),
            "age_seconds": age,
            "threshold_seconds": threshold,
            "state": status.state(),
        });
        NewEvent::new(
            campusgw_sdk::Kind::from_static("uplink.alarm_delayed"),
            campusgw_sdk::Class::Security,
        )
        .payload(payload)
    } else {
        tracing::info!(uplink = %name, "uplink.alarm_delay_cleared: the delayed alarms were delivered");
        let payload = serde_json::json!({"uplink": name, "oldest_undelivered_alarm_seconds": age});
        NewEvent::new(
            campusgw_sdk::Kind::from_static("uplink.alarm_delay_cleared"),
            campusgw_sdk::Class::Operations,
        )
        .payload(payload)
    };
    journal_event(cx, new);
}
