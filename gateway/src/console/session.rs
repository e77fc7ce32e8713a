//! Login, logout, first-admin setup, users and API tokens (`/api/v1/login`, ...).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ConsoleState;
use super::auth::{
    AuthError, Credential, NewSession, Principal, Role, SESSION_COOKIE, SESSION_FOR,
};
use super::error::{ApiError, ApiJson, ErrorBody};

/// The peer address of a connection, inserted into each request by the accept loop.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

/// The client address of a request (unspecified when the server did not say).
pub fn client_ip(peer: Option<Extension<PeerAddr>>) -> IpAddr {
    peer.map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |Extension(p)| p.0.ip())
}

/// The value of cookie `name`, if sent.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` of a new session: HttpOnly, Secure, SameSite=Strict.
pub fn session_cookie(token: &str) -> HeaderValue {
    let v = format!(
        "{SESSION_COOKIE}={token}; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        SESSION_FOR.as_secs()
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

/// Maps an auth failure to its answer.
pub fn auth_error(e: AuthError) -> ApiError {
    let (status, code) = match &e {
        AuthError::BadCredentials => (StatusCode::UNAUTHORIZED, "bad_credentials"),
        AuthError::Locked { .. } => (StatusCode::LOCKED, "locked"),
        AuthError::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
        AuthError::BadSetupToken => (StatusCode::FORBIDDEN, "bad_setup_token"),
        AuthError::WeakPassword | AuthError::BadName => (StatusCode::BAD_REQUEST, "bad_request"),
        AuthError::Journal(_) | AuthError::Hash(_) => return ApiError::internal(e),
    };
    ApiError::new(status, code, e.to_string())
}

/// `POST /api/v1/login` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
}

/// A session opened.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LoginResponse {
    /// User name.
    pub user: String,
    /// Role.
    pub role: Role,
    /// Send this in `X-CSRF-Token` with every state-changing request of this session.
    pub csrf: String,
}

/// Logs in: sets the session cookie and returns the CSRF token.
#[utoipa::path(post, path = "/api/v1/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 423, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn login(
    State(s): State<ConsoleState>,
    peer: Option<Extension<PeerAddr>>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Response, ApiError> {
    let ip = client_ip(peer);
    let session = do_login(&s, ip, &req.user, &req.password).await?;
    let body = LoginResponse {
        user: req.user,
        role: session.role,
        csrf: session.csrf.clone(),
    };
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&session.token));
    Ok(resp)
}

/// Login with audit events for both outcomes (shared by the API and the login page).
///
/// # Errors
/// The [`AuthError`] as an [`ApiError`].
pub async fn do_login(
    s: &ConsoleState,
    ip: IpAddr,
    user: &str,
    password: &str,
) -> Result<NewSession, ApiError> {
    match s.auth.login(ip, user, password).await {
        Ok(session) => {
            s.audit(
                "login",
                &format!("user:{user}"),
                serde_json::json!({ "client": ip.to_string() }),
            )
            .await;
            Ok(session)
        }
        Err(e) => {
            if !matches!(e, AuthError::RateLimited) {
                // The name as typed, bounded: it may be garbage, and it may be a password
                // typed into the wrong field, so only its first characters are kept.
                let typed: String = user.chars().take(32).collect();
                s.audit(
                    "login_failed",
                    &format!("user:{typed}"),
                    serde_json::json!({ "client": ip.to_string(), "reason": e.to_string() }),
                )
                .await;
            }
            Err(super::session::auth_error(e))
        }
    }
}

/// Ends this session.
#[utoipa::path(post, path = "/api/v1/logout", tag = "auth",
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)))]
pub async fn logout(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
) -> Result<Response, ApiError> {
    if let Credential::Session { token_hash, .. } = &p.credential {
        s.auth.logout(token_hash).await.map_err(auth_error)?;
        s.audit("logout", &p.actor(), serde_json::json!({})).await;
    }
    let mut resp = StatusCode::NO_CONTENT.into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "campusgw_session=; Path=/; HttpOnly; Secure; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(resp)
}

/// Who am I.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Me {
    /// User or token name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// The session's CSRF token (absent for API tokens).
    pub csrf: Option<String>,
}

/// The caller.
#[utoipa::path(get, path = "/api/v1/me", tag = "auth",
    responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(Extension(p): Extension<Principal>) -> axum::Json<Me> {
    let csrf = match p.credential {
        Credential::Session { csrf, .. } => Some(csrf),
        Credential::Token => None,
    };
    axum::Json(Me {
        name: p.name,
        role: p.role,
        csrf,
    })
}

/// `POST /api/v1/setup` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetupRequest {
    /// The content of `data_dir/setup-token`.
    pub token: String,
    /// The admin's name.
    pub user: String,
    /// The admin's password (at least 10 characters).
    pub password: String,
}

/// Creates the first admin with the one-time setup token.
#[utoipa::path(post, path = "/api/v1/setup", tag = "auth", request_body = SetupRequest,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn setup(
    State(s): State<ConsoleState>,
    peer: Option<Extension<PeerAddr>>,
    ApiJson(req): ApiJson<SetupRequest>,
) -> Result<StatusCode, ApiError> {
    let ip = client_ip(peer);
    s.auth
        .setup(ip, req.token.trim(), &req.user, &req.password)
        .await
        .map_err(auth_error)?;
    s.audit(
        "setup",
        &format!("user:{}", req.user),
        serde_json::json!({ "client": ip.to_string() }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/users` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// Login name (a-z, 0-9, `.`, `_`, `-`).
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    pub user: String,
    /// Password (at least 10 characters).
    #[schema(min_length = 10)]
    pub password: String,
    /// Role.
    pub role: Role,
}

/// Creates a user or sets its password and role (admin).
#[utoipa::path(post, path = "/api/v1/users", tag = "auth", request_body = NewUser,
    responses((status = 204), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
pub async fn create_user(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<NewUser>,
) -> Result<StatusCode, ApiError> {
    s.auth
        .set_password(&req.user, &req.password, req.role)
        .await
        .map_err(auth_error)?;
    s.audit(
        "user_set",
        &p.actor(),
        serde_json::json!({ "user": req.user, "role": req.role }),
    )
    .await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A unique name for the machine using it.
    #[schema(pattern = "^[a-z0-9._-]{1,64}$")]
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// A created API token, shown once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CreatedToken {
    /// The name.
    pub name: String,
    /// Send as `Authorization: Bearer TOKEN`; stored hashed, never shown again.
    pub token: String,
}

/// Creates an API token (admin).
#[utoipa::path(post, path = "/api/v1/tokens", tag = "auth", request_body = NewToken,
    responses((status = 201, body = CreatedToken), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_token(
    State(s): State<ConsoleState>,
    Extension(p): Extension<Principal>,
    ApiJson(req): ApiJson<NewToken>,
) -> Result<(StatusCode, axum::Json<CreatedToken>), ApiError> {
    let token = s
        .auth
        .create_token(&req.name, req.role, &p.actor())
        .await
        .map_err(|e| match e {
            AuthError::Journal(j) if j.to_string().contains("UNIQUE") => ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("a token named {:?} exists", req.name),
            ),
            e => auth_error(e),
        })?;
    s.audit(
        "token_created",
        &p.actor(),
        serde_json::json!({ "name": req.name, "role": req.role }),
    )
    .await;
    Ok((
        StatusCode::CREATED,
        axum::Json(CreatedToken {
            name: req.name,
            token,
        }),
    ))
}
