//! A simulated card platform (the school's 一卡通 back office), the other end of the
//! `card_platform` uplink: it hands out card-list changes (`GET /v1/changes?since=N`) and
//! takes the gateway's transactions (`POST /v1/transactions`, a JSON array of journal
//! events, de-duplicated by event id). It can go down (503 or connections closed), answer
//! slowly, and change cards mid-service.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};

use crate::ledger::Change;
use crate::sync::ChangeSet;

/// How the platform behaves now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mood {
    /// Answers normally.
    #[default]
    Up,
    /// Answers 503 to everything.
    Down,
    /// Answers after this delay.
    Slow(Duration),
}

#[derive(Default)]
struct State0 {
    mood: Mood,
    token: String,
    changes: Vec<Change>,
    /// event id → the event, as received (a resend overwrites with the same).
    received: BTreeMap<String, serde_json::Value>,
    posts: u64,
    duplicates: u64,
}

/// A running platform.
#[derive(Clone)]
pub struct PlatformSim {
    state: Arc<Mutex<State0>>,
    /// Its address.
    pub addr: SocketAddr,
    task: Arc<tokio::task::JoinHandle<()>>,
}

impl PlatformSim {
    /// Starts on `127.0.0.1:0`, accepting `token`, with `changes` to hand out.
    ///
    /// # Panics
    /// When the loopback listener cannot be bound (tests only).
    pub async fn start(token: &str, changes: Vec<Change>) -> PlatformSim {
        let state = Arc::new(Mutex::new(State0 {
            token: token.into(),
            changes,
            ..State0::default()
        }));
        let app = Router::new()
            .route("/v1/changes", axum::routing::get(changes_h))
            .route("/v1/transactions", axum::routing::post(transactions_h))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("loopback listener");
        let addr = listener.local_addr().expect("bound");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        PlatformSim {
            state,
            addr,
            task: Arc::new(task),
        }
    }

    /// Sets how it behaves.
    pub fn set(&self, mood: Mood) {
        self.lock().mood = mood;
    }

    /// Adds changes mid-service (a card reported lost, a top-up).
    pub fn push_changes(&self, more: Vec<Change>) {
        self.lock().changes.extend(more);
    }

    /// The transactions received, by event id (each once, however often it was sent).
    pub fn received(&self) -> BTreeMap<String, serde_json::Value> {
        self.lock().received.clone()
    }

    /// (POSTs answered 200, events received again).
    pub fn counts(&self) -> (u64, u64) {
        let s = self.lock();
        (s.posts, s.duplicates)
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.task.abort();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State0> {
        self.state.lock().expect("platform lock")
    }
}

type Shared = Arc<Mutex<State0>>;

/// Waits out the mood; `Err` when down or the token is wrong.
async fn gate(s: &Shared, headers: &HeaderMap) -> Result<(), Response> {
    let (mood, token) = {
        let g = s.lock().expect("platform lock");
        (g.mood, g.token.clone())
    };
    match mood {
        Mood::Down => return Err(StatusCode::SERVICE_UNAVAILABLE.into_response()),
        Mood::Slow(d) => tokio::time::sleep(d).await,
        Mood::Up => {}
    }
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if given != Some(token.as_str()) {
        return Err(StatusCode::UNAUTHORIZED.into_response());
    }
    Ok(())
}

async fn changes_h(State(s): State<Shared>, headers: HeaderMap, uri: Uri) -> Response {
    if let Err(r) = gate(&s, &headers).await {
        return r;
    }
    let since: usize = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("since="))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let g = s.lock().expect("platform lock");
    let upto = g.changes.len().min(since.saturating_add(500));
    let set = ChangeSet {
        cursor: Some(upto.to_string()),
        changes: g.changes.get(since..upto).unwrap_or_default().to_vec(),
    };
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(&set).unwrap_or_default(),
    )
        .into_response()
}

async fn transactions_h(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = gate(&s, &headers).await {
        return r;
    }
    let Ok(events) = serde_json::from_slice::<Vec<serde_json::Value>>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let mut g = s.lock().expect("platform lock");
    for e in events {
        let Some(id) = e["id"].as_str().map(str::to_owned) else {
            return StatusCode::UNPROCESSABLE_ENTITY.into_response();
        };
        if g.received.insert(id, e).is_some() {
            g.duplicates += 1;
        }
    }
    g.posts += 1;
    StatusCode::OK.into_response()
}
