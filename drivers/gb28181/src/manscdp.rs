//! MANSCDP (GB/T 28181-2016 appendix A): the XML bodies of `MESSAGE` requests with
//! `Content-Type: Application/MANSCDP+xml`. Writers for what the device side sends
//! (Keepalive, Alarm, Catalog response) and what the simulated platform sends (Catalog
//! query, Alarm response); one bounded reader for all of them.
//!
//! Charset: most platforms declare and expect GB2312 (PROTOCOLS §6), some UTF-8; the
//! writer encodes per the platform's config ([`Charset`]) and the reader follows the XML
//! declaration, falling back to GB18030 (a superset of GB2312 and GBK) when a body declared
//! UTF-8 is not. A character GB2312 lacks is written as an XML character reference
//! (`&#NNNN;`), which any XML reader resolves.
//!
//! The reader refuses a DOCTYPE (no entity expansion), documents over [`MAX_BODY`], deeper
//! than [`MAX_DEPTH`] or with more than [`MAX_ELEMENTS`] elements; it never panics
//! (`fuzz/fuzz_targets/gb28181_parse.rs`).

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::Reader;
use quick_xml::escape::escape;
use quick_xml::events::Event;

use crate::id::GbId;

/// A body larger than this is refused (a Catalog response of 64 items fits in a few KiB).
pub const MAX_BODY: usize = 64 * 1024;
/// Nesting depth at most (`Response/DeviceList/Item/Info` is 4).
pub const MAX_DEPTH: usize = 8;
/// Elements per document at most.
pub const MAX_ELEMENTS: usize = 2048;

/// The charset a platform speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Charset {
    /// GB2312 (written with encoding_rs's GBK encoder; a GB2312 text is the same bytes).
    #[default]
    #[serde(rename = "gb2312", alias = "GB2312", alias = "gbk", alias = "GBK")]
    Gb2312,
    /// UTF-8.
    #[serde(rename = "utf-8", alias = "UTF-8", alias = "utf8")]
    Utf8,
}

impl Charset {
    /// The XML declaration's label.
    pub fn label(self) -> &'static str {
        match self {
            Charset::Gb2312 => "GB2312",
            Charset::Utf8 => "UTF-8",
        }
    }

    /// Encodes a document written as text.
    pub fn encode(self, xml: &str) -> Vec<u8> {
        match self {
            Charset::Utf8 => xml.as_bytes().to_vec(),
            // unmappable characters become `&#NNNN;` (encoding_rs's HTML/XML behaviour)
            Charset::Gb2312 => encoding_rs::GBK.encode(xml).0.into_owned(),
        }
    }
}

/// Why a body is not a MANSCDP document we read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManscdpError {
    /// Over [`MAX_BODY`].
    #[error("body too large ({0} bytes)")]
    TooLarge(usize),
    /// Neither UTF-8 nor GB18030.
    #[error("body not decodable in its declared charset")]
    Charset,
    /// A DOCTYPE (entity expansion is never attempted).
    #[error("DOCTYPE refused")]
    DocType,
    /// Deeper or larger than the limits.
    #[error("document too complex")]
    TooComplex,
    /// Not well-formed, or an unknown entity.
    #[error("malformed xml: {0}")]
    Malformed(String),
    /// No `CmdType` under the root.
    #[error("no CmdType")]
    NoCmdType,
}

/// One element: name, text, children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Text directly inside, trimmed.
    pub text: String,
    /// Child elements in order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The text of the first child named `name`.
    pub fn text_of(&self, name: &str) -> Option<&str> {
        self.child(name).map(|c| c.text.as_str())
    }
}

/// A read document: its root (`Query`, `Notify`, `Response`, `Control`) and the common
/// fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc {
    /// The root element.
    pub root: Element,
    /// `CmdType`.
    pub cmd_type: String,
    /// `SN`, when a number.
    pub sn: Option<u32>,
    /// `DeviceID`.
    pub device_id: Option<String>,
}

impl Doc {
    /// The root element's name.
    pub fn kind(&self) -> &str {
        &self.root.name
    }
}

/// Decodes a body per its XML declaration (see the module doc).
///
/// # Errors
/// [`ManscdpError::Charset`] when neither works.
pub fn decode(body: &[u8]) -> Result<Cow<'_, str>, ManscdpError> {
    if body.len() > MAX_BODY {
        return Err(ManscdpError::TooLarge(body.len()));
    }
    let head = &body[..body.len().min(100)];
    let declared = String::from_utf8_lossy(head).to_ascii_lowercase();
    let gb = declared.contains("encoding=\"gb") || declared.contains("encoding='gb");
    if !gb && let Ok(s) = std::str::from_utf8(body) {
        return Ok(Cow::Borrowed(s));
    }
    let (text, had_errors) = encoding_rs::GB18030.decode_without_bom_handling(body);
    if had_errors {
        return Err(ManscdpError::Charset);
    }
    Ok(text)
}

/// Reads a MANSCDP body.
///
/// # Errors
/// [`ManscdpError`] for anything refused or malformed.
pub fn parse(body: &[u8]) -> Result<Doc, ManscdpError> {
    let text = decode(body)?;
    let root = tree(&text)?;
    let cmd_type = root
        .text_of("CmdType")
        .filter(|c| !c.is_empty())
        .ok_or(ManscdpError::NoCmdType)?
        .to_owned();
    let sn = root.text_of("SN").and_then(|s| s.parse().ok());
    let device_id = root.text_of("DeviceID").map(str::to_owned);
    Ok(Doc {
        root,
        cmd_type,
        sn,
        device_id,
    })
}

fn malformed(e: impl std::fmt::Display) -> ManscdpError {
    ManscdpError::Malformed(e.to_string().chars().take(120).collect())
}

fn tree(text: &str) -> Result<Element, ManscdpError> {
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    loop {
        match reader.read_event().map_err(malformed)? {
            Event::DocType(_) => return Err(ManscdpError::DocType),
            Event::Start(_) | Event::Empty(_) if stack.len() >= MAX_DEPTH => {
                return Err(ManscdpError::TooComplex);
            }
            Event::Start(s) => {
                stack.push(open(&s, &mut count)?);
            }
            Event::Empty(s) => {
                let el = open(&s, &mut count)?;
                if let Some(done) = close(&mut stack, el) {
                    return Ok(done);
                }
            }
            Event::End(_) => {
                let mut e = stack.pop().ok_or_else(|| malformed("unbalanced end tag"))?;
                e.text = e.text.trim().to_owned();
                if let Some(done) = close(&mut stack, e) {
                    return Ok(done);
                }
            }
            Event::Text(t) => {
                let s = t.xml_content().map_err(malformed)?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c.decode().map_err(malformed)?;
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                let ch = if r.is_char_ref() {
                    r.resolve_char_ref()
                        .map_err(malformed)?
                        .ok_or_else(|| malformed("bad character reference"))?
                } else {
                    match r.decode().map_err(malformed)?.as_ref() {
                        "amp" => '&',
                        "lt" => '<',
                        "gt" => '>',
                        "quot" => '"',
                        "apos" => '\'',
                        _ => return Err(malformed("unknown entity")),
                    }
                };
                push_text(&mut stack, ch.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::Eof => return Err(malformed("no root element")),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

fn open(s: &quick_xml::events::BytesStart<'_>, count: &mut usize) -> Result<Element, ManscdpError> {
    *count += 1;
    if *count > MAX_ELEMENTS {
        return Err(ManscdpError::TooComplex);
    }
    Ok(Element {
        name: String::from_utf8_lossy(s.local_name().as_ref()).into_owned(),
        ..Element::default()
    })
}

fn close(stack: &mut [Element], e: Element) -> Option<Element> {
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(e);
            None
        }
        None => Some(e),
    }
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), ManscdpError> {
    match stack.last_mut() {
        Some(top) => {
            if top.text.len() + s.len() > MAX_BODY {
                return Err(ManscdpError::TooComplex);
            }
            top.text.push_str(s);
            Ok(())
        }
        None if s.trim().is_empty() => Ok(()),
        None => Err(malformed("text outside the root element")),
    }
}

/// A document being written: declaration, root, `CmdType`, `SN`, `DeviceID`, then fields.
struct Writer {
    s: String,
    root: &'static str,
}

impl Writer {
    fn new(charset: Charset, root: &'static str, cmd: &str, sn: u32, id: &str) -> Writer {
        let mut s = format!(
            "<?xml version=\"1.0\" encoding=\"{}\"?>\r\n<{root}>\r\n",
            charset.label()
        );
        let _ = write!(
            s,
            "<CmdType>{cmd}</CmdType>\r\n<SN>{sn}</SN>\r\n<DeviceID>{}</DeviceID>\r\n",
            escape(id)
        );
        Writer { s, root }
    }

    fn field(&mut self, name: &str, value: &str) -> &mut Writer {
        let _ = write!(self.s, "<{name}>{}</{name}>\r\n", escape(value));
        self
    }

    fn raw(&mut self, xml: &str) -> &mut Writer {
        self.s.push_str(xml);
        self
    }

    fn finish(&mut self, charset: Charset) -> Vec<u8> {
        let _ = write!(self.s, "</{}>\r\n", self.root);
        charset.encode(&self.s)
    }
}

/// `<Notify><CmdType>Keepalive</CmdType>…<Status>OK</Status></Notify>` (§A.2.5 device
/// status notification).
pub fn keepalive(charset: Charset, sn: u32, device: &GbId) -> Vec<u8> {
    Writer::new(charset, "Notify", "Keepalive", sn, device.as_str())
        .field("Status", "OK")
        .finish(charset)
}

/// An alarm notification (§9.4, §A.2.5 报警通知).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alarm {
    /// `SN`: campusgw uses the journal seq, so a resent alarm carries the same SN.
    pub sn: u32,
    /// The alarm input (or the gateway) the alarm is about.
    pub device: GbId,
    /// `AlarmPriority`: 1 (一级警情, most urgent) .. 4.
    pub priority: u8,
    /// `AlarmMethod`: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 device fault, 7 other.
    pub method: u8,
    /// `AlarmTime`: local time, `YYYY-MM-DDTHH:MM:SS`.
    pub time: String,
    /// `AlarmDescription`.
    pub description: String,
    /// `Info/AlarmType` when the method has a type table entry for it.
    pub alarm_type: Option<u8>,
}

/// `<Notify><CmdType>Alarm</CmdType>…</Notify>`.
pub fn alarm(charset: Charset, a: &Alarm) -> Vec<u8> {
    let mut w = Writer::new(charset, "Notify", "Alarm", a.sn, a.device.as_str());
    w.field("AlarmPriority", &a.priority.to_string())
        .field("AlarmMethod", &a.method.to_string())
        .field("AlarmTime", &a.time)
        .field("AlarmDescription", &a.description);
    if let Some(t) = a.alarm_type {
        w.raw(&format!(
            "<Info>\r\n<AlarmType>{t}</AlarmType>\r\n</Info>\r\n"
        ));
    }
    w.finish(charset)
}

/// One `Item` of a Catalog response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogItem {
    /// Its 20-digit id.
    pub id: GbId,
    /// `Name`.
    pub name: String,
    /// `Address` (where it is).
    pub address: String,
    /// `ParentID`: the gateway's id.
    pub parent: GbId,
    /// `Status`: ON or OFF.
    pub online: bool,
}

/// `<Response><CmdType>Catalog</CmdType>…<SumNum/><DeviceList Num>…</Response>`: one part
/// of the answer to a Catalog query (§A.2.6); `sum` is the number of items in all parts.
pub fn catalog_response(
    charset: Charset,
    sn: u32,
    device: &GbId,
    sum: usize,
    items: &[CatalogItem],
) -> Vec<u8> {
    let mut w = Writer::new(charset, "Response", "Catalog", sn, device.as_str());
    w.field("SumNum", &sum.to_string());
    w.raw(&format!("<DeviceList Num=\"{}\">\r\n", items.len()));
    for i in items {
        let mut x = String::from("<Item>\r\n");
        for (n, v) in [
            ("DeviceID", i.id.as_str()),
            ("Name", i.name.as_str()),
            ("Manufacturer", "campusgw"),
            (
                "Model",
                if i.id.type_code() == crate::id::TYPE_ALARM_INPUT {
                    "alarm input"
                } else {
                    "camera"
                },
            ),
            ("Owner", "school"),
            ("CivilCode", &i.id.as_str()[..6]),
            ("Address", i.address.as_str()),
            ("Parental", "0"),
            ("ParentID", i.parent.as_str()),
            ("SafetyWay", "0"),
            ("RegisterWay", "1"),
            ("Secrecy", "0"),
            ("Status", if i.online { "ON" } else { "OFF" }),
        ] {
            let _ = write!(x, "<{n}>{}</{n}>\r\n", escape(v));
        }
        x.push_str("</Item>\r\n");
        w.raw(&x);
    }
    w.raw("</DeviceList>\r\n");
    w.finish(charset)
}

/// `<Query><CmdType>Catalog</CmdType>…</Query>` (what a platform sends; the simulator).
pub fn catalog_query(charset: Charset, sn: u32, device: &GbId) -> Vec<u8> {
    Writer::new(charset, "Query", "Catalog", sn, device.as_str()).finish(charset)
}

/// `<Response><CmdType>…</CmdType>…<Result>OK</Result></Response>` (the platform's answer to
/// an Alarm; the simulator).
pub fn result_response(charset: Charset, cmd: &str, sn: u32, device: &str, ok: bool) -> Vec<u8> {
    Writer::new(charset, "Response", cmd, sn, device)
        .field("Result", if ok { "OK" } else { "ERROR" })
        .finish(charset)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests: a panic is the failure report
mod tests {
    use super::*;

    fn id(s: &str) -> GbId {
        GbId::new(s).unwrap()
    }

    #[test]
    fn the_alarm_of_protocols_section_6_reads_back_with_its_fields() {
        let a = Alarm {
            sn: 1,
            device: id("64010000001340000001"),
            priority: 4,
            method: 2,
            time: "2009-12-04T16:23:32".into(),
            description: "门卫室一键报警 <东门>".into(),
            alarm_type: None,
        };
        for cs in [Charset::Gb2312, Charset::Utf8] {
            let b = alarm(cs, &a);
            let d = parse(&b).unwrap();
            assert_eq!(d.kind(), "Notify");
            assert_eq!(d.cmd_type, "Alarm");
            assert_eq!(d.sn, Some(1));
            assert_eq!(d.device_id.as_deref(), Some("64010000001340000001"));
            assert_eq!(d.root.text_of("AlarmPriority"), Some("4"));
            assert_eq!(d.root.text_of("AlarmMethod"), Some("2"));
            assert_eq!(d.root.text_of("AlarmTime"), Some("2009-12-04T16:23:32"));
            assert_eq!(
                d.root.text_of("AlarmDescription"),
                Some("门卫室一键报警 <东门>")
            );
        }
        let gb = alarm(Charset::Gb2312, &a);
        assert!(std::str::from_utf8(&gb).is_err(), "GB2312 bytes, not UTF-8");
        // 门 in GB2312 is C3 C5
        assert!(gb.windows(2).any(|w| w == [0xC3, 0xC5]));
        assert!(gb.starts_with(b"<?xml version=\"1.0\" encoding=\"GB2312\"?>"));
    }

    #[test]
    fn a_character_gb2312_lacks_becomes_a_character_reference_that_reads_back() {
        let a = Alarm {
            sn: 2,
            device: id("64010000001340000001"),
            priority: 1,
            method: 2,
            time: "2026-12-03T08:00:00".into(),
            description: "fire 🔥".into(),
            alarm_type: Some(1),
        };
        let d = parse(&alarm(Charset::Gb2312, &a)).unwrap();
        assert_eq!(d.root.text_of("AlarmDescription"), Some("fire 🔥"));
        assert_eq!(
            d.root.child("Info").unwrap().text_of("AlarmType"),
            Some("1")
        );
    }

    #[test]
    fn a_catalog_response_lists_every_item_with_its_parent() {
        let gw = id("34020000001180000001");
        let items = vec![
            CatalogItem {
                id: id("34020000001340000001"),
                name: "门卫室一键报警".into(),
                address: "main/gate".into(),
                parent: gw.clone(),
                online: true,
            },
            CatalogItem {
                id: id("34020000001320000001"),
                name: "校门口".into(),
                address: "main/gate".into(),
                parent: gw.clone(),
                online: true,
            },
        ];
        let d = parse(&catalog_response(Charset::Gb2312, 7, &gw, 2, &items)).unwrap();
        assert_eq!(d.kind(), "Response");
        assert_eq!(d.root.text_of("SumNum"), Some("2"));
        let list = d.root.child("DeviceList").unwrap();
        assert_eq!(list.children.len(), 2);
        assert_eq!(list.children[0].text_of("Name"), Some("门卫室一键报警"));
        assert_eq!(list.children[1].text_of("ParentID"), Some(gw.as_str()));
        assert_eq!(list.children[1].text_of("CivilCode"), Some("340200"));
    }

    #[test]
    fn a_platform_query_in_either_charset_is_read_and_bad_documents_are_refused() {
        let q = b"<?xml version=\"1.0\"?>\r\n<Query>\r\n<CmdType>Catalog</CmdType>\r\n<SN>17430</SN>\r\n<DeviceID>34020000001180000001</DeviceID>\r\n</Query>\r\n";
        let d = parse(q).unwrap();
        assert_eq!(
            (d.kind(), d.cmd_type.as_str(), d.sn),
            ("Query", "Catalog", Some(17430))
        );
        // a GB2312 body declared UTF-8 (seen in the field) falls back to GB18030
        let lying = encoding_rs::GBK
            .encode("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Response><CmdType>Alarm</CmdType><SN>3</SN><Result>成功</Result></Response>")
            .0
            .into_owned();
        assert_eq!(parse(&lying).unwrap().root.text_of("Result"), Some("成功"));
        for bad in [
            &b""[..],
            b"<Query>",
            b"<Query><SN>1</SN></Query>",
            b"<!DOCTYPE x [<!ENTITY a \"b\">]><Query><CmdType>&a;</CmdType></Query>",
            b"<Query><CmdType>&ext;</CmdType></Query>",
            b"<Query><CmdType>x</CmdType></Query2>",
            b"text<Query/>",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let deep = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        assert_eq!(parse(deep.as_bytes()), Err(ManscdpError::TooComplex));
        assert!(matches!(
            parse(&vec![b' '; MAX_BODY + 1]),
            Err(ManscdpError::TooLarge(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn the_reader_never_panics(b in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = parse(&b);
        }
    }
}
