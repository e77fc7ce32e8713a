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

use super::UplinkContext;
use super::config::WebhookConfig;
use super::contract::{Answer, Link, Round, Sent, Transport, UplinkError};
use super::delivery::{Bisect, Delivery, HttpAnswer, RetryReason, Settle, http_answer};
use super::feed::{Feed, Outgoing};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::tls::{classify, client_config};

/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// The webhook uplink.
pub struct WebhookUplink {
    cfg: Arc<WebhookConfig>,
    filter: Filter,
    cx: UplinkContext,
    status: Arc<UplinkStatus>,
}

/// What one POST got back.
enum Posted {
    Answer {
        code: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    Failed(UplinkError),
}

/// The webhook's [`Transport`]: a fresh client and token per link.
struct Poster {
    cfg: Arc<WebhookConfig>,
    status: Arc<UplinkStatus>,
}

/// One HTTP client with the token read at connect, and the batch being posted.
struct Session {
    cfg: Arc<WebhookConfig>,
    status: Arc<UplinkStatus>,
    client: reqwest::Client,
    token: Option<String>,
    pending: Option<Vec<Outgoing>>,
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

    /// Runs until shutdown (`uplink/retry.rs`).
    pub async fn run(self) {
        let setup = super::retry::Setup {
            name: self.cfg.name.clone(),
            filter: self.filter,
            cx: self.cx,
            status: self.status.clone(),
            backoff: self.cfg.backoff,
            stats_every: Duration::from_secs(5),
        };
        let poster = Poster {
            cfg: self.cfg,
            status: self.status,
        };
        super::retry::run(poster, setup).await;
    }
}

impl Poster {
    fn client(&self) -> Result<reqwest::Client, UplinkError> {
        let tls = client_config(&self.cfg.tls)
            .map_err(|e| UplinkError::retry(RetryReason::Config, e.to_string()))?;
        reqwest::Client::builder()
            .use_preconfigured_tls((*tls).clone())
            .timeout(self.cfg.timeout)
            .build()
            .map_err(|e| UplinkError::retry(RetryReason::Config, format!("http client: {e}")))
    }

    /// The bearer token, read now (the file may have been fixed or rotated).
    fn token(&self) -> Result<Option<String>, UplinkError> {
        match &self.cfg.token {
            None => Ok(None),
            Some(t) => t.read().map(Some).map_err(|m| {
                UplinkError::retry(
                    RetryReason::Config,
                    format!("token_file: {m}; nothing is posted without the token"),
                )
            }),
        }
    }
}

impl Transport for Poster {
    type Link = Session;

    async fn connect(&mut self) -> Result<Session, UplinkError> {
        let client = self.client()?;
        // Read again at every retry: it may have been rotated.
        let token = self.token()?;
        Ok(Session {
            cfg: self.cfg.clone(),
            status: self.status.clone(),
            client,
            token,
            pending: None,
        })
    }
}

impl Link for Session {
    fn room(&mut self, _feed: &mut Feed) -> usize {
        if self.pending.is_some() {
            0
        } else {
            self.cfg.batch
        }
    }

    fn busy(&self) -> bool {
        self.pending.is_some()
    }

    fn send(&mut self, events: Vec<Outgoing>) -> Result<(), UplinkError> {
        self.pending = Some(events);
        Ok(())
    }

    async fn next(&mut self, _feed: &mut Feed) -> Round {
        match self.pending.take() {
            Some(batch) => self.deliver(&batch).await,
            // Nothing to post: the loop wakes on new events or resend requests.
            None => std::future::pending().await,
        }
    }

    async fn close(self) {}
}

impl Session {
    /// Posts `batch`, bisecting it on 400/413/422, and answers per event. Events still
    /// unanswered when it fails stay in flight; the loop releases them for a resend.
    async fn deliver(&self, batch: &[Outgoing]) -> Round {
        let mut plan = Bisect::new(batch.len());
        let mut round = Round::default();
        while let Some(part) = plan.next() {
            let events = &batch[part];
            self.status.published(events.len() as u64);
            let (answer, detail, after) = match self.post(events).await {
                Posted::Answer {
                    code,
                    body,
                    retry_after,
                } => (
                    http_answer(code),
                    format!("http {code}: {body}"),
                    retry_after,
                ),
                Posted::Failed(UplinkError::Retry { reason, detail, .. }) => {
                    (HttpAnswer::Retry(reason), detail, None)
                }
                Posted::Failed(e) => (HttpAnswer::Retry(e.reason()), e.to_string(), None),
            };
            match plan.answer(answer) {
                Settle::Delivered(r) => {
                    round.answers.extend(batch[r].iter().map(|o| Answer {
                        sent: Sent::of(o),
                        delivery: Delivery::Delivered,
                    }));
                }
                Settle::Rejected(i) => round.answers.push(Answer {
                    sent: Sent::of(&batch[i]),
                    delivery: Delivery::Rejected { reason: detail },
                }),
                Settle::Split => {
                    tracing::info!(uplink = %self.cfg.name, events = events.len(), %detail, "destination refused a batch; splitting it to find the event it refuses");
                }
                Settle::Retry(reason) => {
                    round.failure = Some(UplinkError::Retry {
                        reason,
                        detail,
                        after,
                    });
                    break;
                }
            }
        }
        round
    }

    async fn post(&self, batch: &[Outgoing]) -> Posted {
        let mut req = self
            .client
            .post(&self.cfg.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(json_array(batch, &self.cfg.snapshots));
        if let Some(t) = &self.token {
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
                return Posted::Failed(UplinkError::retry(reason, msg));
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
fn json_array(batch: &[Outgoing], snapshots: &super::snapshots::SnapshotOptions) -> Vec<u8> {
    let len = batch.iter().map(|o| o.event.json.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    for (i, o) in batch.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // As journaled; only a `video.snapshot` may be rewritten (uplink/snapshots.rs).
        body.extend_from_slice(&snapshots.wire_json(&o.event));
    }
    body.push(b']');
    body
}

impl super::contract::UplinkFactory for WebhookConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.backoff
    }
    fn plaintext(&self) -> bool {
        self.url.starts_with("http://")
    }
    fn shown_url(&self) -> String {
        crate::secrets::redact_url(&self.url)
    }
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> campusgw_sdk::driver::BoxFuture<'static, ()> {
        Box::pin(WebhookUplink::new(self, filter, cx, status).run())
    }
}
