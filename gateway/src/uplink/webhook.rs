//! `kind = "webhook"`: HTTPS POST of event batches (a JSON array of events, the documented
//! event JSON form) with a bearer token or mutual TLS.
//!
//! Outcomes ([`super::delivery`], the same rules for every uplink):
//! - 2xx: the batch is delivered; the cursor moves.
//! - 401, 403, 407 (credentials), 404 and other unexpected statuses (endpoint or
//!   configuration), 408, 429, 5xx, timeouts and network errors: *retry*. Nothing is
//!   confirmed, the cursor stays, the same events are posted again after back-off (honouring
//!   `Retry-After` in seconds, at most 10 minutes); the first failure of an outage journals
//!   `uplink.down` (class `security`, with the reason) and the first success after it
//!   `uplink.up`. The token file is read again before every retry, so a rotated token is
//!   picked up without a restart.
//! - 400, 422 (malformed) and 413 (too large) on a batch of several events: the batch is
//!   bisected ([`super::delivery::Bisect`]) until each refused part is one event, so the
//!   good events of the batch are delivered. A single event still refused is *rejected*:
//!   a `life_safety` or `security` one is recorded in the journal's `rejected` list (kept
//!   from retention, listed by `campusgw uplink rejected`) and raised as an
//!   `uplink.rejected` alarm before the cursor moves past it; lower classes are counted and
//!   logged.
//! - A `token_file` that is missing or unreadable stops the uplink before anything is
//!   posted (reason `config`, `uplink.down`, `/healthz`), retried with back-off until the
//!   file is readable: nothing is ever posted without the configured token.
//! - Events marked with `campusgw uplink retry-rejected` are posted again before anything
//!   else of their class and leave the list once delivered.

use std::sync::Arc;
use std::time::Duration;

use campusgw_sdk::driver::Backoff;

use super::config::WebhookConfig;
use super::delivery::{Bisect, HttpAnswer, RetryReason, Settle, http_answer};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::tls::{classify, client_config};
use super::{Refused, UplinkContext, report_down, report_up};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The webhook uplink.
pub struct WebhookUplink {
    cfg: Arc<WebhookConfig>,
    filter: Filter,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
}

/// A failed attempt: why, the detail, and how long the destination asked us to wait.
struct Failed {
    reason: RetryReason,
    detail: String,
    after: Option<Duration>,
}

impl Failed {
    fn new(reason: RetryReason, detail: impl Into<String>) -> Failed {
        Failed {
            reason,
            detail: detail.into(),
            after: None,
        }
    }
}

/// What one POST got back.
enum Posted {
    Answer {
        code: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    Failed(Failed),
}

/// What the uplink holds once set up.
struct Ready {
    client: reqwest::Client,
    feed: Feed,
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

    fn client(&self) -> Result<reqwest::Client, Failed> {
        let tls = client_config(&self.cfg.tls)
            .map_err(|e| Failed::new(RetryReason::Config, e.to_string()))?;
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(self.cfg.timeout)
            .build()
            .map_err(|e| Failed::new(RetryReason::Config, format!("http client: {e}")))
    }

    fn setup(&self) -> Result<Ready, Failed> {
        let client = self.client()?;
        let journal =
            |e: crate::journal::JournalError| Failed::new(RetryReason::Journal, e.to_string());
        let feed =
            Feed::open(&self.cfg.name, &self.cx.journal, self.filter.clone()).map_err(journal)?;
        Ok(Ready { client, feed })
    }

    /// The bearer token, read now (the file may have been fixed or rotated).
    fn token(&self) -> Result<Option<String>, Failed> {
        match &self.cfg.token {
            None => Ok(None),
            Some(t) => t.read().map(Some).map_err(|m| {
                Failed::new(
                    RetryReason::Config,
                    format!("token_file: {m}; nothing is posted without the token"),
                )
            }),
        }
    }

    /// Reports a failure and waits the back-off (or `Retry-After`); false on shutdown.
    async fn pause(&self, f: &Failed, backoff: &mut Backoff) -> bool {
        report_down(&self.cx, &self.cfg.name, &self.status, f.reason, &f.detail);
        let delay = f.after.unwrap_or_else(|| backoff.next_delay());
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.cx.shutdown.cancelled() => false,
        }
    }

    /// Runs until shutdown.
    pub async fn run(self) {
        let (base, max) = self.cfg.backoff;
        let mut backoff = Backoff::new(base, max);
        let mut ready = loop {
            match self.setup() {
                Ok(r) => break r,
                Err(f) => {
                    if !self.pause(&f, &mut backoff).await {
                        self.status.stopped();
                        return;
                    }
                }
            }
        };
        let bg = super::Background::start(
            &self.cx,
            &self.cfg.name,
            &self.filter,
            self.status.clone(),
            &ready.feed,
            Duration::from_secs(5),
        );
        self.deliver_until_shutdown(&mut ready, &bg.cursors, &mut backoff)
            .await;
        bg.stop().await;
        self.status.stopped();
    }

    async fn deliver_until_shutdown(
        &self,
        ready: &mut Ready,
        cursors: &tokio::sync::watch::Sender<[u64; 5]>,
        backoff: &mut Backoff,
    ) {
        let mut committed = self.cx.journal.committed_seq();
        let mut token = None;
        let mut token_read = false;
        let mut next_poll = tokio::time::Instant::now();
        loop {
            self.status.injected_fault();
            if tokio::time::Instant::now() >= next_poll {
                next_poll = tokio::time::Instant::now() + super::RESEND_POLL;
                if let Err(e) = ready.feed.poll_resends() {
                    tracing::warn!(uplink = %self.cfg.name, error = %e, "cannot read resend requests");
                }
            }
            if !token_read {
                match self.token() {
                    Ok(t) => (token, token_read) = (t, true),
                    Err(f) => {
                        if !self.pause(&f, backoff).await {
                            return;
                        }
                        continue;
                    }
                }
            }
            let upto = *committed.borrow_and_update();
            let batch = match take_batch(&mut ready.feed, upto, self.cfg.batch) {
                Ok(b) => b,
                Err(m) => {
                    ready.feed.release_all();
                    if !self
                        .pause(&Failed::new(RetryReason::Journal, m), backoff)
                        .await
                    {
                        return;
                    }
                    continue;
                }
            };
            if batch.is_empty() {
                tokio::select! {
                    r = committed.changed() => if r.is_err() { return },
                    () = tokio::time::sleep_until(next_poll) => {}
                    () = self.cx.shutdown.cancelled() => return,
                }
                continue;
            }
            let done = tokio::select! {
                r = self.deliver(&ready.client, token.as_deref(), &batch, &mut ready.feed, cursors) => r,
                () = self.cx.shutdown.cancelled() => return,
            };
            super::clear_resent(&self.cx, &self.cfg.name, &mut ready.feed).await;
            match done {
                Ok(()) => backoff.reset(),
                Err(f) => {
                    ready.feed.release_all();
                    // Read the token again before the retry: it may have been rotated.
                    token_read = false;
                    if !self.pause(&f, backoff).await {
                        return;
                    }
                }
            }
        }
    }

    /// Posts `batch`, bisecting it on 400/413/422, and settles what the destination
    /// answered. Events still unsettled when it fails stay in flight; the caller releases
    /// them for a resend.
    async fn deliver(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        batch: &[Outgoing],
        feed: &mut Feed,
        cursors: &tokio::sync::watch::Sender<[u64; 5]>,
    ) -> Result<(), Failed> {
        let mut plan = Bisect::new(batch.len());
        let mut refused = Vec::new();
        let mut result = Ok(());
        while let Some(part) = plan.next() {
            let events = &batch[part];
            self.status.published(events.len() as u64);
            let (answer, detail, after) = match self.post(client, token, events).await {
                Posted::Answer {
                    code,
                    body,
                    retry_after,
                } => (
                    http_answer(code),
                    format!("http {code}: {body}"),
                    retry_after,
                ),
                Posted::Failed(f) => (HttpAnswer::Retry(f.reason), f.detail, None),
            };
            match plan.answer(answer) {
                Settle::Delivered(r) => {
                    report_up(&self.cx, &self.cfg.name, &self.status);
                    self.status.confirmed(r.len() as u64);
                    confirm_all(feed, &batch[r], cursors);
                }
                Settle::Rejected(i) => {
                    report_up(&self.cx, &self.cfg.name, &self.status);
                    let o = &batch[i];
                    refused.push(Refused {
                        class: o.class,
                        seq: o.seq,
                        id: o.event.id,
                        alarm: o.event.kind.as_str() == "uplink.rejected",
                        reason: detail,
                    });
                }
                Settle::Split => {
                    tracing::info!(uplink = %self.cfg.name, events = events.len(), %detail, "destination refused a batch; splitting it to find the event it refuses");
                }
                Settle::Retry(reason) => {
                    result = Err(Failed {
                        reason,
                        detail,
                        after,
                    });
                    break;
                }
            }
        }
        match super::settle_rejected(&self.cx, &self.cfg.name, &self.status, feed, refused).await {
            Ok(true) => {
                cursors.send_replace(feed.cursors());
            }
            Ok(false) => {}
            Err(m) => return Err(Failed::new(RetryReason::Journal, m)),
        }
        result
    }

    async fn post(
        &self,
        client: &reqwest::Client,
        token: Option<&str>,
        batch: &[Outgoing],
    ) -> Posted {
        let mut req = client
            .post(&self.cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json_array(batch));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                // reqwest names the full URL (query included); show the redacted one.
                let e = e.without_url();
                let (reason, msg) = classify(&e).unwrap_or_else(|| {
                    if e.is_timeout() {
                        (RetryReason::Timeout, format!("timeout: {e}"))
                    } else {
                        (RetryReason::Network, format!("network: {e}"))
                    }
                });
                let msg = format!("{msg} (url {})", crate::secrets::redact_url(&self.cfg.url));
                return Posted::Failed(Failed::new(reason, msg));
            }
        };
        let code = resp.status().as_u16();
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
        Posted::Answer {
            code,
            body,
            retry_after,
        }
    }
}

/// The batch as one JSON array of the events' JSON forms, copied as journaled.
fn json_array(batch: &[Outgoing]) -> Vec<u8> {
    let len = batch.iter().map(|o| o.event.json.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    for (i, o) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(&o.event.json);
    }
    body.push(b']');
    body
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
