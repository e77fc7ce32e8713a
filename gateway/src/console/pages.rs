//! Server-rendered pages (minijinja templates embedded in the binary, `gateway/assets/`),
//! with htmx (vendored, no CDN: the console works air-gapped) and a small script for the
//! live board. zh-CN by default; `/lang/en` switches to English (a cookie).

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use minijinja::{Environment, context};
use serde::Deserialize;

use super::ConsoleState;
use super::auth::{Credential, Principal};
use super::error::{ApiError, ApiPath};
use super::session::{PeerAddr, client_ip, cookie, session_cookie};

/// The language cookie.
const LANG_COOKIE: &str = "campusgw_lang";

/// Static files: name → (content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("../../assets/console.css"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/console.js"),
    ),
    (
        "import.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/import.js"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_str!("../../assets/htmx.min.js"),
    ),
];

const TEMPLATES: &[(&str, &str)] = &[
    (
        "base.html",
        include_str!("../../assets/templates/base.html"),
    ),
    (
        "login.html",
        include_str!("../../assets/templates/login.html"),
    ),
    (
        "setup.html",
        include_str!("../../assets/templates/setup.html"),
    ),
    (
        "board.html",
        include_str!("../../assets/templates/board.html"),
    ),
    (
        "events.html",
        include_str!("../../assets/templates/events.html"),
    ),
    (
        "devices.html",
        include_str!("../../assets/templates/devices.html"),
    ),
    (
        "uplinks.html",
        include_str!("../../assets/templates/uplinks.html"),
    ),
    (
        "rules.html",
        include_str!("../../assets/templates/rules.html"),
    ),
    (
        "alarm.html",
        include_str!("../../assets/templates/alarm.html"),
    ),
    (
        "import.html",
        include_str!("../../assets/templates/import.html"),
    ),
];

/// The template environment.
pub struct Pages {
    env: Environment<'static>,
}

impl Pages {
    /// Loads the embedded templates.
    ///
    /// # Errors
    /// A template that does not parse (a build defect, caught by the tests).
    pub fn new() -> Result<Pages, minijinja::Error> {
        let mut env = Environment::new();
        for (name, text) in TEMPLATES {
            env.add_template(name, text)?;
        }
        Ok(Pages { env })
    }

    fn render(&self, name: &str, ctx: minijinja::Value) -> Response {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html).into_response(),
            Err(e) => ApiError::internal(format!("template {name}: {e}")).into_response(),
        }
    }
}

/// The page language from the cookie: `en` or `zh-CN` (default).
fn lang(headers: &HeaderMap) -> &'static str {
    match cookie(headers, LANG_COOKIE).as_deref() {
        Some("en") => "en",
        _ => "zh-CN",
    }
}

/// The words of the pages in one language.
fn words(lang: &str) -> BTreeMap<&'static str, &'static str> {
    let en = lang == "en";
    super::i18n::WORDS
        .iter()
        .map(|(k, zh, e)| (*k, if en { *e } else { *zh }))
        .collect()
}

/// Renders page `name` with the common context (language, words, user, csrf) and `extra`.
pub(super) fn page(
    s: &ConsoleState,
    headers: &HeaderMap,
    p: &Principal,
    name: &str,
    extra: minijinja::Value,
) -> Response {
    let lang = lang(headers);
    let csrf = match &p.credential {
        Credential::Session { csrf, .. } => csrf.clone(),
        Credential::Token => String::new(),
    };
    let ctx = context! {
        lang => lang, t => words(lang), user => p.name, role => p.role.as_str(),
        csrf => csrf, gateway => s.gateway_id.as_str(), page => name, ..extra
    };
    s.pages.render(name, ctx)
}

/// `GET /login`.
pub async fn login_page(State(s): State<ConsoleState>, headers: HeaderMap) -> Response {
    let lang = lang(&headers);
    s.pages.render(
        "login.html",
        context! { lang => lang, t => words(lang), setup => s.auth.setup_open(), error => "" },
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    user: String,
    password: String,
}

/// `POST /login` (form): a session cookie and a redirect to the board, or the form again
/// with the reason.
pub async fn login_form(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    peer: Option<Extension<PeerAddr>>,
    form: Result<Form<LoginForm>, axum::extract::rejection::FormRejection>,
) -> Response {
    let lang = lang(&headers);
    let Ok(Form(f)) = form else {
        return (StatusCode::BAD_REQUEST, "expected user and password").into_response();
    };
    match super::session::do_login(&s, client_ip(peer), &f.user, &f.password).await {
        Ok(session) => {
            let mut r = Redirect::to("/").into_response();
            r.headers_mut()
                .insert(header::SET_COOKIE, session_cookie(&session.token));
            r
        }
        Err(e) => {
            let mut r = s.pages.render(
                "login.html",
                context! { lang => lang, t => words(lang), setup => s.auth.setup_open(), error => e.message },
            );
            *r.status_mut() = e.status;
            r
        }
    }
}

/// `GET /setup`: the first-admin form (uses the setup token).
pub async fn setup_page(State(s): State<ConsoleState>, headers: HeaderMap) -> Response {
    let lang = lang(&headers);
    s.pages.render(
        "setup.html",
        context! { lang => lang, t => words(lang), open => s.auth.setup_open() },
    )
}

/// `GET /assets/{file}`.
pub async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == file) {
        Some((_, ctype, body)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ctype)),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=300"),
                ),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::not_found(format!("no asset {file:?}")).into_response(),
    }
}

/// `GET /lang/{code}`: `en` or `zh-CN`; back to the page it came from.
pub async fn set_lang(ApiPath(code): ApiPath<String>, headers: HeaderMap) -> Response {
    let code = if code == "en" { "en" } else { "zh-CN" };
    // Only a same-site path is followed back (never an absolute URL from a header).
    let back = headers
        .get(header::REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.split_once("://").map(|(_, rest)| rest))
        .and_then(|rest| rest.find('/').map(|i| rest[i..].to_owned()))
        .filter(|p| p.starts_with('/') && !p.starts_with("//"))
        .unwrap_or_else(|| "/".into());
    let mut r = Redirect::to(&back).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={code}; Path=/; SameSite=Strict; Max-Age=31536000"
    )) {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// `GET /`: the live alarm board.
pub async fn board(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
) -> Response {
    let q = super::events::EventQuery {
        class: Some("life_safety".into()),
        limit: Some(50),
        ..Default::default()
    };
    let j = s.journal.clone();
    let recent = tokio::task::spawn_blocking(move || super::events::query(&j, &q))
        .await
        .ok()
        .and_then(Result::ok)
        .map(|p| p.events)
        .unwrap_or_default();
    // Shown, not hidden, when the journal cannot be read: an empty list would say "none".
    let modes = super::modes::current(&s).await.ok();
    page(
        &s,
        &headers,
        &p,
        "board.html",
        context! { recent => recent, modes => modes },
    )
}

/// Event log filters as typed into the form (empty fields mean no filter).
#[derive(Debug, Default, Deserialize)]
pub struct EventForm {
    class: Option<String>,
    kind: Option<String>,
    device: Option<String>,
    building: Option<String>,
    floor: Option<String>,
    before: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

/// `GET /events`: the event log with filters.
pub async fn events_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
    form: Result<Query<EventForm>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let f = form.map(|Query(f)| f).unwrap_or_default();
    let q = super::events::EventQuery {
        class: non_empty(f.class.clone()),
        kind: non_empty(f.kind.clone()),
        device: non_empty(f.device.clone()),
        building: non_empty(f.building.clone()),
        floor: non_empty(f.floor.clone()),
        before: non_empty(f.before).and_then(|b| b.parse().ok()),
        limit: Some(100),
        ..Default::default()
    };
    let j = s.journal.clone();
    let result = tokio::task::spawn_blocking(move || super::events::query(&j, &q)).await;
    let (events, next, error) = match result {
        Ok(Ok(p)) => (p.events, p.next, String::new()),
        Ok(Err(e)) => (Vec::new(), None, e.message),
        Err(e) => (Vec::new(), None, e.to_string()),
    };
    let filters = context! {
        class => f.class.unwrap_or_default(), kind => f.kind.unwrap_or_default(),
        device => f.device.unwrap_or_default(), building => f.building.unwrap_or_default(),
        floor => f.floor.unwrap_or_default(),
    };
    page(
        &s,
        &headers,
        &p,
        "events.html",
        context! { events => events, next => next, error => error, f => filters },
    )
}

/// `GET /devices`.
pub async fn devices_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
) -> Response {
    let tree = super::devices::tree(&s);
    page(&s, &headers, &p, "devices.html", context! { tree => tree })
}

/// `GET /uplinks`.
pub async fn uplinks_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
) -> Response {
    let uplinks = super::uplinks::views(&s);
    page(
        &s,
        &headers,
        &p,
        "uplinks.html",
        context! { uplinks => uplinks },
    )
}

/// `GET /rules`.
pub async fn rules_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
) -> Response {
    let rules = super::rules::current(&s).await.unwrap_or_default();
    page(&s, &headers, &p, "rules.html", context! { rules => rules })
}

/// `GET /alarms/{id}`: one alarm with its timeline.
pub async fn alarm_page(
    State(s): State<ConsoleState>,
    headers: HeaderMap,
    Extension(p): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Response {
    match super::alarms::detail(&s, &id) {
        Ok(d) => page(
            &s,
            &headers,
            &p,
            "alarm.html",
            context! { a => d.view, timeline => d.timeline },
        ),
        Err(e) => {
            let mut r = page(
                &s,
                &headers,
                &p,
                "alarm.html",
                context! { error => e.message },
            );
            *r.status_mut() = e.status;
            r
        }
    }
}
