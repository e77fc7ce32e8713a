//! The running `canteen` driver: the terminal server (HTTPS, or HTTP by opt-in) and the
//! ledger behind it.
//!
//! | request | answer |
//! |---|---|
//! | `POST /v1/sale`, known terminal, right token | 200 `approved` / `declined` **after** the decision is in the ledger and its event in the journal; the same answer for every resend of (terminal, txn) |
//! | ledger or journal cannot store it | 503 `unavailable`: resend the same request |
//! | malformed body, bad card, zero / negative / over-maximum amount | 400 `bad_request` / `amount_invalid` |
//! | no or wrong token | 401 `unauthorized` |
//! | terminal not configured | 403 `unknown_terminal` |
//! | txn at or below the terminal's last one, not a resend / same txn, other card or amount | 409 `txn_replayed` / `txn_conflict` |
//! | body over [`crate::proto::MAX_BODY`] | 413 |
//! | `GET /v1/status` | 200 `{"cards": n}` (no token needed, no personal data) |
//!
//! Every refusal but `unavailable` bumps `campusgw_canteen_refused_total{code}`, writes a
//! rate-limited log line and journals a `canteen.refused` security event (at most one per
//! code and terminal or peer per minute; the event counts the ones folded into it).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use campusgw_sdk::log::LogLimiter;
use campusgw_sdk::{
    Class, Dedup, DeviceHealth, Driver, DriverContext, DriverError, EmitError, Kind, NewEvent,
};
use chrono::{DateTime, Utc};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::ledger::{Change, Conflict, Decision, Ledger, LedgerError, Refusal, Rules};
use crate::proto::{self, ErrorCode, ProtoError, SaleAnswer, SaleRequest};

/// The gateway's clock, injectable so tests can run a day (or an outage) in no time.
pub type Clock = Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>;

/// The wall clock.
pub fn system_clock() -> Clock {
    Arc::new(Utc::now)
}

/// A terminal's credential: the SHA-256 of its token.
#[derive(Clone)]
pub struct TerminalAuth {
    /// Terminal id.
    pub id: String,
    /// SHA-256 of the token.
    pub token_sha256: [u8; 32],
}

impl std::fmt::Debug for TerminalAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalAuth")
            .field("id", &self.id)
            .field("token_sha256", &"<redacted>")
            .finish()
    }
}

/// What `build` hands the driver.
#[derive(Clone)]
pub struct Settings {
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTPS when set.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The ledger file.
    pub ledger_path: std::path::PathBuf,
    /// Authorisation rules.
    pub rules: Rules,
    /// Largest sale.
    pub max_amount_cents: i64,
    /// Connection cap.
    pub max_connections: usize,
    /// Accepted terminals.
    pub terminals: Vec<TerminalAuth>,
    /// Card-list changes to apply at start.
    pub card_list: Vec<Change>,
    /// The clock.
    pub clock: Clock,
}

/// Header read and TLS handshake deadline.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How often sales and conflicts not yet journaled (journal trouble, a crash) are retried.
pub const FLUSH_EVERY: Duration = Duration::from_secs(5);

/// The driver.
pub struct CanteenDriver {
    settings: Settings,
    bound: watch::Sender<Option<SocketAddr>>,
}

impl CanteenDriver {
    /// A driver with these settings.
    pub fn new(settings: Settings) -> CanteenDriver {
        CanteenDriver {
            settings,
            bound: watch::channel(None).0,
        }
    }

    /// The address the server bound, once it has (tests listen on port 0).
    pub fn bound(&self) -> watch::Receiver<Option<SocketAddr>> {
        self.bound.subscribe()
    }
}

/// TLS files that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    path: String,
    reason: String,
}

/// Loads a PEM certificate chain and key into a rustls server config (ring provider).
///
/// # Errors
/// [`TlsError`] naming the file.
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let err = |p: &Path, r: String| TlsError {
        path: p.display().to_string(),
        reason: r,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| err(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(err(cert, "no CERTIFICATE in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, e.to_string()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| err(cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(chain, key_der)
    .map_err(|e| err(key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

struct Server {
    settings: Settings,
    ledger: Arc<Mutex<Ledger>>,
    cx: DriverContext,
    gate: Mutex<RefusalGate>,
    log: Mutex<LogLimiter>,
}

/// One `canteen.refused` event per (code, who) per minute; the rest are counted into the
/// next one.
#[derive(Default)]
struct RefusalGate {
    next: HashMap<(ErrorCode, String), (Instant, u64)>,
}

impl RefusalGate {
    const WINDOW: Duration = Duration::from_secs(60);
    const KEYS: usize = 4096;

    /// `Some(refusals folded into this one)` when an event may be journaled now.
    fn allow(&mut self, code: ErrorCode, who: &str) -> Option<u64> {
        let now = Instant::now();
        if self.next.len() >= Self::KEYS {
            self.next.retain(|_, (t, _)| *t > now);
        }
        let e = self.next.entry((code, who.to_owned())).or_insert((now, 0));
        if now < e.0 {
            e.1 += 1;
            return None;
        }
        let folded = std::mem::take(&mut e.1);
        e.0 = now + Self::WINDOW;
        Some(folded)
    }
}

impl Driver for CanteenDriver {
    async fn run(self, cx: DriverContext) -> Result<(), DriverError> {
        let CanteenDriver {
            mut settings,
            bound,
        } = self;
        // Applied once below and dropped: 20,000 cards are 40,000 changes not worth keeping.
        let card_list = std::mem::take(&mut settings.card_list);
        let s = settings;
        let path = s.ledger_path.clone();
        let ledger = tokio::task::spawn_blocking(move || Ledger::open(&path))
            .await
            .map_err(|e| DriverError::Fatal(e.to_string()))?
            .map_err(|e| DriverError::Fatal(e.to_string()))?;
        let server = Arc::new(Server {
            ledger: Arc::new(Mutex::new(ledger)),
            settings: s.clone(),
            cx: cx.clone(),
            gate: Mutex::new(RefusalGate::default()),
            log: Mutex::new(LogLimiter::new(Duration::from_secs(10))),
        });
        if !card_list.is_empty() {
            server
                .with_ledger(move |l, rules, now| l.apply(&card_list, None, rules, now))
                .await
                .map_err(|e| DriverError::Fatal(e.to_string()))?;
        }
        // Sales decided before a crash and not yet journaled go in before anything new.
        server.flush().await;
        let listener = tokio::net::TcpListener::bind(s.listen).await.map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot listen on {}: {e}", s.listen))
        })?;
        let _ = bound.send(Some(listener.local_addr()?));
        cx.report_health(cx.device(), DeviceHealth::Online);
        tracing::info!(listen = %s.listen, tls = s.tls.is_some(), terminals = s.terminals.len(), "canteen terminal server up");
        let flusher = {
            let server = server.clone();
            tokio::spawn(async move {
                while server.cx.sleep(FLUSH_EVERY).await {
                    server.flush().await;
                }
            })
        };
        let app = Router::new()
            .route("/v1/sale", axum::routing::post(sale))
            .route("/v1/status", axum::routing::get(status))
            .layer(DefaultBodyLimit::max(proto::MAX_BODY))
            .with_state(server.clone());
        accept_loop(listener, app, &s, cx.shutdown().clone()).await;
        flusher.abort();
        Ok(())
    }
}

impl Server {
    async fn with_ledger<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger, &Rules, DateTime<Utc>) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        // The injected clock dates decisions only (see `decide`); bookkeeping uses the wall
        // clock, so a test clock that moves per call moves once per sale.
        let (ledger, rules, now) = (self.ledger.clone(), self.settings.rules.clone(), Utc::now());
        tokio::task::spawn_blocking(move || {
            let mut l = ledger.lock().expect("ledger lock");
            f(&mut l, &rules, now)
        })
        .await
        .unwrap_or_else(|e| {
            Err(LedgerError::Sql(rusqlite::Error::ToSqlConversionFailure(
                Box::new(e),
            )))
        })
    }

    /// Journals what the ledger holds but the journal does not (yet).
    async fn flush(&self) {
        let pending = self
            .with_ledger(|l, _, _| Ok((l.unjournaled()?, l.unjournaled_conflicts()?)))
            .await;
        let Ok((sales, conflicts)) = pending else {
            return;
        };
        for d in sales {
            if self.journal(&d).await.is_err() {
                return;
            }
        }
        for c in conflicts {
            let Ok(r) = self.cx.emit(conflict_event(&c)).await else {
                return;
            };
            let (id, ev) = (c.id, r.id.to_string());
            let _ = self
                .with_ledger(move |l, _, _| l.mark_conflict_journaled(id, &ev))
                .await;
        }
    }

    /// Journals a decision (a copy already there is dropped by the journal) and marks it.
    async fn journal(&self, d: &Decision) -> Result<String, EmitError> {
        let r = self.cx.emit(sale_event(d)).await?;
        if r.duplicate {
            metrics::counter!("campusgw_canteen_journal_duplicates_total").increment(1);
        }
        let (t, n, id) = (d.terminal.clone(), d.txn, r.id.to_string());
        let mark = id.clone();
        if let Err(e) = self
            .with_ledger(move |l, _, _| l.mark_journaled(&t, n, &mark))
            .await
        {
            // Harmless: the next flush journals it again and the journal drops the copy.
            tracing::warn!(error = %e, "canteen ledger: cannot mark a sale journaled");
        }
        Ok(id)
    }

    fn authorised(&self, headers: &HeaderMap, terminal: &str) -> Result<(), ErrorCode> {
        let Some(t) = self.settings.terminals.iter().find(|t| t.id == terminal) else {
            return Err(ErrorCode::UnknownTerminal);
        };
        let token = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or(ErrorCode::Unauthorized)?;
        let hash = Sha256::digest(token.as_bytes());
        if bool::from(hash.as_slice().ct_eq(&t.token_sha256)) {
            Ok(())
        } else {
            Err(ErrorCode::Unauthorized)
        }
    }

    fn refuse(&self, code: ErrorCode, who: &str, peer: Option<SocketAddr>, why: &str) -> Response {
        metrics::counter!("campusgw_canteen_refused_total", "code" => code.as_str()).increment(1);
        if let Some(held) = self.log.lock().expect("log lock").allow() {
            tracing::warn!(code = code.as_str(), who, peer = ?peer, why, held_back = held, "canteen request refused");
        }
        if code.is_security() {
            let folded = self.gate.lock().expect("gate lock").allow(code, who);
            if let Some(folded) = folded {
                let mut e = NewEvent::new(
                    Kind::new("canteen.refused").expect("valid kind"),
                    Class::Security,
                );
                e.payload = json!({
                    "code": code.as_str(),
                    "who": who,
                    "peer": peer.map(|p| p.to_string()),
                    "reason": why,
                    "folded": folded,
                });
                let cx = self.cx.clone();
                tokio::spawn(async move {
                    if let Err(e) = cx.emit(e).await {
                        tracing::warn!(error = %e, "canteen: cannot journal a refusal");
                    }
                });
            }
        }
        reply(code.status(), proto::error_body(code, why))
    }

    async fn sale(&self, headers: HeaderMap, peer: Option<SocketAddr>, body: Bytes) -> Response {
        let who_peer = peer.map_or_else(|| "unknown".to_owned(), |p| p.ip().to_string());
        let req = match proto::parse_sale(&body) {
            Ok(r) => r,
            Err(ProtoError::Amount(a)) => {
                return self.refuse(
                    ErrorCode::AmountInvalid,
                    &who_peer,
                    peer,
                    &format!("amount_cents {a}"),
                );
            }
            Err(ProtoError::BadRequest(m)) => {
                return self.refuse(ErrorCode::BadRequest, &who_peer, peer, &m);
            }
        };
        if let Err(code) = self.authorised(&headers, &req.terminal) {
            return self.refuse(code, &req.terminal, peer, "terminal credentials refused");
        }
        if req.amount_cents > self.settings.max_amount_cents {
            let why = format!(
                "amount_cents {} is over the maximum {}",
                req.amount_cents, self.settings.max_amount_cents
            );
            return self.refuse(ErrorCode::AmountInvalid, &req.terminal, peer, &why);
        }
        self.decide(req, peer).await
    }

    async fn decide(&self, req: SaleRequest, peer: Option<SocketAddr>) -> Response {
        let started = Instant::now();
        let terminal = req.terminal.clone();
        let now = (self.settings.clock)();
        let decided = self
            .with_ledger(move |l, rules, _| l.decide(&req, rules, now))
            .await;
        let d = match decided {
            Ok(Ok(d)) => d,
            Ok(Err(Refusal::Replayed { last })) => {
                let why = format!("txn is not above the terminal's last one ({last})");
                return self.refuse(ErrorCode::TxnReplayed, &terminal, peer, &why);
            }
            Ok(Err(Refusal::Conflict)) => {
                let why = "txn was used for another card or amount";
                return self.refuse(ErrorCode::TxnConflict, &terminal, peer, why);
            }
            Err(e) => return self.unavailable(&e.to_string()),
        };
        if !d.fresh {
            metrics::counter!("campusgw_canteen_resends_total").increment(1);
        }
        let id = match &d.event_id {
            Some(id) => id.clone(),
            None => match self.journal(&d).await {
                Ok(id) => id,
                Err(e) => return self.unavailable(&e.to_string()),
            },
        };
        let outcome = if d.declined.is_none() {
            "approved"
        } else {
            "declined"
        };
        metrics::counter!("campusgw_canteen_sales_total", "result" => outcome).increment(1);
        metrics::histogram!("campusgw_canteen_decision_seconds")
            .record(started.elapsed().as_secs_f64());
        let answer = SaleAnswer {
            result: outcome.into(),
            terminal: d.terminal,
            txn: d.txn,
            reason: d.declined,
            account: d.account,
            balance_cents: d.balance_after,
            record_id: id,
            meal: d.meal,
        };
        reply(200, serde_json::to_string(&answer).unwrap_or_default())
    }

    fn unavailable(&self, why: &str) -> Response {
        metrics::counter!("campusgw_canteen_refused_total", "code" => "unavailable").increment(1);
        if let Some(held) = self.log.lock().expect("log lock").allow() {
            tracing::warn!(
                why,
                held_back = held,
                "canteen sale not stored; the terminal resends"
            );
        }
        reply(
            503,
            proto::error_body(
                ErrorCode::Unavailable,
                "cannot store the sale now; resend the same request",
            ),
        )
    }
}

/// The event of a decision: `canteen.sale` (approved) or `canteen.declined`, class
/// `business`, keyed for life by (terminal, txn).
pub fn sale_event(d: &Decision) -> NewEvent {
    let kind = if d.declined.is_none() {
        "canteen.sale"
    } else {
        "canteen.declined"
    };
    let mut e = NewEvent::new(Kind::new(kind).expect("valid kind"), Class::Business);
    e.occurred_at = Some(d.decided_at);
    e.origin_ref = Some(format!("{}:{}", d.terminal, d.txn));
    e.dedup = Dedup::Lifetime;
    e.payload = json!({
        "terminal": d.terminal,
        "txn": d.txn,
        "card": d.card,
        "account": d.account,
        "amount_cents": d.amount_cents,
        "balance_after_cents": d.balance_after,
        "meal": d.meal,
        "day": d.day,
        "reason": d.declined.map(crate::proto::DeclineReason::as_str),
    });
    e
}

/// The event of a sync conflict: `canteen.conflict`, class `business`.
pub fn conflict_event(c: &Conflict) -> NewEvent {
    let mut e = NewEvent::new(
        Kind::new("canteen.conflict").expect("valid kind"),
        Class::Business,
    );
    e.origin_ref = Some(format!("conflict:{}", c.id));
    e.dedup = Dedup::Lifetime;
    e.payload = serde_json::to_value(c).unwrap_or_default();
    e
}

fn reply(status: u16, body: String) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[derive(Clone, Copy)]
struct PeerAddr(SocketAddr);

async fn sale(
    State(server): State<Arc<Server>>,
    peer: Option<axum::Extension<PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    server.sale(headers, peer.map(|p| p.0.0), body).await
}

async fn status(State(server): State<Arc<Server>>) -> Response {
    match server.with_ledger(|l, _, _| l.card_count()).await {
        Ok(n) => reply(200, json!({ "cards": n }).to_string()),
        Err(e) => server.unavailable(&e.to_string()),
    }
}

/// Accepts until shutdown: at most `max_connections` at once (more are accepted and closed,
/// counted), TLS handshake and headers under [`READ_TIMEOUT`].
async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    s: &Settings,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let open = Arc::new(AtomicUsize::new(0));
    let acceptor = s.tls.clone().map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = shutdown.cancelled() => return,
        };
        let Ok((stream, peer)) = accepted else {
            metrics::counter!("campusgw_canteen_accept_failures_total").increment(1);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                () = shutdown.cancelled() => return,
            }
        };
        if open.load(Ordering::SeqCst) >= s.max_connections {
            metrics::counter!("campusgw_listener_refused_total", "listener" => "canteen")
                .increment(1);
            drop(stream);
            continue;
        }
        open.fetch_add(1, Ordering::SeqCst);
        let (open, app, shutdown, acceptor) = (
            open.clone(),
            app.clone(),
            shutdown.clone(),
            acceptor.clone(),
        );
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let app = tower::ServiceExt::map_request(
                app,
                move |mut r: axum::http::Request<hyper::body::Incoming>| {
                    r.extensions_mut().insert(PeerAddr(peer));
                    r
                },
            );
            match acceptor {
                None => serve(stream, app, shutdown).await,
                Some(a) => match tokio::time::timeout(READ_TIMEOUT, a.accept(stream)).await {
                    Ok(Ok(tls)) => serve(tls, app, shutdown).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "canteen TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(%peer, "canteen TLS handshake timed out"),
                },
            }
            open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

async fn serve<S, A>(stream: S, app: A, shutdown: tokio_util::sync::CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    A: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    A::Future: Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(READ_TIMEOUT)
        .serve_connection(
            hyper_util::rt::TokioIo::new(stream),
            hyper_util::service::TowerToHyperService::new(app),
        );
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}
