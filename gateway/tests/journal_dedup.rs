//! The journal's duplicate contract (DESIGN §4 "Duplicates", ADR 0003): a repeat of a
//! device message is recognised within a bounded window of receive time, a transaction id
//! for as long as the event is kept, and a different message is never taken for a repeat.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions, WriterHandle};
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent, Receipt};

const T: Duration = Duration::from_secs(20);

fn open(dir: &tempfile::TempDir, window: Duration) -> (Journal, WriterHandle) {
    let mut opts = JournalOptions::new(dir.path().join("j.db"));
    opts.dedup_window = window;
    Journal::open(opts).unwrap()
}

/// An event of `kind` keyed `key`, received `ago` before now.
fn keyed(new: NewEvent, ago: Duration) -> Event {
    let mut e = Event::stamp(
        new,
        &DeviceId::new("uitd_a").unwrap(),
        "test",
        &Location::default(),
    );
    e.received_at -= chrono::Duration::from_std(ago).unwrap();
    e
}

fn alarm(key: &str) -> NewEvent {
    NewEvent::new(Kind::new("fire.alarm").unwrap(), Class::LifeSafety).origin_ref(key)
}

async fn append(j: &Journal, events: Vec<Event>) -> Vec<Receipt> {
    tokio::time::timeout(T, j.append(events))
        .await
        .expect("append in time")
        .expect("durable")
}

async fn stored(j: &Journal) -> usize {
    j.reader().unwrap().after(0, None, 1000).unwrap().len()
}

#[tokio::test]
async fn a_repeat_within_the_window_gets_the_first_events_receipt() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let first = append(&j, vec![keyed(alarm("k1"), Duration::from_secs(300))]).await;
    let again = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert!(!first[0].duplicate);
    assert!(again[0].duplicate);
    assert_eq!((again[0].seq, again[0].id), (first[0].seq, first[0].id));
    assert_eq!(stored(&j).await, 1);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn the_same_content_key_after_the_window_is_a_new_event() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    append(&j, vec![keyed(alarm("k1"), Duration::from_secs(601))]).await;
    let later = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert!(!later[0].duplicate);
    assert_eq!(later[0].seq, 2);
    // And within the window of that newer one, a repeat is recognised again.
    let again = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert_eq!((again[0].duplicate, again[0].seq), (true, 2));
    assert_eq!(stored(&j).await, 2);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn a_transaction_id_is_recognised_for_as_long_as_the_event_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(60));
    let sale = || NewEvent::new(Kind::new("pos.transaction").unwrap(), Class::Business);
    let hours = Duration::from_secs(6 * 3600);
    append(&j, vec![keyed(sale().transaction_id("T-000017"), hours)]).await;
    let upload = append(
        &j,
        vec![keyed(sale().transaction_id("T-000017"), Duration::ZERO)],
    )
    .await;
    assert!(
        upload[0].duplicate,
        "uploaded again hours later: the same sale"
    );
    assert_eq!(stored(&j).await, 1);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn a_key_reused_by_an_event_of_another_kind_is_never_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    let fault = NewEvent::new(Kind::new("fire.fault").unwrap(), Class::Security).origin_ref("k1");
    let r = append(&j, vec![keyed(fault, Duration::ZERO)]).await;
    assert!(!r[0].duplicate);
    assert_eq!(stored(&j).await, 2);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn after_a_key_changed_kind_only_its_newest_event_is_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let fault =
        || NewEvent::new(Kind::new("fire.fault").unwrap(), Class::Security).origin_ref("k1");
    let first = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    let f = append(&j, vec![keyed(fault(), Duration::ZERO)]).await;
    // The alarm again: the key's newest event is the fault, so this is a new alarm.
    let alarm_again = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert!(!f[0].duplicate && !alarm_again[0].duplicate);
    assert_ne!(alarm_again[0].seq, first[0].seq);
    // And a repeat of that newest one is recognised, with its own receipt.
    let repeat = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert_eq!(
        (repeat[0].duplicate, repeat[0].seq),
        (true, alarm_again[0].seq)
    );
    assert_eq!(stored(&j).await, 3);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn repeats_inside_one_batch_and_other_devices_keys_are_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let mut other = keyed(alarm("k1"), Duration::ZERO);
    other.source.device = DeviceId::new("uitd_b").unwrap();
    let r = append(
        &j,
        vec![
            keyed(alarm("k1"), Duration::ZERO),
            keyed(alarm("k1"), Duration::ZERO),
            other,
        ],
    )
    .await;
    let dup: Vec<bool> = r.iter().map(|r| r.duplicate).collect();
    assert_eq!(dup, vec![false, true, false]);
    assert_eq!(stored(&j).await, 2);
    j.close().await;
    w.join();
}

#[tokio::test]
async fn duplicates_are_still_recognised_after_the_journal_is_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let first = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    j.close().await;
    w.join();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let again = append(&j, vec![keyed(alarm("k1"), Duration::ZERO)]).await;
    assert_eq!((again[0].duplicate, again[0].id), (true, first[0].id));
    j.close().await;
    w.join();
}

/// The writer inserts runs of up to 32 rows in one statement; a run holding a repeat (of
/// an earlier batch or of its own run) or an unkeyed reading beside keyed messages must
/// give the same receipts as row-by-row inserts: repeats recognised, seqs gap-free.
#[tokio::test]
async fn repeats_inside_a_large_batch_keep_seqs_gap_free_and_get_the_originals_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = open(&dir, Duration::from_secs(600));
    let first = append(&j, vec![keyed(alarm("old"), Duration::ZERO)]).await;
    let mut batch = Vec::new();
    for i in 0..100 {
        let e = match i {
            // A repeat of the earlier batch, inside the first 32-row run.
            7 => keyed(alarm("old"), Duration::ZERO),
            // A repeat of event 40 of this batch, in a later run.
            77 => keyed(alarm("k40"), Duration::ZERO),
            // Readings carry no key.
            _ if i % 3 == 0 => keyed(
                NewEvent::new(Kind::new("sensor.reading").unwrap(), Class::Telemetry),
                Duration::ZERO,
            ),
            _ => keyed(alarm(&format!("k{i}")), Duration::ZERO),
        };
        batch.push(e);
    }
    let r = append(&j, batch).await;
    let dups: Vec<usize> = (0..100).filter(|&i| r[i].duplicate).collect();
    assert_eq!(dups, vec![7, 77]);
    assert_eq!((r[7].seq, r[7].id), (first[0].seq, first[0].id));
    assert_eq!((r[77].seq, r[77].id), (r[40].seq, r[40].id));
    let fresh: Vec<u64> = r.iter().filter(|r| !r.duplicate).map(|r| r.seq).collect();
    assert_eq!(fresh, (2..=99).collect::<Vec<u64>>(), "gap-free, in order");
    let seqs: Vec<u64> = j
        .reader()
        .unwrap()
        .after(0, None, 1000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=99).collect::<Vec<u64>>());
    j.close().await;
    w.join();
}
