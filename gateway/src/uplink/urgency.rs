//! Alarm latency across outages (issue 22): whether an urgent event waits for an uplink,
//! and how old its oldest undelivered alarm is.
//!
//! - **Wake-up**: while the retry loop (`retry.rs`) sleeps in back-off it also waits on the
//!   journal's per-class heads ([`crate::journal::heads`]): when a commit moves the head of
//!   one of the uplink's `urgent_classes` past its cursor and the new event is one its
//!   filter forwards, the loop wakes at once and reconnects. While such an event is pending
//!   the back-off is capped at `urgent_backoff_max` (default 1 s, jittered down to half);
//!   when nothing urgent waits, the kind's long cap applies, so telemetry alone never makes
//!   a county broker serving hundreds of schools see a reconnect storm.
//! - **Own outage**: events about this uplink's own outage never count as pending for it:
//!   `uplink.down`, `uplink.alarm_delayed`, `uplink.alarm_delay_cleared` and `uplink.up`
//!   whose `payload.uplink` is its name, and any `alarm.*` event (the rules runner's alarm
//!   changes: the payload is the alarm, with `source_seqs`, the events that raised and
//!   updated it) whose every source event is one of those. Otherwise an outage would keep its own uplink in the fast cap.
//!   Another uplink's `uplink.down` does count: it is an alarm this uplink should carry.
//! - **Age**: the stats refresher measures the oldest undelivered *alarm* (classes
//!   `life_safety` and `security`, the classes whose rejection is recorded, the same
//!   exclusions) for `/healthz`, the console and
//!   `campusgw_uplink_oldest_undelivered_alarm_seconds`; past `alarm_delay_threshold` it
//!   journals one `uplink.alarm_delayed` (class `security`) per episode, and
//!   `uplink.alarm_delay_cleared` once the delayed alarms are delivered.
//!
//! The scan is incremental: a [`Scanner`] remembers, per class, how far it has looked past
//! the cursor without finding anything pending, so each event is read at most once while
//! its uplink is down (own-outage events and kinds the filter skips are passed over once).

use std::collections::HashMap;

use campusgw_sdk::{Class, Event};
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::filter::Filter;
use crate::journal::heads::Heads;
use crate::journal::{Journal, JournalError, JournalReader};

/// Events read per page while scanning past a cursor.
const SCAN_PAGE: usize = 256;

/// The kinds an uplink journals about its own outage (with `payload.uplink` = its name).
pub const OWN_OUTAGE_KINDS: [&str; 4] = [
    "uplink.down",
    "uplink.up",
    "uplink.alarm_delayed",
    "uplink.alarm_delay_cleared",
];

/// The first pending event found in one class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Its class.
    pub class: Class,
    /// Its seq.
    pub seq: u64,
    /// When the gateway received it.
    pub received_at: DateTime<Utc>,
}

/// Finds the first pending event of some classes past an uplink's cursors (see the
/// module doc); blocking SQLite reads, a few rows each call.
pub struct Scanner {
    uplink: String,
    filter: Filter,
    classes: Vec<Class>,
    reader: JournalReader,
    /// Per class rank: looked at every event up to here, nothing pending among them.
    checked: [u64; 5],
    /// Per class rank: the first pending event found.
    found: [Option<Pending>; 5],
    /// Whether the event at a seq is about this uplink's own outage (alarm sources).
    own: HashMap<u64, bool>,
}

impl Scanner {
    /// A scanner of `classes` for uplink `uplink` with its `filter`.
    ///
    /// # Errors
    /// The journal cannot be opened for reading.
    pub fn new(
        journal: &Journal,
        uplink: &str,
        filter: &Filter,
        classes: Vec<Class>,
    ) -> Result<Scanner, JournalError> {
        Ok(Scanner {
            uplink: uplink.to_owned(),
            filter: filter.clone(),
            classes,
            reader: journal.reader()?,
            checked: [0; 5],
            found: [None; 5],
            own: HashMap::new(),
        })
    }

    /// The classes it scans.
    pub fn classes(&self) -> &[Class] {
        &self.classes
    }

    /// The oldest pending event (by receive time) past `cursors`, looking up to `heads`.
    ///
    /// # Errors
    /// Journal read errors.
    pub fn oldest(
        &mut self,
        cursors: [u64; 5],
        heads: Heads,
    ) -> Result<Option<Pending>, JournalError> {
        let mut oldest: Option<Pending> = None;
        for c in self.classes.clone() {
            if let Some(p) = self.first_in(c, cursors, heads)?
                && oldest.is_none_or(|o| p.received_at < o.received_at)
            {
                oldest = Some(p);
            }
        }
        Ok(oldest)
    }

    /// Whether anything is pending past `cursors` (stops at the first class that has).
    ///
    /// # Errors
    /// Journal read errors.
    pub fn any(&mut self, cursors: [u64; 5], heads: Heads) -> Result<bool, JournalError> {
        for c in self.classes.clone() {
            if self.first_in(c, cursors, heads)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn first_in(
        &mut self,
        class: Class,
        cursors: [u64; 5],
        heads: Heads,
    ) -> Result<Option<Pending>, JournalError> {
        let r = usize::from(class.rank());
        let cursor = cursors[r];
        match self.found[r] {
            Some(p) if p.seq > cursor => return Ok(Some(p)),
            Some(p) => {
                // Delivered (or skipped): look again from there.
                self.found[r] = None;
                self.checked[r] = self.checked[r].max(p.seq);
            }
            None => {}
        }
        let mut from = self.checked[r].max(cursor);
        while from < heads[r] {
            let page = self.reader.after(from, Some(class), SCAN_PAGE)?;
            let Some(last) = page.last().map(|e| e.seq) else {
                break;
            };
            for e in &page {
                if self.counts(e)? {
                    let p = Pending {
                        class,
                        seq: e.seq,
                        received_at: e.received_at,
                    };
                    self.checked[r] = e.seq - 1;
                    self.found[r] = Some(p);
                    return Ok(Some(p));
                }
            }
            from = last;
            self.checked[r] = last;
            if page.len() < SCAN_PAGE {
                break;
            }
        }
        Ok(None)
    }

    /// Whether `e` (of a scanned class) counts as pending for this uplink.
    fn counts(&mut self, e: &Event) -> Result<bool, JournalError> {
        if !self.filter.accepts(e.class, &e.kind) {
            return Ok(false);
        }
        Ok(!self.own_outage(e)?)
    }

    /// Whether `e` is about this uplink's own outage (module doc).
    fn own_outage(&mut self, e: &Event) -> Result<bool, JournalError> {
        if is_own_outage_event(e, &self.uplink) {
            return Ok(true);
        }
        let Some(sources) = alarm_sources(e) else {
            return Ok(false);
        };
        if sources.is_empty() {
            return Ok(false);
        }
        if self.own.len() > 4096 {
            self.own.clear();
        }
        for seq in sources {
            let own = match self.own.get(&seq) {
                Some(&o) => o,
                None => {
                    let o = self
                        .reader
                        .get(seq)?
                        .is_some_and(|s| is_own_outage_event(&s, &self.uplink));
                    self.own.insert(seq, o);
                    o
                }
            };
            if !own {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Whether `e` is one of [`OWN_OUTAGE_KINDS`] naming `uplink`.
pub fn is_own_outage_event(e: &Event, uplink: &str) -> bool {
    OWN_OUTAGE_KINDS.contains(&e.kind.as_str())
        && e.payload.get("uplink").and_then(serde_json::Value::as_str) == Some(uplink)
}

/// The source seqs of a rules-runner alarm change (`alarm.raised`, `alarm.updated`, ...).
fn alarm_sources(e: &Event) -> Option<Vec<u64>> {
    if !e.kind.as_str().starts_with("alarm.") {
        return None;
    }
    let seqs = e.payload.get("source_seqs")?.as_array()?;
    Some(seqs.iter().filter_map(serde_json::Value::as_u64).collect())
}

/// The retry loop's view: is an urgent event pending, and wait until one is.
pub(crate) struct Urgency {
    scanner: Option<Scanner>,
    heads: watch::Receiver<Heads>,
    name: String,
}

impl Urgency {
    /// For an uplink with `filter` (its `urgent_classes`); without any, never urgent.
    pub(crate) fn new(journal: &Journal, name: &str, filter: &Filter) -> Urgency {
        let classes = filter.urgent_classes();
        let scanner = if classes.is_empty() {
            None
        } else {
            match Scanner::new(journal, name, filter, classes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(uplink = %name, error = %e, "cannot read the journal for urgent events; this uplink backs off without the alarm wake-up");
                    None
                }
            }
        };
        Urgency {
            scanner,
            heads: journal.heads(),
            name: name.to_owned(),
        }
    }

    /// Whether an urgent event waits past `cursors`. A read error counts as pending (an
    /// alarm must not wait on a long back-off because the check failed).
    pub(crate) fn pending(&mut self, cursors: [u64; 5]) -> bool {
        let heads = *self.heads.borrow_and_update();
        let Some(s) = self.scanner.as_mut() else {
            return false;
        };
        match s.any(cursors, heads) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(uplink = %self.name, error = %e, "cannot check for urgent events; assuming one waits");
                true
            }
        }
    }

    /// Resolves when a commit makes an urgent event pending past `cursors` (never without
    /// urgent classes). Cancel-safe.
    pub(crate) async fn arrives(&mut self, cursors: [u64; 5]) {
        if self.scanner.is_none() {
            return std::future::pending().await;
        }
        loop {
            if self.heads.changed().await.is_err() {
                return std::future::pending().await;
            }
            if self.pending(cursors) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use campusgw_sdk::{DeviceId, Kind, Location, NewEvent};
    use serde_json::json;

    use super::*;
    use crate::journal::JournalOptions;

    fn ev(kind: &'static str, class: Class, payload: serde_json::Value) -> Event {
        let n = NewEvent::new(Kind::from_static(kind), class).payload(payload);
        Event::stamp(
            n,
            &DeviceId::new("gw").expect("id"),
            "test",
            &Location::default(),
        )
    }

    #[tokio::test]
    async fn own_outage_events_and_their_alarms_do_not_count_others_do() {
        let dir = tempfile::tempdir().expect("dir");
        let (journal, writer) =
            Journal::open(JournalOptions::new(dir.path().join("j.db"))).expect("journal");
        let filter = Filter::default()
            .with_urgency(
                super::super::filter::UrgentKeys {
                    classes: Some(vec![Class::LifeSafety, Class::Security]),
                    ..Default::default()
                },
                std::time::Duration::from_secs(60),
                &campusgw_sdk::FieldPath::root(),
                &mut Vec::new(),
            )
            .expect("filter");
        let own = journal
            .append(vec![ev(
                "uplink.down",
                Class::Security,
                json!({"uplink": "county", "reason": "network"}),
            )])
            .await
            .expect("append")[0]
            .seq;
        let alarm = |seq: u64| {
            ev(
                "alarm.raised",
                Class::Security,
                json!({"id": format!("uplink_down:{seq}"), "rule": "uplink_down", "source_seqs": [seq]}),
            )
        };
        journal.append(vec![alarm(own)]).await.expect("append");
        let mut s =
            Scanner::new(&journal, "county", &filter, filter.urgent_classes()).expect("scan");
        let heads = *journal.heads().borrow();
        assert_eq!(
            s.oldest([0; 5], heads).expect("scan"),
            None,
            "own outage only"
        );
        let theirs = journal
            .append(vec![ev(
                "uplink.down",
                Class::Security,
                json!({"uplink": "police"}),
            )])
            .await
            .expect("append")[0]
            .seq;
        let heads = *journal.heads().borrow();
        let p = s.oldest([0; 5], heads).expect("scan").expect("pending");
        assert_eq!(
            p.seq, theirs,
            "another uplink's outage is an alarm to carry"
        );
        // Delivered: nothing pending past it.
        let mut cursors = [0; 5];
        cursors[usize::from(Class::Security.rank())] = theirs;
        assert_eq!(s.oldest(cursors, heads).expect("scan"), None);
        let fire = journal
            .append(vec![ev("fire.alarm", Class::LifeSafety, json!({}))])
            .await
            .expect("append")[0]
            .seq;
        let heads = *journal.heads().borrow();
        assert!(s.any(cursors, heads).expect("scan"));
        assert_eq!(
            s.oldest(cursors, heads).expect("scan").map(|p| p.seq),
            Some(fire)
        );
        journal.close().await;
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("writer");
    }
}
