//! `kind = "webhook"`: HTTPS POST of event batches (a JSON array of events, the documented
//! event JSON form) with a bearer token or mutual TLS.
//!
//! Outcomes (vector's Delivered / Retriable / Rejected): 2xx confirms the batch; 408, 429,
//! 5xx, a timeout or a network error retry the same events with back-off, honouring
//! `Retry-After` (seconds); any other 4xx means the destination rejects those events: they
//! are counted as rejected, an `uplink.rejected` alarm is journaled, the cursor moves past
//! them and the uplink goes on with the rest.

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::{Class, Kind, NewEvent};
use reqwest::StatusCode;
use serde_json::json;

use super::config::WebhookConfig;
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::tls::{FailureReason, classify, client_config};
use super::{UplinkContext, backoff, journal_event};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The webhook uplink.
pub struct WebhookUplink {
    cfg: Arc<WebhookConfig>,
    filter: Filter,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
}

enum Outcome {
    Delivered,
    Retry(FailureReason, String, Option<Duration>),
    Rejected(u16, String),
}

impl WebhookUplink {
    /// A webhook uplink posting what `filter` selects.
    pub fn new(
        cfg: Arc<WebhookConfig>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> WebhookUplink {
        WebhookUplink {
            cfg,
            filter,
            cx,
            status,
        }
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        let tls = client_config(&self.cfg.tls).map_err(|e| e.to_string())?;
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(self.cfg.timeout)
            .build()
            .map_err(|e| format!("http client: {e}"))
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        let (client, mut feed) = loop {
            let r = self.client().and_then(|c| {
                Feed::open(&self.cfg.name, &self.cx.journal, self.filter.clone())
                    .map(|f| (c, f))
                    .map_err(|e| e.to_string())
            });
            match r {
                Ok(x) => break x,
                Err(m) => {
                    self.status.failed(FailureReason::Setup, &m);
                    tokio::select! {
                        () = tokio::time::sleep(self.cfg.backoff.1) => {}
                        () = self.cx.shutdown.cancelled() => { self.status.stopped(); return; }
                    }
                }
            }
        };
        let token = match self.cfg.token.as_ref().map(|t| t.read()).transpose() {
            Ok(t) => t,
            Err(m) => {
                self.status.failed(FailureReason::Setup, &m);
                None
            }
        };
        let bg = super::Background::start(
            &self.cx,
            &self.cfg.name,
            &self.filter,
            self.status.clone(),
            &feed,
            Duration::from_secs(5),
        );
        let mut committed = self.cx.journal.committed_seq();
        let mut attempt = 0u32;
        self.status.connected();
        loop {
            let batch = match take_batch(&mut feed, *committed.borrow_and_update(), self.cfg.batch)
            {
                Ok(b) => b,
                Err(m) => {
                    self.status.failed(FailureReason::Setup, &m);
                    Vec::new()
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    r = committed.changed() => if r.is_err() { break },
                    () = self.cx.shutdown.cancelled() => break,
                }
                continue;
            }
            self.status.published(batch.len() as u64);
            let outcome = tokio::select! {
                o = self.post(&client, token.as_deref(), &batch) => o,
                () = self.cx.shutdown.cancelled() => break,
            };
            match outcome {
                Outcome::Delivered => {
                    attempt = 0;
                    self.link_up();
                    self.status.confirmed(batch.len() as u64);
                    confirm_all(&mut feed, &batch, &bg.cursors);
                }
                Outcome::Rejected(code, body) => {
                    attempt = 0;
                    self.link_up();
                    self.status.rejected(batch.len() as u64);
                    self.raise_rejected(code, &body, &batch);
                    confirm_all(&mut feed, &batch, &bg.cursors);
                }
                Outcome::Retry(reason, message, after) => {
                    feed.release_all();
                    tracing::warn!(uplink = %self.cfg.name, reason = reason.as_str(), error = %message, "webhook delivery failed; retrying");
                    if self.status.failed(reason, &message) {
                        let payload = json!({"uplink": self.cfg.name, "reason": reason.as_str(), "detail": message});
                        journal_event(
                            &self.cx,
                            NewEvent::new(Kind::from_static("uplink.down"), Class::Operations)
                                .payload(payload),
                        );
                    }
                    let delay = after.unwrap_or_else(|| backoff(self.cfg.backoff, attempt));
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.cx.shutdown.cancelled() => break,
                    }
                }
            }
        }
        bg.stop().await;
        self.status.stopped();
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        batch: &[Outgoing],
    ) -> Outcome {
        let events: Vec<&campusgw_sdk::Event> = batch.iter().map(|o| &*o.event).collect();
        let mut req = client.post(&self.cfg.url).json(&events);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let (reason, msg) = classify(&e).unwrap_or_else(|| {
                    let r = if e.is_timeout() { "timeout" } else { "network" };
                    (FailureReason::Network, format!("{r}: {e}"))
                });
                return Outcome::Retry(reason, msg, None);
            }
        };
        let code = resp.status();
        if code.is_success() {
            return Outcome::Delivered;
        }
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
        let body: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(512)
            .collect();
        if code == StatusCode::REQUEST_TIMEOUT
            || code == StatusCode::TOO_MANY_REQUESTS
            || code.is_server_error()
        {
            Outcome::Retry(
                FailureReason::Refused,
                format!("http {code}: {body}"),
                retry_after,
            )
        } else {
            Outcome::Rejected(code.as_u16(), body)
        }
    }

    /// The destination answered: ends an outage (journaling `uplink.up`) if one was open.
    fn link_up(&self) {
        if self.status.connected() {
            let payload = json!({"uplink": self.cfg.name, "detail": "delivering again"});
            journal_event(
                &self.cx,
                NewEvent::new(Kind::from_static("uplink.up"), Class::Operations).payload(payload),
            );
        }
    }

    fn raise_rejected(&self, code: u16, body: &str, batch: &[Outgoing]) {
        tracing::error!(uplink = %self.cfg.name, status = code, events = batch.len(), "webhook rejected events");
        // A destination refusing our own rejection alarms must not feed a loop of them.
        if batch
            .iter()
            .all(|o| o.event.kind.as_str() == "uplink.rejected")
        {
            return;
        }
        let ids: Vec<String> = batch.iter().map(|o| o.event.id.to_string()).collect();
        let payload =
            json!({"uplink": self.cfg.name, "http_status": code, "detail": body, "event_ids": ids});
        journal_event(
            &self.cx,
            NewEvent::new(Kind::from_static("uplink.rejected"), Class::Security).payload(payload),
        );
    }
}

fn take_batch(feed: &mut Feed, committed: u64, max: usize) -> Result<Vec<Outgoing>, String> {
    let mut batch = Vec::new();
    while batch.len() < max {
        match feed.next(committed).map_err(|e| e.to_string())? {
            Some(o) => batch.push(o),
            None => break,
        }
    }
    Ok(batch)
}

fn confirm_all(
    feed: &mut Feed,
    batch: &[Outgoing],
    cursors: &tokio::sync::watch::Sender<[u64; 5]>,
) {
    let mut moved = false;
    for o in batch {
        moved |= feed.confirm(o.class, o.seq);
    }
    if moved {
        cursors.send_replace(feed.cursors());
    }
}
