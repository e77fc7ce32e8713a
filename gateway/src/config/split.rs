//! Cuts a config document at its top-level `[[device]]` tables, so each device can be
//! parsed on its own.
//!
//! The `toml` parser lexes a whole document into token and event vectors before building
//! its tree (~36 MB for the 1.6 MB file of 2,000 devices with 10 point tables each, on top
//! of the tree itself), and glibc keeps that peak in the process after it is freed. Parsed
//! one device at a time, the peak is one device's.
//!
//! Only the lexer's tokens are looked at (streamed, never collected), so strings, comments
//! and multi-line arrays cannot be mistaken for headers. Anything unusual makes [`split`]
//! answer `None` and the caller parses the document whole, as before.

use std::ops::Range;

use toml_parser::Source;
use toml_parser::lexer::TokenKind;

/// A document cut into the device tables and the rest.
#[derive(Debug, PartialEq)]
pub(super) struct Pieces {
    /// Everything outside the device tables, in document order (a valid document itself:
    /// every piece starts at a header or at the top of the file).
    pub rest: String,
    /// Each `[[device]]` table with its subtables (`[[device.points]]`, ...), in order.
    pub devices: Vec<Range<usize>>,
}

/// What a header line opens.
#[derive(Debug, PartialEq)]
enum Header {
    /// `[[device]]`: a new device table.
    Device,
    /// `[device.x]`, `[[device.x]]`: part of the current device.
    UnderDevice,
    /// Any other table.
    Other,
}

/// Cuts `text`; `None` when it has no `[[device]]` headers or a header this does not
/// classify with certainty (a quoted first key, a header not ending its line).
pub(super) fn split(text: &str) -> Option<Pieces> {
    let mut depth: i64 = 0;
    let mut line_start = true;
    // Start of the current piece and whether it is a device table.
    let mut piece_start = 0;
    let mut in_device = false;
    let mut rest = String::new();
    let mut devices = Vec::new();
    let mut tokens = Source::new(text).lex();
    while let Some(t) = tokens.next() {
        match t.kind() {
            TokenKind::Newline => {
                line_start = true;
                continue;
            }
            TokenKind::Whitespace => continue,
            TokenKind::LeftSquareBracket if depth == 0 && line_start => {
                let at = t.span().start();
                let header = classify(text, &mut tokens)?;
                // A header starts a new piece unless it continues the current device.
                if header != Header::UnderDevice || !in_device {
                    close(text, piece_start..at, in_device, &mut rest, &mut devices);
                    piece_start = at;
                    in_device = header == Header::Device;
                }
                // classify consumed the line through its newline.
                line_start = true;
                continue;
            }
            TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket => depth += 1,
            TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket => depth -= 1,
            _ => {}
        }
        line_start = false;
    }
    close(
        text,
        piece_start..text.len(),
        in_device,
        &mut rest,
        &mut devices,
    );
    (!devices.is_empty()).then_some(Pieces { rest, devices })
}

fn close(
    text: &str,
    piece: Range<usize>,
    device: bool,
    rest: &mut String,
    devices: &mut Vec<Range<usize>>,
) {
    if device {
        devices.push(piece);
    } else {
        rest.push_str(&text[piece]);
    }
}

/// Reads a header after its first `[` through the end of its line.
fn classify(text: &str, tokens: &mut toml_parser::lexer::Lexer<'_>) -> Option<Header> {
    let mut array = false;
    let mut first: Option<&str> = None;
    let mut dotted = false;
    let mut closed = 0;
    for t in tokens.by_ref() {
        match t.kind() {
            TokenKind::Whitespace => {}
            TokenKind::Newline | TokenKind::Eof => break,
            TokenKind::Comment if closed > 0 => {}
            TokenKind::LeftSquareBracket if first.is_none() && !array => array = true,
            TokenKind::Atom if first.is_none() => {
                first = text.get(t.span().start()..t.span().end())
            }
            TokenKind::Dot if first.is_some() && closed == 0 => dotted = true,
            TokenKind::RightSquareBracket if first.is_some() => closed += 1,
            // Atoms and quoted keys after the first dot: part of a sub-table's name.
            TokenKind::Atom | TokenKind::BasicString | TokenKind::LiteralString
                if dotted && closed == 0 => {}
            // A quoted first key, a value on the header's line, anything else: unsure.
            _ => return None,
        }
    }
    if closed != if array { 2 } else { 1 } {
        return None;
    }
    Some(match (first?, array, dotted) {
        ("device", true, false) => Header::Device,
        ("device", _, true) => Header::UnderDevice,
        // `[device]` is refused by the whole-document parse, which says why.
        ("device", false, false) => return None,
        _ => Header::Other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "top = 1\n[gateway]\nid = \"g\" # [[device]]\n[[device]]\nid = \"a\"\nzones = [\n  [1],\n]\n[[device.points]]\nname = \"r0\"\n[ device . extra ]\nx = 1\n[[uplink]]\nname = \"u\"\n[[device]]\nid = \"b\"\ns = \"\"\"\n[[uplink]]\n\"\"\"\n[console]\n";

    #[test]
    fn each_device_table_with_its_subtables_becomes_one_piece() {
        let p = split(DOC).expect("split");
        let devs: Vec<&str> = p.devices.iter().map(|r| &DOC[r.clone()]).collect();
        assert_eq!(
            devs,
            [
                "[[device]]\nid = \"a\"\nzones = [\n  [1],\n]\n[[device.points]]\nname = \"r0\"\n[ device . extra ]\nx = 1\n",
                "[[device]]\nid = \"b\"\ns = \"\"\"\n[[uplink]]\n\"\"\"\n",
            ]
        );
        assert_eq!(
            p.rest,
            "top = 1\n[gateway]\nid = \"g\" # [[device]]\n[[uplink]]\nname = \"u\"\n[console]\n"
        );
    }

    #[test]
    fn the_pieces_parse_to_the_same_tables_as_the_whole_document() {
        let whole: toml::Table = toml::from_str(DOC).expect("whole");
        let p = split(DOC).expect("split");
        let mut rest: toml::Table = toml::from_str(&p.rest).expect("rest");
        let devices: Vec<toml::Value> = p
            .devices
            .iter()
            .flat_map(|r| {
                let mut t: toml::Table = toml::from_str(&DOC[r.clone()]).expect("device");
                match t.remove("device") {
                    Some(toml::Value::Array(a)) => a,
                    other => panic!("not a device array: {other:?}"),
                }
            })
            .collect();
        rest.insert("device".into(), toml::Value::Array(devices));
        assert_eq!(rest, whole);
    }

    #[test]
    fn a_document_without_device_headers_or_with_unsure_ones_is_not_split() {
        assert_eq!(split("[gateway]\nid = \"g\"\ndevice = []\n"), None);
        assert_eq!(split("[[\"device\"]]\nid = \"a\"\n"), None);
        assert_eq!(split("[[device]]\nid = \"a\"\n[device]\n"), None);
        assert_eq!(split("[[device]] x = 1\n"), None);
    }
}
