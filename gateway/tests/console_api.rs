//! The console API against a real gateway on loopback: event filters and cursor paging,
//! bad input answered with a 4xx JSON error, CSRF on session requests, login lockout and
//! rate limit, API tokens hashed at rest, the setup token, confirmation of lockdown, the
//! live stream resuming by Last-Event-ID, and operator actions journaled as audit events.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::collections::BTreeSet;
use std::time::Duration;

use campusgw::console::auth::Role;
use campusgw_sdk::Class;
use console_support::{PASSWORD, Rig, event};
use serde_json::{Value, json};

async fn get_json(rig: &Rig, token: &str, path: &str) -> (u16, Value) {
    let r = rig
        .http
        .get(rig.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_filters_match_exactly_and_cursor_paging_returns_each_event_once() {
    let rig = Rig::start().await;
    let token = rig.token("reader", Role::Viewer).await;
    let mut batch = Vec::new();
    for i in 0..40 {
        let (kind, class) = match i % 4 {
            0 => ("fire.alarm", Class::LifeSafety),
            1 => ("fire.fault", Class::Security),
            2 => ("sensor.reading", Class::Telemetry),
            _ => ("door.forced", Class::Security),
        };
        let building = if i % 3 == 0 { "A" } else { "B" };
        batch.push(event(kind, class, &format!("dev{}", i % 5), building, "2"));
    }
    let all = rig.append(batch).await;
    let fire_in_a: BTreeSet<u64> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 < 2 && i % 3 == 0)
        .map(|(_, s)| *s)
        .collect();
    // kind family and building: pages of 3, newest first, continued by `next`.
    let mut got = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let q = match cursor {
            Some(c) => format!("/api/v1/events?kind=fire.*&building=A&limit=3&before={c}"),
            None => "/api/v1/events?kind=fire.*&building=A&limit=3".to_owned(),
        };
        let (status, page) = get_json(&rig, &token, &q).await;
        assert_eq!(status, 200, "{page}");
        got.extend(seqs(&page));
        match page["next"].as_u64() {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    let mut sorted = got.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(got, sorted, "newest first");
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), fire_in_a);
    assert_eq!(got.len(), fire_in_a.len(), "no event twice");
    // class and device; `after` reads oldest first.
    let (_, page) = get_json(
        &rig,
        &token,
        "/api/v1/events?class=life_safety&device=dev0&after=0&limit=500",
    )
    .await;
    let want: Vec<u64> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 4 == 0 && i % 5 == 0)
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(seqs(&page), want);
    for e in page["events"].as_array().unwrap() {
        assert_eq!(e["class"], "life_safety");
        assert_eq!(e["source"]["device"], "dev0");
    }
    // time window: nothing received before the epoch's first second.
    let (_, page) = get_json(&rig, &token, "/api/v1/events?until=1970-01-01T00:00:01Z").await;
    assert!(seqs(&page).is_empty());
    let (_, one) = get_json(&rig, &token, &format!("/api/v1/events/{}", all[7])).await;
    assert_eq!(one["seq"].as_u64(), Some(all[7]));
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_4xx_with_a_json_message_and_never_a_5xx() {
    let rig = Rig::start().await;
    let admin = rig.token("root", Role::Admin).await;
    let big = format!(
        "{{\"user\": \"{}\", \"password\": \"x\"}}",
        "a".repeat(100 * 1024)
    );
    let cases: Vec<(&str, &str, Option<String>, u16, &str)> = vec![
        ("POST", "/api/v1/login", Some(big), 413, "too_large"),
        (
            "POST",
            "/api/v1/login",
            Some("{\"user\": ".into()),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/v1/login",
            Some("[1,2]".into()),
            400,
            "bad_json",
        ),
        (
            "POST",
            "/api/v1/login",
            Some("{\"user\":\"a\",\"password\":\"b\",\"admin\":true}".into()),
            400,
            "unknown field `admin`",
        ),
        (
            "POST",
            "/api/v1/commands",
            Some("{\"action\":\"self_destruct\",\"target\":\"all\"}".into()),
            400,
            "unknown variant",
        ),
        (
            "POST",
            "/api/v1/users",
            Some(
                "{\"user\":\"Bob Smith\",\"password\":\"long enough pw\",\"role\":\"viewer\"}"
                    .into(),
            ),
            400,
            "user name",
        ),
        (
            "POST",
            "/api/v1/users",
            Some("{\"user\":\"bob\",\"password\":\"short\",\"role\":\"viewer\"}".into()),
            400,
            "at least 10",
        ),
        (
            "POST",
            "/api/v1/tokens",
            Some("{\"name\":\"m\",\"role\":\"root\"}".into()),
            400,
            "unknown variant",
        ),
        ("GET", "/api/v1/events?class=fire", None, 400, "class"),
        ("GET", "/api/v1/events?limit=0", None, 400, "limit"),
        (
            "GET",
            "/api/v1/events?limit=99999999999",
            None,
            400,
            "limit",
        ),
        (
            "GET",
            "/api/v1/events?colour=red",
            None,
            400,
            "unknown field `colour`",
        ),
        (
            "GET",
            "/api/v1/events?before=9223372036854775808",
            None,
            400,
            "beyond any seq",
        ),
        ("GET", "/api/v1/events?since=yesterday", None, 400, "since"),
        ("GET", "/api/v1/events/-1", None, 400, "bad_request"),
        (
            "GET",
            "/api/v1/events/..%2F..%2Fetc%2Fpasswd",
            None,
            400,
            "bad_request",
        ),
        ("GET", "/api/v1/events/99999999", None, 404, "not_found"),
        (
            "GET",
            "/api/v1/stream?classes=fire",
            None,
            400,
            "unknown class",
        ),
        (
            "GET",
            "/assets/..%2F..%2FCargo.toml",
            None,
            404,
            "not_found",
        ),
    ];
    for (method, path, body, want, needle) in cases {
        let mut req = rig
            .http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                rig.url(path),
            )
            .bearer_auth(&admin);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(status, want, "{method} {path}: {text}");
        let json: Value = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {text}"));
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{text}"
        );
        assert!(
            text.contains(needle),
            "{method} {path}: {text} lacks {needle:?}"
        );
    }
    // A body that is not JSON at all, by content type.
    let r = rig
        .http
        .post(rig.url("/api/v1/login"))
        .header("content-type", "text/plain")
        .body("user=a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_cookie_is_strict_and_its_state_changing_requests_need_the_csrf_token() {
    let rig = Rig::start().await;
    rig.user("guard", Role::Operator).await;
    let r = rig
        .http
        .post(rig.url("/api/v1/login"))
        .json(&json!({ "user": "guard", "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "{set} lacks {attr}");
    }
    let (cookie, csrf) = rig.login("guard").await;
    // Reading needs no CSRF token.
    let r = rig
        .http
        .get(rig.url("/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = json!({ "action": "broadcast", "target": { "scope": "all" }, "args": { "message": "drill" } });
    for bad in [None, Some("wrong"), Some("")] {
        let mut req = rig
            .http
            .post(rig.url("/api/v1/commands"))
            .header("cookie", &cookie)
            .json(&body);
        if let Some(b) = bad {
            req = req.header("x-csrf-token", b);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403, "csrf {bad:?}");
        assert!(r.text().await.unwrap().contains("X-CSRF-Token"));
    }
    assert!(
        rig.journaled("audit.command").is_empty(),
        "a refused request did nothing"
    );
    let r = rig
        .http
        .post(rig.url("/api/v1/commands"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    // Logout ends the session: the same cookie is anonymous afterwards.
    let r = rig
        .http
        .post(rig.url("/api/v1/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = rig
        .http
        .get(rig.url("/api/v1/me"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    rig.stop().await;
}

async fn login_status(rig: &Rig, user: &str, password: &str) -> u16 {
    rig.http
        .post(rig.url("/api/v1/login"))
        .json(&json!({ "user": user, "password": password }))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_wrong_passwords_lock_the_user_even_against_the_right_one() {
    let rig = Rig::start().await;
    rig.user("guard", Role::Operator).await;
    rig.user("other", Role::Operator).await;
    for _ in 0..5 {
        assert_eq!(login_status(&rig, "guard", "wrong password!").await, 401);
    }
    assert_eq!(login_status(&rig, "guard", PASSWORD).await, 423, "locked");
    assert_eq!(
        login_status(&rig, "other", PASSWORD).await,
        200,
        "only that user is locked"
    );
    assert_eq!(
        login_status(&rig, "nobody", PASSWORD).await,
        401,
        "unknown users answer like wrong passwords"
    );
    // A new password set by an admin unlocks.
    rig.user("guard", Role::Operator).await;
    assert_eq!(login_status(&rig, "guard", PASSWORD).await, 200);
    let failed = rig.journaled("audit.login_failed");
    assert_eq!(
        failed.len(),
        7,
        "every failure is audited: 5 wrong, 1 locked, 1 unknown"
    );
    assert!(
        !serde_json::to_string(&failed)
            .unwrap()
            .contains("wrong password!"),
        "passwords are never journaled"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_ten_login_attempts_a_minute_from_one_address_are_refused_429() {
    let rig = Rig::start().await;
    rig.user("guard", Role::Operator).await;
    let mut statuses = Vec::new();
    for i in 0..11 {
        statuses.push(login_status(&rig, &format!("u{i}"), "whatever pw").await);
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(statuses[10], 429);
    assert_eq!(
        login_status(&rig, "guard", PASSWORD).await,
        429,
        "even the right password waits"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_work_as_bearer_and_are_stored_only_as_hashes() {
    let rig = Rig::start().await;
    let admin = rig.token("root", Role::Admin).await;
    let r = rig
        .http
        .post(rig.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "county-dashboard", "role": "viewer" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let created: Value = r.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let (status, me) = get_json(&rig, &token, "/api/v1/me").await;
    assert_eq!((status, me["role"].as_str()), (200, Some("viewer")));
    assert_eq!(get_json(&rig, "not-a-token", "/api/v1/me").await.0, 401);
    let r = rig
        .http
        .post(rig.url("/api/v1/tokens"))
        .bearer_auth(&admin)
        .json(&json!({ "name": "county-dashboard", "role": "admin" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "names are unique");
    let db = std::fs::read(rig.dir.path().join("journal.db")).unwrap();
    let wal = std::fs::read(rig.dir.path().join("journal.db-wal")).unwrap_or_default();
    for bytes in [&db, &wal] {
        assert!(
            !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
            "token stored in clear"
        );
    }
    assert_eq!(rig.journaled("audit.token_created").len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_setup_token_is_in_a_private_file_and_creates_the_first_admin_once() {
    use std::os::unix::fs::PermissionsExt as _;
    let rig = Rig::start().await;
    let file = rig.dir.path().join("setup-token");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let token = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    let setup = |t: String| {
        rig.http
            .post(rig.url("/api/v1/setup"))
            .json(&json!({ "token": t, "user": "principal", "password": PASSWORD }))
            .send()
    };
    assert_eq!(setup("guess".into()).await.unwrap().status(), 403);
    assert_eq!(setup(token.clone()).await.unwrap().status(), 204);
    assert!(!file.exists(), "spent: the file is gone");
    assert_eq!(setup(token).await.unwrap().status(), 403, "only once");
    assert_eq!(login_status(&rig, "principal", PASSWORD).await, 200);
    let (cookie, _) = rig.login("principal").await;
    let r = rig
        .http
        .get(rig.url("/api/v1/me"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["role"], "admin");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockdown_runs_only_after_a_second_call_with_its_single_use_confirm_token() {
    let rig = Rig::start().await;
    let op = rig.token("desk", Role::Operator).await;
    let other = rig.token("desk2", Role::Operator).await;
    let viewer = rig.token("wall", Role::Viewer).await;
    let send = |token: String, body: Value| {
        rig.http
            .post(rig.url("/api/v1/commands"))
            .bearer_auth(token)
            .json(&body)
            .send()
    };
    let lockdown = json!({ "action": "lockdown", "target": { "scope": "building:A" } });
    assert_eq!(send(viewer, lockdown.clone()).await.unwrap().status(), 403);
    let r = send(op.clone(), lockdown.clone()).await.unwrap();
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let confirm = first["confirm"].as_str().unwrap().to_owned();
    assert!(rig.journaled("audit.command").is_empty(), "nothing ran yet");
    let mut confirmed = lockdown.clone();
    confirmed["confirm"] = json!(confirm);
    let mut elsewhere = confirmed.clone();
    elsewhere["target"] = json!({ "scope": "all" });
    assert_eq!(
        send(op.clone(), elsewhere).await.unwrap().status(),
        409,
        "bound to the target"
    );
    // The failed redemption spent the token; a fresh one for the real run.
    let r = send(op.clone(), lockdown.clone()).await.unwrap();
    let confirm: String = r.json::<Value>().await.unwrap()["confirm"]
        .as_str()
        .unwrap()
        .to_owned();
    confirmed["confirm"] = json!(confirm);
    assert_eq!(
        send(other, confirmed.clone()).await.unwrap().status(),
        409,
        "bound to the caller"
    );
    let r = send(op.clone(), lockdown.clone()).await.unwrap();
    confirmed["confirm"] = json!(
        r.json::<Value>().await.unwrap()["confirm"]
            .as_str()
            .unwrap()
    );
    let r = send(op.clone(), confirmed.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    let outcome: Value = r.json().await.unwrap();
    assert!(outcome["results"].as_array().is_some());
    assert_eq!(
        send(op.clone(), confirmed).await.unwrap().status(),
        409,
        "single use"
    );
    let audit = rig.journaled("audit.command");
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].payload["by"], "token:desk");
    assert_eq!(audit[0].payload["command"]["kind"], "door.lock");
    // Unlocking one door needs no confirmation; every door of a scope does.
    let one = json!({ "action": "door_unlock", "target": { "device": "door_a1" } });
    assert_eq!(send(op.clone(), one).await.unwrap().status(), 200);
    let all = json!({ "action": "door_unlock", "target": { "scope": "all" } });
    assert_eq!(send(op, all).await.unwrap().status(), 202);
    rig.stop().await;
}

/// Reads SSE frames until `n` events arrived; returns their ids.
async fn sse_ids(rig: &Rig, token: &str, last_id: Option<u64>, n: usize) -> Vec<u64> {
    let mut req = rig.http.get(rig.url("/api/v1/stream")).bearer_auth(token);
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    let mut text = String::new();
    let mut ids = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while ids.len() < n {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("stream stalled")
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                ids.push(id.trim().parse().unwrap());
            }
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_stream_resumes_after_last_event_id_with_every_later_event_in_order() {
    let rig = Rig::start().await;
    let token = rig.token("wall", Role::Viewer).await;
    let first = rig
        .append(
            (0..20)
                .map(|i| {
                    event(
                        "sensor.reading",
                        Class::Telemetry,
                        &format!("m{i}"),
                        "A",
                        "1",
                    )
                })
                .collect(),
        )
        .await;
    let resume = first[4];
    // Events already journaled after the resume point, then more while streaming.
    let stream = sse_ids(&rig, &token, Some(resume), 15 + 300);
    let feeder = async {
        for _ in 0..30 {
            rig.append(
                (0..10)
                    .map(|_| event("fire.alarm", Class::LifeSafety, "uitd", "A", "2"))
                    .collect(),
            )
            .await;
        }
    };
    let (ids, ()) = tokio::join!(stream, feeder);
    let want: Vec<u64> = (resume + 1..resume + 1 + 315).collect();
    assert_eq!(
        ids, want,
        "every event after Last-Event-ID, once, in seq order"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_logouts_and_operator_actions_are_journaled_as_audit_events_naming_who() {
    let rig = Rig::start().await;
    rig.user("guard", Role::Operator).await;
    let (cookie, csrf) = rig.login("guard").await;
    let r = rig
        .http
        .post(rig.url("/api/v1/commands"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&json!({ "action": "broadcast", "target": { "scope": "building:A" }, "args": { "message": "evacuate" } }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    rig.http
        .post(rig.url("/api/v1/logout"))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .send()
        .await
        .unwrap();
    for (kind, by) in [
        ("audit.login", "user:guard"),
        ("audit.command", "user:guard"),
        ("audit.logout", "user:guard"),
    ] {
        let found = rig.journaled(kind);
        assert_eq!(found.len(), 1, "{kind}");
        assert_eq!(found[0].payload["by"], by, "{kind}");
        assert_eq!(found[0].class, Class::Operations);
        assert_eq!(found[0].source.device.as_str(), "school-1");
    }
    // The command's device results are journaled too (no device matches here: rejected).
    assert!(!rig.journaled("command.result").is_empty());
    rig.stop().await;
}

async fn alarms(rig: &Rig, token: &str) -> Vec<Value> {
    let (status, page) = get_json(rig, token, "/api/v1/alarms").await;
    assert_eq!(status, 200, "{page}");
    page["alarms"].as_array().cloned().unwrap_or_default()
}

async fn wait_alarm(rig: &Rig, token: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(a) = alarms(rig, token).await.into_iter().find(&pred) {
            return a;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_acknowledges_and_resolves_an_alarm_with_notes_seen_in_its_timeline() {
    let rig = Rig::start_with_rules(console_support::FIRE_RULE).await;
    let op = rig.token("desk", Role::Operator).await;
    let viewer = rig.token("wall", Role::Viewer).await;
    rig.append(vec![event(
        "fire.alarm",
        Class::LifeSafety,
        "uitd_a",
        "A",
        "3",
    )])
    .await;
    let raised = wait_alarm(&rig, &viewer, "the alarm", |a| a["state"] == "raised").await;
    let id = raised["id"].as_str().unwrap().to_owned();
    assert_eq!(
        (raised["building"].as_str(), raised["floor"].as_str()),
        (Some("A"), Some("3"))
    );
    let path = |what: &str| rig.url(&format!("/api/v1/alarms/{}/{what}", id.replace(':', "%3A")));
    let r = rig
        .http
        .post(path("acknowledge"))
        .bearer_auth(&viewer)
        .json(&json!({ "note": "x" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "viewers only look");
    let r = rig
        .http
        .post(path("acknowledge"))
        .bearer_auth(&op)
        .json(&json!({ "note": "guard on the way" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let acked = wait_alarm(&rig, &viewer, "the acknowledgement", |a| {
        a["state"] == "acknowledged"
    })
    .await;
    assert_eq!(acked["alarm"]["acknowledged"][0], "token:desk");
    assert_eq!(acked["alarm"]["acknowledged"][2], "guard on the way");
    let r = rig
        .http
        .post(path("resolve"))
        .bearer_auth(&op)
        .json(&json!({ "note": "false alarm: dust" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    wait_alarm(&rig, &viewer, "the resolution", |a| {
        a["state"] == "resolved"
    })
    .await;
    let r = rig
        .http
        .post(path("resolve"))
        .bearer_auth(&op)
        .json(&json!({ "note": "again" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "resolved is final");
    let (status, detail) = get_json(
        &rig,
        &viewer,
        &format!("/api/v1/alarms/{}", id.replace(':', "%3A")),
    )
    .await;
    assert_eq!(status, 200);
    let steps: Vec<&str> = detail["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["raised", "acknowledged", "resolved"]);
    // The operator's input is journaled (event sourcing), naming who.
    let acks = rig.journaled("alarm.acknowledge");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0].payload["by"], "token:desk");
    let r = rig
        .http
        .post(rig.url("/api/v1/alarms/nope/acknowledge"))
        .bearer_auth(&op)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // The detail page renders the timeline.
    let (cookie, _) = {
        rig.user("guard", Role::Viewer).await;
        rig.login("guard").await
    };
    let html = rig
        .http
        .get(rig.url(&format!("/alarms/{}", id.replace(':', "%3A"))))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html.contains("false alarm: dust") || html.contains("guard on the way"),
        "{html}"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_are_listed_from_the_rules_directory_and_switched_by_journaled_events() {
    let rig = Rig::start_with_rules(console_support::FIRE_RULE).await;
    let admin = rig.token("root", Role::Admin).await;
    let (_, rules) = get_json(&rig, &admin, "/api/v1/rules").await;
    assert_eq!(rules[0]["id"], "fire_alarm");
    assert_eq!(rules[0]["enabled"], true);
    let r = rig
        .http
        .post(rig.url("/api/v1/rules/fire_alarm/disable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (_, rules) = get_json(&rig, &admin, "/api/v1/rules").await;
    assert_eq!(rules[0]["enabled"], false);
    let ev = rig.journaled("rule.disable");
    assert_eq!(ev.len(), 1);
    assert_eq!(
        (ev[0].payload["rule"].as_str(), ev[0].payload["by"].as_str()),
        (Some("fire_alarm"), Some("token:root"))
    );
    let r = rig
        .http
        .post(rig.url("/api/v1/rules/no_such/enable"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_and_drills_are_set_listed_and_cleared_by_journaled_events_naming_who() {
    let rig = Rig::start_with_rules(console_support::FIRE_RULE).await;
    let op = rig.token("guard", Role::Operator).await;
    let viewer = rig.token("head", Role::Viewer).await;
    let post = |path: &'static str, token: String, body: Value| {
        let req = rig.http.post(rig.url(path)).bearer_auth(token).json(&body);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    let until = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    let body = json!({"scope": "building:A", "until": until, "reason": "detector swap"});
    assert_eq!(
        post("/api/v1/maintenance", viewer.clone(), body.clone()).await,
        403
    );
    assert_eq!(post("/api/v1/maintenance", op.clone(), body).await, 202);
    let drill = json!({"building": "B", "until": until});
    assert_eq!(post("/api/v1/drill", op.clone(), drill).await, 202);

    let (status, modes) = get_json(&rig, &viewer, "/api/v1/modes").await;
    assert_eq!(status, 200);
    assert_eq!(modes["maintenance"][0]["scope"], "building:A", "{modes}");
    assert_eq!(modes["maintenance"][0]["by"], "token:guard", "{modes}");
    assert_eq!(
        modes["maintenance"][0]["reason"], "detector swap",
        "{modes}"
    );
    assert_eq!(modes["drills"][0]["building"], "B", "{modes}");
    let set = rig.journaled("maintenance.set");
    assert_eq!(set.len(), 1);
    assert_eq!(set[0].payload["by"].as_str(), Some("token:guard"));
    assert_eq!(set[0].class, Class::Operations);

    // Refused: a scope the engine would not read, a past or over-long hold, no reason.
    let past = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let long = (chrono::Utc::now() + chrono::Duration::days(8)).to_rfc3339();
    for (bad, status) in [
        (
            json!({"scope": "hall A", "until": until, "reason": "x"}),
            400,
        ),
        (
            json!({"scope": "building:A", "until": until, "reason": " "}),
            400,
        ),
        (
            json!({"scope": "building:A", "until": past, "reason": "x"}),
            409,
        ),
        (
            json!({"scope": "building:A", "until": long, "reason": "x"}),
            409,
        ),
    ] {
        let got = post("/api/v1/maintenance", op.clone(), bad.clone()).await;
        assert_eq!(got, status, "{bad}");
    }
    assert_eq!(rig.journaled("maintenance.set").len(), 1);

    let clear = json!({"scope": "building:A"});
    assert_eq!(
        post("/api/v1/maintenance/clear", op.clone(), clear).await,
        202
    );
    assert_eq!(
        post("/api/v1/drill/clear", op.clone(), json!({"building": "B"})).await,
        202
    );
    let (_, modes) = get_json(&rig, &viewer, "/api/v1/modes").await;
    assert_eq!(modes, json!({"maintenance": [], "drills": []}));
    let cleared = rig.journaled("maintenance.clear");
    assert_eq!(cleared[0].payload["by"].as_str(), Some("token:guard"));
    rig.stop().await;
}
