//! Contact ID and SIA DCS event codes → campusgw event kinds and classes (pure tables).
//!
//! Contact ID codes from the Ademco / SIA DC-05 table (PROTOCOLS §2, R11); SIA two-letter
//! codes from SIA DC-03 as used by pysiaalarm (R6). A restore (Contact ID qualifier 3 on
//! an alarm code, or a SIA `..R` code) maps to `<kind>.restore` with the alarm's class, so
//! that it can never overtake the alarm it clears (uplinks send higher classes first).
//! Codes not in the tables map to `None`: the receiver decides (DUH or a generic event).

use campusgw_model::{Class, Kind};

use crate::data::{CidEvent, Qualifier};

/// What one DC-09 event means to campusgw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapped {
    /// The event kind.
    pub kind: Kind,
    /// Its class.
    pub class: Class,
}

fn mapped(kind: &'static str, class: Class, restore: bool) -> Mapped {
    let kind = if restore {
        // Every base kind below is valid, so `<kind>.restore` is too.
        Kind::new(format!("{kind}.restore")).unwrap_or(Kind::from_static(kind))
    } else {
        Kind::from_static(kind)
    };
    Mapped { kind, class }
}

/// Contact ID: the kind and class of an event, by code and qualifier.
///
/// - 110-118 fire → `fire.alarm` (life_safety); 120-126 panic, duress, hold-up →
///   `panic.alarm` (life_safety); 130-139 burglary → `intrusion.alarm` (life_safety),
///   except 137 tamper.
/// - 137, 144, 145 tamper → `tamper.alarm` (security); 423 forced door → `door.forced`,
///   426 door propped → `door.held_open` (security).
/// - 300-399 trouble → `device.trouble` (security).
/// - 400-409, 441, 442 open/close: qualifier 1 → `intrusion.disarmed`, 3 →
///   `intrusion.armed` (operations; here qualifier 3 is a closing, not a restore).
/// - Qualifier 3 on any other code → `<kind>.restore`; qualifier 6 (status) → as new.
pub fn contact_id(event: &CidEvent) -> Option<Mapped> {
    let restore = event.qualifier == Qualifier::Restore;
    let (kind, class) = match event.code {
        110..=118 => ("fire.alarm", Class::LifeSafety),
        120..=126 => ("panic.alarm", Class::LifeSafety),
        137 | 144 | 145 => ("tamper.alarm", Class::Security),
        130..=139 => ("intrusion.alarm", Class::LifeSafety),
        300..=399 => ("device.trouble", Class::Security),
        400..=409 | 441 | 442 => {
            let kind = if restore {
                "intrusion.armed"
            } else {
                "intrusion.disarmed"
            };
            return Some(mapped(kind, Class::Operations, false));
        }
        423 => ("door.forced", Class::Security),
        426 => ("door.held_open", Class::Security),
        _ => return None,
    };
    Some(mapped(kind, class, restore))
}

/// SIA DCS two-letter code → kind and class. Alarm codes end in `A` (or are listed);
/// their restores end in `R`.
///
/// PA/PR panic, HA/HR hold-up (duress) → `panic.alarm`; FA/FR fire, KA/KR heat →
/// `fire.alarm`; BA/BR burglary → `intrusion.alarm`; TA/TR tamper → `tamper.alarm`; DF
/// door forced → `door.forced`; DN door left open → `door.held_open`; YT/YR battery,
/// AT/AR AC, FT/FJ fire trouble, BT/BJ burglary trouble, YC/YK communication, YX/YZ
/// service required / completed → `device.trouble`; OP/CL (and OA/CA, OG/CG)
/// → `intrusion.disarmed` / `intrusion.armed`.
pub fn sia(code: &str) -> Option<Mapped> {
    let (kind, class, restore) = match code {
        // Not "DU": SIA DC-03 has it as Dealer ID (pysiaalarm `sia_codes.py`), no alarm.
        "PA" | "HA" => ("panic.alarm", Class::LifeSafety, false),
        "PR" | "HR" => ("panic.alarm", Class::LifeSafety, true),
        "FA" | "KA" => ("fire.alarm", Class::LifeSafety, false),
        "FR" | "KR" => ("fire.alarm", Class::LifeSafety, true),
        "BA" => ("intrusion.alarm", Class::LifeSafety, false),
        "BR" => ("intrusion.alarm", Class::LifeSafety, true),
        "TA" => ("tamper.alarm", Class::Security, false),
        "TR" => ("tamper.alarm", Class::Security, true),
        "DF" => ("door.forced", Class::Security, false),
        "DN" => ("door.held_open", Class::Security, false),
        "YT" | "AT" | "FT" | "BT" | "YC" | "YX" => ("device.trouble", Class::Security, false),
        "YR" | "AR" | "FJ" | "BJ" | "YK" | "YZ" => ("device.trouble", Class::Security, true),
        "OP" | "OA" | "OG" => ("intrusion.disarmed", Class::Operations, false),
        "CL" | "CA" | "CG" => ("intrusion.armed", Class::Operations, false),
        _ => return None,
    };
    Some(mapped(kind, class, restore))
}
