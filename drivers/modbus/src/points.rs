//! The register map: `[[points]]` as written in the config, and the checked form the
//! poller runs on.
//!
//! Invariants of a [`PointMap`] (established by [`PointMap::compile`], relied on by the
//! poller and command handler): names are unique; every point fits the 16-bit address
//! space; bit points carry no register format and register points no edge kinds; a point
//! is writable only on a writable table; the read plan covers every polled point.

use std::collections::HashMap;

use campusgw_sdk::{Class, ConfigIssue, FieldPath, Kind};
use serde::Deserialize;

use crate::codec::{ReadBlock, RegisterFormat, Span, Table, ValueType, WordOrder, plan_reads};

/// One `[[points]]` entry as written in the config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// Unique name, used in payloads and command arguments.
    pub name: String,
    /// `coil`, `discrete_input`, `holding_register` or `input_register`.
    pub table: Table,
    /// Zero-based protocol address (the PDU address, not a 40001-style number).
    pub address: u16,
    /// Bits: event kind on a rising edge (and for an input already on at start).
    #[serde(default)]
    pub on_kind: Option<String>,
    /// Bits: event kind on a falling edge.
    #[serde(default)]
    pub off_kind: Option<String>,
    /// Event class; bits with `on_kind` must set it, registers default to `telemetry`.
    #[serde(default)]
    pub class: Option<String>,
    /// Registers: `u16` (default), `i16`, `u32`, `i32`, `f32`.
    #[serde(default, rename = "type")]
    pub value_type: Option<ValueType>,
    /// Registers, 32-bit types: `big` (default, high word first) or `little`.
    #[serde(default)]
    pub word_order: Option<WordOrder>,
    /// Registers: value = raw * scale + offset (default 1).
    #[serde(default)]
    pub scale: Option<f64>,
    /// Registers: added after scaling (default 0).
    #[serde(default)]
    pub offset: Option<f64>,
    /// Registers: engineering unit, copied into readings.
    #[serde(default)]
    pub unit: Option<String>,
    /// Registers: emit a reading only when it moved at least this much (default 0: any change).
    #[serde(default)]
    pub deadband: Option<f64>,
    /// Coils and holding registers: commands may write it (default false).
    #[serde(default)]
    pub writable: bool,
    /// A run of this many points of the same settings at consecutive addresses (one value
    /// width apart), each named by `name` with `{address}` replaced by its address, e.g.
    /// `name = "r{address}"`, `address = 0`, `count = 1000` for `r0`..`r999` (default 1).
    #[serde(default)]
    pub count: Option<u16>,
}

/// The placeholder a run's `name` must hold.
const ADDRESS_PLACEHOLDER: &str = "{address}";

/// The points one entry stands for: itself, or its run expanded (empty when the run is
/// invalid; the problem is reported).
fn expand(pc: &PointConfig, at: &FieldPath, issues: &mut Vec<ConfigIssue>) -> Vec<PointConfig> {
    let Some(count) = pc.count else {
        return vec![pc.clone()];
    };
    let width = u32::from(pc.value_type.unwrap_or_default().width());
    let end = u32::from(pc.address) + u32::from(count) * width;
    let problem = if count == 0 {
        Some("count must be at least 1".to_owned())
    } else if count > 1 && !pc.name.contains(ADDRESS_PLACEHOLDER) {
        Some(format!(
            "a run of {count} points needs `{ADDRESS_PLACEHOLDER}` in its name (e.g. \"r{ADDRESS_PLACEHOLDER}\") so each point has its own"
        ))
    } else if end > 65536 {
        Some(format!(
            "a run of {count} points from address {} runs past the last address 65535",
            pc.address
        ))
    } else {
        None
    };
    if let Some(msg) = problem {
        issues.push(ConfigIssue::new(at.key("count"), msg));
        return Vec::new();
    }
    (0..u32::from(count))
        .filter_map(|k| u16::try_from(u32::from(pc.address) + k * width).ok())
        .map(|address| PointConfig {
            name: pc.name.replace(ADDRESS_PLACEHOLDER, &address.to_string()),
            address,
            count: None,
            ..pc.clone()
        })
        .collect()
}

/// What a checked point does.
#[derive(Debug, Clone, PartialEq)]
pub enum PointRole {
    /// A coil or discrete input.
    Bit {
        /// Kind on a rising edge; `None` for a write-only coil, which is not polled.
        on_kind: Option<Kind>,
        /// Kind on a falling edge; `None`: falling edges are tracked but not reported.
        off_kind: Option<Kind>,
        /// Class of both kinds.
        class: Class,
    },
    /// A holding or input register value, reported in `sensor.readings` batches.
    Register {
        /// How the words become a value.
        format: RegisterFormat,
        /// Engineering unit.
        unit: Option<String>,
        /// Minimum change to report.
        deadband: f64,
        /// Event class.
        class: Class,
    },
}

/// A checked point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Unique name.
    pub name: String,
    /// Its table.
    pub table: Table,
    /// First address.
    pub address: u16,
    /// Whether commands may write it.
    pub writable: bool,
    /// Bit or register behaviour.
    pub role: PointRole,
}

impl Point {
    /// Number of bits or registers it occupies.
    pub fn width(&self) -> u16 {
        match &self.role {
            PointRole::Bit { .. } => 1,
            PointRole::Register { format, .. } => format.value_type.width(),
        }
    }

    /// Whether the poller reads it: registers always, bits only when they report edges.
    pub fn is_polled(&self) -> bool {
        match &self.role {
            PointRole::Bit {
                on_kind, off_kind, ..
            } => on_kind.is_some() || off_kind.is_some(),
            PointRole::Register { .. } => true,
        }
    }
}

/// The checked register map with its read plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PointMap {
    /// Points in config order.
    pub points: Vec<Point>,
    /// Read requests per poll; members index [`PointMap::points`].
    pub blocks: Vec<ReadBlock>,
    /// Indexes of `points` sorted by name, for lookups by binary search: 4 bytes a point
    /// where a `HashMap<String, usize>` with its own copy of every name took ~68 (massif,
    /// 100,000 points: 6.8 MB of the gateway's 39 MB heap).
    by_name: Vec<u32>,
}

impl PointMap {
    /// Checks `[[points]]` (found at `at`) and plans the reads; reports every problem.
    ///
    /// # Errors
    /// Every [`ConfigIssue`] found.
    pub fn compile(configs: &[PointConfig], at: &FieldPath) -> Result<PointMap, Vec<ConfigIssue>> {
        let mut issues = Vec::new();
        if configs.is_empty() {
            issues.push(ConfigIssue::new(
                at.clone(),
                "no points configured: add at least one [[points]] entry",
            ));
        }
        let mut by_name: HashMap<&str, usize> = HashMap::new();
        // (config entry, point): a run stands for many points; problems name the entry.
        let mut expanded: Vec<(usize, PointConfig)> = Vec::new();
        for (i, pc) in configs.iter().enumerate() {
            let run = expand(pc, &at.index(i), &mut issues);
            expanded.extend(run.into_iter().map(|p| (i, p)));
        }
        // Sized once: a Vec grown by doubling keeps up to twice the points it holds.
        let mut points = Vec::with_capacity(expanded.len());
        for (k, (i, pc)) in expanded.iter().enumerate() {
            let here = at.index(*i);
            if let Some(&first) = by_name.get(pc.name.as_str()) {
                let first: usize = expanded.get(first).map_or(first, |(c, _)| *c);
                issues.push(ConfigIssue::new(
                    here.key("name"),
                    format!(
                        "duplicate point name {:?} (first used by points[{first}])",
                        pc.name
                    ),
                ));
            } else {
                // Indexes `points`: on success every expanded entry became a point, in order.
                by_name.insert(pc.name.as_str(), k);
            }
            if let Some(p) = check_point(pc, &here, &mut issues) {
                points.push(p);
            }
        }
        drop(by_name);
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut by_name: Vec<u32> = (0..points.len())
            .filter_map(|i| u32::try_from(i).ok())
            .collect();
        by_name.sort_unstable_by(|&a, &b| points[a as usize].name.cmp(&points[b as usize].name));
        let polled: Vec<usize> = (0..points.len())
            .filter(|&i| points[i].is_polled())
            .collect();
        let spans: Vec<Span> = polled
            .iter()
            .map(|&i| Span {
                table: points[i].table,
                address: points[i].address,
                width: points[i].width(),
            })
            .collect();
        let mut blocks = plan_reads(&spans);
        for b in &mut blocks {
            for m in &mut b.members {
                *m = polled[*m];
            }
        }
        Ok(PointMap {
            points,
            blocks,
            by_name,
        })
    }

    /// The point called `name`.
    pub fn get(&self, name: &str) -> Option<&Point> {
        let points = &self.points;
        let at = self
            .by_name
            .binary_search_by(|&i| points[i as usize].name.as_str().cmp(name))
            .ok()?;
        points.get(self.by_name[at] as usize)
    }

    /// All point names, for "did you mean" hints.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.points.iter().map(|p| p.name.as_str())
    }
}

fn check_point(pc: &PointConfig, at: &FieldPath, issues: &mut Vec<ConfigIssue>) -> Option<Point> {
    let before = issues.len();
    let mut issue = |key: &str, msg: String| issues.push(ConfigIssue::new(at.key(key), msg));
    if pc.name.is_empty()
        || pc.name.len() > 64
        || pc.name.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        issue(
            "name",
            format!(
                "invalid point name {:?}: use 1-64 characters without spaces",
                pc.name
            ),
        );
    }
    if pc.writable && !pc.table.is_writable() {
        issue(
            "writable",
            format!(
                "a {} is read-only in Modbus: only coils and holding registers can be writable",
                pc.table.as_str()
            ),
        );
    }
    let class = pc
        .class
        .as_deref()
        .map(|c| c.parse::<Class>().map_err(|e| issue("class", e)));
    let class = match class {
        Some(Ok(c)) => Some(c),
        Some(Err(())) => None,
        None => None,
    };
    let role = if pc.table.is_bit() {
        bit_role(pc, class, &mut issue)
    } else {
        register_role(pc, class, &mut issue)
    };
    if let Some(PointRole::Register { format, .. }) = &role
        && u32::from(pc.address) + u32::from(format.value_type.width()) > 65536
    {
        issue(
            "address",
            format!(
                "a {:?} at address {} runs past the last address 65535",
                format.value_type, pc.address
            ),
        );
    }
    let role = role?;
    (issues.len() == before).then(|| Point {
        name: pc.name.clone(),
        table: pc.table,
        address: pc.address,
        writable: pc.writable,
        role,
    })
}

fn parse_kind(key: &str, s: &Option<String>, issue: &mut impl FnMut(&str, String)) -> Option<Kind> {
    s.as_deref()
        .and_then(|s| Kind::new(s).map_err(|e| issue(key, e.to_string())).ok())
}

fn bit_role(
    pc: &PointConfig,
    class: Option<Class>,
    issue: &mut impl FnMut(&str, String),
) -> Option<PointRole> {
    let register_only = [
        ("type", pc.value_type.is_some()),
        ("word_order", pc.word_order.is_some()),
        ("scale", pc.scale.is_some()),
        ("offset", pc.offset.is_some()),
        ("unit", pc.unit.is_some()),
        ("deadband", pc.deadband.is_some()),
    ];
    for (key, set) in register_only {
        if set {
            issue(
                key,
                format!(
                    "`{key}` applies to registers only, not to a {}",
                    pc.table.as_str()
                ),
            );
        }
    }
    let on_kind = parse_kind("on_kind", &pc.on_kind, issue);
    let off_kind = parse_kind("off_kind", &pc.off_kind, issue);
    if pc.on_kind.is_none() && pc.off_kind.is_some() {
        issue(
            "on_kind",
            "`off_kind` is set but `on_kind` is missing: set the kind for the active state".into(),
        );
    }
    if pc.on_kind.is_none() && !(pc.table == Table::Coil && pc.writable) {
        issue(
            "on_kind",
            format!(
                "missing `on_kind`: a {} that is not a writable coil is only useful with an event kind (e.g. \"fire.alarm\")",
                pc.table.as_str()
            ),
        );
    }
    if pc.on_kind.is_some() && pc.class.is_none() {
        issue(
            "class",
            "missing `class` for an input with events: set e.g. \"life_safety\" for alarms".into(),
        );
    }
    Some(PointRole::Bit {
        on_kind,
        off_kind,
        class: class.unwrap_or(Class::Operations),
    })
}

fn register_role(
    pc: &PointConfig,
    class: Option<Class>,
    issue: &mut impl FnMut(&str, String),
) -> Option<PointRole> {
    for (key, set) in [
        ("on_kind", pc.on_kind.is_some()),
        ("off_kind", pc.off_kind.is_some()),
    ] {
        if set {
            issue(
                key,
                format!(
                    "`{key}` applies to coils and discrete inputs; a {} reports sensor.readings",
                    pc.table.as_str()
                ),
            );
        }
    }
    let value_type = pc.value_type.unwrap_or_default();
    if pc.word_order.is_some() && value_type.width() == 1 {
        issue(
            "word_order",
            format!("`word_order` needs a 32-bit type, not {value_type:?}"),
        );
    }
    let scale = pc.scale.unwrap_or(1.0);
    if !scale.is_finite() || scale == 0.0 {
        issue(
            "scale",
            format!("scale {scale} must be a finite, non-zero number"),
        );
    }
    let offset = pc.offset.unwrap_or(0.0);
    if !offset.is_finite() {
        issue("offset", format!("offset {offset} must be finite"));
    }
    let deadband = pc.deadband.unwrap_or(0.0);
    if !deadband.is_finite() || deadband < 0.0 {
        issue(
            "deadband",
            format!("deadband {deadband} must be zero or a positive number"),
        );
    }
    let format = RegisterFormat {
        value_type,
        word_order: pc.word_order.unwrap_or_default(),
        scale,
        offset,
    };
    Some(PointRole::Register {
        format,
        unit: pc.unit.clone(),
        deadband,
        class: class.unwrap_or(Class::Telemetry),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn compile(toml: &str) -> Result<PointMap, Vec<ConfigIssue>> {
        #[derive(Deserialize)]
        struct C {
            points: Vec<PointConfig>,
        }
        let c: C = toml::from_str(toml).unwrap();
        PointMap::compile(&c.points, &FieldPath::root().key("points"))
    }

    #[test]
    fn a_run_of_points_expands_to_one_named_point_per_address() {
        let map = compile(
            "[[points]]\nname = \"r{address}\"\ntable = \"holding_register\"\naddress = 0\ncount = 1000\n\
             [[points]]\nname = \"w{address}\"\ntable = \"input_register\"\naddress = 10\ntype = \"u32\"\ncount = 3\n\
             [[points]]\nname = \"alarm\"\ntable = \"discrete_input\"\naddress = 0\non_kind = \"fire.alarm\"\nclass = \"life_safety\"\n",
        )
        .unwrap();
        assert_eq!(map.points.len(), 1004);
        assert_eq!(map.get("r999").unwrap().address, 999);
        let w: Vec<u16> = ["w10", "w12", "w14"]
            .iter()
            .map(|n| map.get(n).unwrap().address)
            .collect();
        assert_eq!(w, [10, 12, 14], "32-bit values are two registers apart");
        assert_eq!(map.get("alarm").unwrap().table, Table::DiscreteInput);
        assert_eq!(
            map.blocks.len(),
            10,
            "8 reads of 125 registers, 1 input read, 1 bit read"
        );
    }

    #[test]
    fn a_run_needs_the_placeholder_a_positive_count_and_room_in_the_address_space() {
        for (body, expect) in [
            ("name = \"r\"\naddress = 0\ncount = 2", "needs `{address}`"),
            (
                "name = \"r{address}\"\naddress = 0\ncount = 0",
                "at least 1",
            ),
            (
                "name = \"r{address}\"\naddress = 65000\ncount = 600",
                "past the last address",
            ),
        ] {
            let issues = compile(&format!(
                "[[points]]\ntable = \"holding_register\"\n{body}\n"
            ))
            .unwrap_err();
            assert!(
                issues
                    .iter()
                    .any(|i| i.to_string().contains(expect)
                        && i.to_string().contains("points[0].count")),
                "{body}: {issues:?}"
            );
        }
    }
}
