//! Feeds arbitrary text to the rule-file parser (TOML, then every check), and the same text
//! as a CEL condition of an otherwise valid rule; a set that parses then evaluates one event,
//! so conditions run through the fast path and the interpreter. Nothing may panic (the
//! cel-parser panics the engine contains with catch_unwind do not count), and where the fast
//! condition path answers it must give what the interpreter gives.
#![no_main]

use campusgw_model::{
    Class, DeviceId, EVENT_SCHEMA_VERSION, Event, EventId, Kind, Location, Source,
};
use campusgw_rules::{Engine, RuleEnv, RuleSet, RuleSource};
use libfuzzer_sys::fuzz_target;

fn event() -> Option<Event> {
    Some(Event {
        schema: EVENT_SCHEMA_VERSION,
        id: EventId::from_u128(1),
        seq: 1,
        occurred_at: None,
        received_at: chrono::DateTime::UNIX_EPOCH,
        source: Source {
            device: DeviceId::new("d1").ok()?,
            driver: "fuzz".into(),
        },
        kind: Kind::new("fire.alarm").ok()?,
        class: Class::LifeSafety,
        location: Location::from_path("main/A/1/z1/p1").ok()?,
        payload: serde_json::json!({"value": 941, "s": "x", "n": {"b": true}}),
        origin_ref: None,
        dedup: Default::default(),
    })
}

fn run(text: String) {
    let source = RuleSource {
        file: "fuzz.toml".into(),
        text,
    };
    if let Ok(set) = RuleSet::parse(&[source], &RuleEnv::default())
        && let Some(ev) = event()
    {
        let mut engine = Engine::new(set);
        let _ = engine.on_event(1, &ev, ev.received_at);
        let _ = engine.take_eval_errors();
    }
}

static QUIET: std::sync::Once = std::sync::Once::new();

fuzz_target!(|data: &[u8]| {
    // libfuzzer-sys's panic hook aborts on every panic, even one the engine catches (cel-parser
    // panics on some input and compile_condition contains it). A silent hook leaves caught
    // panics alone; one that escapes still reaches libfuzzer-sys's catch_unwind and aborts.
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    run(text.to_owned());
    if let Some(ev) = event() {
        assert!(
            campusgw_rules::fast_agrees_with_interpreter(text, &ev),
            "fast condition path and interpreter disagree on {text:?}"
        );
    }
    let condition = toml::Value::String(text.to_owned()).to_string();
    run(format!(
        "[[rule]]\nid = \"f\"\ntrigger = {{ kinds = [\"fire.*\"] }}\ncondition = {condition}\n[[rule.actions]]\ntype = \"alarm\"\nseverity = \"minor\"\n"
    ));
});
