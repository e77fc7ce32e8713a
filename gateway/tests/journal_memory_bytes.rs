//! The journal's memory bound counts bytes, not only events (issue 9, item 2): a telemetry
//! batch of 1,000 readings is ~12 KB, so a bound of N events bounds nothing. Queued
//! telemetry waits for a byte budget (and never makes an alarm wait), and during a storage
//! outage non-alarm appends are refused beyond a byte bound.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::sync::atomic::Ordering;
use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions};
use campusgw_sdk::{Class, DeviceId, EmitError, Event, Kind, Location, NewEvent, Receipt};
use tokio::task::JoinHandle;

/// Generous: a loaded 2-core CI machine.
const T: Duration = Duration::from_secs(30);

/// An event whose journal body is a little over `kib` KiB.
fn ev(kind: &str, class: Class, kib: usize) -> Event {
    let pad = serde_json::json!({ "pad": "x".repeat(kib * 1024) });
    Event::stamp(
        NewEvent::new(Kind::new(kind).unwrap(), class).payload(pad),
        &DeviceId::new("dev").unwrap(),
        "test",
        &Location::default(),
    )
}

fn spawn_append(j: &Journal, e: Event) -> JoinHandle<Result<Vec<Receipt>, EmitError>> {
    let j = j.clone();
    tokio::spawn(async move { j.append(vec![e]).await })
}

async fn answer(h: JoinHandle<Result<Vec<Receipt>, EmitError>>) -> Result<Vec<Receipt>, EmitError> {
    tokio::time::timeout(T, h)
        .await
        .expect("answered in time")
        .unwrap()
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(T, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Caps the database at its current size: the next write fails and opens an outage.
async fn fail_storage(j: &Journal, path: &std::path::Path) {
    let pages: u32 = rusqlite::Connection::open(path)
        .unwrap()
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    j.limit_pages_for_test(pages).await;
}

#[tokio::test]
async fn a_telemetry_append_waits_for_the_byte_budget_and_an_alarm_never_waits_behind_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut opts = JournalOptions::new(&path);
    opts.telemetry_queue_bytes = 16 * 1024;
    let (j, w) = Journal::open(opts).unwrap();
    answer(spawn_append(&j, ev("sensor.readings", Class::Telemetry, 1)))
        .await
        .unwrap();
    assert_eq!(
        j.telemetry_budget_free_kib(),
        16,
        "given back once answered"
    );

    fail_storage(&j, &path).await;
    // The first batch (10 KiB) takes its bytes and is held by the failing writer.
    let first = spawn_append(&j, ev("sensor.readings", Class::Telemetry, 10));
    wait_until("storage.critical", || {
        j.status().critical.load(Ordering::SeqCst)
    })
    .await;
    assert!(j.telemetry_budget_free_kib() < 16 - 9);
    // The second does not fit in what is left: it waits, unsent.
    let free_before = j.telemetry_budget_free_kib();
    let second = spawn_append(&j, ev("sensor.readings", Class::Telemetry, 10));
    // An alarm appended now goes straight to the writer. Polled once, it is in the
    // writer's queue (it would be parked behind `second` if it needed the budget).
    let mut alarm = Box::pin({
        let j = j.clone();
        async move { j.append(vec![ev("fire.alarm", Class::LifeSafety, 1)]).await }
    });
    tokio::select! {
        biased;
        r = &mut alarm => panic!("answered during the outage: {r:?}"),
        () = std::future::ready(()) => {}
    }
    assert!(!first.is_finished() && !second.is_finished());
    assert_eq!(
        j.telemetry_budget_free_kib(),
        free_before,
        "second holds nothing"
    );

    j.limit_pages_for_test(u32::MAX).await;
    let alarm = tokio::time::timeout(T, alarm).await.unwrap().unwrap();
    let first = answer(first).await.unwrap();
    let second = answer(second).await.unwrap();
    assert!(
        first[0].seq < alarm[0].seq && alarm[0].seq < second[0].seq,
        "the alarm went ahead of the waiting batch: first {} alarm {} second {}",
        first[0].seq,
        alarm[0].seq,
        second[0].seq
    );
    wait_until("budget back", || j.telemetry_budget_free_kib() == 16).await;
    j.close().await;
    w.join();
}

#[tokio::test]
async fn during_a_storage_outage_non_alarm_appends_beyond_the_byte_bound_are_refused_and_alarms_are_kept()
 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let mut opts = JournalOptions::new(&path);
    // Events are far below the count bound; only the bytes can refuse them.
    opts.memory_backlog = 1000;
    opts.memory_backlog_bytes = 20 * 1024;
    let (j, w) = Journal::open(opts).unwrap();
    answer(spawn_append(&j, ev("door.forced", Class::Security, 1)))
        .await
        .unwrap();
    fail_storage(&j, &path).await;
    let first = spawn_append(&j, ev("door.forced", Class::Security, 8));
    wait_until("storage.critical", || {
        j.status().critical.load(Ordering::SeqCst)
    })
    .await;
    let fits = spawn_append(&j, ev("door.forced", Class::Security, 8));
    let over = answer(spawn_append(&j, ev("door.forced", Class::Security, 8))).await;
    assert!(
        matches!(over, Err(EmitError::Storage(_))),
        "a third 8 KiB event exceeds the 20 KiB bound: {over:?}"
    );
    let alarm = spawn_append(&j, ev("fire.alarm", Class::LifeSafety, 8));
    j.limit_pages_for_test(u32::MAX).await;
    for h in [first, fits, alarm] {
        assert_eq!(answer(h).await.unwrap().len(), 1);
    }
    let all = j.reader().unwrap().after(0, None, 100).unwrap();
    let count = |k: &str| all.iter().filter(|e| e.kind.as_str() == k).count();
    assert_eq!((count("fire.alarm"), count("door.forced")), (1, 3));
    j.close().await;
    w.join();
}

#[tokio::test]
async fn an_appended_event_keeps_its_payload_in_the_journal_though_the_writer_drops_its_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = Journal::open(JournalOptions::new(dir.path().join("j.db"))).unwrap();
    let e = ev("sensor.readings", Class::Telemetry, 2);
    let want = e.payload.clone();
    let r = answer(spawn_append(&j, e)).await.unwrap();
    let got = j.reader().unwrap().get(r[0].seq).unwrap().unwrap();
    assert_eq!(got.payload, want);
    j.close().await;
    w.join();
}
