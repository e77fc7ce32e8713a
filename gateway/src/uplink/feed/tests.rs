//! The feed as a pure state machine (rumqtt-style): a fixed journal, then any interleaving
//! of `next`, `confirm` and `release_all` checked against a model of the contract.

use std::collections::{BTreeSet, HashMap};

use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use proptest::prelude::*;

use super::{Feed, PAGE};
use crate::journal::{Journal, JournalOptions, WriterHandle};
use crate::uplink::filter::Filter;

/// A journal in a temp dir holding `classes.len()` events, the i-th of class `classes[i]`.
struct Fixture {
    journal: Journal,
    writer: Option<WriterHandle>,
    rt: tokio::runtime::Runtime,
    /// seq -> class of every event appended.
    classes: HashMap<u64, Class>,
    last: u64,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new(classes: &[Class]) -> Fixture {
        let events: Vec<(Class, &'static str)> =
            classes.iter().map(|c| (*c, "test.event")).collect();
        Fixture::with_kinds(&events)
    }

    fn with_kinds(planned: &[(Class, &'static str)]) -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (journal, writer) =
            Journal::open(JournalOptions::new(dir.path().join("journal.db"))).expect("journal");
        let device = DeviceId::new("dev-1").expect("valid id");
        let events: Vec<Event> = planned
            .iter()
            .map(|(c, kind)| {
                Event::stamp(
                    NewEvent::new(Kind::from_static(kind), *c),
                    &device,
                    "test",
                    &Location::default(),
                )
            })
            .collect();
        let receipts = rt
            .block_on(journal.append(events))
            .expect("appended durably");
        let classes: HashMap<u64, Class> = receipts
            .iter()
            .zip(planned)
            .map(|(r, (c, _))| (r.seq, *c))
            .collect();
        let last = receipts.last().map_or(0, |r| r.seq);
        Fixture {
            journal,
            writer: Some(writer),
            rt,
            classes,
            last,
            _dir: dir,
        }
    }

    fn feed(&self) -> Feed {
        Feed::open("county", &self.journal, Filter::default()).expect("feed opens")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.rt.block_on(self.journal.close());
        if let Some(w) = self.writer.take() {
            w.join();
        }
    }
}

/// What the contract says the feed must do, per class: events confirmed, in flight, unsent.
#[derive(Default)]
struct Model {
    confirmed: BTreeSet<u64>,
    inflight: BTreeSet<u64>,
    /// Per class rank: the cursor when the last resync came (cursors never move back).
    floor: [u64; 5],
}

impl Model {
    /// The next event due: the lowest unsent seq of the highest class that has one.
    fn due(&self, fx: &Fixture) -> Option<u64> {
        Class::ALL.iter().find_map(|c| {
            let mut seqs: Vec<u64> = fx
                .classes
                .iter()
                .filter(|(s, k)| {
                    *k == c && !self.confirmed.contains(s) && !self.inflight.contains(s)
                })
                .map(|(s, _)| *s)
                .collect();
            seqs.sort_unstable();
            seqs.first().copied()
        })
    }

    /// The highest seq of `class` below which every event of the class is confirmed.
    fn cursor(&self, fx: &Fixture, class: Class) -> u64 {
        let mut seqs: Vec<u64> = fx
            .classes
            .iter()
            .filter(|(_, k)| **k == class)
            .map(|(s, _)| *s)
            .collect();
        seqs.sort_unstable();
        let prefix = seqs
            .iter()
            .take_while(|s| self.confirmed.contains(s))
            .last()
            .copied()
            .unwrap_or(0);
        prefix.max(self.floor[usize::from(class.rank())])
    }

    /// A county resync from `from` (nothing in flight): every event of a class past
    /// `min(cursor, from - 1)` is due again; those up to there count as done (the latest
    /// resync decides, an earlier one not yet served is replaced).
    fn resync(&mut self, fx: &Fixture, from: u64) {
        for c in Class::ALL {
            let cursor = self.cursor(fx, c);
            self.floor[usize::from(c.rank())] = cursor;
            let keep = cursor.min(from.saturating_sub(1));
            for (s, k) in &fx.classes {
                if *k == c {
                    if *s <= keep {
                        self.confirmed.insert(*s);
                    } else {
                        self.confirmed.remove(s);
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Next,
    /// Confirms the i-th (mod len) event in flight, or repeats an earlier confirmation.
    Confirm(usize),
    /// A PUBACK that arrives twice.
    ConfirmAgain(usize),
    ReleaseAll,
    /// A county resync from the i-th (mod len) seq, applied when nothing is in flight.
    Resync(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Next),
        3 => any::<usize>().prop_map(Op::Confirm),
        1 => any::<usize>().prop_map(Op::ConfirmAgain),
        1 => Just(Op::ReleaseAll),
        1 => any::<u64>().prop_map(Op::Resync),
    ]
}

fn class() -> impl Strategy<Value = Class> {
    prop::sample::select(Class::ALL.to_vec())
}

/// Applies `ops` to a fresh feed and to the model, checking the contract after each.
fn check(fx: &Fixture, ops: &[Op]) -> Result<(), TestCaseError> {
    let mut feed = fx.feed();
    let mut m = Model::default();
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Next => {
                let got = feed.next(fx.last).expect("journal readable");
                let want = m.due(fx);
                prop_assert_eq!(got.as_ref().map(|o| o.seq), want, "step {}: {:?}", step, op);
                if let Some(o) = got {
                    prop_assert_eq!(Some(&o.class), fx.classes.get(&o.seq));
                    prop_assert_eq!(o.event.seq, o.seq);
                    m.inflight.insert(o.seq);
                }
            }
            Op::Confirm(i) => {
                let Some(seq) = m.inflight.iter().nth(i % m.inflight.len().max(1)).copied() else {
                    continue;
                };
                let class = fx.classes[&seq];
                let before = feed.cursors()[usize::from(class.rank())];
                m.inflight.remove(&seq);
                m.confirmed.insert(seq);
                let moved = feed.confirm(class, seq);
                let after = feed.cursors()[usize::from(class.rank())];
                prop_assert_eq!(moved, after != before, "step {}: confirm's verdict", step);
            }
            Op::ConfirmAgain(i) => {
                let Some(seq) = m
                    .confirmed
                    .iter()
                    .nth(i % m.confirmed.len().max(1))
                    .copied()
                else {
                    continue;
                };
                prop_assert!(
                    !feed.confirm(fx.classes[&seq], seq),
                    "a repeat moves nothing"
                );
            }
            Op::ReleaseAll => {
                feed.release_all();
                m.inflight.clear();
            }
            Op::Resync(i) => {
                if !m.inflight.is_empty() {
                    continue;
                }
                let from = 1 + i % (fx.last + 1);
                feed.resync(from);
                m.resync(fx, from);
            }
        }
        prop_assert_eq!(feed.inflight(), m.inflight.len(), "step {}: inflight", step);
        for c in Class::ALL {
            prop_assert_eq!(
                feed.cursors()[usize::from(c.rank())],
                m.cursor(fx, c),
                "step {}: {} cursor is the max contiguous confirmed seq",
                step,
                c
            );
        }
    }
    Ok(())
}

/// Any interleaving of next/confirm/release_all (and county resyncs): the cursor of each
/// class is the highest seq of its contiguous confirmed prefix, never moving back; `next`
/// hands out the oldest unsent event of the highest class, so every released event is
/// handed out again until it is confirmed.
#[test]
fn any_interleaving_keeps_cursors_on_the_contiguous_confirmed_prefix_and_resends_until_confirmed() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    let strategy = (
        prop::collection::vec(class(), 1..40),
        prop::collection::vec(op(), 1..200),
    );
    runner
        .run(&strategy, |(classes, ops)| {
            check(&Fixture::new(&classes), &ops)
        })
        .expect("the feed follows its contract");
}

/// A backlog of all five classes, journaled lowest class first, goes out in class order.
#[test]
fn a_backlog_of_all_five_classes_goes_out_highest_class_first() {
    let mut classes = Vec::new();
    for c in Class::ALL.iter().rev() {
        classes.extend(std::iter::repeat_n(*c, 3));
    }
    let fx = Fixture::new(&classes);
    let mut feed = fx.feed();
    let mut order = Vec::new();
    while let Some(o) = feed.next(fx.last).expect("journal readable") {
        order.push(o.class);
    }
    let want: Vec<Class> = Class::ALL
        .iter()
        .flat_map(|c| std::iter::repeat_n(*c, 3))
        .collect();
    assert_eq!(order, want);
}

/// Confirming out of order moves the cursor only once the gap before it is confirmed, and
/// then over the whole contiguous run.
#[test]
fn an_out_of_order_confirmation_waits_for_the_gap_before_it() {
    let fx = Fixture::new(&[Class::LifeSafety; 4]);
    let mut feed = fx.feed();
    let seqs: Vec<u64> = std::iter::from_fn(|| feed.next(fx.last).expect("readable"))
        .map(|o| o.seq)
        .collect();
    assert_eq!(seqs.len(), 4);
    assert!(!feed.confirm(Class::LifeSafety, seqs[1]));
    assert!(!feed.confirm(Class::LifeSafety, seqs[2]));
    assert_eq!(feed.cursors()[0], 0, "nothing before the gap is confirmed");
    assert!(feed.confirm(Class::LifeSafety, seqs[0]));
    assert_eq!(
        feed.cursors()[0],
        seqs[2],
        "over the contiguous run, not past the gap"
    );
    assert!(feed.confirm(Class::LifeSafety, seqs[3]));
    assert_eq!(feed.cursors()[0], seqs[3]);
}

/// More than a page per class: each lane refills from the journal, and the order and the
/// cursor stay right across page boundaries.
#[test]
fn lanes_refill_across_pages_without_skipping_or_repeating() {
    let mut classes = vec![Class::Telemetry; PAGE + 10];
    classes.extend(vec![Class::Security; PAGE + 5]);
    let fx = Fixture::new(&classes);
    let mut feed = fx.feed();
    let mut seen = Vec::new();
    while let Some(o) = feed.next(fx.last).expect("readable") {
        assert!(
            feed.confirm(o.class, o.seq),
            "in order: every confirm moves"
        );
        seen.push((o.class, o.seq));
    }
    assert_eq!(seen.len(), classes.len());
    let first_telemetry = seen.iter().position(|(c, _)| *c == Class::Telemetry);
    assert_eq!(first_telemetry, Some(PAGE + 5), "security drained first");
    assert!(seen.windows(2).all(|w| w[0].0 != w[1].0 || w[0].1 < w[1].1));
    assert_eq!(feed.cursors()[1], fx.last);
    assert_eq!(feed.cursors()[4], (PAGE + 10) as u64);
}

/// A page of filtered-out kinds in a high class must not let a lower class overtake the
/// wanted event right behind that page (DESIGN §4 "Delivery": a pending life_safety event
/// always goes before older telemetry).
#[test]
fn a_page_of_filtered_kinds_does_not_let_a_lower_class_overtake_a_wanted_alarm() {
    let mut planned = vec![(Class::Telemetry, "sensor.reading")];
    planned.extend(std::iter::repeat_n((Class::LifeSafety, "panic.test"), PAGE));
    planned.push((Class::LifeSafety, "fire.alarm"));
    let fx = Fixture::with_kinds(&planned);
    let mut issues = Vec::new();
    let filter = Filter::parse(
        None,
        Some(vec!["fire.*".into(), "sensor.*".into()]),
        &campusgw_sdk::FieldPath::root(),
        &mut issues,
    )
    .expect("valid filter");
    let mut feed = Feed::open("county", &fx.journal, filter).expect("feed opens");
    let first = feed
        .next(fx.last)
        .expect("readable")
        .expect("something due");
    assert_eq!(
        (first.class, first.event.kind.as_str()),
        (Class::LifeSafety, "fire.alarm"),
        "the alarm goes before older telemetry"
    );
    let second = feed
        .next(fx.last)
        .expect("readable")
        .expect("telemetry due");
    assert_eq!(second.class, Class::Telemetry);
    assert_eq!(
        feed.cursors()[0],
        fx.last - 1,
        "the skipped kinds count as confirmed"
    );
}

/// The uplinks send the journal row's bytes (seq filled in) instead of parsing and
/// re-serializing the event: the bytes must be exactly what serializing the event gives,
/// every field set, so a county consumer cannot tell the difference.
#[test]
fn a_wire_event_is_byte_for_byte_the_serialized_event() {
    use super::WireEvent;
    let mut e = Event::stamp(
        NewEvent::new(Kind::from_static("sensor.readings"), Class::Telemetry)
            .payload(serde_json::json!({
                "points": {"r0": 17263, "boiler_temp": 65.2, "b": -1.5e-7},
                "units": {"boiler_temp": "°C"}, "raw": {"boiler_temp": 652},
                "nested": [null, true, "x\"y\\z\u{1}"], "coalesced": 3
            }))
            .occurred_at(chrono::Utc::now())
            .origin_ref("frame-17")
            .device(DeviceId::new("sub-1").expect("valid id"))
            .location(Location::from_path("main/A/3/east/smoke-10-2").expect("path")),
        &DeviceId::new("dev-1").expect("valid id"),
        "modbus_tcp",
        &Location::default(),
    );
    let stored = serde_json::to_string(&e).expect("serializes"); // as journaled: seq 0
    let w = WireEvent::from_row(42, rusqlite::types::ValueRef::Text(stored.as_bytes()))
        .expect("decodes");
    e.seq = 42;
    assert_eq!(
        String::from_utf8_lossy(&w.json),
        serde_json::to_string(&e).expect("serializes")
    );
    assert_eq!((w.seq, w.id, w.class), (42, e.id, e.class));
    assert_eq!(w.kind, e.kind);
    assert_eq!(
        WireEvent::from_event(&e),
        w,
        "a resend's wire form is the same"
    );
}

/// A row that is not an event's JSON form is still refused (and so skipped and
/// quarantined by the reader), though its payload is not parsed into a tree.
#[test]
fn a_wire_event_refuses_rows_that_are_not_events() {
    use super::WireEvent;
    use rusqlite::types::ValueRef;
    let e = Event::stamp(
        NewEvent::new(Kind::from_static("sensor.readings"), Class::Telemetry),
        &DeviceId::new("dev-1").expect("valid id"),
        "modbus_tcp",
        &Location::default(),
    );
    let good = serde_json::to_string(&e).expect("serializes");
    let bad_payload = good.replace(r#""payload":{}"#, r#""payload":{"a":}"#);
    let bad_kind = good.replace("sensor.readings", "Not A Kind");
    let extra = good.replacen('{', r#"{"surprise":1,"#, 1);
    for (what, body) in [
        ("truncated", &good[..good.len() / 2]),
        ("invalid JSON in the payload", bad_payload.as_str()),
        ("an invalid kind", bad_kind.as_str()),
        ("an unknown field", extra.as_str()),
    ] {
        let r = WireEvent::from_row(7, ValueRef::Text(body.as_bytes()));
        assert!(
            matches!(r, Err(crate::journal::JournalError::Corrupt { seq: 7, .. })),
            "{what}: {r:?}"
        );
    }
    assert!(WireEvent::from_row(7, ValueRef::Integer(3)).is_err());
}
