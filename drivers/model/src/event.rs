//! The event model (DESIGN §3): what every device says, in one shape.
//!
//! JSON form (schema version [`EVENT_SCHEMA_VERSION`], documented in `docs/event-schema.md`):
//! ```json
//! {"schema":2,"id":"01936d3e-...","seq":42,"occurred_at":"2026-11-26T08:00:00Z",
//!  "received_at":"2026-11-26T08:00:00.012Z","source":{"device":"fire_panel_a","driver":"modbus_tcp"},
//!  "kind":"fire.alarm","class":"life_safety","location":{"campus":"main","building":"A"},
//!  "payload":{},"origin_ref":"di:3:1"}
//! ```

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Version of the event JSON form; bumped on any incompatible change.
///
/// 2: polled register readings travel as one [`kinds::SENSOR_READINGS`] batch per device
/// and poll cycle instead of one [`kinds::SENSOR_READING`] per point. Events journaled
/// under 1 still decode (the field shapes did not change) and keep their `"schema": 1`.
pub const EVENT_SCHEMA_VERSION: u32 = 2;

/// Unique per gateway, time-ordered (UUIDv7); the idempotency key downstream.
pub type EventId = uuid::Uuid;

/// Priority class of an event, highest first. Decides uplink order and eviction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Fire, panic and intrusion alarms.
    LifeSafety,
    /// Forced doors, tamper, devices offline.
    Security,
    /// Device health, rule output, command results.
    Operations,
    /// Card transactions, access log, patrol, visitors.
    Business,
    /// Sensor readings.
    Telemetry,
}

impl Class {
    /// Every class, highest priority first.
    pub const ALL: [Class; 5] = [
        Class::LifeSafety,
        Class::Security,
        Class::Operations,
        Class::Business,
        Class::Telemetry,
    ];

    /// 0 for the highest priority; stored in the journal.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Class::rank`].
    pub fn from_rank(rank: u8) -> Option<Class> {
        Class::ALL.get(usize::from(rank)).copied()
    }

    /// The snake_case name used in JSON, config and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::LifeSafety => "life_safety",
            Class::Security => "security",
            Class::Operations => "operations",
            Class::Business => "business",
            Class::Telemetry => "telemetry",
        }
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Class {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Class::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown class {s:?} (expected one of life_safety, security, operations, business, telemetry)"
                )
            })
    }
}

/// A dotted lowercase event kind such as `fire.alarm`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Kind(Cow<'static, str>);

/// Why a string is not a valid [`Kind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid event kind {0:?}: expected dotted lowercase words like \"fire.alarm\" (a-z, 0-9, _), at most 64 characters"
)]
pub struct KindError(pub String);

impl Kind {
    /// Parses and validates a kind.
    ///
    /// # Errors
    /// [`KindError`] unless `s` is two or more `[a-z0-9_]+` words joined by dots, ≤ 64 bytes.
    pub fn new(s: impl Into<String>) -> Result<Kind, KindError> {
        let s = s.into();
        if Self::is_valid(&s) {
            Ok(Kind(Cow::Owned(s)))
        } else {
            Err(KindError(s))
        }
    }

    /// A kind from a literal; the literal must be valid (checked by this crate's tests for
    /// the constants in [`kinds`](crate::event::kinds)).
    pub const fn from_static(s: &'static str) -> Kind {
        Kind(Cow::Borrowed(s))
    }

    /// Whether `s` is a valid kind.
    pub fn is_valid(s: &str) -> bool {
        s.len() <= 64
            && s.split('.').count() >= 2
            && s.split('.').all(|w| {
                !w.is_empty()
                    && w.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
            })
    }

    /// The dotted name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The first word: `fire` for `fire.alarm`.
    pub fn family(&self) -> &str {
        self.0.split('.').next().unwrap_or_default()
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Kind {
    type Err = KindError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::new(s)
    }
}

impl<'de> Deserialize<'de> for Kind {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Kind::new(s).map_err(serde::de::Error::custom)
    }
}

/// Well-known kinds (DESIGN §3). Drivers may define more.
pub mod kinds {
    use super::Kind;
    /// A fire alarm.
    pub const FIRE_ALARM: Kind = Kind::from_static("fire.alarm");
    /// A fire-system fault.
    pub const FIRE_FAULT: Kind = Kind::from_static("fire.fault");
    /// A fire alarm or fault returned to normal.
    pub const FIRE_RESET: Kind = Kind::from_static("fire.reset");
    /// An intrusion alarm.
    pub const INTRUSION_ALARM: Kind = Kind::from_static("intrusion.alarm");
    /// A panic / one-button alarm.
    pub const PANIC_ALARM: Kind = Kind::from_static("panic.alarm");
    /// A door forced open.
    pub const DOOR_FORCED: Kind = Kind::from_static("door.forced");
    /// One numeric reading (schema 1; still decoded from old journals, no longer emitted
    /// by the Modbus driver).
    pub const SENSOR_READING: Kind = Kind::from_static("sensor.reading");
    /// Every register point of one device that changed in one poll cycle (schema 2):
    /// payload `{"points": {name: number}, "units"?, "raw"?, "coalesced"?}`.
    pub const SENSOR_READINGS: Kind = Kind::from_static("sensor.readings");
    /// A device came back.
    pub const DEVICE_ONLINE: Kind = Kind::from_static("device.online");
    /// A device went silent or its link failed.
    pub const DEVICE_OFFLINE: Kind = Kind::from_static("device.offline");
    /// The result of a command, journaled.
    pub const COMMAND_RESULT: Kind = Kind::from_static("command.result");
    /// The journal cannot store or keep events (disk full, write failure, quota).
    pub const STORAGE_CRITICAL: Kind = Kind::from_static("storage.critical");
    /// The journal recovered from `storage.critical`.
    pub const STORAGE_RECOVERED: Kind = Kind::from_static("storage.recovered");

    /// Every constant above, for validation tests.
    pub const ALL: &[Kind] = &[
        FIRE_ALARM,
        FIRE_FAULT,
        FIRE_RESET,
        INTRUSION_ALARM,
        PANIC_ALARM,
        DOOR_FORCED,
        SENSOR_READING,
        SENSOR_READINGS,
        DEVICE_ONLINE,
        DEVICE_OFFLINE,
        COMMAND_RESULT,
        STORAGE_CRITICAL,
        STORAGE_RECOVERED,
    ];
}

/// A device identifier from the config: 1-64 of `A-Z a-z 0-9 _ - .`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(String);

impl DeviceId {
    /// Validates a device id.
    ///
    /// # Errors
    /// A message naming the problem when `s` is empty, too long or has other characters.
    pub fn new(s: impl Into<String>) -> Result<DeviceId, String> {
        let s = s.into();
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if ok {
            Ok(DeviceId(s))
        } else {
            Err(format!(
                "invalid device id {s:?}: use 1-64 characters of A-Z, a-z, 0-9, '_', '-', '.'"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DeviceId::new(s).map_err(serde::de::Error::custom)
    }
}

/// Where an event happened: campus / building / floor / zone / point, each optional.
///
/// In JSON it is an object. In config files it may also be written as a path,
/// `"main/A/3/east/smoke-10-2"`, read positionally (campus, building, floor, zone, point).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct Location {
    /// Campus id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campus: Option<String>,
    /// Building id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub building: Option<String>,
    /// Floor id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<String>,
    /// Zone id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Point: a detector, door or reader within the zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub point: Option<String>,
}

/// The object form of [`Location`], strict about its keys.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LocationTable {
    #[serde(default)]
    campus: Option<String>,
    #[serde(default)]
    building: Option<String>,
    #[serde(default)]
    floor: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    #[serde(default)]
    point: Option<String>,
}

impl Location {
    /// Parses `campus/building/floor/zone/point` (1 to 5 non-empty parts).
    ///
    /// # Errors
    /// A message saying how to write it.
    pub fn from_path(path: &str) -> Result<Location, String> {
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() > 5 || parts.iter().any(|p| p.trim().is_empty()) {
            return Err(format!(
                "location {path:?} must read campus/building/floor/zone/point (1 to 5 non-empty parts)"
            ));
        }
        let part = |i: usize| parts.get(i).map(|p| (*p).to_owned());
        Ok(Location {
            campus: part(0),
            building: part(1),
            floor: part(2),
            zone: part(3),
            point: part(4),
        })
    }
}

impl<'de> Deserialize<'de> for Location {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Location;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a location path like \"main/A/3/east\" or a table with campus, building, floor, zone, point")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Location, E> {
                Location::from_path(v).map_err(E::custom)
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, m: M) -> Result<Location, M::Error> {
                let t =
                    LocationTable::deserialize(serde::de::value::MapAccessDeserializer::new(m))?;
                Ok(Location {
                    campus: t.campus,
                    building: t.building,
                    floor: t.floor,
                    zone: t.zone,
                    point: t.point,
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Location {
    /// The levels in order, for display and scope matching.
    pub fn levels(&self) -> [Option<&str>; 5] {
        [
            self.campus.as_deref(),
            self.building.as_deref(),
            self.floor.as_deref(),
            self.zone.as_deref(),
            self.point.as_deref(),
        ]
    }

    /// This location with `point` set.
    pub fn with_point(mut self, point: impl Into<String>) -> Location {
        self.point = Some(point.into());
        self
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<&str> = self.levels().into_iter().flatten().collect();
        f.write_str(&parts.join("/"))
    }
}

/// Which device and driver an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The device id from the config.
    pub device: DeviceId,
    /// The driver kind, e.g. `modbus_tcp`.
    pub driver: String,
}

/// An event as a driver produces it, before the gateway stamps it.
///
/// The context fills `id`, `received_at`, `source` and, if unset, `location` from the
/// device's configuration; the journal assigns `seq`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What happened.
    pub kind: Kind,
    /// Its priority class.
    pub class: Class,
    /// The device clock, if the device sent one.
    pub occurred_at: Option<DateTime<Utc>>,
    /// The device that said it, if not the driver instance's own device (e.g. one UITD
    /// behind a GB/T 26875 listener).
    pub device: Option<DeviceId>,
    /// Where; `None` takes the device's configured location.
    pub location: Option<Location>,
    /// Kind-specific structured data.
    pub payload: serde_json::Value,
    /// The device's own identity for this message, used to drop device retransmissions
    /// (DESIGN §4 "Duplicates"; ADR 0003): an event whose (device, origin_ref) the journal
    /// already holds is a duplicate, within [`Dedup`]'s scope.
    pub origin_ref: Option<String>,
    /// How long `origin_ref` identifies the message.
    pub dedup: Dedup,
}

/// How long an event's `origin_ref` identifies one message (ADR 0003).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Dedup {
    /// The key is built from the message's content (GB/T 26875: the ADU bytes, which hold
    /// each object's time label): the same key means a retransmission only within the
    /// journal's de-duplication window of receive time; later, the same content is a new
    /// message.
    #[default]
    Window,
    /// The key is a device transaction id that never repeats (card terminal, patrol device
    /// uploading hours later): the same key is a retransmission for as long as the event is
    /// kept.
    Lifetime,
}

impl NewEvent {
    /// An event of `kind` and `class` with an empty payload.
    pub fn new(kind: Kind, class: Class) -> NewEvent {
        NewEvent {
            kind,
            class,
            occurred_at: None,
            device: None,
            location: None,
            payload: serde_json::Value::Object(Default::default()),
            origin_ref: None,
            dedup: Dedup::Window,
        }
    }

    /// Sets the payload.
    pub fn payload(mut self, payload: serde_json::Value) -> NewEvent {
        self.payload = payload;
        self
    }

    /// Sets the device clock.
    pub fn occurred_at(mut self, at: DateTime<Utc>) -> NewEvent {
        self.occurred_at = Some(at);
        self
    }

    /// Sets the message's content key for de-duplication within the journal's window
    /// ([`Dedup::Window`]).
    pub fn origin_ref(mut self, r: impl Into<String>) -> NewEvent {
        self.origin_ref = Some(r.into());
        self.dedup = Dedup::Window;
        self
    }

    /// Sets a device transaction id that never repeats: de-duplicated for as long as the
    /// event is kept ([`Dedup::Lifetime`]).
    pub fn transaction_id(mut self, id: impl Into<String>) -> NewEvent {
        self.origin_ref = Some(id.into());
        self.dedup = Dedup::Lifetime;
        self
    }

    /// Attributes the event to a sub-device.
    pub fn device(mut self, device: DeviceId) -> NewEvent {
        self.device = Some(device);
        self
    }

    /// Sets the location.
    pub fn location(mut self, location: Location) -> NewEvent {
        self.location = Some(location);
        self
    }
}

/// A journaled event in its stable JSON form (DESIGN §3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    /// [`EVENT_SCHEMA_VERSION`] at the time of writing.
    pub schema: u32,
    /// UUIDv7, unique per gateway.
    pub id: EventId,
    /// Journal position, strictly increasing, gap-free.
    pub seq: u64,
    /// Device clock (may be wrong or absent).
    #[serde(serialize_with = "rfc3339::serialize_opt")]
    pub occurred_at: Option<DateTime<Utc>>,
    /// Gateway clock.
    #[serde(serialize_with = "rfc3339::serialize")]
    pub received_at: DateTime<Utc>,
    /// Device and driver.
    pub source: Source,
    /// What happened.
    pub kind: Kind,
    /// Priority class.
    pub class: Class,
    /// Where.
    pub location: Location,
    /// Kind-specific data.
    pub payload: serde_json::Value,
    /// The device's own message id.
    pub origin_ref: Option<String>,
    /// The scope of `origin_ref` at insertion; not part of the JSON form.
    #[serde(skip)]
    pub dedup: Dedup,
}

impl Event {
    /// Stamps a [`NewEvent`] with id, source and receive time; `seq` is 0 until journaled.
    pub fn stamp(new: NewEvent, device: &DeviceId, driver: &str, location: &Location) -> Event {
        Event {
            schema: EVENT_SCHEMA_VERSION,
            id: uuid::Uuid::now_v7(),
            seq: 0,
            occurred_at: new.occurred_at,
            received_at: Utc::now(),
            source: Source {
                device: new.device.unwrap_or_else(|| device.clone()),
                driver: driver.to_owned(),
            },
            kind: new.kind,
            class: new.class,
            location: new.location.unwrap_or_else(|| location.clone()),
            payload: new.payload,
            origin_ref: new.origin_ref,
            dedup: new.dedup,
        }
    }

    /// This event's JSON form with `seq` in place of [`Event::seq`]: exactly what
    /// `serde_json::to_string` writes for it, about four times faster (the journal writes
    /// every event's body this way; see the `json` module for why it is hand-written).
    pub fn to_json_with_seq(&self, seq: u64) -> String {
        crate::json::event_json(self, seq)
    }
}

/// Timestamps in the JSON form, written as chrono writes them (RFC 3339, UTC as `Z`,
/// fraction in 0, 3, 6 or 9 digits, the fewest that are exact) but in one piece: chrono's
/// `Serialize` goes through `collect_str`, which escapes each of its dozen fragments on its
/// own and made timestamps a tenth of the cost of journaling an event (callgrind, `bench
/// ingest`). Years outside 0..=9999 take chrono's own path.
pub(crate) mod rfc3339 {
    use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
    use serde::Serializer;

    pub(super) fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 30];
        match write(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        }
    }

    // serde's `serialize_with` hands an `Option` field over as `&Option<T>`.
    #[allow(clippy::ref_option)]
    pub(super) fn serialize_opt<S: Serializer>(
        t: &Option<DateTime<Utc>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => serialize(t, s),
            None => s.serialize_none(),
        }
    }

    /// `t` as RFC 3339 in `buf`, or `None` for a year chrono writes with a sign.
    pub(crate) fn write<'b>(t: &DateTime<Utc>, buf: &'b mut [u8; 30]) -> Option<&'b str> {
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut nano = t.nanosecond();
        let mut sec = t.second();
        if nano >= 1_000_000_000 {
            // A leap second: chrono writes it as second 60.
            sec += 1;
            nano -= 1_000_000_000;
        }
        let mut n = 0;
        put(buf, &mut n, year, 4);
        let fields = [t.month(), t.day(), t.hour(), t.minute(), sec];
        for (v, sep) in fields.into_iter().zip(*b"--T::") {
            buf[n] = sep;
            n += 1;
            put(buf, &mut n, v, 2);
        }
        let (frac, digits) = if nano == 0 {
            (0, 0)
        } else if nano.is_multiple_of(1_000_000) {
            (nano / 1_000_000, 3)
        } else if nano.is_multiple_of(1_000) {
            (nano / 1_000, 6)
        } else {
            (nano, 9)
        };
        if digits > 0 {
            buf[n] = b'.';
            n += 1;
            put(buf, &mut n, frac, digits);
        }
        buf[n] = b'Z';
        n += 1;
        std::str::from_utf8(&buf[..n]).ok()
    }

    /// Writes the low `digits` decimal digits of `v` at `buf[*n..]`.
    fn put(buf: &mut [u8; 30], n: &mut usize, v: u32, digits: u32) {
        for d in (0..digits).rev() {
            // `% 10` keeps the value a single digit, so the cast cannot truncate.
            buf[*n] = b'0' + ((v / 10u32.pow(d)) % 10) as u8;
            *n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_well_known_kind_is_valid() {
        for k in kinds::ALL {
            assert!(Kind::is_valid(k.as_str()), "{k}");
        }
    }

    #[test]
    fn kinds_reject_uppercase_single_words_and_empty_segments() {
        for bad in [
            "Fire.alarm",
            "fire",
            "fire..alarm",
            "fire.alarm.",
            "fire alarm.x",
            "",
        ] {
            assert!(Kind::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(Kind::new("fire.uitd_power").unwrap().family(), "fire");
    }

    #[test]
    fn class_rank_round_trips_and_orders_by_priority() {
        for c in Class::ALL {
            assert_eq!(Class::from_rank(c.rank()), Some(c));
            assert_eq!(c.as_str().parse::<Class>().unwrap(), c);
        }
        assert!(Class::LifeSafety < Class::Telemetry);
        assert_eq!(Class::from_rank(5), None);
    }

    #[test]
    fn device_ids_are_checked() {
        assert!(DeviceId::new("gym_panel-1.a").is_ok());
        assert!(DeviceId::new("").is_err());
        assert!(DeviceId::new("a b").is_err());
        assert!(DeviceId::new("x".repeat(65)).is_err());
    }

    #[test]
    fn locations_read_as_paths_or_tables() {
        let from_path: Location = serde_json::from_str(r#""main/A/3/east/smoke-10-2""#).unwrap();
        assert_eq!(from_path.to_string(), "main/A/3/east/smoke-10-2");
        assert_eq!(from_path.point.as_deref(), Some("smoke-10-2"));
        let from_table: Location = serde_json::from_str(r#"{"building": "A"}"#).unwrap();
        assert_eq!(from_table.building.as_deref(), Some("A"));
        assert!(serde_json::from_str::<Location>(r#"{"room": "1"}"#).is_err());
        assert!(serde_json::from_str::<Location>(r#""a//b""#).is_err());
        assert!(serde_json::from_str::<Location>(r#""a/b/c/d/e/f""#).is_err());
    }

    #[test]
    fn event_json_round_trips() {
        let dev = DeviceId::new("panel").unwrap();
        let loc = Location {
            campus: Some("main".into()),
            building: Some("A".into()),
            ..Location::default()
        };
        let mut ev = Event::stamp(
            NewEvent::new(kinds::FIRE_ALARM, Class::LifeSafety)
                .payload(serde_json::json!({"input": 3}))
                .origin_ref("di:3"),
            &dev,
            "modbus_tcp",
            &loc,
        );
        ev.seq = 7;
        let text = serde_json::to_string(&ev).unwrap();
        let back: Event = serde_json::from_str(&text).unwrap();
        assert_eq!(back, ev);
        assert!(text.contains("\"class\":\"life_safety\""));
        assert_eq!(loc.to_string(), "main/A");
    }

    proptest::proptest! {
        #[test]
        fn timestamps_are_written_exactly_as_chrono_writes_them(
            secs in -63_000_000_000i64..253_500_000_000i64,
            nanos in 0u32..2_000_000_000u32,
            unit in 0usize..4,
        ) {
            // Whole seconds, milliseconds, microseconds and nanoseconds all occur.
            let nanos = match unit { 0 => 0, 1 => nanos / 1_000_000 * 1_000_000, 2 => nanos / 1000 * 1000, _ => nanos };
            if let Some(t) = DateTime::<Utc>::from_timestamp(secs, nanos) {
                let ours = serde_json::to_string(&Wrap(t)).unwrap();
                let chrono = serde_json::to_string(&t).unwrap();
                proptest::prop_assert_eq!(ours, chrono);
            }
        }
    }

    #[derive(serde::Serialize)]
    struct Wrap(#[serde(serialize_with = "super::rfc3339::serialize")] DateTime<Utc>);

    #[test]
    fn years_beyond_four_digits_and_leap_seconds_match_chrono() {
        let far = DateTime::<Utc>::from_timestamp(253_402_300_800, 5).unwrap();
        assert_eq!(
            serde_json::to_string(&Wrap(far)).unwrap(),
            serde_json::to_string(&far).unwrap()
        );
        let leap = DateTime::<Utc>::from_timestamp(1_483_228_799, 1_500_000_000).unwrap();
        assert_eq!(
            serde_json::to_string(&Wrap(leap)).unwrap(),
            serde_json::to_string(&leap).unwrap()
        );
    }
}
