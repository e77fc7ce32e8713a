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
//! - **locations** (the campus tree): `校区/campus`, `楼栋/building`, `楼层/floor`,
//!   `区域/zone`; added to `[[campus]]` where missing (nothing is removed).

pub mod sheet;

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
];

/// Which table a file holds, told by its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// GB/T 26875 detectors (has an address column).
    Detectors,
    /// The campus tree.
    Locations,
}

/// One problem, where the spreadsheet shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
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
            match self.table {
                TableKind::Detectors => "detector",
                TableKind::Locations => "location",
            },
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
    let kind = if cols.contains_key(&Field::Address) {
        TableKind::Detectors
    } else {
        TableKind::Locations
    };
    let mut cx = Merge {
        sheet,
        cols: &cols,
        errors,
        origins: Vec::new(),
        diff: Diff::default(),
    };
    let rows = match kind {
        TableKind::Detectors => cx.detectors(&mut table),
        TableKind::Locations => cx.locations(&mut table),
    };
    let merged = toml::to_string(&table).map_err(|e| ImportError::Render(e.to_string()))?;
    if cx.errors.is_empty()
        && let Err(e) = crate::config::parse(&merged, base_path)
    {
        for (line, issue) in e.problems {
            let mapped = cx.locate(&issue.path.to_string(), &issue.message);
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
    sheet: &'a Sheet,
    cols: &'a Columns,
    errors: Vec<RowError>,
    origins: Vec<Origin>,
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
        let rest = &path[o.prefix.len()..];
        let field = match rest.trim_start_matches('.') {
            "" => o.field,
            r if r.starts_with("system_address") => Field::System,
            r if r.starts_with("location.building") => Field::Building,
            r if r.starts_with("location.floor") => Field::Floor,
            r if r.starts_with("location.zone") => Field::Zone,
            r if r.starts_with("location.point") => Field::Type,
            _ => Field::Address,
        };
        let col = self.cols.get(&field).copied();
        Some(RowError {
            row: o.row + 1,
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
