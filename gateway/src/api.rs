//! HTTP: `GET /healthz` and `GET /metrics`, the only routes without login (DESIGN §4
//! "Security"). Neither exposes event content: states, counters and sequence numbers only.
//! The console and its authenticated API (`crate::console`) are mounted beside them.
//!
//! `/healthz` answers 200 while the gateway works (the body's `status` is `ok`, `degraded`
//! or `critical`, with the reason in its fields, e.g. `journal.storage_damaged`) and 503
//! with `status: "failing"` and a `reason` once the journal writer has died: nothing can be
//! journaled, and the process is about to exit (see `app.rs`).
//!
//! # Connection bounds (the LAN is not trusted; issue 8)
//! The server runs its own accept loop over hyper: at most [`ServeOptions::max_connections`]
//! connections at once (one more is accepted and closed at once, counted in
//! `campusgw_listener_refused_total{listener="console"}`); request headers (and a TLS
//! handshake) must arrive within `header_timeout`; a connection without traffic for
//! `idle_timeout` is closed; an accept failing for lack of descriptors backs off 100 ms.
//! With TLS files configured it serves HTTPS only (rustls).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

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
    /// The operator console and `/api/v1` (absent: health and metrics only).
    pub console: Option<crate::console::ConsoleState>,
    /// Set when the rules runner was given up on (absent: no `[rules]`).
    pub rules_failure: Option<crate::rules::RunnerFailure>,
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
    let console = state.console.clone();
    let base = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .with_state(state);
    match console {
        Some(c) => base.merge(crate::console::router(c)),
        None => base,
    }
}

/// How the console server bounds its connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Connections served at once.
    pub max_connections: usize,
    /// Request headers (and the TLS handshake) must arrive within this.
    pub header_timeout: Duration,
    /// A connection without traffic for this long is closed.
    pub idle_timeout: Duration,
    /// HTTPS with this config; plain HTTP without.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_connections: crate::config::DEFAULT_CONSOLE_MAX_CONNECTIONS,
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            tls: None,
        }
    }
}

/// A console TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Unreadable or not PEM of the expected kind.
    #[error("console TLS file {path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("console TLS certificate and key refused: {0}")]
    Config(#[from] rustls::Error),
}

/// Loads a PEM certificate chain and private key into a rustls server config.
///
/// # Errors
/// [`TlsError`] naming the file and the problem.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let file_err = |path: &Path, reason: String| TlsError::File {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_err(cert, "no CERTIFICATE in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| file_err(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key_der)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Binds `addr` and serves until `shutdown`; returns the bound address.
///
/// # Errors
/// The bind error, naming the address.
pub async fn serve(
    addr: SocketAddr,
    state: ApiState,
    opts: ServeOptions,
    shutdown: CancellationToken,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let bound = listener.local_addr()?;
    let app = router(state);
    let task = tokio::spawn(accept_loop(listener, app, opts, shutdown));
    Ok((bound, task))
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let acceptor = opts.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE/ENFILE and the like fail at once: back off instead of spinning.
                metrics::counter!("campusgw_console_accept_failures_total").increment(1);
                tracing::warn!(error = %e, "console accept failed; retrying in 100 ms");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        if open.load(Ordering::SeqCst) >= opts.max_connections {
            // Accept-then-close: the fd is freed now and the backlog keeps draining.
            metrics::counter!("campusgw_listener_refused_total", "listener" => "console")
                .increment(1);
            tracing::debug!(%peer, max_connections = opts.max_connections, "console connection over max_connections; closed");
            drop(stream);
            continue;
        }
        let guard = OpenGuard::new(open.clone());
        let (app, opts, acceptor, shutdown) = (
            app.clone(),
            opts.clone(),
            acceptor.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move {
            let _guard = guard;
            let _ = stream.set_nodelay(true);
            // The console's login rate limit is per client address.
            let app = app.map_request(move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut()
                    .insert(crate::console::session::PeerAddr(peer));
                r
            });
            match acceptor {
                None => serve_connection(stream, app, &opts, shutdown).await,
                Some(acceptor) => {
                    let tls =
                        tokio::time::timeout(opts.header_timeout, acceptor.accept(stream)).await;
                    match tls {
                        Ok(Ok(tls)) => serve_connection(tls, app, &opts, shutdown).await,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "console TLS handshake failed")
                        }
                        Err(_) => tracing::debug!(%peer, "console TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// Counts a console connection as open while it lives.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(open: Arc<AtomicUsize>) -> OpenGuard {
        open.fetch_add(1, Ordering::SeqCst);
        OpenGuard(open)
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Serves HTTP/1.1 on one connection until it ends, idles out, or `shutdown`.
async fn serve_connection<I, S>(io: I, app: S, opts: &ServeOptions, shutdown: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = axum::response::Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let last = Arc::new(Mutex::new(Instant::now()));
    let io = Activity {
        inner: io,
        last: last.clone(),
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    tokio::pin!(conn);
    let tick = (opts.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    let mut closing: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "console connection ended with an error");
                }
                return;
            }
            _ = ticker.tick() => {
                let idle = last.lock().map(|l| l.elapsed()).unwrap_or_default();
                if let Some(at) = closing {
                    // A peer that does not let a graceful close finish is dropped.
                    if tokio::time::Instant::now() >= at {
                        return;
                    }
                } else if idle >= opts.idle_timeout {
                    conn.as_mut().graceful_shutdown();
                    closing = Some(tokio::time::Instant::now() + opts.header_timeout);
                }
            }
            () = shutdown.cancelled(), if closing.is_none() => {
                conn.as_mut().graceful_shutdown();
                closing = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

/// An I/O stream that notes when bytes last moved (for the idle timeout).
struct Activity<I> {
    inner: I,
    last: Arc<Mutex<Instant>>,
}

impl<I> Activity<I> {
    fn touch(&self) {
        if let Ok(mut l) = self.last.lock() {
            *l = Instant::now();
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Activity<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Activity<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
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
    let rules_failure = s.rules_failure.as_ref().and_then(|r| r.borrow().clone());
    if let Some(reason) = rules_failure {
        // Linkage is down for good: failing, and the process is exiting (app.rs).
        let body = serde_json::json!({
            "status": "failing",
            "reason": reason,
            "gateway": s.gateway_id,
            "version": env!("CARGO_PKG_VERSION"),
            "journal": { "last_seq": st.last_seq.load(Ordering::SeqCst), "writer_alive": true },
            "rules": { "running": false },
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
    // Only a dead journal writer or a given-up rules runner (above) makes it 503.
    (StatusCode::OK, axum::Json(body))
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_handle().render(),
    )
}
