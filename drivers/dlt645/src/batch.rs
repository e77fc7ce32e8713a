//! Readings waiting for the journal: per meter one slot per point, the newest value wins.
//!
//! The poller [`queue`]s every value that differs from the one last queued for that point.
//! When no earlier hand-over is on its way to the journal, [`take`] empties every slot into
//! one `sensor.readings` event per meter (`source.device` = the meter). While one is in
//! flight, new values land in their slots; a slot that already held an unsent value is
//! overwritten and counted as *coalesced*, so a journal that cannot keep up costs one value
//! per point, never a queue of cycles. A refused hand-over is [`restore`]d into the slots
//! that have no newer value, with its coalesced counts, so nothing the journal did not take
//! is lost except what a newer value replaced.
//!
//! Payload (docs/event-schema.md, schema 2): `{"points": {name: number}, "units"?: {name:
//! unit}, "coalesced"?: n}`; `units` only for points with a unit, `coalesced` only when > 0.

use campusgw_sdk::event::kinds::SENSOR_READINGS;
use campusgw_sdk::{Class, NewEvent};
use serde_json::{Map, Value};

use crate::driver::Meter;

/// What a hand-over carried: (meter, point, value) and each meter's coalesced count.
#[derive(Debug, Default)]
pub(crate) struct Handed {
    pub(crate) values: Vec<(usize, usize, f64)>,
    pub(crate) coalesced: Vec<(usize, u64)>,
}

/// Puts value `v` of point `p`; nothing when it equals the value last queued.
pub(crate) fn queue(m: &mut Meter, p: usize, v: f64) {
    if m.last[p] == Some(v) {
        return;
    }
    m.last[p] = Some(v);
    if m.pending[p].replace(v).is_some() {
        m.coalesced += 1;
    }
}

/// Empties every meter's slots into one event per meter that has any.
pub(crate) fn take(meters: &mut [Meter]) -> (Vec<NewEvent>, Handed) {
    let mut events = Vec::new();
    let mut handed = Handed::default();
    for (i, m) in meters.iter_mut().enumerate() {
        let mut points = Map::new();
        let mut units = Map::new();
        for (p, slot) in m.pending.iter_mut().enumerate() {
            let Some(v) = slot.take() else { continue };
            let q = m.points[p];
            points.insert(q.name.into(), number(v));
            if !q.unit.is_empty() {
                units.insert(q.name.into(), Value::String(q.unit.into()));
            }
            handed.values.push((i, p, v));
        }
        if points.is_empty() {
            continue;
        }
        let mut payload = Map::new();
        payload.insert("points".into(), Value::Object(points));
        if !units.is_empty() {
            payload.insert("units".into(), Value::Object(units));
        }
        if m.coalesced > 0 {
            let n = std::mem::take(&mut m.coalesced);
            handed.coalesced.push((i, n));
            payload.insert("coalesced".into(), Value::from(n));
        }
        let mut e = NewEvent::new(SENSOR_READINGS, Class::Telemetry)
            .device(m.device.clone())
            .payload(Value::Object(payload));
        if let Some(l) = &m.location {
            e = e.location(l.clone());
        }
        events.push(e);
    }
    (events, handed)
}

/// Puts a refused hand-over back under any newer values.
pub(crate) fn restore(meters: &mut [Meter], handed: Handed) {
    for (i, n) in handed.coalesced {
        if let Some(m) = meters.get_mut(i) {
            m.coalesced += n;
        }
    }
    for (i, p, v) in handed.values {
        let Some(m) = meters.get_mut(i) else { continue };
        match m.pending.get_mut(p) {
            Some(slot @ None) => *slot = Some(v),
            Some(Some(_)) => m.coalesced += 1,
            None => {}
        }
    }
}

/// A JSON number; integral values without a fraction, as the Modbus driver writes them.
fn number(v: f64) -> Value {
    // 2^53: beyond it f64 no longer holds every integer, so keep the float form
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if v.fract() == 0.0 && v.abs() < EXACT {
        #[allow(clippy::cast_possible_truncation)] // integral and below 2^53: exact
        return Value::from(v as i64);
    }
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::ids;
    use campusgw_sdk::DeviceId;

    fn meters() -> Vec<Meter> {
        let points = vec![
            ids::by_name("energy_active_forward_total").unwrap(),
            ids::by_name("power_factor_total").unwrap(),
        ];
        (1..=2)
            .map(|i| {
                Meter::new(
                    DeviceId::new(format!("m{i}")).unwrap(),
                    None,
                    format!("{i}").parse().unwrap(),
                    points.clone(),
                )
            })
            .collect()
    }

    #[test]
    fn one_event_per_meter_with_units_only_where_the_point_has_one() {
        let mut ms = meters();
        queue(&mut ms[0], 0, 1206.42);
        queue(&mut ms[0], 1, 1.0);
        let (events, handed) = take(&mut ms);
        assert_eq!(events.len(), 1, "meter 2 had nothing");
        assert_eq!(events[0].device.as_ref().unwrap().as_str(), "m1");
        assert_eq!(
            events[0].payload,
            serde_json::json!({"points": {"energy_active_forward_total": 1206.42, "power_factor_total": 1},
                               "units": {"energy_active_forward_total": "kWh"}})
        );
        assert_eq!(handed.values.len(), 2);
        assert!(take(&mut ms).0.is_empty(), "emptied");
    }

    #[test]
    fn an_unchanged_value_is_not_queued_again_and_a_newer_one_coalesces() {
        let mut ms = meters();
        queue(&mut ms[1], 0, 1.0);
        queue(&mut ms[1], 0, 1.0);
        queue(&mut ms[1], 0, 2.0);
        let (events, _) = take(&mut ms);
        assert_eq!(
            events[0].payload["points"]["energy_active_forward_total"],
            2
        );
        assert_eq!(events[0].payload["coalesced"], 1);
        queue(&mut ms[1], 0, 2.0);
        assert!(take(&mut ms).0.is_empty(), "2.0 was already sent");
    }

    #[test]
    fn a_refused_hand_over_goes_back_under_newer_values_with_its_coalesced_count() {
        let mut ms = meters();
        queue(&mut ms[0], 0, 1.0);
        queue(&mut ms[0], 0, 2.0);
        queue(&mut ms[0], 1, 0.5);
        let (_, handed) = take(&mut ms);
        queue(&mut ms[0], 0, 3.0);
        restore(&mut ms, handed);
        let (events, _) = take(&mut ms);
        assert_eq!(
            events[0].payload,
            serde_json::json!({"points": {"energy_active_forward_total": 3, "power_factor_total": 0.5},
                               "units": {"energy_active_forward_total": "kWh"}, "coalesced": 2})
        );
    }
}
