//! Register readings waiting for the journal: one slot per point, the newest value wins.
//!
//! The poller puts every register value that moved into the [`Batch`]; when no earlier
//! batch of the device is still on its way to the journal, the batch is taken as one
//! `sensor.readings` event per class and handed over. While one is in flight, new values
//! land in their slots: a slot that already held an unsent value is overwritten and counted
//! as *coalesced* (`modbus_readings_coalesced_total{device}`), so a journal that cannot
//! keep up costs memory for one value per point, never a queue of cycles. If the journal
//! refuses a batch, its values go back into the slots that have no newer value, so nothing
//! the journal did not take is lost except what a newer value replaced.
//!
//! Payload of `sensor.readings` (docs/event-schema.md, schema 2):
//! `{"points": {"r17": 17263, "boiler_temp": 65.2}, "units": {"boiler_temp": "°C"},
//!   "raw": {"setpoint": 215}, "coalesced": 3}`: `units` only for points that have a unit,
//! `raw` only for points with a scale or offset, `coalesced` only when non-zero; every
//! member is omitted when empty.

use campusgw_sdk::event::kinds::SENSOR_READINGS;
use campusgw_sdk::{Class, NewEvent};
use serde_json::{Map, Number, Value};

use crate::codec::Reading;
use crate::points::{PointMap, PointRole};

/// Unsent readings of one device, one slot per point of its map.
#[derive(Debug)]
pub(crate) struct Batch {
    slots: Vec<Option<Reading>>,
    queued: usize,
    coalesced: u64,
}

/// Readings handed to the journal and not yet confirmed, kept to be put back on refusal.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    values: Vec<(usize, Reading)>,
    coalesced: u64,
}

impl Handed {
    /// How many readings it holds.
    pub(crate) fn len(&self) -> usize {
        self.values.len()
    }
}

impl Batch {
    /// An empty batch for a map of `points` points.
    pub(crate) fn new(points: usize) -> Batch {
        Batch {
            slots: vec![None; points],
            queued: 0,
            coalesced: 0,
        }
    }

    /// Whether nothing waits.
    pub(crate) fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Puts the newest value of point `i`; true when it replaced an unsent one (coalesced).
    pub(crate) fn put(&mut self, i: usize, r: Reading) -> bool {
        let Some(slot) = self.slots.get_mut(i) else {
            return false;
        };
        let replaced = slot.replace(r).is_some();
        if replaced {
            self.coalesced += 1;
        } else {
            self.queued += 1;
        }
        replaced
    }

    /// Puts back what the journal refused, under any newer value; returns how many of the
    /// refused values a newer one replaced (those are coalesced now).
    pub(crate) fn restore(&mut self, handed: Handed) -> u64 {
        let mut lost = 0;
        for (i, r) in handed.values {
            match self.slots.get_mut(i) {
                Some(slot @ None) => {
                    *slot = Some(r);
                    self.queued += 1;
                }
                Some(Some(_)) => lost += 1,
                None => {}
            }
        }
        self.coalesced += handed.coalesced + lost;
        lost
    }

    /// Empties the batch into one `sensor.readings` event per class (config order within).
    pub(crate) fn take(&mut self, map: &PointMap) -> (Vec<NewEvent>, Handed) {
        let mut handed = Handed {
            values: Vec::with_capacity(self.queued),
            coalesced: std::mem::take(&mut self.coalesced),
        };
        let mut payloads: Vec<(Class, Payload)> = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(r) = slot.take() else { continue };
            let Some(point) = map.points.get(i) else {
                continue;
            };
            let PointRole::Register {
                format,
                unit,
                class,
                ..
            } = &point.role
            else {
                continue;
            };
            let p = match payloads.iter_mut().find(|(c, _)| c == class) {
                Some((_, p)) => p,
                None => {
                    payloads.push((*class, Payload::default()));
                    &mut payloads.last_mut().expect("just pushed").1
                }
            };
            p.points.push((point.name.clone(), number(r.value)));
            if let Some(u) = unit {
                p.units.push((point.name.clone(), Value::String(u.clone())));
            }
            if format.scale != 1.0 || format.offset != 0.0 {
                p.raw.push((point.name.clone(), number(r.raw)));
            }
            handed.values.push((i, r));
        }
        self.queued = 0;
        let events = payloads
            .into_iter()
            .map(|(class, p)| {
                NewEvent::new(SENSOR_READINGS, class).payload(p.into_value(handed.coalesced))
            })
            .collect();
        (events, handed)
    }
}

/// The members of one event's payload, gathered as lists: turning a list into a map at the
/// end builds the map from sorted entries in one pass, where inserting point by point
/// compared keys (`memcmp`) for every insert (profiled: ~10 % of the gateway's CPU at
/// 100,000 points/s).
#[derive(Default)]
struct Payload {
    points: Vec<(String, Value)>,
    units: Vec<(String, Value)>,
    raw: Vec<(String, Value)>,
}

impl Payload {
    fn into_value(self, coalesced: u64) -> Value {
        let object = |v: Vec<(String, Value)>| Value::Object(v.into_iter().collect::<Map<_, _>>());
        let mut out = Map::new();
        out.insert("points".into(), object(self.points));
        if !self.units.is_empty() {
            out.insert("units".into(), object(self.units));
        }
        if !self.raw.is_empty() {
            out.insert("raw".into(), object(self.raw));
        }
        if coalesced > 0 {
            out.insert("coalesced".into(), Value::from(coalesced));
        }
        Value::Object(out)
    }
}

/// A JSON number, integral values without a fraction (`17263`, not `17263.0`): register
/// values are mostly integers, and the wire size is what the county pays for.
fn number(v: f64) -> Value {
    // 2^53: beyond it f64 no longer holds every integer, so keep the float form.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)] // integral and below 2^53: exact
        return Value::from(v as i64);
    }
    // decode() never yields a non-finite value; null would be the only JSON form for one.
    Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::points::PointConfig;

    fn map() -> PointMap {
        let toml = r#"
[[points]]
name = "r0"
table = "holding_register"
address = 0
[[points]]
name = "temp"
table = "input_register"
address = 1
scale = 0.1
unit = "°C"
[[points]]
name = "door"
table = "discrete_input"
address = 0
on_kind = "door.forced"
class = "security"
[[points]]
name = "flow"
table = "input_register"
address = 5
class = "operations"
"#;
        #[derive(serde::Deserialize)]
        struct C {
            points: Vec<PointConfig>,
        }
        let c: C = toml::from_str(toml).unwrap();
        PointMap::compile(&c.points, &campusgw_sdk::FieldPath::root()).unwrap()
    }

    fn r(raw: f64, value: f64) -> Reading {
        Reading { raw, value }
    }

    #[test]
    fn a_batch_carries_every_point_once_with_units_and_raw_only_where_needed() {
        let m = map();
        let mut b = Batch::new(m.points.len());
        b.put(0, r(17263.0, 17263.0));
        b.put(1, r(652.0, 65.2));
        b.put(3, r(3.0, 3.0));
        let (events, handed) = b.take(&m);
        assert!(b.is_empty());
        assert_eq!(handed.values.len(), 3);
        assert_eq!(events.len(), 2, "one event per class");
        let tele = events.iter().find(|e| e.class == Class::Telemetry).unwrap();
        assert_eq!(tele.kind, SENSOR_READINGS);
        assert_eq!(
            tele.payload,
            serde_json::json!({"points": {"r0": 17263, "temp": 65.2},
                               "units": {"temp": "°C"}, "raw": {"temp": 652}})
        );
        let ops = events
            .iter()
            .find(|e| e.class == Class::Operations)
            .unwrap();
        assert_eq!(ops.payload, serde_json::json!({"points": {"flow": 3}}));
    }

    #[test]
    fn a_newer_value_replaces_an_unsent_one_and_is_counted_as_coalesced() {
        let m = map();
        let mut b = Batch::new(m.points.len());
        assert!(!b.put(0, r(1.0, 1.0)));
        assert!(b.put(0, r(2.0, 2.0)));
        assert!(b.put(0, r(3.0, 3.0)));
        let (events, _) = b.take(&m);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].payload["points"]["r0"], 3);
        assert_eq!(events[0].payload["coalesced"], 2);
        let (events, _) = b.take(&m);
        assert!(events.is_empty(), "an empty batch emits nothing");
    }

    #[test]
    fn refused_values_go_back_under_newer_ones() {
        let m = map();
        let mut b = Batch::new(m.points.len());
        b.put(0, r(1.0, 1.0));
        b.put(1, r(10.0, 1.0));
        let (_, handed) = b.take(&m);
        b.put(0, r(5.0, 5.0));
        assert_eq!(b.restore(handed), 1, "r0's refused value was replaced");
        let (events, handed) = b.take(&m);
        assert_eq!(handed.values.len(), 2);
        assert_eq!(
            events[0].payload["points"],
            serde_json::json!({"r0": 5, "temp": 1})
        );
        assert_eq!(events[0].payload["coalesced"], 1);
    }

    #[test]
    fn integral_values_have_no_fraction_and_others_keep_theirs() {
        assert_eq!(number(17263.0).to_string(), "17263");
        assert_eq!(number(-3.0).to_string(), "-3");
        assert_eq!(number(65.2).to_string(), "65.2");
        assert_eq!(number(1e300).as_f64(), Some(1e300));
        assert!(number(1e300).is_f64(), "beyond 2^53 the float form stays");
    }
}
