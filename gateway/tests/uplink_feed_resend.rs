//! The feed's resend queue (operator `retry-rejected`), without a transport: a resend goes
//! before anything else of its class, never moves a cursor, is handed back once confirmed,
//! returns to the queue when the connection drops, and is queued only once.
#![allow(missing_docs, clippy::unwrap_used)]

use campusgw::journal::{Journal, JournalOptions};
use campusgw::uplink::Filter;
use campusgw::uplink::feed::Feed;
use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};

fn ev(kind: &'static str, class: Class) -> Event {
    Event::stamp(
        NewEvent::new(Kind::from_static(kind), class),
        &DeviceId::new("panel-1").unwrap(),
        "test",
        &Location::default(),
    )
}

#[tokio::test]
async fn a_resend_goes_first_in_its_class_never_moves_the_cursor_and_survives_a_dropped_link() {
    let dir = tempfile::tempdir().unwrap();
    let (j, w) = Journal::open(JournalOptions::new(dir.path().join("journal.db"))).unwrap();
    let r = j
        .append(vec![
            ev("fire.alarm", Class::LifeSafety),
            ev("fire.alarm", Class::LifeSafety),
            ev("fire.alarm", Class::LifeSafety),
        ])
        .await
        .unwrap();
    // The first alarm was rejected earlier; the cursor is past it.
    j.set_cursor("county", Class::LifeSafety, r[0].seq)
        .await
        .unwrap();
    let mut feed = Feed::open("county", &j, Filter::default()).unwrap();
    let last = r[2].seq;
    let old = j.reader().unwrap().get(r[0].seq).unwrap().unwrap();
    feed.queue_resend(old.clone());
    feed.queue_resend(old);
    assert!(feed.is_resending(r[0].seq));
    let first = feed.next(last).unwrap().unwrap();
    assert_eq!(
        (first.seq, first.resend),
        (r[0].seq, true),
        "the resend goes first"
    );
    let second = feed.next(last).unwrap().unwrap();
    assert_eq!(
        (second.seq, second.resend),
        (r[1].seq, false),
        "queued once"
    );
    // The link drops: the resend is queued again, ahead of the class.
    feed.release_all();
    let again = feed.next(last).unwrap().unwrap();
    assert_eq!((again.seq, again.resend), (r[0].seq, true));
    assert!(!feed.confirm(Class::LifeSafety, r[0].seq), "no cursor move");
    assert_eq!(feed.take_resent(), vec![r[0].seq]);
    assert!(feed.take_resent().is_empty());
    assert!(!feed.is_resending(r[0].seq));
    assert_eq!(feed.cursors()[0], r[0].seq);
    let next = feed.next(last).unwrap().unwrap();
    assert_eq!(next.seq, r[1].seq);
    assert!(feed.confirm(Class::LifeSafety, r[1].seq));
    assert_eq!(feed.cursors()[0], r[1].seq);
    // A resend rejected again is only dropped: not handed back as delivered.
    let old = j.reader().unwrap().get(r[0].seq).unwrap().unwrap();
    feed.queue_resend(old);
    let o = feed.next(last).unwrap().unwrap();
    assert!(o.resend);
    assert!(!feed.reject(Class::LifeSafety, o.seq));
    assert!(feed.take_resent().is_empty());
    assert_eq!(feed.inflight(), 0);
    j.close().await;
    w.join();
}
