//! A storage outage of any length keeps memory bounded (issue: alarm integrity, item 6):
//! events queue in memory up to a bound, life-safety events up to a further reserve, and
//! beyond it appends are refused, never acknowledged, so their devices retransmit; nothing
//! already acknowledged is lost.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::atomic::Ordering;
use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions};
use campusgw_sdk::{Class, DeviceId, EmitError, Event, Kind, Location, NewEvent, Receipt};
use tokio::task::JoinHandle;

const T: Duration = Duration::from_secs(20);

fn ev(kind: &str, class: Class) -> Event {
    // Large enough that every append needs new pages, so a page cap makes it fail.
    let pad = serde_json::json!({ "pad": "x".repeat(8192) });
    Event::stamp(
        NewEvent::new(Kind::new(kind).unwrap(), class).payload(pad),
        &DeviceId::new("dev").unwrap(),
        "test",
        &Location::default(),
    )
}

fn spawn_append(
    j: &Journal,
    n: usize,
    kind: &str,
    class: Class,
) -> JoinHandle<Result<Vec<Receipt>, EmitError>> {
    let j = j.clone();
    let events: Vec<Event> = (0..n).map(|_| ev(kind, class)).collect();
    tokio::spawn(async move { j.append(events).await })
}

/// Waits until the append has an answer, and returns it.
async fn answer(h: JoinHandle<Result<Vec<Receipt>, EmitError>>) -> Result<Vec<Receipt>, EmitError> {
    tokio::time::timeout(T, h)
        .await
        .expect("answered in time")
        .unwrap()
}

#[tokio::test]
async fn during_a_storage_outage_alarms_beyond_the_reserve_are_refused_and_queued_ones_survive() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = JournalOptions::new(dir.path().join("j.db"));
    opts.memory_backlog = 4;
    opts.life_safety_reserve = 6;
    let (j, w) = Journal::open(opts).unwrap();
    answer(spawn_append(&j, 1, "sensor.reading", Class::Telemetry))
        .await
        .unwrap();
    let pages: u32 = rusqlite::Connection::open(dir.path().join("j.db"))
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    j.limit_pages_for_test(pages).await;
    // The first write after the cap fails and opens the outage.
    let first = spawn_append(&j, 3, "door.forced", Class::Security);
    tokio::time::timeout(T, async {
        while !j.status().critical.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("storage.critical raised");
    // 3 queued: one more non-alarm fits the backlog of 4, a second does not.
    let fits = spawn_append(&j, 1, "door.forced", Class::Security);
    let over = answer(spawn_append(&j, 1, "door.forced", Class::Security)).await;
    assert!(matches!(over, Err(EmitError::Storage(_))), "{over:?}");
    // Alarms may use the reserve: 4 + 6 in all.
    let alarms = spawn_append(&j, 6, "fire.alarm", Class::LifeSafety);
    let alarm_over = answer(spawn_append(&j, 1, "fire.alarm", Class::LifeSafety)).await;
    assert!(
        matches!(alarm_over, Err(EmitError::Storage(ref m)) if m.contains("10 events")),
        "{alarm_over:?}"
    );
    for h in [&first, &fits, &alarms] {
        assert!(
            !h.is_finished(),
            "nothing is acknowledged before it is durable"
        );
    }
    j.limit_pages_for_test(u32::MAX).await;
    assert_eq!(answer(first).await.unwrap().len(), 3);
    assert_eq!(answer(fits).await.unwrap().len(), 1);
    assert_eq!(answer(alarms).await.unwrap().len(), 6);
    let all = j.reader().unwrap().after(0, None, 1000).unwrap();
    let count = |k: &str| all.iter().filter(|e| e.kind.as_str() == k).count();
    assert_eq!((count("fire.alarm"), count("door.forced")), (6, 4));
    j.close().await;
    w.join();
}
