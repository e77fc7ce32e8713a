//! The live stream (SSE) reads through the journal tail: a browser that stops reading
//! while the gateway commits far more than the in-memory commit broadcast holds still
//! gets every event, once, in seq order, when it reads again (issue 12, DESIGN §4
//! "Consumers never skip"). Its own test binary, so the tail's lag counter in `/metrics`
//! is this test's alone.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

mod console_support;

use std::time::Duration;

use campusgw::console::auth::Role;
use campusgw_sdk::Class;
use console_support::{Rig, event};

/// More than the commit broadcast's capacity (4096), so a client that reads nothing lags.
const EVENTS: usize = 20_000;

/// The value of a counter in the Prometheus text, 0 when absent.
async fn counter(rig: &Rig, name: &str) -> f64 {
    let text = rig
        .http
        .get(rig.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_stream_client_receives_every_event_in_order_from_the_journal() {
    let rig = Rig::start().await;
    let token = rig.token("wall", Role::Viewer).await;
    let start = *rig.gw.journal.committed_seq().borrow();
    let lagged_before = counter(&rig, "journal_tail_lagged_total").await;
    let mut r = rig
        .http
        .get(rig.url("/api/v1/stream"))
        .query(&[("after", start.to_string())])
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The client reads nothing while the gateway commits: its socket fills, the server
    // stops polling the stream, and the broadcast overwrites what the tail did not take.
    let mut i = 0;
    while i < EVENTS {
        let batch = (i..i + 500)
            .map(|n| {
                event(
                    "sensor.reading",
                    Class::Telemetry,
                    &format!("m{}", n % 50),
                    "A",
                    "1",
                )
            })
            .collect();
        rig.append(batch).await;
        i += 500;
    }
    let mut text = String::new();
    let mut ids: Vec<u64> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ids.len() < EVENTS {
        let chunk = tokio::time::timeout_at(deadline, r.chunk())
            .await
            .expect("stream stalled")
            .unwrap()
            .expect("stream ended early");
        text.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = text.find("\n\n") {
            let frame: String = text.drain(..end + 2).collect();
            if let Some(id) = frame.lines().find_map(|l| l.strip_prefix("id:")) {
                ids.push(id.trim().parse().unwrap());
            }
        }
    }
    let want: Vec<u64> = (start + 1..=start + EVENTS as u64).collect();
    assert!(
        ids == want,
        "every event once in seq order: got {} ids, first divergence at {:?}",
        ids.len(),
        ids.iter().zip(&want).position(|(a, b)| a != b)
    );
    assert!(
        counter(&rig, "journal_tail_lagged_total").await > lagged_before,
        "the client really lagged past the broadcast (else this test proves nothing)"
    );
    rig.stop().await;
}
