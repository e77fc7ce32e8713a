//! Journal contracts no other test pins down (issue 7, item 8): quota eviction tiers 3, 5
//! and 6, each oldest-first and only after every lower tier is empty (DESIGN §4
//! "Retention", `journal::retention`); seqs are never reused, even when eviction deleted
//! the newest rows and the journal was reopened.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions, RetentionPolicy, UplinkSpec};
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

const T: Duration = Duration::from_secs(60);

fn ev(kind: &str, class: Class) -> Event {
    let n = NewEvent::new(Kind::new(kind).unwrap(), class)
        .payload(serde_json::json!({"pad": "x".repeat(200)}));
    Event::stamp(
        n,
        &DeviceId::new("dev").unwrap(),
        "test",
        &Location::default(),
    )
}

fn options(dir: &Path) -> JournalOptions {
    let mut opts = JournalOptions::new(dir.join("j.db"));
    opts.uplinks = vec![UplinkSpec {
        name: "county".into(),
        classes: Class::ALL.to_vec(),
    }];
    opts.retention = RetentionPolicy {
        max_age: Duration::from_secs(86_400),
        quota_bytes: u64::MAX,
    };
    opts
}

async fn append(j: &Journal, events: Vec<Event>) -> Vec<u64> {
    tokio::time::timeout(T, j.append(events))
        .await
        .expect("append in time")
        .expect("durable")
        .into_iter()
        .map(|r| r.seq)
        .collect()
}

/// A row as the test planned it: kind, class, delivered.
type Row = (&'static str, Class, bool);

/// Journals `delivered` (then marks every class delivered up to there) and `undelivered`;
/// returns each row with its seq, and the data bytes counted against the quota.
async fn fill(
    opts: &JournalOptions,
    delivered: &[Row],
    undelivered: &[Row],
) -> (Vec<(Row, u64)>, u64) {
    let (j, w) = Journal::open(opts.clone()).unwrap();
    let mut rows = Vec::new();
    for part in [delivered, undelivered] {
        let seqs = append(&j, part.iter().map(|(k, c, _)| ev(k, *c)).collect()).await;
        rows.extend(part.iter().copied().zip(seqs));
        if std::ptr::eq(part, delivered) {
            let upto = rows.last().map_or(0, |(_, s)| *s);
            for c in Class::ALL {
                j.set_cursor("county", c, upto).await.unwrap();
            }
        }
    }
    j.close().await;
    w.join();
    let used =
        campusgw::journal::retention::used_bytes(&rusqlite::Connection::open(&opts.path).unwrap())
            .unwrap();
    (rows, used)
}

/// Reopens with a quota that `keep` of the rows fit, runs maintenance to the end; returns
/// the report and the seqs left.
async fn shrink(
    opts: &JournalOptions,
    rows: usize,
    used: u64,
    keep: usize,
) -> (
    campusgw::journal::retention::MaintenanceReport,
    BTreeSet<u64>,
) {
    let mut opts = opts.clone();
    opts.retention.quota_bytes = used / rows as u64 * keep as u64;
    let (j, w) = Journal::open(opts).unwrap();
    let report = tokio::time::timeout(T, j.maintain())
        .await
        .unwrap()
        .unwrap();
    let left = j
        .reader()
        .unwrap()
        .after(0, None, 100_000)
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    j.close().await;
    w.join();
    (report, left)
}

/// The rows `pick` selects, by seq.
fn seqs(rows: &[(Row, u64)], pick: impl Fn(&Row) -> bool) -> Vec<u64> {
    rows.iter()
        .filter(|(r, _)| pick(r))
        .map(|(_, s)| *s)
        .collect()
}

/// A tier was evicted in part and oldest-first: exactly its `evicted` oldest rows are gone.
fn oldest_first(tier: &[u64], evicted: u64, left: &BTreeSet<u64>, name: &str) {
    let evicted = usize::try_from(evicted).unwrap();
    assert!(
        evicted > 0 && evicted < tier.len(),
        "{name}: evicted {evicted} of {}, expected part of it",
        tier.len()
    );
    let kept: Vec<u64> = tier.iter().copied().filter(|s| left.contains(s)).collect();
    assert_eq!(
        kept,
        tier[evicted..].to_vec(),
        "{name}: the {evicted} oldest go, the newest stay"
    );
}

/// Every row `pick` selects is still there.
fn all_kept(rows: &[(Row, u64)], left: &BTreeSet<u64>, pick: impl Fn(&Row) -> bool, name: &str) {
    let want = seqs(rows, pick);
    let kept = want.iter().filter(|s| left.contains(s)).count();
    assert_eq!(kept, want.len(), "{name} must all be kept");
}

fn delivered(kind: &'static str, class: Class) -> Row {
    (kind, class, true)
}

fn undelivered(kind: &'static str, class: Class) -> Row {
    (kind, class, false)
}

/// Tier 3: delivered `operations` go (oldest first) before undelivered `business` and
/// `operations`, and delivered alarms.
#[tokio::test]
async fn quota_tier_3_evicts_delivered_operations_oldest_first_before_undelivered_business() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let mut old = Vec::new();
    for i in 0..1800 {
        old.push(match i % 12 {
            0 => delivered("fire.alarm", Class::LifeSafety),
            1 => delivered("door.forced", Class::Security),
            _ => delivered("device.online", Class::Operations),
        });
    }
    let mut new = Vec::new();
    for i in 0..700 {
        new.push(match i % 7 {
            0 => undelivered("fire.alarm", Class::LifeSafety),
            1..=3 => undelivered("device.online", Class::Operations),
            _ => undelivered("access.granted", Class::Business),
        });
    }
    let (rows, used) = fill(&opts, &old, &new).await;
    // 750 rows too many: more than two chunks of delivered operations, fewer than all 1500.
    let (report, left) = shrink(&opts, rows.len(), used, rows.len() - 750).await;
    assert_eq!(report.evicted[..2], [0, 0], "{report:?}");
    assert_eq!(report.evicted[3..], [0, 0, 0], "{report:?}");
    assert!(!report.over_quota, "{report:?}");
    let tier = seqs(&rows, |r| r.1 == Class::Operations && r.2);
    oldest_first(&tier, report.evicted[2], &left, "delivered operations");
    all_kept(
        &rows,
        &left,
        |r| r.1 != Class::Operations || !r.2,
        "the other rows",
    );
}

/// Tier 5: undelivered `operations` go (oldest first) once tier 4 (undelivered business
/// other than card transactions) is empty; card transactions and delivered alarms stay.
#[tokio::test]
async fn quota_tier_5_evicts_undelivered_operations_oldest_first_after_tier_4_and_keeps_cards() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let mut old = Vec::new();
    for i in 0..300 {
        old.push(if i % 2 == 0 {
            delivered("fire.alarm", Class::LifeSafety)
        } else {
            delivered("door.forced", Class::Security)
        });
    }
    let mut new = Vec::new();
    for i in 0..2100 {
        new.push(match i % 21 {
            0 => undelivered("fire.alarm", Class::LifeSafety),
            1..=3 => undelivered("access.granted", Class::Business),
            4 | 5 => undelivered("pos.transaction", Class::Business),
            _ => undelivered("device.online", Class::Operations),
        });
    }
    let (rows, used) = fill(&opts, &old, &new).await;
    // Tier 4 (300 rows) and then 750 of the 1500 undelivered operations must go.
    let (report, left) = shrink(&opts, rows.len(), used, rows.len() - 1050).await;
    assert_eq!(report.evicted[..3], [0, 0, 0], "{report:?}");
    assert_eq!(report.evicted[3], 300, "tier 4 emptied first: {report:?}");
    assert_eq!(report.evicted[5], 0, "{report:?}");
    assert!(!report.over_quota, "{report:?}");
    let tier = seqs(&rows, |r| r.1 == Class::Operations);
    oldest_first(&tier, report.evicted[4], &left, "undelivered operations");
    all_kept(
        &rows,
        &left,
        |r| r.0 == "pos.transaction",
        "card transactions",
    );
    all_kept(
        &rows,
        &left,
        |r| r.1 <= Class::Security,
        "alarms and security events",
    );
}

/// Canteen sales are money parents paid: undelivered `canteen.*` events are never evicted
/// at the quota, even when nothing else is left to evict (the journal reports over quota).
#[tokio::test]
async fn an_undelivered_canteen_sale_is_never_evicted_at_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let mut old = Vec::new();
    for _ in 0..100 {
        old.push(delivered("canteen.sale", Class::Business));
    }
    let mut new = Vec::new();
    for i in 0..2000 {
        new.push(match i % 4 {
            0 => undelivered("access.granted", Class::Business),
            1 => undelivered("canteen.conflict", Class::Business),
            _ => undelivered("canteen.sale", Class::Business),
        });
    }
    let (rows, used) = fill(&opts, &old, &new).await;
    // Asks for more than the delivered sales and the access events together can free.
    let (report, left) = shrink(&opts, rows.len(), used, rows.len() - 1500).await;
    assert_eq!(report.evicted[1], 100, "delivered sales may go: {report:?}");
    assert_eq!(
        report.evicted[3], 500,
        "only the access events of tier 4: {report:?}"
    );
    assert!(report.over_quota, "{report:?}");
    all_kept(
        &rows,
        &left,
        |r| r.0.starts_with("canteen.") && !r.2,
        "undelivered canteen events",
    );
}

/// Tier 6: delivered `security` and `life_safety` go last, oldest first across both
/// classes, once tiers 1-5 are empty; undelivered alarms and card transactions stay.
#[tokio::test]
async fn quota_tier_6_evicts_delivered_alarms_oldest_first_only_after_tiers_1_to_5() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let mut old = Vec::new();
    for i in 0..1700 {
        old.push(match i % 17 {
            0 => delivered("device.online", Class::Operations),
            1 => delivered("sensor.reading", Class::Telemetry),
            n if n % 2 == 0 => delivered("fire.alarm", Class::LifeSafety),
            _ => delivered("door.forced", Class::Security),
        });
    }
    let mut new = Vec::new();
    for i in 0..700 {
        new.push(match i % 7 {
            0 | 1 => undelivered("fire.alarm", Class::LifeSafety),
            2 | 3 => undelivered("door.forced", Class::Security),
            4 => undelivered("pos.transaction", Class::Business),
            5 => undelivered("access.granted", Class::Business),
            _ => undelivered("device.online", Class::Operations),
        });
    }
    let (rows, used) = fill(&opts, &old, &new).await;
    // The 400 rows of tiers 1, 3, 4 and 5, then 750 of the 1500 delivered alarms.
    let (report, left) = shrink(&opts, rows.len(), used, rows.len() - 1150).await;
    assert_eq!(report.evicted[..5], [100, 0, 100, 100, 100], "{report:?}");
    assert!(!report.over_quota, "{report:?}");
    let tier = seqs(&rows, |r| r.1 <= Class::Security && r.2);
    oldest_first(&tier, report.evicted[5], &left, "delivered alarms");
    all_kept(
        &rows,
        &left,
        |r| r.1 <= Class::Security && !r.2,
        "undelivered alarms",
    );
    all_kept(
        &rows,
        &left,
        |r| r.0 == "pos.transaction",
        "card transactions",
    );
}

/// Eviction that deletes the newest rows (telemetry journaled after undelivered alarms)
/// does not hand their seqs out again: after a reopen, new events continue after the
/// highest seq ever assigned.
#[tokio::test]
async fn seqs_are_never_reused_after_the_newest_rows_were_evicted_and_the_journal_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(dir.path());
    let (j, w) = Journal::open(opts.clone()).unwrap();
    let alarms = append(
        &j,
        (0..100)
            .map(|_| ev("fire.alarm", Class::LifeSafety))
            .collect(),
    )
    .await;
    let readings = append(
        &j,
        (0..100)
            .map(|_| ev("sensor.reading", Class::Telemetry))
            .collect(),
    )
    .await;
    let highest = *readings.last().unwrap();
    j.close().await;
    w.join();
    let used =
        campusgw::journal::retention::used_bytes(&rusqlite::Connection::open(&opts.path).unwrap())
            .unwrap();
    let (report, left) = shrink(&opts, 200, used, 150).await;
    assert_eq!(report.evicted[0], 100, "{report:?}");
    assert_eq!(
        left,
        alarms.iter().copied().collect(),
        "the newest rows are gone"
    );

    let (j, w) = Journal::open(opts).unwrap();
    let next = append(&j, vec![ev("fire.alarm", Class::LifeSafety)]).await;
    assert_eq!(
        next,
        vec![highest + 1],
        "new seqs continue after the highest ever assigned"
    );
    assert_eq!(*j.committed_seq().borrow(), highest + 1);
    j.close().await;
    w.join();
}
