//! Bulk import through the console API (issue 12 item 4): `POST /api/v1/import/preview`
//! and `/apply` against a live gateway and its config file: admin only, CSRF for
//! sessions, a single-use id, 413 for an oversized upload, 409 when the file changed since
//! the preview, the config rewritten with a backup, `audit.import` journaled.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use campusgw::console::auth::Role;
use console_support::Rig;
use sha2::Digest as _;

const EXTRA: &str = r#"
[[campus]]
id = "main"
[[campus.building]]
id = "A"
[[campus.building.floor]]
id = "1"
zones = ["east"]

[[device]]
id = "zk_push"
driver = "zkteco_push"
location = "main"
listen = "127.0.0.1:0"
[[device.controllers]]
sn = "ZK00001"
device = "zk_gate"
location = "main/A"
"#;

const DOORS: &str = "控制器,门号,门名称,楼栋,楼层,区域,疏散通道,边界\n\
                     zk_gate,1,南门,A,1,east,是,校园\n\
                     ZK00001,2,北门,A,1,east,否,\n";

/// Who calls: a session (cookie + csrf, csrf sent or not) or a token.
enum Caller<'a> {
    Session {
        cookie: &'a str,
        csrf: Option<&'a str>,
    },
    Token(&'a str),
}

async fn post(
    rig: &Rig,
    path: &str,
    who: &Caller<'_>,
    ctype: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let mut req = rig
        .http
        .post(rig.url(path))
        .header("content-type", ctype)
        .body(body);
    req = match who {
        Caller::Session { cookie, csrf } => {
            let r = req.header("cookie", *cookie);
            match csrf {
                Some(c) => r.header("x-csrf-token", *c),
                None => r,
            }
        }
        Caller::Token(t) => req.bearer_auth(t),
    };
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

/// `POST /api/v1/import/preview` announcing one byte over the limit and sending no body:
/// the status and the JSON answer.
async fn oversized_preview(rig: &Rig, token: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = rig.url("");
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /api/v1/import/preview HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        campusgw::console::import::MAX_IMPORT_BYTES + 1
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = conn.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(usize::MAX);
                if got.len() >= end + 4 + length {
                    break;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "no answer to the headers within 30 s: {:?}",
        String::from_utf8_lossy(&got)
    );
    let text = String::from_utf8_lossy(&got).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, json)
}

async fn preview(rig: &Rig, who: &Caller<'_>, csv: &str) -> (u16, serde_json::Value) {
    post(
        rig,
        "/api/v1/import/preview?name=doors.csv",
        who,
        "text/csv",
        csv.as_bytes().to_vec(),
    )
    .await
}

async fn apply(rig: &Rig, who: &Caller<'_>, id: &str) -> (u16, serde_json::Value) {
    let body = serde_json::to_vec(&serde_json::json!({ "id": id })).unwrap();
    post(rig, "/api/v1/import/apply", who, "application/json", body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_previews_and_applies_a_door_table_once_and_the_apply_is_audited() {
    let rig = Rig::start_with(EXTRA).await;
    rig.user("admin", Role::Admin).await;
    let (cookie, csrf) = rig.login("admin").await;
    let me = Caller::Session {
        cookie: &cookie,
        csrf: Some(&csrf),
    };
    let config = rig.dir.path().join("gateway.toml");
    let before = std::fs::read_to_string(&config).unwrap();

    let (status, p) = preview(&rig, &me, DOORS).await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(p["table"], "doors");
    assert_eq!(p["rows"], 2);
    assert_eq!(p["errors"], serde_json::json!([]));
    assert_eq!(
        p["diff"]["added"],
        serde_json::json!(["zk_gate door 1", "zk_gate door 2"])
    );
    let sha: String = sha2::Sha256::digest(DOORS.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(p["file_sha256"], sha.as_str());
    let id = p["id"]
        .as_str()
        .expect("a clean preview has an id")
        .to_owned();
    assert_eq!(
        std::fs::read_to_string(&config).unwrap(),
        before,
        "a preview writes nothing"
    );

    // The apply changes state: a session without the csrf token is refused.
    let no_csrf = Caller::Session {
        cookie: &cookie,
        csrf: None,
    };
    let (status, body) = apply(&rig, &no_csrf, &id).await;
    assert_eq!(status, 403, "{body}");

    let (status, a) = apply(&rig, &me, &id).await;
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["restart_required"], true);
    assert_eq!(
        (a["rows"].as_u64(), a["added"].as_u64()),
        (Some(2), Some(2))
    );
    assert!(a["message"].as_str().unwrap().contains("restart"), "{a}");
    // The config now has the doors and passes the check; the old text is the backup.
    let cfg = campusgw::config::load(&config).expect("the written config is valid");
    assert_eq!(cfg.devices.len(), 1);
    let written: toml::Table = toml::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    let doors = written["device"][0]["controllers"][0]["doors"]
        .as_array()
        .unwrap();
    assert_eq!(doors.len(), 2);
    assert_eq!(doors[0]["device"].as_str(), Some("zk_gate_door1"));
    assert_eq!(doors[0]["boundary"].as_str(), Some("campus"));
    assert_eq!(doors[1]["escape_route"].as_bool(), Some(false));
    let backup = std::path::PathBuf::from(a["backup"].as_str().unwrap());
    assert_eq!(std::fs::read_to_string(&backup).unwrap(), before);

    // Journaled, durable, before the answer: who, the file's hash, the counts.
    let audit = rig.journaled("audit.import");
    assert_eq!(audit.len(), 1);
    let payload = &audit[0].payload;
    assert_eq!(payload["by"], "user:admin");
    assert_eq!(payload["detail"]["file_sha256"], sha.as_str());
    assert_eq!(payload["detail"]["table"], "doors");
    assert_eq!(payload["detail"]["rows"], 2);
    assert_eq!(payload["detail"]["added"], 2);
    assert_eq!(audit[0].seq, a["audit_seq"].as_u64().unwrap());

    // Single use: the same id again is gone.
    let (status, body) = apply(&rig, &me, &id).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(rig.journaled("audit.import").len(), 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_and_apply_refuse_other_roles_oversized_files_stale_ids_and_a_changed_config() {
    let rig = Rig::start_with(EXTRA).await;
    let admin = rig.token("admin-token", Role::Admin).await;
    let other_admin = rig.token("other-admin", Role::Admin).await;
    let operator = rig.token("operator-token", Role::Operator).await;
    let viewer = rig.token("viewer-token", Role::Viewer).await;
    let me = Caller::Token(&admin);

    // Roles below admin: 403 with a JSON error, on both routes.
    for t in [&operator, &viewer] {
        let (status, body) = preview(&rig, &Caller::Token(t), DOORS).await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
        let (status, body) = apply(&rig, &Caller::Token(t), "x").await;
        assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    }

    // Larger than the limit: 413 with a JSON error, whatever the content, answered from the
    // headers before any of the body is read. Over a raw connection that sends only the
    // headers: a client still writing 8 MiB when the answer comes and the server closes
    // gets a broken pipe instead of the answer (reqwest did, in one full run of five).
    let (status, body) = oversized_preview(&rig, &admin).await;
    assert_eq!((status, body["error"].as_str()), (413, Some("too_large")));

    // Not a table: a preview with that one problem (row 0: the file as a whole), no id; a
    // table with problems: each by row and column, no id.
    let (status, body) = post(
        &rig,
        "/api/v1/import/preview?name=x.xlsx",
        &me,
        "application/octet-stream",
        b"PK\x03\x04 not really".to_vec(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["id"].is_null() && body["table"].is_null(), "{body}");
    assert_eq!(body["errors"][0]["row"], 0);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("x.xlsx: not a readable xlsx workbook"),
        "{body}"
    );
    let (status, p) = preview(
        &rig,
        &me,
        "控制器,门号,楼栋,楼层,区域\nzk_gate,1,A,1,east\nzk_gat,2,A,1,east\nzk_gate,3,A,7,east\n",
    )
    .await;
    assert_eq!(status, 200, "{p}");
    assert!(p["id"].is_null(), "{p}");
    assert_eq!(p["errors"][0]["row"], 3);
    assert_eq!(p["errors"][0]["column"], 1);
    assert_eq!(p["errors"][0]["header"], "控制器");
    let fixed = "控制器,门号,楼栋,楼层,区域\nzk_gate,1,A,1,east\nzk_gate,3,A,7,east\n";
    let (_, p) = preview(&rig, &me, fixed).await;
    assert_eq!(
        (
            p["errors"][0]["row"].as_u64(),
            p["errors"][0]["column"].as_u64()
        ),
        (Some(3), Some(4)),
        "{p}"
    );
    assert!(
        p["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown floor \"7\"")
    );

    // Unknown ids and bodies of the wrong shape.
    let (status, _) = apply(&rig, &me, "no-such-preview").await;
    assert_eq!(status, 404);
    let (status, _) = post(
        &rig,
        "/api/v1/import/apply",
        &me,
        "application/json",
        br#"{"id": "x", "force": true}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 400);

    // Another admin cannot apply my preview (and does not use it up).
    let (_, p) = preview(&rig, &me, DOORS).await;
    let id = p["id"].as_str().unwrap().to_owned();
    let (status, _) = apply(&rig, &Caller::Token(&other_admin), &id).await;
    assert_eq!(status, 404);

    // The file changed since the preview: 409, nothing written, nothing audited.
    let config = rig.dir.path().join("gateway.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n# edited by hand\n");
    std::fs::write(&config, &text).unwrap();
    let (status, body) = apply(&rig, &me, &id).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("config_changed"))
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), text);
    assert!(rig.journaled("audit.import").is_empty());
    rig.stop().await;
}
