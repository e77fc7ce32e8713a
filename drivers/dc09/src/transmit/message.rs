//! Event → DC-09 message, pure and table-driven.
//!
//! [`CODES`] gives each campusgw kind its Contact ID event code (Ademco / SIA DC-05 table,
//! PROTOCOLS §2) and its SIA DCS codes (SIA DC-03, as pysiaalarm 3.2.2 lists them in
//! `data/sia_codes.py` and maps Contact ID to them in `data/adm_mapping.py`). A
//! `<kind>.restore` is the same row with qualifier 3 and the SIA restore code. The
//! partition and zone come from the event's device or location through the configured
//! `[[zone]]` rules ([`MessageMap::place`]). No extended data is written: DC-09 defines
//! its blocks (`[X]` longitude, `[Y]` latitude, `[M]` MAC, `[V]` verification, `[K]` key
//! change, ...) and none of them is a place for campusgw's event id or kind.

use campusgw_sdk::{DeviceId, Event, Kind, Location};
use serde_json::Value;

use crate::data::{CidData, CidEvent, Data, Qualifier, SiaData};
use crate::frame::{Account, Message, MessageId, Sequence};
use crate::transmit::config::{Format, TransmitConfig, ZoneRule};

/// One row of the kind table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRow {
    /// The campusgw kind (its `.restore` uses the same row).
    pub kind: &'static str,
    /// The Contact ID event code.
    pub contact_id: u16,
    /// The Contact ID qualifier of the kind itself (1 new; 3 for a closing).
    pub qualifier: Qualifier,
    /// The SIA DCS code of the kind.
    pub sia: &'static str,
    /// The SIA DCS code of its restore, when it has one.
    pub sia_restore: Option<&'static str>,
}

const fn row(
    kind: &'static str,
    contact_id: u16,
    qualifier: Qualifier,
    sia: &'static str,
    sia_restore: Option<&'static str>,
) -> CodeRow {
    CodeRow {
        kind,
        contact_id,
        qualifier,
        sia,
        sia_restore,
    }
}

/// Kind → codes. Contact ID: DC-05 120 panic, 130 burglary, 110 fire, 137 tamper, 423
/// forced door, 426 door propped, 300 system trouble, 401 open/close by user (PROTOCOLS
/// §2). SIA: PA/PR panic, BA/BR burglary, FA/FR fire, TA/TR tamper, DF/DR door forced and
/// door restoral, DN door left open, YX/YZ service required / completed (pysiaalarm maps
/// 300 to them), OP opening, CL closing (DC-03 via pysiaalarm `sia_codes.py`).
pub const CODES: &[CodeRow] = &[
    row("panic.alarm", 120, Qualifier::New, "PA", Some("PR")),
    row("intrusion.alarm", 130, Qualifier::New, "BA", Some("BR")),
    row("fire.alarm", 110, Qualifier::New, "FA", Some("FR")),
    row("tamper.alarm", 137, Qualifier::New, "TA", Some("TR")),
    row("door.forced", 423, Qualifier::New, "DF", Some("DR")),
    row("door.held_open", 426, Qualifier::New, "DN", Some("DR")),
    row("device.trouble", 300, Qualifier::New, "YX", Some("YZ")),
    row("intrusion.disarmed", 401, Qualifier::New, "OP", None),
    row("intrusion.armed", 401, Qualifier::Restore, "CL", None),
];

/// Duress: Contact ID 121 (DC-05), SIA HA "holdup alarm, user under duress" (pysiaalarm
/// maps 121 to HA). campusgw has no duress kind: a DC-09 panel's 121 arrives as
/// `panic.alarm` with `payload.code` 121, and is forwarded as 121 again.
pub const DURESS: CodeRow = row("panic.alarm", 121, Qualifier::New, "HA", Some("HR"));

/// The codes one event is sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventCode {
    /// Contact ID event code.
    pub contact_id: u16,
    /// Contact ID qualifier.
    pub qualifier: Qualifier,
    /// SIA DCS code.
    pub sia: &'static str,
}

/// The codes for `kind` (and `payload`, for duress); `None` when the kind has none.
pub fn code_for(kind: &str, payload: &Value) -> Option<EventCode> {
    let (base, restore) = match kind.strip_suffix(".restore") {
        Some(base) => (base, true),
        None => (kind, false),
    };
    let is_duress = base == "panic.alarm"
        && (payload["code"].as_u64() == Some(121) || payload["code"].as_str() == Some("121"));
    let row = if is_duress {
        &DURESS
    } else {
        CODES.iter().find(|r| r.kind == base)?
    };
    if !restore {
        return Some(EventCode {
            contact_id: row.contact_id,
            qualifier: row.qualifier,
            sia: row.sia,
        });
    }
    // Open/close rows have no restore: their qualifier already means opening or closing.
    Some(EventCode {
        contact_id: row.contact_id,
        qualifier: Qualifier::Restore,
        sia: row.sia_restore?,
    })
}

/// Why an event has no DC-09 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The kind is not in [`CODES`].
    #[error("kind {0} has no contact id / sia code; forward only kinds in transmit::CODES")]
    Unmapped(String),
}

/// Builds the messages one transmitter sends: the configured account, `R`, `L`, format
/// and encryption; partition and zone by rule.
#[derive(Debug, Clone)]
pub struct MessageMap {
    format: Format,
    account: String,
    receiver: String,
    prefix: String,
    encrypted: bool,
    default: (u8, u16),
    rules: Vec<ZoneRule>,
}

impl MessageMap {
    /// The map a (validated) configuration describes.
    pub fn new(config: &TransmitConfig) -> MessageMap {
        MessageMap {
            format: config.format,
            account: config.account.clone(),
            receiver: config.receiver_number.clone(),
            prefix: config.line_prefix.clone(),
            encrypted: config.encrypted(),
            default: (config.default_partition, config.default_zone),
            rules: config.zone.clone(),
        }
    }

    /// Partition and zone for an event from `device` at `location`: a `device` rule wins,
    /// then the location rule naming the most levels that all equal the event's (so
    /// `main/A/1` beats `main/A`); what the winning rule leaves out comes from the next
    /// rule down, then from the defaults.
    pub fn place(&self, device: &DeviceId, location: &Location) -> (u8, u16) {
        let mut matching: Vec<(usize, &ZoneRule)> = self
            .rules
            .iter()
            .filter_map(|r| rule_rank(r, device, location).map(|rank| (rank, r)))
            .collect();
        // Stable sort: equal ranks keep the config's order.
        matching.sort_by_key(|(rank, _)| std::cmp::Reverse(*rank));
        let partition = matching.iter().find_map(|(_, r)| r.partition);
        let zone = matching.iter().find_map(|(_, r)| r.zone);
        (
            partition.unwrap_or(self.default.0),
            zone.unwrap_or(self.default.1),
        )
    }

    /// The message for an event: sequence 0000 and no timestamp (the transmitter sets
    /// both on each attempt).
    ///
    /// # Errors
    /// [`MapError::Unmapped`] for a kind without codes.
    pub fn message(
        &self,
        kind: &Kind,
        payload: &Value,
        device: &DeviceId,
        location: &Location,
    ) -> Result<Message, MapError> {
        let code =
            code_for(kind.as_str(), payload).ok_or_else(|| MapError::Unmapped(kind.to_string()))?;
        let (partition, zone) = self.place(device, location);
        let acct = Some(self.account.clone());
        let (id, data) = match self.format {
            Format::AdmCid => (
                MessageId::AdmCid,
                Data::ContactId(CidData {
                    account: acct,
                    event: CidEvent {
                        qualifier: code.qualifier,
                        code: code.contact_id,
                        partition,
                        zone,
                    },
                }),
            ),
            Format::SiaDcs => (
                MessageId::SiaDcs,
                Data::Sia(SiaData::event(
                    acct,
                    &partition.to_string(),
                    code.sia,
                    &format!("{zone:03}"),
                )),
            ),
        };
        Ok(Message {
            data,
            ..self.header(id)
        })
    }

    /// [`MessageMap::message`] for a journaled event.
    ///
    /// # Errors
    /// As [`MessageMap::message`].
    pub fn event(&self, event: &Event) -> Result<Message, MapError> {
        self.message(
            &event.kind,
            &event.payload,
            &event.source.device,
            &event.location,
        )
    }

    /// The account messages are sent as.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// A NULL (supervision) message.
    pub fn null(&self) -> Message {
        self.header(MessageId::Null)
    }

    pub(crate) fn header(&self, id: MessageId) -> Message {
        Message {
            encrypted: self.encrypted,
            receiver: Some(self.receiver.clone()),
            prefix: Some(self.prefix.clone()),
            ..Message::new(id, Sequence::ZERO, Account::Number(self.account.clone()))
        }
    }
}

/// How specific a matching rule is (`None`: it does not match): a device rule above any
/// location rule, location rules by the number of levels they name.
fn rule_rank(rule: &ZoneRule, device: &DeviceId, location: &Location) -> Option<usize> {
    if let Some(d) = &rule.device {
        return (d == device).then_some(usize::MAX);
    }
    let want = rule.location.as_ref()?;
    let mut named = 0;
    for (w, have) in want.levels().into_iter().zip(location.levels()) {
        if let Some(w) = w {
            if Some(w) != have {
                return None;
            }
            named += 1;
        }
    }
    Some(named)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;
    use crate::mapping;
    use serde_json::json;

    fn config(extra: &str) -> TransmitConfig {
        toml::from_str(&format!(
            "receivers = [\"127.0.0.1:9\"]\naccount = \"5A01\"\n{extra}"
        ))
        .unwrap()
    }

    fn kind(s: &str) -> Kind {
        Kind::new(s.to_owned()).unwrap()
    }

    #[test]
    fn each_kind_has_its_contact_id_code_and_qualifier() {
        let none = json!({});
        let table = [
            ("panic.alarm", 120, Qualifier::New, "PA"),
            ("panic.alarm.restore", 120, Qualifier::Restore, "PR"),
            ("intrusion.alarm", 130, Qualifier::New, "BA"),
            ("intrusion.alarm.restore", 130, Qualifier::Restore, "BR"),
            ("fire.alarm", 110, Qualifier::New, "FA"),
            ("fire.alarm.restore", 110, Qualifier::Restore, "FR"),
            ("tamper.alarm", 137, Qualifier::New, "TA"),
            ("door.forced", 423, Qualifier::New, "DF"),
            ("door.held_open", 426, Qualifier::New, "DN"),
            ("device.trouble", 300, Qualifier::New, "YX"),
            ("device.trouble.restore", 300, Qualifier::Restore, "YZ"),
            ("intrusion.disarmed", 401, Qualifier::New, "OP"),
            ("intrusion.armed", 401, Qualifier::Restore, "CL"),
        ];
        for (k, cid, q, sia) in table {
            assert_eq!(
                code_for(k, &none),
                Some(EventCode {
                    contact_id: cid,
                    qualifier: q,
                    sia
                }),
                "{k}"
            );
        }
        assert_eq!(code_for("access.granted", &none), None);
        assert_eq!(code_for("intrusion.armed.restore", &none), None);
    }

    #[test]
    fn a_duress_panic_from_a_panel_is_sent_as_duress() {
        let c = code_for("panic.alarm", &json!({"code": 121})).unwrap();
        assert_eq!((c.contact_id, c.sia), (121, "HA"));
        let c = code_for("panic.alarm", &json!({"code": 120})).unwrap();
        assert_eq!((c.contact_id, c.sia), (120, "PA"));
    }

    #[test]
    fn our_receiver_reads_every_contact_id_we_send_as_the_same_kind() {
        for r in CODES {
            for restore in [false, true] {
                let k = if restore {
                    format!("{}.restore", r.kind)
                } else {
                    r.kind.to_owned()
                };
                let Some(code) = code_for(&k, &json!({})) else {
                    continue;
                };
                let back = mapping::contact_id(&CidEvent {
                    qualifier: code.qualifier,
                    code: code.contact_id,
                    partition: 1,
                    zone: 1,
                })
                .unwrap();
                assert_eq!(back.kind.as_str(), k);
            }
        }
    }

    #[test]
    fn partition_and_zone_come_from_the_most_specific_rule_then_the_defaults() {
        let map = MessageMap::new(&config(
            r#"
            default_partition = 4
            default_zone = 7
            [[zone]]
            location = "main/A"
            partition = 2
            [[zone]]
            location = { campus = "main", building = "A", floor = "1" }
            zone = 11
            [[zone]]
            device = "lab_panel"
            partition = 3
            zone = 12
            "#,
        ));
        let dev = DeviceId::new("gate").unwrap();
        let at = |p: &str| Location::from_path(p).unwrap();
        assert_eq!(map.place(&dev, &at("main/A/1/east")), (2, 11));
        assert_eq!(map.place(&dev, &at("main/A/2")), (2, 7));
        assert_eq!(map.place(&dev, &at("main/B")), (4, 7));
        assert_eq!(map.place(&dev, &Location::default()), (4, 7));
        let lab = DeviceId::new("lab_panel").unwrap();
        assert_eq!(map.place(&lab, &at("main/A/1")), (3, 12));
    }

    #[test]
    fn contact_id_and_sia_messages_carry_account_partition_and_zone() {
        let dev = DeviceId::new("guard").unwrap();
        let loc = Location::from_path("main/A").unwrap();
        let extra = "[[zone]]\nlocation = \"main/A\"\npartition = 2\nzone = 5";
        let cid = MessageMap::new(&config(extra))
            .message(&kind("panic.alarm"), &json!({}), &dev, &loc)
            .unwrap();
        let wire = String::from_utf8(cid.encode().unwrap()).unwrap();
        assert!(
            wire.ends_with("\"ADM-CID\"0000R0L0#5A01[#5A01|1120 02 005]\r"),
            "{wire:?}"
        );
        let sia = MessageMap::new(&config(&format!("format = \"sia-dcs\"\n{extra}")))
            .message(&kind("intrusion.alarm.restore"), &json!({}), &dev, &loc)
            .unwrap();
        let wire = String::from_utf8(sia.encode().unwrap()).unwrap();
        assert!(
            wire.ends_with("\"SIA-DCS\"0000R0L0#5A01[#5A01|Nri2/BR005]\r"),
            "{wire:?}"
        );
        let e = MessageMap::new(&config(""))
            .message(&kind("access.granted"), &json!({}), &dev, &loc)
            .unwrap_err();
        assert_eq!(e, MapError::Unmapped("access.granted".into()));
    }

    #[test]
    fn our_receiver_reads_every_sia_code_we_send_as_the_same_kind() {
        for r in CODES {
            assert_eq!(
                mapping::sia(r.sia).unwrap().kind.as_str(),
                r.kind,
                "{}",
                r.sia
            );
            // DR (door restoral) does not say which door alarm it clears; the receiver
            // leaves it unmapped.
            if let Some(restore) = r.sia_restore.filter(|c| *c != "DR") {
                let back = mapping::sia(restore).unwrap();
                assert_eq!(
                    back.kind.as_str(),
                    format!("{}.restore", r.kind),
                    "{restore}"
                );
            }
        }
    }
}
