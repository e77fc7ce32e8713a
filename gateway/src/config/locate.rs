//! Maps a field path to the line it is on, using the TOML parser's spans.

use campusgw_sdk::FieldPath;
use toml::de::{DeTable, DeValue};

/// The 1-based line of byte offset `at`.
pub(super) fn line_at(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// The line of the deepest part of `path` present in the document (0 if none).
pub(super) fn line_of(text: &str, path: &FieldPath) -> usize {
    let Ok(doc) = DeTable::parse(text) else {
        return 0;
    };
    let mut span: Option<std::ops::Range<usize>> = None;
    let mut table: Option<&DeTable<'_>> = Some(doc.get_ref());
    let mut array: Option<&[toml::Spanned<DeValue<'_>>]> = None;
    for step in path.steps() {
        let next = match (step, table, array) {
            (Ok(key), Some(t), _) => t.get_key_value(key).map(|(k, v)| (k.span(), v)),
            (Err(i), _, Some(a)) => a.get(i).map(|v| (v.span(), v)),
            _ => None,
        };
        let Some((s, v)) = next else { break };
        span = Some(s);
        table = None;
        array = None;
        match v.get_ref() {
            DeValue::Table(t) => table = Some(t),
            DeValue::Array(a) => array = Some(&a[..]),
            _ => {}
        }
    }
    span.map_or(0, |s| line_at(text, s.start))
}
