//! `campusgw rules check DIR` and `campusgw rules test --rules DIR --events FILE.jsonl`:
//! the offline tools for rule authors (docs/rules.md "Testing a rule").
//!
//! `check` reads every `*.toml` in DIR (not recursing), checks the set as the gateway would
//! and prints every problem as `file:line: rule "id": message`; exit 1 if there is any.
//! `test` runs the events of a JSON-lines file through a fresh engine and prints each action
//! and alarm change as one JSON line, then any evaluation error; nothing is sent anywhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use campusgw_rules::{Engine, RuleEnv, RuleSet, RuleSource};
use campusgw_sdk::{Class, DeviceId, EVENT_SCHEMA_VERSION, Event, Kind, Location, Source};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use serde::Deserialize;

/// `campusgw rules ...`
#[derive(Debug, Subcommand)]
pub enum RulesCmd {
    /// Check a rules directory: every problem with file and line; exit 1 if any.
    Check {
        /// The directory of rule files (*.toml).
        dir: PathBuf,
        /// What the rules are checked against.
        #[command(flatten)]
        env: EnvArgs,
    },
    /// Dry run: feed events to the rules and print the actions and alarm changes as JSON lines.
    Test {
        /// The directory of rule files (*.toml).
        #[arg(long)]
        rules: PathBuf,
        /// Events, one JSON object a line: journal events (`campusgw journal export`) or the
        /// short form {"kind", "device", "location", "payload", "at"}.
        #[arg(long)]
        events: PathBuf,
        /// Move the events in time so the first is at TIME (RFC 3339), keeping their spacing:
        /// try a file against school hours, a weekend or a holiday.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// After the last event, let this much time pass (absence timers, escalation).
        #[arg(long, default_value = "0s")]
        advance: humantime::Duration,
        /// What the rules are checked against.
        #[command(flatten)]
        env: EnvArgs,
    },
}

/// The configuration the rules are checked against.
#[derive(Debug, Args)]
pub struct EnvArgs {
    /// Take uplink names from this gateway config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// An uplink name `forward` may use (repeatable).
    #[arg(long = "uplink")]
    pub uplinks: Vec<String>,
    /// A notifier name `notify` may use (repeatable).
    #[arg(long = "notifier")]
    pub notifiers: Vec<String>,
}

/// Runs a `rules` subcommand; returns the exit code.
///
/// # Errors
/// Files that cannot be read.
pub fn run(cmd: RulesCmd) -> anyhow::Result<i32> {
    match cmd {
        RulesCmd::Check { dir, env } => check(&dir, &env),
        RulesCmd::Test {
            rules,
            events,
            at,
            advance,
            env,
        } => test(&rules, &events, at, advance.into(), &env),
    }
}

fn rule_env(args: &EnvArgs) -> anyhow::Result<RuleEnv> {
    let mut env = RuleEnv::default();
    if let Some(path) = &args.config {
        let config = crate::config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
        env.known_uplinks = config.uplinks.iter().map(|u| u.name.clone()).collect();
    }
    env.known_uplinks.extend(args.uplinks.iter().cloned());
    env.known_notifiers.extend(args.notifiers.iter().cloned());
    Ok(env)
}

/// Every `*.toml` directly in `dir`, sorted by name.
///
/// # Errors
/// The directory or a file cannot be read.
pub fn read_dir(dir: &Path) -> anyhow::Result<Vec<RuleSource>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read rules directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            Ok(RuleSource { file, text })
        })
        .collect()
}

fn load(dir: &Path, env: &EnvArgs) -> anyhow::Result<Result<(RuleSet, usize), i32>> {
    let sources = read_dir(dir)?;
    let env = rule_env(env)?;
    match RuleSet::parse(&sources, &env) {
        Ok(set) => Ok(Ok((set, sources.len()))),
        Err(issues) => {
            let mut err = std::io::stderr().lock();
            writeln!(
                err,
                "error: {} has {} problems",
                dir.display(),
                issues.len()
            )?;
            for i in &issues {
                writeln!(err, "{i}")?;
            }
            Ok(Err(1))
        }
    }
}

fn check(dir: &Path, env: &EnvArgs) -> anyhow::Result<i32> {
    let (set, files) = match load(dir, env)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let mut out = std::io::stdout().lock();
    for r in set.rules() {
        for s in &r.skipped {
            writeln!(
                out,
                "{}:{}: rule {:?}: note: {s} left out (not configured)",
                r.file.display(),
                r.line,
                r.id
            )?;
        }
    }
    writeln!(
        out,
        "{}: ok ({} rules in {files} files)",
        dir.display(),
        set.rules().count()
    )?;
    Ok(0)
}

/// The short event form for hand-written test files.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShortEvent {
    kind: Kind,
    #[serde(default)]
    class: Option<Class>,
    #[serde(default)]
    device: Option<DeviceId>,
    #[serde(default)]
    location: Option<Location>,
    #[serde(default)]
    payload: Option<serde_json::Value>,
    #[serde(default)]
    at: Option<DateTime<Utc>>,
    #[serde(default)]
    seq: Option<u64>,
}

fn parse_event(line: &str, n: u64, prev: DateTime<Utc>) -> Result<Event, String> {
    if let Ok(e) = serde_json::from_str::<Event>(line) {
        return Ok(e);
    }
    let s: ShortEvent = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let class = s.class.unwrap_or(match s.kind.family() {
        "fire" | "panic" | "intrusion" => Class::LifeSafety,
        "door" | "device" | "storage" | "video" => Class::Security,
        "alarm" | "maintenance" | "drill" | "rule" | "command" => Class::Operations,
        "access" | "patrol" | "pos" | "visitor" => Class::Business,
        _ => Class::Telemetry,
    });
    let device = match s.device {
        Some(d) => d,
        None => DeviceId::new("test").map_err(|e| e.to_string())?,
    };
    Ok(Event {
        schema: EVENT_SCHEMA_VERSION,
        id: uuid::Uuid::now_v7(),
        seq: s.seq.unwrap_or(n),
        occurred_at: None,
        received_at: s.at.unwrap_or(prev),
        source: Source {
            device,
            driver: "test".into(),
        },
        kind: s.kind,
        class,
        location: s.location.unwrap_or_default(),
        payload: s
            .payload
            .unwrap_or_else(|| serde_json::Value::Object(Default::default())),
        origin_ref: None,
        dedup: Default::default(),
    })
}

fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut events = Vec::new();
    let mut prev = Utc::now();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let n = u64::try_from(i + 1).unwrap_or(u64::MAX);
        let e = parse_event(line, n, prev)
            .map_err(|m| anyhow::anyhow!("{}:{}: {m}", path.display(), i + 1))?;
        prev = e.received_at;
        events.push(e);
    }
    Ok(events)
}

fn test(
    rules: &Path,
    events: &Path,
    at: Option<DateTime<Utc>>,
    advance: std::time::Duration,
    env: &EnvArgs,
) -> anyhow::Result<i32> {
    let (set, _) = match load(rules, env)? {
        Ok(x) => x,
        Err(code) => return Ok(code),
    };
    let mut events = read_events(events)?;
    if let (Some(at), Some(first)) = (at, events.first().map(|e| e.received_at)) {
        for e in &mut events {
            e.received_at = at
                .checked_add_signed(e.received_at - first)
                .unwrap_or(e.received_at);
        }
    }
    let mut engine = Engine::new(set);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut last = at.unwrap_or_else(Utc::now);
    for e in &events {
        // Timers due before the event fire first, printed at their own deadline.
        while let Some(d) = engine.next_deadline().filter(|d| *d < e.received_at) {
            let actions = engine.on_time(d);
            print_actions(&mut out, d, &actions)?;
        }
        last = e.received_at;
        let actions = engine.on_event(e.seq, e, e.received_at);
        print_actions(&mut out, e.received_at, &actions)?;
        print_errors(&mut out, &mut engine)?;
    }
    let end = last
        .checked_add_signed(chrono::Duration::from_std(advance).unwrap_or_default())
        .unwrap_or(DateTime::<Utc>::MAX_UTC);
    while let Some(d) = engine.next_deadline().filter(|d| *d <= end) {
        let actions = engine.on_time(d);
        print_actions(&mut out, d, &actions)?;
    }
    print_errors(&mut out, &mut engine)?;
    out.flush()?;
    Ok(0)
}

fn print_actions(
    out: &mut impl Write,
    at: DateTime<Utc>,
    actions: &[campusgw_rules::Action],
) -> anyhow::Result<()> {
    for a in actions {
        let mut j = a.to_json();
        if let Some(o) = j.as_object_mut() {
            o.insert("at".into(), serde_json::json!(at));
        }
        serde_json::to_writer(&mut *out, &j)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn print_errors(out: &mut impl Write, engine: &mut Engine) -> anyhow::Result<()> {
    for e in engine.take_eval_errors() {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({"error": e.message, "rule": e.rule, "seq": e.seq}),
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
