//! `GET /api/v1/stream`: Server-Sent Events of committed events, alarm changes included
//! (`alarm.*` kinds are sent as SSE event `alarm`, everything else as `event`). Each SSE
//! `id` is the event's seq, so a reconnecting browser resumes with `Last-Event-ID` and
//! misses nothing still in the journal.
//!
//! The stream never skips (DESIGN §4 "Consumers never skip"): each client reads through
//! its own [`journal::Tail`](crate::journal::Tail), which takes the in-memory commit
//! broadcast while it keeps up and reads the journal when the client lagged (a slow
//! browser on a busy gateway), so a lagging client gets every event late rather than
//! losing some.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use campusgw_sdk::{Class, Event};
use futures_util::Stream;
use serde::Deserialize;

use super::ConsoleState;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::journal::Tail;

/// Events read from the tail at once (one journal page when catching up).
const BATCH: usize = 256;

/// Query of the stream.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct StreamQuery {
    /// Resume after this seq (`Last-Event-ID` wins); default: only what comes next.
    pub after: Option<u64>,
    /// Comma-separated classes to send (default: all).
    pub classes: Option<String>,
}

/// One client's position in the journal and what it wants.
struct ClientFeed {
    tail: Tail,
    classes: Option<Vec<Class>>,
    buffer: VecDeque<Arc<Event>>,
}

impl ClientFeed {
    fn wanted(&self, e: &Event) -> bool {
        self.classes.as_ref().is_none_or(|c| c.contains(&e.class))
    }

    /// The next wanted event; `None` once the journal closed (the stream ends).
    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            match self.tail.next_batch(BATCH).await {
                Ok(batch) => {
                    let wanted: Vec<_> = batch
                        .into_iter()
                        .map(|(_, e)| e)
                        .filter(|e| self.wanted(e))
                        .collect();
                    self.buffer.extend(wanted);
                }
                Err(e) => {
                    tracing::debug!(error = %e, at = self.tail.position(), "live stream ends");
                    return None;
                }
            }
        }
    }
}

fn to_sse(e: &Event) -> SseEvent {
    let name = if e.kind.as_str().starts_with("alarm.") {
        "alarm"
    } else {
        "event"
    };
    let data = serde_json::to_string(e).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .id(e.seq.to_string())
        .event(name)
        .data(data)
}

fn parse_classes(s: &str) -> Result<Vec<Class>, ApiError> {
    s.split(',')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            serde_json::from_value(serde_json::Value::String(c.to_owned()))
                .map_err(|_| ApiError::bad_request(format!("unknown class {c:?}")))
        })
        .collect()
}

/// Live events and alarm changes (SSE; resume with `Last-Event-ID`).
#[utoipa::path(get, path = "/api/v1/stream", tag = "events", params(StreamQuery),
    responses((status = 200, description = "text/event-stream of events", content_type = "text/event-stream"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn sse(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<StreamQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let resume = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Last-Event-ID must be a seq"))?,
        ),
        None => q.after,
    };
    let classes = q.classes.as_deref().map(parse_classes).transpose()?;
    let after = resume.unwrap_or_else(|| *s.journal.committed_seq().borrow());
    let tail = Tail::new(&s.journal, after).map_err(|e| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "journal_unavailable",
            format!("cannot read the journal: {e}"),
        )
    })?;
    let feed = ClientFeed {
        tail,
        classes,
        buffer: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        let e = f.next().await?;
        Some((Ok(to_sse(&e)), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
