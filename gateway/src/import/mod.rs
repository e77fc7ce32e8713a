//! Bulk configuration import (issue 12 item 4): a table exported by a vendor's
//! commissioning tool (CSV or XLSX, columns in zh-CN or English) is merged into the
//! gateway's TOML configuration and previewed before anything is written.
//!
//! # One validator
//! The import does not judge values itself. It merges the rows into the parsed config as
//! TOML values (cells as typed, so `系统 = "x"` stays a string), serializes the result, and
//! runs [`crate::config::parse`] on it: exactly what `check-config` and the gateway's start
//! run. Every problem that parse reports at a path the import wrote is mapped back to the
//! file's row and column; the rest belong to the existing config. The importer checks only
//! what the config cannot know: the header row, empty required cells, and UITD names.
//!
//! # Tables (templates in docs/console.md)
//! - **detectors** (GB/T 26875 component list, one row per detector): `传输装置/uitd`,
//!   `系统/system`, `回路/loop`, `地址/address`, `类型/type`, `楼栋/building`,
//!   `楼层/floor`, `区域/zone`. The rows for a UITD replace its `[[uitd.components]]`.
//! - **doors** (an access controller's door list, one row per door): `控制器/controller`,
//!   `门号/door`, `门设备/door_device`, `门名称/name`, `校区/campus`, `楼栋/building`,
//!   `楼层/floor`, `区域/zone`, `疏散通道/escape_route`, `边界/boundary`,
//!   `方向/direction`. The controller is a `zkteco_push` `[[device.controllers]]` (by its
//!   `device` or `sn`) or a `hikvision_isapi` device; its rows replace its doors.
//! - **locations** (the campus tree): `校区/campus`, `楼栋/building`, `楼层/floor`,
//!   `区域/zone`; added to `[[campus]]` where missing (nothing is removed).
//!
//! The kind is told by the columns: a door column makes a door table, else an address
//! column a detector table, else a location table.

pub mod sheet;
pub mod write;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use campusgw_sdk::config::suggest;
use serde::Serialize;
use toml::{Table, Value};

pub use sheet::{Format, Sheet, SheetError};

/// A column the importer understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Field {
    Campus,
    Building,
    Floor,
    Zone,
    Uitd,
    System,
    Loop,
    Address,
    Type,
    Controller,
    Door,
    DoorDevice,
    Name,
    Escape,
    Boundary,
    Direction,
}

/// Accepted header names of each column (compared trimmed, ASCII case-insensitive).
const HEADERS: &[(Field, &[&str])] = &[
    (Field::Campus, &["校区", "campus"]),
    (Field::Building, &["楼栋", "建筑", "building"]),
    (Field::Floor, &["楼层", "floor"]),
    (Field::Zone, &["区域", "防区", "zone"]),
    (
        Field::Uitd,
        &["传输装置", "用户信息传输装置", "uitd", "device"],
    ),
    (Field::System, &["系统", "系统地址", "system"]),
    (Field::Loop, &["回路", "回路号", "loop"]),
    (Field::Address, &["地址", "点位", "点号", "address"]),
    (Field::Type, &["类型", "部件类型", "type"]),
    (Field::Controller, &["控制器", "门禁控制器", "controller"]),
    (Field::Door, &["门号", "门编号", "door"]),
    (
        Field::DoorDevice,
        &["门设备", "门设备编号", "door_device", "door_id"],
    ),
    (Field::Name, &["门名称", "名称", "name"]),
    (Field::Escape, &["疏散通道", "逃生通道", "escape_route"]),
    (Field::Boundary, &["边界", "出入边界", "boundary"]),
    (Field::Direction, &["方向", "进出方向", "direction"]),
];

/// Which table a file holds, told by its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// GB/T 26875 detectors (has an address column).
    Detectors,
    /// Access-controller doors (has a door column).
    Doors,
    /// The campus tree.
    Locations,
}

impl TableKind {
    /// `detector`, `door`, `location`.
    pub fn noun(self) -> &'static str {
        match self {
            TableKind::Detectors => "detector",
            TableKind::Doors => "door",
            TableKind::Locations => "location",
        }
    }
}

/// One problem, where the spreadsheet shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct RowError {
    /// 1-based row of the file (1 is the header); 0: the existing config, not the file.
    pub row: usize,
    /// 1-based column (A = 1), if one cell is at fault.
    pub column: Option<usize>,
    /// That column's header as written in the file.
    pub header: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

/// What applying the import would change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Diff {
    /// New entries (`uitd_a 1:10-2`, `main/A/3/east`).
    pub added: Vec<String>,
    /// Entries whose values change.
    pub changed: Vec<String>,
    /// Entries the import drops (components of a UITD that the file no longer lists).
    pub removed: Vec<String>,
}

/// The outcome of reading a file against a config: nothing is written.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    /// The table the columns name.
    pub table: TableKind,
    /// Data rows read (blank rows not counted).
    pub rows: usize,
    /// Every problem; the import may be applied only when this is empty.
    pub errors: Vec<RowError>,
    /// What would change.
    pub diff: Diff,
    /// The whole configuration with the import merged, as validated.
    #[serde(skip)]
    pub merged: String,
}

impl Preview {
    /// The preview as text for a terminal: counts, then every problem, then the changes
    /// (at most 20 of each kind listed).
    pub fn report(&self, file: &str) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "{file}: {} table, {} rows, {} problems; {} added, {} changed, {} removed\n",
            self.table.noun(),
            self.rows,
            self.errors.len(),
            self.diff.added.len(),
            self.diff.changed.len(),
            self.diff.removed.len()
        );
        for e in &self.errors {
            let place = match (e.row, e.column, &e.header) {
                (0, _, _) => "config".to_owned(),
                (r, Some(c), Some(h)) => format!("row {r}, column {c} ({h})"),
                (r, Some(c), None) => format!("row {r}, column {c}"),
                (r, None, _) => format!("row {r}"),
            };
            let _ = writeln!(out, "  error: {place}: {}", e.message);
        }
        for (what, list) in [
            ("+", &self.diff.added),
            ("~", &self.diff.changed),
            ("-", &self.diff.removed),
        ] {
            for item in list.iter().take(20) {
                let _ = writeln!(out, "  {what} {item}");
            }
            if list.len() > 20 {
                let _ = writeln!(out, "  {what} ... and {} more", list.len() - 20);
            }
        }
        out
    }
}

/// Why a preview could not be made at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The upload is not a table.
    #[error(transparent)]
    Sheet(#[from] SheetError),
    /// The gateway's own config is not TOML (check-config first).
    #[error("the current configuration is not valid TOML: {0}")]
    Base(String),
    /// The merged table cannot be written as TOML (a bug).
    #[error("cannot write the merged configuration: {0}")]
    Render(String),
}

/// A column found in the header row: its field and 0-based index.
type Columns = BTreeMap<Field, usize>;

/// Reads the header row; unknown headers are errors (a typo would drop a column).
fn columns(sheet: &Sheet, errors: &mut Vec<RowError>) -> Columns {
    let mut out = Columns::new();
    let known: Vec<&str> = HEADERS
        .iter()
        .flat_map(|(_, n)| n.iter().copied())
        .collect();
    for (i, h) in sheet.rows[0].iter().enumerate() {
        let name = h.trim();
        if name.is_empty() {
            continue;
        }
        let found = HEADERS
            .iter()
            .find(|(_, names)| names.iter().any(|n| n.eq_ignore_ascii_case(name)));
        match found {
            Some((f, _)) if out.contains_key(f) => errors.push(header_error(
                i,
                h,
                format!("column \"{name}\" is given twice"),
            )),
            Some((f, _)) => {
                out.insert(*f, i);
            }
            None => {
                let hint = suggest(name, known.iter().copied())
                    .map(|s| format!(" (did you mean \"{s}\"?)"))
                    .unwrap_or_default();
                errors.push(header_error(
                    i,
                    h,
                    format!(
                        "unknown column \"{name}\"{hint}; see the templates in docs/console.md"
                    ),
                ));
            }
        }
    }
    out
}

fn header_error(i: usize, h: &str, message: String) -> RowError {
    RowError {
        row: 1,
        column: Some(i + 1),
        header: Some(h.to_owned()),
        message,
    }
}

/// Reads `sheet` against the config text `base` (the file at `base_path`), merges it and
/// validates the result with the config's own checks.
///
/// # Errors
/// [`ImportError`] when no preview can be made; problems in the rows are in
/// [`Preview::errors`].
pub fn preview(base: &str, base_path: &Path, sheet: &Sheet) -> Result<Preview, ImportError> {
    let mut table: Table = toml::from_str(base).map_err(|e| ImportError::Base(e.to_string()))?;
    let mut errors = Vec::new();
    let cols = columns(sheet, &mut errors);
    let kind = if cols.contains_key(&Field::Door) {
        TableKind::Doors
    } else if cols.contains_key(&Field::Address) {
        TableKind::Detectors
    } else {
        TableKind::Locations
    };
    // A column of another table would be dropped without a word: refuse it.
    let stray: &[Field] = if kind == TableKind::Doors {
        &[
            Field::Uitd,
            Field::System,
            Field::Loop,
            Field::Address,
            Field::Type,
        ]
    } else {
        &[
            Field::Controller,
            Field::DoorDevice,
            Field::Name,
            Field::Escape,
            Field::Boundary,
            Field::Direction,
        ]
    };
    for f in stray {
        if let Some(&i) = cols.get(f) {
            let h = &sheet.rows[0][i];
            errors.push(header_error(
                i,
                h,
                format!(
                    "column \"{}\" does not belong in a {} table; remove it or put those rows in a file of their own",
                    h.trim(),
                    kind.noun()
                ),
            ));
        }
    }
    let mut cx = Merge {
        kind,
        sheet,
        cols: &cols,
        errors,
        origins: Vec::new(),
        door_ids: Vec::new(),
        diff: Diff::default(),
    };
    let rows = match kind {
        TableKind::Detectors => cx.detectors(&mut table),
        TableKind::Doors => cx.doors(&mut table),
        TableKind::Locations => cx.locations(&mut table),
    };
    let merged = toml::to_string(&table).map_err(|e| ImportError::Render(e.to_string()))?;
    if cx.errors.is_empty()
        && let Err(e) = crate::config::parse(&merged, base_path)
    {
        for (line, issue) in e.problems {
            let mapped = cx
                .locate(&issue.path.to_string(), &issue.message)
                .or_else(|| cx.locate_by_id(&issue.message));
            cx.errors.push(mapped.unwrap_or(RowError {
                row: 0,
                column: None,
                header: None,
                message: format!(
                    "in the current configuration: {} (line {line} of the merged file): {}",
                    issue.path, issue.message
                ),
            }));
        }
    }
    Ok(Preview {
        table: kind,
        rows,
        errors: cx.errors,
        diff: cx.diff,
        merged,
    })
}

/// Where a written config path came from.
struct Origin {
    /// The path prefix (`device[0].uitd[1].components[7]`).
    prefix: String,
    /// The file row (1-based).
    row: usize,
    /// The field of a path that ends at the prefix itself (locations).
    field: Field,
}

struct Merge<'a> {
    kind: TableKind,
    sheet: &'a Sheet,
    cols: &'a Columns,
    errors: Vec<RowError>,
    origins: Vec<Origin>,
    /// Door device ids written, with their row (the config reports a sub-device's id and
    /// location problems at its device table, naming the id).
    door_ids: Vec<(String, usize)>,
    diff: Diff,
}

impl Merge<'_> {
    /// The cell of `field` in data row `r` (0-based into `sheet.rows`), trimmed.
    fn cell(&self, r: usize, field: Field) -> &str {
        self.cols
            .get(&field)
            .and_then(|&c| self.sheet.rows[r].get(c))
            .map_or("", |s| s.trim())
    }

    fn error(&mut self, r: usize, field: Field, message: String) {
        let col = self.cols.get(&field).copied();
        self.errors.push(RowError {
            row: r + 1,
            column: col.map(|c| c + 1),
            header: col.and_then(|c| self.sheet.rows[0].get(c).cloned()),
            message,
        });
    }

    /// Data rows (0-based indices into `sheet.rows`), blank ones left out.
    fn data_rows(&self) -> Vec<usize> {
        (1..self.sheet.rows.len())
            .filter(|&r| self.sheet.rows[r].iter().any(|c| !c.trim().is_empty()))
            .collect()
    }

    fn require(&mut self, fields: &[Field]) -> bool {
        let missing: Vec<&str> = fields
            .iter()
            .filter(|f| !self.cols.contains_key(f))
            .filter_map(|f| HEADERS.iter().find(|(h, _)| h == f).map(|(_, n)| n[0]))
            .collect();
        if !missing.is_empty() {
            self.errors.push(RowError {
                row: 1,
                column: None,
                header: None,
                message: format!("missing column(s): {}", missing.join(", ")),
            });
        }
        missing.is_empty()
    }

    /// Maps a config path to the row (and column) that wrote it.
    fn locate(&self, path: &str, message: &str) -> Option<RowError> {
        let o = self
            .origins
            .iter()
            .filter(|o| {
                path.strip_prefix(&o.prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
            })
            .max_by_key(|o| o.prefix.len())?;
        let rest = path[o.prefix.len()..].trim_start_matches('.');
        let field = match rest {
            "" => o.field,
            r if r.starts_with("system_address") => Field::System,
            r if r.starts_with("location.campus") => Field::Campus,
            r if r.starts_with("location.building") => Field::Building,
            r if r.starts_with("location.floor") => Field::Floor,
            r if r.starts_with("location.zone") => Field::Zone,
            r if r.starts_with("location.point") && self.kind == TableKind::Doors => Field::Name,
            r if r.starts_with("location.point") => Field::Type,
            r if r.starts_with("location") && self.kind == TableKind::Doors => Field::Building,
            r if r.starts_with("escape_route") => Field::Escape,
            r if r.starts_with("boundary") => Field::Boundary,
            r if r.starts_with("direction") => Field::Direction,
            r if r.starts_with("device") => Field::DoorDevice,
            _ if self.kind == TableKind::Doors => Field::Door,
            _ => Field::Address,
        };
        // A door column the file does not have (a generated door id): the door number.
        let field = if self.kind == TableKind::Doors && !self.cols.contains_key(&field) {
            Field::Door
        } else {
            field
        };
        let col = self.cols.get(&field).copied();
        Some(RowError {
            row: o.row + 1,
            column: col.map(|c| c + 1),
            header: col.and_then(|c| self.sheet.rows[0].get(c).cloned()),
            message: message.to_owned(),
        })
    }

    /// A problem the config reports at a device table about a door it names
    /// (`device "zk_1_door2": location ... unknown floor "9"`, `device id "x" is used
    /// twice`): the row that wrote that door.
    fn locate_by_id(&self, message: &str) -> Option<RowError> {
        let named = |(id, _): &&(String, usize)| message.contains(&format!("\"{id}\""));
        let twice = message.contains("used twice");
        let (_, r) = if twice {
            self.door_ids.iter().rfind(named)?
        } else {
            self.door_ids.iter().find(named)?
        };
        let field = [
            ("unknown campus", Field::Campus),
            ("unknown building", Field::Building),
            ("unknown floor", Field::Floor),
            ("unknown zone", Field::Zone),
            ("location", Field::Building),
        ]
        .iter()
        .find(|(w, _)| message.contains(w))
        .map_or(Field::DoorDevice, |(_, f)| *f);
        let field = if self.cols.contains_key(&field) {
            field
        } else if field == Field::Building && self.cols.contains_key(&Field::Campus) {
            Field::Campus
        } else {
            Field::Door
        };
        let col = self.cols.get(&field).copied();
        Some(RowError {
            row: r + 1,
            column: col.map(|c| c + 1),
            header: col.and_then(|c| self.sheet.rows[0].get(c).cloned()),
            message: message.to_owned(),
        })
    }

    /// Detector rows replace the components of the UITDs they name.
    fn detectors(&mut self, table: &mut Table) -> usize {
        let rows = self.data_rows();
        if !self.require(&[Field::Uitd, Field::Address]) {
            return rows.len();
        }
        let uitds = uitd_index(table);
        let mut by_uitd: BTreeMap<(usize, usize), Vec<(usize, Value)>> = BTreeMap::new();
        for &r in &rows {
            let Some(at) = self.uitd_of(r, &uitds) else {
                continue;
            };
            if let Some(c) = self.component(r) {
                by_uitd.entry(at).or_default().push((r, c));
            }
        }
        for ((d, u), comps) in by_uitd {
            let Some(entry) = uitd_table(table, d, u) else {
                continue;
            };
            let name = entry
                .get("device")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let old = component_keys(entry.get("components"));
            let new: Vec<Value> = comps.iter().map(|(_, c)| c.clone()).collect();
            diff_into(
                &mut self.diff,
                &name,
                &old,
                &component_keys(Some(&Value::Array(new.clone()))),
            );
            for (k, (r, _)) in comps.iter().enumerate() {
                self.origins.push(Origin {
                    prefix: format!("device[{d}].uitd[{u}].components[{k}]"),
                    row: *r,
                    field: Field::Address,
                });
            }
            entry.insert("components".into(), Value::Array(new));
        }
        rows.len()
    }

    fn uitd_of(
        &mut self,
        r: usize,
        uitds: &HashMap<String, (usize, usize)>,
    ) -> Option<(usize, usize)> {
        let name = self.cell(r, Field::Uitd).to_owned();
        if name.is_empty() {
            self.error(
                r,
                Field::Uitd,
                "empty: name the uitd device this detector reports through".into(),
            );
            return None;
        }
        if let Some(at) = uitds.get(&name) {
            return Some(*at);
        }
        let hint = suggest(&name, uitds.keys().map(String::as_str))
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        self.error(
            r,
            Field::Uitd,
            format!("no gb26875 [[uitd]] has device = \"{name}\"{hint}; add the uitd to the config first"),
        );
        None
    }

    /// One `[[uitd.components]]` table from a row, cells kept as typed.
    fn component(&mut self, r: usize) -> Option<Value> {
        let (lp, addr) = (
            self.cell(r, Field::Loop).to_owned(),
            self.cell(r, Field::Address).to_owned(),
        );
        if addr.is_empty() {
            self.error(
                r,
                Field::Address,
                "empty: every detector needs its address".into(),
            );
            return None;
        }
        // GB/T 26875.3 component address: loop ("zone") in the low 16 bits, point in the high.
        let address = if lp.is_empty() {
            addr.clone()
        } else {
            format!("{lp}-{addr}")
        };
        let mut c = Table::new();
        c.insert("address".into(), Value::String(address.clone()));
        let sys = self.cell(r, Field::System);
        if !sys.is_empty() {
            c.insert("system_address".into(), typed(sys));
        }
        let mut loc = Table::new();
        for (f, key) in [
            (Field::Building, "building"),
            (Field::Floor, "floor"),
            (Field::Zone, "zone"),
        ] {
            let v = self.cell(r, f);
            if !v.is_empty() {
                loc.insert(key.into(), Value::String(v.to_owned()));
            }
        }
        let kind = self.cell(r, Field::Type);
        let point = if kind.is_empty() {
            address
        } else {
            format!("{kind}-{address}")
        };
        loc.insert("point".into(), Value::String(point));
        c.insert("location".into(), Value::Table(loc));
        Some(Value::Table(c))
    }

    /// Door rows replace the doors of the controllers they name.
    fn doors(&mut self, table: &mut Table) -> usize {
        let rows = self.data_rows();
        if !self.require(&[Field::Controller, Field::Door]) {
            return rows.len();
        }
        let controllers = controller_index(table);
        let mut by_ctl: BTreeMap<DoorOwner, Vec<(usize, Value)>> = BTreeMap::new();
        let single_campus = table
            .get("campus")
            .and_then(Value::as_array)
            .filter(|c| c.len() == 1)
            .and_then(|c| c[0].get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        for &r in &rows {
            let Some(mut owner) = self.controller_of(r, &controllers) else {
                continue;
            };
            if owner.2.is_none() {
                owner.2.clone_from(&single_campus);
            }
            if let Some(door) = self.door(r, &owner.1, owner.2.as_deref()) {
                by_ctl.entry(owner.0).or_default().push((r, door));
            }
        }
        for (owner, doors) in by_ctl {
            let (prefix, name) = (owner.prefix(), owner.name(table));
            let Some(entry) = owner.table(table) else {
                continue;
            };
            let old = door_keys(entry.get("doors"));
            let new: Vec<Value> = doors.iter().map(|(_, d)| d.clone()).collect();
            diff_into(
                &mut self.diff,
                &name,
                &old,
                &door_keys(Some(&Value::Array(new.clone()))),
            );
            for (k, (r, _)) in doors.iter().enumerate() {
                self.origins.push(Origin {
                    prefix: format!("{prefix}.doors[{k}]"),
                    row: *r,
                    field: Field::Door,
                });
            }
            entry.insert("doors".into(), Value::Array(new));
        }
        rows.len()
    }

    /// The controller a door row names: where its doors are and its device id (the stem
    /// of a generated door id).
    fn controller_of(&mut self, r: usize, controllers: &HashMap<String, Ctl>) -> Option<Ctl> {
        let name = self.cell(r, Field::Controller).to_owned();
        if name.is_empty() {
            self.error(
                r,
                Field::Controller,
                "empty: name the access controller (device id or serial number) of this door"
                    .into(),
            );
            return None;
        }
        if let Some(found) = controllers.get(&name) {
            return Some(found.clone());
        }
        let hint = suggest(&name, controllers.keys().map(String::as_str))
            .map(|s| format!(" (did you mean \"{s}\"?)"))
            .unwrap_or_default();
        self.error(
            r,
            Field::Controller,
            format!(
                "no access controller \"{name}\"{hint}: name a hikvision_isapi device or a zkteco_push [[device.controllers]] entry (its device or sn); add the controller to the config first"
            ),
        );
        None
    }

    /// One door table from a row (`[[device.doors]]` / `[[device.controllers.doors]]`).
    /// `campus`: the controller's when the row names none (a door's location names every
    /// level from the campus down).
    fn door(&mut self, r: usize, controller: &str, campus: Option<&str>) -> Option<Value> {
        let n = self.cell(r, Field::Door).to_owned();
        if n.is_empty() {
            self.error(
                r,
                Field::Door,
                "empty: every door needs its number on the controller".into(),
            );
            return None;
        }
        let mut d = Table::new();
        d.insert("n".into(), typed(&n));
        let id = match self.cell(r, Field::DoorDevice) {
            "" => format!("{controller}_door{n}"),
            id => id.to_owned(),
        };
        d.insert("device".into(), Value::String(id.clone()));
        self.door_ids.push((id.clone(), r));
        let mut loc = Table::new();
        if let Some(c) = campus.filter(|_| self.cell(r, Field::Campus).is_empty()) {
            loc.insert("campus".into(), Value::String(c.to_owned()));
        }
        for (f, key) in [
            (Field::Campus, "campus"),
            (Field::Building, "building"),
            (Field::Floor, "floor"),
            (Field::Zone, "zone"),
        ] {
            let v = self.cell(r, f);
            if !v.is_empty() {
                loc.insert(key.into(), Value::String(v.to_owned()));
            }
        }
        let point = match self.cell(r, Field::Name) {
            "" => id,
            name => name.to_owned(),
        };
        loc.insert("point".into(), Value::String(point));
        d.insert("location".into(), Value::Table(loc));
        let escape = self.cell(r, Field::Escape).to_owned();
        if !escape.is_empty() {
            match yes_no(&escape) {
                Some(b) => {
                    d.insert("escape_route".into(), Value::Boolean(b));
                }
                None => self.error(
                    r,
                    Field::Escape,
                    format!("\"{escape}\" is not yes or no: write 是 or 否 (yes / no); empty means yes (fire egress wins over lockdown)"),
                ),
            }
        }
        let boundary = self.cell(r, Field::Boundary);
        if !boundary.is_empty() {
            d.insert("boundary".into(), Value::String(boundary_value(boundary)));
        }
        let direction = self.cell(r, Field::Direction);
        if !direction.is_empty() {
            let v = match direction {
                "进" | "入" | "进入" => "in",
                "出" | "离开" => "out",
                other => other,
            };
            d.insert("direction".into(), Value::String(v.to_ascii_lowercase()));
        }
        Some(Value::Table(d))
    }

    /// Location rows add what the tree lacks.
    fn locations(&mut self, table: &mut Table) -> usize {
        let rows = self.data_rows();
        if !self.require(&[Field::Campus, Field::Building]) {
            return rows.len();
        }
        let Some(campuses) = array_at(table, "campus") else {
            return rows.len();
        };
        for &r in &rows {
            let path = [Field::Campus, Field::Building, Field::Floor, Field::Zone]
                .map(|f| self.cell(r, f).to_owned());
            if path[0].is_empty() || path[1].is_empty() {
                let f = if path[0].is_empty() {
                    Field::Campus
                } else {
                    Field::Building
                };
                self.error(
                    r,
                    f,
                    "empty: every row needs its campus and building".into(),
                );
                continue;
            }
            self.add_location(campuses, r, &path);
        }
        rows.len()
    }

    fn add_location(&mut self, campuses: &mut Vec<Value>, r: usize, path: &[String; 4]) {
        let (ci, new_c) = find_or_push(campuses, &path[0]);
        let mut prefix = format!("campus[{ci}]");
        self.note_new(new_c, &prefix, r, Field::Campus, &path[..1]);
        let Some(buildings) = child_array(&mut campuses[ci], "building") else {
            return;
        };
        let (bi, new_b) = find_or_push(buildings, &path[1]);
        prefix = format!("{prefix}.building[{bi}]");
        self.note_new(new_b, &prefix, r, Field::Building, &path[..2]);
        if path[2].is_empty() {
            return;
        }
        let Some(floors) = child_array(&mut buildings[bi], "floor") else {
            return;
        };
        let (fi, new_f) = find_or_push(floors, &path[2]);
        prefix = format!("{prefix}.floor[{fi}]");
        self.note_new(new_f, &prefix, r, Field::Floor, &path[..3]);
        if path[3].is_empty() {
            return;
        }
        let Some(zones) = child_array(&mut floors[fi], "zones") else {
            return;
        };
        if !zones.iter().any(|z| z.as_str() == Some(path[3].as_str())) {
            zones.push(Value::String(path[3].clone()));
            self.note_new(
                true,
                &format!("{prefix}.zones[{}]", zones.len() - 1),
                r,
                Field::Zone,
                &path[..],
            );
        }
    }

    fn note_new(&mut self, new: bool, prefix: &str, r: usize, field: Field, path: &[String]) {
        if new {
            self.origins.push(Origin {
                prefix: prefix.to_owned(),
                row: r,
                field,
            });
            self.diff.added.push(path.join("/"));
        }
    }
}

/// `是/否`, yes/no, true/false, 1/0, Y/N, √/×.
fn yes_no(cell: &str) -> Option<bool> {
    match cell.to_ascii_lowercase().as_str() {
        "是" | "yes" | "y" | "true" | "1" | "√" | "✓" => Some(true),
        "否" | "no" | "n" | "false" | "0" | "×" | "✗" => Some(false),
        _ => None,
    }
}

/// A boundary cell as the config spells it: `校园`/`校区` → `campus`, `楼栋:A` → `building:A`
/// (full-width colon too); anything else as written (the config check judges it).
fn boundary_value(cell: &str) -> String {
    let cell = cell.replace('：', ":");
    match cell.split_once(':') {
        None if matches!(cell.as_str(), "校园" | "校区" | "全校") => "campus".into(),
        Some(("楼栋" | "建筑", b)) => format!("building:{}", b.trim()),
        _ => cell.trim().to_owned(),
    }
}

/// Where a controller's doors are in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum DoorOwner {
    /// `device[d]` (hikvision_isapi: `[[device.doors]]`).
    Device(usize),
    /// `device[d].controllers[c]` (zkteco_push).
    Controller(usize, usize),
}

impl DoorOwner {
    fn prefix(self) -> String {
        match self {
            DoorOwner::Device(d) => format!("device[{d}]"),
            DoorOwner::Controller(d, c) => format!("device[{d}].controllers[{c}]"),
        }
    }

    fn table(self, table: &mut Table) -> Option<&mut Table> {
        let devices = table.get_mut("device")?.as_array_mut()?;
        match self {
            DoorOwner::Device(d) => devices.get_mut(d)?.as_table_mut(),
            DoorOwner::Controller(d, c) => devices
                .get_mut(d)?
                .get_mut("controllers")?
                .as_array_mut()?
                .get_mut(c)?
                .as_table_mut(),
        }
    }

    /// Its device id, for the diff.
    fn name(self, table: &Table) -> String {
        let devices = table.get("device").and_then(Value::as_array);
        let at = |d: usize| devices.and_then(|v| v.get(d));
        let key = match self {
            DoorOwner::Device(d) => at(d).and_then(|t| t.get("id")),
            DoorOwner::Controller(d, c) => at(d)
                .and_then(|t| t.get("controllers"))
                .and_then(Value::as_array)
                .and_then(|v| v.get(c))
                .and_then(|t| t.get("device")),
        };
        key.and_then(Value::as_str).unwrap_or_default().to_owned()
    }
}

/// A controller found: where its doors are, its device id, its campus (if its location
/// names one).
type Ctl = (DoorOwner, String, Option<String>);

/// The campus a location value names (`"main/A/1"` or `{ campus = "main", ... }`).
fn campus_of(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => s
            .split('/')
            .next()
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        Value::Table(t) => t.get("campus").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// `controller name → controller`: hikvision_isapi devices by id, zkteco_push controllers
/// by device and by serial number.
fn controller_index(table: &Table) -> HashMap<String, Ctl> {
    let mut out = HashMap::new();
    let devices = table.get("device").and_then(Value::as_array);
    for (d, dev) in devices.into_iter().flatten().enumerate() {
        let id = dev.get("id").and_then(Value::as_str).unwrap_or_default();
        match dev.get("driver").and_then(Value::as_str) {
            Some("hikvision_isapi") if !id.is_empty() => {
                out.insert(
                    id.to_owned(),
                    (
                        DoorOwner::Device(d),
                        id.to_owned(),
                        campus_of(dev.get("location")),
                    ),
                );
            }
            Some("zkteco_push") => {
                let ctls = dev.get("controllers").and_then(Value::as_array);
                for (c, ctl) in ctls.into_iter().flatten().enumerate() {
                    let Some(device) = ctl.get("device").and_then(Value::as_str) else {
                        continue;
                    };
                    let campus =
                        campus_of(ctl.get("location")).or_else(|| campus_of(dev.get("location")));
                    let at = (DoorOwner::Controller(d, c), device.to_owned(), campus);
                    if let Some(sn) = ctl.get("sn").and_then(Value::as_str) {
                        out.insert(sn.to_owned(), at.clone());
                    }
                    out.insert(device.to_owned(), at);
                }
            }
            _ => {}
        }
    }
    out
}

/// `door n → its table as text`, for the diff.
fn door_keys(v: Option<&Value>) -> BTreeMap<String, String> {
    let items = v.and_then(Value::as_array);
    items
        .into_iter()
        .flatten()
        .map(|d| {
            let n = d.get("n").map(Value::to_string).unwrap_or_default();
            let mut rest = d.as_table().cloned().unwrap_or_default();
            rest.remove("n");
            (format!("door {n}"), Value::Table(rest).to_string())
        })
        .collect()
}

/// A cell as TOML: an integer when it reads as one, else text (the config says which it wants).
fn typed(cell: &str) -> Value {
    cell.parse::<i64>()
        .map_or_else(|_| Value::String(cell.to_owned()), Value::Integer)
}

/// `uitd device name → (device index, uitd index)` over the gb26875 devices.
fn uitd_index(table: &Table) -> HashMap<String, (usize, usize)> {
    let mut out = HashMap::new();
    let devices = table.get("device").and_then(Value::as_array);
    for (d, dev) in devices.into_iter().flatten().enumerate() {
        if dev.get("driver").and_then(Value::as_str) != Some("gb26875") {
            continue;
        }
        let uitds = dev.get("uitd").and_then(Value::as_array);
        for (u, e) in uitds.into_iter().flatten().enumerate() {
            if let Some(name) = e.get("device").and_then(Value::as_str) {
                out.insert(name.to_owned(), (d, u));
            }
        }
    }
    out
}

fn uitd_table(table: &mut Table, d: usize, u: usize) -> Option<&mut Table> {
    table
        .get_mut("device")?
        .as_array_mut()?
        .get_mut(d)?
        .get_mut("uitd")?
        .as_array_mut()?
        .get_mut(u)?
        .as_table_mut()
}

/// `system:address → its table as text`, for the diff.
fn component_keys(v: Option<&Value>) -> BTreeMap<String, String> {
    let items = v.and_then(Value::as_array);
    items
        .into_iter()
        .flatten()
        .map(|c| {
            let addr = c
                .get("address")
                .map(|a| a.as_str().map_or_else(|| a.to_string(), str::to_owned))
                .unwrap_or_default();
            let sys = c
                .get("system_address")
                .map(Value::to_string)
                .unwrap_or_else(|| "*".into());
            (
                format!("{sys}:{addr}"),
                c.get("location").map(Value::to_string).unwrap_or_default(),
            )
        })
        .collect()
}

fn diff_into(
    diff: &mut Diff,
    uitd: &str,
    old: &BTreeMap<String, String>,
    new: &BTreeMap<String, String>,
) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for k in keys {
        let name = format!("{uitd} {k}");
        match (old.get(k), new.get(k)) {
            (None, Some(_)) => diff.added.push(name),
            (Some(_), None) => diff.removed.push(name),
            (Some(a), Some(b)) if a != b => diff.changed.push(name),
            _ => {}
        }
    }
}

/// `table[key]` as an array, created when absent; `None` when it is something else (the
/// config check reports that at its own path).
fn array_at<'t>(table: &'t mut Table, key: &str) -> Option<&'t mut Vec<Value>> {
    table
        .entry(key)
        .or_insert_with(|| Value::Array(Vec::new()))
        .as_array_mut()
}

fn child_array<'t>(node: &'t mut Value, key: &str) -> Option<&'t mut Vec<Value>> {
    array_at(node.as_table_mut()?, key)
}

/// The index of the table with `id`, pushed when absent; whether it is new.
fn find_or_push(items: &mut Vec<Value>, id: &str) -> (usize, bool) {
    if let Some(i) = items
        .iter()
        .position(|v| v.get("id").and_then(Value::as_str) == Some(id))
    {
        return (i, false);
    }
    let mut t = Table::new();
    t.insert("id".into(), Value::String(id.to_owned()));
    items.push(Value::Table(t));
    (items.len() - 1, true)
}

#[cfg(test)]
mod tests;
