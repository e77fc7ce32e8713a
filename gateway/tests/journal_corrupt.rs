//! Corruption is contained (issue 7, item 3): a row whose body does not decode is
//! quarantined once, reported as one `journal.corrupt` security event, and every reader
//! (export, an uplink's feed, the backlog figures) moves on to the rest.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly by design

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use campusgw::journal::{Journal, JournalOptions, UplinkSpec};
use campusgw::uplink::Filter;
use campusgw::uplink::feed::Feed;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

const T: Duration = Duration::from_secs(30);

fn ev(kind: &str, class: Class, n: usize) -> Event {
    let n = NewEvent::new(Kind::new(kind).unwrap(), class)
        .payload(serde_json::json!({ "n": n, "pad": "x".repeat(100) }));
    Event::stamp(
        n,
        &DeviceId::new("panel").unwrap(),
        "test",
        &Location::default(),
    )
}

/// Seq 1 (a fire alarm) gets invalid JSON, seq 4 (a security event) valid JSON that is not
/// an event; both keep their byte length so the data-size accounting can be checked exactly.
fn corrupt(db: &Path) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(T).unwrap();
    c.execute(
        "UPDATE events SET body = '{' || substr(replace(hex(zeroblob(length(body))), '0', 'x'), 1, length(body) - 1) WHERE seq = 1",
        [],
    )
    .unwrap();
    c.execute(
        "UPDATE events SET body = '{\"hello\":\"' || substr(replace(hex(zeroblob(length(body))), '0', 'y'), 1, length(body) - 12) || '\"}' WHERE seq = 4",
        [],
    )
    .unwrap();
    let bad: i64 = c
        .query_row(
            "SELECT count(*) FROM events WHERE seq IN (1, 4) AND json_valid(body) = (seq = 4)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(bad, 2, "both rows corrupted as intended");
}

fn quarantined(db: &Path) -> Vec<(u64, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(T).unwrap();
    let mut s = c
        .prepare("SELECT seq, error FROM quarantine ORDER BY seq")
        .unwrap();
    s.query_map([], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn accounted(db: &Path) -> (i64, i64) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(T).unwrap();
    let stored: i64 = c
        .query_row("SELECT value FROM meta WHERE key = 'data_bytes'", [], |r| {
            r.get(0)
        })
        .unwrap();
    let actual: i64 = c
        .query_row(
            "SELECT coalesce(sum(96 + length(body)), 0) FROM events",
            [],
            |r| r.get(0),
        )
        .unwrap();
    (stored, actual)
}

fn export(data: &Path) -> (Vec<serde_json::Value>, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_campusgw"))
        .env("CAMPUSGW_LOG", "error")
        .args(["journal", "export", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, stderr)
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Drains the feed up to what is committed, confirming everything; returns what it sent.
fn drain(feed: &mut Feed, committed: u64) -> Vec<(u64, Class, String)> {
    let mut sent = Vec::new();
    while let Some(o) = feed.next(committed).unwrap() {
        sent.push((o.seq, o.class, o.event.kind.as_str().to_owned()));
        feed.confirm(o.class, o.seq);
    }
    sent
}

#[tokio::test]
async fn a_corrupt_row_is_quarantined_once_and_export_feed_and_backlog_move_past_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let mut opts = JournalOptions::new(&db);
    opts.uplinks = vec![UplinkSpec {
        name: "county".into(),
        classes: Class::ALL.to_vec(),
    }];
    let (j, w) = Journal::open(opts).unwrap();
    let events = vec![
        ev("fire.alarm", Class::LifeSafety, 1),
        ev("sensor.reading", Class::Telemetry, 2),
        ev("fire.alarm", Class::LifeSafety, 3),
        ev("door.forced", Class::Security, 4),
        ev("sensor.reading", Class::Telemetry, 5),
        ev("fire.alarm", Class::LifeSafety, 6),
        ev("door.forced", Class::Security, 7),
        ev("sensor.reading", Class::Telemetry, 8),
    ];
    let receipts = tokio::time::timeout(T, j.append(events))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receipts.last().unwrap().seq, 8);
    corrupt(&db);
    let good: BTreeSet<u64> = [2, 3, 5, 6, 7, 8].into();

    // export: every other event, and a warning naming the count.
    let (lines, stderr) = export(dir.path());
    let seqs: BTreeSet<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, good);
    assert!(
        stderr.contains("2 stored rows could not be decoded"),
        "{stderr}"
    );

    // The uplink's feed: everything else, alarms after the corrupt row included.
    let mut feed = Feed::open("county", &j, Filter::classes(&Class::ALL)).unwrap();
    let first = drain(&mut feed, *j.committed_seq().borrow());
    let sent: BTreeSet<u64> = first.iter().map(|s| s.0).collect();
    assert_eq!(sent, good, "{first:?}");
    assert!(first.iter().any(|s| s.0 == 6 && s.2 == "fire.alarm"));

    // Quarantined, each row once, and reported once.
    wait_for("both rows quarantined", || quarantined(&db).len() == 2).await;
    let q = quarantined(&db);
    assert_eq!(q.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 4]);
    assert!(q.iter().all(|r| !r.1.is_empty()), "{q:?}");
    wait_for("journal.corrupt events committed", || {
        *j.committed_seq().borrow() >= 10
    })
    .await;
    // Readers meeting the rows again (none left) report nothing more.
    let (again, _) = export(dir.path());
    let corrupt_events: Vec<&serde_json::Value> = again
        .iter()
        .filter(|l| l["kind"] == "journal.corrupt")
        .collect();
    assert_eq!(corrupt_events.len(), 2, "{again:?}");
    for (e, seq) in corrupt_events.iter().zip([1, 4]) {
        assert_eq!(e["class"], "security");
        assert_eq!(e["payload"]["seq"], seq);
        assert!(e["payload"]["error"].is_string());
    }

    // The feed goes on to the journal.corrupt events (security: forwarded to the county).
    let second = drain(&mut feed, *j.committed_seq().borrow());
    assert_eq!(
        second
            .iter()
            .map(|s| (s.0, s.1, s.2.as_str()))
            .collect::<Vec<_>>(),
        vec![
            (9, Class::Security, "journal.corrupt"),
            (10, Class::Security, "journal.corrupt")
        ]
    );

    // Backlog figures: a quarantined row no longer counts; the rest does until confirmed.
    let reader = j.reader().unwrap();
    let (backlog, oldest, _) =
        campusgw::uplink::status::measure(&reader, "county", &Class::ALL).unwrap();
    let rank = |c: Class| usize::from(c.rank());
    assert_eq!(backlog[rank(Class::LifeSafety)], 2);
    assert_eq!(backlog[rank(Class::Security)], 3);
    assert_eq!(backlog[rank(Class::Telemetry)], 3);
    assert!(oldest.is_some());
    for (c, seq) in Class::ALL.iter().zip(feed.cursors()) {
        j.set_cursor("county", *c, seq).await.unwrap();
    }
    let (backlog, _, _) =
        campusgw::uplink::status::measure(&reader, "county", &Class::ALL).unwrap();
    assert_eq!(backlog, [0; 5]);
    assert_eq!(reader.counts().unwrap().iter().sum::<u64>(), 8);
    let (stored, actual) = accounted(&db);
    assert_eq!(stored, actual, "meta.data_bytes follows the quarantine");
    j.close().await;
    w.join();
}
