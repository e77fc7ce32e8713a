//! Issue 7: an event a destination rejected is listed in the journal's `rejected` table and
//! never deleted by retention, neither for age nor for the disk quota (tier 6 would
//! otherwise take delivered alarms); listing and marking for resend work from a second
//! connection while the writer runs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::time::Duration;

use campusgw::journal::rejected::{RejectedReader, RetrySelection, request_retry};
use campusgw::journal::{Journal, JournalOptions, RetentionPolicy, UplinkSpec};
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

fn ev(kind: &'static str, class: Class) -> Event {
    Event::stamp(
        NewEvent::new(Kind::from_static(kind), class),
        &DeviceId::new("panel-1").unwrap(),
        "test",
        &Location::default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_alarms_survive_age_and_quota_eviction_and_can_be_marked_while_the_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let mut opts = JournalOptions::new(&path);
    opts.uplinks = vec![UplinkSpec {
        name: "county".into(),
        classes: Class::ALL.to_vec(),
    }];
    opts.retention = RetentionPolicy {
        max_age: Duration::from_secs(86_400),
        quota_bytes: u64::MAX,
    };
    let (j, w) = Journal::open(opts.clone()).unwrap();
    let mut batch = Vec::new();
    for i in 0..200 {
        batch.push(if i % 2 == 0 {
            ev("fire.alarm", Class::LifeSafety)
        } else {
            ev("door.forced", Class::Security)
        });
    }
    let receipts = j.append(batch).await.unwrap();
    let (fire, door) = (receipts[10].seq, receipts[11].seq);
    j.record_rejected("county", fire, Class::LifeSafety, "http 400: bad")
        .await
        .unwrap();
    j.record_rejected("county", door, Class::Security, "PUBACK reason 0x99")
        .await
        .unwrap();
    // Everything delivered (the cursor moved past the rejected events too).
    for c in [Class::LifeSafety, Class::Security] {
        j.set_cursor("county", c, receipts[199].seq).await.unwrap();
    }
    // A quota only evicting delivered alarms (tier 6) can approach.
    j.close().await;
    w.join();
    opts.retention.quota_bytes = 1024;
    let (j, w) = Journal::open(opts.clone()).unwrap();
    let report = j.maintain().await.unwrap();
    assert!(report.evicted[5] > 0, "{report:?}");
    let rd = j.reader().unwrap();
    assert!(rd.get(fire).unwrap().is_some(), "rejected fire alarm kept");
    assert!(
        rd.get(door).unwrap().is_some(),
        "rejected security event kept"
    );
    assert!(rd.get(receipts[0].seq).unwrap().is_none(), "others evicted");
    // Age: nothing is young enough to keep, yet the rejected ones stay.
    j.close().await;
    w.join();
    opts.retention = RetentionPolicy {
        max_age: Duration::ZERO,
        quota_bytes: u64::MAX,
    };
    let (j, w) = Journal::open(opts).unwrap();
    j.maintain().await.unwrap();
    let rd = j.reader().unwrap();
    assert!(rd.get(fire).unwrap().is_some() && rd.get(door).unwrap().is_some());
    // Listed and marked from other connections while this writer is open.
    let list = RejectedReader::open(&path).unwrap();
    let rows = list.list(Some("county")).unwrap();
    assert_eq!(
        rows.iter().map(|r| r.seq).collect::<Vec<_>>(),
        vec![fire, door]
    );
    assert_eq!(rows[0].kind.as_deref(), Some("fire.alarm"));
    assert!(rows.iter().all(|r| !r.retry_requested));
    let marked = request_retry(&path, "county", &RetrySelection::Seqs(vec![door])).unwrap();
    assert_eq!(marked, 1);
    assert_eq!(list.requested("county").unwrap(), vec![door]);
    assert_eq!(
        request_retry(&path, "county", &RetrySelection::All).unwrap(),
        2
    );
    assert_eq!(
        request_retry(&path, "other", &RetrySelection::All).unwrap(),
        0
    );
    // Delivered on resend: unlisted, and retention may take it again.
    j.clear_rejected("county", vec![fire]).await.unwrap();
    assert_eq!(list.requested("county").unwrap(), vec![door]);
    j.maintain().await.unwrap();
    assert!(rd.get(fire).unwrap().is_none(), "unlisted: eligible again");
    assert!(rd.get(door).unwrap().is_some());
    j.close().await;
    w.join();
}
