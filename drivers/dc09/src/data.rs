//! The data block (`[...]`) and extended data blocks of a DC-09 message.
//!
//! - ADM-CID: `[#acct|QEEE GG ZZZ]`: qualifier, Contact ID event code, partition, zone or
//!   user (PROTOCOLS §2, pysiaalarm's regex, R6, R11).
//! - SIA-DCS: `[#acct|Nri1/FA003]`: `N` (new) or `O` (old) then `/`-separated elements:
//!   lowercase modifiers (`ri` area, `id` user, `ti` time, `pi` peripheral, ...) and
//!   events (two uppercase letters and an address, `FA003`); further `|`-separated blocks
//!   such as `|Atext` (ASCII text) are kept as written.
//! - Extended data: `[X...]`, `[Y...]`, `[M...]`, `[V...]`, `[K...]`..., one letter naming
//!   the block (R6, R8).
//!
//! Every value keeps what was on the wire so that encoding a decoded message reproduces it.

use serde::Serialize;

use crate::Dc09Error;
use crate::frame::is_hex_account;

/// The contents of the data block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum Data {
    /// `[]`: NULL, ACK, NAK, DUH and most replies.
    Empty,
    /// ADM-CID (Contact ID) data.
    ContactId(CidData),
    /// SIA DCS data.
    Sia(SiaData),
    /// Anything else, kept verbatim (a SIA-DCS block that is not `N`/`O` data, reply text).
    Text {
        /// The block's contents without the brackets.
        text: String,
    },
}

/// ADM-CID data: `[#acct|QEEE GG ZZZ]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CidData {
    /// The account repeated inside the block (`#1234|`), when present.
    pub account: Option<String>,
    /// The event.
    pub event: CidEvent,
}

/// One Contact ID event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct CidEvent {
    /// Q: 1 new event / opening, 3 restore / closing, 6 status (still present).
    pub qualifier: Qualifier,
    /// EEE: event code, 0-999 (110 fire, 120 panic, 130 burglary, ...).
    pub code: u16,
    /// GG: partition (group), 0-99.
    pub partition: u8,
    /// ZZZ: zone or user number, 0-999.
    pub zone: u16,
}

/// The Contact ID event qualifier (Ademco / SIA DC-05, PROTOCOLS §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Qualifier {
    /// `1`: a new event, or an opening (disarm) for open/close codes.
    New,
    /// `3`: a restore, or a closing (arm) for open/close codes.
    Restore,
    /// `6`: a previously reported condition still present (status report).
    Status,
}

impl Qualifier {
    /// The wire digit.
    pub fn digit(self) -> u8 {
        match self {
            Qualifier::New => b'1',
            Qualifier::Restore => b'3',
            Qualifier::Status => b'6',
        }
    }

    fn from_digit(d: u8) -> Option<Qualifier> {
        match d {
            b'1' => Some(Qualifier::New),
            b'3' => Some(Qualifier::Restore),
            b'6' => Some(Qualifier::Status),
            _ => None,
        }
    }
}

impl CidEvent {
    /// `QEEE GG ZZZ`.
    ///
    /// # Errors
    /// [`Dc09Error::Encode`] when a field is out of range.
    pub fn to_wire(&self) -> Result<String, Dc09Error> {
        if self.code > 999 || self.partition > 99 || self.zone > 999 {
            return Err(Dc09Error::Encode(format!(
                "contact id code {} / partition {} / zone {} out of range (999 / 99 / 999)",
                self.code, self.partition, self.zone
            )));
        }
        Ok(format!(
            "{}{:03} {:02} {:03}",
            char::from(self.qualifier.digit()),
            self.code,
            self.partition,
            self.zone
        ))
    }

    /// Parses exactly `QEEE GG ZZZ`.
    ///
    /// # Errors
    /// [`Dc09Error::ContactId`] for anything else.
    pub fn parse(s: &str) -> Result<CidEvent, Dc09Error> {
        let bad = || Dc09Error::ContactId(s.chars().take(40).collect());
        let b = s.as_bytes();
        let shape = b"0000 00 000";
        if b.len() != shape.len()
            || !b.iter().zip(shape).all(|(c, s)| {
                if *s == b'0' {
                    c.is_ascii_digit()
                } else {
                    c == s
                }
            })
        {
            return Err(bad());
        }
        let num = |r: std::ops::Range<usize>| s.get(r).and_then(|d| d.parse::<u16>().ok());
        let qualifier = b
            .first()
            .copied()
            .and_then(Qualifier::from_digit)
            .ok_or_else(bad)?;
        let (Some(code), Some(partition), Some(zone)) = (num(1..4), num(5..7), num(8..11)) else {
            return Err(bad());
        };
        let partition = u8::try_from(partition).map_err(|_| bad())?;
        Ok(CidEvent {
            qualifier,
            code,
            partition,
            zone,
        })
    }
}

impl CidData {
    /// Parses the block contents `[#acct|]QEEE GG ZZZ`.
    ///
    /// # Errors
    /// [`Dc09Error::ContactId`] or [`Dc09Error::Account`].
    pub fn parse(s: &str) -> Result<CidData, Dc09Error> {
        let (account, rest) = split_data_account(s)?;
        Ok(CidData {
            account,
            event: CidEvent::parse(rest)?,
        })
    }

    fn to_wire(&self) -> Result<String, Dc09Error> {
        Ok(format!(
            "{}{}",
            account_prefix(self.account.as_deref())?,
            self.event.to_wire()?
        ))
    }
}

/// SIA DCS data: `[#acct|Nri1/FA003|Atext]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SiaData {
    /// The account repeated inside the block, when present.
    pub account: Option<String>,
    /// `N` new event, `O` old event.
    pub new: bool,
    /// The `/`-separated elements after `N`/`O`.
    pub elements: Vec<SiaElement>,
    /// Further `|`-separated blocks, verbatim (`Atext` is an ASCII text block).
    pub blocks: Vec<String>,
}

/// One element of SIA DCS data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SiaElement {
    /// A lowercase two-letter modifier and its value: `ri1` (area 1), `id12` (user 12),
    /// `ti10:15` (time), `pi` (peripheral), ...
    Modifier {
        /// The two letters.
        name: String,
        /// What follows them.
        value: String,
    },
    /// An event: two uppercase letters (`FA` fire alarm, `BA` burglary, ...) and its
    /// address (zone or user), possibly empty.
    Event {
        /// The two-letter event code.
        code: String,
        /// The zone, user or other address after the code.
        address: String,
    },
    /// Anything else, verbatim.
    Other {
        /// The element as written.
        text: String,
    },
}

impl SiaElement {
    fn parse(s: &str) -> SiaElement {
        let b = s.as_bytes();
        let two = |f: fn(&u8) -> bool| b.len() >= 2 && b.iter().take(2).all(f);
        let (head, tail) = (
            s.get(..2).unwrap_or_default(),
            s.get(2..).unwrap_or_default(),
        );
        if two(u8::is_ascii_lowercase) {
            SiaElement::Modifier {
                name: head.to_owned(),
                value: tail.to_owned(),
            }
        } else if two(u8::is_ascii_uppercase) {
            SiaElement::Event {
                code: head.to_owned(),
                address: tail.to_owned(),
            }
        } else {
            SiaElement::Other { text: s.to_owned() }
        }
    }

    fn to_wire(&self) -> String {
        match self {
            SiaElement::Modifier { name, value } => format!("{name}{value}"),
            SiaElement::Event { code, address } => format!("{code}{address}"),
            SiaElement::Other { text } => text.clone(),
        }
    }
}

impl SiaData {
    /// A new-event block with one area and one event: `Nri<area>/<code><address>`.
    pub fn event(account: Option<String>, area: &str, code: &str, address: &str) -> SiaData {
        SiaData {
            account,
            new: true,
            elements: vec![
                SiaElement::Modifier {
                    name: "ri".into(),
                    value: area.into(),
                },
                SiaElement::Event {
                    code: code.into(),
                    address: address.into(),
                },
            ],
            blocks: Vec::new(),
        }
    }

    /// Parses the block contents; `None` when it is not `[#acct|]N...` or `[#acct|]O...`
    /// (the caller keeps such a block as [`Data::Text`]).
    fn parse(s: &str) -> Option<SiaData> {
        let (account, rest) = split_data_account(s).ok()?;
        let mut blocks = rest.split('|');
        let first = blocks.next()?;
        let new = match first.as_bytes().first()? {
            b'N' => true,
            b'O' => false,
            _ => return None,
        };
        let body = first.get(1..)?;
        let elements = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').map(SiaElement::parse).collect()
        };
        let data = SiaData {
            account,
            new,
            elements,
            blocks: blocks.map(str::to_owned).collect(),
        };
        // Only a form that writes back identically is taken apart; anything else stays text.
        (data.to_wire().ok().as_deref() == Some(s)).then_some(data)
    }

    fn to_wire(&self) -> Result<String, Dc09Error> {
        let mut s = account_prefix(self.account.as_deref())?;
        s.push(if self.new { 'N' } else { 'O' });
        let elements: Vec<String> = self.elements.iter().map(SiaElement::to_wire).collect();
        s.push_str(&elements.join("/"));
        for b in &self.blocks {
            s.push('|');
            s.push_str(b);
        }
        Ok(s)
    }

    /// The events (`FA003`, ...) in the data, in order.
    pub fn events(&self) -> impl Iterator<Item = (&str, &str)> {
        self.elements.iter().filter_map(|e| match e {
            SiaElement::Event { code, address } => Some((code.as_str(), address.as_str())),
            _ => None,
        })
    }

    /// The value of the first modifier `name` (`"ri"` → area, `"id"` → user).
    pub fn modifier(&self, name: &str) -> Option<&str> {
        self.elements.iter().find_map(|e| match e {
            SiaElement::Modifier { name: n, value } if n == name => Some(value.as_str()),
            _ => None,
        })
    }
}

/// An extended data block `[X...]`: a letter naming it and its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExtData {
    /// The block letter: `X` longitude, `Y` latitude, `M` MAC address, `V` verification
    /// (URL), `K` key change, `H` time of event, `I` alarm text, `P` program data, ...
    pub tag: char,
    /// What follows the letter.
    pub value: String,
}

impl ExtData {
    /// Parses the contents of one extended block (without brackets).
    ///
    /// # Errors
    /// [`Dc09Error::Body`] when it does not start with an uppercase letter.
    pub fn parse(s: &str) -> Result<ExtData, Dc09Error> {
        let mut chars = s.chars();
        match chars.next() {
            Some(tag) if tag.is_ascii_uppercase() => Ok(ExtData {
                tag,
                value: chars.as_str().to_owned(),
            }),
            _ => Err(Dc09Error::Body(format!(
                "extended data [{}] does not start with a letter",
                s.chars().take(40).collect::<String>()
            ))),
        }
    }

    /// What the letter means.
    pub fn tag_name(&self) -> &'static str {
        match self.tag {
            'X' => "longitude",
            'Y' => "latitude",
            'Z' => "altitude",
            'M' => "mac",
            'V' => "verification",
            'K' => "key_change",
            'H' => "event_time",
            'I' => "alarm_text",
            'P' => "program",
            'S' => "site",
            'L' => "location",
            'N' => "network",
            'R' => "building",
            _ => "other",
        }
    }

    pub(crate) fn to_wire(&self) -> Result<String, Dc09Error> {
        if !self.tag.is_ascii_uppercase() {
            return Err(Dc09Error::Encode(format!(
                "extended data tag {:?} is not A-Z",
                self.tag
            )));
        }
        check_text(&self.value, "extended data")?;
        Ok(format!("[{}{}]", self.tag, self.value))
    }
}

impl Data {
    /// Parses the data block contents for a message of this kind.
    ///
    /// # Errors
    /// [`Dc09Error::ContactId`] for ADM-CID data that is neither empty nor Contact ID.
    pub(crate) fn parse(s: &str, contact_id: bool, sia: bool) -> Result<Data, Dc09Error> {
        if s.is_empty() {
            return Ok(Data::Empty);
        }
        if contact_id {
            return CidData::parse(s).map(Data::ContactId);
        }
        if sia && let Some(d) = SiaData::parse(s) {
            return Ok(Data::Sia(d));
        }
        Ok(Data::Text { text: s.to_owned() })
    }

    /// The block contents, without brackets.
    ///
    /// # Errors
    /// [`Dc09Error::Encode`] for out-of-range fields or text holding `[`, `]` or a
    /// non-printable character.
    pub fn to_wire(&self) -> Result<String, Dc09Error> {
        let s = match self {
            Data::Empty => String::new(),
            Data::ContactId(c) => c.to_wire()?,
            Data::Sia(d) => d.to_wire()?,
            Data::Text { text } => text.clone(),
        };
        check_text(&s, "data")?;
        Ok(s)
    }
}

/// Splits `#acct|rest`; `(None, s)` when `s` does not start with `#`.
fn split_data_account(s: &str) -> Result<(Option<String>, &str), Dc09Error> {
    let Some(after) = s.strip_prefix('#') else {
        return Ok((None, s));
    };
    let (acct, rest) = after
        .split_once('|')
        .ok_or_else(|| Dc09Error::Account(s.chars().take(20).collect()))?;
    if !is_hex_account(acct) {
        return Err(Dc09Error::Account(acct.chars().take(20).collect()));
    }
    Ok((Some(acct.to_owned()), rest))
}

fn account_prefix(account: Option<&str>) -> Result<String, Dc09Error> {
    match account {
        None => Ok(String::new()),
        Some(a) if is_hex_account(a) => Ok(format!("#{a}|")),
        Some(a) => Err(Dc09Error::Encode(format!(
            "account {a:?} is not 3-16 hex digits"
        ))),
    }
}

/// Text inside a block: printable ASCII without brackets.
fn check_text(s: &str, what: &str) -> Result<(), Dc09Error> {
    if s.bytes()
        .all(|b| (0x20..=0x7e).contains(&b) && b != b'[' && b != b']')
    {
        Ok(())
    } else {
        Err(Dc09Error::Encode(format!(
            "{what} {s:?} holds '[', ']' or a non-printable character"
        )))
    }
}
