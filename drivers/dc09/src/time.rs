//! The DC-09 timestamp `_HH:MM:SS,MM-DD-YYYY` (UTC) and the receiver's time window.

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc};

use crate::Dc09Error;

/// DC-09 timestamp: `_HH:MM:SS,MM-DD-YYYY`, always UTC (PROTOCOLS §2, pysiaalarm, fioletoven).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Timestamp(DateTime<Utc>);

/// Bytes of `HH:MM:SS,MM-DD-YYYY` (without the leading `_`).
pub const TIMESTAMP_LEN: usize = 19;

impl Timestamp {
    /// A timestamp for `at`, truncated to whole seconds. Years outside 0-9999 are clamped.
    pub fn new(at: DateTime<Utc>) -> Timestamp {
        let year = at.year().clamp(0, 9999);
        let t = at
            .with_year(year)
            .unwrap_or(at)
            .with_nanosecond(0)
            .unwrap_or(at);
        Timestamp(t)
    }

    /// The instant.
    pub fn at(self) -> DateTime<Utc> {
        self.0
    }

    /// Parses `HH:MM:SS,MM-DD-YYYY` (without the `_`).
    ///
    /// # Errors
    /// [`Dc09Error::Timestamp`] unless it is exactly that shape and a real UTC date and time.
    pub fn parse(s: &str) -> Result<Timestamp, Dc09Error> {
        let bad = || Dc09Error::Timestamp(s.chars().take(40).collect());
        let b = s.as_bytes();
        let shape = b"00:00:00,00-00-0000";
        if b.len() != TIMESTAMP_LEN
            || !b.iter().zip(shape).all(|(c, s)| {
                if *s == b'0' {
                    c.is_ascii_digit()
                } else {
                    c == s
                }
            })
        {
            return Err(bad());
        }
        let n = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<u32>().ok());
        let (Some(h), Some(mi), Some(sec), Some(mo), Some(d), Some(y)) =
            (n(0..2), n(3..5), n(6..8), n(9..11), n(12..14), n(15..19))
        else {
            return Err(bad());
        };
        let naive = NaiveDate::from_ymd_opt(i32::try_from(y).map_err(|_| bad())?, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, sec))
            .ok_or_else(bad)?;
        Ok(Timestamp(Utc.from_utc_datetime(&naive)))
    }

    /// Seconds from `now` to this timestamp (positive: the message is ahead of us).
    pub fn offset_from(self, now: DateTime<Utc>) -> i64 {
        (self.0 - now).num_seconds()
    }
}

impl std::fmt::Display for Timestamp {
    /// `HH:MM:SS,MM-DD-YYYY`, without the leading `_`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.0;
        write!(
            f,
            "{:02}:{:02}:{:02},{:02}-{:02}-{:04}",
            t.hour(),
            t.minute(),
            t.second(),
            t.month(),
            t.day(),
            t.year()
        )
    }
}

/// How far a message's timestamp may be from the receiver's clock.
///
/// DC-09 receivers reject (NAK, with their own time) a message whose timestamp lies outside
/// the window, which stops replayed encrypted messages. The default, 40 s behind to 20 s
/// ahead, is pysiaalarm's `allowed_timeband = (40, 20)` (PROTOCOLS §2, R6); the 2013
/// standard text was not available to confirm it, so receivers make it configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Seconds a message may be behind the receiver's clock.
    pub past: u32,
    /// Seconds a message may be ahead of the receiver's clock.
    pub future: u32,
}

impl Default for TimeWindow {
    fn default() -> TimeWindow {
        TimeWindow {
            past: 40,
            future: 20,
        }
    }
}

impl TimeWindow {
    /// Checks `ts` against `now`; both bounds are inclusive.
    ///
    /// # Errors
    /// [`Dc09Error::OutsideWindow`] with the offset when it lies outside.
    pub fn check(self, ts: Timestamp, now: DateTime<Utc>) -> Result<(), Dc09Error> {
        let offset = ts.offset_from(now);
        if offset < -i64::from(self.past) || offset > i64::from(self.future) {
            return Err(Dc09Error::OutsideWindow {
                offset_seconds: offset,
                past: self.past,
                future: self.future,
            });
        }
        Ok(())
    }

    /// Like [`TimeWindow::check`], for a message that may lack a timestamp.
    ///
    /// # Errors
    /// [`Dc09Error::MissingTimestamp`] when `ts` is `None`; else as [`TimeWindow::check`].
    pub fn check_present(self, ts: Option<Timestamp>, now: DateTime<Utc>) -> Result<(), Dc09Error> {
        self.check(ts.ok_or(Dc09Error::MissingTimestamp)?, now)
    }
}

impl serde::Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}
