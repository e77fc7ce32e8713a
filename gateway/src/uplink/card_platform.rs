//! `kind = "card_platform"`: the school's campus-card platform (一卡通 back office) for the
//! canteen driver (`drivers/canteen`).
//!
//! Two directions, one uplink:
//! - **push**: the canteen's journal events (`canteen.sale`, `canteen.declined`,
//!   `canteen.conflict` by default) are POSTed to `url` as JSON arrays of events, exactly as
//!   the webhook uplink does ([`super::webhook`]): in journal order, the cursor moved only
//!   on a 2xx, at-least-once with the event `id` (stable across resends) for the platform's
//!   de-duplication, the same outcome rules (retry, bisect, reject) and `uplink.down` /
//!   `uplink.up`.
//! - **pull**: every `poll`, `GET changes_url?since=<cursor>` with the same token returns
//!   `{"cursor": "...", "changes": [...]}` (docs/canteen-protocol.md §7). The changes and
//!   the new cursor are applied to the canteen driver's ledger (`ledger`, the driver's
//!   `canteen-<device>.db`) in one SQLite transaction, each change id once, so a crash or a
//!   repeated answer applies nothing twice. While the platform returns a full batch the next
//!   one is asked at once. Conflicts the changes reveal (a card reported lost before sales
//!   approved offline; a balance below zero) are stored in the ledger, never corrected;
//!   the driver journals each as a `canteen.conflict` event within
//!   `campusgw_canteen::FLUSH_EVERY`, and `campusgw canteen report` lists them.
//!
//! A platform that is down or slow stops neither direction's retries nor the canteen: the
//! terminals are authorised from the ledger whatever the platform does.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use campusgw_canteen::ledger::{Ledger, Rules};
use campusgw_canteen::sync::ChangeSet;
use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{Class, ConfigIssue, FieldPath};

use super::UplinkContext;
use super::config::{UplinkSettings, WebhookConfig};
use super::contract::{UplinkFactory, UplinkKindConfig};
use super::filter::Filter;
use super::status::UplinkStatus;
use super::tls::client_config;

/// Events pushed when neither `classes` nor `kinds` is given.
pub const DEFAULT_KINDS: [&str; 3] = ["canteen.sale", "canteen.declined", "canteen.conflict"];

/// Largest changes answer read.
const MAX_CHANGES_BYTES: usize = 16 << 20;

/// A validated `kind = "card_platform"` uplink.
#[derive(Debug, Clone)]
pub struct CardPlatformConfig {
    /// The push half: a webhook to the platform's transactions endpoint.
    pub push: WebhookConfig,
    /// Where card-list changes are pulled from.
    pub changes_url: String,
    /// How often.
    pub poll: Duration,
    /// The canteen driver's ledger file.
    pub ledger: PathBuf,
    /// The school's UTC offset (dates the conflicts found).
    pub utc_offset: chrono::FixedOffset,
}

impl UplinkKindConfig for CardPlatformConfig {
    const KIND: &'static str = "card_platform";

    fn validate(
        mut t: toml::Table,
        name: &str,
        at: &FieldPath,
        issues: &mut Vec<ConfigIssue>,
    ) -> Option<CardPlatformConfig> {
        let changes_url = t.remove("changes_url");
        let poll = t.remove("poll");
        let ledger = t.remove("ledger");
        let offset = t.remove("utc_offset");
        let push = super::config::webhook(t, name, at, issues);
        let changes_url = match changes_url.as_ref().and_then(toml::Value::as_str) {
            Some(u) => check_changes_url(u, push.as_ref(), at, issues),
            None => {
                issues.push(ConfigIssue::new(
                    at.key("changes_url"),
                    "required: the platform's card-list changes endpoint, e.g. https://card.example/v1/changes",
                ));
                None
            }
        };
        let poll = match poll {
            None => Some(Duration::from_secs(30)),
            Some(v) => v
                .try_into::<campusgw_sdk::HumanDuration>()
                .ok()
                .map(|d| d.0)
                .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3600))
                .or_else(|| {
                    issues.push(ConfigIssue::new(
                        at.key("poll"),
                        "write a duration between \"1s\" and \"1h\"",
                    ));
                    None
                }),
        };
        let ledger = match ledger.as_ref().and_then(toml::Value::as_str) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => {
                issues.push(ConfigIssue::new(
                    at.key("ledger"),
                    "required: the canteen driver's ledger, <data_dir>/canteen-<device id>.db",
                ));
                None
            }
        };
        let utc_offset = match offset.as_ref().map(|v| v.as_str()) {
            None => chrono::FixedOffset::east_opt(8 * 3600),
            Some(Some(s)) => s.parse().ok(),
            Some(None) => None,
        };
        if utc_offset.is_none() {
            issues.push(ConfigIssue::new(
                at.key("utc_offset"),
                "write a UTC offset such as \"+08:00\"",
            ));
        }
        Some(CardPlatformConfig {
            push: push?,
            changes_url: changes_url?,
            poll: poll?,
            ledger: ledger?,
            utc_offset: utc_offset?,
        })
    }

    fn settings(self: Arc<Self>) -> UplinkSettings {
        UplinkSettings::CardPlatform(self)
    }
}

/// The changes URL: http(s), and plain HTTP only where the push URL is (the same opt-in).
fn check_changes_url(
    u: &str,
    push: Option<&WebhookConfig>,
    at: &FieldPath,
    issues: &mut Vec<ConfigIssue>,
) -> Option<String> {
    let parsed = reqwest::Url::parse(u)
        .ok()
        .filter(|p| matches!(p.scheme(), "http" | "https") && p.host_str().is_some());
    let Some(p) = parsed else {
        issues.push(ConfigIssue::new(
            at.key("changes_url"),
            format!(
                "invalid url {:?}: expected https://host[:port]/path",
                crate::secrets::redact_url(u)
            ),
        ));
        return None;
    };
    if p.scheme() == "http" && push.is_some_and(|w| !w.url.starts_with("http://")) {
        issues.push(ConfigIssue::new(
            at.key("changes_url"),
            "plain http here while url is https: use https for both (or http for both with allow_plaintext)",
        ));
        return None;
    }
    Some(u.to_owned())
}

impl UplinkFactory for CardPlatformConfig {
    fn backoff(&self) -> (Duration, Duration) {
        self.push.backoff
    }
    fn plaintext(&self) -> bool {
        self.push.url.starts_with("http://") || self.changes_url.starts_with("http://")
    }
    fn shown_url(&self) -> String {
        crate::secrets::redact_url(&self.push.url)
    }
    fn default_filter(&self) -> Option<(Vec<Class>, Vec<String>)> {
        Some((
            vec![Class::Business],
            DEFAULT_KINDS.iter().map(|k| (*k).to_owned()).collect(),
        ))
    }
    fn start(
        self: Arc<Self>,
        filter: Filter,
        cx: UplinkContext,
        status: Arc<UplinkStatus>,
    ) -> campusgw_sdk::driver::BoxFuture<'static, ()> {
        Box::pin(async move {
            let pull = tokio::spawn(pull_loop(self.clone(), cx.shutdown.clone()));
            let push = Arc::new(self.push.clone());
            super::webhook::WebhookUplink::new(push, filter, cx, status)
                .run()
                .await;
            pull.abort();
        })
    }
}

/// Why one pull failed.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error("{0}")]
    Setup(String),
    #[error("network: {0}")]
    Network(String),
    #[error("http {0}")]
    Status(u16),
    #[error("answer is not a change set: {0}")]
    Body(String),
    #[error("{0}")]
    Ledger(#[from] campusgw_canteen::ledger::LedgerError),
}

/// Pulls until shutdown; failures back off (1 s .. `poll`) and are logged rate-limited.
async fn pull_loop(cfg: Arc<CardPlatformConfig>, shutdown: tokio_util::sync::CancellationToken) {
    let mut backoff =
        campusgw_sdk::Backoff::new(Duration::from_secs(1), cfg.poll.max(Duration::from_secs(1)));
    let mut log = LogLimiter::new(Duration::from_secs(60));
    loop {
        let wait = match pull_once(&cfg).await {
            Ok(true) => {
                backoff.reset();
                Duration::ZERO
            }
            Ok(false) => {
                backoff.reset();
                cfg.poll
            }
            Err(e) => {
                metrics::counter!("campusgw_card_platform_pull_failures_total", "uplink" => cfg.push.name.clone()).increment(1);
                if let Some(held) = log.allow() {
                    tracing::warn!(uplink = %cfg.push.name, error = %e, held_back = held, "card platform: cannot pull card-list changes; the canteen keeps selling from the list it has");
                }
                backoff.next_delay()
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return,
        }
    }
}

/// One pull: `Ok(true)` when more changes may be waiting.
async fn pull_once(cfg: &CardPlatformConfig) -> Result<bool, PullError> {
    let tls = client_config(&cfg.push.tls).map_err(|e| PullError::Setup(e.to_string()))?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls((*tls).clone())
        .timeout(cfg.push.timeout)
        .build()
        .map_err(|e| PullError::Setup(format!("http client: {e}")))?;
    let path = cfg.ledger.clone();
    let cursor = tokio::task::spawn_blocking(move || Ledger::open(&path)?.cursor())
        .await
        .map_err(|e| PullError::Setup(e.to_string()))??;
    let since = cursor.unwrap_or_default();
    let mut req = client.get(&cfg.changes_url).query(&[("since", &since)]);
    if let Some(t) = &cfg.push.token {
        req = req.bearer_auth(t.read().map_err(PullError::Setup)?);
    }
    let resp = req
        .send()
        .await
        .map_err(|e| PullError::Network(e.without_url().to_string()))?;
    if !resp.status().is_success() {
        return Err(PullError::Status(resp.status().as_u16()));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| PullError::Network(e.without_url().to_string()))?;
    if body.len() > MAX_CHANGES_BYTES {
        return Err(PullError::Body(format!("over {MAX_CHANGES_BYTES} bytes")));
    }
    let set: ChangeSet =
        serde_json::from_slice(&body).map_err(|e| PullError::Body(e.to_string()))?;
    // More may wait only when the platform moved its cursor (one that ignores `since`
    // must not make this loop spin).
    let more = set.cursor.as_deref().is_some_and(|c| c != since);
    if set.changes.is_empty() {
        return Ok(false);
    }
    let n = set.changes.len();
    let path = cfg.ledger.clone();
    let rules = Rules {
        offset: cfg.utc_offset,
        meals: Vec::new(),
        daily_limit_cents: None,
    };
    let found = tokio::task::spawn_blocking(move || {
        Ledger::open(&path)?.apply(
            &set.changes,
            set.cursor.as_deref(),
            &rules,
            chrono::Utc::now(),
        )
    })
    .await
    .map_err(|e| PullError::Setup(e.to_string()))??;
    metrics::counter!("campusgw_card_platform_changes_total", "uplink" => cfg.push.name.clone())
        .increment(n as u64);
    if !found.is_empty() {
        tracing::warn!(uplink = %cfg.push.name, conflicts = found.len(), "card platform changes contradict sales approved offline; journaled as canteen.conflict");
    }
    Ok(more)
}
