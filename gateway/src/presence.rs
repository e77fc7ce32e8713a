//! Presence and the evacuation muster list (issue 14 §4): who passed a boundary door inward
//! and has not passed one outward.
//!
//! # Where it comes from
//! Only from the journal: `access.granted` events of any access driver (`hikvision_isapi`,
//! `zkteco_push`) whose door is configured as a boundary carry `payload.boundary`
//! (`campus` or `building:<B>`), `payload.direction` (`in` / `out`) and `payload.person_id`.
//! The model reads the journal from seq 0 on its first use after start and then catches up
//! with what was committed since on every query ([`Presence::refresh`]), so it is rebuilt
//! after a restart and never disagrees with the journal. A passage whose direction is unknown
//! changes nothing (it is neither proof of leaving nor of entering).
//!
//! - `building:B` in: inside B (and the campus); out: not in B.
//! - `campus` in: on campus; out: off campus and in no building (whoever leaves through the
//!   gate has left every building).
//!
//! The muster list is "who **may** still be inside": a person who left through a door
//! without a reader, or tailgated, stays on it until seen leaving. That is the safe error for
//! an evacuation roll call.
//!
//! # Privacy
//! Events carry person ids only. Names and roles come from the roster CSV
//! (`[access] roster = "path"`: `person_id,name,role`, role `student`, `staff` or `visitor`,
//! or 学生 / 教职工 / 访客), read at start and shown only by the authenticated console API;
//! they are never journaled or forwarded. A person id missing from the roster is listed
//! without a name.
//!
//! # Retention
//! `[gateway.journal] access_retention` (e.g. `"7d"`, 1 h up to `retention`) deletes delivered
//! `access.granted` / `access.denied` events sooner than everything else
//! (`journal/retention.rs`, same delivered-first rule). A person whose entry event was deleted
//! drops off the muster list, so keep it longer than a school day.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Mutex;

use campusgw_sdk::{Class, Event};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::journal::Journal;

/// A person's role, from the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PersonRole {
    /// A student.
    Student,
    /// Teachers and other staff.
    Staff,
    /// A visitor.
    Visitor,
}

impl PersonRole {
    fn parse(s: &str) -> Option<PersonRole> {
        match s.trim().to_ascii_lowercase().as_str() {
            "student" | "学生" => Some(PersonRole::Student),
            "staff" | "teacher" | "教职工" | "教师" => Some(PersonRole::Staff),
            "visitor" | "访客" => Some(PersonRole::Visitor),
            _ => None,
        }
    }
}

/// One roster row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RosterEntry {
    /// The name shown on the muster list.
    pub name: String,
    /// The role.
    pub role: PersonRole,
}

/// Person id → name and role.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    people: HashMap<String, RosterEntry>,
}

/// Splits one CSV line (RFC 4180 quoting: `"a, b"`, `""` for a quote).
fn csv_fields(line: &str) -> Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (false, '"') if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
            }
            (false, ',') => out.push(std::mem::take(&mut cur).trim().to_owned()),
            (_, c) => cur.push(c),
        }
    }
    if quoted {
        return Err("unclosed quote");
    }
    out.push(cur.trim().to_owned());
    Ok(out)
}

impl Roster {
    /// Parses roster CSV text: `person_id,name,role` per line, an optional header line
    /// starting with `person_id`, `#` comments and blank lines skipped.
    ///
    /// # Errors
    /// Every bad line, as `line N: what to change`.
    pub fn parse(text: &str) -> Result<Roster, Vec<String>> {
        let mut people = HashMap::new();
        let mut problems = Vec::new();
        let text = text.trim_start_matches('\u{feff}');
        for (i, line) in text.lines().enumerate() {
            let n = i + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if n == 1 && line.to_ascii_lowercase().starts_with("person_id") {
                continue;
            }
            let f = match csv_fields(line) {
                Ok(f) => f,
                Err(e) => {
                    problems.push(format!("line {n}: {e}"));
                    continue;
                }
            };
            if f.len() != 3 {
                problems.push(format!(
                    "line {n}: {} fields; write person_id,name,role",
                    f.len()
                ));
                continue;
            }
            if f[0].is_empty() {
                problems.push(format!("line {n}: empty person_id"));
                continue;
            }
            let Some(role) = PersonRole::parse(&f[2]) else {
                problems.push(format!(
                    "line {n}: role {:?} is not student, staff or visitor",
                    f[2]
                ));
                continue;
            };
            let entry = RosterEntry {
                name: f[1].clone(),
                role,
            };
            if people.insert(f[0].clone(), entry).is_some() {
                problems.push(format!("line {n}: person_id {:?} is listed twice", f[0]));
            }
        }
        if problems.is_empty() {
            Ok(Roster { people })
        } else {
            Err(problems)
        }
    }

    /// Reads a roster file.
    ///
    /// # Errors
    /// The file and every bad line.
    pub fn load(path: &Path) -> Result<Roster, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("[access] roster {}: cannot read: {e}", path.display()))?;
        Roster::parse(&text)
            .map_err(|p| format!("[access] roster {}: {}", path.display(), p.join("; ")))
    }

    /// The entry of `person`.
    pub fn get(&self, person: &str) -> Option<&RosterEntry> {
        self.people.get(person)
    }

    /// How many people.
    pub fn len(&self) -> usize {
        self.people.len()
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.people.is_empty()
    }
}

/// The last boundary passage that put someone inside.
#[derive(Debug, Clone)]
struct Passage {
    at: DateTime<Utc>,
    door: String,
}

#[derive(Debug, Clone, Default)]
struct Person {
    campus: Option<Passage>,
    buildings: BTreeMap<String, Passage>,
}

/// The last result of a door command, per door.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DoorResult {
    /// The door's device id.
    pub door: String,
    /// The command kind (`door.lock`, ...).
    pub command: String,
    /// Who issued it.
    pub by: String,
    /// `succeeded`, `failed`, `rejected`, ...
    pub status: String,
    /// The driver's detail.
    pub detail: String,
    /// When the result was journaled.
    #[schema(value_type = String, format = DateTime)]
    pub at: DateTime<Utc>,
    /// Its journal seq.
    pub seq: u64,
}

#[derive(Default)]
struct Model {
    /// Last seq read, per class scanned.
    business: u64,
    operations: u64,
    people: HashMap<String, Person>,
    doors: BTreeMap<String, DoorResult>,
}

/// One line of the muster list.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MusterEntry {
    /// The person id (as the controllers know it).
    pub person_id: String,
    /// From the roster; null when the roster does not list the id.
    pub name: Option<String>,
    /// From the roster.
    pub role: Option<PersonRole>,
    /// The buildings the person may be in.
    pub buildings: Vec<String>,
    /// When they entered (the building asked for, else the campus).
    #[schema(value_type = String, format = DateTime)]
    pub since: DateTime<Utc>,
    /// Through which door.
    pub door: String,
}

/// The muster list of a building (or the campus).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Muster {
    /// The building asked for; null: the whole campus.
    pub building: Option<String>,
    /// How many may be inside.
    pub total: usize,
    /// Of them, by role (`student`, `staff`, `visitor`, `unknown`).
    pub by_role: BTreeMap<String, usize>,
    /// Who, students first, then staff, visitors, unknown ids.
    pub people: Vec<MusterEntry>,
    /// The journal seq the list is complete up to.
    pub as_of_seq: u64,
}

/// The presence model over the journal.
pub struct Presence {
    journal: Journal,
    roster: Roster,
    model: Mutex<Model>,
}

/// Events read per journal page while catching up.
const PAGE: usize = 5_000;

impl Presence {
    /// A model over `journal`, names from `roster`; nothing is read until first used.
    pub fn new(journal: Journal, roster: Roster) -> Presence {
        Presence {
            journal,
            roster,
            model: Mutex::new(Model::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Model> {
        match self.model.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Reads what was committed since the last call (everything, the first time).
    ///
    /// # Errors
    /// The journal's read error.
    pub fn refresh(&self) -> Result<u64, crate::journal::JournalError> {
        let reader = self.journal.reader()?;
        let mut m = self.lock();
        for class in [Class::Business, Class::Operations] {
            loop {
                let from = match class {
                    Class::Business => m.business,
                    _ => m.operations,
                };
                let evs = reader.after(from, Some(class), PAGE)?;
                let Some(last) = evs.last().map(|e| e.seq) else {
                    break;
                };
                for e in &evs {
                    apply(&mut m, e);
                }
                match class {
                    Class::Business => m.business = last,
                    _ => m.operations = last,
                }
                if evs.len() < PAGE {
                    break;
                }
            }
        }
        Ok(m.business.max(m.operations))
    }

    /// Who may be inside `building` (None: anywhere on campus).
    ///
    /// # Errors
    /// The journal's read error.
    pub fn muster(&self, building: Option<&str>) -> Result<Muster, crate::journal::JournalError> {
        let as_of = self.refresh()?;
        let m = self.lock();
        let mut people: Vec<MusterEntry> = m
            .people
            .iter()
            .filter_map(|(id, p)| {
                let passage = match building {
                    Some(b) => p.buildings.get(b)?,
                    None => p.campus.as_ref().or_else(|| p.buildings.values().next())?,
                };
                let r = self.roster.get(id);
                Some(MusterEntry {
                    person_id: id.clone(),
                    name: r.map(|r| r.name.clone()),
                    role: r.map(|r| r.role),
                    buildings: p.buildings.keys().cloned().collect(),
                    since: passage.at,
                    door: passage.door.clone(),
                })
            })
            .collect();
        people.sort_by(|a, b| {
            (a.role.is_none(), a.role, &a.person_id).cmp(&(b.role.is_none(), b.role, &b.person_id))
        });
        let mut by_role = BTreeMap::new();
        for p in &people {
            let k = match p.role {
                Some(PersonRole::Student) => "student",
                Some(PersonRole::Staff) => "staff",
                Some(PersonRole::Visitor) => "visitor",
                None => "unknown",
            };
            *by_role.entry(k.to_owned()).or_insert(0) += 1;
        }
        Ok(Muster {
            building: building.map(str::to_owned),
            total: people.len(),
            by_role,
            people,
            as_of_seq: as_of,
        })
    }

    /// The last door-command result per door.
    ///
    /// # Errors
    /// The journal's read error.
    pub fn door_results(&self) -> Result<Vec<DoorResult>, crate::journal::JournalError> {
        self.refresh()?;
        Ok(self.lock().doors.values().cloned().collect())
    }
}

fn apply(m: &mut Model, e: &Event) {
    match e.kind.as_str() {
        "access.granted" => passage(m, e),
        "command.result" => door_result(m, e),
        _ => {}
    }
}

fn passage(m: &mut Model, e: &Event) {
    let p = &e.payload;
    let (Some(boundary), Some(person), Some(dir)) = (
        p["boundary"].as_str(),
        p["person_id"].as_str().filter(|s| !s.is_empty()),
        p["direction"].as_str(),
    ) else {
        return;
    };
    let at = Passage {
        at: e.occurred_at.unwrap_or(e.received_at),
        door: e.source.device.to_string(),
    };
    let entry = m.people.entry(person.to_owned()).or_default();
    match (boundary.split_once(':'), dir) {
        (None, "in") if boundary == "campus" => entry.campus = Some(at),
        (None, "out") if boundary == "campus" => {
            entry.campus = None;
            entry.buildings.clear();
        }
        (Some(("building", b)), "in") => {
            if entry.campus.is_none() {
                entry.campus = Some(at.clone());
            }
            entry.buildings.insert(b.to_owned(), at);
        }
        (Some(("building", b)), "out") => {
            entry.buildings.remove(b);
        }
        _ => {}
    }
    if entry.campus.is_none() && entry.buildings.is_empty() {
        m.people.remove(person);
    }
}

fn door_result(m: &mut Model, e: &Event) {
    let c = &e.payload["command"];
    let r = &e.payload["result"];
    let kind = c["kind"].as_str().unwrap_or("");
    if !kind.starts_with("door.") {
        return;
    }
    let Some(door) = r["device"].as_str() else {
        return;
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    m.doors.insert(
        door.to_owned(),
        DoorResult {
            door: door.to_owned(),
            command: kind.to_owned(),
            by: s(&c["issued_by"]),
            status: s(&r["status"]),
            detail: s(&r["detail"]),
            at: e.received_at,
            seq: e.seq,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_roster_reads_quotes_headers_and_chinese_roles_and_names_every_bad_line() {
        let r = Roster::parse(
            "\u{feff}person_id,name,role\nS1001,\"张, 三\",student\nT01,李老师,教职工\n# c\n\nV9,访客王,visitor\n",
        )
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r.get("S1001").unwrap().name, "张, 三");
        assert_eq!(r.get("T01").unwrap().role, PersonRole::Staff);
        let bad =
            Roster::parse("a,b,teacherx\nb,c\n\"x,y,z\na,b,student\na,c,staff\n").unwrap_err();
        assert_eq!(bad.len(), 4, "{bad:?}");
        assert!(bad[0].starts_with("line 1:"), "{bad:?}");
        assert!(bad[3].contains("twice"), "{bad:?}");
    }
}
