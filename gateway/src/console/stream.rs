//! `GET /api/v1/stream`: Server-Sent Events of committed events, alarm changes included
//! (`alarm.*` kinds are sent as SSE event `alarm`, everything else as `event`). Each SSE
//! `id` is the event's seq, so a reconnecting browser resumes with `Last-Event-ID` and
//! misses nothing still in the journal.
//!
//! The stream never skips (DESIGN §4 "Consumers never skip"): it subscribes to the commit
//! stream first, then reads the journal from the resume point until caught up, and takes
//! the commit stream after that; a gap there (the receiver lagged) sends it back to the
//! journal.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use campusgw_sdk::{Class, Event};
use futures_util::Stream;
use serde::Deserialize;
use tokio::sync::broadcast;

use super::ConsoleState;
use super::error::{ApiError, ApiQuery, ErrorBody};
use crate::journal::Journal;

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

struct Tail {
    journal: Journal,
    rx: broadcast::Receiver<Arc<Event>>,
    after: u64,
    classes: Option<Vec<Class>>,
    catching_up: bool,
    buffer: VecDeque<Arc<Event>>,
}

impl Tail {
    fn wanted(&self, e: &Event) -> bool {
        self.classes.as_ref().is_none_or(|c| c.contains(&e.class))
    }

    async fn next(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.buffer.pop_front() {
                return Some(e);
            }
            if self.catching_up {
                let j = self.journal.clone();
                let after = self.after;
                let page = tokio::task::spawn_blocking(move || {
                    j.reader().and_then(|r| r.after(after, None, 256))
                })
                .await
                .ok()?
                .ok()?;
                if page.is_empty() {
                    self.catching_up = false;
                    continue;
                }
                for e in page {
                    self.after = e.seq;
                    if self.wanted(&e) {
                        self.buffer.push_back(Arc::new(e));
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(e) if e.seq <= self.after => {}
                Ok(e) if e.seq == self.after + 1 => {
                    self.after = e.seq;
                    if self.wanted(&e) {
                        return Some(e);
                    }
                }
                // A gap or a lag: the journal has what the commit stream lost.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.catching_up = true,
                Err(broadcast::error::RecvError::Closed) => return None,
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
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
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
    // Subscribe before reading the journal, so nothing committed in between is missed.
    let rx = s.journal.subscribe();
    let now = *s.journal.committed_seq().borrow();
    let tail = Tail {
        journal: s.journal.clone(),
        rx,
        after: resume.unwrap_or(now),
        classes,
        catching_up: true,
        buffer: VecDeque::new(),
    };
    let stream = futures_util::stream::unfold(tail, |mut t| async move {
        let e = t.next().await?;
        Some((Ok(to_sse(&e)), t))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
