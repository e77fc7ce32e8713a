//! A small, bounded XML tree for SOAP answers.
//!
//! Cameras are on an untrusted LAN, so the parser is defensive: a document type declaration
//! is refused outright (no DTD, hence no entity expansion: the "billion laughs" bomb cannot
//! start), input size, nesting depth and element count are capped before anything is kept,
//! and only the five predefined entities and character references are resolved. Names are
//! kept as local names (prefix dropped): ONVIF answers from different firmwares bind the same
//! namespaces to different prefixes, and no two elements we read share a local name within
//! the parent we look in.

use quick_xml::Reader;
use quick_xml::events::Event;

/// Largest SOAP answer we parse; a `PullMessages` answer with 100 notifications is ~100 KB.
pub const MAX_DOCUMENT: usize = 1024 * 1024;
/// Deepest nesting accepted (SOAP answers we read are < 15 deep).
pub const MAX_DEPTH: usize = 48;
/// Most elements accepted in one document.
pub const MAX_ELEMENTS: usize = 20_000;

/// Why a document was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// A `<!DOCTYPE` was present.
    #[error("document type declarations are refused (possible XML bomb)")]
    DocType,
    /// Input over [`MAX_DOCUMENT`].
    #[error("document of {0} bytes is over the {MAX_DOCUMENT}-byte limit")]
    TooLarge(usize),
    /// Nesting over [`MAX_DEPTH`] or more than [`MAX_ELEMENTS`] elements.
    #[error("document nests deeper than {MAX_DEPTH} or holds more than {MAX_ELEMENTS} elements")]
    TooComplex,
    /// An entity other than the predefined five.
    #[error("unknown entity &{0};")]
    Entity(String),
    /// Not well-formed.
    #[error("malformed xml: {0}")]
    Malformed(String),
    /// No root element.
    #[error("empty document")]
    Empty,
}

/// One element: local name, attributes (local names), concatenated text, children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Element {
    /// Local name.
    pub name: String,
    /// Attributes as (local name, unescaped value).
    pub attrs: Vec<(String, String)>,
    /// Text directly inside this element, unescaped.
    pub text: String,
    /// Child elements in document order.
    pub children: Vec<Element>,
}

impl Element {
    /// The first child with local name `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every child with local name `name`.
    pub fn children_named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> {
        self.children.iter().filter(move |c| c.name == name)
    }

    /// Follows a path of local names through first children.
    pub fn path(&self, names: &[&str]) -> Option<&Element> {
        names.iter().try_fold(self, |e, n| e.child(n))
    }

    /// The first element named `name` at any depth (self included), depth-first.
    pub fn find(&self, name: &str) -> Option<&Element> {
        if self.name == name {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(name))
    }

    /// An attribute's value by local name.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The trimmed text.
    pub fn text(&self) -> &str {
        self.text.trim()
    }
}

/// Parses `input` into its root element, within the limits above.
///
/// # Errors
/// [`XmlError`] for anything refused or malformed; never panics.
pub fn parse(input: &[u8]) -> Result<Element, XmlError> {
    if input.len() > MAX_DOCUMENT {
        return Err(XmlError::TooLarge(input.len()));
    }
    let text = std::str::from_utf8(input).map_err(|e| XmlError::Malformed(e.to_string()))?;
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut count = 0usize;
    loop {
        let ev = reader
            .read_event()
            .map_err(|e| XmlError::Malformed(e.to_string()))?;
        match ev {
            Event::DocType(_) => return Err(XmlError::DocType),
            Event::Start(_) | Event::Empty(_) if stack.len() >= MAX_DEPTH => {
                return Err(XmlError::TooComplex);
            }
            Event::Start(s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooComplex);
                }
                stack.push(element(&s, reader.decoder())?);
            }
            Event::Empty(s) => {
                count += 1;
                if count > MAX_ELEMENTS {
                    return Err(XmlError::TooComplex);
                }
                let e = element(&s, reader.decoder())?;
                if let Some(done) = close(&mut stack, e) {
                    return Ok(done);
                }
            }
            Event::End(_) => {
                let e = stack
                    .pop()
                    .ok_or_else(|| XmlError::Malformed("unbalanced end tag".into()))?;
                if let Some(done) = close(&mut stack, e) {
                    return Ok(done);
                }
            }
            Event::Text(t) => {
                let s = t
                    .xml_content()
                    .map_err(|e| XmlError::Malformed(e.to_string()))?;
                push_text(&mut stack, &s)?;
            }
            Event::CData(c) => {
                let s = c.decode().map_err(|e| XmlError::Malformed(e.to_string()))?;
                push_text(&mut stack, &s)?;
            }
            Event::GeneralRef(r) => {
                let ch = resolve_ref(&r)?;
                push_text(&mut stack, ch.encode_utf8(&mut [0u8; 4]))?;
            }
            Event::Eof => return Err(XmlError::Empty),
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
        }
    }
}

/// Hands a finished element to its parent; returns it when it was the root.
fn close(stack: &mut [Element], e: Element) -> Option<Element> {
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(e);
            None
        }
        None => Some(e),
    }
}

fn push_text(stack: &mut [Element], s: &str) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(top) => {
            top.text.push_str(s);
            Ok(())
        }
        // Whitespace between the prolog and the root is normal; anything else is not XML.
        None if s.trim().is_empty() => Ok(()),
        None => Err(XmlError::Malformed("text outside the root element".into())),
    }
}

fn resolve_ref(r: &quick_xml::events::BytesRef<'_>) -> Result<char, XmlError> {
    if r.is_char_ref() {
        return r
            .resolve_char_ref()
            .map_err(|e| XmlError::Malformed(e.to_string()))?
            .ok_or_else(|| XmlError::Malformed("bad character reference".into()));
    }
    let name = r.decode().map_err(|e| XmlError::Malformed(e.to_string()))?;
    match name.as_ref() {
        "amp" => Ok('&'),
        "lt" => Ok('<'),
        "gt" => Ok('>'),
        "quot" => Ok('"'),
        "apos" => Ok('\''),
        other => Err(XmlError::Entity(other.chars().take(32).collect())),
    }
}

/// `decoder`: the reader's, so this works whether or not another crate in the build turned
/// on quick-xml's `encoding` feature (calamine does), which removes `unescape_value`.
fn element(
    s: &quick_xml::events::BytesStart<'_>,
    decoder: quick_xml::encoding::Decoder,
) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(s.local_name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    for a in s.attributes() {
        let a = a.map_err(|e| XmlError::Malformed(e.to_string()))?;
        let key = String::from_utf8_lossy(a.key.local_name().as_ref()).into_owned();
        let value = a.decode_and_unescape_value(decoder).map_err(|e| match e {
            quick_xml::Error::Escape(quick_xml::escape::EscapeError::UnrecognizedEntity(_, n)) => {
                XmlError::Entity(n.chars().take(32).collect())
            }
            other => XmlError::Malformed(other.to_string()),
        })?;
        attrs.push((key, value.into_owned()));
    }
    Ok(Element {
        name,
        attrs,
        text: String::new(),
        children: Vec::new(),
    })
}

/// Escapes text for an element body or attribute value.
pub fn escape(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_billion_laughs_document_is_refused_for_its_doctype() {
        let bomb = br#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><a>&lol2;</a>"#;
        assert_eq!(parse(bomb), Err(XmlError::DocType));
    }

    #[test]
    fn predefined_entities_and_character_references_are_resolved() {
        let e = parse(b"<a x=\"1&amp;2\">rtsp://h/p?a=1&amp;b=&#50;</a>").expect("parses");
        assert_eq!(e.text(), "rtsp://h/p?a=1&b=2");
        assert_eq!(e.attr("x"), Some("1&2"));
    }

    #[test]
    fn an_undeclared_entity_is_refused() {
        assert!(matches!(parse(b"<a>&ext;</a>"), Err(XmlError::Entity(_))));
    }

    #[test]
    fn nesting_beyond_the_limit_is_refused() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        assert_eq!(parse(deep.as_bytes()), Err(XmlError::TooComplex));
    }

    #[test]
    fn truncated_and_mismatched_documents_are_malformed_not_panics() {
        assert!(parse(b"<a><b></a>").is_err());
        assert!(parse(b"<a><b>").is_err());
        assert!(parse(b"").is_err());
        assert!(parse(&[0xff, 0xfe, 0x00]).is_err());
    }

    #[test]
    fn prefixes_are_dropped_from_element_and_attribute_names() {
        let e = parse(
            br#"<s:Envelope xmlns:s="x"><s:Body><tt:Foo tt:token="p1"/></s:Body></s:Envelope>"#,
        )
        .expect("parses");
        let foo = e.path(&["Body", "Foo"]).expect("path");
        assert_eq!(foo.attr("token"), Some("p1"));
    }
}
