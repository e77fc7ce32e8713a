//! The rules-engine throughput benchmark: generated rule packs, events in the demo's kind mix,
//! and the loop that feeds them through [`Engine::on_event`] on one thread.
//!
//! It lives in the engine's crate so that it can be iterated on without building the gateway
//! (`cargo run --release -p campusgw-rules --example bench -- --rules 1000 --events 200000`);
//! `campusgw bench rules` calls [`run`] and prints [`Report`].
//!
//! Both packs follow issue 11's mix of N rules: 70 % trigger on a kind and a location scope,
//! 20 % add a CEL condition on the payload, 10 % wait for a temporal pattern (count within a
//! window, two-device confirmation, absence). Actions are alarms and commands, half each.
//!
//! - [`Pack::Campus`] (the default) is a pack a school district could write: 20 buildings of
//!   4 floors of 4 zones, 50 rules per building, 2,000 devices spread over the 320 zones. The
//!   plain kind + location rules name the event kinds people act on (fire, doors, access,
//!   patrol, devices, ...; never every telemetry reading), a quarter of them only outside
//!   school hours; the CEL rules put thresholds on `sensor.reading` values and other payloads
//!   (true for about 5 % of readings); the temporal ones confirm fires by zone, count motion
//!   and held-open doors, and watch for devices that stay offline and patrols that stop. A
//!   typical event is looked at by a few rules and acted on by fewer.
//! - [`Pack::Dense`] is the first generator (kept so earlier figures can be compared): 10
//!   buildings, rule kinds and buildings tied by the same parity, so every `sensor.reading`
//!   in an even building hits about 8 rules and most of them act (1.8 actions per event).
//!
//! Events, in both: 50 % `sensor.reading`, 20 % `access.granted`, 8 % `video.motion`, 6 %
//! `patrol.checkpoint`, 5 % `door.held_open`, 4 % `fire.alarm`, 3 % `fire.reset`, 2 %
//! `device.offline`, 2 % `device.online`, from 2,000 devices, 1 ms apart. At most 200,000
//! events are built before the clock starts and then reused, moved on in seq and time.

use std::fmt::Write as _;
use std::time::Instant;

use campusgw_model::{
    Class, DeviceId, EVENT_SCHEMA_VERSION, Event, EventId, Kind, Location, Source,
};
use chrono::{DateTime, Duration, TimeZone, Utc};

use crate::{Engine, RuleEnv, RuleSet, RuleSource};

/// Which generated rule pack to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pack {
    /// A realistic campus pack: many buildings and zones, a typical event matches a few rules.
    #[default]
    Campus,
    /// The first generator: most rules of a kind match most events of it (1.8 actions/event).
    Dense,
}

impl std::str::FromStr for Pack {
    type Err = String;
    fn from_str(s: &str) -> Result<Pack, String> {
        match s {
            "campus" => Ok(Pack::Campus),
            "dense" => Ok(Pack::Dense),
            _ => Err(format!("unknown pack {s:?} (campus or dense)")),
        }
    }
}

impl Pack {
    /// The name `FromStr` reads.
    pub fn as_str(self) -> &'static str {
        match self {
            Pack::Campus => "campus",
            Pack::Dense => "dense",
        }
    }
}

/// Why the benchmark could not run (a bug in the generator).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The generated rule set was refused.
    #[error("generated rules refused: {0}")]
    Rules(String),
    /// A generated event was invalid.
    #[error("generated event invalid: {0}")]
    Event(String),
}

/// What one run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Rules in the set.
    pub rules: usize,
    /// Events evaluated.
    pub events: u64,
    /// Wall-clock seconds of the evaluation loop (event building and parsing excluded).
    pub secs: f64,
    /// Actions returned, alarm changes included.
    pub actions: usize,
    /// Alarms open at the end.
    pub open_alarms: usize,
    /// Evaluation errors reported by the engine.
    pub errors: usize,
}

impl Report {
    /// Events per second.
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.secs.max(f64::EPSILON)
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rules: {} rules, {} events in {:.2} s = {:.0} events/s on one thread; {} actions, {} open alarms, {} evaluation errors",
            self.rules,
            self.events,
            self.secs,
            self.rate(),
            self.actions,
            self.open_alarms,
            self.errors
        )
    }
}

/// (kind, class, share in 100): the demo's mix.
const MIX: [(&str, Class, u64); 9] = [
    ("sensor.reading", Class::Telemetry, 50),
    ("access.granted", Class::Business, 20),
    ("video.motion", Class::Security, 8),
    ("patrol.checkpoint", Class::Business, 6),
    ("door.held_open", Class::Security, 5),
    ("fire.alarm", Class::LifeSafety, 4),
    ("fire.reset", Class::LifeSafety, 3),
    ("device.offline", Class::Security, 2),
    ("device.online", Class::Security, 2),
];

/// The rule set of `pack` with `n` rules, as one TOML file.
pub fn rules_toml(pack: Pack, n: usize) -> String {
    let rule = match pack {
        Pack::Campus => campus_rule,
        Pack::Dense => dense_rule,
    };
    (0..n).map(rule).collect::<Vec<_>>().join("\n")
}

/// The rule set of `pack` with `n` rules, parsed with the default environment.
///
/// # Errors
/// The generated set is refused (a bug here).
pub fn rule_set(pack: Pack, n: usize) -> Result<RuleSet, BenchError> {
    let source = RuleSource {
        file: "generated.toml".into(),
        text: rules_toml(pack, n),
    };
    RuleSet::parse(&[source], &RuleEnv::default()).map_err(|issues| {
        BenchError::Rules(issues.first().map(ToString::to_string).unwrap_or_default())
    })
}

/// Kinds the dense pack draws rule triggers from (9 of them are in the event mix).
const DENSE_KINDS: [&str; 24] = [
    "sensor.reading",
    "access.granted",
    "video.motion",
    "patrol.checkpoint",
    "door.held_open",
    "fire.alarm",
    "fire.reset",
    "device.offline",
    "device.online",
    "access.denied",
    "door.forced",
    "panic.alarm",
    "intrusion.alarm",
    "fire.fault",
    "fire.supervisory",
    "video.tamper",
    "broadcast.started",
    "pos.transaction",
    "visitor.checked_in",
    "storage.critical",
    "fire.power_fault",
    "door.closed",
    "sensor.fault",
    "elevator.stuck",
];

/// The i-th rule of the dense pack (the first generator, unchanged).
fn dense_rule(i: usize) -> String {
    let kind = DENSE_KINDS[(i * 7) % DENSE_KINDS.len()];
    let building = i % 10;
    let mut r = format!("[[rule]]\nid = \"r{i}\"\n");
    match i % 10 {
        0 => {
            let pattern = match (i / 10) % 3 {
                0 => "{ type = \"count\", count = 3, within = \"30s\" }",
                1 => "{ type = \"confirm\", devices = 2, within = \"60s\" }",
                _ => {
                    "{ type = \"absence\", within = \"5m\", arm = { kinds = [\"device.offline\"] } }"
                }
            };
            let kind = if (i / 10) % 3 == 2 {
                "device.online"
            } else {
                kind
            };
            let _ = write!(
                r,
                "trigger = {{ kinds = [\"{kind}\"], scopes = [\"building:B{building}\"] }}\npattern = {pattern}\n"
            );
        }
        1 | 2 => {
            let _ = write!(
                r,
                "trigger = {{ kinds = [\"{kind}\"], scopes = [\"building:B{building}\"] }}\ncondition = \"has(event.payload.value) && event.payload.value > {}\"\n",
                i % 1000
            );
        }
        _ => {
            let _ = writeln!(
                r,
                "trigger = {{ kinds = [\"{kind}\"], scopes = [\"zone:B{building}/1/z{}\"] }}",
                i % 4
            );
        }
    }
    push_action(&mut r, i);
    r
}

fn push_action(r: &mut String, i: usize) {
    if i.is_multiple_of(2) {
        r.push_str("[[rule.actions]]\ntype = \"alarm\"\nseverity = \"minor\"\n");
    } else {
        r.push_str("[[rule.actions]]\ntype = \"command\"\ncommand = \"relay.set\"\ntarget = \"building:{event.location.building}\"\nargs = { on = true }\n");
    }
}

/// Buildings, floors per building and zones per floor of the campus pack.
const BUILDINGS: usize = 20;
const FLOORS: usize = 4;
const ZONES: usize = 4;

/// Kinds the campus pack's plain kind + location rules name: what people act on (the mix's
/// non-telemetry kinds first, then kinds the mix does not produce).
const CAMPUS_KINDS: [&str; 20] = [
    "access.granted",
    "video.motion",
    "patrol.checkpoint",
    "door.held_open",
    "fire.alarm",
    "fire.reset",
    "device.offline",
    "device.online",
    "access.denied",
    "door.forced",
    "panic.alarm",
    "intrusion.alarm",
    "fire.fault",
    "fire.supervisory",
    "video.tamper",
    "storage.critical",
    "fire.power_fault",
    "door.closed",
    "sensor.fault",
    "elevator.stuck",
];

/// The i-th rule of the campus pack: building `i % 20`, and within it rule `j = i / 20`, whose
/// `j % 10` picks the category (0 temporal, 1-2 CEL, 3-9 kind + location).
fn campus_rule(i: usize) -> String {
    let b = i % BUILDINGS;
    let j = i / BUILDINGS;
    let floor = (j / 3) % FLOORS;
    let zone = (j / 5 + b) % ZONES;
    let mut r = format!("[[rule]]\nid = \"c{i}\"\n");
    match j % 10 {
        0 => {
            let (trigger, pattern) = match (j / 10) % 5 {
                0 => (
                    format!("kinds = [\"fire.alarm\"], scopes = [\"building:B{b}\"]"),
                    "{ type = \"confirm\", devices = 2, within = \"60s\" }".to_owned(),
                ),
                1 => (
                    format!("kinds = [\"video.motion\"], scopes = [\"floor:B{b}/{floor}\"]"),
                    "{ type = \"count\", count = 3, within = \"30s\" }".to_owned(),
                ),
                2 => (
                    format!("kinds = [\"device.online\"], scopes = [\"building:B{b}\"]"),
                    "{ type = \"absence\", within = \"5m\", arm = { kinds = [\"device.offline\"] } }"
                        .to_owned(),
                ),
                3 => (
                    format!("kinds = [\"patrol.checkpoint\"], scopes = [\"building:B{b}\"]"),
                    "{ type = \"absence\", within = \"10m\" }".to_owned(),
                ),
                _ => (
                    format!("kinds = [\"door.held_open\"], scopes = [\"building:B{b}\"]"),
                    "{ type = \"count\", count = 2, within = \"5m\" }".to_owned(),
                ),
            };
            let _ = write!(r, "trigger = {{ {trigger} }}\npattern = {pattern}\n");
        }
        1 | 2 => {
            // Thresholds true for about 5 % of values: an alarm level, not every reading.
            let threshold = 940 + (j * 7 + b) % 20;
            let kind = if j % 10 == 1 {
                "sensor.reading"
            } else {
                ["access.granted", "video.motion", "door.held_open"][(j / 10) % 3]
            };
            let _ = write!(
                r,
                "trigger = {{ kinds = [\"{kind}\"], scopes = [\"building:B{b}\"] }}\ncondition = \"has(event.payload.value) && event.payload.value > {threshold}\"\n",
            );
        }
        _ => {
            let kind = CAMPUS_KINDS[(j * 7 + b * 3) % CAMPUS_KINDS.len()];
            let scope = match j % 3 {
                0 => format!("building:B{b}"),
                1 => format!("floor:B{b}/{floor}"),
                _ => format!("zone:B{b}/{floor}/z{zone}"),
            };
            let _ = writeln!(
                r,
                "trigger = {{ kinds = [\"{kind}\"], scopes = [\"{scope}\"] }}"
            );
            if j.is_multiple_of(4) {
                r.push_str("schedule = { except = [\"school_hours\"] }\n");
            }
        }
    }
    push_action(&mut r, j + b);
    r
}

fn kind_of(i: u64) -> (&'static str, Class) {
    let mut slot = (i * 37) % 100;
    for (k, c, share) in MIX {
        if slot < share {
            return (k, c);
        }
        slot -= share;
    }
    ("sensor.reading", Class::Telemetry)
}

/// Tuesday 2026-12-01 10:00 in Shanghai: the first event's receive time.
fn epoch() -> Result<DateTime<Utc>, BenchError> {
    Utc.with_ymd_and_hms(2026, 12, 1, 2, 0, 0)
        .single()
        .ok_or_else(|| BenchError::Event("bad epoch".into()))
}

/// The i-th event of `pack`'s stream (seq `i + 1`, `i` ms after the epoch).
///
/// # Errors
/// A generated id or kind is invalid (a bug here).
pub fn event(pack: Pack, i: u64) -> Result<Event, BenchError> {
    let (kind, class) = kind_of(i);
    let device = i % 2_000;
    let bad = |e: String| BenchError::Event(e);
    let (location, value) = match pack {
        Pack::Dense => (
            Location {
                campus: Some("main".into()),
                building: Some(format!("B{}", device % 10)),
                floor: Some("1".into()),
                zone: Some(format!("z{}", device % 4)),
                point: Some(format!("p{device}")),
            },
            i % 1_000,
        ),
        Pack::Campus => {
            let d = device as usize;
            (
                Location {
                    campus: Some("main".into()),
                    building: Some(format!("B{}", d % BUILDINGS)),
                    floor: Some(format!("{}", (d / BUILDINGS) % FLOORS)),
                    zone: Some(format!("z{}", (d / (BUILDINGS * FLOORS)) % ZONES)),
                    point: Some(format!("p{device}")),
                },
                // Spread over 0..1000 without following the device or the kind.
                (i.wrapping_mul(7_919) ^ (i >> 7)) % 1_000,
            )
        }
    };
    Ok(Event {
        schema: EVENT_SCHEMA_VERSION,
        id: EventId::from_u128(u128::from(i) + 1),
        seq: i + 1,
        occurred_at: None,
        received_at: epoch()? + Duration::milliseconds(i64::try_from(i).unwrap_or(i64::MAX)),
        source: Source {
            device: DeviceId::new(format!("d{device}")).map_err(bad)?,
            driver: "bench".into(),
        },
        kind: Kind::new(kind).map_err(|e| BenchError::Event(e.to_string()))?,
        class,
        location,
        payload: serde_json::json!({ "value": value }),
        origin_ref: None,
        dedup: Default::default(),
    })
}

/// Runs `events` events of `pack` through an engine holding `rules` generated rules.
///
/// # Errors
/// The generator produced a rule or event the engine refuses (a bug here).
pub fn run(pack: Pack, rules: usize, events: u64) -> Result<Report, BenchError> {
    let set = rule_set(pack, rules)?;
    let mut batch: Vec<Event> = (0..events.min(200_000))
        .map(|i| event(pack, i))
        .collect::<Result<_, _>>()?;
    let mut engine = Engine::new(set);
    let (mut actions, mut done) = (0usize, 0u64);
    let started = Instant::now();
    // The same prebuilt events, moved on in seq and time each round, so memory stays flat.
    let span = Duration::milliseconds(i64::try_from(batch.len()).unwrap_or(0));
    let n = batch.len() as u64;
    while done < events {
        for e in &mut batch {
            if done == events {
                break;
            }
            actions += engine.on_event(e.seq, e, e.received_at).len();
            e.seq += n;
            e.received_at += span;
            done += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Report {
        rules,
        events: done,
        secs,
        actions,
        open_alarms: engine.alarms().count(),
        errors: engine.take_eval_errors().len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_generated_packs_parse_and_run_without_evaluation_errors() {
        for pack in [Pack::Campus, Pack::Dense] {
            let report = run(pack, 1_000, 5_000).expect("the generated pack runs");
            assert_eq!(report.events, 5_000);
            assert_eq!(report.errors, 0, "{pack:?}");
            assert!(report.actions > 0, "{pack:?} acts on some events");
        }
    }

    #[test]
    fn a_campus_event_is_acted_on_by_far_fewer_rules_than_a_dense_one() {
        let campus = run(Pack::Campus, 1_000, 20_000).expect("campus");
        let dense = run(Pack::Dense, 1_000, 20_000).expect("dense");
        assert!(
            campus.actions * 3 < dense.actions,
            "campus {} vs dense {} actions",
            campus.actions,
            dense.actions
        );
    }
}
