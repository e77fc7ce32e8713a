//! `campusgw bench rules`: events/s through the pure rules engine on one thread.
//!
//! The rule set is generated: of N rules, 70 % trigger on a kind and a location scope, 20 %
//! add a CEL condition on the payload, 10 % wait for a temporal pattern (count within a
//! window, two-device confirmation, absence after an arming event), in rotation; their kinds
//! are drawn from 24 kinds of which the event mix below uses 9, so most rules cannot match
//! most events (the kind index is what is measured). Actions are commands and alarms.
//!
//! The events follow the demo's mix by kind: 50 % `sensor.reading`, 20 % `access.granted`,
//! 8 % `video.motion`, 6 % `patrol.checkpoint`, 5 % `door.held_open`, 4 % `fire.alarm`,
//! 3 % `fire.reset`, 2 % `device.offline`, 2 % `device.online`, over 10 buildings, 40 zones
//! and 2,000 devices, 1 ms apart. Events are built before the clock starts; the figure is
//! `on_event` calls per second, actions included.

use std::fmt::Write as _;
use std::time::Instant;

use campusgw_rules::{Engine, RuleEnv, RuleSet, RuleSource};
use campusgw_sdk::{Class, DeviceId, EVENT_SCHEMA_VERSION, Event, Kind, Location, Source};
use chrono::{Duration, TimeZone, Utc};

const RULE_KINDS: [&str; 24] = [
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

/// (kind, class, share in 100).
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

/// The i-th generated rule as TOML.
fn rule(i: usize) -> String {
    let kind = RULE_KINDS[(i * 7) % RULE_KINDS.len()];
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
    if i.is_multiple_of(2) {
        r.push_str("[[rule.actions]]\ntype = \"alarm\"\nseverity = \"minor\"\n");
    } else {
        r.push_str("[[rule.actions]]\ntype = \"command\"\ncommand = \"relay.set\"\ntarget = \"building:{event.location.building}\"\nargs = { on = true }\n");
    }
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

fn event(i: u64) -> anyhow::Result<Event> {
    let (kind, class) = kind_of(i);
    let device = i % 2_000;
    let t0 = Utc
        .with_ymd_and_hms(2026, 12, 1, 2, 0, 0)
        .single()
        .ok_or_else(|| anyhow::anyhow!("bad epoch"))?;
    Ok(Event {
        schema: EVENT_SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        seq: i + 1,
        occurred_at: None,
        received_at: t0 + Duration::milliseconds(i64::try_from(i).unwrap_or(i64::MAX)),
        source: Source {
            device: DeviceId::new(format!("d{device}")).map_err(anyhow::Error::msg)?,
            driver: "bench".into(),
        },
        kind: Kind::new(kind)?,
        class,
        location: Location {
            campus: Some("main".into()),
            building: Some(format!("B{}", device % 10)),
            floor: Some("1".into()),
            zone: Some(format!("z{}", device % 4)),
            point: Some(format!("p{device}")),
        },
        payload: serde_json::json!({ "value": i % 1_000 }),
        origin_ref: None,
        dedup: Default::default(),
    })
}

/// Runs the benchmark and prints its figures; returns the exit code.
///
/// # Errors
/// A generated rule set that does not parse (a bug here).
pub fn run(rules: usize, events: u64) -> anyhow::Result<i32> {
    let text: String = (0..rules).map(rule).collect::<Vec<_>>().join("\n");
    let source = RuleSource {
        file: "generated.toml".into(),
        text,
    };
    let set = RuleSet::parse(&[source], &RuleEnv::default()).map_err(|issues| {
        anyhow::anyhow!(
            "generated rules refused: {}",
            issues.first().map(ToString::to_string).unwrap_or_default()
        )
    })?;
    let mut batch: Vec<Event> = (0..events.min(200_000))
        .map(event)
        .collect::<anyhow::Result<_>>()?;
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
    let errors = engine.take_eval_errors().len();
    println!(
        "rules: {rules} rules, {done} events in {secs:.2} s = {:.0} events/s on one thread; {actions} actions, {} open alarms, {errors} evaluation errors",
        done as f64 / secs.max(f64::EPSILON),
        engine.alarms().count(),
    );
    Ok(0)
}
