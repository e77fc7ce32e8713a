//! The authorization table: every route of the console's route table (the router is built
//! from it and nothing else) × anonymous and each role. A new route cannot be forgotten:
//! it is in the table, so it is in this test.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use campusgw::console::auth::Role;
use campusgw::console::{Access, Face, ROUTES};
use console_support::Rig;

#[derive(Debug, Clone, Copy)]
enum Caller {
    Anonymous,
    Token(Role),
}

async fn call(
    rig: &Rig,
    method: &axum::http::Method,
    path: &str,
    bearer: Option<&str>,
) -> (u16, String, Option<String>) {
    let m = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
    let mut req = rig.http.request(m.clone(), rig.url(path));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    if m == reqwest::Method::POST {
        req = req.header("content-type", "application/json").body("{}");
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    let is_stream = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap_or("").starts_with("text/event-stream"));
    let body = if is_stream {
        String::new()
    } else {
        r.text().await.unwrap_or_default()
    };
    (status, body, location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_anonymous_callers_and_each_role_as_its_access_rule_says() {
    let rig = Rig::start().await;
    let mut tokens = Vec::new();
    for role in Role::ALL {
        tokens.push((role, rig.token(&format!("t-{}", role.as_str()), role).await));
    }
    let mut failures = Vec::new();
    let mut checked = 0;
    for spec in ROUTES {
        let path = spec.example_path("x");
        let mut callers = vec![(Caller::Anonymous, None)];
        callers.extend(
            tokens
                .iter()
                .map(|(r, t)| (Caller::Token(*r), Some(t.as_str()))),
        );
        for (caller, bearer) in callers {
            let (status, body, location) = call(&rig, &spec.method, &path, bearer).await;
            checked += 1;
            let row = format!(
                "{} {} as {caller:?}: {status} {body:.120}",
                spec.method, spec.path
            );
            if status >= 500 {
                failures.push(format!("{row} (a 5xx)"));
                continue;
            }
            match (spec.access, caller) {
                (Access::Public, _) => {
                    if status == 401 || status == 403 {
                        failures.push(format!("{row} (public route refused)"));
                    }
                }
                (Access::Login(_), Caller::Anonymous) => match spec.face {
                    Face::Api => {
                        let json: serde_json::Value =
                            serde_json::from_str(&body).unwrap_or_default();
                        if status != 401 || json["error"] != "unauthorized" {
                            failures.push(format!("{row} (want 401 JSON)"));
                        }
                    }
                    Face::Page => {
                        if status != 303 || location.as_deref() != Some("/login") {
                            failures.push(format!("{row} (want a redirect to /login)"));
                        }
                    }
                },
                (Access::Login(min), Caller::Token(role)) if role < min => {
                    if status != 403 {
                        failures.push(format!("{row} (want 403 below {min:?})"));
                    }
                }
                (Access::Login(_), Caller::Token(_)) => {
                    if status == 401 || status == 403 {
                        failures.push(format!("{row} (allowed role refused)"));
                    }
                }
            }
        }
    }
    assert_eq!(checked, ROUTES.len() * 4);
    assert!(
        failures.is_empty(),
        "{} of {checked} calls wrong:\n{}",
        failures.len(),
        failures.join("\n")
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_answer_anonymous_callers_401_or_the_login_page_and_users_404() {
    let rig = Rig::start().await;
    let token = rig.token("t-viewer", Role::Viewer).await;
    for path in [
        "/api/v1/nope",
        "/api/v2/events",
        "/api/v1/events/1/../../../etc/passwd",
    ] {
        let (status, body, _) = call(&rig, &axum::http::Method::GET, path, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        let (status, body, _) = call(&rig, &axum::http::Method::GET, path, Some(&token)).await;
        assert!(status == 404 || status == 400, "{path}: {status} {body}");
        assert!(body.contains("\"error\""), "{path}: {body}");
    }
    let (status, _, location) = call(&rig, &axum::http::Method::GET, "/nope", None).await;
    assert_eq!((status, location.as_deref()), (303, Some("/login")));
    rig.stop().await;
}

#[test]
fn the_openapi_document_describes_every_api_route_of_the_table() {
    let doc = campusgw::console::openapi::json();
    let paths = doc["paths"].as_object().unwrap();
    let mut missing = Vec::new();
    for spec in ROUTES
        .iter()
        .filter(|r| r.face == Face::Api && r.path != "/api/v1/openapi.json")
    {
        let method = spec.method.as_str().to_lowercase();
        if paths.get(spec.path).and_then(|p| p.get(&method)).is_none() {
            missing.push(format!("{} {}", spec.method, spec.path));
        }
    }
    assert!(missing.is_empty(), "not in openapi.json: {missing:?}");
}
