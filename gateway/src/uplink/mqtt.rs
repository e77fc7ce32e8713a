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
use std::time::{Duration, Instant};

use campusgw_sdk::{Class, Event, EventId, Kind, NewEvent};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::config::MqttConfig;
use super::county_commands::{
    Accepted, CommandGate, CountyCommand, Refusal, RefusalSummary, SUMMARY_PERIOD,
};
use super::delivery::RetryReason;
use super::delivery::{Delivery, puback_answer};
use super::feed::{Feed, WireEvent};
use super::filter::Filter;
use super::mqtt_link::{self, Client, Failure, LinkEvent, LinkOptions};
use super::status::UplinkStatus;
use super::tls::client_config;
use super::{Refused, UplinkContext, backoff, journal_event, report_down, report_up};

/// Events handled per wake-up of the session loop before the window is topped up again.
const EVENT_BATCH: usize = 256;

/// What a publish was, keyed by packet id until its PUBACK.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Event {
        class: Class,
        seq: u64,
        id: EventId,
        /// An `uplink.rejected` alarm itself (never alarmed about again).
        alarm: bool,
    },
    Control,
}

enum End {
    Shutdown,
    Failed(RetryReason, String),
}

/// Reply slots kept free for signed commands: refusals of unauthenticated messages are not
/// answered once fewer are left.
const REPLY_HEADROOM: usize = 16;

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
struct Link {
    client: Client,
    sent: VecDeque<Tag>,
    pkids: HashMap<u16, Tag>,
    connected: bool,
    resync: Option<u64>,
    /// When the broker last made progress while publishes were outstanding.
    waiting_since: Option<tokio::time::Instant>,
    /// Events the broker judged malformed (PUBACK 0x99), not yet settled.
    rejected: Vec<Refused>,
    /// A PUBACK refused an event for link, auth or configuration reasons: end the session.
    retry: Option<(RetryReason, String)>,
    /// The broker acknowledged something on this connection: the link is proven.
    proven: bool,
}

impl Link {
    fn new(client: Client) -> Link {
        Link {
            client,
            sent: VecDeque::new(),
            pkids: HashMap::new(),
            connected: false,
            resync: None,
            waiting_since: None,
            rejected: Vec::new(),
            retry: None,
            proven: false,
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

    /// Runs until the context's shutdown fires; reconnects with back-off and jitter.
    pub async fn run(self) {
        let Some(mut feed) = self.open_feed().await else {
            self.status.stopped();
            return;
        };
        let bg = super::Background::start(
            &self.cx,
            &self.cfg.name,
            &self.filter,
            self.status.clone(),
            &feed,
            self.cfg.heartbeat,
        );
        let summariser = self.start_commands();
        let (reply_tx, mut reply_rx) = mpsc::channel(64);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let end = self
                .session(&mut feed, &bg.cursors, &reply_tx, &mut reply_rx)
                .await;
            feed.release_all();
            let (reason, message) = match end {
                End::Shutdown => break,
                End::Failed(r, m) => (r, m),
            };
            report_down(&self.cx, &self.cfg.name, &self.status, reason, &message);
            if started.elapsed() > Duration::from_secs(30) {
                attempt = 0;
            }
            let delay = backoff(self.cfg.backoff, attempt);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cx.shutdown.cancelled() => break,
            }
        }
        bg.stop().await;
        if let Some(t) = summariser {
            let _ = t.await;
        }
        self.status.stopped();
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

    async fn open_feed(&self) -> Option<Feed> {
        let mut attempt = 0;
        loop {
            match Feed::open(&self.cfg.name, &self.cx.journal, self.filter.clone()) {
                Ok(f) => return Some(f),
                Err(e) => {
                    report_down(
                        &self.cx,
                        &self.cfg.name,
                        &self.status,
                        RetryReason::Journal,
                        &e.to_string(),
                    );
                    let delay = backoff(self.cfg.backoff, attempt);
                    attempt += 1;
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cx.shutdown.cancelled() => return None,
                    }
                }
            }
        }
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

    async fn session(
        &self,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        reply_tx: &mpsc::Sender<Reply>,
        replies: &mut mpsc::Receiver<Reply>,
    ) -> End {
        let opts = match self.options() {
            Ok(o) => o,
            Err(m) => return End::Failed(RetryReason::Config, m),
        };
        let (client, mut events, pump) = mqtt_link::start(opts);
        // Also on unwinding: a panicking session must not leave its connection running.
        let _pump = super::AbortOnDrop(pump.abort_handle());
        let mut link = Link::new(client);
        let end = self
            .session_loop(feed, cursors, reply_tx, replies, &mut link, &mut events)
            .await;
        if matches!(end, End::Shutdown) {
            self.goodbye(&mut link, &mut events).await;
        }
        end
    }

    async fn session_loop(
        &self,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        reply_tx: &mpsc::Sender<Reply>,
        replies: &mut mpsc::Receiver<Reply>,
        link: &mut Link,
        events: &mut mpsc::Receiver<Result<LinkEvent, Failure>>,
    ) -> End {
        let window = usize::from(self.cfg.inflight);
        let mut committed = self.cx.journal.committed_seq();
        let mut journal_open = true;
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut resends = tokio::time::interval(super::RESEND_POLL);
        resends.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.status.injected_fault();
            if link.connected {
                if let Some(from) = link.resync.filter(|_| feed.inflight() == 0) {
                    feed.resync(from);
                    link.resync = None;
                }
                if link.resync.is_none()
                    && let Err(e) = self.fill(feed, link, *committed.borrow_and_update(), window)
                {
                    return End::Failed(RetryReason::Config, e);
                }
            }
            link.watch_acks();
            let stall = link.waiting_since.map(|t| t + self.cfg.ack_timeout);
            let far = tokio::time::Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                () = self.cx.shutdown.cancelled() => return End::Shutdown,
                ev = events.recv() => {
                    if let Err(end) = self.on_events(ev, events, feed, cursors, link, reply_tx) {
                        return end;
                    }
                    if let Err(end) = self.settle(feed, cursors, link).await {
                        return end;
                    }
                }
                _ = resends.tick(), if link.connected => {
                    if let Err(e) = feed.poll_resends() {
                        tracing::warn!(uplink = %self.cfg.name, error = %e, "cannot read resend requests");
                    }
                }
                r = committed.changed(), if link.connected && journal_open && feed.inflight() < window => {
                    journal_open = r.is_ok();
                }
                _ = heartbeat.tick(), if link.connected => {
                    let doc = self.status_doc(feed).to_string().into_bytes();
                    if let Err(m) = link.publish(self.topics.status(), true, doc, Tag::Control) {
                        return End::Failed(RetryReason::Network, m);
                    }
                }
                Some(r) = replies.recv(), if link.connected => {
                    let body = r.body.to_string().into_bytes();
                    if let Err(m) = link.publish(self.topics.reply(&r.id), false, body, Tag::Control) {
                        return End::Failed(RetryReason::Network, m);
                    }
                }
                () = tokio::time::sleep_until(stall.unwrap_or(far)), if stall.is_some() => {
                    return End::Failed(RetryReason::Stalled, format!(
                        "broker sent no PUBACK for {:?} with {} publishes outstanding; reconnecting",
                        self.cfg.ack_timeout, link.outstanding()
                    ));
                }
            }
        }
    }

    /// Tops the window up from the feed.
    fn fill(
        &self,
        feed: &mut Feed,
        link: &mut Link,
        committed: u64,
        window: usize,
    ) -> Result<(), String> {
        let mut n = 0;
        while feed.inflight() < window {
            let Some(o) = feed.next(committed).map_err(|e| e.to_string())? else {
                break;
            };
            // The JSON as journaled (seq filled in): no parse, no second serialization.
            let payload = o.event.json.to_vec();
            let tag = Tag::Event {
                class: o.class,
                seq: o.seq,
                id: o.event.id,
                alarm: o.event.kind.as_str() == "uplink.rejected",
            };
            link.publish(self.topics.event(&o.event), false, payload, tag)?;
            n += 1;
        }
        if n > 0 {
            self.status.published(n);
        }
        Ok(())
    }

    /// Handles `first` and whatever else is ready (up to [`EVENT_BATCH`]); stops early at a
    /// PUBACK that asks for a retry ([`Link::retry`]).
    fn on_events(
        &self,
        first: Option<Result<LinkEvent, Failure>>,
        events: &mut mpsc::Receiver<Result<LinkEvent, Failure>>,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        link: &mut Link,
        reply_tx: &mpsc::Sender<Reply>,
    ) -> Result<(), End> {
        let mut next = first;
        let mut moved = false;
        for _ in 0..EVENT_BATCH {
            let ev = match next {
                Some(Ok(ev)) => ev,
                Some(Err((reason, m))) => {
                    let b = &self.cfg.broker;
                    let m = if link.connected {
                        format!("connection to {}:{} lost: {m}", b.host, b.port)
                    } else {
                        format!("connecting to {}:{} failed: {m}", b.host, b.port)
                    };
                    return Err(End::Failed(reason, m));
                }
                None => {
                    return Err(End::Failed(
                        RetryReason::Network,
                        "event loop stopped".into(),
                    ));
                }
            };
            moved |= self.on_event(ev, feed, link, reply_tx)?;
            if link.retry.is_some() {
                break;
            }
            match events.try_recv() {
                Ok(ev) => next = Some(ev),
                Err(_) => break,
            }
        }
        if moved {
            cursors.send_replace(feed.cursors());
        }
        Ok(())
    }

    /// After a round of link events: records the events judged malformed (durably, before
    /// their cursor moves), clears delivered resends from the rejected list, and ends the
    /// session when a PUBACK asked for a retry.
    async fn settle(
        &self,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        link: &mut Link,
    ) -> Result<(), End> {
        let refused = std::mem::take(&mut link.rejected);
        if !refused.is_empty() {
            match super::settle_rejected(&self.cx, &self.cfg.name, &self.status, feed, refused)
                .await
            {
                Ok(true) => {
                    cursors.send_replace(feed.cursors());
                }
                Ok(false) => {}
                Err(m) => return Err(End::Failed(RetryReason::Journal, m)),
            }
        }
        super::clear_resent(&self.cx, &self.cfg.name, feed).await;
        match link.retry.take() {
            Some((reason, m)) => Err(End::Failed(reason, m)),
            None => Ok(()),
        }
    }

    /// Returns whether a cursor moved.
    fn on_event(
        &self,
        ev: LinkEvent,
        feed: &mut Feed,
        link: &mut Link,
        reply_tx: &mpsc::Sender<Reply>,
    ) -> Result<bool, End> {
        match ev {
            LinkEvent::Connected => {
                link.connected = true;
                // Not `connected` yet: a broker that accepts the session and then withholds
                // PUBACKs must not look healthy. The first PUBACK proves the link.
                self.status.session_open();
                tracing::info!(uplink = %self.cfg.name, broker = %self.cfg.broker.host, port = self.cfg.broker.port, protocol = ?self.cfg.protocol, "mqtt uplink connected");
                if self.gate.is_some() {
                    link.client
                        .subscribe(self.topics.commands())
                        .map_err(|m| End::Failed(RetryReason::Network, m))?;
                }
                let doc = self.status_doc(feed).to_string().into_bytes();
                link.publish(self.topics.status(), true, doc, Tag::Control)
                    .map_err(|m| End::Failed(RetryReason::Network, m))?;
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
                let event = matches!(tag, Some(Tag::Event { .. }));
                let proof = match &verdict {
                    Delivery::Retry { .. } => false,
                    _ if event => {
                        self.refusing
                            .store(false, std::sync::atomic::Ordering::Relaxed);
                        true
                    }
                    _ => !self.refusing.load(std::sync::atomic::Ordering::Relaxed),
                };
                if !link.proven && proof {
                    link.proven = true;
                    report_up(&self.cx, &self.cfg.name, &self.status);
                }
                return Ok(self.on_ack(tag, verdict, detail, feed, link));
            }
            LinkEvent::Message { topic, payload } => {
                self.on_command(&topic, &payload, feed, &mut link.resync, reply_tx);
            }
            LinkEvent::DisconnectSent | LinkEvent::Other => {}
        }
        Ok(false)
    }

    /// A PUBACK: confirms the event, queues it for settling as rejected (0x99), or asks
    /// for the session to end and the event to be retried. Returns whether a cursor moved.
    fn on_ack(
        &self,
        tag: Option<Tag>,
        verdict: Delivery,
        detail: String,
        feed: &mut Feed,
        link: &mut Link,
    ) -> bool {
        let Some(tag) = tag else { return false };
        match (tag, verdict) {
            (Tag::Event { class, seq, .. }, Delivery::Delivered) => {
                self.status.confirmed(1);
                feed.confirm(class, seq)
            }
            (
                Tag::Event {
                    class,
                    seq,
                    id,
                    alarm,
                },
                Delivery::Rejected { .. },
            ) => {
                link.rejected.push(Refused {
                    class,
                    seq,
                    id,
                    alarm,
                    reason: format!("broker rejected the message: {detail}"),
                });
                false
            }
            (Tag::Event { .. }, Delivery::Retry { reason }) => {
                self.refusing
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                link.retry.get_or_insert((
                    reason,
                    format!(
                        "broker refused a publish with {detail}; keeping the event and retrying"
                    ),
                ));
                false
            }
            (Tag::Control, Delivery::Delivered) => false,
            (Tag::Control, _) => {
                tracing::warn!(uplink = %self.cfg.name, reason = %detail, "broker refused a status or reply message");
                false
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
            "inflight": feed.inflight(),
            "drivers": drivers,
        })
    }

    /// Graceful end: a retained `offline` status (the will covers crashes), then DISCONNECT.
    async fn goodbye(
        &self,
        link: &mut Link,
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
