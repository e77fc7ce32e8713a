//! The webhook uplink against a local HTTP server that injects 500, 429 + Retry-After,
//! 400 and a timeout before answering 200.
#![allow(missing_docs, clippy::unwrap_used)]

mod uplink_support;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use campusgw::uplink::webhook::WebhookUplink;
use campusgw::uplink::{UplinkSettings, UplinkStatus};
use campusgw_sdk::{Class, FieldPath};
use uplink_support::{Rig, wait_for};

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    RetryAfter(u64),
    Hang,
}

#[derive(Default)]
struct Server {
    script: Mutex<VecDeque<Answer>>,
    /// (arrival, answer given, event ids in the batch)
    log: Mutex<Vec<(Instant, u16, Vec<String>)>>,
}

async fn ingest(State(s): State<Arc<Server>>, body: String) -> Response {
    let events: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    let ids = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    let answer = s
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Answer::Status(200));
    let code = match answer {
        Answer::Status(c) => c,
        Answer::RetryAfter(_) => 429,
        Answer::Hang => 0,
    };
    s.log.lock().unwrap().push((Instant::now(), code, ids));
    match answer {
        Answer::Status(c) => StatusCode::from_u16(c).unwrap().into_response(),
        Answer::RetryAfter(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            StatusCode::OK.into_response()
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_transient_failures_and_records_rejections() {
    let server = Arc::new(Server::default());
    server.script.lock().unwrap().extend([
        Answer::Status(500),
        Answer::RetryAfter(1),
        Answer::Status(400),
        Answer::Hang,
    ]);
    let app = axum::Router::new()
        .route("/ingest", axum::routing::post(ingest))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let rig = Rig::open();
    let sent = rig.emit(Class::Telemetry, "sensor.reading", 20).await;
    let text = format!(
        "name = \"archive\"\nkind = \"webhook\"\nurl = \"http://{addr}/ingest\"\ntoken = \"t0ken\"\nbatch = 5\ntimeout = \"300ms\"\nclasses = [\"telemetry\", \"security\"]\n"
    );
    let u = campusgw::uplink::parse(toml::from_str(&text).unwrap(), &FieldPath::root())
        .ok()
        .unwrap();
    let UplinkSettings::Webhook(c) = u.settings else {
        panic!("webhook")
    };
    let mut c = (*c).clone();
    c.backoff = (Duration::from_millis(50), Duration::from_millis(200));
    let status = UplinkStatus::new("archive", "webhook");
    let up = WebhookUplink::new(Arc::new(c), u.filter, rig.context(), status.clone());
    let task = tokio::spawn(up.run());

    let reader = rig.journal.reader().unwrap();
    let last = sent.last().unwrap().seq;
    wait_for(
        "telemetry cursor at the end",
        Duration::from_secs(30),
        || reader.cursor("archive", Class::Telemetry).unwrap() >= last,
    )
    .await;
    let log = server.log.lock().unwrap().clone();
    let codes: Vec<u16> = log.iter().map(|l| l.1).collect();
    assert_eq!(&codes[..4], &[500, 429, 400, 0], "{codes:?}");
    // The same batch was retried after 500 and 429, the latter after Retry-After.
    assert_eq!(log[0].2, log[1].2);
    assert_eq!(log[1].2, log[2].2);
    assert!(
        log[2].0 - log[1].0 >= Duration::from_millis(950),
        "Retry-After honoured"
    );
    // The 400 batch is rejected, not retried; the rest is delivered.
    let rejected = log[2].2.clone();
    let delivered: Vec<String> = log
        .iter()
        .filter(|l| l.1 == 200)
        .flat_map(|l| l.2.clone())
        .collect();
    for e in &sent {
        let id = e.id.to_string();
        assert!(
            rejected.contains(&id) != delivered.contains(&id),
            "{id} exactly one outcome"
        );
    }
    assert_eq!(status.snapshot().rejected, 5);
    // An uplink.rejected alarm names the rejected events.
    wait_for("uplink.rejected journaled", Duration::from_secs(10), || {
        reader
            .after(0, Some(Class::Security), 10)
            .unwrap()
            .iter()
            .any(|e| {
                e.kind.as_str() == "uplink.rejected"
                    && e.payload["event_ids"].as_array().unwrap().len() == 5
            })
    })
    .await;
    rig.shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    http.abort();
    rig.stop().await;
}
