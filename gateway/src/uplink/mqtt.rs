//! `kind = "mqtt"`: the county platform uplink (MQTT 3.1.1 over TCP or TLS, rumqttc).
//!
//! One session per connection: a fresh rumqttc event loop runs in its own task (so it is
//! never cancelled mid-write) and hands its events to the session loop, which fills the
//! in-flight window from the [`Feed`], maps each publish's packet id to its event (rumqttc
//! reports `Outgoing::Publish(pkid)` in request order), and confirms events on PUBACK.
//! When a session ends, every unconfirmed event is released and resent, in class order,
//! on the next connection: at-least-once, with the event id for de-duplication.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use campusgw_sdk::{Class, Event, Kind, NewEvent};
use rumqttc::{
    AsyncClient, ConnectionError, Event as MqttEvent, EventLoop, LastWill, MqttOptions, Outgoing,
    Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::json;
use tokio::sync::{mpsc, watch};

use super::config::MqttConfig;
use super::county_commands::{CommandGate, CountyCommand};
use super::feed::{Feed, save_cursors};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::tls::{FailureReason, classify, client_config};
use super::{UplinkContext, backoff, journal_event};

/// What a publish was, keyed by packet id until its PUBACK.
#[derive(Debug, Clone, Copy)]
enum Tag {
    Event { class: Class, seq: u64 },
    Control,
}

enum End {
    Shutdown,
    Failed(FailureReason, String),
}

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
    topics: Topics,
}

struct Topics {
    base: String,
}

impl Topics {
    fn event(&self, e: &Event) -> String {
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

/// Session-local publishing state.
struct Link {
    client: AsyncClient,
    sent: VecDeque<Tag>,
    pkids: HashMap<u16, Tag>,
}

impl Link {
    fn publish(
        &mut self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        tag: Tag,
    ) -> Result<(), String> {
        self.client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
            .map_err(|e| format!("cannot queue publish: {e}"))?;
        self.sent.push_back(tag);
        Ok(())
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
        let gate = cfg.commands.clone().map(|p| Arc::new(CommandGate::new(p)));
        let topics = Topics {
            base: format!("{}/{}", cfg.topic_prefix, cx.gateway_id),
        };
        MqttUplink {
            cfg,
            filter,
            cx,
            status,
            gate,
            topics,
        }
    }

    /// Runs until the context's shutdown fires; reconnects with back-off and jitter.
    pub async fn run(self) {
        let Some(mut feed) = self.open_feed().await else {
            self.status.stopped();
            return;
        };
        let (cur_tx, cur_rx) = watch::channel(feed.cursors());
        let saver = tokio::spawn(save_cursors(
            self.cx.journal.clone(),
            self.cfg.name.clone(),
            cur_rx,
        ));
        let stats = super::spawn_stats(
            &self.cx,
            &self.cfg.name,
            &self.filter,
            self.status.clone(),
            self.cfg.heartbeat,
        );
        let (reply_tx, mut reply_rx) = mpsc::channel(64);
        let mut attempt = 0u32;
        loop {
            let started = Instant::now();
            let end = self
                .session(&mut feed, &cur_tx, &reply_tx, &mut reply_rx)
                .await;
            feed.release_all();
            let (reason, message) = match end {
                End::Shutdown => break,
                End::Failed(r, m) => (r, m),
            };
            tracing::warn!(uplink = %self.cfg.name, reason = reason.as_str(), error = %message, "mqtt uplink down; retrying");
            if self.status.failed(reason, &message) {
                self.journal_link_event("uplink.down", reason, &message);
            }
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
        drop(cur_tx);
        let _ = tokio::time::timeout(Duration::from_secs(5), saver).await;
        stats.abort();
        self.status.stopped();
    }

    async fn open_feed(&self) -> Option<Feed> {
        let mut attempt = 0;
        loop {
            match Feed::open(&self.cfg.name, &self.cx.journal, self.filter.clone()) {
                Ok(f) => return Some(f),
                Err(e) => {
                    self.status.failed(FailureReason::Setup, &e.to_string());
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

    fn options(&self) -> Result<MqttOptions, String> {
        let b = &self.cfg.broker;
        let id = format!("{}.{}", self.cx.gateway_id, self.cfg.name);
        let mut o = MqttOptions::new(id, b.host.clone(), b.port);
        o.set_keep_alive(self.cfg.keep_alive)
            .set_clean_session(false)
            .set_inflight(self.cfg.inflight)
            .set_max_packet_size(1 << 20, 1 << 20)
            .set_last_will(LastWill::new(
                self.topics.status(),
                json!({"status": "offline", "gateway": self.cx.gateway_id}).to_string(),
                QoS::AtLeastOnce,
                true,
            ));
        if let Some((user, pass)) = &self.cfg.credentials {
            o.set_credentials(user.clone(), pass.read()?);
        }
        if b.tls {
            let tls = client_config(&self.cfg.tls).map_err(|e| e.to_string())?;
            o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
        }
        Ok(o)
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
            Err(m) => return End::Failed(FailureReason::Setup, m),
        };
        let window = usize::from(self.cfg.inflight);
        let (client, el) = AsyncClient::new(opts, window + 64);
        let (ev_tx, mut events) = mpsc::channel(1024);
        let pump = tokio::spawn(pump(el, ev_tx));
        let mut link = Link {
            client,
            sent: VecDeque::new(),
            pkids: HashMap::new(),
        };
        let end = self
            .session_loop(
                feed,
                cursors,
                reply_tx,
                replies,
                &mut link,
                &mut events,
                window,
            )
            .await;
        if matches!(end, End::Shutdown) {
            self.goodbye(&mut link, &mut events).await;
        }
        pump.abort();
        end
    }

    #[allow(clippy::too_many_arguments)]
    async fn session_loop(
        &self,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        reply_tx: &mpsc::Sender<Reply>,
        replies: &mut mpsc::Receiver<Reply>,
        link: &mut Link,
        events: &mut mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
        window: usize,
    ) -> End {
        let mut committed = self.cx.journal.committed_seq();
        let mut journal_open = true;
        let mut heartbeat = tokio::time::interval(self.cfg.heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut connected = false;
        let mut resync: Option<u64> = None;
        loop {
            if connected {
                if let Some(from) = resync.filter(|_| feed.inflight() == 0) {
                    feed.resync(from);
                    resync = None;
                }
                if resync.is_none()
                    && let Err(e) = self.fill(feed, link, *committed.borrow_and_update(), window)
                {
                    return End::Failed(FailureReason::Setup, e);
                }
            }
            tokio::select! {
                () = self.cx.shutdown.cancelled() => return End::Shutdown,
                ev = events.recv() => match ev {
                    Some(Ok(ev)) => {
                        if let Err(end) = self.on_event(ev, feed, cursors, link, &mut connected, &mut resync, reply_tx) {
                            return end;
                        }
                    }
                    Some(Err(e)) => return failure(&e),
                    None => return End::Failed(FailureReason::Network, "event loop stopped".into()),
                },
                r = committed.changed(), if connected && journal_open && feed.inflight() < window => {
                    journal_open = r.is_ok();
                }
                _ = heartbeat.tick(), if connected => {
                    let doc = self.status_doc(feed).to_string().into_bytes();
                    if let Err(m) = link.publish(self.topics.status(), true, doc, Tag::Control) {
                        return End::Failed(FailureReason::Network, m);
                    }
                }
                Some(r) = replies.recv(), if connected => {
                    let body = r.body.to_string().into_bytes();
                    if let Err(m) = link.publish(self.topics.reply(&r.id), false, body, Tag::Control) {
                        return End::Failed(FailureReason::Network, m);
                    }
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
            let payload = serde_json::to_vec(&*o.event).map_err(|e| e.to_string())?;
            let tag = Tag::Event {
                class: o.class,
                seq: o.seq,
            };
            link.publish(self.topics.event(&o.event), false, payload, tag)?;
            n += 1;
        }
        if n > 0 {
            self.status.published(n);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn on_event(
        &self,
        ev: MqttEvent,
        feed: &mut Feed,
        cursors: &watch::Sender<[u64; 5]>,
        link: &mut Link,
        connected: &mut bool,
        resync: &mut Option<u64>,
        reply_tx: &mpsc::Sender<Reply>,
    ) -> Result<(), End> {
        match ev {
            MqttEvent::Incoming(Packet::ConnAck(_)) => {
                *connected = true;
                if self.status.state() == super::status::LinkState::Down {
                    self.journal_link_event("uplink.up", FailureReason::Network, "connected");
                }
                self.status.connected();
                tracing::info!(uplink = %self.cfg.name, broker = %self.cfg.broker.host, port = self.cfg.broker.port, "mqtt uplink connected");
                if self.gate.is_some() {
                    link.client
                        .try_subscribe(self.topics.commands(), QoS::AtLeastOnce)
                        .map_err(|e| End::Failed(FailureReason::Network, e.to_string()))?;
                }
                let doc = self.status_doc(feed).to_string().into_bytes();
                link.publish(self.topics.status(), true, doc, Tag::Control)
                    .map_err(|m| End::Failed(FailureReason::Network, m))?;
            }
            MqttEvent::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(tag) = link.sent.pop_front()
                    && pkid != 0
                {
                    link.pkids.insert(pkid, tag);
                }
            }
            MqttEvent::Incoming(Packet::PubAck(ack)) => {
                if let Some(Tag::Event { class, seq }) = link.pkids.remove(&ack.pkid) {
                    self.status.confirmed(1);
                    if feed.confirm(class, seq) {
                        cursors.send_replace(feed.cursors());
                    }
                }
            }
            MqttEvent::Incoming(Packet::Publish(p)) => {
                self.on_command(&p.topic, &p.payload, feed, resync, reply_tx);
            }
            _ => {}
        }
        Ok(())
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
            metrics::counter!("campusgw_uplink_commands_total", "uplink" => self.cfg.name.clone(), "outcome" => "refused").increment(1);
            tracing::warn!(uplink = %self.cfg.name, topic, "county command with an unusable id ignored");
            return;
        }
        let verdict = gate.verify(&id, payload, chrono::Utc::now());
        let outcome = if verdict.is_ok() {
            "accepted"
        } else {
            "refused"
        };
        metrics::counter!("campusgw_uplink_commands_total", "uplink" => self.cfg.name.clone(), "outcome" => outcome).increment(1);
        let reply = |body: serde_json::Value| {
            let _ = reply_tx.try_send(Reply {
                id: id.clone(),
                body,
            });
        };
        match verdict {
            Err(reason) => {
                tracing::warn!(uplink = %self.cfg.name, command = %id, %reason, "county command refused");
                self.journal_command(&id, "refused", &reason);
                reply(json!({"id": id, "status": "refused", "reason": reason}));
            }
            Ok(CountyCommand::Status) => {
                self.journal_command(&id, "ok", "status");
                reply(json!({"id": id, "status": "ok", "result": self.status_doc(feed)}));
            }
            Ok(CountyCommand::Resync { from_seq }) => {
                *resync = Some(from_seq);
                self.journal_command(&id, "ok", &format!("resync from seq {from_seq}"));
                reply(json!({"id": id, "status": "ok", "result": {"resync_from_seq": from_seq}}));
            }
            Ok(CountyCommand::Device(cmd)) => self.device_command(id, cmd, reply_tx.clone()),
        }
    }

    fn device_command(
        &self,
        id: String,
        cmd: campusgw_sdk::Command,
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
        tokio::spawn(async move {
            let results = router.execute(cmd, Duration::from_secs(10)).await;
            let _ = reply_tx
                .send(Reply {
                    body: json!({"id": id, "status": "ok", "result": results}),
                    id,
                })
                .await;
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
        events: &mut mpsc::Receiver<Result<MqttEvent, ConnectionError>>,
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
        let _ = link.client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(ev)) = events.recv().await {
                if matches!(ev, MqttEvent::Outgoing(Outgoing::Disconnect)) {
                    return;
                }
            }
        })
        .await;
    }

    fn journal_link_event(&self, kind: &'static str, reason: FailureReason, message: &str) {
        let class = if reason == FailureReason::Certificate {
            Class::Security
        } else {
            Class::Operations
        };
        let payload =
            json!({"uplink": self.cfg.name, "reason": reason.as_str(), "detail": message});
        journal_event(
            &self.cx,
            NewEvent::new(Kind::from_static(kind), class).payload(payload),
        );
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

/// Drives the rumqttc event loop in its own task; ends after the first error.
async fn pump(mut el: EventLoop, tx: mpsc::Sender<Result<MqttEvent, ConnectionError>>) {
    loop {
        let r = el.poll().await;
        let stop = r.is_err();
        if tx.send(r).await.is_err() || stop {
            return;
        }
    }
}

fn failure(e: &ConnectionError) -> End {
    if let Some((reason, msg)) = classify(e) {
        return End::Failed(reason, msg);
    }
    let reason = match e {
        ConnectionError::ConnectionRefused(_) => FailureReason::Refused,
        ConnectionError::Tls(_) => FailureReason::Tls,
        _ => FailureReason::Network,
    };
    End::Failed(reason, e.to_string())
}
