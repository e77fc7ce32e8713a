//! The effects of a delivery outcome, shared by every uplink's retry loop: the outage
//! events (`uplink.down` once per outage, class `security`; `uplink.up` when delivering
//! again) and the settlement of rejected events (recorded durably before the cursor may
//! move, raised, listed; see [`super::delivery`] for the rules that decide the outcome).

use std::time::Duration;

use campusgw_sdk::{Class, Kind, NewEvent};
use serde_json::json;

use super::contract::UplinkError;
use super::delivery::{self, RetryReason};
use super::status::UplinkStatus;
use super::{UplinkContext, feed, journal_event};

/// A failed attempt: counts it, shows it in the status and, when it starts an outage,
/// journals one `uplink.down` (class `security`: an alarm naming the reason).
pub(crate) fn report_down(
    cx: &UplinkContext,
    name: &str,
    status: &UplinkStatus,
    reason: RetryReason,
    detail: &str,
) {
    // The one path by which a failure reaches the log, `/healthz` and the journal: a URL
    // in an error (a token in a webhook query) is masked here.
    let detail = &crate::secrets::redact_urls_in(detail);
    tracing::warn!(uplink = %name, reason = reason.as_str(), error = %detail, "uplink delivery failed; keeping the events and retrying");
    if status.failed(reason, detail) {
        let payload = json!({"uplink": name, "reason": reason.as_str(), "detail": detail});
        journal_event(
            cx,
            NewEvent::new(Kind::from_static("uplink.down"), Class::Security).payload(payload),
        );
    }
}

/// The destination answered (delivered or judged): ends an outage with one `uplink.up`.
pub(crate) fn report_up(cx: &UplinkContext, name: &str, status: &UplinkStatus) {
    if status.connected() {
        tracing::info!(uplink = %name, "uplink delivering again");
        let payload = json!({"uplink": name, "detail": "delivering again"});
        journal_event(
            cx,
            NewEvent::new(Kind::from_static("uplink.up"), Class::Operations).payload(payload),
        );
    }
}

/// An event the destination rejected (its own verdict on this one event).
pub(crate) struct Refused {
    /// Its class.
    pub class: Class,
    /// Its seq.
    pub seq: u64,
    /// Its id.
    pub id: campusgw_sdk::EventId,
    /// An `uplink.rejected` alarm itself (never alarmed about again).
    pub alarm: bool,
    /// The destination's words.
    pub reason: String,
}

/// Settles rejected events: each `life_safety` or `security` one is recorded durably in
/// the journal's `rejected` list *before* its cursor may move, and one `uplink.rejected`
/// alarm (class `security`) names them; lower classes are counted and logged. Returns
/// whether a cursor moved.
///
/// # Errors
/// [`UplinkError::RecordRejected`]: the journal could not record one; that event and the
/// rest stay unsettled (in flight until the caller releases them for a resend).
pub(crate) async fn settle_rejected(
    cx: &UplinkContext,
    name: &str,
    status: &UplinkStatus,
    feed: &mut feed::Feed,
    refused: Vec<Refused>,
) -> Result<bool, UplinkError> {
    let mut moved = false;
    let mut ids = Vec::new();
    let mut detail: Option<String> = None;
    for r in refused {
        status.rejected(1);
        if delivery::kept_when_rejected(r.class) {
            cx.journal
                .record_rejected(name, r.seq, r.class, &r.reason)
                .await
                .map_err(|source| UplinkError::RecordRejected { seq: r.seq, source })?;
            tracing::error!(uplink = %name, seq = r.seq, id = %r.id, class = r.class.as_str(), reason = %r.reason, "destination rejected an event; kept and listed (campusgw uplink rejected)");
            // A destination refusing our own rejection alarms must not feed a loop of them.
            if !r.alarm {
                ids.push(r.id.to_string());
                detail.get_or_insert_with(|| r.reason.clone());
            }
        } else {
            tracing::warn!(uplink = %name, seq = r.seq, id = %r.id, class = r.class.as_str(), reason = %r.reason, "destination rejected an event");
        }
        moved |= feed.reject(r.class, r.seq);
    }
    if let Some(detail) = detail {
        let payload = json!({"uplink": name, "detail": detail, "event_ids": ids});
        journal_event(
            cx,
            NewEvent::new(Kind::from_static("uplink.rejected"), Class::Security).payload(payload),
        );
    }
    Ok(moved)
}

/// Removes resent-and-delivered events from the rejected list (a failure only means they
/// are sent once more later).
pub(crate) async fn clear_resent(cx: &UplinkContext, name: &str, feed: &mut feed::Feed) {
    settle_forwards(cx, name, feed).await;
    let done = feed.take_resent();
    if done.is_empty() {
        return;
    }
    tracing::info!(uplink = %name, seqs = ?done, "rejected events delivered on resend");
    if let Err(e) = cx.journal.clear_rejected(name, done).await {
        tracing::warn!(uplink = %name, error = %e, "delivered resends not cleared from the rejected list");
    }
}

/// Writes settled forwards back to their `rule_actions` rows (feed module doc,
/// "Forwards"); a failure leaves them `queued`, so they are sent once more later.
async fn settle_forwards(cx: &UplinkContext, name: &str, feed: &mut feed::Feed) {
    let settled = feed.take_forward_outcomes();
    if settled.is_empty() {
        return;
    }
    let updates = settled
        .into_iter()
        .map(|(id, status)| crate::journal::rules::ActionUpdate {
            id,
            status: status.into(),
            attempts: 1,
            result: Some(json!({ "uplink": name }).to_string()),
        })
        .collect();
    let step = crate::journal::rules::RulesStep {
        consumer: "rules".into(),
        updates,
        ..Default::default()
    };
    if let Err(e) = cx.journal.rules_step(step).await {
        tracing::warn!(uplink = %name, error = %e, "forward outcomes not recorded; they are sent again");
    }
}

/// How often an uplink looks for operator resend requests.
pub(crate) const RESEND_POLL: Duration = Duration::from_secs(1);
