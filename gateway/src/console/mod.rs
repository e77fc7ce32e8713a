//! The operator console and its API (issue 12): `/api/v1` (JSON, OpenAPI at
//! `/api/v1/openapi.json`), a live stream (SSE), and server-rendered pages for the guard
//! room's tablet, all behind login (see [`auth`]).
//!
//! # One route table
//! Every route is a row of [`ROUTES`]: method, path, who may call it ([`Access`]) and
//! whether it is an API route (anonymous: 401 JSON) or a page (anonymous: redirect to
//! `/login`). The router is built from the table and nothing else, and the authorization
//! test walks the same table, so a route cannot be added without its access rule and its
//! test row. Unknown paths answer 401 to anonymous callers too (nothing is revealed), 404
//! otherwise.
//!
//! # Operator actions are events
//! Acknowledging an alarm, enabling a rule, sending a command: each is journaled as an
//! event (class `operations`, device = the gateway id) that names who did it, and the rules
//! engine consumes it like any other event (docs/console.md). Logins, logouts, failed
//! logins, users and tokens created are journaled as `audit.*` events: the audit log is the
//! journal itself, forwarded to the county like everything else.

pub mod access;
pub mod admin;
pub mod alarms;
pub mod auth;
pub mod commands;
pub mod devices;
pub mod error;
pub mod events;
pub mod i18n;
pub mod import;
pub mod modes;
pub mod openapi;
pub mod pages;
pub mod rules;
pub mod session;
pub mod store;
pub mod stream;
pub mod tls;
pub mod uplinks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, get, post};
use campusgw_sdk::{Class, DeviceId, Location, NewEvent};
use subtle::ConstantTimeEq;

use crate::commands::CommandRouter;
use crate::health::HealthBoard;
use crate::journal::Journal;
use crate::uplink::UplinkBoard;
use auth::{Auth, Credential, Principal, Role};
use error::ApiError;

/// Largest request body accepted (a login, a note, a command): anything bigger is 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A configured device, as the console shows it.
#[derive(Debug, Clone)]
pub struct DeviceInfo {
    /// Its id.
    pub id: DeviceId,
    /// Its driver kind.
    pub driver: &'static str,
    /// Where it is.
    pub location: Location,
}

/// What the console's routes read and write.
#[derive(Clone)]
pub struct ConsoleState {
    /// The journal (events, and the console's tables through its writer).
    pub journal: Journal,
    /// Users, sessions, tokens.
    pub auth: Arc<Auth>,
    /// Device states.
    pub health: Arc<HealthBoard>,
    /// Uplink states.
    pub uplinks: UplinkBoard,
    /// The configured devices.
    pub devices: Arc<Vec<DeviceInfo>>,
    /// The gateway's id (device of operator events).
    pub gateway_id: DeviceId,
    /// Where commands go (absent in tests without drivers).
    pub commands: Option<Arc<CommandRouter>>,
    /// The configured rules (read when listed: the runner reloads them).
    pub rules: rules::RuleSource,
    /// The alarm board (absent when the gateway runs no rules).
    pub alarms: Option<crate::alarms::AlarmStore>,
    /// Second confirmations waiting (lockdown, unlock-all).
    pub confirms: Arc<commands::Confirmations>,
    /// Backlog peaks per uplink (drain progress).
    pub drain: Arc<uplinks::DrainTracker>,
    /// The page templates.
    pub pages: Arc<pages::Pages>,
    /// Presence and door results (the muster list); `crate::app` sets the roster.
    pub presence: Arc<crate::presence::Presence>,
    /// Bulk import: the config file and the previews waiting to be applied.
    pub imports: Arc<import::ImportDesk>,
}

impl ConsoleState {
    /// Journals an operator event (class `operations`, device = this gateway) and waits
    /// until it is durable; returns its seq.
    ///
    /// # Errors
    /// [`ApiError`] 503 when the journal refuses it.
    pub async fn journal_operation(
        &self,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<u64, ApiError> {
        let kind = campusgw_sdk::Kind::new(kind).map_err(|e| ApiError::internal(e.to_string()))?;
        let event = campusgw_sdk::Event::stamp(
            NewEvent::new(kind, Class::Operations).payload(payload),
            &self.gateway_id,
            "console",
            &Location::default(),
        );
        let receipts = self.journal.append(vec![event]).await.map_err(|e| {
            ApiError::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                "journal_unavailable",
                format!("not recorded: {e}"),
            )
        })?;
        Ok(receipts.first().map_or(0, |r| r.seq))
    }

    /// Journals an `audit.*` event; failures are logged, never shown to the caller (the
    /// action itself was journaled or refused on its own).
    pub async fn audit(&self, what: &str, who: &str, detail: serde_json::Value) {
        let payload = serde_json::json!({ "by": who, "detail": detail });
        if let Err(e) = self
            .journal_operation(&format!("audit.{what}"), payload)
            .await
        {
            tracing::warn!(what, who, error = %e.message, "audit event not journaled");
        }
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (login, setup, the OpenAPI document, static assets).
    Public,
    /// A logged-in user or token of at least this role.
    Login(Role),
}

/// What a route answers an anonymous caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// JSON API: 401 with a JSON error.
    Api,
    /// A page: a redirect to `/login`.
    Page,
}

/// One route: the router is built from [`ROUTES`] and nothing else.
pub struct RouteSpec {
    /// HTTP method.
    pub method: Method,
    /// Path as axum spells it (`{id}` for a parameter).
    pub path: &'static str,
    /// Who may call it.
    pub access: Access,
    /// API or page.
    pub face: Face,
    handler: fn() -> MethodRouter<ConsoleState>,
}

impl RouteSpec {
    /// The path with every `{param}` replaced by `value` (for tests).
    pub fn example_path(&self, value: &str) -> String {
        let mut out = String::new();
        let mut rest = self.path;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let end = rest[start..]
                .find('}')
                .map_or(rest.len(), |e| start + e + 1);
            out.push_str(value);
            rest = &rest[end..];
        }
        out.push_str(rest);
        out
    }
}

const fn route(
    method: Method,
    path: &'static str,
    access: Access,
    face: Face,
    handler: fn() -> MethodRouter<ConsoleState>,
) -> RouteSpec {
    RouteSpec {
        method,
        path,
        access,
        face,
        handler,
    }
}

use Access::{Login, Public};
use Face::{Api, Page};
const VIEWER: Access = Login(Role::Viewer);
const OPERATOR: Access = Login(Role::Operator);
const ADMIN: Access = Login(Role::Admin);

/// Every console route.
pub static ROUTES: &[RouteSpec] = &[
    route(Method::GET, "/api/v1/openapi.json", Public, Api, || {
        get(openapi::document)
    }),
    route(Method::POST, "/api/v1/login", Public, Api, || {
        post(session::login)
    }),
    route(Method::POST, "/api/v1/setup", Public, Api, || {
        post(session::setup)
    }),
    route(Method::POST, "/api/v1/logout", VIEWER, Api, || {
        post(session::logout)
    }),
    route(Method::GET, "/api/v1/me", VIEWER, Api, || get(session::me)),
    route(Method::POST, "/api/v1/users", ADMIN, Api, || {
        post(session::create_user)
    }),
    route(Method::POST, "/api/v1/tokens", ADMIN, Api, || {
        post(session::create_token)
    }),
    route(Method::GET, "/api/v1/events", VIEWER, Api, || {
        get(events::list)
    }),
    route(Method::GET, "/api/v1/events/{seq}", VIEWER, Api, || {
        get(events::one)
    }),
    route(Method::GET, "/api/v1/devices", VIEWER, Api, || {
        get(devices::list)
    }),
    route(Method::GET, "/api/v1/uplinks", VIEWER, Api, || {
        get(uplinks::list)
    }),
    route(
        Method::GET,
        "/api/v1/uplinks/{name}/deliveries",
        VIEWER,
        Api,
        || get(uplinks::deliveries),
    ),
    route(
        Method::POST,
        "/api/v1/uplinks/{name}/duty-check",
        OPERATOR,
        Api,
        || post(uplinks::duty_check),
    ),
    route(Method::GET, "/api/v1/rules", VIEWER, Api, || {
        get(rules::list)
    }),
    route(
        Method::POST,
        "/api/v1/rules/{id}/enable",
        ADMIN,
        Api,
        || post(rules::enable),
    ),
    route(
        Method::POST,
        "/api/v1/rules/{id}/disable",
        ADMIN,
        Api,
        || post(rules::disable),
    ),
    route(Method::GET, "/api/v1/modes", VIEWER, Api, || {
        get(modes::list)
    }),
    route(Method::POST, "/api/v1/maintenance", OPERATOR, Api, || {
        post(modes::set_maintenance)
    }),
    route(
        Method::POST,
        "/api/v1/maintenance/clear",
        OPERATOR,
        Api,
        || post(modes::clear_maintenance),
    ),
    route(Method::POST, "/api/v1/drill", OPERATOR, Api, || {
        post(modes::set_drill)
    }),
    route(Method::POST, "/api/v1/drill/clear", OPERATOR, Api, || {
        post(modes::clear_drill)
    }),
    route(Method::GET, "/api/v1/alarms", VIEWER, Api, || {
        get(alarms::list)
    }),
    route(Method::GET, "/api/v1/alarms/{id}", VIEWER, Api, || {
        get(alarms::one)
    }),
    route(
        Method::POST,
        "/api/v1/alarms/{id}/acknowledge",
        OPERATOR,
        Api,
        || post(alarms::acknowledge),
    ),
    route(
        Method::POST,
        "/api/v1/alarms/{id}/resolve",
        OPERATOR,
        Api,
        || post(alarms::resolve),
    ),
    route(Method::POST, "/api/v1/commands", OPERATOR, Api, || {
        post(commands::send)
    }),
    route(Method::GET, "/api/v1/access/muster", VIEWER, Api, || {
        get(access::muster)
    }),
    route(Method::GET, "/api/v1/access/state", VIEWER, Api, || {
        get(access::state)
    }),
    route(Method::GET, "/api/v1/stream", VIEWER, Api, || {
        get(stream::sse)
    }),
    route(Method::POST, "/api/v1/import/preview", ADMIN, Api, || {
        // The upload has its own limit (import::MAX_IMPORT_BYTES), read by the handler.
        post(import::preview).layer(DefaultBodyLimit::disable())
    }),
    route(Method::POST, "/api/v1/import/apply", ADMIN, Api, || {
        post(import::apply)
    }),
    route(Method::GET, "/login", Public, Page, || {
        get(pages::login_page)
    }),
    route(Method::POST, "/login", Public, Page, || {
        post(pages::login_form)
    }),
    route(Method::GET, "/setup", Public, Page, || {
        get(pages::setup_page)
    }),
    route(Method::GET, "/assets/{file}", Public, Page, || {
        get(pages::asset)
    }),
    route(Method::GET, "/lang/{code}", Public, Page, || {
        get(pages::set_lang)
    }),
    route(Method::GET, "/", VIEWER, Page, || get(pages::board)),
    route(Method::GET, "/events", VIEWER, Page, || {
        get(pages::events_page)
    }),
    route(Method::GET, "/devices", VIEWER, Page, || {
        get(pages::devices_page)
    }),
    route(Method::GET, "/uplinks", VIEWER, Page, || {
        get(pages::uplinks_page)
    }),
    route(Method::GET, "/rules", VIEWER, Page, || {
        get(pages::rules_page)
    }),
    route(Method::GET, "/alarms/{id}", VIEWER, Page, || {
        get(pages::alarm_page)
    }),
    route(Method::GET, "/import", ADMIN, Page, || get(import::page)),
];

#[derive(Clone)]
struct Guard {
    state: ConsoleState,
    spec: &'static RouteSpec,
}

/// The console router (merged into the API server's router by `api.rs`).
pub fn router(state: ConsoleState) -> Router {
    let mut r = Router::new();
    for spec in ROUTES {
        let g = Guard {
            state: state.clone(),
            spec,
        };
        let mr = (spec.handler)().route_layer(axum::middleware::from_fn_with_state(g, guard));
        r = r.route(spec.path, mr);
    }
    r.fallback(fallback)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The caller of a request, from its bearer token or session cookie.
pub fn principal_of(state: &ConsoleState, headers: &axum::http::HeaderMap) -> Option<Principal> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let cookie = session::cookie(headers, auth::SESSION_COOKIE);
    state.auth.authenticate(bearer, cookie.as_deref())
}

async fn guard(State(g): State<Guard>, mut req: Request, next: Next) -> Response {
    let Access::Login(min) = g.spec.access else {
        return next.run(req).await;
    };
    let Some(p) = principal_of(&g.state, req.headers()) else {
        return match g.spec.face {
            Face::Api => ApiError::unauthorized().into_response(),
            Face::Page => Redirect::to("/login").into_response(),
        };
    };
    if p.role < min {
        return ApiError::forbidden(format!(
            "this needs the {} role; {} has {}",
            min.as_str(),
            p.name,
            p.role.as_str()
        ))
        .into_response();
    }
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Credential::Session { csrf, .. } = &p.credential
        && changes_state
    {
        let sent = req
            .headers()
            .get("x-csrf-token")
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        if !bool::from(sent.ct_eq(csrf.as_bytes())) {
            return ApiError::forbidden(
                "missing or wrong X-CSRF-Token header (the page's csrf token)",
            )
            .into_response();
        }
    }
    req.extensions_mut().insert(p);
    next.run(req).await
}

async fn fallback(State(state): State<ConsoleState>, req: Request) -> Response {
    let known = principal_of(&state, req.headers()).is_some();
    let api = req.uri().path().starts_with("/api/");
    match (known, api) {
        (false, true) => ApiError::unauthorized().into_response(),
        (false, false) => Redirect::to("/login").into_response(),
        (true, _) => ApiError::not_found(format!(
            "no such route: {} {}",
            req.method(),
            req.uri().path()
        ))
        .into_response(),
    }
}

/// Why the console could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// Users and sessions unreadable.
    #[error("console: {0}")]
    Auth(#[from] auth::AuthError),
    /// A template that does not parse (a build defect).
    #[error("console templates: {0}")]
    Templates(#[from] minijinja::Error),
    /// The setup token file could not be written.
    #[error("console: cannot write the setup token file: {0}")]
    SetupFile(std::io::Error),
}

/// What the console is built from.
pub struct ConsoleParts {
    /// The journal.
    pub journal: Journal,
    /// Device states.
    pub health: Arc<HealthBoard>,
    /// Uplink states.
    pub uplinks: UplinkBoard,
    /// Configured devices.
    pub devices: Vec<DeviceInfo>,
    /// The gateway id.
    pub gateway_id: DeviceId,
    /// Command routing.
    pub commands: Option<Arc<CommandRouter>>,
    /// Configured rules.
    pub rules: rules::RuleSource,
    /// The alarm board.
    pub alarms: Option<crate::alarms::AlarmStore>,
    /// Where the setup token goes when no admin exists.
    pub data_dir: std::path::PathBuf,
    /// The config file the gateway started from (bulk imports are written to it).
    pub config_file: Option<std::path::PathBuf>,
}

impl ConsoleState {
    /// Builds the console; with no admin yet, writes the one-time setup token file.
    ///
    /// # Errors
    /// [`ConsoleError`].
    pub fn start(parts: ConsoleParts) -> Result<ConsoleState, ConsoleError> {
        let auth = Arc::new(Auth::new(parts.journal.clone())?);
        auth.offer_setup(&parts.data_dir)
            .map_err(ConsoleError::SetupFile)?;
        Ok(ConsoleState {
            journal: parts.journal.clone(),
            auth,
            health: parts.health,
            uplinks: parts.uplinks,
            devices: Arc::new(parts.devices),
            gateway_id: parts.gateway_id,
            commands: parts.commands,
            rules: parts.rules,
            alarms: parts.alarms,
            confirms: Arc::new(commands::Confirmations::default()),
            drain: Arc::new(uplinks::DrainTracker::default()),
            pages: Arc::new(pages::Pages::new()?),
            presence: Arc::new(crate::presence::Presence::new(
                parts.journal.clone(),
                crate::presence::Roster::default(),
            )),
            imports: Arc::new(import::ImportDesk::new(parts.config_file)),
        })
    }
}
