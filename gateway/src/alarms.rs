//! The alarm board as the console and the API see it: [`AlarmStore`].
//!
//! Reads the `alarms` projection, the alarm change log and the rule action log that the
//! rules runner writes (journal migration 5, `journal/rules.rs`), always in the same
//! transaction as the `alarm.*` events they mirror, so the board never shows a change the
//! journal does not hold.
//!
//! Operators never change alarm state directly (event sourcing, docs/rules.md):
//! [`AlarmStore::acknowledge`] and [`AlarmStore::resolve`] journal an `alarm.acknowledge`
//! / `alarm.resolve` event (class `operations`, device = the gateway); the engine consumes
//! it through the journal tail like any event and answers with the `alarm.acknowledged` /
//! `alarm.resolved` change, which the runner journals and projects, and
//! [`AlarmStore::subscribe`] announces. So an acknowledgement survives a crash the moment
//! the call returns, and the county sees the same lifecycle in the same order.

use std::sync::{Arc, Mutex};

use campusgw_sdk::{Class, DeviceId, Event, Kind, Location, NewEvent};
use chrono::{DateTime, Utc};
use tokio::sync::broadcast;

use crate::journal::rules::{AlarmQuery, RulesReader, StoredAction, StoredAlarm};
use crate::journal::{Journal, JournalError};

/// Kind of the operator's acknowledgement (payload `alarm_id`, `by`, `note`).
pub const ALARM_ACKNOWLEDGE: &str = "alarm.acknowledge";
/// Kind of the operator's resolution (payload `alarm_id`, `by`, `note`).
pub const ALARM_RESOLVE: &str = "alarm.resolve";

/// Errors of the alarm board.
#[derive(Debug, thiserror::Error)]
pub enum AlarmError {
    /// No alarm has that id.
    #[error("no alarm with id {id:?}")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// The alarm is resolved; it takes no more acknowledgements or resolutions.
    #[error("alarm {id:?} is already resolved")]
    AlreadyResolved {
        /// The alarm.
        id: String,
    },
    /// A pagination cursor that this store did not hand out.
    #[error("invalid cursor {cursor:?}")]
    BadCursor {
        /// What was given.
        cursor: String,
    },
    /// The journal could not be read.
    #[error("alarm store: {0}")]
    Journal(#[from] JournalError),
    /// The operator's event could not be journaled.
    #[error("alarm store: the operator's event was not journaled: {0}")]
    Emit(#[from] campusgw_sdk::driver::EmitError),
}

/// What [`AlarmStore::list`] returns.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct AlarmFilter {
    /// Only alarms in this state (`raised`, `acknowledged`, `resolved`); none: all.
    #[serde(default)]
    pub state: Option<String>,
    /// Only this severity (`critical`, `major`, `minor`, `info`).
    #[serde(default)]
    pub severity: Option<String>,
    /// Only this building.
    #[serde(default)]
    pub building: Option<String>,
    /// Only alarms raised at or after this time.
    #[serde(default)]
    pub since: Option<DateTime<Utc>>,
    /// At most this many (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// The `next` cursor of the previous page.
    #[serde(default)]
    pub cursor: Option<String>,
}

/// One alarm as listed.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AlarmView {
    /// Deterministic id (`{rule}:{cause_seq}`-like).
    pub id: String,
    /// The rule that raised it.
    pub rule: String,
    /// `critical`, `major`, `minor`, `info`.
    pub severity: String,
    /// `raised`, `acknowledged`, `resolved`.
    pub state: String,
    /// The alarm's class.
    pub class: Class,
    /// Building, floor, zone of the alarm's location.
    pub building: Option<String>,
    /// Floor.
    pub floor: Option<String>,
    /// Zone.
    pub zone: Option<String>,
    /// Headline.
    pub title: String,
    /// When it was raised.
    pub raised_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// Seq of the `alarm.*` event of its last change.
    pub last_seq: u64,
    /// The engine's full alarm (source seqs, escalation step, acknowledgement, test flag).
    pub alarm: serde_json::Value,
    /// Pagination: pass as [`AlarmFilter::cursor`] to continue after this one.
    pub cursor: String,
}

/// One alarm with its history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct AlarmDetail {
    /// The alarm.
    pub view: AlarmView,
    /// Changes and actions, oldest first.
    pub timeline: Vec<TimelineEntry>,
}

/// One step of an alarm's history.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TimelineEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// `raised`, `updated`, `escalated`, `acknowledged`, `resolved` (changes) or
    /// `command`, `notify`, `forward` (actions).
    pub what: String,
    /// The change's `alarm.*` event seq (changes only).
    pub seq: Option<u64>,
    /// Action status (`pending`, `done`, `failed`, `gave_up`, ...; actions only).
    pub status: Option<String>,
    /// Attempts made (actions only).
    pub attempts: Option<u32>,
    /// The alarm at that change, or the action and its result.
    pub detail: serde_json::Value,
}

/// The alarm board (cheap to clone).
#[derive(Clone)]
pub struct AlarmStore {
    journal: Journal,
    reader: Arc<Mutex<RulesReader>>,
    gateway: DeviceId,
    changes: broadcast::Sender<AlarmView>,
}

fn micros(t: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t).unwrap_or_default()
}

impl AlarmView {
    fn of(a: StoredAlarm) -> AlarmView {
        AlarmView {
            cursor: format!("{}:{}", a.raised_at, a.id),
            id: a.id,
            rule: a.rule,
            severity: a.severity,
            state: a.state,
            class: a.class,
            building: a.building,
            floor: a.floor,
            zone: a.zone,
            title: a.title,
            raised_at: micros(a.raised_at),
            updated_at: micros(a.updated_at),
            last_seq: a.updated_seq,
            alarm: a.body,
        }
    }
}

impl AlarmStore {
    /// A store over `journal`'s rules tables; operator events are journaled as device
    /// `gateway`.
    ///
    /// # Errors
    /// [`AlarmError::Journal`] if the read connection cannot be opened.
    pub fn new(journal: Journal, gateway: DeviceId) -> Result<AlarmStore, AlarmError> {
        let reader = journal.rules_reader()?;
        let (changes, _) = broadcast::channel(1024);
        Ok(AlarmStore {
            journal,
            reader: Arc::new(Mutex::new(reader)),
            gateway,
            changes,
        })
    }

    fn read<T>(
        &self,
        f: impl FnOnce(&RulesReader) -> Result<T, JournalError>,
    ) -> Result<T, AlarmError> {
        let guard = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&guard)?)
    }

    /// Alarms matching `filter`, newest raised first.
    ///
    /// # Errors
    /// [`AlarmError::BadCursor`], [`AlarmError::Journal`].
    pub fn list(&self, filter: &AlarmFilter) -> Result<Vec<AlarmView>, AlarmError> {
        let before = match &filter.cursor {
            None => None,
            Some(c) => Some(
                c.split_once(':')
                    .and_then(|(t, id)| Some((t.parse::<i64>().ok()?, id.to_owned())))
                    .ok_or_else(|| AlarmError::BadCursor { cursor: c.clone() })?,
            ),
        };
        let q = AlarmQuery {
            states: filter.state.iter().cloned().collect(),
            severity: filter.severity.clone(),
            building: filter.building.clone(),
            since: filter.since.map(|t| t.timestamp_micros()),
            before,
            limit: filter.limit.unwrap_or(100).clamp(1, 1000),
        };
        let rows = self.read(|r| r.alarms(&q))?;
        Ok(rows.into_iter().map(AlarmView::of).collect())
    }

    /// One alarm with its timeline (changes, commands sent and their results, notifications).
    ///
    /// # Errors
    /// [`AlarmError::Journal`].
    pub fn get(&self, id: &str) -> Result<Option<AlarmDetail>, AlarmError> {
        let Some(row) = self.read(|r| r.alarm(id))? else {
            return Ok(None);
        };
        let log = self.read(|r| r.alarm_log(id))?;
        let actions = self.read(|r| r.actions_of_alarm(id))?;
        let mut timeline: Vec<TimelineEntry> = log
            .into_iter()
            .map(|l| TimelineEntry {
                at: micros(l.at),
                what: l.change,
                seq: Some(l.seq),
                status: None,
                attempts: None,
                detail: l.body,
            })
            .chain(actions.into_iter().map(action_entry))
            .collect();
        timeline.sort_by_key(|t| t.at);
        Ok(Some(AlarmDetail {
            view: AlarmView::of(row),
            timeline,
        }))
    }

    /// Journals the operator's acknowledgement; the engine turns it into
    /// `alarm.acknowledged` (module doc). Returns once the event is durable.
    ///
    /// # Errors
    /// [`AlarmError::NotFound`], [`AlarmError::AlreadyResolved`], [`AlarmError::Emit`].
    pub async fn acknowledge(&self, id: &str, by: &str, note: &str) -> Result<(), AlarmError> {
        self.operator_event(ALARM_ACKNOWLEDGE, id, by, note).await
    }

    /// Journals the operator's resolution; the engine turns it into `alarm.resolved`.
    ///
    /// # Errors
    /// [`AlarmError::NotFound`], [`AlarmError::AlreadyResolved`], [`AlarmError::Emit`].
    pub async fn resolve(&self, id: &str, by: &str, note: &str) -> Result<(), AlarmError> {
        self.operator_event(ALARM_RESOLVE, id, by, note).await
    }

    async fn operator_event(
        &self,
        kind: &'static str,
        id: &str,
        by: &str,
        note: &str,
    ) -> Result<(), AlarmError> {
        let row = self
            .read(|r| r.alarm(id))?
            .ok_or_else(|| AlarmError::NotFound { id: id.to_owned() })?;
        if row.state == "resolved" {
            return Err(AlarmError::AlreadyResolved { id: id.to_owned() });
        }
        let payload = serde_json::json!({ "alarm_id": id, "by": by, "note": note });
        let event = Event::stamp(
            NewEvent::new(Kind::from_static(kind), Class::Operations).payload(payload),
            &self.gateway,
            "operator",
            &Location::default(),
        );
        self.journal.append(vec![event]).await?;
        Ok(())
    }

    /// Live alarm changes as the runner commits them. A receiver that lags gets `Lagged`
    /// and should list again.
    pub fn subscribe(&self) -> broadcast::Receiver<AlarmView> {
        self.changes.subscribe()
    }

    /// Announces the committed change of alarm `id` (the runner calls this after each
    /// step that wrote alarm rows).
    pub fn announce(&self, id: &str) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        match self.read(|r| r.alarm(id)) {
            Ok(Some(row)) => {
                let _ = self.changes.send(AlarmView::of(row));
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, alarm = id, "alarm change not announced"),
        }
    }
}

fn action_entry(a: StoredAction) -> TimelineEntry {
    TimelineEntry {
        at: micros(a.created_at),
        what: a.kind,
        seq: None,
        status: Some(a.status),
        attempts: Some(a.attempts),
        detail: serde_json::json!({ "action": a.action, "result": a.result, "cause_seq": a.cause_seq, "updated_at": micros(a.updated_at) }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::journal::JournalOptions;
    use crate::journal::rules::{ActionRow, AlarmRow, RulesStep};

    fn alarm_event(kind: &'static str) -> Event {
        Event::stamp(
            NewEvent::new(Kind::from_static(kind), Class::LifeSafety),
            &DeviceId::new("gw").unwrap(),
            "rules",
            &Location::default(),
        )
    }

    fn row(id: &str, state: &str, change: &str, raised_at: i64) -> AlarmRow {
        AlarmRow {
            id: id.into(),
            rule: "fire".into(),
            severity: "critical".into(),
            state: state.into(),
            class: Class::LifeSafety,
            building: Some("A".into()),
            floor: None,
            zone: None,
            title: "Confirmed fire".into(),
            raised_at,
            change: change.into(),
            body: serde_json::json!({ "id": id }).to_string(),
            event_index: 0,
        }
    }

    #[tokio::test]
    async fn store_lists_projected_alarms_pages_them_and_journals_operator_acknowledgements() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = JournalOptions::new(dir.path().join("j.db"));
        o.quick_check = false;
        let (j, w) = crate::journal::Journal::open(o).unwrap();
        for (id, t) in [("fire:1", 10), ("fire:2", 20), ("fire:3", 30)] {
            let step = RulesStep {
                consumer: "rules".into(),
                cursor: Some(t as u64),
                state: Some("{}".into()),
                events: vec![alarm_event("alarm.raised")],
                alarms: vec![row(id, "raised", "raised", t)],
                actions: vec![ActionRow {
                    key: format!("{id}:0"),
                    rule: "fire".into(),
                    cause_seq: t as u64,
                    alarm: Some(id.into()),
                    kind: "command".into(),
                    action: "{\"kind\":\"door.unlock\"}".into(),
                    status: "pending".into(),
                }],
                updates: vec![],
            };
            j.rules_step(step).await.unwrap();
        }
        let store = AlarmStore::new(j.clone(), DeviceId::new("gw").unwrap()).unwrap();
        let page = store
            .list(&AlarmFilter {
                limit: Some(2),
                ..AlarmFilter::default()
            })
            .unwrap();
        let ids: Vec<_> = page.iter().map(|a| a.id.as_str()).collect();
        assert_eq!(ids, ["fire:3", "fire:2"]);
        let rest = store
            .list(&AlarmFilter {
                cursor: Some(page[1].cursor.clone()),
                ..AlarmFilter::default()
            })
            .unwrap();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].id, "fire:1");
        let detail = store.get("fire:2").unwrap().expect("exists");
        let whats: Vec<_> = detail.timeline.iter().map(|t| t.what.as_str()).collect();
        assert_eq!(whats, ["raised", "command"]);
        store
            .acknowledge("fire:2", "wang", "on my way")
            .await
            .unwrap();
        let events = j.reader().unwrap().after(0, None, 100).unwrap();
        let ack = events
            .iter()
            .find(|e| e.kind.as_str() == ALARM_ACKNOWLEDGE)
            .expect("journaled");
        assert_eq!(ack.payload["alarm_id"], "fire:2");
        assert_eq!(ack.payload["by"], "wang");
        assert!(matches!(
            store.acknowledge("nope", "wang", "").await,
            Err(AlarmError::NotFound { .. })
        ));
        let mut resolved = row("fire:1", "resolved", "resolved", 10);
        resolved.event_index = 0;
        j.rules_step(RulesStep {
            consumer: "rules".into(),
            events: vec![alarm_event("alarm.resolved")],
            alarms: vec![resolved],
            ..RulesStep::default()
        })
        .await
        .unwrap();
        assert!(matches!(
            store.resolve("fire:1", "wang", "").await,
            Err(AlarmError::AlreadyResolved { .. })
        ));
        j.close().await;
        let _ = tokio::task::spawn_blocking(move || w.join()).await;
    }
}
