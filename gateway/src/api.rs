//! HTTP: `GET /healthz` and `GET /metrics`, the only routes without login (DESIGN §4
//! "Security"). Neither exposes event content: states, counters and sequence numbers only.
//! The console and authenticated API arrive with the console issue.
//!
//! `/healthz` answers 200 while the gateway works (the body's `status` is `ok`, `degraded`
//! or `critical`, with the reason in its fields, e.g. `journal.storage_damaged`) and 503
//! with `status: "failing"` and a `reason` once the journal writer has died: nothing can be
//! journaled, and the process is about to exit (see `app.rs`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::health::HealthBoard;
use crate::journal::Journal;
use crate::supervisor::DriverStates;

/// What the routes read.
#[derive(Clone)]
pub struct ApiState {
    /// Process start.
    pub started: Instant,
    /// The journal.
    pub journal: Journal,
    /// Driver states.
    pub drivers: DriverStates,
    /// Device states.
    pub health: Arc<HealthBoard>,
    /// The gateway id.
    pub gateway_id: String,
    /// Uplink states.
    pub uplinks: crate::uplink::UplinkBoard,
}

/// The process-wide Prometheus recorder (installed once, shared by every gateway in the
/// process, e.g. in tests).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (a test harness); then ours only
            // renders what is recorded through it, which is nothing: say so in the log.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
            }
            handle
        })
        .clone()
}

/// The routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
///
/// # Errors
/// The bind error, naming the address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(async move {
        let r = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = r {
            tracing::error!(error = %e, "http server stopped");
        }
    });
    Ok((bound, task))
}

async fn healthz(State(s): State<ApiState>) -> impl IntoResponse {
    let st = s.journal.status();
    if let Some(reason) = st.writer_failure() {
        // Nothing can be journaled or acknowledged: failing, and the process is exiting.
        let body = serde_json::json!({
            "status": "failing",
            "reason": reason,
            "gateway": s.gateway_id,
            "version": env!("CARGO_PKG_VERSION"),
            "journal": { "last_seq": st.last_seq.load(Ordering::SeqCst), "writer_alive": false },
        });
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body));
    }
    let damaged = st.damaged();
    let critical = st.critical.load(Ordering::SeqCst);
    let drivers = s.drivers.lock().map(|m| m.clone()).unwrap_or_default();
    let devices = s.health.snapshot();
    let degraded = drivers.values().any(|d| d.state == "restarting")
        || devices.values().any(|d| d.state == "offline")
        || s.uplinks.degraded()
        || damaged.is_some();
    let status = if critical {
        "critical"
    } else if degraded {
        "degraded"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
        "gateway": s.gateway_id,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": s.started.elapsed().as_secs(),
        "journal": {
            "last_seq": st.last_seq.load(Ordering::SeqCst),
            "storage_critical": critical,
            "storage_damaged": damaged,
            "writer_alive": true,
        },
        "drivers": drivers,
        "devices": devices,
        "uplinks": s.uplinks.snapshot(),
    });
    // 200 even when degraded: the process is alive and serving; the body says what is wrong.
    // Only a dead journal writer (above) makes it 503.
    (StatusCode::OK, axum::Json(body))
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}
