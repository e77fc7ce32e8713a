//! Human-readable decoding for `campusgw decode dc09 'FRAME' [--key K]`.

use serde_json::{Value, json};

use crate::{Data, Dc09Error, Key, Opened, decode, mapping};

/// Turns typed text into frame bytes: the escapes `\n` and `\r` (as PROTOCOLS and the
/// fixture comments write frames) become LF and CR; surrounding spaces and tabs go.
pub fn unescape(text: &str) -> Vec<u8> {
    text.trim_matches(|c| c == ' ' || c == '\t')
        .replace("\\n", "\n")
        .replace("\\r", "\r")
        .into_bytes()
}

/// Decodes one frame (with or without LF / CRC / LEN / CR) to one JSON object: the
/// message, the pad if it was encrypted, and what campusgw makes of each event.
///
/// # Errors
/// The [`Dc09Error`] of the decoder.
pub fn decode_to_json(text: &str, key: Option<&Key>) -> Result<Value, Dc09Error> {
    let Opened { message, pad } = decode(&unescape(text), key)?;
    let meaning: Vec<Value> = match &message.data {
        Data::ContactId(c) => vec![describe(mapping::contact_id(&c.event))],
        Data::Sia(s) => s
            .events()
            .map(|(code, _)| describe(mapping::sia(code)))
            .collect(),
        _ => Vec::new(),
    };
    Ok(json!({
        "message": message,
        "pad": pad.map(|p| String::from_utf8_lossy(&p).into_owned()),
        "events": meaning,
        "content_key": message.content_key().ok(),
    }))
}

fn describe(m: Option<mapping::Mapped>) -> Value {
    match m {
        Some(m) => json!({"kind": m.kind, "class": m.class}),
        None => Value::Null,
    }
}
