//! Named calendars for rule schedules: school hours, weekends, holidays, exams.
//!
//! A calendar says whether a local moment (in the rule set's time zone, Asia/Shanghai by
//! default) is in it: its weekday is listed (or none are), its date falls in one of its date
//! ranges (or it lists no `dates` at all), its time of day falls in one of its hour ranges
//! (or it lists none), and it is in none of its `except` calendars. `dates = []` means "no
//! day": that is how an empty `holidays` list reads until the school fills it in.
//!
//! Defaults ([`Calendars::default`]): `school_hours` Monday to Friday 07:00-18:00 except
//! `holidays`; `weekends` Saturday and Sunday; `holidays` and `exams` empty. Rule files
//! override them with `[[calendar]]` tables of the same name.

use std::collections::BTreeMap;

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Weekday};

/// One named calendar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendar {
    /// Weekdays in it; empty = every weekday.
    pub weekdays: Vec<Weekday>,
    /// Inclusive date ranges in it; `None` = every date, `Some(empty)` = no date.
    pub dates: Option<Vec<(NaiveDate, NaiveDate)>>,
    /// Half-open time-of-day ranges `[from, to)`; empty = all day. `to < from` wraps midnight.
    pub hours: Vec<(NaiveTime, NaiveTime)>,
    /// Calendars whose moments are taken out of this one (`school_hours` except `holidays`).
    pub except: Vec<String>,
}

impl Calendar {
    fn contains_own(&self, at: NaiveDateTime) -> bool {
        let day = at.date();
        let weekday_ok = self.weekdays.is_empty() || self.weekdays.contains(&day.weekday());
        let date_ok = match &self.dates {
            None => true,
            Some(ranges) => ranges.iter().any(|(a, b)| *a <= day && day <= *b),
        };
        let t = at.time();
        let hour_ok = self.hours.is_empty()
            || self.hours.iter().any(|(from, to)| {
                if from <= to {
                    *from <= t && t < *to
                } else {
                    t >= *from || t < *to
                }
            });
        weekday_ok && date_ok && hour_ok
    }
}

/// The calendars a rule set may name, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Calendars {
    map: BTreeMap<String, Calendar>,
}

impl Default for Calendars {
    fn default() -> Self {
        let hm = |h, m| NaiveTime::from_hms_opt(h, m, 0).unwrap_or(NaiveTime::MIN);
        let mut c = Calendars::empty();
        c.insert(
            "school_hours",
            Calendar {
                weekdays: vec![
                    Weekday::Mon,
                    Weekday::Tue,
                    Weekday::Wed,
                    Weekday::Thu,
                    Weekday::Fri,
                ],
                dates: None,
                hours: vec![(hm(7, 0), hm(18, 0))],
                except: vec!["holidays".into()],
            },
        );
        c.insert(
            "weekends",
            Calendar {
                weekdays: vec![Weekday::Sat, Weekday::Sun],
                dates: None,
                hours: vec![],
                except: vec![],
            },
        );
        for empty in ["holidays", "exams"] {
            c.insert(
                empty,
                Calendar {
                    weekdays: vec![],
                    dates: Some(vec![]),
                    hours: vec![],
                    except: vec![],
                },
            );
        }
        c
    }
}

impl Calendars {
    /// No calendars at all.
    pub fn empty() -> Calendars {
        Calendars {
            map: BTreeMap::new(),
        }
    }

    /// Adds or replaces a calendar.
    pub fn insert(&mut self, name: impl Into<String>, calendar: Calendar) {
        self.map.insert(name.into(), calendar);
    }

    /// Whether a calendar of that name exists.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.map.keys().map(String::as_str)
    }

    /// Whether local moment `at` is in calendar `name`; an unknown name is never in.
    /// `except` chains are followed at most 8 deep, so a cycle cannot loop.
    pub fn contains(&self, name: &str, at: NaiveDateTime) -> bool {
        self.contains_depth(name, at, 8)
    }

    fn contains_depth(&self, name: &str, at: NaiveDateTime, depth: u8) -> bool {
        let Some(cal) = self.map.get(name) else {
            return false;
        };
        if depth == 0 || !cal.contains_own(at) {
            return false;
        }
        !cal.except
            .iter()
            .any(|e| self.contains_depth(e, at, depth - 1))
    }
}

/// Parses `mon`..`sun`.
pub(crate) fn parse_weekday(s: &str) -> Result<Weekday, String> {
    match s.to_ascii_lowercase().as_str() {
        "mon" | "monday" => Ok(Weekday::Mon),
        "tue" | "tuesday" => Ok(Weekday::Tue),
        "wed" | "wednesday" => Ok(Weekday::Wed),
        "thu" | "thursday" => Ok(Weekday::Thu),
        "fri" | "friday" => Ok(Weekday::Fri),
        "sat" | "saturday" => Ok(Weekday::Sat),
        "sun" | "sunday" => Ok(Weekday::Sun),
        _ => Err(format!("unknown weekday {s:?} (write mon, tue, ..., sun)")),
    }
}

/// Parses `2026-10-01` or `2026-10-01..2026-10-07` (inclusive).
pub(crate) fn parse_date_range(s: &str) -> Result<(NaiveDate, NaiveDate), String> {
    let d = |x: &str| {
        NaiveDate::parse_from_str(x.trim(), "%Y-%m-%d")
            .map_err(|_| format!("bad date {x:?} (write YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD)"))
    };
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (d(a)?, d(b)?),
        None => (d(s)?, d(s)?),
    };
    if b < a {
        return Err(format!("date range {s:?} ends before it starts"));
    }
    Ok((a, b))
}

/// Parses `07:00-12:00`.
pub(crate) fn parse_hours(s: &str) -> Result<(NaiveTime, NaiveTime), String> {
    let t = |x: &str| {
        NaiveTime::parse_from_str(x.trim(), "%H:%M")
            .map_err(|_| format!("bad time range {s:?} (write HH:MM-HH:MM, e.g. 07:00-18:00)"))
    };
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("bad time range {s:?} (write HH:MM-HH:MM, e.g. 07:00-18:00)"))?;
    Ok((t(a)?, t(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").unwrap()
    }

    #[test]
    fn school_hours_are_weekday_daytime_minus_holidays() {
        let mut c = Calendars::default();
        // 2026-12-01 is a Tuesday.
        assert!(c.contains("school_hours", at("2026-12-01 08:00")));
        assert!(!c.contains("school_hours", at("2026-12-01 19:00")));
        assert!(!c.contains("school_hours", at("2026-12-05 08:00")));
        assert!(c.contains("weekends", at("2026-12-05 08:00")));
        c.insert(
            "holidays",
            Calendar {
                weekdays: vec![],
                dates: Some(vec![parse_date_range("2026-12-01").unwrap()]),
                hours: vec![],
                except: vec![],
            },
        );
        assert!(!c.contains("school_hours", at("2026-12-01 08:00")));
        assert!(!c.contains("no_such_calendar", at("2026-12-01 08:00")));
    }

    #[test]
    fn hour_ranges_may_wrap_midnight() {
        let mut c = Calendars::empty();
        c.insert(
            "night",
            Calendar {
                weekdays: vec![],
                dates: None,
                hours: vec![parse_hours("22:00-06:00").unwrap()],
                except: vec!["night".into()],
            },
        );
        // A calendar excepting itself is never in, and does not loop.
        assert!(!c.contains("night", at("2026-12-01 23:00")));
    }
}
