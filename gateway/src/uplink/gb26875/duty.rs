//! 查岗 (operator-on-duty checks) waiting for the console: the centre asks whether someone
//! is on duty in the fire-control room; an operator answers through
//! `POST /api/v1/uplinks/{name}/duty-check`, and the uplink uploads the answer (type 24,
//! operation flag b5 "查岗应答") with the operator's number.
//!
//! Kept in memory only, on the uplink's status: a check open when the gateway restarts is
//! lost (the centre then records it unanswered and asks again at its next check); the
//! `fire_centre.duty_check` event that announced it stays in the journal.

use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;

/// One open check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DutyCheck {
    /// The centre's serial of the check.
    pub serial: u16,
    /// Minutes the centre gave to answer (0: none given).
    pub minutes: u8,
    /// When it arrived.
    pub opened_at: DateTime<Utc>,
}

impl DutyCheck {
    /// When the answer is due (10 minutes when the centre gave no time).
    pub fn due(&self) -> DateTime<Utc> {
        let m = if self.minutes == 0 { 10 } else { self.minutes };
        self.opened_at + chrono::Duration::minutes(i64::from(m))
    }
}

/// An operator's answer, waiting to be uploaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DutyAnswer {
    /// The check answered.
    pub check: DutyCheck,
    /// Who answered (console user).
    pub by: String,
    /// Operator number uploaded (操作员编号).
    pub operator: u8,
}

/// Why an answer was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DutyError {
    /// No check is open.
    #[error("the centre has no open duty check")]
    NoneOpen,
    /// Someone answered already; the upload is under way.
    #[error("the duty check was already answered by {0}")]
    Answered(String),
}

#[derive(Debug, Default)]
struct Desk {
    open: Option<DutyCheck>,
    answer: Option<DutyAnswer>,
    /// The open check's due time passed and that was reported.
    missed: bool,
}

/// The open check and its answer, shared by the uplink task and the console.
#[derive(Debug, Default)]
pub struct DutyDesk {
    desk: Mutex<Desk>,
    answered: Notify,
}

impl DutyDesk {
    fn lock(&self) -> std::sync::MutexGuard<'_, Desk> {
        self.desk
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new check from the centre (replaces an older one still open).
    pub fn open(&self, check: DutyCheck) {
        let mut d = self.lock();
        d.open = Some(check);
        d.answer = None;
        d.missed = false;
    }

    /// The open check still unanswered, not yet reported missed: with how long until it
    /// is due (zero once overdue).
    pub fn unanswered(&self, now: DateTime<Utc>) -> Option<(DutyCheck, std::time::Duration)> {
        let d = self.lock();
        if d.missed || d.answer.is_some() {
            return None;
        }
        let c = d.open.clone()?;
        let left = (c.due() - now).to_std().unwrap_or_default();
        Some((c, left))
    }

    /// The open check `check` passed its due time unanswered (reported once; it stays
    /// open and can still be answered late).
    pub fn mark_missed(&self, check: &DutyCheck) {
        let mut d = self.lock();
        if d.open.as_ref() == Some(check) {
            d.missed = true;
        }
    }

    /// The open check, if any.
    pub fn current(&self) -> Option<DutyCheck> {
        self.lock().open.clone()
    }

    /// An operator answers the open check.
    ///
    /// # Errors
    /// [`DutyError`] when none is open or it was answered.
    pub fn answer(&self, by: &str, operator: u8) -> Result<DutyCheck, DutyError> {
        let mut d = self.lock();
        if let Some(a) = &d.answer {
            return Err(DutyError::Answered(a.by.clone()));
        }
        let check = d.open.clone().ok_or(DutyError::NoneOpen)?;
        d.answer = Some(DutyAnswer {
            check: check.clone(),
            by: by.to_owned(),
            operator,
        });
        drop(d);
        self.answered.notify_one();
        Ok(check)
    }

    /// Whether an answer waits for its upload.
    pub fn answer_waiting(&self) -> bool {
        self.lock().answer.is_some()
    }

    /// The waiting answer (it stays until [`DutyDesk::uploaded`]).
    pub fn pending_answer(&self) -> Option<DutyAnswer> {
        self.lock().answer.clone()
    }

    /// The centre confirmed the answer to `check`: closed.
    pub fn uploaded(&self, check: &DutyCheck) {
        let mut d = self.lock();
        if d.open.as_ref() == Some(check) {
            d.open = None;
            d.answer = None;
        }
    }

    /// Waits for an operator's answer (cancel-safe).
    pub async fn answered(&self) {
        self.answered.notified().await;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    #[test]
    fn a_check_is_answered_once_and_closed_when_uploaded() {
        let d = DutyDesk::default();
        assert_eq!(d.answer("wang", 1), Err(DutyError::NoneOpen));
        let c = DutyCheck {
            serial: 7,
            minutes: 10,
            opened_at: Utc::now(),
        };
        d.open(c.clone());
        assert_eq!(d.answer("wang", 1).unwrap(), c);
        assert_eq!(d.answer("li", 2), Err(DutyError::Answered("wang".into())));
        assert!(d.answer_waiting());
        d.uploaded(&c);
        assert!(d.current().is_none());
        assert!(!d.answer_waiting());
    }

    #[test]
    fn an_overdue_check_is_reported_missed_once_and_can_still_be_answered() {
        let d = DutyDesk::default();
        let opened = Utc::now() - chrono::Duration::minutes(11);
        let c = DutyCheck {
            serial: 8,
            minutes: 10,
            opened_at: opened,
        };
        d.open(c.clone());
        let (due, left) = d.unanswered(Utc::now()).unwrap();
        assert_eq!((due, left), (c.clone(), std::time::Duration::ZERO));
        assert_eq!(
            d.unanswered(opened).unwrap().1,
            std::time::Duration::from_secs(600)
        );
        d.mark_missed(&c);
        assert!(d.unanswered(Utc::now()).is_none(), "reported once");
        assert!(d.answer("wang", 1).is_ok(), "a late answer is still taken");
    }
}
