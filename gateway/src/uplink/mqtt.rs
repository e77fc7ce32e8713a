//! `kind = "mqtt"`: the county platform uplink (MQTT 3.1.1 or 5 over TCP or TLS, rumqttc).
//!
//! One session per connection: a fresh rumqttc client ([`mqtt_link`], either protocol)
//! runs its event loop in its own task (so it is never cancelled mid-write) and hands its
//! events to the session loop, which fills the in-flight window from the [`Feed`], maps each
//! publish's packet id to its event (rumqttc reports `Outgoing::Publish(pkid)` in request
//! order), and confirms events on PUBACK. When a session ends, every unconfirmed event is
//! released and resent, in class order, on the next connection: at-least-once, with the
//! event id for de-duplication.
//!
//! A broker that misbehaves never blocks the journal: the uplink only reads it. A connect
//! (TCP, TLS and CONNACK) is bounded by rumqttc's 5 s connection timeout; a connected
//! broker that withholds PUBACKs for `ack_timeout` is dropped as stalled and the events are
//! resent on the next connection.
//!
//! Outcomes ([`super::delivery`]): a PUBACK with reason 0x00 or 0x10 confirms the event. An
//! MQTT 5 PUBACK refusing it for any reason but 0x99 (0x87 not authorized, 0x97 quota
//! exceeded, 0x80, 0x83, 0x90, ...) is link, auth or configuration trouble: the event is
//! not confirmed, the session ends as failed (reason `auth`, `throttled`, `config`,
//! `server`), `uplink.down` is raised once per outage, and after back-off every unconfirmed
//! event is sent again on a new session; higher classes still go first. Only 0x99 (payload
//! format invalid) rejects the event: a `life_safety` or `security` one is recorded in the
//! journal's `rejected` list before its cursor moves, and raised as `uplink.rejected`. A
//! CONNACK refusal (bad credentials, not authorized, ...) and an unreadable password file
//! or client key are retried the same way; nothing is published without them.
//!
//! [`mqtt_link`]: super::mqtt_link

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{Class, Event, Kind, NewEvent};
use serde_json::json;
use tokio::sync::mpsc;

use super::UplinkContext;
use super::config::MqttConfig;
use super::contract::{Answer, Link, Round, Sent, Transport, UplinkError};
use super::county_commands::{
    Accepted, CommandGate, CountyCommand, Refusal, RefusalSummary, SUMMARY_PERIOD,
};
use super::delivery::RetryReason;
use super::delivery::{Delivery, puback_answer};
use super::feed::{Feed, Outgoing, WireEvent};
use super::filter::Filter;
use super::journal_event;
use super::mqtt_link::{self, Client, Failure, LinkEvent, LinkOptions};
use super::status::UplinkStatus;
use super::tls::client_config;

/// Events handled per wake-up of the session loop before the window is topped up again.
const EVENT_BATCH: usize = 256;

/// The next ready item for a batch that has handled `done` of at most `max` items: none once
/// the batch is full, so an item is never taken off the queue and then left unhandled. (Taking
/// one more after the last lost an event per full batch: a county command, or an outgoing
/// publish's packet id, which shifted every later PUBACK onto the wrong message.)
fn next_ready<T>(rx: &mut mpsc::Receiver<T>, done: usize, max: usize) -> Option<T> {
    if done >= max {
        return None;
    }
    rx.try_recv().ok()
}

/// What a publish was, keyed by packet id until its PUBACK.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Event(Sent),
    Control,
}

/// Reply slots kept free for signed commands: refusals of unauthenticated messages are not
/// answered once fewer are left.
const REPLY_HEADROOM: usize = 16;

/// How soon a reply the request queue could not take is tried again.
const REPLY_RETRY: Duration = Duration::from_millis(20);

/// A reply to a county command, produced off the session loop.
struct Reply {
    id: String,
    body: serde_json::Value,
}

/// The county MQTT uplink.
pub struct MqttUplink {
    cfg: Arc<MqttConfig>,
    filter: Filter,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
    gate: Option<Arc<CommandGate>>,
    /// Refused county commands, journaled at most once a minute.
    refusals: Arc<RefusalSummary>,
    topics: Topics,
    /// A PUBACK refused an event and no event was delivered since: a successful status
    /// PUBACK then does not end the outage (or every reconnect would raise a new one).
    refusing: std::sync::atomic::AtomicBool,
}

struct Topics {
    base: String,
}

impl Topics {
    fn event(&self, e: &WireEvent) -> String {
        format!("{}/events/{}/{}", self.base, e.class.as_str(), e.kind)
    }
    fn status(&self) -> String {
        format!("{}/status", self.base)
    }
    fn commands(&self) -> String {
        format!("{}/commands/+", self.base)
    }
    fn reply(&self, id: &str) -> String {
        format!("{}/replies/{id}", self.base)
    }
}

/// One connection's state.
struct LinkState {
    client: Client,
    sent: VecDeque<Tag>,
    pkids: HashMap<u16, Tag>,
    connected: bool,
    resync: Option<u64>,
    /// When the broker last made progress while publishes were outstanding.
    waiting_since: Option<tokio::time::Instant>,
}

impl LinkState {
    fn new(client: Client) -> LinkState {
        LinkState {
            client,
            sent: VecDeque::new(),
            pkids: HashMap::new(),
            connected: false,
            resync: None,
            waiting_since: None,
        }
    }

    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        tag: Tag,
    ) -> Result<(), String> {
        self.client.publish(topic, retain, payload)?;
        self.sent.push_back(tag);
        Ok(())
    }

    /// Starts the PUBACK clock when something is outstanding, stops it when nothing is.
    fn watch_acks(&mut self) {
        if self.sent.is_empty() && self.pkids.is_empty() {
            self.waiting_since = None;
        } else if self.waiting_since.is_none() {
            self.waiting_since = Some(tokio::time::Instant::now());
        }
    }

    fn outstanding(&self) -> usize {
        self.sent.len() + self.pkids.len()
    }
}

/// The MQTT [`Transport`]: a fresh rumqttc client per session.
struct Broker {
    up: Arc<MqttUplink>,
    reply_tx: mpsc::Sender<Reply>,
    /// Replies outlive a session (a device command may answer after a reconnect); the
    /// session that is open holds the receiver.
    replies: Arc<tokio::sync::Mutex<mpsc::Receiver<Reply>>>,
}

/// One MQTT session: its client, its event loop's events, its timers.
struct Session {
    up: Arc<MqttUplink>,
    link: LinkState,
    events: mpsc::Receiver<Result<LinkEvent, Failure>>,
    /// Aborts the event loop task when the session ends (also on unwinding).
    _pump: super::AbortOnDrop,
    reply_tx: mpsc::Sender<Reply>,
    replies: tokio::sync::OwnedMutexGuard<mpsc::Receiver<Reply>>,
    /// A reply the client's request queue could not take yet (it is full while the event
    /// loop waits on the broker): published again shortly, before any later reply. A full
    /// queue is back-pressure, not a broken link; tearing the session down for it would
    /// lose the commands still in flight on it.
    held: Option<(String, Vec<u8>)>,
    heartbeat: tokio::time::Interval,
}

impl Session {
    /// Queues a reply, or holds it while the client's request queue is full.
    fn publish_reply(&mut self, topic: String, body: Vec<u8>) {
        if let Err(m) = self
            .link
            .publish(topic.clone(), false, body.clone(), Tag::Control)
        {
            tracing::debug!(uplink = %self.up.cfg.name, error = %m, "reply not queued yet; held");
            self.held = Some((topic, body));
        }
    }
}

impl Transport for Broker {
    type Link = Session;

    async fn connect(&mut self) -> Result<Session, UplinkError> {
        let opts = self
            .up
            .options()
            .map_err(|m| UplinkError::retry(RetryReason::Config, m))?;
        let replies = self.replies.clone().try_lock_owned().map_err(|_| {
            UplinkError::retry(RetryReason::Crashed, "reply queue held by a stale session")
        })?;
        let (client, events, pump) = mqtt_link::start(opts);
        let mut heartbeat = tokio::time::interval(self.up.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Session {
            up: self.up.clone(),
            link: LinkState::new(client),
            events,
            _pump: super::AbortOnDrop(pump.abort_handle()),
            reply_tx: self.reply_tx.clone(),
            replies,
            held: None,
            heartbeat,
        })
    }
}

impl Link for Session {
    fn room(&mut self, feed: &mut Feed) -> usize {
        if !self.link.connected {
            return 0;
        }
        if let Some(from) = self.link.resync.filter(|_| feed.inflight() == 0) {
            feed.resync(from);
            self.link.resync = None;
        }
        if self.link.resync.is_some() {
            return 0;
        }
        usize::from(self.up.cfg.inflight).saturating_sub(feed.inflight())
    }

    fn ready(&self) -> bool {
        self.link.connected
    }

    fn send(&mut self, events: Vec<Outgoing>) -> Result<(), UplinkError> {
        let n = events.len() as u64;
        for o in events {
            // The JSON as journaled (seq filled in): no parse, no second serialization.
            let payload = o.event.json.to_vec();
            let topic = self.up.topics.event(&o.event);
            self.link
                .publish(topic, false, payload, Tag::Event(Sent::of(&o)))
                .map_err(|m| UplinkError::retry(RetryReason::Config, m))?;
        }
        self.up.status.published(n);
        Ok(())
    }

    async fn next(&mut self, feed: &mut Feed) -> Round {
        self.link.watch_acks();
        let stall = self.link.waiting_since.map(|t| t + self.up.cfg.ack_timeout);
        let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
        let connected = self.link.connected;
        tokio::select! {
            ev = self.events.recv() => {
                let up = self.up.clone();
                up.on_events(ev, self, feed)
            }
            _ = self.heartbeat.tick(), if connected => {
                let doc = self.up.status_doc(feed).to_string().into_bytes();
                if let Err(m) = self.link.publish(self.up.topics.status(), true, doc, Tag::Control) {
                    // The queue is full (a broken link is reported by the event loop
                    // itself): this heartbeat is skipped, the next one carries the same.
                    tracing::debug!(uplink = %self.up.cfg.name, error = %m, "status heartbeat not queued; skipped");
                }
                Round::default()
            }
            Some(r) = self.replies.recv(), if connected && self.held.is_none() => {
                let topic = self.up.topics.reply(&r.id);
                self.publish_reply(topic, r.body.to_string().into_bytes());
                Round::default()
            }
            () = tokio::time::sleep(REPLY_RETRY), if connected && self.held.is_some() => {
                if let Some((topic, body)) = self.held.take() {
                    self.publish_reply(topic, body);
                }
                Round::default()
            }
            () = tokio::time::sleep_until(stall.unwrap_or(far)), if stall.is_some() => {
                Round::failed(UplinkError::retry(RetryReason::Stalled, format!(
                    "broker sent no PUBACK for {:?} with {} publishes outstanding; reconnecting",
                    self.up.cfg.ack_timeout, self.link.outstanding()
                )))
            }
        }
    }

    async fn close(mut self) {
        if self.held.is_some() {
            metrics::counter!("campusgw_uplink_replies_dropped_total", "uplink" => self.up.cfg.name.clone()).increment(1);
        }
        let up = self.up.clone();
        up.goodbye(&mut self.link, &mut self.events).await;
    }
}

impl MqttUplink {
    /// An uplink publishing what `filter` selects, reporting into `status`.
    pub fn new(
        cfg: Arc<MqttConfig>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> MqttUplink {
        let gate = cfg
            .commands
            .clone()
            .map(|p| Arc::new(CommandGate::new(p, cx.gateway_id.as_str())));
        let topics = Topics {
            base: format!("{}/{}", cfg.topic_prefix, cx.gateway_id),
        };
        MqttUplink {
            cfg,
            filter,
            cx,
            status,
            gate,
            refusals: Arc::new(RefusalSummary::default()),
            topics,
            refusing: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Runs until the context's shutdown fires; reconnects with back-off and jitter
    /// (`uplink/retry.rs`).
    pub async fn run(self) {
        let up = Arc::new(self);
        let summariser = up.start_commands();
        let (reply_tx, reply_rx) = mpsc::channel(64);
        let setup = super::retry::Setup {
            name: up.cfg.name.clone(),
            filter: up.filter.clone(),
            cx: up.cx.clone(),
            status: up.status.clone(),
            backoff: up.cfg.backoff,
            stats_every: up.cfg.heartbeat,
        };
        let broker = Broker {
            up,
            reply_tx,
            replies: Arc::new(tokio::sync::Mutex::new(reply_rx)),
        };
        super::retry::run(broker, setup).await;
        if let Some(t) = summariser {
            let _ = t.await;
        }
    }

    /// Loads the nonces of commands accepted by earlier runs (replays stay refused across a
    /// restart) and starts the task journaling refusal summaries (at most one a minute; the
    /// last one at shutdown).
    fn start_commands(&self) -> Option<tokio::task::JoinHandle<()>> {
        let gate = self.gate.as_ref()?;
        let stored = self.cx.journal.load_nonces(chrono::Utc::now());
        if let Err(e) = &stored {
            tracing::error!(uplink = %self.cfg.name, error = %e, "stored command nonces unreadable: every county command is refused");
        }
        gate.preload(stored.map_err(|e| e.to_string()));
        let (summary, cx, name) = (
            self.refusals.clone(),
            self.cx.clone(),
            self.cfg.name.clone(),
        );
        Some(tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    () = tokio::time::sleep(SUMMARY_PERIOD) => false,
                    () = cx.shutdown.cancelled() => true,
                };
                if let Some(doc) = summary.due(std::time::Instant::now(), stop) {
                    // Awaited (not spawned): the last summary is durable before shutdown ends.
                    if let Err(e) = cx
                        .journal
                        .append(vec![refusal_event(&cx, &name, doc)])
                        .await
                    {
                        tracing::warn!(uplink = %name, error = %e, "refusal summary not journaled");
                    }
                }
                if stop {
                    return;
                }
            }
        }))
    }

    fn options(&self) -> Result<LinkOptions, String> {
        let b = &self.cfg.broker;
        let credentials = match &self.cfg.credentials {
            Some((user, pass)) => Some((user.clone(), pass.read()?)),
            None => None,
        };
        let tls = if b.tls {
            Some(client_config(&self.cfg.tls).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let will = json!({"status": "offline", "gateway": self.cx.gateway_id});
        Ok(LinkOptions {
            protocol: self.cfg.protocol,
            client_id: format!("{}.{}", self.cx.gateway_id, self.cfg.name),
            host: b.host.clone(),
            port: b.port,
            keep_alive: self.cfg.keep_alive,
            inflight: self.cfg.inflight,
            will: (self.topics.status(), will.to_string().into_bytes()),
            credentials,
            tls,
        })
    }

    /// Handles `first` and whatever else is ready (up to [`EVENT_BATCH`]); stops early at a
    /// PUBACK that asks for a retry (the round's failure).
    fn on_events(
        &self,
        first: Option<Result<LinkEvent, Failure>>,
        s: &mut Session,
        feed: &mut Feed,
    ) -> Round {
        let mut round = Round::default();
        let mut next = first;
        for done in 1..=EVENT_BATCH {
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err((reason, m))) => {
                    let b = &self.cfg.broker;
                    let m = if s.link.connected {
                        format!("connection to {}:{} lost: {m}", b.host, b.port)
                    } else {
                        format!("connecting to {}:{} failed: {m}", b.host, b.port)
                    };
                    round.failure = Some(UplinkError::retry(reason, m));
                    return round;
                }
                None => {
                    round.failure = Some(UplinkError::retry(
                        RetryReason::Network,
                        "event loop stopped",
                    ));
                    return round;
                }
            };
            if let Err(e) = self.on_event(ev, feed, s, &mut round) {
                round.failure = Some(e);
                return round;
            }
            if round.failure.is_some() {
                break;
            }
            match next_ready(&mut s.events, done, EVENT_BATCH) {
                Some(ev) => next = Some(ev),
                None => break,
            }
        }
        round
    }

    fn on_event(
        &self,
        ev: LinkEvent,
        feed: &mut Feed,
        s: &mut Session,
        round: &mut Round,
    ) -> Result<(), UplinkError> {
        let link = &mut s.link;
        match ev {
            LinkEvent::Connected => {
                link.connected = true;
                // Not `connected` yet: a broker that accepts the session and then withholds
                // PUBACKs must not look healthy. The first PUBACK proves the link.
                self.status.session_open();
                tracing::info!(uplink = %self.cfg.name, broker = %self.cfg.broker.host, port = self.cfg.broker.port, protocol = ?self.cfg.protocol, "mqtt uplink connected");
                let network = |m| UplinkError::retry(RetryReason::Network, m);
                if self.gate.is_some() {
                    link.client
                        .subscribe(self.topics.commands())
                        .map_err(network)?;
                }
                let doc = self.status_doc(feed).to_string().into_bytes();
                link.publish(self.topics.status(), true, doc, Tag::Control)
                    .map_err(network)?;
            }
            LinkEvent::Sent(pkid) => {
                if let Some(tag) = link.sent.pop_front()
                    && pkid != 0
                {
                    link.pkids.insert(pkid, tag);
                }
            }
            LinkEvent::Acked { pkid, code, detail } => {
                link.waiting_since = None;
                let tag = link.pkids.remove(&pkid);
                let verdict = puback_answer(code);
                let event = matches!(tag, Some(Tag::Event(_)));
                let proof = match &verdict {
                    Delivery::Retry { .. } => false,
                    _ if event => {
                        self.refusing
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        true
                    }
                    _ => !self.refusing.load(std::sync::atomic::Ordering::Relaxed),
                };
                round.proven |= proof;
                self.on_ack(tag, verdict, detail, round);
            }
            LinkEvent::Message { topic, payload } => {
                self.on_command(&topic, &payload, feed, &mut link.resync, &s.reply_tx);
            }
            LinkEvent::DisconnectSent | LinkEvent::Other => {}
        }
        Ok(())
    }

    /// A PUBACK: answers the event delivered or rejected (0x99), or ends the round with a
    /// retry.
    fn on_ack(&self, tag: Option<Tag>, verdict: Delivery, detail: String, round: &mut Round) {
        let Some(tag) = tag else { return };
        match (tag, verdict) {
            (Tag::Event(sent), Delivery::Delivered) => round.answers.push(Answer {
                sent,
                delivery: Delivery::Delivered,
            }),
            (Tag::Event(sent), Delivery::Rejected { .. }) => round.answers.push(Answer {
                sent,
                delivery: Delivery::Rejected {
                    reason: format!("broker rejected the message: {detail}"),
                },
            }),
            (Tag::Event(_), Delivery::Retry { reason }) => {
                self.refusing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                round.failure.get_or_insert_with(|| {
                    UplinkError::retry(
                        reason,
                        format!(
                            "broker refused a publish with {detail}; keeping the event and retrying"
                        ),
                    )
                });
            }
            (Tag::Control, Delivery::Delivered) => {}
            (Tag::Control, _) => {
                tracing::warn!(uplink = %self.cfg.name, reason = %detail, "broker refused a status or reply message");
            }
        }
    }
    fn on_command(
        &self,
        topic: &str,
        payload: &[u8],
        feed: &Feed,
        resync: &mut Option<u64>,
        reply_tx: &mpsc::Sender<Reply>,
    ) {
        let Some(gate) = &self.gate else { return };
        let id = topic.rsplit('/').next().unwrap_or_default().to_owned();
        if id.is_empty() || id.len() > 128 || id.contains(['+', '#']) {
            let r = Refusal {
                reason: super::county_commands::RefusalReason::BadTopic,
                message: "unusable command id in the topic".into(),
            };
            self.refused(&id, &r);
            return;
        }
        let verdict = gate.verify(&id, payload, chrono::Utc::now());
        let reply = |body: serde_json::Value| {
            let _ = reply_tx.try_send(Reply {
                id: id.clone(),
                body,
            });
        };
        let accepted = match verdict {
            Err(r) => {
                self.refused(&id, &r);
                // Unauthenticated junk is answered only while the reply queue has room to
                // spare, so a flood of it can never crowd out the reply to a real command.
                if !r.reason.is_unauthenticated() || reply_tx.capacity() > REPLY_HEADROOM {
                    reply(json!({"id": id, "status": "refused", "reason": r.message}));
                }
                return;
            }
            Ok(a) => a,
        };
        metrics::counter!("campusgw_uplink_commands_total", "uplink" => self.cfg.name.clone(), "outcome" => "accepted").increment(1);
        if !matches!(accepted.command, CountyCommand::Device(_)) {
            // Status only reads and a resync never moves a cursor back: storing the nonce
            // need not finish first. A device command waits for it ([`Self::device_command`]).
            let j = self.cx.journal.clone();
            let a = accepted.clone();
            tokio::spawn(async move {
                if let Err(e) = j.remember_nonce(&a.nonce, a.issued_at, a.expires_at).await {
                    tracing::error!(error = %e, "county command nonce not stored");
                }
            });
        }
        match accepted.command.clone() {
            CountyCommand::Status => {
                self.journal_command(&id, "ok", "status");
                reply(json!({"id": id, "status": "ok", "result": self.status_doc(feed)}));
            }
            CountyCommand::Resync(from) => match feed.resync_seq(from) {
                Ok(from_seq) => {
                    *resync = Some(from_seq);
                    self.journal_command(&id, "ok", &format!("resync from seq {from_seq}"));
                    reply(
                        json!({"id": id, "status": "ok", "result": {"resync_from_seq": from_seq}}),
                    );
                }
                Err(e) => {
                    self.journal_command(&id, "failed", &e.to_string());
                    reply(json!({"id": id, "status": "failed", "reason": e.to_string()}));
                }
            },
            CountyCommand::Device(cmd) => {
                self.device_command(id, cmd, accepted, reply_tx.clone());
            }
        }
    }

    /// A refused command: counted by reason, summarised in the journal at most once a
    /// minute (junk on the topic costs no fsync per message), logged with the summary.
    fn refused(&self, id: &str, r: &Refusal) {
        metrics::counter!("campusgw_uplink_commands_total", "uplink" => self.cfg.name.clone(), "outcome" => "refused").increment(1);
        metrics::counter!("campusgw_uplink_commands_refused_total", "uplink" => self.cfg.name.clone(), "reason" => r.reason.as_str()).increment(1);
        tracing::debug!(uplink = %self.cfg.name, command = %id, reason = %r.message, "county command refused");
        if let Some(doc) = self.refusals.note(id, r, std::time::Instant::now()) {
            tracing::warn!(uplink = %self.cfg.name, summary = %doc, "county commands refused");
            journal_refusals(&self.cx, &self.cfg.name, doc);
        }
    }

    /// Runs a device command once its nonce is durable in the journal (so a restart
    /// refuses its replay); a nonce another uplink stored first is a replay.
    fn device_command(
        &self,
        id: String,
        cmd: campusgw_sdk::Command,
        accepted: Accepted,
        reply_tx: mpsc::Sender<Reply>,
    ) {
        let Some(router) = self.cx.commands.clone() else {
            self.journal_command(&id, "failed", "no command router");
            let _ = reply_tx.try_send(Reply {
                body: json!({"id": id, "status": "failed", "reason": "this gateway routes no device commands"}),
                id,
            });
            return;
        };
        self.journal_command(&id, "ok", &format!("{} passed to devices", cmd.kind));
        let journal = self.cx.journal.clone();
        tokio::spawn(async move {
            let stored = journal
                .remember_nonce(&accepted.nonce, accepted.issued_at, accepted.expires_at)
                .await;
            let body = match stored {
                Ok(true) => {
                    let results = router.execute(cmd, Duration::from_secs(10)).await;
                    json!({"id": id, "status": "ok", "result": results})
                }
                Ok(false) => {
                    json!({"id": id, "status": "refused", "reason": format!("nonce {:?} was already used (replay refused)", accepted.nonce)})
                }
                Err(e) => {
                    tracing::error!(command = %id, error = %e, "county command nonce not stored; command not run");
                    json!({"id": id, "status": "refused", "reason": format!("replay protection unavailable: {e}")})
                }
            };
            let _ = reply_tx.send(Reply { body, id }).await;
        });
    }

    fn status_doc(&self, feed: &Feed) -> serde_json::Value {
        let snap = self.status.snapshot();
        let drivers = self.cx.drivers.as_ref().and_then(|d| {
            d.lock()
                .ok()
                .map(|m| serde_json::to_value(&*m).unwrap_or_default())
        });
        json!({
            "status": "online",
            "gateway": self.cx.gateway_id,
            "version": env!("CARGO_PKG_VERSION"),
            "at": chrono::Utc::now(),
            "backlog": snap.backlog,
            "oldest_unconfirmed_seconds": snap.oldest_unconfirmed_seconds,
            "oldest_undelivered_alarm_seconds": snap.oldest_undelivered_alarm_seconds,
            "inflight": feed.inflight(),
            "drivers": drivers,
        })
    }

    /// Graceful end: a retained `offline` status (the will covers crashes), then DISCONNECT.
    async fn goodbye(
        &self,
        link: &mut LinkState,
        events: &mut mpsc::Receiver<Result<LinkEvent, Failure>>,
    ) {
        let doc = json!({"status": "offline", "gateway": self.cx.gateway_id, "reason": "shutdown"});
        if link
            .publish(
                self.topics.status(),
                true,
                doc.to_string().into_bytes(),
                Tag::Control,
            )
            .is_err()
        {
            return;
        }
        link.client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(ev)) = events.recv().await {
                if matches!(ev, LinkEvent::DisconnectSent) {
                    return;
                }
            }
        })
        .await;
    }

    fn journal_command(&self, id: &str, status: &str, detail: &str) {
        let payload =
            json!({"uplink": self.cfg.name, "command": id, "status": status, "detail": detail});
        journal_event(
            &self.cx,
            NewEvent::new(Kind::from_static("uplink.command"), Class::Operations).payload(payload),
        );
    }
}

/// A refusal summary as a `county.commands_refused` event.
fn refusal_event(cx: &UplinkContext, uplink: &str, mut doc: serde_json::Value) -> Event {
    doc["uplink"] = json!(uplink);
    Event::stamp(
        NewEvent::new(
            Kind::from_static("county.commands_refused"),
            Class::Operations,
        )
        .payload(doc),
        &cx.gateway_id,
        "uplink",
        &campusgw_sdk::Location::default(),
    )
}

/// Journals a refusal summary (in the background: the session loop never waits).
fn journal_refusals(cx: &UplinkContext, uplink: &str, doc: serde_json::Value) {
    let e = refusal_event(cx, uplink, doc);
    let j = cx.journal.clone();
    tokio::spawn(async move {
        if let Err(err) = j.append(vec![e]).await {
            tracing::warn!(error = %err, "refusal summary not journaled");
        }
    });
}

impl super::contract::UplinkFactory for MqttConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }
    fn plaintext(&self) -> bool {
        !self.broker.tls
    }
    fn shown_url(&self) -> String {
        MqttConfig::shown_url(self)
    }
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> campusgw_sdk::driver::BoxFuture<'static, ()> {
        Box::pin(MqttUplink::new(self, filter, cx, status).run())
    }
}

#[cfg(test)]
mod tests {
    use super::next_ready;
    use tokio::sync::mpsc;

    /// Full batches leave the rest queued: every item is handled once, in order, however the
    /// queue's length falls against the batch size.
    #[test]
    fn batches_drain_a_queue_without_losing_the_item_after_a_full_batch() {
        for (queued, max) in [(10_usize, 4_usize), (8, 4), (3, 4), (1, 1), (9, 1)] {
            let (tx, mut rx) = mpsc::channel(64);
            for i in 0..queued {
                tx.try_send(i).unwrap();
            }
            let mut handled = Vec::new();
            let mut batches = 0;
            // The session loop: a blocking receive starts each batch.
            while let Ok(first) = rx.try_recv() {
                batches += 1;
                let mut next = Some(first);
                for done in 1..=max {
                    let Some(item) = next.take() else { break };
                    handled.push(item);
                    next = next_ready(&mut rx, done, max);
                    if next.is_none() {
                        break;
                    }
                }
                assert!(next.is_none(), "an item taken but not handled");
            }
            assert_eq!(
                handled,
                (0..queued).collect::<Vec<_>>(),
                "{queued} in batches of {max}"
            );
            assert_eq!(batches, queued.div_ceil(max));
        }
    }
}
