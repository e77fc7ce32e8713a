//! The OpenAPI document of `/api/v1`, generated from the handlers' annotations (utoipa).
//! Readable without login: it describes the routes and holds no data.

use axum::response::IntoResponse;
use utoipa::OpenApi;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "campusgw console API", description = "Events, devices, uplinks, rules, alarms and commands of one campusgw gateway. Log in (POST /api/v1/login: session cookie + X-CSRF-Token on every state-changing request) or send an API token (Authorization: Bearer)."),
    paths(
        super::session::login, super::session::logout, super::session::setup, super::session::me,
        super::session::create_user, super::session::create_token,
        super::events::list, super::events::one, super::stream::sse,
        super::devices::list, super::uplinks::list, super::uplinks::deliveries, super::uplinks::duty_check,
        super::rules::list, super::rules::enable, super::rules::disable,
        super::modes::list, super::modes::set_maintenance, super::modes::clear_maintenance,
        super::modes::set_drill, super::modes::clear_drill,
        super::alarms::list, super::alarms::one, super::alarms::acknowledge, super::alarms::resolve,
        super::commands::send, super::access::muster, super::access::state,
        super::import::preview, super::import::apply,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("session" = [])),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        // Every JSON body may also be too large (413) or not JSON (415).
        for (path, item) in &mut doc.paths.paths {
            // The import upload is a file, answered by its own 413 / 415.
            let upload = path == "/api/v1/import/preview";
            for op in [&mut item.post, &mut item.put, &mut item.patch]
                .into_iter()
                .flatten()
            {
                if op.request_body.is_some() && !upload {
                    for (code, what) in [
                        ("413", "body larger than 64 KiB"),
                        ("415", "body not application/json"),
                    ] {
                        op.responses.responses.insert(
                            code.to_owned(),
                            utoipa::openapi::RefOr::T(utoipa::openapi::Response::new(what)),
                        );
                    }
                }
            }
        }
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        c.add_security_scheme(
            "session",
            SecurityScheme::ApiKey(ApiKey::Cookie(ApiKeyValue::new(
                super::auth::SESSION_COOKIE,
            ))),
        );
    }
}

/// The document as JSON.
pub fn json() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).unwrap_or_default()
}

/// `GET /api/v1/openapi.json`.
pub async fn document() -> impl IntoResponse {
    axum::Json(json())
}
